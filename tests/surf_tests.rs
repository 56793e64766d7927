//! Runs the tests of crates/surf-tests, the package of everything that needs
//! a surf backend (`SurfClient`, the `BearerAuth` middleware, the
//! `surf_middleware` example): `cargo test --locked` on its manifest, with
//! the cargo that built this test (`common::process::cargo`).
//!
//! That package is outside the workspace because surf's backend there,
//! `curl-client`, builds curl-sys and links OpenSSL, which needs
//! `pkg-config` and the OpenSSL headers; the workspace's own tests need
//! only Rust and a C compiler. Where `pkg-config --exists openssl` is false
//! the test is reported as ignored, with the reason, except under CI
//! (`CI=true`), where that is a failure (the harness is `common::harness`;
//! the `surf` feature is required in Cargo.toml).
//!
//! Its target directory is `<this target directory>/surf-tests`: a
//! directory of its own, as the cargo running this test may still hold the
//! lock on its own, and the inner build never mixes with the outer one.

mod common;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::harness::{add_tests, Harness, Needs};
use common::process;

const MANIFEST: &str = "crates/surf-tests/Cargo.toml";

fn main() {
    let openssl = Needs::new("pkg-config and OpenSSL headers", openssl_missing());
    let mut harness = Harness::from_args();
    add_tests!(harness needing openssl; surf_package_tests_pass);
    harness.run()
}

/// Why curl-sys cannot find OpenSSL here, if it cannot.
fn openssl_missing() -> Option<String> {
    const INSTALL: &str = "apt-get install pkg-config libssl-dev";
    match Command::new("pkg-config")
        .args(["--exists", "openssl"])
        .status()
    {
        Ok(status) if status.success() => None,
        Ok(_) => Some(format!("`pkg-config --exists openssl` is false; {INSTALL}")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Some(format!("`pkg-config` is not on the PATH; {INSTALL}"))
        }
        Err(e) => Some(format!("cannot run `pkg-config`: {e}; {INSTALL}")),
    }
}

/// `<target>`, from this test's path, `<target>/<profile>/deps/<test>-<hash>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps/<test>-<hash>")
        .to_path_buf()
}

fn surf_package_tests_pass() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFEST);
    let target = target_dir().join("surf-tests");
    let what = format!(
        "CARGO_TARGET_DIR={} cargo test --locked --manifest-path {}",
        target.display(),
        manifest.display()
    );
    let output = process::cargo()
        .args(["test", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    // A run that compiled but ran nothing would pass above.
    let passed: u64 = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(passed > 0, "{what} ran no test:\n{stdout}\n{stderr}");
}
