//! The token file source: what it reads, what it refuses, how the manager
//! picks up a rewritten file, and that an unchanged file costs no loop.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use futures_lite::future::block_on;
use smol::LocalExecutor;
use tokenkeeper::source::{TokenFile, TokenFileError, TokenFileProblem, MAX_TOKEN_FILE_BYTES};
use tokenkeeper::{
    BoxFuture, ErrorKind, FetchContext, LifetimePolicy, ManualClock, NoJitter, SourceError, Token,
    TokenHandle, TokenManager, TokenSource,
};

/// A fresh directory of its own for each test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-token-file-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A JWT with these claims and a made-up signature (nothing checks it).
fn jwt(claims: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims);
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

fn cx(clock: &ManualClock) -> FetchContext {
    FetchContext::new(clock.clone(), LifetimePolicy::default())
}

fn fetch(source: &mut TokenFile, clock: &ManualClock) -> Result<Token, SourceError> {
    block_on(source.fetch(cx(clock)))
}

/// The fetch's error, checked to be transient and to name the path but
/// not `content`; its problem.
fn failure(path: &Path, content: &str, lifetime: Option<Duration>) -> String {
    let mut source = TokenFile::new(path);
    if let Some(lifetime) = lifetime {
        source = source.lifetime(lifetime);
    }
    let err = fetch(&mut source, &ManualClock::at_ms(START_MS)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let text = format!("{err} {err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{text}"
    );
    if !content.trim().is_empty() {
        assert!(!text.contains(content.trim()), "{text}");
    }
    let cause = err
        .cause()
        .and_then(|c| c.downcast_ref::<TokenFileError>())
        .expect("a TokenFileError cause");
    assert_eq!(cause.path(), path);
    format!("{:?}", cause.problem())
}

#[test]
fn an_opaque_token_lives_the_configured_lifetime_from_the_read() {
    let dir = temp_dir("opaque");
    let path = dir.join("token");
    std::fs::write(&path, "  sidecar-token-1 \r\n").unwrap();
    let clock = ManualClock::at_ms(START_MS);

    // Its Debug shows where it reads, and its cache key is the path's.
    let source = TokenFile::new(&path);
    assert!(format!("{source:?}").contains(&path.display().to_string()));
    assert_eq!(source.path(), path);
    let key = source.cache_key().unwrap();
    assert_eq!(TokenFile::new(&path).cache_key(), Some(key));
    assert_ne!(TokenFile::new(dir.join("other")).cache_key(), Some(key));

    let mut source = TokenFile::new(&path).lifetime(secs(600));
    let token = fetch(&mut source, &clock).unwrap();
    assert_eq!(token.access_token().secret(), "sidecar-token-1");
    assert_eq!(token.issued_ms(), START_MS);
    assert_eq!(token.expiry_ms(), START_MS + 600_000);

    // Without a lifetime, the manager's default one.
    let token = fetch(&mut TokenFile::new(&path), &clock).unwrap();
    assert_eq!(
        token.expiry_ms(),
        START_MS
            + LifetimePolicy::default()
                .default_lifetime_value()
                .as_millis() as u64
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_jwt_expires_at_its_exp_and_was_issued_at_its_iat() {
    let dir = temp_dir("jwt");
    let path = dir.join("token");
    let now_s = START_MS / 1000;
    let clock = ManualClock::at_ms(START_MS);
    // The configured lifetime is for tokens without `exp`: `exp` wins.
    let mut source = TokenFile::new(&path).lifetime(secs(5));

    let token = jwt(&format!(
        r#"{{"iss":"kubernetes","iat":{},"exp":{}}}"#,
        now_s - 600,
        now_s + 3000
    ));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    let got = fetch(&mut source, &clock).unwrap();
    assert_eq!(got.access_token().secret(), token);
    assert_eq!(got.expiry_ms(), (now_s + 3000) * 1000);
    assert_eq!(got.issued_ms(), (now_s - 600) * 1000);
    // The stale instant follows the whole lifetime (1 h at 75 %).
    assert_eq!(got.stale_ms(), (now_s - 600 + 2700) * 1000);

    // Without `iat` (or with one in the future), issued when read; a
    // fractional `exp` is kept to the millisecond.
    for claims in [
        format!(r#"{{"exp":{}.25}}"#, now_s + 60),
        format!(r#"{{"exp":{}.25,"iat":{}}}"#, now_s + 60, now_s + 30),
    ] {
        std::fs::write(&path, jwt(&claims)).unwrap();
        let got = fetch(&mut source, &clock).unwrap();
        assert_eq!(got.expiry_ms(), (now_s + 60) * 1000 + 250, "{claims}");
        assert_eq!(got.issued_ms(), START_MS, "{claims}");
    }

    // A JWT without `exp` lives the configured lifetime.
    std::fs::write(&path, jwt(r#"{"sub":"svc"}"#)).unwrap();
    assert_eq!(
        fetch(&mut source, &clock).unwrap().expiry_ms(),
        START_MS + 5_000
    );

    // Three dotted parts that are not base64url JSON: an opaque token.
    std::fs::write(&path, "a.b.c").unwrap();
    assert_eq!(
        fetch(&mut source, &clock).unwrap().expiry_ms(),
        START_MS + 5_000
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_expired_jwt_or_one_with_a_bad_exp_is_a_transient_error() {
    let dir = temp_dir("expired");
    let path = dir.join("token");
    let now_s = START_MS / 1000;
    for (claims, problem) in [
        (format!(r#"{{"exp":{}}}"#, now_s), "Expired"),
        (format!(r#"{{"exp":{}}}"#, now_s - 3600), "Expired"),
        (r#"{"exp":0}"#.to_owned(), "Expired"),
        (r#"{"exp":"tomorrow"}"#.to_owned(), "BadExpiry"),
        (r#"{"exp":-5}"#.to_owned(), "BadExpiry"),
    ] {
        let token = jwt(&claims);
        std::fs::write(&path, &token).unwrap();
        let got = failure(&path, &token, Some(secs(60)));
        assert_eq!(got, problem, "{claims}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn empty_missing_oversized_and_binary_files_are_refused() {
    let dir = temp_dir("refused");
    let path = dir.join("token");

    assert!(failure(&path, "", None).starts_with("Unreadable"));
    let err = fetch(&mut TokenFile::new(&path), &ManualClock::at_ms(START_MS)).unwrap_err();
    let cause = err
        .cause()
        .unwrap()
        .downcast_ref::<TokenFileError>()
        .unwrap();
    let io = std::error::Error::source(cause).and_then(|e| e.downcast_ref::<std::io::Error>());
    assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));

    for blank in ["", " \n\t\r\n"] {
        std::fs::write(&path, blank).unwrap();
        assert_eq!(failure(&path, blank, None), "Empty");
    }

    for bad in [
        "token with spaces",
        "tok\u{e9}n",
        "line1\nline2",
        "nul\0byte",
    ] {
        std::fs::write(&path, bad).unwrap();
        assert_eq!(failure(&path, bad, None), "NotHeaderSafe", "{bad:?}");
    }
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80, 0x41]).unwrap();
    assert_eq!(failure(&path, "", None), "NotHeaderSafe");

    let limit = MAX_TOKEN_FILE_BYTES as usize;
    std::fs::write(&path, "a".repeat(limit + 1)).unwrap();
    assert_eq!(failure(&path, "", None), "TooLarge");
    // A large JWT (many claims) is far below the limit; the limit itself
    // is fine.
    assert_eq!(MAX_TOKEN_FILE_BYTES, 64 * 1024);
    std::fs::write(&path, "b".repeat(16 * 1024)).unwrap();
    assert!(fetch(&mut TokenFile::new(&path), &ManualClock::at_ms(START_MS)).is_ok());
    std::fs::write(&path, "a".repeat(limit)).unwrap();
    let token = fetch(&mut TokenFile::new(&path), &ManualClock::at_ms(START_MS)).unwrap();
    assert_eq!(token.access_token().secret().len(), limit);

    assert_eq!(failure(&dir, "", None), "NotAFile");
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_symlink_is_followed() {
    let dir = temp_dir("symlink");
    // As Kubernetes mounts a projected token: a link into a data folder.
    std::fs::create_dir(dir.join("..data")).unwrap();
    std::fs::write(dir.join("..data/token"), "linked-token").unwrap();
    std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
    let token = fetch(
        &mut TokenFile::new(dir.join("token")),
        &ManualClock::at_ms(START_MS),
    )
    .unwrap();
    assert_eq!(token.access_token().secret(), "linked-token");
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_fifo_at_the_path_does_not_block() {
    let dir = temp_dir("fifo");
    let path = dir.join("token");
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    // Opened without O_NONBLOCK, a FIFO with no writer blocks the open
    // forever: the fetch runs on a thread so that the test fails instead
    // of hanging (the bound is a guard, not a timing under test).
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_path = path.clone();
    std::thread::spawn(move || {
        let result = fetch(
            &mut TokenFile::new(&thread_path),
            &ManualClock::at_ms(START_MS),
        );
        let _ = tx.send(result.map(|_| ()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the fetch blocked on the FIFO");
    let err = result.unwrap_err();
    let cause = err
        .cause()
        .unwrap()
        .downcast_ref::<TokenFileError>()
        .unwrap();
    assert!(
        matches!(cause.problem(), TokenFileProblem::NotAFile),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A token file whose reads finish before `fetch` returns (the virtual-time
/// executor cannot wait for the blocking pool), counted.
struct Counted {
    inner: TokenFile,
    fetches: Arc<AtomicU32>,
}

impl TokenSource for Counted {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let result = block_on(self.inner.fetch(cx));
        Box::pin(async move { result })
    }
}

struct Managed {
    ex: LocalExecutor<'static>,
    clock: ManualClock,
    handle: TokenHandle,
    fetches: Arc<AtomicU32>,
}

impl Managed {
    fn new(source: TokenFile) -> Managed {
        let clock = ManualClock::at_ms(START_MS);
        let fetches = Arc::new(AtomicU32::new(0));
        let (handle, driver) = TokenManager::builder(Counted {
            inner: source,
            fetches: fetches.clone(),
        })
        .clock(clock.clone())
        .jitter(NoJitter)
        .build();
        let ex = LocalExecutor::new();
        ex.spawn(driver).detach();
        let managed = Managed {
            ex,
            clock,
            handle,
            fetches,
        };
        managed.settle();
        managed
    }

    fn settle(&self) {
        while self.ex.try_tick() {}
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.settle();
    }

    fn value(&self) -> String {
        let token = self.handle.current().expect("a token");
        token.access_token().secret().to_owned()
    }

    fn fetches(&self) -> u32 {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[test]
fn the_manager_publishes_the_rewritten_file_when_the_token_turns_stale() {
    let dir = temp_dir("rewritten");
    let path = dir.join("token");
    std::fs::write(&path, "first\n").unwrap();
    let managed = Managed::new(TokenFile::new(&path).lifetime(secs(100)));
    assert_eq!(managed.value(), "first");

    // The writer replaces the token; the current one is still fresh.
    std::fs::write(&path, "second\n").unwrap();
    managed.advance(secs(60));
    assert_eq!(managed.value(), "first");
    assert_eq!(managed.fetches(), 1);

    // Stale at 75 s: the file is read again.
    managed.advance(secs(15));
    assert_eq!(managed.value(), "second");
    assert_eq!(managed.fetches(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unchanged_file_with_a_stale_token_is_not_read_in_a_loop() {
    let dir = temp_dir("unchanged");
    let path = dir.join("token");
    let now_s = START_MS / 1000;
    // A projected token late in its life: issued 50 min ago, 10 min left,
    // so stale as soon as it is read (the stale window is 15 min).
    let old = jwt(&format!(
        r#"{{"iat":{},"exp":{}}}"#,
        now_s - 3000,
        now_s + 600
    ));
    std::fs::write(&path, &old).unwrap();
    let managed = Managed::new(TokenFile::new(&path));
    assert_eq!(managed.value(), old);
    assert_eq!(managed.fetches(), 1);

    // Each read gives the same stale token; the manager spaces its asks by
    // 5 % of the lifetime (3 min), not at once and again.
    for _ in 0..170 {
        managed.advance(secs(1));
    }
    assert_eq!(managed.fetches(), 1);
    managed.advance(secs(10));
    assert_eq!(managed.fetches(), 2);
    assert_eq!(managed.value(), old);

    // The writer replaces it: the next ask publishes the new one.
    let new = jwt(&format!(
        r#"{{"iat":{},"exp":{}}}"#,
        now_s + 200,
        now_s + 3800
    ));
    std::fs::write(&path, &new).unwrap();
    managed.advance(secs(180));
    assert_eq!(managed.fetches(), 3);
    assert_eq!(managed.value(), new);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A JWT's stale instant follows the manager's lifetime policy, as the
/// context hands it over; behind a `Box` the source keeps its cache key.
#[test]
fn a_jwt_token_is_placed_by_the_managers_policy_and_boxed_keeps_its_key() {
    let dir = temp_dir("policy");
    let path = dir.join("token");
    let issued_s = START_MS / 1_000;
    let value = jwt(&format!(
        r#"{{"iat":{issued_s},"exp":{}}}"#,
        issued_s + 1_000
    ));
    std::fs::write(&path, &value).unwrap();
    let policy = LifetimePolicy::default().stale_percent(50);
    let cx = FetchContext::new(ManualClock::at_ms(START_MS), policy);
    assert_eq!(*cx.policy(), policy);
    let token = block_on(TokenFile::new(&path).fetch(cx)).unwrap();
    let expected = Token::new_ms(
        tokenkeeper::AccessToken::new(value),
        START_MS,
        Duration::from_secs(1_000),
        &policy,
    );
    assert_eq!(token.stale_ms(), expected.stale_ms());
    assert_ne!(
        token.stale_ms(),
        Token::new_ms(
            tokenkeeper::AccessToken::new("x"),
            START_MS,
            Duration::from_secs(1_000),
            &LifetimePolicy::default(),
        )
        .stale_ms()
    );

    let boxed: Box<dyn TokenSource> = Box::new(TokenFile::new(&path));
    assert!(boxed.cache_key().is_some());
    assert_eq!(boxed.cache_key(), TokenFile::new(&path).cache_key());
    std::fs::remove_dir_all(dir).unwrap();
}
