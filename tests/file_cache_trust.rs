//! What a shared cache trusts: an entry is served only to the client it was
//! written for (its cache key), and the file cache reads only a file of its
//! own, private, regular, small and plausible, without blocking.
//!
//! Two clients on one cache are tested against real authorities on
//! 127.0.0.1. The file checks write cache files by hand, as a careless
//! operator or another local user could.
#![cfg(feature = "ureq")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_lite::future::block_on;
use local_authority::LocalAuthority;
use tokenkeeper::cache::{CacheKey, FileCache, MemoryCache, TokenCache};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::source::Chain;
use tokenkeeper::{
    AccessToken, ClientId, ClientSecret, Clock, FetchContext, LifetimePolicy, SystemClock, Token,
    TokenSource,
};

/// Every log record at or above debug, from every thread: level and text.
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.target(), record.args());
        self.0.lock().unwrap().push((record.level(), line));
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
        capture
    })
}

/// The records that mention `text` (tests run in parallel: each filters by
/// its own folder).
fn logs_about(text: &str) -> Vec<(log::Level, String)> {
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, line)| line.contains(text))
        .cloned()
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-trust-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn client(authority: &LocalAuthority, id: &str, secret: &str) -> ClientCredentials {
    let endpoint = TokenEndpoint::builder(
        authority.token_url(),
        ClientId::new(id),
        ClientSecret::new(secret),
    )
    .build()
    .unwrap();
    ClientCredentials::new(endpoint)
}

fn fetch(chain: &mut Chain) -> Token {
    block_on(chain.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
        .expect("a token")
}

fn secret(token: &Token) -> String {
    token.access_token().secret().to_owned()
}

/// Two clients take turns on one cache; each must get a token of its own
/// authority, never the other's, and the second must have asked its own
/// authority. `cache` makes the shared cache for each chain.
fn two_clients_take_turns(
    a: (ClientCredentials, &LocalAuthority),
    b: (ClientCredentials, &LocalAuthority),
    cache: impl Fn() -> Arc<dyn TokenCache>,
) {
    let (source_a, authority_a) = a;
    let (source_b, authority_b) = b;
    let mut chain_a = Chain::new(source_a).cache(cache());
    let mut chain_b = Chain::new(source_b).cache(cache());
    let issued = |authority: &LocalAuthority| authority.tokens_issued();
    let before = (issued(authority_a), issued(authority_b));

    let first_a = fetch(&mut chain_a);
    let first_b = fetch(&mut chain_b);
    assert_ne!(secret(&first_b), secret(&first_a), "b was served a's token");
    assert!(authority_b.is_valid_access_token(&secret(&first_b)));
    // a again: the cache now holds b's token, which is not a's.
    let second_a = fetch(&mut chain_a);
    assert_ne!(
        secret(&second_a),
        secret(&first_b),
        "a was served b's token"
    );
    assert!(authority_a.is_valid_access_token(&secret(&second_a)));
    if !std::ptr::eq(authority_a, authority_b) {
        assert!(!authority_a.is_valid_access_token(&secret(&first_b)));
        assert!(!authority_b.is_valid_access_token(&secret(&second_a)));
    }
    // And a's own token, left alone, is served from the cache.
    let third_a = fetch(&mut chain_a);
    assert_eq!(secret(&third_a), secret(&second_a));
    let asked = (
        issued(authority_a) - before.0,
        issued(authority_b) - before.1,
    );
    if std::ptr::eq(authority_a, authority_b) {
        assert_eq!(asked.0, 3, "a, b, a asked the authority once each");
    } else {
        assert_eq!(asked, (2, 1), "each asked its own authority");
    }
}

fn one_file(dir: &Path) -> impl Fn() -> Arc<dyn TokenCache> + '_ {
    move || Arc::new(FileCache::new(dir.join("token.json")))
}

#[test]
fn two_client_ids_on_one_cache_file_each_get_their_own_token() {
    let dir = temp_dir("client-id");
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("client-b", "secret-b");
    two_clients_take_turns(
        (client(&authority, "client-a", "secret-a"), &authority),
        (client(&authority, "client-b", "secret-b"), &authority),
        one_file(&dir),
    );
    // The file names whom its entry is for by a digest only.
    let contents = std::fs::read_to_string(dir.join("token.json")).unwrap();
    assert!(!contents.contains("client-a") && !contents.contains("secret"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn two_token_urls_on_one_cache_file_each_get_their_own_token() {
    let dir = temp_dir("token-url");
    let first = LocalAuthority::start().unwrap();
    let second = LocalAuthority::start().unwrap();
    two_clients_take_turns(
        (client(&first, "client-a", "secret-a"), &first),
        (client(&second, "client-a", "secret-a"), &second),
        one_file(&dir),
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn two_scopes_on_one_cache_file_each_get_their_own_token() {
    let dir = temp_dir("scope");
    let authority = LocalAuthority::start().unwrap();
    let read = client(&authority, "client-a", "secret-a").scope("read");
    let write = client(&authority, "client-a", "secret-a").scope("write");
    two_clients_take_turns((read, &authority), (write, &authority), one_file(&dir));
    let mut chain = Chain::new(client(&authority, "client-a", "secret-a").scope("write"))
        .cache(FileCache::new(dir.join("token.json")));
    assert_eq!(fetch(&mut chain).scope(), Some("write"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn two_clients_sharing_a_memory_cache_each_get_their_own_token() {
    let first = LocalAuthority::start().unwrap();
    let second = LocalAuthority::start().unwrap();
    let shared = MemoryCache::new();
    two_clients_take_turns(
        (client(&first, "client-a", "secret-a"), &first),
        (client(&second, "client-a", "secret-a"), &second),
        || Arc::new(shared.clone()),
    );
}

#[test]
fn an_entry_for_another_key_is_logged_once_not_on_every_read() {
    let dir = temp_dir("other-key-log");
    let path = dir.join("token.json");
    let theirs = CacheKey::builder().field("client_id", "theirs").build();
    let mine = CacheKey::builder().field("client_id", "mine").build();
    let cache = FileCache::new(&path);
    let t = Token::new(
        AccessToken::new("theirs"),
        SystemClock.now_ms(),
        Duration::from_secs(60),
        &LifetimePolicy::default(),
    );
    block_on(cache.write(theirs, &t)).unwrap();
    capture();
    for _ in 0..5 {
        assert_eq!(block_on(cache.read(mine)).unwrap(), None);
    }
    assert_eq!(block_on(cache.read(theirs)).unwrap(), Some(t));
    let logs = logs_about(&dir.display().to_string());
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].0, log::Level::Debug, "{logs:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Chains without a key read only what other chains without a key wrote.
#[test]
fn unkeyed_entries_are_for_unkeyed_chains_only() {
    let authority = LocalAuthority::start().unwrap();
    let shared = MemoryCache::new();
    let fixed =
        || tokenkeeper::FixedSource::new(AccessToken::new("api-key"), Duration::from_secs(600));
    assert_eq!(fixed().cache_key(), None);
    let mut unkeyed = Chain::new(fixed()).cache(shared.clone());
    assert_eq!(secret(&fetch(&mut unkeyed)), "api-key");
    let mut keyed = Chain::new(client(&authority, "client-a", "secret-a")).cache(shared.clone());
    assert_ne!(secret(&fetch(&mut keyed)), "api-key");
    assert_eq!(block_on(shared.read(CacheKey::unkeyed())).unwrap(), None);
    // A key set by hand keeps two fixed sources apart.
    let by_hand = CacheKey::builder().field("api_key_name", "billing").build();
    let mut named = Chain::new(fixed()).cache(shared.clone()).cache_key(by_hand);
    fetch(&mut named);
    assert!(block_on(shared.read(by_hand)).unwrap().is_some());
    assert_eq!(block_on(shared.read(CacheKey::unkeyed())).unwrap(), None);
}
