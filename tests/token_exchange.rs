//! Token exchange (RFC 8693, issue 17) against the in-process authority,
//! which checks the subject and actor tokens for real (an access token it
//! issued and that is still valid, or one registered with its type) and
//! records what it received: the parameters, every client authentication,
//! the subject token from a value, from a file read again for every
//! request, and from another manager's handle (the new subject after the
//! upstream refreshes, on virtual time), the answer's `issued_token_type`,
//! the lifetime policy, cache keys, and no subject or actor token in any
//! output.
#![cfg(all(feature = "ureq", feature = "jwt"))]

mod common;
mod echo_secrets;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::process::TempDir;
use echo_secrets::{assert_clean, encodings, printed};
use futures_lite::future::{self, block_on};
use local_authority::{EchoPart, EchoShape, Exchange, Fault, LocalAuthority};
use tokenkeeper::oauth2::{
    token_type, ClientAuth, ClientCredentials, ErrorCode, PresentedToken, PrivateKey,
    SigningAlgorithm, TokenEndpoint, TokenExchange,
};
use tokenkeeper::source::{TokenFileError, TokenFileProblem};
use tokenkeeper::{
    AccessToken, ErrorKind, FetchContext, LifetimePolicy, ManualClock, NoJitter, SourceError,
    SystemClock, Token, TokenHandle, TokenManager, TokenSource,
};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The authority's default client.
const CLIENT: &str = "client-a";
const SECRET: &str = "secret-a";
/// A workload's identity token, as a platform writes it to a file.
const K8S_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLW9mLWs4cw";

fn cx() -> FetchContext {
    FetchContext::new(SystemClock, LifetimePolicy::default())
}

fn fetch(source: &mut dyn TokenSource) -> Result<Token, SourceError> {
    block_on(source.fetch(cx()))
}

fn basic(authority: &LocalAuthority) -> TokenEndpoint {
    TokenEndpoint::builder(authority.token_url(), CLIENT)
        .client_secret(SECRET)
        .build()
        .unwrap()
}

/// An access token the authority issued to its default client.
fn issued_token(authority: &LocalAuthority) -> String {
    let token = fetch(&mut ClientCredentials::new(basic(authority))).unwrap();
    token.access_token().secret().to_owned()
}

fn last_exchange(authority: &LocalAuthority) -> Exchange {
    authority.exchanges().pop().expect("an exchange")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn an_exchange_sends_every_parameter_and_keeps_the_issued_token_type() {
    let authority = LocalAuthority::start().unwrap();
    let subject = issued_token(&authority);
    authority.add_subject_token("actor-jwt-1", token_type::JWT);
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::value(&subject))
        .actor(PresentedToken::value("actor-jwt-1").token_type(token_type::JWT))
        .requested_token_type(token_type::JWT)
        .audience("https://orders.example")
        .audience("https://billing.example")
        .resource("https://orders.example/v1")
        .scope("orders:read")
        .param("subject_token", "ignored")
        .param("tenant", "t1");
    let token = fetch(&mut grant).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_ne!(token.access_token().secret(), subject);
    assert_eq!(token.issued_token_type(), Some(token_type::JWT));
    // RFC 8693 §2.2.1: not an access token, so "N_A".
    assert_eq!(token.token_type(), "N_A");
    assert_eq!(token.scope(), Some("orders:read"));
    assert_eq!(
        last_exchange(&authority),
        Exchange {
            client_id: CLIENT.into(),
            subject_token: subject.clone(),
            subject_token_type: token_type::ACCESS_TOKEN.into(),
            actor_token: Some("actor-jwt-1".into()),
            actor_token_type: Some(token_type::JWT.into()),
            requested_token_type: Some(token_type::JWT.into()),
            audiences: vec![
                "https://orders.example".into(),
                "https://billing.example".into()
            ],
            resources: vec!["https://orders.example/v1".into()],
            scope: Some("orders:read".into()),
        }
    );
    let request = authority.requests().pop().unwrap();
    assert_eq!(request.param("grant_type").as_deref(), Some(GRANT));
    assert_eq!(request.param("tenant").as_deref(), Some("t1"));
    let subjects: Vec<_> = request
        .params()
        .into_iter()
        .filter(|(name, _)| name == "subject_token")
        .collect();
    assert_eq!(
        subjects.len(),
        1,
        "a reserved name given as a param is ignored"
    );

    // Without a requested type the authority issues an access token.
    let token = fetch(&mut TokenExchange::new(
        basic(&authority),
        PresentedToken::value(&subject),
    ))
    .unwrap();
    assert_eq!(token.issued_token_type(), Some(token_type::ACCESS_TOKEN));
    assert_eq!(token.token_type(), "Bearer");
}

#[test]
fn every_client_authentication_works_with_token_exchange() {
    let authority = LocalAuthority::start().unwrap();
    let subject = issued_token(&authority);
    let dir = TempDir::new("exchange-auth");
    let assertion_file = dir.path().join("assertion.jwt");
    std::fs::write(
        &assertion_file,
        authority.mint_client_assertion(CLIENT, 300),
    )
    .unwrap();
    let key = PrivateKey::from_pem(include_str!("keys/test-es256.pem")).unwrap();
    authority.add_client_key("svc-es256", &key.public_jwk());
    let rsa = PrivateKey::from_pem(include_str!("keys/test-rsa2048.pem"))
        .unwrap()
        .with_algorithm(SigningAlgorithm::Ps256)
        .unwrap();
    authority.add_client_key("svc-ps256", &rsa.public_jwk());
    let cases: Vec<(&str, ClientAuth, &str)> = vec![
        (
            CLIENT,
            ClientAuth::ClientSecretBasic(SECRET.into()),
            "basic",
        ),
        (CLIENT, ClientAuth::ClientSecretPost(SECRET.into()), "post"),
        (
            CLIENT,
            ClientAuth::ClientSecretJwt(SECRET.into()),
            "client_secret_jwt",
        ),
        (
            "svc-es256",
            ClientAuth::PrivateKeyJwt(key),
            "private_key_jwt ES256",
        ),
        (
            "svc-ps256",
            ClientAuth::PrivateKeyJwt(rsa),
            "private_key_jwt PS256",
        ),
        (
            CLIENT,
            ClientAuth::ClientAssertionFile(assertion_file),
            "assertion file",
        ),
        // A security token service wants no client at all.
        ("", ClientAuth::None, "none"),
    ];
    for (client, auth, what) in cases {
        let endpoint = TokenEndpoint::builder(authority.token_url(), client)
            .client_auth(auth)
            .build()
            .unwrap();
        let mut grant = TokenExchange::new(endpoint, PresentedToken::value(&subject))
            .audience("https://orders.example");
        let token = fetch(&mut grant).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(authority.is_valid_access_token(token.access_token().secret()));
        let exchange = last_exchange(&authority);
        assert_eq!(exchange.client_id, client, "{what}");
        assert_eq!(exchange.subject_token, subject, "{what}");
        let request = authority.requests().pop().unwrap();
        if what == "none" {
            assert_eq!(request.param("client_id"), None);
            assert_eq!(request.header("authorization"), None);
            assert_eq!(request.param("client_assertion"), None);
        }
    }
}

#[test]
fn an_unknown_expired_or_mistyped_subject_is_refused() {
    let authority = LocalAuthority::start().unwrap();
    // Unknown: invalid_grant, permanent.
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::value("forged-token"));
    let error = fetch(&mut grant).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert_eq!(
        error.oauth2_error().unwrap().code(),
        &ErrorCode::InvalidGrant
    );
    // A registered JWT presented as an access token: invalid_request.
    authority.add_subject_token(K8S_TOKEN, token_type::JWT);
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::value(K8S_TOKEN));
    let error = fetch(&mut grant).unwrap_err();
    assert_eq!(
        error.oauth2_error().unwrap().code(),
        &ErrorCode::InvalidRequest
    );
    // An access token the authority issued, since expired.
    authority.set_expires_in(Some(0.into()));
    let expired = issued_token(&authority);
    authority.set_expires_in(Some(60.into()));
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::value(&expired));
    let error = fetch(&mut grant).unwrap_err();
    assert_eq!(
        error.oauth2_error().unwrap().code(),
        &ErrorCode::InvalidGrant
    );
    // So is one it revoked.
    let revoked = issued_token(&authority);
    authority.revoke_access_token(&revoked);
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::value(&revoked));
    assert!(fetch(&mut grant).is_err());
    assert!(authority.exchanges().is_empty());
}

#[test]
fn a_subject_token_file_is_read_again_for_every_request() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("exchange-file");
    let file = dir.path().join("token");
    let endpoint = TokenEndpoint::builder(authority.token_url(), "")
        .client_auth(ClientAuth::None)
        .build()
        .unwrap();
    let mut grant = TokenExchange::new(endpoint, PresentedToken::file(&file))
        .audience("//iam.example/pools/p/providers/k8s");
    for n in 1..=3 {
        let token = format!("{K8S_TOKEN}-{n}");
        authority.add_subject_token(&token, token_type::JWT);
        // A trailing newline, as `echo` and editors write, is not the token's.
        std::fs::write(&file, format!("{token}\n")).unwrap();
        fetch(&mut grant).unwrap();
        let exchange = last_exchange(&authority);
        assert_eq!(exchange.subject_token, token);
        assert_eq!(exchange.subject_token_type, token_type::JWT);
    }
    assert_eq!(authority.exchanges().len(), 3);
}

#[test]
fn a_missing_empty_or_expired_subject_file_is_a_transient_error_naming_the_path() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("exchange-file-errors");
    let file = dir.path().join("token");
    let expired_jwt = {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let claims = format!(r#"{{"sub":"w","exp":{}}}"#, now_ms() / 1000 - 10);
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    };
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::file(&file));
    for (content, problem) in [
        (None, "unreadable"),
        (Some(String::new()), "empty"),
        (Some(expired_jwt), "expired"),
    ] {
        if let Some(content) = &content {
            std::fs::write(&file, content).unwrap();
        }
        let requests = authority.token_requests();
        let error = fetch(&mut grant).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient, "{problem}");
        assert!(error.to_string().contains("subject token file"), "{error}");
        assert!(
            error.to_string().contains(&file.display().to_string()),
            "{error}"
        );
        let cause = error
            .cause()
            .and_then(|c| c.downcast_ref::<TokenFileError>())
            .unwrap_or_else(|| panic!("{problem}: {error:?}"));
        assert_eq!(cause.path(), file);
        let matches = match problem {
            "unreadable" => matches!(cause.problem(), TokenFileProblem::Unreadable(_)),
            "empty" => matches!(cause.problem(), TokenFileProblem::Empty),
            _ => matches!(cause.problem(), TokenFileProblem::Expired),
        };
        assert!(matches, "{problem}: {:?}", cause.problem());
        assert_eq!(authority.token_requests(), requests, "nothing sent");
    }
}

#[test]
fn a_token_without_expires_in_lives_the_policys_default_lifetime() {
    let authority = LocalAuthority::start().unwrap();
    let subject = issued_token(&authority);
    authority.set_expires_in(None);
    let clock = ManualClock::at_ms(now_ms());
    let policy = LifetimePolicy::default().default_lifetime(Duration::from_secs(90));
    let cx = FetchContext::new(clock.clone(), policy);
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::value(&subject));
    let token = block_on(grant.fetch(cx)).unwrap();
    assert_eq!(token.expiry_ms() - token.issued_ms(), 90_000);
}

#[test]
fn subject_and_actor_tokens_never_show_and_are_scrubbed_from_echoes() {
    let authority = LocalAuthority::start().unwrap();
    let subject = issued_token(&authority);
    let actor = "actor token: a/b+c%d ünï";
    authority.add_subject_token(actor, token_type::ID_TOKEN);
    let grant = TokenExchange::new(basic(&authority), PresentedToken::value(&subject))
        .actor(PresentedToken::value(actor).token_type(token_type::ID_TOKEN));
    let mut forbidden = encodings(None, &subject);
    forbidden.extend(encodings(None, actor));
    assert_clean(&forbidden, &format!("{grant:?} {grant:#?}"), "Debug");
    for part in [
        EchoPart::Body,
        EchoPart::DecodedForm,
        EchoPart::ReencodedForm,
    ] {
        for (status, shape) in [
            (400, EchoShape::ErrorDescription),
            (500, EchoShape::Html),
            (200, EchoShape::EscapedJson),
        ] {
            authority.push_fault(Fault::echo(status, part, shape));
            let result = fetch(&mut grant.clone());
            assert_clean(
                &forbidden,
                &printed(&result),
                &format!("{part:?} {shape:?}"),
            );
        }
    }
}

#[test]
fn the_cache_key_follows_the_subject_and_the_request() {
    let authority = LocalAuthority::start().unwrap();
    let key = |grant: TokenExchange| grant.cache_key().expect("a key");
    let base = || TokenExchange::new(basic(&authority), PresentedToken::value("s1"));
    let a = key(base());
    assert_eq!(a, key(base()));
    assert!(!a.to_string().contains("s1"));
    for other in [
        TokenExchange::new(basic(&authority), PresentedToken::value("s2")),
        base().audience("x"),
        base().resource("x"),
        base().scope("x"),
        base().requested_token_type(token_type::JWT),
        base().actor(PresentedToken::value("a")),
        TokenExchange::new(
            basic(&authority),
            PresentedToken::value("s1").token_type(token_type::JWT),
        ),
        TokenExchange::new(basic(&authority), PresentedToken::file("/run/a")),
    ] {
        assert_ne!(a, key(other));
    }
    assert_ne!(
        key(TokenExchange::new(
            basic(&authority),
            PresentedToken::file("/run/a")
        )),
        key(TokenExchange::new(
            basic(&authority),
            PresentedToken::file("/run/b")
        ))
    );

    // A handle: the key of the upstream manager's source.
    let upstream = |scope: &str| {
        TokenManager::builder(ClientCredentials::new(basic(&authority)).scope(scope))
            .build()
            .0
    };
    let from = |handle: TokenHandle| {
        key(TokenExchange::new(
            basic(&authority),
            PresentedToken::handle(handle),
        ))
    };
    assert_eq!(from(upstream("a")), from(upstream("a")));
    assert_ne!(from(upstream("a")), from(upstream("b")));
    // An upstream whose source cannot say whom its tokens are for: no key.
    let (unkeyed, _driver) = TokenManager::builder(tokenkeeper::FixedSource::new(
        AccessToken::new("t"),
        Duration::from_secs(60),
    ))
    .build();
    assert!(
        TokenExchange::new(basic(&authority), PresentedToken::handle(unkeyed))
            .cache_key()
            .is_none()
    );
}

/// Waits (in real time, at most 10 s) for `handle`'s manager to publish a
/// token other than `not`.
fn next_token(handle: &TokenHandle, not: Option<&str>) -> Arc<Token> {
    let mut tokens = handle.subscribe();
    block_on(future::or(
        async {
            loop {
                match handle.current() {
                    Some(token) if Some(token.access_token().secret()) != not => return token,
                    _ => {}
                }
                tokens.next().await.expect("the manager stopped");
            }
        },
        async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            panic!("no new token within 10 s");
        },
    ))
}

#[test]
fn a_handle_subject_is_the_upstreams_current_token_after_each_refresh() {
    let authority = LocalAuthority::start().unwrap();
    // Virtual time for both managers; the authority checks its own tokens
    // on real time, where they stay valid.
    let clock = ManualClock::at_ms(now_ms());
    let build = |source: Box<dyn TokenSource>| {
        let (handle, driver) = TokenManager::builder(source)
            .clock(clock.clone())
            .jitter(NoJitter)
            .build();
        smol::spawn(driver).detach();
        handle
    };
    // The upstream's tokens come from the authority and live 60 s (stale
    // at 30 s); the downstream's live 10 min, so only the upstream
    // refreshes on its own in between.
    let upstream = build(Box::new(
        ClientCredentials::new(basic(&authority)).scope("own"),
    ));
    let first = next_token(&upstream, None);
    let exchange = TokenExchange::new(basic(&authority), PresentedToken::handle(upstream.clone()))
        .audience("https://orders.example");
    authority.set_expires_in(Some(600.into()));
    let downstream = build(Box::new(exchange));
    let d1 = next_token(&downstream, None);
    assert_eq!(
        last_exchange(&authority).subject_token,
        first.access_token().secret()
    );
    authority.set_expires_in(Some(60.into()));

    // The upstream refreshes (its stale instant is 30 s after issue).
    clock.advance(Duration::from_secs(31));
    let second = next_token(&upstream, Some(first.access_token().secret()));
    assert_eq!(
        authority.exchanges().len(),
        1,
        "the downstream did not refresh yet"
    );

    // The downstream's next fetch (forced here by a rejection) presents the
    // upstream's new token.
    let d2 = block_on(downstream.refresh_rejected(&d1)).unwrap();
    assert_ne!(d2.access_token().secret(), d1.access_token().secret());
    let exchanges = authority.exchanges();
    assert_eq!(exchanges.len(), 2);
    assert_eq!(exchanges[1].subject_token, second.access_token().secret());
    assert!(authority.is_valid_access_token(d2.access_token().secret()));
    block_on(downstream.shutdown());
    block_on(upstream.shutdown());
}

#[test]
fn a_stopped_upstream_is_a_permanent_failure_of_the_downstream() {
    let authority = LocalAuthority::start().unwrap();
    let (upstream, driver) =
        TokenManager::builder(ClientCredentials::new(basic(&authority))).build();
    drop(driver);
    block_on(upstream.shutdown());
    let mut grant = TokenExchange::new(basic(&authority), PresentedToken::handle(upstream));
    let error = fetch(&mut grant).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(
        error
            .to_string()
            .contains("no subject token from the upstream manager"),
        "{error}"
    );
    assert_eq!(authority.token_requests(), 0);
}

#[test]
fn a_rotated_subject_file_keeps_its_cache_key() {
    // The key of a file subject covers its path; nothing of the token.
    let dir = TempDir::new("exchange-key");
    let file = dir.path().join("t");
    std::fs::write(&file, "secret-subject").unwrap();
    let endpoint = TokenEndpoint::builder("https://sts.example/token", "")
        .client_auth(ClientAuth::None)
        .build()
        .unwrap();
    let a = TokenExchange::new(endpoint.clone(), PresentedToken::file(&file));
    std::fs::write(&file, "rotated-subject").unwrap();
    let b = TokenExchange::new(endpoint, PresentedToken::file(Path::new(&file)));
    assert_eq!(
        a.cache_key(),
        b.cache_key(),
        "a rotated file keeps its cached token"
    );
}
