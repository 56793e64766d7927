//! The test harness of the test files whose tests need something that a
//! machine may lack (`redis-server`, Node.js, root): libtest's harness has
//! no way to skip a test at run time, so such a test could only return
//! early and be counted as passed. Here (on `libtest-mimic`, which takes libtest's
//! arguments and prints its summary) a test whose need is missing is
//! reported as ignored, with the reason, and one line on stderr says how
//! many were and why. Under CI (`CI=true`) a missing need is a failure of
//! every test that has it, so a CI run never passes without them.
//!
//! A file on this harness sets `harness = false` in its `[[test]]` entry of
//! Cargo.toml, keeps its tests as plain functions (without `#[test]`), and
//! lists them in its `main` with [`add_tests!`]; a function left out of the
//! list is dead code, which the lints refuse.
//!
//! `--ignored` and `--include-ignored` mean "run the ignored tests too": a
//! test whose need is missing then fails, saying what is missing.

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// Whether this runs under CI (`CI=true`, in any case), where a test that
/// cannot run is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What some tests need (a program, a privilege), and why this machine
/// lacks it, if it does.
pub struct Needs {
    what: &'static str,
    missing: Option<String>,
}

impl Needs {
    /// `what` names the need ("redis-server"); `missing` says why this
    /// machine lacks it, or is `None` when it does not.
    pub fn new(what: &'static str, missing: Option<String>) -> Needs {
        Needs { what, missing }
    }

    /// `redis-server`, on the PATH.
    pub fn redis_server() -> Needs {
        Needs::new("redis-server", super::process::redis_server_missing())
    }
}

/// The tests of one test file, run by [`Harness::run`].
pub struct Harness {
    args: Arguments,
    trials: Vec<Trial>,
    /// Per need that is missing (outside CI): what, why, which tests.
    skipped: Vec<(&'static str, String, Vec<&'static str>)>,
}

impl Harness {
    /// A harness for the arguments this process got (libtest's).
    pub fn from_args() -> Harness {
        let mut args = Arguments::from_args();
        // libtest's variable, which libtest-mimic does not read.
        if args.test_threads.is_none() {
            args.test_threads = std::env::var("RUST_TEST_THREADS")
                .ok()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0);
        }
        Harness {
            args,
            trials: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// A test that needs nothing beyond this machine's basics.
    pub fn test(&mut self, name: &'static str, test: fn()) {
        self.trials.push(Trial::test(name, move || {
            test();
            Ok(())
        }));
    }

    /// A test that needs `needs`. When that is missing: outside CI the
    /// test is ignored, with the reason; under CI, or when ignored tests
    /// were asked for, it fails, with the reason.
    pub fn test_needing(&mut self, needs: &Needs, name: &'static str, test: fn()) {
        let Some(why) = needs.missing.clone() else {
            return self.test(name, test);
        };
        let run_ignored = self.args.ignored || self.args.include_ignored;
        if under_ci() || run_ignored {
            let failure = if under_ci() {
                format!(
                    "needs {} ({why}), and under CI=true that is a failure",
                    needs.what
                )
            } else {
                format!("needs {} ({why})", needs.what)
            };
            // Listed among the ignored ones, so that `--ignored` picks it.
            let trial = Trial::test(name, move || Err(Failed::from(failure)));
            self.trials.push(trial.with_ignored_flag(!under_ci()));
            return;
        }
        let reason = format!("needs {}: {why}", needs.what);
        self.trials.push(Trial::ignorable_test(name, move || {
            Ok(Completion::ignored_with(reason))
        }));
        match self
            .skipped
            .iter_mut()
            .find(|(what, ..)| *what == needs.what)
        {
            Some((.., names)) => names.push(name),
            None => self.skipped.push((needs.what, why, vec![name])),
        }
    }

    /// Runs the tests that the arguments select, prints libtest's summary,
    /// and exits with libtest's exit code.
    pub fn run(self) -> ! {
        if !self.args.list {
            self.say_what_is_skipped();
        }
        libtest_mimic::run(&self.args, self.trials).exit()
    }

    /// One line on stderr per missing need whose tests this run selects:
    /// the summary counts them as ignored, and this says why.
    fn say_what_is_skipped(&self) {
        for (what, why, names) in &self.skipped {
            let selected = self
                .trials
                .iter()
                .filter(|t| names.contains(&t.name()) && !self.args.is_filtered_out(t))
                .count();
            if selected == 0 {
                continue;
            }
            let (tests, they) = if selected == 1 {
                ("test needs", "it fails")
            } else {
                ("tests need", "they fail")
            };
            eprintln!(
                "SKIPPED: {selected} {tests} {what} ({why}): counted as ignored, not passed; \
                 under CI=true {they}."
            );
        }
    }
}

/// Adds the test functions listed to a [`Harness`], each under its own
/// name, with the attributes written before it (such as `#[cfg(...)]`):
/// `add_tests!(harness; a, b)` for tests that need nothing,
/// `add_tests!(harness needing needs; a, b)` for tests that need `needs`.
// Unused in the files on libtest's harness, which include this module too.
#[allow(unused_macros)]
macro_rules! add_tests {
    ($harness:ident; $($(#[$attr:meta])* $name:path),* $(,)?) => {
        $( $(#[$attr])* $harness.test(stringify!($name), $name); )*
    };
    ($harness:ident needing $needs:ident; $($(#[$attr:meta])* $name:path),* $(,)?) => {
        $( $(#[$attr])* $harness.test_needing(&$needs, stringify!($name), $name); )*
    };
}

#[allow(unused_imports)]
pub(crate) use add_tests;
