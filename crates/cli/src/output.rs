//! What the tool prints: the token or `--watch`'s JSON lines on stdout,
//! warnings and errors on stderr, every line scrubbed of the secret.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use serde::Serialize;
use smol::Timer;
use tokenkeeper::oauth2::{HttpErrorKind, TokenRequestError};
use tokenkeeper::{
    Backoff, Error, ErrorKind, ManagerEvent, SourceError, Token, TokenManager, TokenSource,
};

use super::sources::{RedisUrl, ONE_SHOT_REQUEST_TIMEOUT};

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNAVAILABLE: u8 = 3;

/// The largest integer a JSON reader that uses doubles (JavaScript, jq)
/// reads exactly: 2^53 - 1. Times in `--watch` output never exceed it.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// How long printing one token keeps retrying transient failures.
const ONE_SHOT_BOUND: Duration = Duration::from_secs(10);

/// How this run names itself at the start of its stderr lines, and its
/// usage line.
struct Program {
    name: &'static str,
    usage: &'static str,
}

static PROGRAM: OnceLock<Program> = OnceLock::new();

/// Sets the name every stderr line starts with (`token`, `agent`) and the
/// usage line a usage error ends with; the first call wins.
pub fn set_program(name: &'static str, usage: &'static str) {
    let _ = PROGRAM.set(Program { name, usage });
}

/// The name stderr lines start with.
pub fn name() -> &'static str {
    PROGRAM.get().map_or("tokenkeeper", |p| p.name)
}

pub fn usage_error(message: &dyn std::fmt::Display) -> ExitCode {
    say(&format!("{}: {message}", name()));
    if let Some(program) = PROGRAM.get() {
        say(program.usage);
    }
    ExitCode::from(EXIT_USAGE)
}

/// Writes `line` and a newline to stderr. A stderr that cannot be written
/// (a closed pipe, a full disk) is ignored: the exit code still tells what
/// happened, and `eprintln!` would panic instead.
pub fn say(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Writes help or version text to stdout; a reader that went away
/// (`token --help | head -1`) is no error.
pub fn print_text(text: &str) -> ExitCode {
    let _ = write!(io::stdout().lock(), "{text}");
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------
// Printing one token

/// How a one-shot run ended.
enum Outcome {
    /// The token, and the proof asked for (`None` when none was asked).
    Token(Arc<Token>, Option<Result<String, String>>),
    Failed(SourceError),
    NoAnswer,
}

pub async fn print_token(
    source: impl TokenSource,
    scrub: &Scrubber,
    asked: Option<&str>,
    dpop_proof: Option<&(String, String)>,
) -> ExitCode {
    let (handle, driver) = TokenManager::builder(source)
        .backoff(Backoff::new(
            Duration::from_millis(250),
            2.0,
            Duration::from_secs(2),
        ))
        .request_timeout(ONE_SHOT_REQUEST_TIMEOUT)
        .wait_timeout(ONE_SHOT_BOUND)
        .build();
    // The library spawns nothing: the driver is a future, spawned here.
    let driver = smol::spawn(driver);

    // token() returns at once on a permanent failure (no retry can fix
    // it), and otherwise waits up to the bound with retries in between.
    let outcome = match handle.token().await {
        Ok(token) => {
            let proof = dpop_proof.map(|(method, url)| {
                let headers = handle
                    .authorization_for(token.clone(), method, url)
                    .map_err(|e| e.to_string())?;
                headers.dpop().map(str::to_owned).ok_or_else(|| {
                    format!(
                        "the token is not DPoP-bound (token_type {:?}): no proof to print",
                        token.token_type()
                    )
                })
            });
            Outcome::Token(token, proof)
        }
        Err(Error::Source(error))
        | Err(Error::Timeout {
            last_error: Some(error),
            ..
        }) => Outcome::Failed(error),
        Err(_) => Outcome::NoAnswer,
    };
    let attempts = handle.state().source_requests;
    handle.shutdown().await;
    driver.await;

    match outcome {
        Outcome::Token(token, proof) => {
            if let Some(warning) = scope_warning(asked, &token) {
                say(&scrub.line(&warning));
            }
            let proof = match proof.transpose() {
                Ok(proof) => proof,
                Err(error) => {
                    say(&scrub.line(&format!("{}: error: --dpop-proof: {error}", name())));
                    return ExitCode::from(EXIT_REFUSED);
                }
            };
            // The token, then the proof: two lines a script reads in turn.
            let mut lines = format!("{}\n", token.access_token().secret());
            if let Some(proof) = proof {
                lines.push_str(&proof);
                lines.push('\n');
            }
            let mut stdout = io::stdout().lock();
            match stdout.write_all(lines.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                // Nobody reads the token (`token | false`): the exit code
                // says it was not delivered; a message would be noise.
                Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
                Err(error) => {
                    say(&format!(
                        "{}: error: cannot write to stdout: {error}",
                        name()
                    ));
                    ExitCode::FAILURE
                }
            }
        }
        Outcome::Failed(error) => {
            let failure = Failure::of(&error);
            let mut line = format!(
                "{}: error: {}: {}",
                name(),
                failure.code,
                failure.description
            );
            let code = if error.is_permanent() {
                EXIT_REFUSED
            } else {
                line.push_str(&format!(
                    "; no token after {} s and {attempts} attempt{}",
                    ONE_SHOT_BOUND.as_secs(),
                    if attempts == 1 { "" } else { "s" }
                ));
                EXIT_UNAVAILABLE
            };
            say(&scrub.line(&line));
            ExitCode::from(code)
        }
        Outcome::NoAnswer => {
            say(&format!(
                "{}: error: timeout: no answer from the token endpoint within {} s",
                name(),
                ONE_SHOT_BOUND.as_secs()
            ));
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

// ---------------------------------------------------------------------------
// Watching

/// One line of `--watch` output. Field order is the order printed.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event<'a> {
    Token {
        expires_at_ms: u64,
        issued_at_ms: u64,
        stale_at_ms: u64,
        token_type: &'a str,
        scope: Option<&'a str>,
    },
    Error {
        error: &'a str,
        kind: &'static str,
        description: &'a str,
        consecutive_failures: u32,
        at_ms: u64,
        retry_in_ms: u64,
    },
}

pub async fn watch(
    source: impl TokenSource,
    duration: Duration,
    scrub: &Scrubber,
    asked: Option<&str>,
) -> ExitCode {
    // The library's defaults: what a service gets without tuning.
    let (handle, driver) = TokenManager::builder(source).build();
    // Both made before the driver runs: the first token and the first
    // failure are in them.
    let mut events = handle.events();
    let mut tokens = handle.subscribe();
    let driver = smol::spawn(driver);
    // The last scope warning given: a long watch repeats it only when the
    // granted scope changes, not on every refresh.
    let mut scope_warned: Option<String> = None;
    let mut end = Timer::after(duration);

    // Driven by the manager's events, in the order it acted; a publish
    // event is printed with the token it published, from the subscription.
    let result = loop {
        let event = future::or(events.next(), async {
            (&mut end).await;
            None
        })
        .await;
        let printed = match event {
            Some(ManagerEvent::Published { .. }) => {
                // The subscription has it already (the manager publishes,
                // then tells); after two quick publishes the first event
                // brings the newest token and the second finds none.
                match future::poll_once(tokens.next()).await.flatten() {
                    Some(token) => print_token_event(&token, scrub, asked, &mut scope_warned),
                    None => Ok(()),
                }
            }
            Some(ManagerEvent::FetchFailed {
                at,
                error,
                consecutive_failures,
                retry_in,
                ..
            }) => print_failure_event(&error, consecutive_failures, at, retry_in, scrub),
            Some(_) => Ok(()),
            // The time is up, or the manager stopped.
            None => break Ok(()),
        };
        if let Err(error) = printed {
            break Err(error);
        }
    };
    handle.shutdown().await;
    driver.await;

    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`token --watch 60 | head -1`): not an error.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            say(&format!(
                "{}: error: cannot write to stdout: {error}",
                name()
            ));
            ExitCode::FAILURE
        }
    }
}

/// Prints a published token's event, and a warning if its scope is not the
/// one asked for (once per scope).
fn print_token_event(
    token: &Token,
    scrub: &Scrubber,
    asked: Option<&str>,
    scope_warned: &mut Option<String>,
) -> io::Result<()> {
    // Server text: the library scrubbed it already; so does the CLI, as for
    // every line it prints.
    let token_type = scrub.line(token.token_type());
    let scope = token.scope().map(|s| scrub.line(s));
    print_event(&Event::Token {
        expires_at_ms: epoch_ms(token.expires_at()),
        issued_at_ms: epoch_ms(token.issued_at()),
        stale_at_ms: epoch_ms(token.stale_at()),
        token_type: &token_type,
        scope: scope.as_deref(),
    })?;
    let warning = scope_warning(asked, token);
    if warning.is_some() && warning != *scope_warned {
        say(&scrub.line(warning.as_deref().unwrap_or_default()));
    }
    *scope_warned = warning;
    Ok(())
}

/// Prints a failed fetch's event.
fn print_failure_event(
    error: &SourceError,
    consecutive_failures: u32,
    at: SystemTime,
    retry_in: Duration,
    scrub: &Scrubber,
) -> io::Result<()> {
    let failure = Failure::of(error);
    let description = scrub.line(&failure.description);
    print_event(&Event::Error {
        error: &failure.code,
        kind: match error.kind() {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        },
        description: &description,
        consecutive_failures,
        at_ms: epoch_ms(at),
        retry_in_ms: json_ms(retry_in),
    })
}

/// An instant as printed in `--watch` output: ms since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    json_ms(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// A duration as printed in `--watch` output: whole ms, at most
/// [`MAX_SAFE_INTEGER`], so that a reader that parses numbers as doubles
/// (every JavaScript reader, jq) never silently rounds one. The library
/// reads an instant no later than the end of the year 9999 (where a token
/// with an `expires_in` of centuries expires), well below 2^53 ms since
/// the epoch; a duration has no such bound.
fn json_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).map_or(MAX_SAFE_INTEGER, |ms| ms.min(MAX_SAFE_INTEGER))
}

fn print_event(event: &Event<'_>) -> io::Result<()> {
    let line = serde_json::to_string(event).map_err(io::Error::other)?;
    writeln!(io::stdout().lock(), "{line}")
}

// ---------------------------------------------------------------------------
// Warnings

/// The target of the manager's log records.
const MANAGER_TARGET: &str = "tokenkeeper::manager";
/// How the manager's warning about a failed fetch starts: this tool reports
/// each failure itself, as the error line or a `--watch` error event.
const FETCH_FAILED: &str = "token fetch failed";

/// Prints the library's warnings and errors on stderr, one line each
/// (`token: warning: ...`, or the agent's name), from now on.
///
/// The library reports through the `log` facade and says nothing unless the
/// program installs a logger: without one, a token type other than Bearer
/// or a Redis server that refuses our password went unnoticed. Only records
/// of warning level and above from the library's targets (`tokenkeeper`,
/// `tokenkeeper::...`) are printed, and each is scrubbed like every other
/// line: the library never logs a token or a secret, and the scrubbing is a
/// second line of defence (the client secret, the Redis URL and its
/// password).
pub fn install_warnings(scrub: &'static Scrubber, redis_url: Option<RedisUrl>) {
    let logger = Box::leak(Box::new(StderrLog { scrub, redis_url }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

struct StderrLog {
    scrub: &'static Scrubber,
    redis_url: Option<RedisUrl>,
}

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let target = metadata.target();
        metadata.level() <= log::Level::Warn
            && (target == "tokenkeeper" || target.starts_with("tokenkeeper::"))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if record.target() == MANAGER_TARGET && message.starts_with(FETCH_FAILED) {
            return;
        }
        let mut line = self.scrub.line(&format!("{}: warning: {message}", name()));
        if let Some(url) = &self.redis_url {
            line = url.scrub(&line);
        }
        say(&line);
    }

    fn flush(&self) {}
}

/// The warning for a token whose granted scope differs from the one asked
/// for, compared as sets of space-separated scope tokens (RFC 6749 §3.3:
/// order does not matter). A token without a scope was granted the scope
/// asked for (RFC 6749 §5.1), and nothing is compared when no scope was
/// asked for: the authority's default is whatever it grants.
pub fn scope_warning(asked: Option<&str>, token: &Token) -> Option<String> {
    let asked = asked?;
    let granted = token.scope()?;
    let tokens = |scope: &'_ str| -> BTreeSet<String> {
        scope
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    (tokens(asked) != tokens(granted)).then(|| {
        format!(
            "{}: warning: the authority granted scope {granted:?}, not the scope asked for \
             ({asked:?})",
            name()
        )
    })
}

// ---------------------------------------------------------------------------
// Errors

/// A failed attempt, as a code and a description.
pub struct Failure {
    /// The OAuth2 error code, or the kind of failure.
    pub code: String,
    pub description: String,
}

impl Failure {
    pub fn of(error: &SourceError) -> Failure {
        let (code, description) = match error.request_error() {
            Some(TokenRequestError::OAuth2(e)) => (
                e.code().as_str().to_owned(),
                format!(
                    "{} (HTTP {})",
                    e.description().unwrap_or("no description"),
                    e.status()
                ),
            ),
            Some(TokenRequestError::Http(e)) => {
                let code = match e.kind() {
                    HttpErrorKind::Connect => "connect",
                    HttpErrorKind::Timeout => "timeout",
                    HttpErrorKind::Io => "io",
                    HttpErrorKind::BodyTooLarge => "body_too_large",
                    _ => "http",
                };
                // Its Display starts with the kind ("connect: refused"); the
                // code already says that.
                let text = e.to_string();
                let message = text.split_once(": ").map_or(text.as_str(), |(_, m)| m);
                (code.to_owned(), message.to_owned())
            }
            Some(TokenRequestError::UnexpectedStatus { .. }) => {
                ("http_status".to_owned(), error.to_string())
            }
            Some(TokenRequestError::InvalidResponse { .. }) => {
                ("invalid_response".to_owned(), error.to_string())
            }
            // Another failure: the manager's request timeout, or a variant
            // added later.
            _ => {
                let kind = match error.kind() {
                    ErrorKind::Transient => "transient",
                    ErrorKind::Permanent => "permanent",
                };
                (kind.to_owned(), error.to_string())
            }
        };
        Failure { code, description }
    }
}

/// Makes text safe to print: one line, and never the client secret, even if
/// an authority echoed it somewhere the library did not expect. The library
/// already scrubs every encoding of the secret from what it reports; this is
/// a second line of defence, so it looks for the same forms: the secret as
/// is, form-urlencoded (`+` or `%20` for a space, either hex case),
/// JSON-escaped, and the base64 of `id:secret` (the part that depends on the
/// secret alone, whatever the id). (A secret shorter than 4 characters is
/// left alone as is: replacing every "s" would garble the text and protect
/// nothing. Its encodings are longer and are replaced.)
pub struct Scrubber(String);

impl Scrubber {
    /// A secret-free scrubber for a run without a secret.
    pub fn new(secret: String) -> Scrubber {
        Scrubber(secret)
    }

    /// `text` on one line, with every form of the secret replaced.
    pub fn line(&self, text: &str) -> String {
        // One line first, then the secret: a secret around a control
        // character must not survive the clean-up.
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        for form in self.forms() {
            text = text.replace(form.as_str(), "[redacted]");
        }
        text
    }

    /// Every form of the secret worth replacing, longest first (so that
    /// no shorter form cuts a longer one before it is found).
    fn forms(&self) -> Vec<String> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        use base64::Engine as _;

        let secret = self.0.as_str();
        let plus: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let lower_hex = |encoded: &str| {
            let mut out = String::new();
            let mut chars = encoded.chars();
            while let Some(c) = chars.next() {
                out.push(c);
                if c == '%' {
                    out.extend(chars.by_ref().take(2).map(|d| d.to_ascii_lowercase()));
                }
            }
            out
        };
        let pct20 = plus.replace('+', "%20");
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json
            .get(1..json.len().saturating_sub(1))
            .unwrap_or_default()
            .to_owned();
        let slash = json.replace('/', "\\/");
        let ascii = |upper: bool| -> String {
            slash
                .chars()
                .map(|c| {
                    let mut units = [0; 2];
                    match c {
                        c if c.is_ascii() => c.to_string(),
                        c if upper => c
                            .encode_utf16(&mut units)
                            .iter()
                            .map(|u| format!("\\u{u:04X}"))
                            .collect(),
                        c => c
                            .encode_utf16(&mut units)
                            .iter()
                            .map(|u| format!("\\u{u:04x}"))
                            .collect(),
                    }
                })
                .collect()
        };
        let mut forms = vec![
            secret.to_owned(),
            lower_hex(&plus),
            lower_hex(&pct20),
            plus.clone(),
            pct20,
            ascii(false),
            ascii(true),
            json,
            slash,
        ];
        forms.retain(|form| form.chars().count() >= 4);
        // After `id:` the secret starts at any of three offsets in a group
        // of three bytes; the characters of whole groups of the secret's
        // own bytes are the same whatever the id.
        for bytes in [secret.as_bytes(), plus.as_bytes()] {
            for skip in 0..3 {
                let rest = bytes.get(skip..).unwrap_or_default();
                for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                    for part in [rest, &rest[..rest.len() / 3 * 3]] {
                        let encoded = engine.encode(part);
                        if encoded.len() >= 8 {
                            forms.push(encoded);
                        }
                    }
                }
            }
        }
        forms.sort();
        forms.dedup();
        forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        forms
    }
}
