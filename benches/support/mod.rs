//! Shared by the benchmark binaries (tokenkeeper's own and those of
//! `benches/compare`): the quick-mode switch, the criterion settings, a
//! harness that times the same loop on several threads at once, and small
//! statistics helpers. Included with `#[path]`; not a bench target itself.

#![allow(dead_code)]

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::Criterion;

/// Whether `TOKENKEEPER_BENCH_QUICK` is set (to anything but `0` or empty):
/// shorter criterion runs and fewer scenario iterations, so that every
/// benchmark of the workspace finishes in under two minutes.
pub fn quick() -> bool {
    std::env::var("TOKENKEEPER_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Criterion's settings: its defaults (3 s warm-up, 5 s of measurement, 100
/// samples), or in quick mode 0.2 s, 0.5 s and 20 samples (a few-nanosecond
/// read still runs some 100 million times).
pub fn criterion() -> Criterion {
    let c = Criterion::default();
    let c = if quick() {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(20)
    } else {
        c
    };
    c.configure_from_args()
}

/// A fixed set of worker threads that run the same timed loop together.
///
/// [`run`](Self::run) hands every worker the same iteration count; the
/// workers meet at a barrier, each times its own loop, and the longest time
/// is returned, ready for criterion's `iter_custom`. Divided by the count
/// that is the cost of one read on each thread while all threads read, which
/// compares directly with the single-thread figure. The threads live as long
/// as the harness, so thread-local state survives between samples, as it
/// does in a server's worker threads.
pub struct Threads {
    workers: Vec<(mpsc::Sender<u64>, mpsc::Receiver<Duration>)>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Threads {
    /// Starts `n` threads; thread `i` runs `make(i)`'s loop, which must do
    /// the work `iters` times.
    pub fn new<F>(n: usize, make: impl Fn(usize) -> F) -> Threads
    where
        F: FnMut(u64) + Send + 'static,
    {
        let barrier = Arc::new(Barrier::new(n));
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let (go, jobs) = mpsc::channel::<u64>();
            let (report, times) = mpsc::channel::<Duration>();
            let mut work = make(i);
            let barrier = Arc::clone(&barrier);
            threads.push(
                thread::Builder::new()
                    .name(format!("bench-reader-{i}"))
                    .spawn(move || {
                        for iters in jobs {
                            barrier.wait();
                            let start = Instant::now();
                            work(iters);
                            let elapsed = start.elapsed();
                            if report.send(elapsed).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn a reader thread"),
            );
            workers.push((go, times));
        }
        Threads { workers, threads }
    }

    /// Runs `iters` iterations on every thread at once; the longest time.
    pub fn run(&self, iters: u64) -> Duration {
        for (go, _) in &self.workers {
            go.send(iters).expect("reader thread alive");
        }
        self.workers
            .iter()
            .map(|(_, times)| times.recv().expect("reader thread alive"))
            .max()
            .unwrap_or_default()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.workers.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// An 800-byte access token, the size of a typical signed JWT.
pub fn jwt_like() -> String {
    let mut s = String::from("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.");
    while s.len() < 800 {
        s.push_str("eyJzdWIiOiJiZW5jaCJ9");
    }
    s.truncate(800);
    s
}

/// Sorted copy and percentiles (nearest rank) of a sample.
pub struct Summary {
    sorted: Vec<f64>,
}

impl Summary {
    pub fn new(values: impl IntoIterator<Item = f64>) -> Summary {
        let mut sorted: Vec<f64> = values.into_iter().collect();
        sorted.sort_by(f64::total_cmp);
        Summary { sorted }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The value at percentile `p` (0–100), nearest rank.
    pub fn pct(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        self.pct(50.0)
    }

    pub fn min(&self) -> f64 {
        self.sorted.first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(f64::NAN)
    }

    /// `min / p50 / p90 / p99 / max` with a unit, for one line of output.
    pub fn line(&self, unit: &str) -> String {
        format!(
            "min {:.2} / p50 {:.2} / p90 {:.2} / p99 {:.2} / max {:.2} {unit} (n = {})",
            self.min(),
            self.median(),
            self.pct(90.0),
            self.pct(99.0),
            self.max(),
            self.len()
        )
    }
}

/// Prints one target check: `PASS`/`FAIL`, what, measured, target.
pub fn verdict(pass: bool, what: &str, measured: &str, target: &str) {
    let mark = if pass { "PASS" } else { "FAIL" };
    println!("[{mark}] {what}: {measured} (target {target})");
}

/// The machine, for the top of each report.
pub fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs, {model}")
}

/// The median time per iteration (ns) that criterion measured for
/// `group/bench` in this run, read back from its `estimates.json`; `None`
/// when that benchmark did not run since `since` (filtered out).
pub fn criterion_median_ns(group: &str, bench: &str, since: std::time::SystemTime) -> Option<f64> {
    let safe = |s: &str| s.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_");
    let path = criterion_home()?
        .join(safe(group))
        .join(safe(bench))
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Where criterion writes its results: `$CRITERION_HOME`,
/// `$CARGO_TARGET_DIR/criterion`, or `criterion` in the target directory
/// that holds this benchmark's executable (`target/release/deps/NAME`).
fn criterion_home() -> Option<std::path::PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(std::path::PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The control for reads that share nothing: an `Arc` that belongs to one
/// thread, cloned and dropped, its first byte read. The allocation is made
/// by the thread that reads (on first use), as tokenkeeper's per-thread
/// copies are, so two threads never write one cache line.
pub struct PrivateArc {
    token: String,
    arc: std::cell::OnceCell<Arc<String>>,
}

impl PrivateArc {
    pub fn new(token: &str) -> PrivateArc {
        PrivateArc {
            token: token.to_owned(),
            arc: std::cell::OnceCell::new(),
        }
    }

    pub fn read(&self) -> u8 {
        let arc = self.arc.get_or_init(|| Arc::new(self.token.clone()));
        Arc::clone(arc).as_bytes()[0]
    }
}

/// CPU time (ns) and context switches of every live thread of this
/// process, by thread id, from `/proc/self/task/*/{schedstat,status}`;
/// empty where that is missing.
#[derive(Clone, Debug, Default)]
pub struct ThreadTimes(std::collections::HashMap<String, (u64, u64)>);

impl ThreadTimes {
    pub fn now() -> ThreadTimes {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return ThreadTimes::default();
        };
        let read = |dir: &std::path::Path, file: &str| std::fs::read_to_string(dir.join(file)).ok();
        let times = tasks
            .filter_map(|task| {
                let task = task.ok()?;
                let dir = task.path();
                let cpu = read(&dir, "schedstat")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                let switches = read(&dir, "status")?
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                    .sum();
                Some((
                    task.file_name().to_string_lossy().into_owned(),
                    (cpu, switches),
                ))
            })
            .collect();
        ThreadTimes(times)
    }

    /// CPU ns and context switches since `earlier`, over the threads alive
    /// now (a thread that exited in between takes its share with it: a
    /// slight undercount, never a wrap-around).
    pub fn since(&self, earlier: &ThreadTimes) -> (u64, u64) {
        self.0
            .iter()
            .fold((0, 0), |(cpu, switches), (tid, (c, s))| {
                let (c0, s0) = earlier.0.get(tid).copied().unwrap_or((0, 0));
                (cpu + c.saturating_sub(c0), switches + s.saturating_sub(s0))
            })
    }
}

/// CPU time (ns) of this process's live threads spent since `earlier`.
pub fn cpu_ns_since(earlier: &ThreadTimes) -> u64 {
    ThreadTimes::now().since(earlier).0
}

/// Prints a control's times on 1 and 2 threads (work that shares nothing),
/// with a warning when 2 threads slowed it: then the machine did not give
/// each thread a core, and 2-thread figures of the run mean little.
pub fn report_control(name: &str, one: f64, two: f64) {
    println!(
        "{name}: 1 thread {one:.2} ns, 2 threads {two:.2} ns = {:.2}× (shares nothing: the machine's own 2-thread factor)",
        two / one
    );
    if two / one > 1.2 {
        println!(
            "WARNING: work that shares nothing ran {:.2}× slower on 2 threads: the machine \
             did not give both threads a core (other load?); the 2-thread figures of this \
             run are not meaningful",
            two / one
        );
    }
}
