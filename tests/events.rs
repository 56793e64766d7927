//! The operators' event stream, the inherent `next` of subscriptions and
//! event streams, and the watch helper, on virtual time.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_lite::future::{block_on, poll_once};
use tokenkeeper::{
    AccessToken, Backoff, Events, FetchReason, FixedSource, ManagerEvent, RequestTimedOut,
    SourceError, TokenManager,
};

/// Every event ready now, and whether the stream has ended.
fn ready(events: &mut Events) -> (Vec<ManagerEvent>, bool) {
    let mut got = Vec::new();
    loop {
        // A stream that never runs dry fails the test rather than hang it.
        assert!(got.len() <= 1_000, "endless events: {:?}", &got[..3]);
        match block_on(poll_once(events.next())) {
            Some(Some(event)) => got.push(event),
            Some(None) => return (got, true),
            None => return (got, false),
        }
    }
}

/// The events ready now; the stream must not have ended.
fn new_events(events: &mut Events) -> Vec<ManagerEvent> {
    let (got, ended) = ready(events);
    assert!(!ended, "the stream ended early, after {got:?}");
    got
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A short name for each event, to compare sequences.
fn kind(event: &ManagerEvent) -> &'static str {
    match event {
        ManagerEvent::Published { .. } => "published",
        ManagerEvent::FetchFailed { .. } => "failed",
        ManagerEvent::Withdrawn { .. } => "withdrawn",
        ManagerEvent::Lagged { .. } => "lagged",
        ManagerEvent::Stopped => "stopped",
        _ => "other",
    }
}

#[test]
fn a_publish_says_when_the_token_expires_and_when_the_next_refresh_comes() {
    let bench = Bench::new(secs(100));
    let mut events = bench.handle.events();
    // The stream starts at its creation: the first publish came before.
    assert!(new_events(&mut events).is_empty());

    let first = bench.handle.current().unwrap();
    bench.advance_to(first.stale_ms());
    let token = bench.handle.current().unwrap();
    assert_eq!(token.access_token().secret(), "token-2");
    let got = new_events(&mut events);
    let [ManagerEvent::Published {
        at: published_at,
        expires_at,
        next_refresh_at,
        ..
    }] = got.as_slice()
    else {
        panic!("expected one publish, got {got:?}");
    };
    assert_eq!(*published_at, at(first.stale_ms()));
    assert_eq!(*expires_at, at(token.expiry_ms()));
    // No jitter: the next refresh is at the stale instant, and comes then.
    assert_eq!(*next_refresh_at, at(token.stale_ms()));
    let calls = bench.source.calls();
    bench.advance_to(ms_of(*next_refresh_at) - 1);
    assert_eq!(bench.source.calls(), calls);
    bench.advance(ms(1));
    assert_eq!(bench.source.calls(), calls + 1);
}

#[test]
fn a_failure_carries_the_error_the_count_the_reason_and_the_backoff_chosen() {
    let bench = Bench::new(secs(100));
    let mut events = bench.handle.events();
    bench
        .source
        .set_mode(Mode::Fail(SourceError::transient("authority down")));
    let stale = bench.handle.current().unwrap().stale_ms();
    bench.advance_to(stale);

    let got = new_events(&mut events);
    let [ManagerEvent::FetchFailed {
        at: failed_at,
        error,
        reason,
        consecutive_failures,
        retry_in,
        ..
    }] = got.as_slice()
    else {
        panic!("expected one failure, got {got:?}");
    };
    assert_eq!(*failed_at, at(stale));
    assert_eq!(error.message(), "authority down");
    assert!(!error.is_permanent());
    assert_eq!(*reason, FetchReason::Scheduled);
    assert_eq!(*consecutive_failures, 1);
    // The delay is the one the manager waits: the retry comes then, not
    // a millisecond earlier.
    let retry_at = stale + retry_in.as_millis() as u64;
    assert_eq!(bench.handle.state().next_refresh_ms(), Some(retry_at));
    let calls = bench.source.calls();
    bench.advance_to(retry_at - 1);
    assert_eq!(bench.source.calls(), calls);
    bench.advance(ms(1));
    assert_eq!(bench.source.calls(), calls + 1);

    let got = new_events(&mut events);
    let [ManagerEvent::FetchFailed {
        at: failed_at,
        reason,
        consecutive_failures,
        retry_in,
        ..
    }] = got.as_slice()
    else {
        panic!("expected one failure, got {got:?}");
    };
    assert_eq!(*failed_at, at(retry_at));
    assert_eq!(*reason, FetchReason::Retry);
    assert_eq!(*consecutive_failures, 2);
    assert_eq!(
        bench.handle.state().next_refresh_ms(),
        Some(retry_at + retry_in.as_millis() as u64)
    );

    // A permanent error waits the backoff's cap.
    bench
        .source
        .set_mode(Mode::Fail(SourceError::permanent("invalid_client")));
    bench.advance_to(retry_at + retry_in.as_millis() as u64);
    let got = new_events(&mut events);
    let [ManagerEvent::FetchFailed {
        error,
        consecutive_failures: 3,
        retry_in,
        ..
    }] = got.as_slice()
    else {
        panic!("expected the third failure, got {got:?}");
    };
    assert!(error.is_permanent());
    assert_eq!(*retry_in, Backoff::default().cap());
}

#[test]
fn a_first_fetch_that_times_out_is_reported_with_its_reason() {
    let source = ScriptedSource::new(secs(100));
    source.set_mode(Mode::Hang);
    let bench = Bench::with_source(source, |b| b.request_timeout(secs(5)), |s| s);
    let mut events = bench.handle.events();
    bench.advance(ms(4_999));
    assert!(new_events(&mut events).is_empty());
    bench.advance(ms(1));
    let got = new_events(&mut events);
    let [ManagerEvent::FetchFailed {
        at: failed_at,
        error,
        reason: FetchReason::Initial,
        consecutive_failures: 1,
        ..
    }] = got.as_slice()
    else {
        panic!("expected the first fetch's failure, got {got:?}");
    };
    assert_eq!(*failed_at, at(START_MS + 5_000));
    let cause = error
        .cause()
        .and_then(|c| c.downcast_ref::<RequestTimedOut>());
    assert_eq!(cause.map(|c| c.after), Some(secs(5)));
}

#[test]
fn a_rejected_token_is_withdrawn_then_replaced() {
    let bench = Bench::new(secs(100));
    bench.advance(secs(10));
    let mut events = bench.handle.events();
    let first = bench.handle.current().unwrap();
    let handle = bench.handle.clone();
    let task = bench.spawn(async move { handle.refresh_rejected(&first).await });
    let second = finished(task).unwrap();
    assert_eq!(second.access_token().secret(), "token-2");

    let got = new_events(&mut events);
    let [ManagerEvent::Withdrawn {
        at: withdrawn_at, ..
    }, ManagerEvent::Published {
        at: published_at,
        expires_at,
        ..
    }] = got.as_slice()
    else {
        panic!("expected a withdrawal and a publish, got {got:?}");
    };
    assert_eq!(*withdrawn_at, at(START_MS + 10_000));
    assert_eq!(*published_at, at(START_MS + 10_000));
    assert_eq!(*expires_at, at(second.expiry_ms()));
}

#[test]
fn events_come_in_the_order_the_manager_acted_end_with_stopped_and_hold_no_token() {
    let bench = Bench::new(secs(100));
    let mut events = bench.handle.events();
    bench
        .source
        .set_mode(Mode::Fail(SourceError::transient("down")));
    bench.advance_to(bench.handle.current().unwrap().stale_ms());
    bench.advance_to(bench.handle.state().next_refresh_ms().unwrap());
    bench.source.set_mode(Mode::Succeed(Some(secs(100))));
    bench.advance_to(bench.handle.state().next_refresh_ms().unwrap());
    let token = bench.handle.current().unwrap();
    let handle = bench.handle.clone();
    finished(bench.spawn(async move { handle.refresh_rejected(&token).await })).unwrap();
    let handle = bench.handle.clone();
    finished(bench.spawn(async move { handle.shutdown().await }));

    let (got, ended) = ready(&mut events);
    let kinds: Vec<_> = got.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "failed",
            "failed",
            "published",
            "withdrawn",
            "published",
            "stopped"
        ]
    );
    assert!(ended, "the stream goes on after Stopped");
    // No event holds a token: every one may be logged as it is.
    for event in &got {
        let debug = format!("{event:?}");
        assert!(!debug.contains("token-"), "{debug}");
    }
}

#[test]
fn the_stream_ends_after_stopped_however_the_manager_stops() {
    // Shut down: the manager is stopped when Stopped arrives.
    let bench = Bench::new(secs(100));
    let mut events = bench.handle.events();
    let handle = bench.handle.clone();
    let task = bench.spawn(async move {
        let event = events.next().await;
        (event, handle.is_stopped(), events.next().await)
    });
    let handle = bench.handle.clone();
    finished(bench.spawn(async move { handle.shutdown().await }));
    let (event, stopped, after) = finished(task);
    assert!(matches!(event, Some(ManagerEvent::Stopped)), "{event:?}");
    assert!(stopped);
    assert!(after.is_none());
    // A stream made afterwards hears that it stopped, and ends.
    let (got, ended) = ready(&mut bench.handle.events());
    assert_eq!(got.iter().map(kind).collect::<Vec<_>>(), ["stopped"]);
    assert!(ended);

    // Every handle dropped: an event stream does not keep the manager alive.
    let Bench { ex, handle, .. } = Bench::new(secs(100));
    let mut events = handle.events();
    drop(handle);
    while ex.try_tick() {}
    let (got, ended) = ready(&mut events);
    assert_eq!(got.iter().map(kind).collect::<Vec<_>>(), ["stopped"]);
    assert!(ended);

    // The driver dropped before it ever ran.
    let source = FixedSource::new(AccessToken::new("t"), secs(100));
    let (handle, driver) = TokenManager::builder(source).build();
    let mut events = handle.events();
    assert!(new_events(&mut events).is_empty());
    drop(driver);
    let (got, ended) = ready(&mut events);
    assert_eq!(got.iter().map(kind).collect::<Vec<_>>(), ["stopped"]);
    assert!(ended);
}

#[test]
fn a_slow_subscriber_loses_the_oldest_events_and_is_told_how_many() {
    let bench = Bench::with(secs(100), |b| {
        b.backoff(Backoff::new(ms(100), 2.0, secs(1)).seed(7))
    });
    let mut slow = bench.handle.events();
    let mut fast = bench.handle.events();
    bench
        .source
        .set_mode(Mode::Fail(SourceError::transient("down")));
    bench.advance_to(bench.handle.current().unwrap().stale_ms());
    let mut seen = new_events(&mut fast);
    // About one failure a second once the backoff reaches its 1 s cap.
    for _ in 0..110 {
        bench.advance(secs(1));
        seen.extend(new_events(&mut fast));
    }
    assert!(seen.len() >= 100, "{} failures in 110 s", seen.len());
    let counts = |events: &[ManagerEvent]| -> Vec<u32> {
        events
            .iter()
            .map(|e| match e {
                ManagerEvent::FetchFailed {
                    consecutive_failures,
                    ..
                } => *consecutive_failures,
                other => panic!("expected failures only, got {other:?}"),
            })
            .collect()
    };
    // The fast one saw every failure, one by one.
    let all = counts(&seen);
    assert_eq!(all, (1..=all.len() as u32).collect::<Vec<_>>());

    // The slow one finds the latest 64 only, after word of the rest.
    let got = new_events(&mut slow);
    let Some((ManagerEvent::Lagged { missed }, kept)) = got.split_first() else {
        panic!("expected Lagged first, got {:?}", got.first());
    };
    assert_eq!(*missed, seen.len() as u64 - 64);
    assert_eq!(counts(kept), all[all.len() - 64..]);

    // Caught up, it goes on as usual.
    bench.advance(secs(1));
    assert_eq!(
        counts(&new_events(&mut slow)),
        [all.len() as u32 + 1],
        "the next failure, with no Lagged before it"
    );
}

#[test]
fn subscriptions_and_event_streams_read_with_or_without_stream_ext() {
    fn unpin<F: Unpin>(future: F) -> F {
        future
    }

    let bench = Bench::new(secs(100));
    let mut tokens = bench.handle.subscribe();
    let mut events = bench.handle.events();
    // The inherent methods, with no trait in scope; their futures are Unpin.
    let token = block_on(poll_once(unpin(tokens.next())));
    assert_eq!(token.flatten().unwrap().access_token().secret(), "token-1");
    assert!(block_on(poll_once(unpin(events.next()))).is_none());

    bench.advance_to(bench.handle.current().unwrap().stale_ms());
    {
        // With futures-lite's StreamExt in scope, `next` is still the
        // inherent method, and the trait's methods work too.
        use futures_lite::StreamExt;
        let token = block_on(poll_once(tokens.next())).flatten().unwrap();
        assert_eq!(token.access_token().secret(), "token-2");
        let event = block_on(poll_once(StreamExt::next(&mut events))).flatten();
        assert!(matches!(event, Some(ManagerEvent::Published { .. })));

        bench.advance_to(bench.handle.current().unwrap().stale_ms());
        let mut values = (&mut tokens).map(|t| t.access_token().secret().to_owned());
        let value = block_on(poll_once(StreamExt::next(&mut values))).flatten();
        assert_eq!(value.as_deref(), Some("token-3"));
    }

    let handle = bench.handle.clone();
    finished(bench.spawn(async move { handle.shutdown().await }));
    assert!(block_on(tokens.next()).is_none());
    assert!(matches!(
        block_on(events.next()),
        Some(ManagerEvent::Published { .. })
    ));
    assert!(matches!(
        block_on(events.next()),
        Some(ManagerEvent::Stopped)
    ));
    assert!(block_on(events.next()).is_none());
}

#[test]
fn watch_calls_the_function_on_each_token_one_call_at_a_time_until_the_manager_stops() {
    let bench = Bench::new(secs(100));
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (release, released) = async_channel::unbounded::<()>();
    let log = Rc::clone(&seen);
    let watch = bench.handle.watch(move |token| {
        let log = Rc::clone(&log);
        let released = released.clone();
        async move {
            let value = token.access_token().secret().to_owned();
            log.borrow_mut().push(format!("{value} start"));
            // Each call waits until the test lets it go.
            released.recv().await.unwrap();
            log.borrow_mut().push(format!("{value} end"));
        }
    });
    let task = bench.spawn(watch);
    assert_eq!(*seen.borrow(), ["token-1 start"]);

    // Two refreshes while the first call waits: no call starts meanwhile,
    // and the next one gets the newest token.
    bench.advance_to(bench.handle.current().unwrap().stale_ms());
    bench.advance_to(bench.handle.current().unwrap().stale_ms());
    assert_eq!(
        bench.handle.current().unwrap().access_token().secret(),
        "token-3"
    );
    assert_eq!(*seen.borrow(), ["token-1 start"]);
    release.try_send(()).unwrap();
    bench.settle();
    assert_eq!(
        *seen.borrow(),
        ["token-1 start", "token-1 end", "token-3 start"]
    );
    release.try_send(()).unwrap();
    bench.settle();
    assert!(!task.is_finished());

    // The watch does not keep the manager alive, and ends with it.
    let Bench { ex, handle, .. } = bench;
    drop(handle);
    while ex.try_tick() {}
    finished(task);
    assert_eq!(seen.borrow().len(), 4);
}

#[test]
fn streams_and_the_watch_future_go_to_any_executor() {
    // Checked when this file compiles: all of them are Send and 'static,
    // for a multi-threaded executor's spawn.
    fn spawnable<T: Send + 'static>(value: T) -> T {
        value
    }

    let bench = Bench::new(secs(100));
    let mut events = spawnable(bench.handle.events());
    let mut tokens = spawnable(bench.handle.subscribe());
    drop(spawnable(
        bench.handle.watch(|token| async move { drop(token) }),
    ));
    // The `next` futures borrow their stream, and are Send too.
    fn send<T: Send>(value: T) -> T {
        value
    }
    assert!(block_on(poll_once(send(events.next()))).is_none());
    assert!(block_on(poll_once(send(tokens.next()))).is_some());
}
