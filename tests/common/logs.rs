//! Every log record of the test process, at every level, from every thread
//! and target: for the tests that check what the library logs (and that no
//! secret is in it).
//!
//! One logger per process: tests that run in parallel see each other's
//! records, so a test looks for its own (by a path or a name only it uses),
//! or checks that no record at all holds a secret.

use std::sync::{Mutex, OnceLock};

/// A captured record: its level, and `"LEVEL target message"`.
pub type Logged = (log::Level, String);

struct Capture(Mutex<Vec<Logged>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {} {}", record.level(), record.target(), record.args());
        self.0.lock().unwrap().push((record.level(), line));
    }

    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("no other logger in a test process");
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}

/// Starts capturing, if nothing did yet: records logged before are lost.
pub fn capture_logs() {
    capture();
}

/// Every record captured so far.
pub fn logged() -> Vec<Logged> {
    capture().0.lock().unwrap().clone()
}

/// The text of every record captured so far.
pub fn logged_lines() -> Vec<String> {
    logged().into_iter().map(|(_, line)| line).collect()
}
