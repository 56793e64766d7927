//! Side-by-side benchmarks of tokenkeeper and its closest peer,
//! [`aliri_tokens`] 0.3.2, measured in one run (see `BENCHMARKS.md` at the
//! root of the repository). This package exists so that tokio, which
//! aliri_tokens needs, never enters tokenkeeper's own dependency tree.
//!
//! ```sh
//! cargo bench -p tokenkeeper-compare
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench -p tokenkeeper-compare
//! ```

use std::time::Duration;

use aliri_clock::DurationSecs;
use aliri_tokens::backoff::ErrorBackoffConfig;
use aliri_tokens::jitter::NullJitter;
use aliri_tokens::sources::ConstTokenSource;
use aliri_tokens::TokenWatcher;
use tokenkeeper::{AccessToken, FixedSource, NoJitter, TokenHandle, TokenManager};

/// How long the benchmark tokens live: long enough that neither library
/// refreshes during a run.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A tokenkeeper manager on the system clock holding a fresh `token`, its
/// driver running on a thread of its own.
pub fn tokenkeeper_manager(token: &str) -> TokenHandle {
    let source = FixedSource::new(AccessToken::new(token), LIFETIME);
    let (handle, driver) = TokenManager::builder(source).jitter(NoJitter).build();
    std::thread::Builder::new()
        .name("tokenkeeper-driver".into())
        .spawn(move || futures_lite::future::block_on(driver))
        .expect("spawn the driver thread");
    futures_lite::future::block_on(handle.token()).expect("first token");
    handle
}

/// An aliri_tokens watcher over a constant source holding a fresh `token`,
/// its refresh task spawned on `runtime`, which must outlive it.
pub fn aliri_watcher(runtime: &tokio::runtime::Runtime, token: &str) -> TokenWatcher {
    let source = ConstTokenSource::new(token.to_owned())
        .with_token_valid_for(DurationSecs(LIFETIME.as_secs()));
    runtime
        .block_on(TokenWatcher::spawn_from_token_source(
            source,
            NullJitter,
            ErrorBackoffConfig::default(),
        ))
        .expect("a constant source cannot fail")
}

/// A tokio runtime with one worker thread, for aliri's refresh task.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("a tokio runtime")
}
