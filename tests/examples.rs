//! The examples as a user runs them: each example binary runs to the end
//! against its embedded authority, exits 0, prints what it says it shows,
//! and never prints a secret (an access or refresh token issued by the local
//! authority, or the client secret).
//!
//! Each test is compiled only when the example's required features are on
//! (every example needs an HTTP client: the `ureq` feature is required in
//! Cargo.toml). The Redis example needs `redis-server` on the PATH: without
//! it that test is reported as ignored, with the reason, except under CI
//! (`CI=true`), where that is a failure (the harness is `common::harness`).
//! Each run is killed after `common::example_run::RUN_LIMIT`, so a hang
//! fails instead of blocking. The surf example's run is in
//! crates/surf-tests/tests/examples.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::example_run::{assert_line, example_in, run, summary_value};
#[cfg(feature = "redis")]
use common::harness::Needs;
use common::harness::{add_tests, Harness};
#[cfg(feature = "redis")]
use common::process::TempDir;
use common::process::{build_examples, test_features};

fn main() {
    let mut harness = Harness::from_args();
    add_tests!(harness;
        #[cfg(feature = "async-std")]
        async_std_app,
        #[cfg(feature = "smol")]
        smol_app,
        shared_file_cache,
        #[cfg(feature = "jwt")]
        dpop,
        #[cfg(feature = "redis")]
        redis_cache_without_redis_explains_and_exits_0,
    );
    #[cfg(feature = "redis")]
    {
        let redis_server = Needs::redis_server();
        add_tests!(harness needing redis_server; redis_cache_with_its_own_redis_server);
    }
    harness.run()
}

/// The examples this build can run: those whose required features are on.
fn enabled_examples() -> Vec<&'static str> {
    let mut names = vec!["shared_file_cache"];
    if cfg!(feature = "async-std") {
        names.push("async_std_app");
    }
    if cfg!(feature = "smol") {
        names.push("smol_app");
    }
    if cfg!(feature = "redis") {
        names.push("redis_cache");
    }
    if cfg!(feature = "jwt") {
        names.push("dpop");
    }
    names
}

/// `<target>/<profile>/examples`, after building every enabled example once
/// per test process, with this test's features.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_examples(&enabled_examples(), &test_features()))
}

/// The command that runs example `name`.
fn example(name: &str) -> Command {
    example_in(examples_dir(), name)
}

#[cfg(feature = "async-std")]
fn async_std_app() {
    let run = run(example("async_std_app"));
    let stdout = run.succeeded();
    assert_line(stdout, "async-std app: 3 workers and a subscriber");
    // The first token and at least one background refresh.
    assert_line(stdout, "subscriber: token #1 published");
    assert_line(stdout, "subscriber: token #2 published");
    assert_line(stdout, "subscriber: stream ended (manager stopped)");
    for id in 0..3 {
        assert_line(stdout, &format!("worker {id}: "));
    }
    assert!(summary_value(stdout, "reads") > 0, "{stdout}");
    assert_line(stdout, "(failed: 0)");
    assert_eq!(summary_value(stdout, "rejected reads"), 0, "{stdout}");
    assert!(summary_value(stdout, "authority requests") >= 2, "{stdout}");
}

#[cfg(feature = "smol")]
fn smol_app() {
    let run = run(example("smol_app"));
    let stdout = run.succeeded();
    assert_line(stdout, "smol app: 3 workers and a subscriber");
    assert_line(stdout, "subscriber: token #1 published");
    assert_line(stdout, "subscriber: token #2 published");
    assert_line(stdout, "subscriber: stream ended (manager stopped)");
    assert_line(stdout, "headers built with with_current()");
    assert!(summary_value(stdout, "headers built") > 0, "{stdout}");
    assert_eq!(summary_value(stdout, "rejected headers"), 0, "{stdout}");
}

fn shared_file_cache() {
    let run = run(example("shared_file_cache"));
    let stdout = run.succeeded();
    assert_line(stdout, "first token: token T+");
    // The second process starts from the file, without asking the authority.
    assert_line(stdout, "child ] first token: token T+");
    assert_line(stdout, "from the file (issued");
    assert_line(stdout, "(unchanged: the child did not ask the authority)");
    assert!(!stdout.contains("asked the authority too"), "{stdout}");
    if cfg!(unix) {
        assert_line(stdout, "now in the file (mode 600)");
    }
    assert_line(stdout, "done: tokens published:");
    let requests = summary_value(stdout, "authority requests");
    let published = summary_value(stdout, "tokens published");
    assert!(requests >= 1, "{stdout}");
    assert!(summary_value(stdout, "read from the file") >= 1, "{stdout}");
    assert!(requests < published, "{stdout}");
}

#[cfg(feature = "jwt")]
fn dpop() {
    let run = run(example("dpop"));
    let stdout = run.succeeded();
    assert_line(stdout, "DPoP key: ES256, thumbprint ");
    assert_line(stdout, "token: token_type DPoP, bound to the key: true");
    assert_line(
        stdout,
        "request 1: 401 use_dpop_nonce; asked again with the nonce: 200",
    );
    assert_line(stdout, "request 2: 200");
    assert_line(stdout, "request 3: 200");
    assert_line(stdout, "a proof sent twice: 200, then 401");
    assert_eq!(summary_value(stdout, "nonce challenges:"), 1, "{stdout}");
    assert_eq!(summary_value(stdout, "refused proofs:"), 1, "{stdout}");
    assert_eq!(summary_value(stdout, "resource requests:"), 6, "{stdout}");
}

#[cfg(feature = "redis")]
fn redis_cache_with_its_own_redis_server() {
    let mut cmd = example("redis_cache");
    // The example starts its own server when REDIS_URL is not set.
    cmd.env_remove("REDIS_URL");
    let run = run(cmd);
    let stdout = run.succeeded();
    assert_line(stdout, "started redis-server (pid ");
    assert_line(stdout, "[T+");
    assert_line(stdout, "A] first token: token T+");
    assert_line(stdout, "from Redis: the authority was not asked");
    assert!(summary_value(stdout, "read from Redis") >= 1, "{stdout}");
    assert!(
        summary_value(stdout, "authority requests") < summary_value(stdout, "tokens published"),
        "{stdout}"
    );
    assert_line(stdout, "stopping redis-server");
    // The server it started is gone.
    let pid = stdout
        .split("started redis-server (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .expect("the pid of redis-server");
    if cfg!(target_os = "linux") {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server (pid {pid}) still runs"
        );
    }
}

#[cfg(feature = "redis")]
fn redis_cache_without_redis_explains_and_exits_0() {
    // No REDIS_URL and no redis-server on the PATH.
    let empty = TempDir::new("empty-path");
    let mut cmd = example("redis_cache");
    cmd.env_remove("REDIS_URL").env("PATH", empty.path());
    let run = run(cmd);
    drop(empty);
    let stdout = run.succeeded();
    assert_line(stdout, "redis cache: skipped: no Redis to talk to.");
    assert_line(stdout, "REDIS_URL");
    assert_line(stdout, "apt-get install redis-server");
}
