//! An authority outage of three token lifetimes, on virtual time, with 100
//! handles reading all along.

mod common;

use std::time::Duration;

use common::*;
use tokenkeeper::{Backoff, SourceError};

#[test]
fn a_long_outage_costs_no_read_while_a_token_is_valid_and_at_most_one_request_per_cap() {
    let lifetime = secs(120);
    let cap = secs(60);
    let b = Bench::with(lifetime, |m| {
        m.backoff(Backoff::new(ms(500), 2.0, cap).seed(17))
    });
    let handles: Vec<_> = (0..100).map(|_| b.handle.clone()).collect();
    let step = ms(250);
    let mut failed_reads_with_valid_token = 0u64;
    let mut reads = 0u64;
    let mut request_times = Vec::new();
    let mut last_calls = b.source.calls();
    let mut run = |b: &Bench, total: Duration, request_times: &mut Vec<u64>| {
        let mut done = Duration::ZERO;
        while done < total {
            b.advance(step);
            done += step;
            if b.source.calls() != last_calls {
                last_calls = b.source.calls();
                request_times.push(b.now());
            }
            // Did any valid token exist? The last one published, if unexpired.
            let valid_exists = b.handle.state().expiry_ms().is_some_and(|e| b.now() < e);
            for h in &handles {
                reads += 1;
                if h.current().is_none() && valid_exists {
                    failed_reads_with_valid_token += 1;
                }
            }
        }
    };

    run(&b, secs(30), &mut request_times);
    let outage_start = b.now();
    b.source
        .set_mode(Mode::Fail(SourceError::transient("authority down")));
    run(&b, lifetime * 3, &mut request_times);
    let back = b.now();
    b.source.set_mode(Mode::Succeed(Some(lifetime)));
    run(&b, cap + secs(1), &mut request_times);

    assert_eq!(failed_reads_with_valid_token, 0, "of {reads} reads");
    // After the ramp (delays reach the 60 s cap after 7 failures), requests
    // are at least a cap apart.
    let outage: Vec<u64> = request_times
        .iter()
        .copied()
        .filter(|t| *t > outage_start && *t <= back + 60_000)
        .collect();
    assert!(outage.len() > 9, "{outage:?}");
    for pair in outage[8..].windows(2) {
        assert!(
            pair[1] - pair[0] >= 60_000,
            "requests closer than the cap: {outage:?}"
        );
    }
    // Recovery within one cap of the authority coming back.
    let state = b.handle.state();
    assert_eq!(state.consecutive_failures, 0);
    assert!(state.last_success_ms().unwrap() <= back + 60_000);
    assert!(state.last_success_ms().unwrap() > back);
    for h in &handles {
        assert!(h.current().is_some());
    }
}
