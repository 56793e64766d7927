//! The token example (`examples/token.rs`) as the tests run it: built by
//! cargo with the test's profile and target directory, once per test
//! process and set of features, then copied to a name of its own.
//!
//! A copy because the build's own path, `examples/token`, is shared: the
//! test files that run the example (tests/token_cli.rs,
//! tests/cooperation.rs, tests/hostile_echo.rs) build it with and without
//! `redis`, in parallel processes, and each build replaces it while another
//! test's children may be starting from it. The copy is named after its
//! features, so builds with the same features share it (the copies are the
//! same program), and it is checked for the `redis` feature and made again
//! if a concurrent build replaced the binary before it was copied.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::process::{build_examples, example_bin, test_features};

/// The variable the example reads the client secret from.
pub const SECRET_ENV: &str = "TOKENKEEPER_CLIENT_SECRET";
/// The variable the example reads a Redis URL from.
pub const REDIS_URL_ENV: &str = "TOKENKEEPER_REDIS_URL";

/// The example built with every feature of this test, `redis` included
/// when this test has it.
pub fn token_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_copy(&test_features()))
}

/// The example built with this test's features but `redis`.
pub fn token_bin_without_redis() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let features: Vec<&str> = test_features()
            .into_iter()
            .filter(|name| *name != "redis")
            .collect();
        built_copy(&features)
    })
}

/// Builds the example with `features` and copies it to
/// `examples/token-with-<features>`.
fn built_copy(features: &[&str]) -> PathBuf {
    // One build at a time in this process: cargo would wait on its own
    // lock, and a build with other features replaces the binary.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let with_redis = features.contains(&"redis");
    let name = format!("token-with-{}", features.join("-"));
    for _ in 0..3 {
        let examples = build_examples(&["token"], features);
        let built = example_bin(&examples, "token");
        let copy = examples.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        // Copy, then rename into place: a concurrent run never starts a
        // half-written binary.
        let temp = examples.join(format!(".{name}-{}.tmp", std::process::id()));
        std::fs::copy(&built, &temp)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), temp.display()));
        std::fs::rename(&temp, &copy).expect("rename the copied example");
        if accepts_redis_url(&copy) == with_redis {
            return copy;
        }
    }
    panic!("the example keeps being built with the wrong features");
}

/// Whether `bin` was built with the Redis cache: without it, `--redis-url`
/// is refused before anything else is looked at.
fn accepts_redis_url(bin: &Path) -> bool {
    let output = Command::new(bin)
        .args(["--redis-url", "redis://127.0.0.1:1/"])
        .env_remove(SECRET_ENV)
        .env_remove(REDIS_URL_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    !String::from_utf8_lossy(&output.stderr).contains("--features redis")
}

/// The example (built without `redis`) with `args`, stdin closed, stdout
/// and stderr piped, and neither the secret nor the Redis URL in its
/// environment.
pub fn token_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(token_bin_without_redis());
    cmd.args(args)
        .env_remove(SECRET_ENV)
        .env_remove(REDIS_URL_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}
