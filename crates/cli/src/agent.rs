//! `tokenkeeper agent`: keeps a token fresh and writes it to files (sinks)
//! on every publish, so that programs in any language read a valid token
//! from a file, in the habit of Vault Agent's sinks and Kubernetes'
//! projected tokens.
//!
//! Driven by the manager's events (no polling); SIGTERM and SIGINT arrive
//! on a thread of signal-hook's own and end the run with exit 0. The sinks
//! are left in place: a reader keeps the last token, valid until it
//! expires.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures_lite::future;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokenkeeper::{ManagerEvent, Token, TokenManager};

use super::config::{AgentConfig, SinkFormat};
use super::output::{epoch_ms, say, usage_error, Failure, EXIT_REFUSED};
use super::sources;

/// What woke the agent up.
enum Step {
    Event(ManagerEvent),
    Signal(i32),
    /// The manager or the signal thread is gone.
    Stopped,
}

/// Runs the agent until a signal (exit 0), or a permanent failure before
/// any token (exit 1).
pub fn run(config: AgentConfig) -> ExitCode {
    for sink in &config.sinks {
        let folder = folder_of(sink);
        if !folder.is_dir() {
            return usage_error(&format!(
                "--sink {}: the folder {} does not exist",
                sink.display(),
                folder.display()
            ));
        }
    }
    // Before anything slow (discovery): a signal while starting up is a
    // clean exit too.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(error) => {
            say(&format!("agent: error: cannot handle signals: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let signals_handle = signals.handle();
    let (signal_tx, signal_rx) = smol::channel::bounded(1);
    let signal_thread = std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = signal_tx.send_blocking(signal);
        }
    });

    let code = match sources::prepare(&config.source, false) {
        Ok(prepared) => smol::block_on(keep_fresh(prepared, &config, signal_rx)),
        Err(code) => code,
    };
    signals_handle.close();
    let _ = signal_thread.join();
    code
}

async fn keep_fresh(
    prepared: sources::Prepared,
    config: &AgentConfig,
    signals: smol::channel::Receiver<i32>,
) -> ExitCode {
    let scrub = prepared.scrub;
    // The library's defaults: refresh ahead of expiry, retries with
    // backoff, for as long as the agent runs.
    let (handle, driver) = TokenManager::builder(prepared.source).build();
    // Both made before the driver runs: the first token and the first
    // failure are in them.
    let mut events = handle.events();
    let mut tokens = handle.subscribe();
    let driver = smol::spawn(driver);
    say(&format!(
        "agent: started; {} sink{} ({})",
        config.sinks.len(),
        if config.sinks.len() == 1 { "" } else { "s" },
        match config.format {
            SinkFormat::Token => "token",
            SinkFormat::Json => "json",
        }
    ));
    let mut written = false;
    let code = loop {
        let step = future::or(
            async { events.next().await.map_or(Step::Stopped, Step::Event) },
            async { signals.recv().await.map_or(Step::Stopped, Step::Signal) },
        )
        .await;
        match step {
            Step::Event(ManagerEvent::Published { .. }) => {
                // The subscription has it already (the manager publishes,
                // then tells); after two quick publishes the second event
                // finds none.
                if let Some(token) = future::poll_once(tokens.next()).await.flatten() {
                    let ok = write_sinks(&token, config);
                    written |= ok > 0;
                    say(&format!(
                        "agent: token published; expires in {} s; wrote {ok} of {} sinks",
                        token.expires_in().as_secs(),
                        config.sinks.len()
                    ));
                }
            }
            Step::Event(ManagerEvent::FetchFailed {
                error,
                consecutive_failures,
                retry_in,
                ..
            }) => {
                let failure = Failure::of(&error);
                say(&scrub.line(&format!(
                    "agent: fetch failed: {}: {}; {consecutive_failures} in a row; retry in {} ms",
                    failure.code,
                    failure.description,
                    retry_in.as_millis()
                )));
                // A configuration the authority refuses will not improve
                // by waiting; once a token was written, readers are better
                // served by the agent staying up.
                if error.is_permanent() && !written {
                    say("agent: error: refused by the authority before the first token; stopping");
                    break ExitCode::from(EXIT_REFUSED);
                }
            }
            Step::Event(_) => {}
            Step::Signal(signal) => {
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                say(&format!("agent: {name}; stopping, sinks left in place"));
                break ExitCode::SUCCESS;
            }
            Step::Stopped => {
                say("agent: the manager stopped; stopping");
                break ExitCode::FAILURE;
            }
        }
    };
    handle.shutdown().await;
    driver.await;
    code
}

/// Writes `token` to every sink; how many were written. A sink that
/// cannot be written is a line on stderr, and the others are still
/// written.
fn write_sinks(token: &Token, config: &AgentConfig) -> usize {
    let bytes = match config.format {
        SinkFormat::Token => token.access_token().secret().as_bytes().to_vec(),
        SinkFormat::Json => json_of(token).into_bytes(),
    };
    let mut ok = 0;
    for sink in &config.sinks {
        match write_atomically(sink, &bytes) {
            Ok(()) => ok += 1,
            Err(error) => say(&format!(
                "agent: error: cannot write sink {}: {error}",
                sink.display()
            )),
        }
    }
    ok
}

/// The token as a JSON object: what a reader needs to use it and to know
/// when it expires. The refresh token stays out: it outlives the access
/// token, and readers have no use for it.
fn json_of(token: &Token) -> String {
    let mut object = serde_json::json!({
        "access_token": token.access_token().secret(),
        "token_type": token.token_type(),
        "expires_at_ms": epoch_ms(token.expires_at()),
        "issued_at_ms": epoch_ms(token.issued_at()),
        "scope": token.scope(),
    });
    if let Some(issued) = token.issued_token_type() {
        object["issued_token_type"] = issued.into();
    }
    object.to_string()
}

/// The folder a sink's temporary file goes to: the sink's own, so that the
/// rename stays on one file system and is atomic.
fn folder_of(sink: &Path) -> PathBuf {
    match sink.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to a new file of mode 0600 next to `path` and renames it
/// over `path`: a reader sees the old token or the new one, never half of
/// one, and never a file others may read.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("a sink must name a file"))?;
    let temp = folder_of(path).join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover of this pid's name (a run killed mid-write): ours. New
    // with O_EXCL, which follows no link planted under the name.
    let _ = fs::remove_file(&temp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}
