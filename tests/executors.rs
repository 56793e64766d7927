//! The same end-to-end scenario on three executors: async-std, smol, and a
//! plain `futures_lite::future::block_on` with nothing spawned at all.
//!
//! The point here is the executor, not timing, so this runs on the system
//! clock with short real lifetimes and asserts only events (never how long
//! something took). Every run is bounded by an overall timeout, so a lost
//! wake-up fails the test instead of hanging it.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_lite::future;
use tokenkeeper::{
    source, AccessToken, Backoff, Driver, Error, FetchContext, RandomEarlyJitter, SourceError,
    TokenHandle, TokenManager,
};

/// Real token lifetime: stale after half of it, so a refresh every ~250 ms.
const LIFETIME: Duration = Duration::from_millis(500);
/// Upper bound for a whole scenario; only a bug gets near it.
const OVERALL: Duration = Duration::from_secs(20);
const WORKERS: usize = 3;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a scenario starts concurrent tasks; the returned future completes
/// with the task's output.
trait Exec {
    fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<T>;
}

struct AsyncStd;
struct Smol;
/// Spawns nothing: the "task" is the future itself, polled by whoever
/// awaits it (here always concurrently, through `join_all`/`zip`).
struct Inline;

impl Exec for AsyncStd {
    fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<T> {
        Box::pin(async_std::task::spawn(task))
    }
}

impl Exec for Smol {
    fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<T> {
        Box::pin(smol::spawn(task))
    }
}

impl Exec for Inline {
    fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> BoxFuture<T> {
        Box::pin(task)
    }
}

/// Polls all futures concurrently and returns their outputs in order.
async fn join_all<T>(futures: Vec<BoxFuture<T>>) -> Vec<T> {
    let mut pending: Vec<Option<BoxFuture<T>>> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    future::poll_fn(|cx| {
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(fut) = slot {
                if let Poll::Ready(value) = fut.as_mut().poll(cx) {
                    *out = Some(value);
                    *slot = None;
                }
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter()
        .map(|v| v.expect("every future finished"))
        .collect()
}

/// Runs `fut`, failing the test if it takes longer than `OVERALL`.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    future::or(fut, async {
        async_io::Timer::after(OVERALL).await;
        panic!("{what}: not finished within {OVERALL:?}; a wake-up was probably lost");
    })
    .await
}

/// A manager over a source that hands out distinct short-lived tokens
/// (`tok-1`, `tok-2`, ...), and the number of times the source was called.
fn manager() -> (TokenHandle, Driver, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    let source = source::from_fn(move |cx: FetchContext| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok::<_, SourceError>(cx.token(AccessToken::new(format!("tok-{n}")), Some(LIFETIME)))
        }
    });
    let (handle, driver) = TokenManager::builder(source)
        .jitter(RandomEarlyJitter::new(Duration::from_millis(20)))
        .backoff(Backoff::new(
            Duration::from_millis(10),
            2.0,
            Duration::from_millis(100),
        ))
        .request_timeout(Duration::from_secs(5))
        .wait_timeout(Duration::from_secs(10))
        .forced_refresh_interval(Duration::ZERO)
        .build();
    (handle, driver, calls)
}

/// What one worker did.
#[derive(Debug, Default)]
struct WorkerReport {
    reads: u64,
    distinct: BTreeSet<String>,
    /// `token()` failures other than `Stopped`.
    errors: Vec<String>,
}

/// Uses the token every few milliseconds until told to stop, alternating the
/// hot path and the waiting path.
async fn worker(handle: TokenHandle, stop: Arc<AtomicBool>) -> WorkerReport {
    let mut report = WorkerReport::default();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let token = if i.is_multiple_of(2) {
            handle.current().map(Ok)
        } else {
            Some(handle.token().await)
        };
        match token {
            Some(Ok(token)) => {
                report.reads += 1;
                report
                    .distinct
                    .insert(token.access_token().secret().to_owned());
            }
            Some(Err(Error::Stopped)) => break,
            Some(Err(e)) => report.errors.push(e.to_string()),
            // The hot path found no valid token (between expiry and the next
            // publish); not an error, and not expected with a healthy source.
            None => {}
        }
        i += 1;
        async_io::Timer::after(Duration::from_millis(5)).await;
    }
    report
}

/// The end-to-end scenario. The driver must already be running (spawned, or
/// polled alongside by the caller); `exec` starts the workers.
async fn scenario(handle: TokenHandle, calls: Arc<AtomicU64>, exec: impl Exec) {
    let started = std::time::Instant::now();
    let mut refreshes = handle.subscribe();

    // Cold start: several tasks ask at once; all get a token.
    let cold: Vec<_> = (0..WORKERS)
        .map(|_| {
            let h = handle.clone();
            exec.spawn(async move { h.token().await })
        })
        .collect();
    for token in join_all(cold).await {
        let token = token.expect("the first token arrives via token()");
        assert!(token.access_token().secret().starts_with("tok-"));
    }
    assert!(handle.state().source_requests >= 1);

    // Workers use the token in the background while the subscriber watches
    // refreshes and one token gets rejected.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| exec.spawn(worker(handle.clone(), Arc::clone(&stop))))
        .collect();
    let main = async {
        // The subscriber sees the token it started with and at least two
        // refreshed ones.
        let mut seen = BTreeSet::new();
        while seen.len() < 3 {
            let token = refreshes
                .next()
                .await
                .expect("the stream goes on while the manager runs");
            seen.insert(token.access_token().secret().to_owned());
        }

        // Compare-and-invalidate: rejecting the current token yields another.
        let current = handle.token().await.expect("a token");
        let replacement = handle
            .refresh_rejected(&current)
            .await
            .expect("a replacement token");
        assert_ne!(
            replacement.access_token().secret(),
            current.access_token().secret(),
            "refresh_rejected returned the rejected token"
        );

        // Let the workers read a little longer, then stop them.
        let before = handle.state().refreshes;
        while handle.state().refreshes < before + 1 {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::SeqCst);
        seen
    };
    let (seen, reports) = future::zip(main, join_all(workers)).await;

    let reads: u64 = reports.iter().map(|r| r.reads).sum();
    assert!(reads > 0, "the workers read tokens: {reports:?}");
    for report in &reports {
        assert!(report.errors.is_empty(), "worker errors: {reports:?}");
        assert!(report.reads > 0, "every worker read a token: {reports:?}");
    }

    assert!(handle.state().running);
    // Every token anyone saw is one the source handed out.
    let called = calls.load(Ordering::SeqCst);
    let handed_out: BTreeSet<String> = (1..=called).map(|n| format!("tok-{n}")).collect();
    for token in reports.iter().flat_map(|r| &r.distinct).chain(&seen) {
        assert!(handed_out.contains(token), "{token} was never fetched");
    }

    // Shutdown: token() fails with Stopped, the subscription ends.
    handle.shutdown().await;
    let elapsed = started.elapsed().as_millis() as u64;
    assert!(handle.is_stopped());
    assert!(!handle.state().running);
    match handle.token().await {
        Err(Error::Stopped) => {}
        other => panic!("token() after shutdown returned {other:?}, expected Err(Stopped)"),
    }
    let mut left = 0;
    while refreshes.next().await.is_some() {
        left += 1;
        assert!(left <= 1, "after shutdown at most the last token is left");
    }
    let after = handle.state().source_requests;
    async_io::Timer::after(LIFETIME).await;
    assert_eq!(
        handle.state().source_requests,
        after,
        "no fetch after shutdown"
    );

    // The counts, exactly, now that the driver has stopped. The source
    // answers at once and never fails, so every fetch the manager started
    // reached the source once and was published: a fetch lost between
    // polls, or its result dropped, breaks one of these.
    let state = handle.state();
    let called = calls.load(Ordering::SeqCst);
    assert_eq!(state.source_requests, called, "{state:?}");
    assert_eq!(state.refreshes, called, "every fetch published: {state:?}");
    assert_eq!(state.failures, 0, "{state:?}");
    assert_eq!(state.rejections, 1, "{state:?}");
    assert!(
        state.refreshes >= 4,
        "at least the first token, two refreshes and one replacement: {state:?}"
    );
    // And no more fetches until shutdown than the schedule allows:
    // scheduled refreshes come at least 230 ms after the fetch before
    // (stale at 250 ms, jitter up to 20 ms); add the first fetch, the
    // forced one, and one in case a spawned driver fetched before `started`.
    assert!(
        called <= 3 + elapsed / 230,
        "{called} fetches in {elapsed} ms: {state:?}"
    );
}

#[test]
fn end_to_end_on_async_std() {
    let (handle, driver, calls) = manager();
    async_std::task::block_on(bounded("async-std", async move {
        let driver = async_std::task::spawn(driver);
        scenario(handle, calls, AsyncStd).await;
        driver.await;
    }));
}

#[test]
fn end_to_end_on_smol() {
    let (handle, driver, calls) = manager();
    smol::block_on(bounded("smol", async move {
        let driver = smol::spawn(driver);
        scenario(handle, calls, Smol).await;
        driver.await;
    }));
}

#[test]
fn end_to_end_on_plain_block_on() {
    let (handle, driver, calls) = manager();
    // Nothing is spawned: the driver and the scenario are polled together.
    // `zip`, not `or`: the driver finishes at shutdown, and the scenario
    // must go on to check what happens after it.
    future::block_on(bounded(
        "futures_lite::future::block_on",
        future::zip(driver, scenario(handle, calls, Inline)),
    ));
}
