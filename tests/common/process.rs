//! Child processes for the tests that run real ones: the example binaries
//! (built by cargo with the test's own profile, features and target
//! directory), children whose output is collected on threads and that are
//! killed when they outlive a limit, a temporary folder removed on drop, and
//! `redis-server` on a free loopback port (see `harness` for the tests that
//! need it when it is not installed).

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// The example binaries

/// The features the examples are built with: this test's own, among those
/// the examples know.
pub fn test_features() -> Vec<&'static str> {
    [
        (cfg!(feature = "ureq"), "ureq"),
        (cfg!(feature = "surf"), "surf"),
        (cfg!(feature = "smol"), "smol"),
        (cfg!(feature = "async-std"), "async-std"),
        (cfg!(feature = "redis"), "redis"),
        (cfg!(feature = "jwt"), "jwt"),
    ]
    .into_iter()
    .filter_map(|(enabled, name)| enabled.then_some(name))
    .collect()
}

/// A command running the cargo that built this test, without the variables
/// cargo set for this test process (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`,
/// ...): build scripts such as ring's and curl-sys's rerun when one of
/// those changes, so a cargo run here with them would rebuild those crates,
/// and the next plain `cargo` run in the same target directory would again.
pub fn cargo() -> Command {
    let mut cargo = Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_for_tests = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_for_tests {
            cargo.env_remove(name);
        }
    }
    cargo
}

/// Builds the examples `names` with `features`, and returns
/// `<target>/<profile>/examples`, where they land.
///
/// `cargo test --test NAME` does not build examples, and a binary left from
/// an earlier build may be stale, so this always asks cargo to build them (a
/// no-op when they are up to date), with this test's profile and target
/// directory. `current_exe()` is `<target>/<profile>/deps/<test>-<hash>`.
pub fn build_examples(names: &[&str], features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps/<test>-<hash>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let mut cargo = cargo();
    cargo.args(["build", "--quiet"]);
    for name in names {
        cargo.args(["--example", name]);
    }
    cargo
        .args(["--profile", profile])
        .args(["--no-default-features", "--features", &features.join(",")])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    // The same target directory as this test, wherever it is.
    if let Some(target_dir) = profile_dir.parent() {
        cargo.env("CARGO_TARGET_DIR", target_dir);
    }
    let what = format!("cargo build --example {}", names.join(" --example "));
    let output = cargo
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e:?}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join("examples")
}

/// Builds the `tokenkeeper` binary of crates/cli with its `features`
/// (`jwt`, `redis`), with this test's profile and target directory, and
/// returns its path, `<target>/<profile>/tokenkeeper`.
pub fn build_cli(features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps/<test>-<hash>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let mut cargo = cargo();
    cargo
        .args([
            "build",
            "--quiet",
            "-p",
            "tokenkeeper-cli",
            "--bin",
            "tokenkeeper",
        ])
        .args(["--profile", profile])
        .args(["--no-default-features", "--features", &features.join(",")])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if let Some(target_dir) = profile_dir.parent() {
        cargo.env("CARGO_TARGET_DIR", target_dir);
    }
    let output = cargo
        .output()
        .unwrap_or_else(|e| panic!("run cargo build -p tokenkeeper-cli: {e:?}"));
    assert!(
        output.status.success(),
        "cargo build -p tokenkeeper-cli failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bin = profile_dir.join(format!("tokenkeeper{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "no binary at {}", bin.display());
    bin
}

/// Example `name` in `examples` (as `build_examples` returns it), which must
/// exist.
pub fn example_bin(examples: &Path, name: &str) -> PathBuf {
    let bin = examples.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}

// ---------------------------------------------------------------------------
// Children

/// Reads `pipe` to its end on a thread of its own, so a full pipe never
/// blocks the child.
pub fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).expect("read output");
        text
    })
}

/// Waits for `child` to exit; past `limit` after `start`, kills and reaps it
/// and fails, saying that `what` ran longer than `limit`.
pub fn wait(child: &mut Child, start: Instant, limit: Duration, what: &str) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran longer than {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A running child whose stdout and stderr are being collected. Killed
/// (SIGKILL) and reaped when dropped while still running, so a failing test
/// leaves no process behind.
pub struct Running {
    child: Child,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// A child that exited, with everything it wrote.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From the spawn until its output was read to the end.
    pub took: Duration,
}

impl Running {
    /// Spawns `cmd`, whose stdout and stderr must be piped; `what` names it
    /// if that fails.
    pub fn spawn(mut cmd: Command, what: &str) -> Running {
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e:?}"));
        let stdout = read_all(child.stdout.take().expect("piped stdout"));
        let stderr = read_all(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            started,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit, killing the child (and failing, naming it
    /// `what`) once it has run for longer than `limit`.
    pub fn finish(mut self, limit: Duration, what: &str) -> Finished {
        let status = wait(&mut self.child, self.started, limit, what);
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        Finished {
            status,
            stdout,
            stderr,
            took: self.started.elapsed(),
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` (stdout and stderr piped) to completion, killing it and
/// failing after `limit`; `what` names it in failures.
pub fn run(cmd: Command, what: &str, limit: Duration) -> Finished {
    Running::spawn(cmd, what).finish(limit, what)
}

// ---------------------------------------------------------------------------
// Output

/// Whether `text` holds something shaped like the local authority's tokens:
/// `prefix`, digits, `-`, 16 hex digits (`at-<n>-<hex>` for access tokens,
/// `rt-<n>-<hex>` for refresh tokens).
pub fn has_authority_token(text: &str, prefix: &str) -> bool {
    text.match_indices(prefix).any(|(i, _)| {
        let rest = &text[i + prefix.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0
            && rest[digits..].starts_with('-')
            && rest[digits + 1..]
                .bytes()
                .take(16)
                .filter(u8::is_ascii_hexdigit)
                .count()
                == 16
    })
}

/// Asserts that `text` holds nothing shaped like the authority's access
/// tokens (`at-<n>-<16 hex digits>`).
pub fn assert_no_access_token(text: &str) {
    assert!(
        !has_authority_token(text, "at-"),
        "an access token was printed: {text}"
    );
}

// ---------------------------------------------------------------------------
// Files

/// A fresh folder, removed on drop: `tokenkeeper-<name>-<pid>-<nanoseconds>`
/// under `/dev/shm` (memory) where there is one, else under the system's
/// temporary folder.
///
/// Why memory: these tests compress hours of token lifetime into seconds
/// (4 s tokens, refreshed 2 s before expiry), while a cache write waits for
/// the disk to sync. On a busy machine an fsync can take seconds, long
/// enough for a fresh token to expire before its fetch returned it, and the
/// manager then rightly reports an error event. On a memory file system the
/// same code runs, the sync returns at once, and the tests look at what
/// they are about: the processes, the lease and the file.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let folder = format!("tokenkeeper-{name}-{}-{nanos}", std::process::id());
        let shm = Path::new("/dev/shm");
        let in_memory = shm.join(&folder);
        if shm.is_dir() && std::fs::create_dir(&in_memory).is_ok() {
            return TempDir(in_memory);
        }
        let path = std::env::temp_dir().join(folder);
        std::fs::create_dir_all(&path).expect("create a temporary folder");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Redis

/// Why `redis-server` cannot run here, if it cannot.
pub fn redis_server_missing() -> Option<String> {
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("`redis-server --version` failed ({status})")),
        Err(e) if e.kind() == ErrorKind::NotFound => Some("not on the PATH".into()),
        Err(e) => Some(format!("cannot run redis-server: {e}")),
    }
}

/// A `redis-server` child process on a free port of 127.0.0.1, killed on
/// drop.
#[cfg(feature = "redis")]
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Arguments after the usual ones (`--replicaof`, cluster mode).
    extra: Vec<String>,
}

#[cfg(feature = "redis")]
impl RedisServer {
    /// A server that answers; a failure when `redis-server` cannot run.
    pub fn spawn() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        RedisServer::spawn_on(port, &[])
    }

    /// A server on `port` with `extra` arguments (which it keeps across
    /// restarts); it must answer `PING` (a cluster node does before its
    /// cluster is formed).
    pub fn spawn_on(port: u16, extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// Starts the server (again) on its port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.connect().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} does not answer",
                self.port
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (like a crash) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGSTOP, as a hung process would be: its
    /// connections stay open and nothing is answered until [`resume`].
    ///
    /// [`resume`]: RedisServer::resume
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A connection that answered `PING`.
    pub fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let mut connection = redis::Client::open(self.url())?
            .get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query::<String>(&mut connection)?;
        Ok(connection)
    }
}

/// A free loopback port whose neighbour 10,000 above is free too (a
/// cluster node's bus port).
pub fn free_port_pair() -> u16 {
    loop {
        let port = fastrand::u16(15_000..25_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

#[cfg(feature = "redis")]
impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Checks a `{"event":"token"}` line of the token example: the fields
/// promised and no others, `issued <= stale <= expiry`, a Bearer token.
/// `who` names the process in failure messages.
pub fn check_token_event(who: &str, event: &serde_json::Value) {
    let object = event.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "event",
            "expires_at_ms",
            "issued_at_ms",
            "scope",
            "stale_at_ms",
            "token_type"
        ],
        "{who}: {event}"
    );
    let issued = event["issued_at_ms"].as_u64().unwrap();
    let stale = event["stale_at_ms"].as_u64().unwrap();
    let expires = event["expires_at_ms"].as_u64().unwrap();
    assert!(issued <= stale && stale <= expires, "{who}: {event}");
    assert_eq!(event["token_type"], "Bearer", "{who}: {event}");
}
