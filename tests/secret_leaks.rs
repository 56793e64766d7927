//! No client secret, access, refresh or ID token ever appears in a log line
//! (captured at trace level), a Debug or Display output, or an error
//! message, across full scenarios: success, refresh, every error path,
//! cache reads and writes, the lease, the refresh-token grant.
#![cfg(feature = "ureq")]

mod common;

use std::time::Duration;

use common::logs::{capture_logs, logged_lines};
use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority};
use serde_json::json;
use tokenkeeper::cache::{decode_entry, CacheKey, Chain, FileCache, MemoryCache, TokenCache};
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, RefreshTokenGrant, TokenEndpoint,
};
use tokenkeeper::{
    AccessToken, ClientId, ClientSecret, FetchContext, IdToken, LifetimePolicy, RefreshToken,
    SystemClock, TokenManager, TokenSource,
};

const SECRET: &str = "client-secret-7f3a9c";

#[test]
fn no_secret_reaches_logs_debug_or_errors() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("leak-test", SECRET);
    authority.set_expires_in(Some(json!(2)));
    let mut seen: Vec<String> = vec![SECRET.to_owned()];
    let mut outputs: Vec<String> = Vec::new();
    let dir = std::env::temp_dir().join(format!("tokenkeeper-leak-{}", std::process::id()));

    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("leak-test"))
            .client_auth(ClientAuth::with_secret(auth, ClientSecret::new(SECRET)).unwrap())
            .build()
            .unwrap();
        outputs.push(format!("{endpoint:?}"));
        let file = FileCache::new(dir.join("token.json"));
        let source = ClientCredentials::new(endpoint.clone()).scope("read");
        let key = TokenSource::cache_key(&source).unwrap();
        let chain = Chain::new(source)
            .cache(MemoryCache::new())
            .cache(file.clone());
        outputs.push(format!("{chain:?}"));
        let (handle, driver) = TokenManager::builder(chain)
            .request_timeout(Duration::from_secs(2))
            .backoff(tokenkeeper::Backoff::new(
                Duration::from_millis(10),
                2.0,
                Duration::from_millis(100),
            ))
            .forced_refresh_interval(Duration::ZERO)
            .wait_timeout(Duration::from_secs(3))
            .build();
        smol::block_on(futures_lite::future::or(driver, async {
            let handle = &handle;
            let mut tokens = handle.subscribe();
            // Success, then a refresh (2 s tokens turn stale after 1 s).
            for _ in 0..2 {
                let t = tokens.next().await.unwrap();
                seen.push(t.access_token().secret().to_owned());
                outputs.push(format!("{t:?} {:?} {:#?}", t.access_token(), t));
            }
            // Every error path, while the token is served from the grace period.
            for (what, fault, expected) in [
                (
                    "401 invalid_client",
                    Fault::oauth_error(401, "invalid_client", &format!("bad secret {SECRET}")),
                    "invalid_client (HTTP 401)",
                ),
                (
                    "503",
                    Fault::json(503, r#"{"error":"temporarily_unavailable"}"#)
                        .with_header("Retry-After", "0"),
                    "temporarily_unavailable (HTTP 503)",
                ),
                (
                    "500 echoing the secret",
                    Fault::Respond {
                        status: 500,
                        headers: vec![],
                        body: format!("echo {SECRET}").into_bytes(),
                    },
                    "answered HTTP 500",
                ),
                (
                    "a number for the token",
                    Fault::json(200, r#"{"access_token": 5}"#),
                    "access_token is not a string",
                ),
                ("a reset connection", Fault::Reset, "token request failed"),
                (
                    "a huge body",
                    Fault::Huge { len: 1 << 20 },
                    "body too large",
                ),
            ] {
                // Read before the fault is queued: a fetch already on its
                // way may meet it.
                let before = handle.state().failures;
                authority.push_fault(fault);
                if let Some(rejected) = handle.current() {
                    // A forced refresh meets the fault at once.
                    let _ = handle.refresh_rejected(&rejected).await;
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while handle.state().failures == before && std::time::Instant::now() < deadline {
                    smol::Timer::after(Duration::from_millis(5)).await;
                }
                let state = handle.state();
                // The fault was met and reported, or this error path was
                // never exercised and the checks below prove nothing of it.
                assert!(
                    state.failures > before,
                    "{auth:?}, {what}: no fetch failed within 5 s: {state:?}"
                );
                let e = state.last_error.as_ref().expect("the failure is reported");
                assert!(
                    e.to_string().contains(expected),
                    "{auth:?}, {what}: expected an error about {expected:?}, got {e}"
                );
                outputs.push(format!("{state:?} {:?}", handle));
                outputs.push(format!("{e} {e:?}"));
            }
            let error = handle.token().await;
            outputs.push(format!("{error:?}"));
            if let Some(t) = handle.current() {
                seen.push(t.access_token().secret().to_owned());
            }
            handle.shutdown().await;
        }));
        outputs.push(format!("{handle:?}"));
        if let Some(t) = block_on(file.read(key)).unwrap() {
            seen.push(t.access_token().secret().to_owned());
        }
        // The lease, taken and given back.
        let lease = block_on(file.try_lease(Duration::from_secs(1))).unwrap();
        outputs.push(format!("{lease:?} {file:?}"));
    }

    // The refresh-token grant with rotation, and an ID token from a source.
    let refresh = authority.issue_refresh_token("leak-test");
    seen.push(refresh.clone());
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("leak-test"))
        .client_secret(ClientSecret::new(SECRET))
        .build()
        .unwrap();
    let mut grant = RefreshTokenGrant::new(endpoint, RefreshToken::new(refresh.clone()));
    let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
    let t = block_on(grant.fetch(cx.clone())).unwrap();
    seen.push(t.access_token().secret().to_owned());
    seen.push(t.refresh_token().unwrap().secret().to_owned());
    outputs.push(format!("{grant:?} {t:?}"));
    let reused = block_on(
        RefreshTokenGrant::new(
            TokenEndpoint::builder(authority.token_url(), ClientId::new("leak-test"))
                .client_secret(ClientSecret::new(SECRET))
                .build()
                .unwrap(),
            RefreshToken::new(refresh),
        )
        .fetch(cx.clone()),
    )
    .unwrap_err();
    outputs.push(format!("{reused} {reused:?}"));
    let with_id = cx
        .token(
            AccessToken::new("access-a1b2c3"),
            Some(Duration::from_secs(60)),
        )
        .with_id_token(IdToken::new("id-token-d4e5f6"));
    seen.push("access-a1b2c3".into());
    seen.push("id-token-d4e5f6".into());
    outputs.push(format!("{with_id:?} {with_id:#?} {:?}", with_id.id_token()));

    // A cache file with a token where a number belongs: the report of the
    // corrupt entry must not quote it.
    std::fs::create_dir_all(&dir).unwrap();
    let corrupt = dir.join("corrupt.json");
    std::fs::write(
        &corrupt,
        r#"{"version":1,"token":{"access_token":"wrong-place-9a8b7c","issued_ms":"wrong-place-9a8b7c","stale_ms":1,"expiry_ms":2}}"#,
    )
    .unwrap();
    assert_eq!(
        block_on(FileCache::new(&corrupt).read(CacheKey::unkeyed())).unwrap(),
        None
    );
    seen.push("wrong-place-9a8b7c".into());
    let decoded = decode_entry(&std::fs::read(&corrupt).unwrap()).unwrap_err();
    outputs.push(format!("{decoded} {decoded:?}"));

    let logs = logged_lines();
    assert!(
        logs.iter().any(|l| l.contains("corrupt.json")),
        "the corrupt file was reported"
    );
    assert!(
        logs.iter().any(|l| l.contains("tokenkeeper::manager")),
        "logging was captured"
    );
    assert!(
        logs.iter().any(|l| l.contains("token fetch failed")),
        "error paths were logged"
    );
    assert!(seen.len() >= 8, "{} secrets checked", seen.len());
    for secret in &seen {
        for line in logs.iter().chain(outputs.iter()) {
            assert!(
                !line.contains(secret.as_str()),
                "a secret leaked into: {line}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_logger_recording_ureqs_wire_dumps_is_warned_once() {
    // The capturing logger records every target at TRACE, ureq_proto's
    // dumps of the bytes on the wire included.
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("wire-dump", SECRET);
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("wire-dump"))
        .client_secret(ClientSecret::new(SECRET))
        .build()
        .unwrap();
    let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
    for _ in 0..2 {
        block_on(ClientCredentials::new(endpoint.clone()).fetch(cx.clone())).unwrap();
    }
    let lines = logged_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("TRACE ureq_proto::util")),
        "the wire dumps the warning is about are recorded"
    );
    let warnings: Vec<String> = lines
        .into_iter()
        .filter(|l| l.starts_with("WARN tokenkeeper::oauth2") && l.contains("ureq_proto::util"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("ureq_proto=debug"), "{}", warnings[0]);
}
