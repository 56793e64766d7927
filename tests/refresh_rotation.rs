//! A refresh token the operator configures wins over a cache written for an
//! older one, and a refused refresh token from the cache falls back once to
//! the configured one: against the local authority, with rotation on (each
//! refresh token works once), over real HTTP.
#![cfg(feature = "ureq")]

use std::path::PathBuf;
use std::time::Duration;

use futures_lite::future::block_on;
use local_authority::LocalAuthority;
use tokenkeeper::cache::{Chain, FileCache, TokenCache};
use tokenkeeper::oauth2::{ErrorCode, RefreshTokenGrant, TokenEndpoint, TokenRequestError};
use tokenkeeper::{
    AccessToken, ClientId, ClientSecret, FetchContext, LifetimePolicy, ManualClock, NoJitter,
    RefreshToken, SourceError, SystemClock, Token, TokenHandle, TokenManager, TokenSource,
};

const START_MS: u64 = 1_700_000_000_000;

fn grant(authority: &LocalAuthority, refresh: &str) -> RefreshTokenGrant {
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .unwrap();
    RefreshTokenGrant::new(endpoint, RefreshToken::new(refresh))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-rotation-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The refresh tokens the authority was sent, in order.
fn refresh_tokens_sent(authority: &LocalAuthority) -> Vec<String> {
    authority
        .requests()
        .iter()
        .filter_map(|r| r.form_value("refresh_token"))
        .collect()
}

fn invalid_grant(e: &SourceError) -> bool {
    e.cause()
        .and_then(|c| c.downcast_ref::<TokenRequestError>())
        .and_then(TokenRequestError::code)
        == Some(&ErrorCode::InvalidGrant)
}

/// A manager on `clock` for a refresh-token grant behind a file cache, run
/// until it has a token or failed: the service, started once.
struct Service {
    ex: smol::LocalExecutor<'static>,
    handle: TokenHandle,
}

impl Service {
    fn start(source: RefreshTokenGrant, cache: &FileCache, clock: &ManualClock) -> Service {
        let chain = Chain::new(source).cache(cache.clone());
        let (handle, driver) = TokenManager::builder(chain)
            .clock(clock.clone())
            .jitter(NoJitter)
            .request_timeout(Duration::from_secs(10))
            .build();
        let ex = smol::LocalExecutor::new();
        ex.spawn(driver).detach();
        let service = Service { ex, handle };
        service.run_until("a token or an error", |h| {
            h.current().is_some() || h.state().last_error.is_some()
        });
        service
    }

    /// Polls the manager (its fetch runs over real HTTP) until `done`.
    fn run_until(&self, what: &str, done: impl Fn(&TokenHandle) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            while self.ex.try_tick() {}
            if done(&self.handle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn token(&self) -> Token {
        let state = self.handle.state();
        if let Some(e) = &state.last_error {
            assert!(!invalid_grant(e), "invalid_grant: {e}");
        }
        Token::clone(&self.handle.current().expect("a token"))
    }
}

#[test]
fn a_newly_issued_refresh_token_wins_over_the_cache_of_the_old_one() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_rotate_refresh_tokens(true);
    let dir = temp_dir("re-login");
    let cache = FileCache::new(dir.join("token.json"));
    let clock = ManualClock::at_ms(START_MS);

    // The service runs with the first refresh token; the authority rotates
    // it, and the cache keeps the rotated one.
    let first = authority.issue_refresh_token("client-a");
    let service = Service::start(grant(&authority, &first), &cache, &clock);
    let cached = service.token();
    let rotated = cached.refresh_token().unwrap().secret().to_owned();
    assert_ne!(rotated, first);
    drop(service);

    // The operator logs in again: a new refresh token, while the old
    // family is revoked (here: the rotated token is spent elsewhere).
    let second = authority.issue_refresh_token("client-a");
    block_on(
        grant(&authority, &rotated)
            .fetch(FetchContext::new(SystemClock, LifetimePolicy::default())),
    )
    .unwrap();
    let sent_before = refresh_tokens_sent(&authority).len();

    // Restarted while the old cached token is still valid: the new refresh
    // token is sent anyway, not the old cache served.
    let restarted = Service::start(grant(&authority, &second), &cache, &clock);
    let token = restarted.token();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_ne!(token.access_token(), cached.access_token());
    assert_eq!(
        refresh_tokens_sent(&authority)[sent_before..],
        [second.as_str()]
    );
    drop(restarted);

    // Once more, after the cached token expired and its refresh token was
    // revoked (spent elsewhere): before, the service redeemed the cached
    // one, got invalid_grant, and never sent the new one.
    let revoked = token.refresh_token().unwrap().secret().to_owned();
    block_on(
        grant(&authority, &revoked)
            .fetch(FetchContext::new(SystemClock, LifetimePolicy::default())),
    )
    .unwrap();
    let third = authority.issue_refresh_token("client-a");
    clock.advance(Duration::from_secs(7200));
    let later = Service::start(grant(&authority, &third), &cache, &clock);
    let token = later.token();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(refresh_tokens_sent(&authority).last(), Some(&third));
    // The cache now holds this lineage's token, for the next restart.
    let entry = block_on(cache.read(TokenSource::cache_key(&grant(&authority, &third)).unwrap()));
    assert_eq!(entry.unwrap().as_ref(), Some(&token));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The current token's refresh token (from a cache) was refused: the
/// configured one is tried, once.
#[test]
fn a_refused_cached_refresh_token_falls_back_once_to_the_configured_one() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_rotate_refresh_tokens(true);
    let cx = || FetchContext::new(SystemClock, LifetimePolicy::default());
    let carrying = |refresh: &str| {
        cx().token(AccessToken::new("old"), Some(Duration::from_secs(60)))
            .with_refresh_token(RefreshToken::new(refresh))
    };
    let spent = authority.issue_refresh_token("client-a");
    block_on(grant(&authority, &spent).fetch(cx())).unwrap();

    let configured = authority.issue_refresh_token("client-a");
    let mut source = grant(&authority, &configured);
    let before = refresh_tokens_sent(&authority).len();
    let token = block_on(source.fetch(cx().with_current(carrying(&spent)))).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(
        refresh_tokens_sent(&authority)[before..],
        [spent.clone(), configured.clone()]
    );

    // The configured token is spent now (rotated): another refused cached
    // token does not fall back to it again.
    let before = refresh_tokens_sent(&authority).len();
    let e = block_on(source.fetch(cx().with_current(carrying(&spent)))).unwrap_err();
    assert!(invalid_grant(&e), "{e}");
    assert_eq!(refresh_tokens_sent(&authority)[before..], [spent.as_str()]);

    // Both refused: one fallback, then the error.
    let dead = authority.issue_refresh_token("client-a");
    block_on(grant(&authority, &dead).fetch(cx())).unwrap();
    let mut source = grant(&authority, &dead);
    let before = refresh_tokens_sent(&authority).len();
    let e = block_on(source.fetch(cx().with_current(carrying(&spent)))).unwrap_err();
    assert!(invalid_grant(&e), "{e}");
    assert_eq!(refresh_tokens_sent(&authority)[before..], [spent, dead]);
}
