//! The surf example (`examples/surf_middleware.rs`) as a user runs it:
//! it runs to the end against its embedded authority, exits 0, prints what
//! it says it shows, and never prints a secret. Built by cargo with this
//! test's profile and target directory (`common::process::build_examples`).

#[path = "../../../tests/common/mod.rs"]
mod common;

use common::example_run::{assert_line, example_in, run, summary_value};
use common::process::build_examples;

#[test]
fn surf_middleware() {
    // This package has no features: the example's come from its
    // dependency on tokenkeeper.
    let dir = build_examples(&["surf_middleware"], &[]);
    let run = run(example_in(&dir, "surf_middleware"));
    let stdout = run.succeeded();
    assert_line(stdout, "1. GET without BearerAuth          -> 401");
    assert_line(stdout, "2. GET with BearerAuth             -> 200");
    // Each POST was rejected, refreshed and replayed with its body.
    for i in 1..=4 {
        assert_line(stdout, &format!("-> 200 \"ok: order {i}\""));
    }
    assert_line(
        stdout,
        "the server rejected the token (HTTP 401); reporting it to the manager",
    );
    // Compare-and-invalidate: one refresh for the whole burst.
    assert_line(
        stdout,
        "1 token request(s) for the burst (one refresh for all four)",
    );
    assert_line(stdout, "4. GET with BearerAuth             -> 200");
    assert_eq!(
        summary_value(stdout, "authority token requests"),
        2,
        "{stdout}"
    );
}
