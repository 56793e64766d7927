//! A virtual-time test bench: a manual clock, a scripted source, and a
//! single-threaded executor that runs until every task waits. Helpers for
//! tests that run child processes are in `process` (the examples' runs
//! in `example_run`), and for those that run
//! the token example in `token_example`; a logger that captures every
//! record is in `logs`; a checker of DPoP proofs is in `dpop`; checks
//! that every `HttpClient` passes are in `http_checks`; the harness of the
//! test files whose tests need a program that may be missing is `harness`.

#![allow(dead_code)]

#[cfg(feature = "jwt")]
pub mod dpop;
pub mod example_run;
pub mod harness;
pub mod http_checks;
pub mod logs;
pub mod process;
pub mod token_example;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol::{LocalExecutor, Task};
use tokenkeeper::{
    AccessToken, Backoff, Clock, FetchContext, FetchReason, ManualClock, NoJitter, SourceError,
    Token, TokenHandle, TokenManager, TokenManagerBuilder, TokenSource,
};

pub const START_MS: u64 = 1_700_000_000_000;

/// The most reads of an expired token one thread may serve when the actor
/// missed the token's whole stale window: the bound `TokenHandle::current`
/// documents (each thread looks at the clock at least every 15th read).
pub const UNCHECKED_READS: u32 = 15;

/// What the scripted source does on its next fetches.
#[derive(Clone)]
pub enum Mode {
    /// Succeed with tokens of this lifetime (`None`: no `expires_in`).
    Succeed(Option<Duration>),
    /// Fail with this error.
    Fail(SourceError),
    /// Never complete.
    Hang,
}

struct Script {
    mode: Mode,
    calls: u64,
    reasons: Vec<FetchReason>,
    latency: Duration,
}

/// A source whose behaviour the test changes while it runs.
#[derive(Clone)]
pub struct ScriptedSource {
    script: Arc<Mutex<Script>>,
}

impl ScriptedSource {
    pub fn new(lifetime: Duration) -> ScriptedSource {
        ScriptedSource {
            script: Arc::new(Mutex::new(Script {
                mode: Mode::Succeed(Some(lifetime)),
                calls: 0,
                reasons: Vec::new(),
                latency: Duration::ZERO,
            })),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.script.lock().unwrap().mode = mode;
    }

    /// Every fetch takes this long in virtual time.
    pub fn set_latency(&self, latency: Duration) {
        self.script.lock().unwrap().latency = latency;
    }

    pub fn calls(&self) -> u64 {
        self.script.lock().unwrap().calls
    }

    pub fn reasons(&self) -> Vec<FetchReason> {
        self.script.lock().unwrap().reasons.clone()
    }
}

impl TokenSource for ScriptedSource {
    fn fetch(
        &mut self,
        cx: FetchContext,
    ) -> tokenkeeper::BoxFuture<'_, Result<Token, SourceError>> {
        let (mode, n, latency) = {
            let mut s = self.script.lock().unwrap();
            s.calls += 1;
            s.reasons.push(cx.reason());
            (s.mode.clone(), s.calls, s.latency)
        };
        Box::pin(async move {
            if !latency.is_zero() {
                let clock = cx.clock().clone();
                clock.sleep_until(clock.now() + latency).await;
            }
            match mode {
                Mode::Succeed(lifetime) => {
                    Ok(cx.token(AccessToken::new(format!("token-{n}")), lifetime))
                }
                Mode::Fail(e) => Err(e),
                Mode::Hang => std::future::pending().await,
            }
        })
    }
}

pub struct Bench {
    pub ex: LocalExecutor<'static>,
    pub clock: ManualClock,
    pub source: ScriptedSource,
    pub handle: TokenHandle,
}

impl Bench {
    /// A manager on virtual time with no jitter and tokens of `lifetime`.
    pub fn new(lifetime: Duration) -> Bench {
        Bench::with(lifetime, |b| b)
    }

    /// Like `new`, with extra builder settings.
    pub fn with(
        lifetime: Duration,
        configure: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
    ) -> Bench {
        Bench::with_source(ScriptedSource::new(lifetime), configure, |s| s)
    }

    /// A manager on `wrap(source)`, with extra builder settings.
    pub fn with_source<S: TokenSource>(
        source: ScriptedSource,
        configure: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
        wrap: impl FnOnce(ScriptedSource) -> S,
    ) -> Bench {
        let clock = ManualClock::at_ms(START_MS);
        let builder = TokenManager::builder(wrap(source.clone()))
            .clock(clock.clone())
            .jitter(NoJitter)
            // Seeded, so no test depends on the luck of a draw (full jitter
            // can draw 0 ms, an immediate retry).
            .backoff(Backoff::default().seed(7));
        let (handle, driver) = configure(builder).build();
        let ex = LocalExecutor::new();
        ex.spawn(driver).detach();
        let bench = Bench {
            ex,
            clock,
            source,
            handle,
        };
        bench.settle();
        bench
    }

    /// Runs every task until all of them wait.
    pub fn settle(&self) {
        while self.ex.try_tick() {}
    }

    pub fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Task<T> {
        let task = self.ex.spawn(future);
        self.settle();
        task
    }

    /// Moves virtual time forward and lets everything react.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.settle();
    }

    /// Moves time forward in steps of `step`, reacting after each.
    pub fn advance_in_steps(&self, total: Duration, step: Duration) {
        let mut done = Duration::ZERO;
        while done < total {
            let by = step.min(total - done);
            self.advance(by);
            done += by;
        }
    }

    /// Advances until the wall clock reads `at_ms`.
    pub fn advance_to(&self, at_ms: u64) {
        let now = self.clock.now_ms();
        if at_ms > now {
            self.advance(Duration::from_millis(at_ms - now));
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn current_value(&self) -> Option<String> {
        self.handle
            .current()
            .map(|t| t.access_token().secret().to_owned())
    }
}

/// The result of a finished task; panics if it has not finished.
pub fn finished<T>(task: Task<T>) -> T {
    assert!(task.is_finished(), "task has not finished");
    futures_lite::future::block_on(task)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
