//! `tokenkeeper agent` and `--config`, as real processes against the local
//! authority with short tokens: sinks that stay valid across refreshes and
//! an outage, written with mode 0600 and replaced atomically, a clean exit
//! on SIGTERM and SIGINT; a config file under the command line, and no
//! secret in it.
#![cfg(unix)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::{self, assert_no_access_token, run, TempDir};
use common::token_example::{agent_cli, token_command, REDIS_URL_ENV, SECRET_ENV};
use local_authority::{Fault, LocalAuthority};
use serde_json::{json, Value};

const CLIENT_ID: &str = "client-a";
const SECRET: &str = "secret-a";
/// No run comes near this unless it hangs.
const RUN_LIMIT: Duration = Duration::from_secs(60);
const WHAT: &str = "tokenkeeper agent";

/// The agent with `args`, the secret in its environment, output piped.
fn agent(args: &[&str]) -> Command {
    let mut cmd = agent_cli();
    cmd.args(args)
        .env(SECRET_ENV, SECRET)
        .env_remove(REDIS_URL_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The agent's stderr, line by line, as it comes.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `signal` (TERM, INT) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal}");
}

/// Reads lines until one contains `what`; every line read is kept in
/// `seen`.
fn wait_for_line(lines: &mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(what);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!("no line with {what:?}; stderr so far:\n{}", seen.join("\n")),
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("sink metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_sink_stays_valid_across_refreshes_and_an_outage_until_sigterm() {
    let authority = LocalAuthority::start().unwrap();
    // Stale after 2 s: a refresh every 2 s, 2 s of validity left for each.
    authority.set_expires_in(Some(json!(4)));
    let dir = TempDir::new("agent-sinks");
    let sink = dir.path().join("token");
    let second = dir.path().join("token-copy");
    let url = authority.token_url();
    let mut child = agent(&[
        "--token-url",
        &url,
        "--client-id",
        CLIENT_ID,
        "--sink",
        sink.to_str().unwrap(),
        "--sink",
        second.to_str().unwrap(),
    ])
    .spawn()
    .expect("spawn the agent");
    let start = Instant::now();
    let lines = stderr_lines(&mut child);

    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let (reads, invalid, mut tokens, inodes) = thread::scope(|scope| {
        // A reader, as a program using the sink would be: every read while
        // the agent runs must be a whole, valid token.
        let reader = scope.spawn(|| {
            let (mut reads, mut invalid) = (0u32, Vec::new());
            let mut tokens = BTreeSet::new();
            let mut inodes = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(token) = std::fs::read_to_string(&sink) {
                    reads += 1;
                    if !authority.is_valid_access_token(&token) {
                        invalid.push(token.len());
                    }
                    tokens.insert(token);
                    if let Ok(meta) = std::fs::metadata(&sink) {
                        inodes.insert(meta.ino());
                    }
                }
                thread::sleep(Duration::from_millis(10));
            }
            (reads, invalid, tokens, inodes)
        });

        wait_for_line(&lines, "token published", &mut seen);
        // An outage from the first refresh on, until the agent reports a
        // failed attempt: the sink keeps the last token meanwhile.
        authority.set_outage(Some(Fault::json(
            503,
            r#"{"error":"temporarily_unavailable"}"#,
        )));
        wait_for_line(&lines, "fetch failed", &mut seen);
        authority.set_outage(None);
        for _ in 0..3 {
            wait_for_line(&lines, "token published", &mut seen);
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });

    // Still valid right before the signal, then left in place by it.
    let last = std::fs::read_to_string(&sink).expect("the sink");
    assert!(authority.is_valid_access_token(&last));
    // The reader may have stopped before reading the last one.
    tokens.insert(last.clone());
    signal(&child, "TERM");
    let status = process::wait(&mut child, start, RUN_LIMIT, WHAT);
    seen.extend(lines.iter());
    let stderr = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");

    assert!(reads > 20, "{reads} reads");
    assert!(
        invalid.is_empty(),
        "{} invalid reads of {reads}",
        invalid.len()
    );
    assert!(tokens.len() >= 4, "{} tokens", tokens.len());
    // Each token in a new file renamed over the sink, never written in place.
    assert!(inodes.len() >= 2, "{inodes:?}");
    for token in &tokens {
        assert!(!stderr.contains(token.as_str()), "a token on stderr");
    }
    assert_eq!(std::fs::read_to_string(&sink).unwrap(), last);
    assert_eq!(std::fs::read_to_string(&second).unwrap(), last);
    assert_eq!(mode(&sink), 0o600);
    assert_eq!(mode(&second), 0o600);
    // The sinks alone: no temporary file left behind.
    let names: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["token".to_owned(), "token-copy".to_owned()])
    );
    // One line per event: the start, each publish, each failure, the stop.
    assert!(stderr.lines().all(|l| l.starts_with("agent: ")), "{stderr}");
}

#[test]
fn json_sinks_from_a_config_file_under_the_command_line_and_sigint() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("agent-config");
    let sink = dir.path().join("token.json");
    let config = dir.path().join("agent.toml");
    // The file names a client the authority does not know (refused: exit
    // 1); the command line's wins.
    std::fs::write(
        &config,
        format!(
            "token-url = {:?}\nclient-id = \"client-b\"\nsink = [{:?}]\nsink-format = \"json\"\n",
            authority.token_url(),
            sink.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = agent(&[
        "--config",
        config.to_str().unwrap(),
        "--client-id",
        CLIENT_ID,
    ])
    .spawn()
    .expect("spawn the agent");
    let start = Instant::now();
    let lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    wait_for_line(&lines, "token published", &mut seen);

    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&sink).unwrap()).expect("a JSON sink");
    let token = written["access_token"].as_str().expect("access_token");
    assert!(authority.is_valid_access_token(token));
    assert_eq!(written["token_type"], "Bearer");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        written["expires_at_ms"].as_u64().unwrap() > now_ms,
        "{written}"
    );
    assert_eq!(mode(&sink), 0o600);

    signal(&child, "INT");
    let status = process::wait(&mut child, start, RUN_LIMIT, WHAT);
    seen.extend(lines.iter());
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    assert!(sink.exists(), "the sink is left in place");
    assert_no_access_token(&seen.join("\n"));
}

#[test]
fn a_refused_client_stops_the_agent_with_exit_1() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("agent-refused");
    let sink = dir.path().join("token");
    let mut cmd = agent(&[
        "--token-url",
        &authority.token_url(),
        "--client-id",
        CLIENT_ID,
        "--sink",
        sink.to_str().unwrap(),
    ]);
    cmd.env(SECRET_ENV, "wrong-secret-7f3a");
    let out = run(cmd, WHAT, RUN_LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("invalid_client"), "{}", out.stderr);
    assert!(!sink.exists());
}

#[test]
fn agent_usage_errors_exit_2() {
    let authority = LocalAuthority::start().unwrap();
    let url = authority.token_url();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--token-url", &url, "--client-id", CLIENT_ID],
            "--sink FILE is required",
        ),
        (
            &[
                "--token-url",
                &url,
                "--client-id",
                CLIENT_ID,
                "--sink",
                "/nonexistent-folder/token",
            ],
            "does not exist",
        ),
        (
            &[
                "--token-url",
                &url,
                "--client-id",
                CLIENT_ID,
                "--sink",
                "token",
                "--sink-format",
                "yaml",
            ],
            "--sink-format takes token or json",
        ),
    ];
    for (args, message) in cases {
        let out = run(agent(args), WHAT, RUN_LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    assert_eq!(authority.token_requests(), 0);
}

#[test]
fn a_config_file_gives_flags_but_never_a_secret() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("token-config");
    let config = dir.path().join("token.toml");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();

    // Every flag of the run from the file, the secret from a file it names.
    std::fs::write(
        &config,
        format!(
            "token-url = {:?}\nclient-id = {CLIENT_ID:?}\nscope = \"orders:read\"\n\
             resource = [\"https://a.example\", \"https://b.example\"]\n\
             client-secret-file = {:?}\n",
            authority.token_url(),
            secret_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = run(
        token_command(&["--config", config.to_str().unwrap()]),
        "token --config",
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim_end()));
    let request = &authority.requests()[0];
    assert_eq!(request.form_value("scope").as_deref(), Some("orders:read"));
    let resources: Vec<String> = request
        .form()
        .into_iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(resources, ["https://a.example", "https://b.example"]);

    // The command line wins: another scope.
    let out = run(
        token_command(&[
            "--config",
            config.to_str().unwrap(),
            "--scope",
            "orders:write",
        ]),
        "token --config --scope",
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let request = authority.requests().pop().unwrap();
    assert_eq!(request.form_value("scope").as_deref(), Some("orders:write"));

    // A secret in the file: refused by name, never quoted.
    let requests = authority.token_requests();
    let leaky = dir.path().join("leaky.toml");
    std::fs::write(
        &leaky,
        format!(
            "token-url = {:?}\nclient-id = {CLIENT_ID:?}\nclient-secret = \"s3cr3t-in-file\"\n",
            authority.token_url()
        ),
    )
    .unwrap();
    let mut cmd = token_command(&["--config", leaky.to_str().unwrap()]);
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd, "token --config leaky", RUN_LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("client-secret is refused"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cr3t-in-file"), "{}", out.stderr);

    // An unknown key and a file that is not TOML: bad usage, no value quoted.
    for (text, message) in [
        (
            "tokn-url = \"https://x.example\"\n",
            "unknown field `tokn-url`",
        ),
        ("token-url = s3cr3t-unquoted\n", "not valid TOML (line 1)"),
    ] {
        std::fs::write(&leaky, text).unwrap();
        let out = run(
            token_command(&["--config", leaky.to_str().unwrap()]),
            "token --config bad",
            RUN_LIMIT,
        );
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(out.stderr.contains(message), "{}", out.stderr);
        assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
    }
    assert_eq!(authority.token_requests(), requests);
}
