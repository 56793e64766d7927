//! The `tokenkeeper` binary (crates/cli) as the tests run it: built by
//! cargo with the test's profile and target directory, once per test
//! process and set of features, then copied to a name of its own; and the
//! `token` example (`examples/token.rs`), which runs the same code.
//!
//! A copy because the build's own path, `<profile>/tokenkeeper`, is shared:
//! the test files that run it (tests/token_cli.rs, tests/cooperation.rs,
//! tests/hostile_echo.rs, tests/agent.rs, ...) build it with and without
//! `redis`, in parallel processes, and each build replaces it while another
//! test's children may be starting from it. The copy is named after its
//! features, so builds with the same features share it (the copies are the
//! same program), and it is checked for the `redis` feature and made again
//! if a concurrent build replaced the binary before it was copied.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::process::{build_cli, build_examples, example_bin, test_features};

/// The variable the CLI reads the client secret from.
pub const SECRET_ENV: &str = "TOKENKEEPER_CLIENT_SECRET";
/// The variable the CLI reads a Redis URL from.
pub const REDIS_URL_ENV: &str = "TOKENKEEPER_REDIS_URL";

/// The CLI's features for this test: `jwt` and `redis` as this test has
/// them.
fn cli_features(with_redis: bool) -> Vec<&'static str> {
    let test = test_features();
    let mut features = Vec::new();
    if test.contains(&"jwt") {
        features.push("jwt");
    }
    if with_redis && test.contains(&"redis") {
        features.push("redis");
    }
    features
}

/// The `tokenkeeper` binary built with every CLI feature of this test,
/// `redis` included when this test has it.
pub fn token_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_copy(&cli_features(true)))
}

/// The `tokenkeeper` binary built with this test's features but `redis`.
pub fn token_bin_without_redis() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_copy(&cli_features(false)))
}

/// `tokenkeeper token` (with `redis` when this test has it).
pub fn token_cli() -> Command {
    let mut cmd = Command::new(token_bin());
    cmd.arg("token");
    cmd
}

/// `tokenkeeper token` built without `redis`.
pub fn token_cli_without_redis() -> Command {
    let mut cmd = Command::new(token_bin_without_redis());
    cmd.arg("token");
    cmd
}

/// `tokenkeeper agent` built without `redis`.
pub fn agent_cli() -> Command {
    let mut cmd = Command::new(token_bin_without_redis());
    cmd.arg("agent");
    cmd
}

/// The `token` example, built with this test's features but `redis`: the
/// same code as `tokenkeeper token`, compiled into this package.
pub fn token_example() -> Command {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        let features: Vec<&str> = test_features()
            .into_iter()
            .filter(|name| *name != "redis")
            .collect();
        let examples = build_examples(&["token"], &features);
        example_bin(&examples, "token")
    });
    Command::new(bin)
}

/// One build at a time in this process: cargo would wait on its own lock,
/// and a build with other features replaces the binary.
static BUILDING: Mutex<()> = Mutex::new(());

/// Builds the binary with `features` and copies it to
/// `<profile>/tokenkeeper-with-<features>`.
fn built_copy(features: &[&str]) -> PathBuf {
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let with_redis = features.contains(&"redis");
    let name = format!("tokenkeeper-with-{}", features.join("-"));
    for _ in 0..3 {
        let built = build_cli(features);
        let dir = built.parent().expect("the binary's folder");
        let copy = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        // Copy, then rename into place: a concurrent run never starts a
        // half-written binary.
        let temp = dir.join(format!(".{name}-{}.tmp", std::process::id()));
        std::fs::copy(&built, &temp)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), temp.display()));
        std::fs::rename(&temp, &copy).expect("rename the copied binary");
        if accepts_redis_url(&copy) == with_redis {
            return copy;
        }
    }
    panic!("the CLI keeps being built with the wrong features");
}

/// Whether `bin` was built with the Redis cache: without it, `--redis-url`
/// is refused before anything else is looked at.
fn accepts_redis_url(bin: &Path) -> bool {
    let output = Command::new(bin)
        .args(["token", "--redis-url", "redis://127.0.0.1:1/"])
        .env_remove(SECRET_ENV)
        .env_remove(REDIS_URL_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("run the CLI");
    !String::from_utf8_lossy(&output.stderr).contains("--features redis")
}

/// `tokenkeeper token` (built without `redis`) with `args`, stdin closed,
/// stdout and stderr piped, and neither the secret nor the Redis URL in
/// its environment.
pub fn token_command(args: &[&str]) -> Command {
    let mut cmd = token_cli_without_redis();
    cmd.args(args)
        .env_remove(SECRET_ENV)
        .env_remove(REDIS_URL_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}
