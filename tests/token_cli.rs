//! The token CLI (`examples/token.rs`) as a script sees it: the built
//! example binary run against an in-process authority on 127.0.0.1.
//!
//! Assertions are about output and exit codes, never about how long
//! something took (beyond generous bounds that only a hang would break).
//! Each run is killed after `RUN_LIMIT`, so a hang fails instead of blocking.
//!
//! The example needs an HTTP client: the `ureq` feature is required in
//! Cargo.toml. The harness is `common::harness`: the test that needs
//! `redis-server` is reported as ignored, with the reason, where it is not
//! installed, and fails there under CI (`CI=true`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[cfg(feature = "redis")]
use common::harness::Needs;
use common::harness::{add_tests, Harness};
use common::process::{
    self, assert_no_access_token, check_token_event, read_all, Finished, TempDir,
};
#[cfg(feature = "redis")]
use common::token_example::token_cli;
use common::token_example::{
    token_bin_without_redis, token_cli_without_redis, token_example, REDIS_URL_ENV, SECRET_ENV,
};
use local_authority::{Fault, LocalAuthority};
use serde_json::{json, Value};

fn main() {
    let mut harness = Harness::from_args();
    add_tests!(harness;
        prints_the_token_alone_with_basic_auth_by_default,
        post_auth_sends_the_credentials_in_the_body,
        scope_audience_and_resources_are_forwarded,
        secret_from_a_file_with_its_trailing_newline_trimmed,
        a_secret_on_the_command_line_is_refused,
        bad_usage_exits_2_with_a_message,
        the_binary_lists_its_subcommands,
        the_example_is_the_same_tool,
        a_wrong_secret_fails_fast_with_one_line_naming_invalid_client,
        a_transient_failure_is_retried,
        watch_prints_token_events_and_never_a_token,
        watch_reports_failed_attempts_during_an_outage,
        watch_sleeps_between_events,
        output_into_a_closed_pipe_exits_quietly_without_a_panic,
        plain_http_to_another_host_names_what_a_cli_user_can_do,
        watch_times_stay_safe_integers_when_expires_in_is_huge,
        a_token_type_other_than_bearer_is_a_warning_on_stderr,
        a_scope_other_than_asked_is_a_warning_on_stderr,
        watch_warnings_go_to_stderr_and_stdout_stays_json,
        a_loopback_token_url_never_goes_through_a_proxy,
        a_cache_lock_held_forever_costs_the_lease_wait_not_the_token,
        with_the_cache_lock_held_a_refusal_is_named_not_a_timeout,
        watch_with_the_cache_lock_held_forever_publishes_tokens,
    );
    #[cfg(feature = "redis")]
    {
        let redis_server = Needs::redis_server();
        add_tests!(harness needing redis_server;
            a_redis_that_refuses_our_password_is_a_warning_on_stderr,
            token_exchange_and_an_issuer_share_their_tokens_through_redis
        );
    }
    harness.run()
}

/// The authority's default client.
const CLIENT_ID: &str = "client-a";
const SECRET: &str = "secret-a";
/// No run comes near this unless it hangs.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// The child, in failure messages.
const WHAT: &str = "the token example";

/// The CLI with `args`, the secret variable unset.
fn token_cmd(args: &[&str]) -> Command {
    let mut cmd = token_cli_without_redis();
    cmd.args(args)
        .env_remove(SECRET_ENV)
        .env_remove(REDIS_URL_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `--token-url` and `--client-id` for the authority's default client.
fn base_args(authority: &LocalAuthority) -> Vec<String> {
    vec![
        "--token-url".into(),
        authority.token_url(),
        "--client-id".into(),
        CLIENT_ID.into(),
    ]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

impl Finished {
    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// Runs `cmd` to completion, killing it after `RUN_LIMIT`.
fn run(cmd: Command) -> Finished {
    process::run(cmd, WHAT, RUN_LIMIT)
}

/// Parses `--watch` output: every line must be a JSON object.
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            assert!(event.is_object(), "not an object: {line}");
            event
        })
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn prints_the_token_alone_with_basic_auth_by_default() {
    let authority = LocalAuthority::start().unwrap();
    let mut cmd = token_cmd(&strs(&base_args(&authority)));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(out.stdout.lines().count(), 1, "{:?}", out.stdout);
    assert!(out.stdout.ends_with('\n'));
    assert!(authority.is_valid_access_token(out.stdout.trim()));

    let requests = authority.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert!(request
        .header("authorization")
        .is_some_and(|h| h.starts_with("Basic ")));
    assert_eq!(
        request.form_value("grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(request.form_value("client_secret"), None);
    assert_eq!(request.form_value("client_id"), None);
}

fn post_auth_sends_the_credentials_in_the_body() {
    let authority = LocalAuthority::start().unwrap();
    let mut args = base_args(&authority);
    args.extend(["--auth".into(), "post".into()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim()));
    let request = &authority.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.form_value("client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(request.form_value("client_secret").as_deref(), Some(SECRET));
}

fn scope_audience_and_resources_are_forwarded() {
    let authority = LocalAuthority::start().unwrap();
    let mut args = base_args(&authority);
    args.extend(
        [
            "--scope",
            "orders:read orders:write",
            "--audience=https://api.example.com",
            "--resource",
            "https://api.example.com/orders",
            "--resource",
            "https://api.example.com/stock",
        ]
        .map(String::from),
    );
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    let request = &authority.requests()[0];
    assert_eq!(
        request.form_value("scope").as_deref(),
        Some("orders:read orders:write")
    );
    assert_eq!(
        request.form_value("audience").as_deref(),
        Some("https://api.example.com")
    );
    let resources: Vec<String> = request
        .form()
        .into_iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        resources,
        [
            "https://api.example.com/orders",
            "https://api.example.com/stock"
        ]
    );
}

fn secret_from_a_file_with_its_trailing_newline_trimmed() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("token-cli");
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let mut args = base_args(&authority);
    args.extend(["--client-secret-file".into(), path.display().to_string()]);
    let mut cmd = token_cmd(&strs(&args));
    // The file wins over the variable.
    cmd.env(SECRET_ENV, "not-the-secret");
    let out = run(cmd);
    drop(dir);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim()));
}

fn a_secret_on_the_command_line_is_refused() {
    let authority = LocalAuthority::start().unwrap();
    let base = base_args(&authority);
    for flag in [
        vec!["--client-secret", "secret-a"],
        vec!["--client-secret=secret-a"],
    ] {
        let mut args = strs(&base);
        args.extend(flag);
        let out = run(token_cmd(&args));
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert_eq!(out.stdout, "");
        assert!(
            out.stderr.contains("--client-secret is refused"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(SECRET_ENV), "{}", out.stderr);
        assert!(!out.stderr.contains(SECRET), "{}", out.stderr);
    }
    assert_eq!(authority.token_requests(), 0);
}

fn bad_usage_exits_2_with_a_message() {
    let authority = LocalAuthority::start().unwrap();
    let url = authority.token_url();
    let cases: [(&[&str], &str); 8] = [
        (&[], "--token-url (or --issuer) is required"),
        (
            &["--client-id", "", "--token-url", &url],
            "--client-id needs a value",
        ),
        (&["--scope=", "--token-url", &url], "--scope needs a value"),
        (&["--token-url", &url], "--client-id is required"),
        (
            &["--token-url", &url, "--client-id", CLIENT_ID],
            "no client secret",
        ),
        (
            &[
                "--token-url",
                &url,
                "--client-id",
                CLIENT_ID,
                "--auth",
                "digest",
            ],
            "--auth takes basic, post, client_secret_jwt, private_key_jwt or none",
        ),
        (&["--frobnicate=secret-a"], "unknown option --frobnicate"),
        (&["--redis-url", "redis://127.0.0.1:1/"], "--features redis"),
    ];
    for (args, message) in cases {
        let out = run(token_cmd(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains(SECRET), "{args:?}: {}", out.stderr);
    }

    let help = run(token_cmd(&["--help"]));
    assert!(help.status.success());
    assert!(
        help.stdout.contains("Usage: tokenkeeper token [OPTIONS]"),
        "{}",
        help.stdout
    );
    assert!(
        help.stdout.contains("--client-secret-file"),
        "{}",
        help.stdout
    );
    assert_eq!(authority.token_requests(), 0);
}

/// `tokenkeeper --help` names the subcommands; `tokenkeeper` alone is bad
/// usage.
fn the_binary_lists_its_subcommands() {
    let binary = || {
        let mut cmd = Command::new(token_bin_without_redis());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let mut help = binary();
    help.arg("--help");
    let help = run(help);
    assert!(help.status.success(), "{}", help.stderr);
    for subcommand in ["token", "agent", "completions", "man"] {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(subcommand)),
            "{subcommand}: {}",
            help.stdout
        );
    }
    let bare = run(binary());
    assert_eq!(bare.status.code(), Some(2), "{}", bare.stderr);
    assert!(bare.stderr.contains("subcommand"), "{}", bare.stderr);
}

/// The `token` example runs the same code as `tokenkeeper token`, under
/// its own name.
fn the_example_is_the_same_tool() {
    let authority = LocalAuthority::start().unwrap();
    let mut cmd = token_example();
    cmd.args(strs(&base_args(&authority)))
        .env(SECRET_ENV, SECRET)
        .env_remove(REDIS_URL_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run(cmd);
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim_end()));

    let mut cmd = token_example();
    cmd.args([
        "--token-url",
        &authority.token_url(),
        "--client-id",
        CLIENT_ID,
        "--auth",
        "digest",
    ])
    .env(SECRET_ENV, SECRET)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("token: --auth takes"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("usage: token "), "{}", out.stderr);
}

fn a_wrong_secret_fails_fast_with_one_line_naming_invalid_client() {
    let authority = LocalAuthority::start().unwrap();
    let wrong = "wrong-secret-9f8e7d";
    let mut cmd = token_cmd(&strs(&base_args(&authority)));
    cmd.env(SECRET_ENV, wrong);
    let out = run(cmd);

    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{:?}", out.stderr);
    assert!(lines[0].contains("invalid_client"), "{}", lines[0]);
    assert!(lines[0].contains("HTTP 401"), "{}", lines[0]);
    assert!(!out.stderr.contains(wrong), "{}", out.stderr);
    // Permanent: no retry loop up to the 10 s bound.
    assert_eq!(authority.token_requests(), 1);
    assert!(out.took < Duration::from_secs(8), "took {:?}", out.took);
}

fn a_transient_failure_is_retried() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(Fault::json(503, r#"{"error":"temporarily_unavailable"}"#));
    let mut cmd = token_cmd(&strs(&base_args(&authority)));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim()));
    assert_eq!(authority.token_requests(), 2);
}

fn watch_prints_token_events_and_never_a_token() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_expires_in(Some(json!(2)));
    let mut args = base_args(&authority);
    args.extend(["--scope".into(), "orders:read".into()]);
    args.extend(["--watch".into(), "3".into()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    let events = events(&out.stdout);
    let tokens = of_kind(&events, "token");
    assert!(tokens.len() >= 2, "{}", out.stdout);
    assert_eq!(tokens.len(), events.len(), "{}", out.stdout);
    for event in &tokens {
        check_token_event("token", event);
        assert_eq!(event["scope"], "orders:read");
        let lifetime =
            event["expires_at_ms"].as_u64().unwrap() - event["issued_at_ms"].as_u64().unwrap();
        assert_eq!(lifetime, 2_000);
    }
    assert!(authority.tokens_issued() >= 2);
    assert_no_access_token(&out.stdout);
    assert_no_access_token(&out.stderr);
}

/// The voluntary context switches of every thread of process `pid`.
fn voluntary_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// With nothing to report, `--watch` waits on the manager's events: it
/// does not wake up to poll.
fn watch_sleeps_between_events() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let authority = LocalAuthority::start().unwrap();
    authority.set_expires_in(Some(json!(3600)));
    let mut args = base_args(&authority);
    args.extend(["--watch".into(), "4".into()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let stderr = read_all(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read stdout");
    let event: Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(event["event"], "token", "{first}");

    // A moment for the start-up to settle (the HTTP client's threads going
    // idle), then two quiet seconds, in which a process that polled its
    // state every 20 ms would wake a hundred times.
    thread::sleep(Duration::from_millis(500));
    let before = voluntary_switches(child.id());
    thread::sleep(Duration::from_secs(2));
    let switches = voluntary_switches(child.id()) - before;
    eprintln!("--watch, 2 quiet seconds: {switches} voluntary context switches");

    let status = process::wait(&mut child, start, RUN_LIMIT, WHAT);
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        switches < 20,
        "{switches} voluntary context switches in 2 quiet seconds"
    );
}

fn watch_reports_failed_attempts_during_an_outage() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_expires_in(Some(json!(2)));
    let mut args = base_args(&authority);
    args.extend(["--watch".into(), "3".into()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let stderr = read_all(child.stderr.take().unwrap());

    // Read events as they come: the outage starts after the first token
    // and ends after the first failure is reported.
    let (lines_tx, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = thread::spawn(move || {
        for line in stdout.lines() {
            let line = line.expect("read stdout");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut all = Vec::new();
    let mut outage = false;
    while let Ok(line) = lines.recv_timeout(RUN_LIMIT) {
        let event: Value = serde_json::from_str(&line).expect("a JSON line");
        if event["event"] == "token" && !outage {
            authority.set_outage(Some(Fault::json(
                503,
                r#"{"error":"temporarily_unavailable"}"#,
            )));
            outage = true;
        }
        if event["event"] == "error" {
            authority.set_outage(None);
        }
        all.push(line);
    }
    let status = process::wait(&mut child, start, RUN_LIMIT, WHAT);
    reader.join().unwrap();
    let stderr = stderr.join().unwrap();

    assert!(status.success(), "{status:?}: {stderr}");
    let stdout = all.join("\n");
    let events = events(&stdout);
    assert_eq!(events[0]["event"], "token", "{stdout}");
    let errors = of_kind(&events, "error");
    assert!(!errors.is_empty(), "no error event: {stdout}");
    let error = errors[0];
    assert_eq!(error["error"], "temporarily_unavailable", "{error}");
    assert_eq!(error["kind"], "transient", "{error}");
    assert!(error["description"].as_str().unwrap().contains("HTTP 503"));
    assert!(error["consecutive_failures"].as_u64().unwrap() >= 1);
    assert!(error["at_ms"].is_u64());
    assert!(
        error["retry_in_ms"].is_u64() || error["retry_in_ms"].is_null(),
        "{error}"
    );
    for event in of_kind(&events, "token") {
        check_token_event("token", event);
    }
    assert_no_access_token(&stdout);
}

// ---------------------------------------------------------------------------
// Output into a closed pipe

/// The write end of a pipe whose read end is already closed: writing to it
/// fails with `EPIPE`, as writing into `| head -1` does once head is done.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer
}

/// Runs `cmd` with its stdout (`Closed::Stdout`) or its stderr into a
/// closed pipe; returns the exit status and what the other stream got.
fn run_into_closed(mut cmd: Command, closed: Closed) -> (std::process::ExitStatus, String) {
    match closed {
        Closed::Stdout => cmd.stdout(closed_pipe()),
        Closed::Stderr => cmd.stderr(closed_pipe()),
    };
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn the token example");
    let other = match closed {
        Closed::Stdout => read_all(child.stderr.take().unwrap()),
        Closed::Stderr => read_all(child.stdout.take().unwrap()),
    };
    let status = process::wait(&mut child, start, RUN_LIMIT, WHAT);
    (status, other.join().unwrap())
}

#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
}

fn output_into_a_closed_pipe_exits_quietly_without_a_panic() {
    let authority = LocalAuthority::start().unwrap();
    let base = base_args(&authority);
    let mut watch = base.clone();
    watch.extend(["--watch".into(), "1".into()]);

    // (what, args, secret, which stream is closed, expected exit code)
    let cases: [(&str, Vec<&str>, &str, Closed, i32); 5] = [
        ("--help", vec!["--help"], SECRET, Closed::Stdout, 0),
        // The token was not delivered: 1, as documented.
        ("the token", strs(&base), SECRET, Closed::Stdout, 1),
        ("--watch lines", strs(&watch), SECRET, Closed::Stdout, 0),
        (
            "a usage error",
            vec!["--frobnicate"],
            SECRET,
            Closed::Stderr,
            2,
        ),
        (
            "an error line",
            strs(&base),
            "wrong-secret-1b2c3d",
            Closed::Stderr,
            1,
        ),
    ];
    for (what, args, secret, closed, code) in cases {
        let mut cmd = token_cmd(&args);
        cmd.env(SECRET_ENV, secret);
        let (status, other) = run_into_closed(cmd, closed);
        assert_ne!(
            status.code(),
            Some(101),
            "{what} into a closed {closed:?}: {other}"
        );
        assert!(
            !other.contains("panicked"),
            "{what} into a closed {closed:?}: {other}"
        );
        assert_eq!(
            status.code(),
            Some(code),
            "{what} into a closed {closed:?}: {other}"
        );
        if let Closed::Stdout = closed {
            // Quiet: a reader that went away is no error to report.
            assert_eq!(other, "", "{what} into a closed {closed:?}");
        }
    }

    // A warning line (about a MAC token) into a closed stderr: the token
    // still comes out.
    authority.push_fault(answer(r#""token_type":"mac""#));
    let mut cmd = token_cmd(&strs(&base));
    cmd.env(SECRET_ENV, SECRET);
    let (status, stdout) = run_into_closed(cmd, Closed::Stderr);
    assert_eq!(status.code(), Some(0), "a warning into a closed stderr");
    assert_eq!(stdout, "at-7-0123456789abcdef\n");
}

fn plain_http_to_another_host_names_what_a_cli_user_can_do() {
    let mut cmd = token_cmd(&[
        "--token-url",
        "http://auth.example.com/oauth/token",
        "--client-id",
        CLIENT_ID,
    ]);
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let first = out.stderr_lines()[0];
    assert!(first.contains("--token-url"), "{first}");
    assert!(first.contains("https"), "{first}");
    assert!(first.contains("only to loopback"), "{first}");
    // The library's hint names a builder method the CLI has no flag for.
    assert!(
        !out.stderr.contains("allow_insecure_http"),
        "{}",
        out.stderr
    );
}

/// The largest integer a reader that parses JSON numbers as doubles reads
/// exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn watch_times_stay_safe_integers_when_expires_in_is_huge() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_expires_in(Some(json!(u64::MAX)));
    let mut args = base_args(&authority);
    args.extend(["--watch".into(), "1".into()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    let events = events(&out.stdout);
    let tokens = of_kind(&events, "token");
    assert_eq!(tokens.len(), 1, "{}", out.stdout);
    for event in &tokens {
        check_token_event("token", event);
        for field in ["expires_at_ms", "issued_at_ms", "stale_at_ms"] {
            let ms = event[field].as_u64().unwrap();
            assert!(ms <= MAX_SAFE_INTEGER, "{field} = {ms}: {event}");
        }
    }
    // The library's end of time: the last millisecond of the year 9999.
    let expires = tokens[0]["expires_at_ms"].as_u64().unwrap();
    assert_eq!(expires, 253_402_300_799_999, "{}", out.stdout);
}

// ---------------------------------------------------------------------------
// Warnings on stderr

/// A 200 answer of the authority's shape with `extra` JSON members added
/// (`"token_type":"mac"`, `"scope":"..."`), its access token shaped like the
/// authority's so that `assert_no_access_token` would see it printed.
fn answer(extra: &str) -> Fault {
    Fault::json(
        200,
        &format!(r#"{{"access_token":"at-7-0123456789abcdef","expires_in":60,{extra}}}"#),
    )
}

fn a_token_type_other_than_bearer_is_a_warning_on_stderr() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(answer(r#""token_type":"mac""#));
    let mut cmd = token_cmd(&strs(&base_args(&authority)));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert_eq!(out.stdout, "at-7-0123456789abcdef\n");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].starts_with("token: warning: "), "{}", lines[0]);
    assert!(lines[0].contains("\"mac\""), "{}", lines[0]);
    assert!(lines[0].contains("Bearer"), "{}", lines[0]);
    assert_no_access_token(&out.stderr);
}

fn a_scope_other_than_asked_is_a_warning_on_stderr() {
    // (asked, granted, whether a warning is due)
    let cases: [(&str, Option<&str>, bool); 5] = [
        ("orders:read orders:write", Some("orders:read"), true),
        ("orders:read", Some("orders:read admin"), true),
        // Sets of scope tokens: order and extra spaces do not matter.
        (
            "orders:write orders:read",
            Some("orders:read  orders:write"),
            false,
        ),
        ("orders:read", Some("orders:read"), false),
        // No scope in the answer: granted as asked (RFC 6749 §5.1).
        ("orders:read", None, false),
    ];
    for (asked, granted, warned) in cases {
        let authority = LocalAuthority::start().unwrap();
        authority.push_fault(answer(&match granted {
            Some(scope) => format!(r#""token_type":"Bearer","scope":"{scope}""#),
            None => r#""token_type":"Bearer""#.to_owned(),
        }));
        let mut args = base_args(&authority);
        args.extend(["--scope".into(), asked.into()]);
        let mut cmd = token_cmd(&strs(&args));
        cmd.env(SECRET_ENV, SECRET);
        let out = run(cmd);

        let what = format!("asked {asked:?}, granted {granted:?}");
        assert!(
            out.status.success(),
            "{what}: {:?}: {}",
            out.status,
            out.stderr
        );
        assert_eq!(out.stdout, "at-7-0123456789abcdef\n", "{what}");
        if !warned {
            assert_eq!(out.stderr, "", "{what}");
            continue;
        }
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "{what}: {}", out.stderr);
        assert!(
            lines[0].starts_with("token: warning: "),
            "{what}: {}",
            lines[0]
        );
        assert!(lines[0].contains(granted.unwrap()), "{what}: {}", lines[0]);
        assert!(lines[0].contains(asked), "{what}: {}", lines[0]);
        assert_no_access_token(&out.stderr);
    }
}

fn watch_warnings_go_to_stderr_and_stdout_stays_json() {
    let authority = LocalAuthority::start().unwrap();
    // Every answer: a MAC token for less than asked, living 1 s.
    authority.set_outage(Some(Fault::json(
        200,
        r#"{"access_token":"at-7-0123456789abcdef","expires_in":1,"token_type":"mac","scope":"orders:read"}"#,
    )));
    let mut args = base_args(&authority);
    args.extend(["--scope".into(), "orders:read orders:write".into()]);
    args.extend(["--watch".into(), "2.5".into()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    let events = events(&out.stdout);
    let tokens = of_kind(&events, "token");
    assert!(tokens.len() >= 2, "{}", out.stdout);
    for event in &tokens {
        assert_eq!(event["token_type"], "mac", "{event}");
    }
    let lines = out.stderr_lines();
    for line in &lines {
        assert!(line.starts_with("token: warning: "), "{}", out.stderr);
    }
    // The token type: once per token the authority issued.
    let typed = lines.iter().filter(|l| l.contains("\"mac\"")).count();
    assert!(typed >= 2, "{}", out.stderr);
    // The scope: once, not on every refresh of the same scope.
    let scoped = lines.iter().filter(|l| l.contains("scope")).count();
    assert_eq!(scoped, 1, "{}", out.stderr);
    assert_no_access_token(&out.stdout);
    assert_no_access_token(&out.stderr);
}

/// A `redis-server` on a free port of 127.0.0.1 that wants `password`,
/// killed on drop.
#[cfg(feature = "redis")]
struct PasswordRedis {
    child: std::process::Child,
    port: u16,
}

#[cfg(feature = "redis")]
impl PasswordRedis {
    fn start(password: &str) -> PasswordRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--requirepass", password])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = PasswordRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server does not listen");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

#[cfg(feature = "redis")]
impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "redis")]
fn a_redis_that_refuses_our_password_is_a_warning_on_stderr() {
    let server = PasswordRedis::start("the-right-password-4f1a");
    let authority = LocalAuthority::start().unwrap();
    let password = "wrong-password-9c2e";
    let url = format!("redis://:{password}@127.0.0.1:{}/0", server.port);
    let mut cmd = token_cli();
    cmd.args(strs(&base_args(&authority)))
        .env(SECRET_ENV, SECRET)
        .env(REDIS_URL_ENV, &url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run(cmd);

    // The cache is skipped: the token comes from the authority.
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim()));
    let lines = out.stderr_lines();
    assert!(!lines.is_empty(), "no warning about the refused password");
    for line in &lines {
        assert!(line.starts_with("token: warning: "), "{}", out.stderr);
    }
    assert!(lines.iter().any(|l| l.contains("Redis")), "{}", out.stderr);
    assert!(!out.stderr.contains(password), "{}", out.stderr);
    assert!(!out.stderr.contains("redis://"), "{}", out.stderr);
    assert_no_access_token(&out.stderr);
}

/// The token exchange and discovery (issue 17) with `--redis-url`: a second
/// run of each finds the first run's token in Redis and asks nothing of
/// the authority but, for `--issuer`, its metadata.
#[cfg(feature = "redis")]
fn token_exchange_and_an_issuer_share_their_tokens_through_redis() {
    use tokenkeeper::oauth2::token_type;

    let password = "redis-password-7d3b";
    let server = PasswordRedis::start(password);
    let url = format!("redis://:{password}@127.0.0.1:{}/0", server.port);
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-exchange-redis");
    let subject = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3b3JrbG9hZCJ9.cmVkaXMtc3ViamVjdA";
    authority.add_subject_token(subject, token_type::JWT);
    let subject_file = dir.path().join("subject.jwt");
    std::fs::write(&subject_file, subject).unwrap();
    let token_url = authority.token_url();
    let issuer = authority.issuer();
    let subject_path = subject_file.display().to_string();
    let exchange: [&str; 6] = [
        "--token-url",
        &token_url,
        "--grant",
        "token-exchange",
        "--subject-token-file",
        &subject_path,
    ];
    let discovered: [&str; 2] = ["--issuer", &issuer];
    for args in [&exchange[..], &discovered[..]] {
        let run_once = || {
            let mut cmd = token_cli();
            cmd.args(args)
                .args(["--client-id", CLIENT_ID])
                .env(SECRET_ENV, SECRET)
                .env(REDIS_URL_ENV, &url)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            run(cmd)
        };
        let token_requests = || {
            let requests = authority.requests();
            requests.iter().filter(|r| r.path == "/token").count()
        };
        let before = token_requests();
        let first = run_once();
        assert!(first.status.success(), "{args:?}: {}", first.stderr);
        assert_eq!(first.stderr, "", "{args:?}");
        assert!(authority.is_valid_access_token(first.stdout.trim()));
        let second = run_once();
        assert!(second.status.success(), "{args:?}: {}", second.stderr);
        assert_eq!(second.stdout, first.stdout, "{args:?}: not from Redis");
        assert_eq!(token_requests(), before + 1, "{args:?}");
        assert!(!first.stderr.contains(subject) && !second.stdout.contains(subject));
    }
    assert_eq!(authority.exchanges().len(), 1);
}

// ---------------------------------------------------------------------------
// Proxies

/// Every variable that names a proxy.
const PROXY_VARIABLES: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// A "proxy" on 127.0.0.1 that counts the connections it gets and closes
/// them unanswered.
struct ProxyRecorder {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ProxyRecorder {
    fn start() -> ProxyRecorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        // Lives as long as the test process: a leaked listener is harmless.
        thread::spawn(move || {
            for stream in listener.incoming() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        ProxyRecorder { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn a_loopback_token_url_never_goes_through_a_proxy() {
    let proxy = ProxyRecorder::start();
    let authority = LocalAuthority::start().unwrap();
    let port = authority.addr().port();
    for url in [
        authority.token_url(),
        format!("http://localhost:{port}/token"),
    ] {
        let mut cmd = token_cmd(&["--token-url", &url, "--client-id", CLIENT_ID]);
        cmd.env(SECRET_ENV, SECRET)
            .env_remove("no_proxy")
            .env_remove("NO_PROXY");
        for name in PROXY_VARIABLES {
            cmd.env(name, format!("http://{}", proxy.addr));
        }
        let out = run(cmd);

        assert!(
            out.status.success(),
            "{url}: {:?}: {}",
            out.status,
            out.stderr
        );
        assert!(authority.is_valid_access_token(out.stdout.trim()), "{url}");
        assert_eq!(proxy.connections(), 0, "{url} went through the proxy");
    }
}

/// Holds an exclusive lock on `<cache file>.lock` until dropped, as a hung
/// or stopped neighbour mid-refresh (or a plain `flock`) would.
fn hold_cache_lock(cache_file: &Path) -> std::fs::File {
    let mut lock_path = cache_file.as_os_str().to_owned();
    lock_path.push(".lock");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(PathBuf::from(lock_path)).unwrap();
    file.try_lock().expect("lock the cache's lock file");
    file
}

fn a_cache_lock_held_forever_costs_the_lease_wait_not_the_token() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-held-lock");
    let cache_file = dir.path().join("token.json");
    let _held = hold_cache_lock(&cache_file);
    let mut args = base_args(&authority);
    args.extend(["--cache-file".into(), cache_file.display().to_string()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    // Measured for the record: the lease wait (2 s) plus one exchange.
    eprintln!("one-shot run with the cache lock held: {:?}", out.took);
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim()));
    assert_eq!(authority.token_requests(), 1);
    assert!(out.took < Duration::from_secs(8), "took {:?}", out.took);
}

fn with_the_cache_lock_held_a_refusal_is_named_not_a_timeout() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-held-lock-refused");
    let cache_file = dir.path().join("token.json");
    let _held = hold_cache_lock(&cache_file);
    let mut args = base_args(&authority);
    args.extend(["--cache-file".into(), cache_file.display().to_string()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, "wrong-secret-1a2b3c");
    let out = run(cmd);

    // What happened is that the authority refused, not that a request
    // (never sent) timed out.
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("invalid_client"), "{}", out.stderr);
    assert!(!out.stderr.contains("timed out"), "{}", out.stderr);
    assert_eq!(authority.token_requests(), 1);
}

fn watch_with_the_cache_lock_held_forever_publishes_tokens() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-watch-held-lock");
    let cache_file = dir.path().join("token.json");
    let _held = hold_cache_lock(&cache_file);
    let mut args = base_args(&authority);
    args.extend(["--cache-file".into(), cache_file.display().to_string()]);
    args.extend(["--watch".into(), "4".into()]);
    let mut cmd = token_cmd(&strs(&args));
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd);

    eprintln!("--watch 4 with the cache lock held: {:?}", out.took);
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    let events = events(&out.stdout);
    let tokens = of_kind(&events, "token");
    assert_eq!(tokens.len(), 1, "{}", out.stdout);
    assert_eq!(tokens.len(), events.len(), "{}", out.stdout);
    check_token_event("token", tokens[0]);
    assert_eq!(authority.token_requests(), 1);
}
