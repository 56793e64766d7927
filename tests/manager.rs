//! The manager's behaviour on virtual time: refresh scheduling, grace period,
//! backoff, single flight, compare-and-invalidate, subscriptions, shutdown.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use tokenkeeper::{
    Backoff, Error, FetchReason, LifetimePolicy, RandomEarlyJitter, SourceError, Token,
};

#[test]
fn fetches_at_start_and_refreshes_exactly_at_stale() {
    // (lifetime, stale offset) under the default policy and no jitter.
    let cases = [
        (secs(1), ms(500)),
        (secs(20), secs(10)),
        (secs(59), ms(29_500)),
        (secs(3600), secs(2700)),
        (secs(86_400), secs(64_800)),
    ];
    for (lifetime, stale) in cases {
        let b = Bench::new(lifetime);
        assert_eq!(
            b.source.calls(),
            1,
            "{lifetime:?}: first token fetched at start"
        );
        let first = b.handle.current().expect("first token published");
        assert_eq!(first.issued_ms(), START_MS);
        assert_eq!(first.stale_ms(), START_MS + stale.as_millis() as u64);
        assert_eq!(b.handle.state().next_refresh_ms(), Some(first.stale_ms()));

        b.advance_to(first.stale_ms() - 1);
        assert_eq!(b.source.calls(), 1, "{lifetime:?}: no refresh before stale");
        b.advance(ms(1));
        assert_eq!(b.source.calls(), 2, "{lifetime:?}: refresh at stale");
        let second = b.handle.current().unwrap();
        assert_ne!(second, first);
        assert_eq!(second.issued_ms(), first.stale_ms());
        assert_eq!(
            b.source.reasons(),
            vec![FetchReason::Initial, FetchReason::Scheduled]
        );
    }
}

#[test]
fn zero_lifetime_token_is_an_error_not_a_refresh_loop() {
    let b = Bench::new(Duration::ZERO);
    assert_eq!(b.source.calls(), 1);
    assert!(b.handle.current().is_none());
    let state = b.handle.state();
    assert_eq!(state.consecutive_failures, 1);
    assert!(state
        .last_error
        .unwrap()
        .to_string()
        .contains("already expired"));
    // Retries follow the backoff, not a hot loop: at most 500 ms later.
    b.advance(ms(500));
    assert_eq!(b.source.calls(), 2);
}

#[test]
fn missing_lifetime_uses_the_policy_default() {
    let b = Bench::with(secs(60), |m| {
        m.lifetime(LifetimePolicy::default().default_lifetime(secs(100)))
    });
    b.source.set_mode(Mode::Succeed(None));
    let first = b.handle.current().unwrap();
    b.advance_to(first.stale_ms());
    let t = b.handle.current().unwrap();
    assert_eq!(t.expiry_ms() - t.issued_ms(), 100_000);
}

#[test]
fn jittered_refreshes_stay_within_bounds() {
    let b = Bench::with(secs(3600), |m| {
        m.jitter(RandomEarlyJitter::with_key(secs(60), 11))
    });
    let mut earliest_seen = u64::MAX;
    for _ in 0..200 {
        let token = b.handle.current().unwrap();
        let at = b.handle.state().next_refresh_ms().unwrap();
        assert!(
            at <= token.stale_ms() && at + 60_000 >= token.stale_ms(),
            "{at}"
        );
        earliest_seen = earliest_seen.min(token.stale_ms() - at);
        let calls = b.source.calls();
        b.advance_to(at - 1);
        assert_eq!(
            b.source.calls(),
            calls,
            "refresh not before the drawn instant"
        );
        b.advance(ms(1));
        assert_eq!(b.source.calls(), calls + 1, "refresh at the drawn instant");
    }
    // The draws are not all at stale.
    assert!(earliest_seen < 60_000);
}

#[test]
fn grace_period_through_an_outage_longer_than_a_lifetime_then_recovery() {
    let b = Bench::with(secs(100), |m| m.wait_timeout(secs(5)));
    let first = b.handle.current().unwrap();
    b.source
        .set_mode(Mode::Fail(SourceError::transient("authority down")));

    // From stale to expiry every refresh fails, and the old token is served.
    b.advance_to(first.stale_ms());
    while b.now() < first.expiry_ms() - 1_000 {
        b.advance(secs(1));
        assert_eq!(b.handle.current().as_ref(), Some(&first));
        let token = finished(b.spawn({
            let h = b.handle.clone();
            async move { h.token().await }
        }));
        assert_eq!(token.unwrap(), first);
    }
    let state = b.handle.state();
    assert!(state.consecutive_failures >= 3, "{state:?}");
    assert_eq!(
        state.last_error.as_ref().unwrap().to_string(),
        "authority down"
    );

    // After expiry: nothing is served, and a waiter times out with the error.
    b.advance_to(first.expiry_ms());
    assert!(b.handle.current().is_none());
    let waiter = b.spawn({
        let h = b.handle.clone();
        async move { h.token().await }
    });
    assert!(!waiter.is_finished());
    b.advance(secs(5));
    match finished(waiter) {
        Err(Error::Timeout {
            last_error: Some(e),
            waited,
        }) => {
            assert_eq!(e.to_string(), "authority down");
            assert_eq!(waited, secs(5));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    // The outage lasts another lifetime, then the authority comes back.
    b.advance_in_steps(secs(100), secs(1));
    assert!(b.handle.current().is_none());
    b.source.set_mode(Mode::Succeed(Some(secs(100))));
    let back_at = b.now();
    // Recovery within one backoff cap (60 s).
    while b.handle.current().is_none() {
        assert!(
            b.now() - back_at <= 60_000,
            "no recovery within the backoff cap"
        );
        b.advance(secs(1));
    }
    let token = finished(b.spawn({
        let h = b.handle.clone();
        async move { h.token().await }
    }))
    .unwrap();
    assert_ne!(token, first);
    assert_eq!(b.handle.state().consecutive_failures, 0);
}

#[test]
fn backoff_grows_within_bounds_and_resets_on_success() {
    // Full jitter: the n-th delay is drawn from [0, 500 ms * 2^n], at most
    // 60 s, and is 60 s itself once that bound reaches the cap (n >= 7).
    // One draw says little, so each delay is looked at over many seeds: the
    // largest must come near its own bound (which a backoff that does not
    // grow never reaches), and none may pass it.
    const SEEDS: u64 = 40;
    const FAILURES: usize = 10;
    let ceiling = |n: usize| (500u64 << n).min(60_000);
    let mut largest = [[0u64; FAILURES]; 2];
    for seed in 0..SEEDS {
        let b = Bench::with(secs(3600), |m| {
            m.backoff(Backoff::new(ms(500), 2.0, secs(60)).seed(seed))
        });
        let first = b.handle.current().unwrap();
        b.source.set_mode(Mode::Fail(SourceError::transient("503")));
        b.advance_to(first.stale_ms());
        // Two outages, with a success between them: the second ramp starts
        // from the initial delay again.
        for (ramp, largest) in largest.iter_mut().enumerate() {
            for (n, largest) in largest.iter_mut().enumerate() {
                let state = b.handle.state();
                assert_eq!(state.consecutive_failures, n as u32 + 1, "seed {seed}");
                let delay = state.next_refresh_ms().unwrap() - b.now();
                // A draw below 100 ms waits 100 ms (no immediate retry).
                assert!(
                    (100..=ceiling(n).max(100)).contains(&delay),
                    "seed {seed}, ramp {ramp}, failure {n}: {delay} ms"
                );
                if ceiling(n) == 60_000 {
                    assert_eq!(delay, 60_000, "seed {seed}: at the cap, the cap");
                }
                *largest = (*largest).max(delay);
                let calls = b.source.calls();
                b.advance(Duration::from_millis(delay - 1));
                assert_eq!(b.source.calls(), calls, "seed {seed}: not early");
                b.advance(ms(1));
                assert_eq!(b.source.calls(), calls + 1, "seed {seed}: on time");
            }
            if ramp == 1 {
                break;
            }
            b.source.set_mode(Mode::Succeed(Some(secs(3600))));
            let delay = b.handle.state().next_refresh_ms().unwrap() - b.now();
            b.advance(Duration::from_millis(delay));
            let state = b.handle.state();
            assert_eq!(state.consecutive_failures, 0);
            let token = b.handle.current().unwrap();
            assert_eq!(state.next_refresh_ms(), Some(token.stale_ms()));
            b.source.set_mode(Mode::Fail(SourceError::transient("503")));
            b.advance_to(token.stale_ms());
        }
    }
    for (ramp, largest) in largest.iter().enumerate() {
        for (n, largest) in largest.iter().enumerate() {
            // 40 uniform draws all below 70 % of their bound: odds of 1e-6.
            assert!(
                *largest >= ceiling(n) * 7 / 10,
                "ramp {ramp}, failure {n}: the largest of {SEEDS} delays is {largest} ms, \
                 the bound {} ms: {largest:?}",
                ceiling(n)
            );
        }
    }
}

#[test]
fn retry_delays_grow_by_the_multiplier_up_to_the_cap() {
    // Measured on the source: the time between failed fetches. Bounds of
    // the n-th delay: 400 ms * 2^n, capped at 10 s.
    const SEEDS: u64 = 100;
    const BOUNDS: [u64; 7] = [400, 800, 1_600, 3_200, 6_400, 10_000, 10_000];
    let mut gaps = vec![Vec::new(); BOUNDS.len()];
    for seed in 0..SEEDS {
        let (b, times) = reshaped_bench(
            secs(3600),
            |m| m.backoff(Backoff::new(ms(400), 2.0, secs(10)).seed(seed)),
            |t, _| t.clone(),
        );
        let first = b.handle.current().unwrap();
        b.source.set_mode(Mode::Fail(SourceError::transient("503")));
        b.advance_to(first.stale_ms());
        b.advance_in_steps(secs(60), ms(50));
        let times = times.lock().unwrap();
        // The first fetch succeeded; the second is the first failure.
        for (n, gaps) in gaps.iter_mut().enumerate() {
            gaps.push(times[n + 2] - times[n + 1]);
        }
    }
    let mut means = Vec::new();
    for (n, (gaps, bound)) in gaps.iter().zip(BOUNDS).enumerate() {
        let least = *gaps.iter().min().unwrap();
        let most = *gaps.iter().max().unwrap();
        let mean = gaps.iter().sum::<u64>() / SEEDS;
        // Never above the bound, never below the 100 ms floor (steps of
        // 50 ms round a gap up by less than a step).
        assert!(least >= 100 && most <= bound + 50, "failure {n}: {gaps:?}");
        if bound == 10_000 {
            assert!(
                least >= 10_000,
                "failure {n}: at the cap, the cap: {gaps:?}"
            );
        } else {
            // Uniform draws: the largest near the bound, the mean near its
            // middle (100 draws: 5 standard deviations from 35 % or 65 %).
            assert!(most >= bound * 9 / 10, "failure {n}: {most} of {bound}");
            assert!(
                (bound * 35 / 100..=bound * 65 / 100 + 50).contains(&mean),
                "failure {n}: mean {mean} for a bound of {bound}"
            );
        }
        means.push(mean);
    }
    // Each ramp delay is about twice the one before.
    for (n, pair) in means[..5].windows(2).enumerate() {
        assert!(
            pair[1] * 10 >= pair[0] * 15,
            "failures {n}, {}: {means:?}",
            n + 1
        );
    }
}

#[test]
fn an_outage_after_expiry_costs_the_backoffs_pace_whatever_the_callers() {
    // Retry bounds 0.5 s, 1 s, 2 s, 4 s, then 8 s each: within the 30 s
    // stale window of a 100 s token the ramp is over, so once the token
    // has expired the source is asked exactly every 8 s.
    const CALLERS: usize = 1_000;
    const CAP: u64 = 8_000;
    const OUTAGE: Duration = Duration::from_secs(80);
    let (b, times) = reshaped_bench(
        secs(100),
        |m| {
            m.backoff(Backoff::new(ms(500), 2.0, Duration::from_millis(CAP)).seed(3))
                .wait_timeout(secs(2))
        },
        |t, _| t.clone(),
    );
    let first = b.handle.current().unwrap();
    b.source
        .set_mode(Mode::Fail(SourceError::transient("authority down")));
    b.advance_to(first.stale_ms());
    b.advance_in_steps(Duration::from_millis(first.expiry_ms() - b.now()), ms(100));
    assert!(b.handle.current().is_none(), "the token has expired");
    let calls_at_expiry = b.source.calls();
    let down_from = b.now();

    // A thousand callers, each asking again as soon as its wait times out.
    // They start 100 ms apart in groups of 50, so that some of them give
    // up, and ask again, in every 100 ms of the outage.
    let asked = Rc::new(std::cell::Cell::new(0u64));
    let mut callers = Vec::new();
    for i in 0..CALLERS {
        let h = b.handle.clone();
        let asked = asked.clone();
        callers.push(b.ex.spawn(async move {
            loop {
                asked.set(asked.get() + 1);
                match h.token().await {
                    Ok(token) => return token,
                    Err(Error::Timeout { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
        if i % 50 == 49 {
            b.advance(ms(100));
        }
    }
    b.advance_in_steps(OUTAGE - Duration::from_millis(b.now() - down_from), ms(100));

    let fetched: Vec<u64> = times.lock().unwrap()[calls_at_expiry as usize..].to_vec();
    let pace = OUTAGE.as_millis() as u64 / CAP;
    assert!(
        (pace..=pace + 1).contains(&(fetched.len() as u64)),
        "{} fetches in {OUTAGE:?} for {} token() calls; the backoff allows {pace}",
        fetched.len(),
        asked.get()
    );
    assert!(
        fetched.windows(2).all(|w| w[1] - w[0] == CAP),
        "fetched at {fetched:?}"
    );
    // The callers asked tens of thousands of times and shared the fetches.
    assert!(asked.get() >= 30 * CALLERS as u64, "{} calls", asked.get());
    assert!(callers.iter().all(|c| !c.is_finished()));

    // The authority comes back: the next retry, at most a cap later,
    // serves every caller the same token.
    b.source.set_mode(Mode::Succeed(Some(secs(100))));
    let before = b.source.calls();
    b.advance_in_steps(Duration::from_millis(CAP), ms(100));
    assert_eq!(b.source.calls(), before + 1);
    let token = b.handle.current().expect("recovered");
    for c in callers {
        assert_eq!(finished(c), token);
    }
}

#[test]
fn permanent_errors_wait_the_cap_and_retry_after_is_honoured() {
    let b = Bench::with(secs(3600), |m| {
        m.backoff(Backoff::new(ms(500), 2.0, secs(60)))
    });
    let first = b.handle.current().unwrap();
    b.source
        .set_mode(Mode::Fail(SourceError::permanent("invalid_client")));
    b.advance_to(first.stale_ms());
    assert_eq!(b.handle.state().next_refresh_ms(), Some(b.now() + 60_000));
    assert!(b.handle.state().last_error.unwrap().is_permanent());

    b.source.set_mode(Mode::Fail(
        SourceError::transient("slow down").with_retry_after(secs(42)),
    ));
    b.advance(secs(60));
    assert_eq!(b.source.calls(), 3);
    let wait = b.handle.state().next_refresh_ms().unwrap() - b.now();
    assert!(wait >= 42_000, "{wait}");
}

#[test]
fn a_failed_first_fetch_is_retried_not_fatal() {
    let source = ScriptedSource::new(secs(60));
    source.set_mode(Mode::Fail(SourceError::transient("not yet")));
    let clock = tokenkeeper::ManualClock::at_ms(START_MS);
    let (handle, driver) = tokenkeeper::TokenManager::builder(source.clone())
        .clock(clock.clone())
        // Seeded: the first draw is not 0 ms (an immediate retry).
        .backoff(Backoff::new(ms(100), 2.0, secs(1)).seed(7))
        .build();
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    let waiter = ex.spawn({
        let h = handle.clone();
        async move { h.token().await }
    });
    while ex.try_tick() {}
    assert_eq!(source.calls(), 1);
    assert!(!handle.is_stopped());
    assert_eq!(source.reasons(), vec![FetchReason::Initial]);
    source.set_mode(Mode::Succeed(Some(secs(60))));
    clock.advance(secs(1));
    while ex.try_tick() {}
    assert_eq!(source.calls(), 2);
    assert_eq!(source.reasons()[1], FetchReason::Initial);
    assert!(finished(waiter).is_ok());
}

#[test]
fn ten_thousand_cold_start_waiters_share_one_fetch() {
    let clock = tokenkeeper::ManualClock::at_ms(START_MS);
    let source = ScriptedSource::new(secs(3600));
    source.set_latency(ms(200));
    let (handle, driver) = tokenkeeper::TokenManager::builder(source.clone())
        .clock(clock.clone())
        .build();
    let ex = smol::LocalExecutor::new();
    let waiters: Vec<_> = (0..10_000)
        .map(|_| {
            let h = handle.clone();
            ex.spawn(async move { h.token().await })
        })
        .collect();
    ex.spawn(driver).detach();
    while ex.try_tick() {}
    assert_eq!(source.calls(), 1);
    assert!(waiters.iter().all(|w| !w.is_finished()));
    clock.advance(ms(200));
    while ex.try_tick() {}
    assert_eq!(source.calls(), 1);
    let first = handle.current().unwrap();
    for w in waiters {
        assert_eq!(finished(w).unwrap(), first);
    }
    assert_eq!(handle.state().source_requests, 1);
}

#[test]
fn a_thousand_rejections_of_one_token_cause_one_fetch() {
    let b = Bench::new(secs(3600));
    b.source.set_latency(ms(50));
    b.advance(ms(50));
    let first = b.handle.current().unwrap();
    assert_eq!(b.source.calls(), 1);
    let callers: Vec<_> = (0..1_000)
        .map(|_| {
            let h = b.handle.clone();
            let t = first.clone();
            b.ex.spawn(async move { h.refresh_rejected(&t).await })
        })
        .collect();
    b.settle();
    assert_eq!(b.source.calls(), 2);
    assert!(
        b.handle.current().is_none(),
        "the rejected token is withdrawn"
    );
    b.advance(ms(50));
    let second = b.handle.current().unwrap();
    assert_ne!(second, first);
    for c in callers {
        assert_eq!(finished(c).unwrap(), second);
    }
    assert_eq!(b.source.calls(), 2);
    assert_eq!(b.handle.state().rejections, 1);
    assert_eq!(b.source.reasons()[1], FetchReason::Rejected);
    // A late report of the old token is answered with the new one, no fetch.
    let late = finished(b.spawn({
        let h = b.handle.clone();
        async move { h.refresh_rejected(&first).await }
    }));
    assert_eq!(late.unwrap(), second);
    assert_eq!(b.source.calls(), 2);
    assert_eq!(b.handle.current().as_ref(), Some(&second), "not withdrawn");
    assert_eq!(b.handle.state().rejections, 1);
    assert_eq!(b.handle.state().next_refresh_ms(), Some(second.stale_ms()));

    // A thousand late reports that reach the actor only after a newer
    // publish: made while `second` was current and its scheduled refresh
    // in flight, taken by the actor in the turn that publishes `third`.
    b.advance_to(second.stale_ms());
    assert_eq!(b.source.calls(), 3, "the scheduled refresh is in flight");
    assert_eq!(b.handle.current().as_ref(), Some(&second));
    // Each polled once here, outside the executor: it reports and waits.
    let mut late_callers: Vec<_> = (0..1_000)
        .map(|_| Box::pin(b.handle.refresh_rejected(&second)))
        .collect();
    for c in &mut late_callers {
        assert!(poll_once(c).is_none());
    }
    b.advance(ms(50));
    let third = b.handle.current().expect("the refreshed token stays");
    assert_ne!(third, second);
    for c in &mut late_callers {
        assert_eq!(poll_once(c).expect("answered").unwrap(), third);
    }
    assert_eq!(b.source.calls(), 3, "no fetch for the late reports");
    assert_eq!(b.handle.state().rejections, 1, "nothing withdrawn");
    assert_eq!(b.handle.state().next_refresh_ms(), Some(third.stale_ms()));
}

#[test]
fn rejecting_a_token_already_replaced_keeps_the_replacement_and_fetches_nothing() {
    let b = Bench::new(secs(3600));
    let t1 = b.handle.current().unwrap();
    b.advance_to(t1.stale_ms());
    let t2 = b.handle.current().unwrap();
    assert_ne!(t2, t1);
    assert_eq!(b.source.calls(), 2);
    let before = b.handle.state();

    // A caller that still holds t1 (say, a request sent just before the
    // refresh) reports it rejected: it gets t2 at once.
    let answer = finished(b.spawn({
        let h = b.handle.clone();
        let t1 = t1.clone();
        async move { h.refresh_rejected(&t1).await }
    }));
    assert_eq!(answer.unwrap(), t2);
    assert_eq!(b.source.calls(), 2, "no fetch");
    assert_eq!(b.handle.current().as_ref(), Some(&t2), "t2 not withdrawn");
    let after = b.handle.state();
    assert_eq!(after.rejections, before.rejections);
    assert_eq!(after.next_refresh_ms(), Some(t2.stale_ms()));
    // Nothing was planned early either: the next fetch is t2's refresh.
    b.advance_to(t2.stale_ms() - 1);
    assert_eq!(b.source.calls(), 2);
    assert_eq!(b.handle.current().as_ref(), Some(&t2));
}

#[test]
fn a_rejection_the_actor_takes_after_a_newer_publish_changes_nothing() {
    let b = Bench::new(secs(3600));
    b.source.set_latency(ms(50));
    let t1 = b.handle.current().unwrap();
    b.advance_to(t1.stale_ms());
    assert_eq!(b.source.calls(), 2, "the scheduled refresh is in flight");
    // The caller reports t1 while it is still current (polled once here,
    // outside the executor); the actor takes the report in the turn in
    // which the refresh publishes t2, so only the actor's own comparison
    // can tell the report is late.
    let mut late = Box::pin(b.handle.refresh_rejected(&t1));
    assert!(poll_once(&mut late).is_none());
    b.advance(ms(50));
    let t2 = b.handle.current().expect("t2 stays published");
    assert_ne!(t2, t1);
    assert_eq!(poll_once(&mut late).expect("answered").unwrap(), t2);
    assert_eq!(b.source.calls(), 2, "no fetch");
    let state = b.handle.state();
    assert_eq!(state.rejections, 0);
    assert_eq!(state.next_refresh_ms(), Some(t2.stale_ms()));
    b.advance_to(t2.stale_ms() - 1);
    assert_eq!(b.source.calls(), 2);
}

/// Polls `fut` once, outside the bench's executor.
fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    futures_lite::future::block_on(futures_lite::future::poll_once(fut))
}

#[test]
fn a_rejection_stands_when_its_caller_gives_up_at_once() {
    let b = Bench::new(secs(3600));
    let first = b.handle.current().unwrap();
    {
        // Polled once, then dropped before the actor ran.
        let mut gone = Box::pin(b.handle.refresh_rejected(&first));
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(&mut gone)).is_none()
        );
    }
    assert_eq!(b.source.calls(), 1);
    b.settle();
    assert_eq!(b.source.calls(), 2);
    assert_eq!(b.handle.state().rejections, 1);
    assert_ne!(b.handle.current().unwrap(), first);
}

#[test]
fn forced_refreshes_are_rate_limited() {
    let b = Bench::with(secs(3600), |m| m.forced_refresh_interval(secs(5)));
    let reject = |t: std::sync::Arc<Token>| {
        let h = b.handle.clone();
        b.spawn(async move { h.refresh_rejected(&t).await })
    };
    let first = b.handle.current().unwrap();
    let r1 = reject(first);
    assert_eq!(b.source.calls(), 2);
    let second = finished(r1).unwrap();
    // Rejecting the new token at once waits for the interval.
    let r2 = reject(second.clone());
    assert_eq!(b.source.calls(), 2);
    assert!(b.handle.current().is_none());
    b.advance(ms(4_999));
    assert_eq!(b.source.calls(), 2);
    assert!(!r2.is_finished());
    b.advance(ms(1));
    assert_eq!(b.source.calls(), 3);
    assert_ne!(finished(r2).unwrap(), second);
}

#[test]
fn rejection_during_backoff_keeps_the_backoff_schedule() {
    let b = Bench::with(secs(100), |m| {
        m.backoff(Backoff::new(secs(10), 1.0, secs(10)))
    });
    let first = b.handle.current().unwrap();
    b.source
        .set_mode(Mode::Fail(SourceError::transient("down")));
    b.advance_to(first.stale_ms());
    assert_eq!(b.source.calls(), 2);
    let next = b.handle.state().next_refresh_ms().unwrap();
    let _r = b.spawn({
        let h = b.handle.clone();
        async move { h.refresh_rejected(&first).await }
    });
    assert!(b.handle.current().is_none(), "withdrawn even while failing");
    assert_eq!(b.source.calls(), 2, "no extra fetch during backoff");
    assert_eq!(b.handle.state().next_refresh_ms(), Some(next));
}

#[test]
fn subscribers_all_see_a_refresh_and_a_stalled_one_skips_to_the_newest() {
    let b = Bench::new(secs(60));
    let seen: Rc<RefCell<Vec<Vec<String>>>> = Rc::new(RefCell::new(vec![Vec::new(); 1_000]));
    for i in 0..1_000 {
        let mut sub = b.handle.subscribe();
        let seen = seen.clone();
        b.ex.spawn(async move {
            while let Some(t) = sub.next().await {
                seen.borrow_mut()[i].push(t.access_token().secret().to_owned());
            }
        })
        .detach();
    }
    let mut stalled = b.handle.subscribe();
    b.settle();
    assert!(seen.borrow().iter().all(|s| s == &["token-1"]));

    // Ten refreshes while the stalled subscriber never polls.
    for _ in 0..10 {
        let stale = b.handle.current().unwrap().stale_ms();
        b.advance_to(stale);
    }
    assert_eq!(b.source.calls(), 11);
    let expected: Vec<String> = (1..=11).map(|n| format!("token-{n}")).collect();
    assert!(
        seen.borrow().iter().all(|s| s == &expected),
        "every subscriber saw every refresh"
    );

    // The stalled one yields only the newest, then waits: nothing queued.
    let newest = futures_lite::future::block_on(stalled.next()).unwrap();
    assert_eq!(newest.access_token().secret(), "token-11");
    assert!(
        futures_lite::future::block_on(futures_lite::future::poll_once(stalled.next())).is_none()
    );
    assert!(std::mem::size_of_val(&stalled) <= 64);
}

#[test]
fn subscription_yields_nothing_before_the_first_token_and_ends_on_stop() {
    let source = ScriptedSource::new(secs(60));
    source.set_mode(Mode::Hang);
    let clock = tokenkeeper::ManualClock::at_ms(START_MS);
    let (handle, driver) = tokenkeeper::TokenManager::builder(source.clone())
        .clock(clock)
        .build();
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    let mut sub = handle.subscribe();
    let next = ex.spawn(async move { sub.next().await.is_none() });
    while ex.try_tick() {}
    assert!(!next.is_finished());
    let h = handle.clone();
    let stop = ex.spawn(async move { h.shutdown().await });
    while ex.try_tick() {}
    assert!(stop.is_finished());
    assert!(finished(next), "stream ended");
}

#[test]
fn dropping_the_last_handle_stops_the_manager() {
    let b = Bench::new(secs(60));
    let mut sub = b.handle.subscribe();
    let Bench {
        ex,
        clock,
        source,
        handle,
    } = b;
    let state_probe = sub.next();
    let first = futures_lite::future::block_on(state_probe).unwrap();
    drop(handle);
    while ex.try_tick() {}
    clock.advance(Duration::from_secs(86_400));
    while ex.try_tick() {}
    assert_eq!(source.calls(), 1, "no fetch after the last handle is gone");
    assert_eq!(clock.sleepers(), 0, "the driver left no timer behind");
    assert!(futures_lite::future::block_on(sub.next()).is_none());
    drop(first);
}

#[test]
fn the_manager_runs_while_any_clone_of_the_handle_lives() {
    let Bench {
        ex,
        clock,
        source,
        handle,
    } = Bench::new(secs(60));
    let clones: Vec<tokenkeeper::TokenHandle> = (0..3).map(|_| handle.clone()).collect();
    let late_clone = clones[0].clone();
    drop(handle);
    drop(clones);
    while ex.try_tick() {}
    // 60 s tokens are refreshed at 45 s.
    clock.advance(secs(50));
    while ex.try_tick() {}
    assert_eq!(source.calls(), 2, "one handle left: the manager refreshed");
    assert!(!late_clone.is_stopped());
    drop(late_clone);
    while ex.try_tick() {}
    clock.advance(secs(86_400));
    while ex.try_tick() {}
    assert_eq!(source.calls(), 2, "no fetch after the last clone is gone");
    assert_eq!(clock.sleepers(), 0, "the driver left no timer behind");
}

#[test]
fn shutdown_fails_pending_waiters_with_stopped() {
    let b = Bench::new(secs(60));
    b.source
        .set_mode(Mode::Fail(SourceError::transient("down")));
    let first = b.handle.current().unwrap();
    b.advance_to(first.expiry_ms());
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let h = b.handle.clone();
            b.ex.spawn(async move { h.token().await })
        })
        .collect();
    b.settle();
    let calls = b.source.calls();
    finished(b.spawn({
        let h = b.handle.clone();
        async move { h.shutdown().await }
    }));
    for w in waiters {
        assert!(matches!(finished(w), Err(Error::Stopped)));
    }
    assert!(b.handle.is_stopped());
    assert!(!b.handle.state().running);
    let late = finished(b.spawn({
        let h = b.handle.clone();
        async move { h.token().await }
    }));
    assert!(matches!(late, Err(Error::Stopped)));
    b.advance(secs(86_400));
    assert_eq!(b.source.calls(), calls);
}

#[test]
fn dropping_the_driver_stops_the_manager() {
    let source = ScriptedSource::new(secs(60));
    let (handle, driver) = tokenkeeper::TokenManager::builder(source)
        .clock(tokenkeeper::ManualClock::at_ms(START_MS))
        .build();
    drop(driver);
    assert!(handle.is_stopped());
    assert!(matches!(
        futures_lite::future::block_on(handle.token()),
        Err(Error::Stopped)
    ));
}

#[test]
fn a_wall_clock_jump_is_noticed_within_thirty_seconds() {
    let b = Bench::new(secs(3600));
    let first = b.handle.current().unwrap();
    // Suspend for two hours: the wall clock moves, timers do not.
    b.clock.jump(secs(7_200));
    b.settle();
    assert_eq!(b.source.calls(), 1);
    // The actor slept through the refresh instant, so this thread finds the
    // expiry on its own, at the latest at its periodic clock check.
    assert!(
        served_reads_until_expiry_is_seen(&b.handle) <= UNCHECKED_READS,
        "an expired token is served at most {UNCHECKED_READS} times"
    );
    b.advance_in_steps(secs(30), secs(1));
    assert_eq!(b.source.calls(), 2, "heartbeat noticed the jump");
    assert_ne!(b.handle.current().unwrap(), first);
}

#[test]
fn a_waiter_after_a_jump_triggers_the_refresh_at_once() {
    let b = Bench::new(secs(3600));
    // One read on this thread: its copy may skip the clock for a while.
    let first = b.handle.current().unwrap();
    // Suspend for two hours: the token expired while nothing ran.
    b.clock.jump(secs(7_200));
    let mut waiter = Box::pin(b.handle.token());
    let poll = futures_lite::future::poll_once(&mut waiter);
    assert!(
        futures_lite::future::block_on(poll).is_none(),
        "token() waits"
    );
    // And this thread's reads have seen the expiry too.
    assert!(b.handle.current().is_none());
    b.settle();
    assert_eq!(b.source.calls(), 2);
    let token = futures_lite::future::block_on(waiter).unwrap();
    assert!(
        token.is_valid_at_ms(b.now()),
        "token() returned an expired token"
    );
    assert_ne!(token, first);
    assert_eq!(token.access_token().secret(), "token-2");
}

#[test]
fn refresh_rejected_after_a_jump_returns_a_valid_token() {
    let b = Bench::new(secs(3600));
    let first = b.handle.current().unwrap();
    let h = b.handle.clone();
    let rejected = first.clone();
    let second = finished(b.spawn(async move { h.refresh_rejected(&rejected).await })).unwrap();
    assert_eq!(second.access_token().secret(), "token-2");
    assert_eq!(b.handle.current().unwrap(), second);
    b.clock.jump(secs(7_200));
    // The first token was replaced, and its replacement has expired since.
    let h = b.handle.clone();
    let waiter = b.spawn(async move { h.refresh_rejected(&first).await });
    let token = finished(waiter).unwrap();
    assert!(
        token.is_valid_at_ms(b.now()),
        "refresh_rejected returned an expired token"
    );
    assert_eq!(token.access_token().secret(), "token-3");
}

#[test]
fn a_backward_clock_step_keeps_the_heartbeat() {
    let b = Bench::new(secs(3600));
    let wakeups = b.clock.wakeups();
    b.clock.set_ms(START_MS - 86_400_000);
    b.settle();
    b.advance_in_steps(secs(30), secs(1));
    assert!(
        b.clock.wakeups() > wakeups,
        "the actor still wakes within 30 s"
    );
}

#[test]
fn a_hanging_source_times_out_and_is_retried() {
    let b = Bench::with(secs(60), |m| {
        m.request_timeout(secs(10))
            .backoff(Backoff::new(secs(1), 1.0, secs(1)))
    });
    let first = b.handle.current().unwrap();
    b.source.set_mode(Mode::Hang);
    b.advance_to(first.stale_ms());
    assert_eq!(b.source.calls(), 2);
    b.advance(ms(9_999));
    assert_eq!(b.handle.state().consecutive_failures, 0);
    b.advance(ms(1));
    let state = b.handle.state();
    assert_eq!(state.consecutive_failures, 1);
    assert!(state.last_error.unwrap().to_string().contains("timed out"));
    b.source.set_mode(Mode::Succeed(Some(secs(60))));
    b.advance(secs(1));
    assert_eq!(b.source.calls(), 3);
    assert_ne!(b.handle.current().unwrap(), first);
}

#[test]
fn an_idle_manager_wakes_once_per_thirty_seconds() {
    let b = Bench::new(secs(86_400));
    let before = b.clock.wakeups();
    b.advance_in_steps(secs(3_000), secs(1));
    let wakeups = b.clock.wakeups() - before;
    assert_eq!(wakeups, 100, "one heartbeat per 30 s over 3000 s");
    assert_eq!(b.source.calls(), 1);
}

#[test]
fn state_reports_counts_and_times() {
    let b = Bench::new(secs(100));
    let state = b.handle.state();
    assert!(state.running);
    assert_eq!(state.source_requests, 1);
    assert_eq!(state.refreshes, 1);
    assert_eq!(state.last_success_ms(), Some(START_MS));
    assert_eq!(state.expiry_ms(), Some(START_MS + 100_000));
    let debug = format!("{:?}", b.handle);
    assert!(!debug.contains("token-1"), "{debug}");
}

#[test]
fn nothing_is_served_after_shutdown_even_while_the_token_is_valid() {
    let b = Bench::new(secs(3600));
    let token = b.handle.current().unwrap();
    finished(b.spawn({
        let h = b.handle.clone();
        async move { h.shutdown().await }
    }));
    assert!(b.handle.current().is_none());
    let h = b.handle.clone();
    let t = token.clone();
    let (plain, rejected) =
        finished(b.spawn(async move { (h.token().await, h.refresh_rejected(&t).await) }));
    assert!(matches!(plain, Err(Error::Stopped)));
    assert!(matches!(rejected, Err(Error::Stopped)));
}

#[test]
fn a_permanent_failure_without_a_valid_token_fails_waiters_at_once() {
    let b = Bench::new(secs(60));
    let first = b.handle.current().unwrap();
    b.source
        .set_mode(Mode::Fail(SourceError::permanent("invalid_client")));
    b.advance_to(first.expiry_ms());
    assert!(b.handle.current().is_none());
    let waiter = b.spawn({
        let h = b.handle.clone();
        async move { h.token().await }
    });
    match finished(waiter) {
        Err(Error::Source(e)) => assert_eq!(e.to_string(), "invalid_client"),
        other => panic!("expected the permanent error at once, got {other:?}"),
    }
    // A transient failure keeps waiters waiting.
    b.source.set_mode(Mode::Fail(SourceError::transient("503")));
    b.advance(secs(60));
    let waiter = b.spawn({
        let h = b.handle.clone();
        async move { h.token().await }
    });
    assert!(!waiter.is_finished());
    // And a waiter that was already waiting is woken by a permanent failure.
    b.source
        .set_mode(Mode::Fail(SourceError::permanent("invalid_grant")));
    let next = b.handle.state().next_refresh_ms().unwrap();
    b.advance_to(next);
    assert!(matches!(finished(waiter), Err(Error::Source(_))));
    assert!(b.handle.state().failures >= 3);
}

#[test]
fn the_manager_timeout_is_typed() {
    let b = Bench::with(secs(60), |m| m.request_timeout(secs(5)));
    let first = b.handle.current().unwrap();
    b.source.set_mode(Mode::Hang);
    b.advance_to(first.stale_ms());
    b.advance(secs(5));
    let error = b.handle.state().last_error.unwrap();
    let timed_out = error
        .cause()
        .and_then(|c| c.downcast_ref::<tokenkeeper::RequestTimedOut>())
        .expect("a RequestTimedOut cause");
    assert_eq!(timed_out.after, secs(5));
}

#[test]
fn reads_on_other_threads_follow_publishes_and_withdrawals() {
    let b = Bench::new(secs(3600));
    let read_everywhere = |handle: &tokenkeeper::TokenHandle| -> Vec<Option<String>> {
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let h = handle.clone();
                    scope.spawn(move || {
                        // Twice: the second read comes from the thread's copy.
                        let _ = h.current();
                        let owned = h.current().map(|t| t.access_token().secret().to_owned());
                        let borrowed = h.with_current(|t| t.access_token().secret().to_owned());
                        assert_eq!(owned, borrowed);
                        owned
                    })
                })
                .collect();
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        })
    };
    assert_eq!(
        read_everywhere(&b.handle),
        vec![Some("token-1".to_owned()); 4]
    );
    let first = b.handle.current().unwrap();
    b.advance_to(first.stale_ms());
    assert_eq!(
        read_everywhere(&b.handle),
        vec![Some("token-2".to_owned()); 4]
    );
    // Withdrawn after a rejection: no thread's copy may serve it.
    b.source.set_mode(Mode::Hang);
    let second = b.handle.current().unwrap();
    let _pending = b.spawn({
        let h = b.handle.clone();
        async move { h.refresh_rejected(&second).await }
    });
    assert_eq!(read_everywhere(&b.handle), vec![None; 4]);
    // Nested reads on one thread fall back to the shared slot and agree.
    b.source.set_mode(Mode::Succeed(Some(secs(3600))));
    b.advance_in_steps(secs(30), secs(1));
    let nested = b
        .handle
        .with_current(|outer| (outer.clone(), b.handle.current().unwrap()));
    let (outer, inner) = nested.unwrap();
    assert_eq!(outer, *inner);
}

#[test]
fn a_thread_copy_expires_with_the_token() {
    let b = Bench::new(secs(100));
    let first = b.handle.current().unwrap();
    b.source
        .set_mode(Mode::Fail(SourceError::transient("down")));
    // Past the refresh instant the actor has marked the token late (and
    // failed to replace it): from then on every read checks the clock.
    b.advance_to(first.stale_ms());
    assert!(b.source.calls() >= 2);
    b.clock.set_ms(first.expiry_ms() - 1);
    assert!(b.handle.current().is_some());
    // Expiry alone (the actor does not run) changes nothing the copy is
    // checked against but the clock.
    b.clock.set_ms(first.expiry_ms());
    assert!(b.handle.current().is_none());
    assert!(b.handle.with_current(|_| ()).is_none());
    let handle = b.handle.clone();
    assert!(std::thread::spawn(move || handle.current().is_none())
        .join()
        .unwrap());
}

#[test]
fn a_fresh_token_read_checks_the_clock_periodically() {
    // The actor never runs after the first token: as a starved executor.
    let b = Bench::new(secs(100));
    let first = b.handle.current().unwrap();
    b.clock.set_ms(first.expiry_ms());
    let served = served_reads_until_expiry_is_seen(&b.handle);
    assert!(served <= UNCHECKED_READS, "{served} expired reads");
    // Once seen, never served again on this thread, by either read.
    for _ in 0..100 {
        assert!(b.handle.current().is_none());
        assert!(b.handle.with_current(|_| ()).is_none());
    }
    // Every other thread finds it on its own within as many reads.
    let handle = b.handle.clone();
    let served = std::thread::spawn(move || served_reads_until_expiry_is_seen(&handle))
        .join()
        .unwrap();
    assert!(served <= UNCHECKED_READS, "{served} expired reads");
}

#[test]
fn a_token_with_little_room_after_its_refresh_instant_is_checked_on_every_read() {
    // 1.2 s tokens: their refresh instant is less than a second before
    // expiry, so the actor gives readers no unchecked reads.
    let b = Bench::new(Duration::from_millis(1_200));
    let first = b.handle.current().unwrap();
    b.clock.set_ms(first.expiry_ms());
    assert!(b.handle.current().is_none());
}

/// Reads on this thread until one sees no valid token; the number of
/// reads that returned one.
fn served_reads_until_expiry_is_seen(handle: &tokenkeeper::TokenHandle) -> u32 {
    let mut served = 0;
    while handle.current().is_some() {
        served += 1;
        assert!(served <= 1_000, "expiry never seen");
    }
    served
}

#[test]
fn waiters_time_out_on_the_actors_timer_at_their_own_deadlines() {
    let b = Bench::with(secs(3600), |m| {
        m.wait_timeout(secs(10)).request_timeout(secs(86_400))
    });
    let first = b.handle.current().unwrap();
    b.source.set_mode(Mode::Hang);
    let sleepers = b.clock.sleepers();
    let start = b.now();
    let rejecting = b.spawn({
        let h = b.handle.clone();
        async move { h.refresh_rejected(&first).await }
    });
    b.advance(secs(4));
    let crowd: Vec<_> = (0..100)
        .map(|_| {
            b.spawn({
                let h = b.handle.clone();
                async move { h.token().await }
            })
        })
        .collect();
    // Waiting arms no timer: the actor's one timer keeps every deadline.
    assert!(
        b.clock.sleepers() <= sleepers.max(1),
        "{} sleepers",
        b.clock.sleepers()
    );
    b.advance_to(start + 10_000 - 1);
    assert!(!rejecting.is_finished());
    b.advance(Duration::from_millis(1));
    assert!(
        matches!(finished(rejecting), Err(Error::Timeout { waited, .. }) if waited == secs(10))
    );
    assert!(
        crowd.iter().all(|w| !w.is_finished()),
        "woken, but not yet due"
    );
    b.advance_to(start + 14_000 - 1);
    assert!(crowd.iter().all(|w| !w.is_finished()));
    b.advance(Duration::from_millis(1));
    for waiter in crowd {
        assert!(matches!(finished(waiter), Err(Error::Timeout { .. })));
    }
    assert!(b.clock.sleepers() <= sleepers.max(1));
}

#[test]
fn a_waiter_keeps_its_own_time_until_the_driver_starts() {
    let clock = tokenkeeper::ManualClock::at_ms(START_MS);
    let (handle, driver) = tokenkeeper::TokenManager::builder(ScriptedSource::new(secs(60)))
        .clock(clock.clone())
        .wait_timeout(secs(5))
        .build();
    let ex = smol::LocalExecutor::new();
    let waiter = ex.spawn(async move { handle.token().await });
    while ex.try_tick() {}
    clock.advance(secs(5));
    while ex.try_tick() {}
    assert!(matches!(
        finished(waiter),
        Err(Error::Timeout {
            last_error: None,
            ..
        })
    ));
    drop(driver);
}

// ---- Never a loop of fetches (issue 14, item 5) ----

/// How far a test lets a looping manager go: after this many fetches the
/// source hangs, so that a manager that fetches in a loop inside one poll
/// ends the poll (and the test fails) instead of spinning for ever.
const LOOP_LIMIT: usize = 1_000;

/// `ScriptedSource`'s tokens reshaped by `reshape(token, now)`, with the
/// instant of every fetch recorded.
struct Reshaped<F> {
    inner: ScriptedSource,
    reshape: F,
    times: Arc<Mutex<Vec<u64>>>,
}

impl<F> tokenkeeper::TokenSource for Reshaped<F>
where
    F: FnMut(&Token, u64) -> Token + Send + 'static,
{
    fn fetch(
        &mut self,
        cx: tokenkeeper::FetchContext,
    ) -> tokenkeeper::BoxFuture<'_, Result<Token, SourceError>> {
        let now = cx.now_ms();
        let calls = {
            let mut times = self.times.lock().unwrap();
            times.push(now);
            times.len()
        };
        if calls > LOOP_LIMIT {
            return Box::pin(std::future::pending());
        }
        let fetch = self.inner.fetch(cx);
        let reshape = &mut self.reshape;
        Box::pin(async move { fetch.await.map(|t| reshape(&t, now)) })
    }
}

/// A bench whose source's tokens are reshaped by `reshape`; the instants of
/// its fetches are in the returned list.
fn reshaped_bench(
    lifetime: Duration,
    configure: impl FnOnce(tokenkeeper::TokenManagerBuilder) -> tokenkeeper::TokenManagerBuilder,
    reshape: impl FnMut(&Token, u64) -> Token + Send + 'static,
) -> (Bench, Arc<Mutex<Vec<u64>>>) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&times);
    let bench = Bench::with_source(ScriptedSource::new(lifetime), configure, move |inner| {
        Reshaped {
            inner,
            reshape,
            times: recorded,
        }
    });
    (bench, times)
}

/// The token's value with other instants.
fn with_times(token: &Token, issued: u64, stale: u64, expiry: u64) -> Token {
    Token::from_parts_ms(token.access_token().clone(), issued, stale, expiry).unwrap()
}

/// Offsets from the start, in whole seconds, of the fetches at `times`.
fn offsets_s(times: &Mutex<Vec<u64>>) -> Vec<u64> {
    let times = times.lock().unwrap();
    times.iter().map(|t| (t - START_MS) / 1_000).collect()
}

/// The shortest time between two fetches, in ms.
fn shortest_gap_ms(times: &Mutex<Vec<u64>>) -> u64 {
    let times = times.lock().unwrap();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .min()
        .unwrap_or(u64::MAX)
}

#[test]
fn tokens_stale_at_issue_are_refreshed_once_per_interval() {
    // Stale the moment they are issued, valid for an hour: refreshed every
    // 5 % of their lifetime, 3 minutes.
    let (b, times) = reshaped_bench(
        secs(3600),
        |m| m,
        |t, _| with_times(t, t.issued_ms(), t.issued_ms(), t.expiry_ms()),
    );
    b.advance_in_steps(secs(600), secs(1));
    assert_eq!(offsets_s(&times), [0, 180, 360, 540]);
    assert!(b.handle.current().is_some());
}

#[test]
fn a_zero_stale_percent_refreshes_once_per_interval() {
    let (b, times) = reshaped_bench(
        secs(3600),
        |m| m.lifetime(LifetimePolicy::default().stale_percent(0)),
        |t, _| t.clone(),
    );
    let first = b.handle.current().unwrap();
    assert_eq!(first.stale_ms(), first.issued_ms(), "stale at issue");
    b.advance_in_steps(secs(600), secs(1));
    assert_eq!(offsets_s(&times), [0, 180, 360, 540]);
}

#[test]
fn a_source_that_returns_stale_tokens_is_asked_once_per_interval() {
    // As a cache holding tokens someone else fetched 50 minutes ago: valid
    // for 10 more minutes, stale for 5 already.
    let (b, times) = reshaped_bench(
        secs(3600),
        |m| m,
        |t, now| with_times(t, now - 3_000_000, now - 300_000, now + 600_000),
    );
    assert_eq!(b.handle.state().refreshes, 1, "the stale token is served");
    b.advance_in_steps(secs(600), secs(1));
    assert_eq!(offsets_s(&times), [0, 180, 360, 540]);
}

#[test]
fn the_same_stale_token_is_asked_for_again_before_it_expires_never_in_a_loop() {
    // A cache that keeps returning one stale token, which expires 10
    // minutes after the start: the gaps shrink as its expiry nears, so
    // that one more fetch comes before it, but never below 100 ms.
    let expiry = START_MS + 600_000;
    let (b, times) = reshaped_bench(
        secs(3600),
        |m| m,
        move |t, _| with_times(t, expiry - 3_600_000, expiry - 900_000, expiry),
    );
    b.advance_in_steps(secs(600), ms(50));
    let fetches = times.lock().unwrap().clone();
    assert!(fetches.len() <= 20, "{} fetches", fetches.len());
    assert!(shortest_gap_ms(&times) >= 100, "{fetches:?}");
    let last_before_expiry = fetches.iter().filter(|t| **t < expiry).max().unwrap();
    assert!(expiry - last_before_expiry <= 1_000, "{fetches:?}");
}

#[test]
fn retries_after_a_zero_backoff_are_spaced() {
    let (b, times) = reshaped_bench(
        secs(3600),
        |m| m.backoff(Backoff::new(Duration::ZERO, 1.0, Duration::ZERO)),
        |t, _| t.clone(),
    );
    b.source.set_mode(Mode::Fail(SourceError::transient("503")));
    let first = b.handle.current().unwrap();
    b.advance_to(first.stale_ms());
    b.advance_in_steps(secs(10), ms(10));
    let fetches = times.lock().unwrap().len();
    // One retry per 100 ms over 10 s, after the first token and the
    // failed refresh.
    assert_eq!(fetches, 2 + 100, "{fetches} fetches");
    assert!(shortest_gap_ms(&times) >= 100);
}

#[test]
fn a_source_that_returns_expired_tokens_is_retried_not_looped() {
    // A cache whose token expired: the initial fetch fails, and so does
    // every retry, each after the backoff.
    let (b, times) = reshaped_bench(
        secs(3600),
        |m| m.backoff(Backoff::new(Duration::ZERO, 1.0, Duration::ZERO)),
        |t, now| with_times(t, now - 3_600_000, now - 900_000, now),
    );
    assert!(b.handle.current().is_none());
    b.advance_in_steps(secs(1), ms(10));
    let fetches = times.lock().unwrap().len();
    assert_eq!(fetches, 1 + 10, "{fetches} fetches");
}

/// A driver for a manager on `clock` whose source answers at once with
/// tokens stale at issue; and the instants of its fetches.
fn instant_stale_source_driver(
    clock: impl tokenkeeper::Clock,
) -> (
    tokenkeeper::TokenHandle,
    tokenkeeper::Driver,
    Arc<Mutex<Vec<u64>>>,
) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let source = Reshaped {
        inner: ScriptedSource::new(secs(3600)),
        reshape: |t: &Token, _| with_times(t, t.issued_ms(), t.issued_ms(), t.expiry_ms()),
        times: Arc::clone(&times),
    };
    let (handle, driver) = tokenkeeper::TokenManager::builder(source)
        .clock(clock)
        .jitter(tokenkeeper::NoJitter)
        .build();
    (handle, driver, times)
}

#[test]
fn one_poll_of_the_driver_starts_at_most_one_fetch() {
    let clock = tokenkeeper::ManualClock::at_ms(START_MS);
    let (handle, mut driver, times) = instant_stale_source_driver(clock.clone());
    let mut poll = || futures_lite::future::block_on(futures_lite::future::poll_once(&mut driver));
    assert!(poll().is_none());
    assert_eq!(times.lock().unwrap().len(), 1);
    assert!(handle.current().is_some());
    drop(handle);
}

/// A clock that runs fast: every reading, and every timer armed, moves it
/// on by five minutes (for its first `ticks` uses), as a machine suspended
/// over and over would look to the actor.
struct RacingClock {
    inner: tokenkeeper::ManualClock,
    ticks: AtomicU32,
}

impl RacingClock {
    fn tick(&self) {
        let left = self.ticks.load(Ordering::SeqCst);
        if left > 0 {
            self.ticks.store(left - 1, Ordering::SeqCst);
            self.inner.advance(secs(300));
        }
    }
}

impl tokenkeeper::Clock for RacingClock {
    fn now(&self) -> SystemTime {
        self.tick();
        self.inner.now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> tokenkeeper::BoxFuture<'static, ()> {
        self.tick();
        self.inner.sleep_until(deadline)
    }
}

#[test]
fn the_driver_yields_between_fetches_even_when_every_timer_is_already_due() {
    let clock = RacingClock {
        inner: tokenkeeper::ManualClock::at_ms(START_MS),
        ticks: AtomicU32::new(LOOP_LIMIT as u32),
    };
    let (handle, mut driver, times) = instant_stale_source_driver(clock);
    let mut poll = || futures_lite::future::block_on(futures_lite::future::poll_once(&mut driver));
    for n in 1..=5 {
        assert!(poll().is_none());
        assert_eq!(times.lock().unwrap().len(), n, "fetches after {n} polls");
    }
    drop(handle);
}
