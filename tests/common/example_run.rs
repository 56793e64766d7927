//! The examples' runs as tests check them (tests/examples.rs here, and
//! crates/surf-tests/tests/examples.rs, which includes this file through
//! `#[path]`): each run killed after `RUN_LIMIT`, so a hang fails instead of
//! blocking; exit status 0; no secret in the output; lines and summary
//! figures looked up in stdout.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{self, example_bin, has_authority_token, Finished};

/// No example comes near this unless it hangs (they take about 5 s).
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The command that runs example `name` from `dir` (see
/// `process::build_examples`), its output collected.
pub fn example_in(dir: &Path, name: &str) -> Command {
    let mut cmd = Command::new(example_bin(dir, name));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

impl Finished {
    /// Asserts exit status 0 and no secret in the output; returns stdout.
    pub fn succeeded(&self) -> &str {
        assert!(
            self.status.success(),
            "the example failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        assert_no_secrets(&self.stdout);
        assert_no_secrets(&self.stderr);
        &self.stdout
    }
}

/// Runs `cmd` to completion, killing it after `RUN_LIMIT`.
pub fn run(cmd: Command) -> Finished {
    process::run(cmd, "the example", RUN_LIMIT)
}

/// Asserts that `text` holds nothing shaped like the local authority's
/// tokens (`at-<n>-<16 hex digits>` for access tokens, `rt-...` for refresh
/// tokens), nor its client secret.
pub fn assert_no_secrets(text: &str) {
    for prefix in ["at-", "rt-"] {
        assert!(
            !has_authority_token(text, prefix),
            "a token was printed:\n{text}"
        );
    }
    assert!(
        !text.contains("secret-a"),
        "the client secret was printed:\n{text}"
    );
}

/// Asserts that `stdout` has a line containing `needle`.
pub fn assert_line(stdout: &str, needle: &str) {
    assert!(
        stdout.lines().any(|line| line.contains(needle)),
        "no line with {needle:?} in:\n{stdout}"
    );
}

/// The number after `label` on the line that starts with it (leading
/// spaces aside), as in the examples' summaries.
pub fn summary_value(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line {label:?} with a number in:\n{stdout}"))
}
