//! Discovery (issue 17) against the in-process authority, which serves its
//! metadata at RFC 8414's and OpenID Connect's well-known URLs: the
//! document fetched once, then tokens; the fallback from RFC 8414 to
//! OpenID; issuers with a path; the issuer checked; failures that may pass
//! retried with backoff on virtual time, the others not at all; the client
//! authentication and signing algorithm checked at build time; assertions
//! signed for the issuer.
#![cfg(all(feature = "ureq", feature = "jwt"))]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority};
use serde_json::{json, Value};
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, ConfigError, Discovery, DiscoveryError, HttpClient,
    HttpError, HttpRequest, HttpResponse, PrivateKey, TokenEndpoint,
};
use tokenkeeper::{
    Backoff, BoxFuture, ErrorKind, FetchContext, LifetimePolicy, ManualClock, SystemClock,
    TokenSource,
};

const CLIENT: &str = "client-a";
const SECRET: &str = "secret-a";

fn discover(
    authority: &LocalAuthority,
) -> Result<tokenkeeper::oauth2::ServerMetadata, DiscoveryError> {
    block_on(Discovery::new(authority.issuer()).fetch())
}

fn fetch(source: &mut dyn TokenSource) -> tokenkeeper::Token {
    block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default()))).unwrap()
}

/// The paths of the requests the authority received.
fn paths(authority: &LocalAuthority) -> Vec<String> {
    authority.requests().into_iter().map(|r| r.path).collect()
}

#[test]
fn the_document_is_fetched_once_and_names_the_token_endpoint() {
    let authority = LocalAuthority::start().unwrap();
    let endpoint = block_on(TokenEndpoint::discover(authority.issuer(), CLIENT))
        .unwrap()
        .client_secret(SECRET)
        .build()
        .unwrap();
    assert_eq!(endpoint.url().as_str(), authority.token_url());
    assert_eq!(endpoint.issuer(), Some(authority.issuer().as_str()));
    let mut source = ClientCredentials::new(endpoint);
    for _ in 0..3 {
        let token = fetch(&mut source);
        assert!(authority.is_valid_access_token(token.access_token().secret()));
    }
    assert_eq!(
        paths(&authority),
        [
            "/.well-known/oauth-authorization-server",
            "/token",
            "/token",
            "/token"
        ]
    );
    let get = &authority.requests()[0];
    assert_eq!(get.method, "GET");
    assert_eq!(get.header("accept"), Some("application/json"));
}

#[test]
fn without_an_rfc_8414_document_the_openid_one_is_used() {
    let authority = LocalAuthority::start().unwrap();
    authority.serve_metadata(false, true);
    let metadata = discover(&authority).unwrap();
    assert_eq!(metadata.token_endpoint(), authority.token_url());
    assert_eq!(
        paths(&authority),
        [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration"
        ]
    );
}

#[test]
fn an_issuer_with_a_path_has_it_inserted_or_appended() {
    for (oauth, openid, expected) in [
        (
            true,
            false,
            "/.well-known/oauth-authorization-server/tenant-a",
        ),
        (false, true, "/tenant-a/.well-known/openid-configuration"),
    ] {
        let authority = LocalAuthority::start().unwrap();
        authority.set_issuer_path("/tenant-a");
        authority.serve_metadata(oauth, openid);
        let metadata = discover(&authority).unwrap();
        assert_eq!(metadata.issuer(), authority.issuer());
        assert!(metadata.issuer().ends_with("/tenant-a"));
        assert_eq!(paths(&authority).last().map(String::as_str), Some(expected));
    }
}

#[test]
fn a_document_for_another_issuer_is_refused_at_once() {
    let authority = LocalAuthority::start().unwrap();
    let mut document = authority.metadata();
    document["issuer"] = json!("https://evil.example");
    authority.set_metadata(Some(document));
    let error = discover(&authority).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    match &error {
        DiscoveryError::IssuerMismatch { expected, found } => {
            assert_eq!(expected, &authority.issuer());
            assert_eq!(found, "https://evil.example");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(authority.metadata_requests(), 1, "not retried");
    assert!(
        error.to_string().contains("https://evil.example"),
        "{error}"
    );
}

#[test]
fn no_document_at_all_is_a_permanent_error_naming_both_urls() {
    let authority = LocalAuthority::start().unwrap();
    authority.serve_metadata(false, false);
    let error = discover(&authority).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(
        matches!(error, DiscoveryError::NotFound { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("oauth-authorization-server") && text.contains("openid-configuration"),
        "{text}"
    );
    assert_eq!(authority.metadata_requests(), 2);
}

/// Waits, in real time (at most 10 s), until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn failures_that_may_pass_are_retried_after_the_backoff_on_the_clock() {
    let authority = LocalAuthority::start().unwrap();
    // Two 503s asking for 5 s, then the document. A backoff that starts
    // at zero waits exactly what the server asks.
    for _ in 0..2 {
        authority.push_metadata_fault(
            Fault::oauth_error(503, "temporarily_unavailable", "").with_header("Retry-After", "5"),
        );
    }
    let clock = ManualClock::at_ms(1_700_000_000_000);
    let discovery = Discovery::new(authority.issuer())
        .clock(clock.clone())
        .backoff(Backoff::new(Duration::ZERO, 2.0, Duration::from_secs(60)));
    let fetch = thread::spawn(move || block_on(discovery.fetch()));

    for attempt in 1..=2 {
        wait_until("the attempt to sleep", || clock.sleepers() == 1);
        assert_eq!(authority.metadata_requests(), attempt);
        clock.advance(Duration::from_millis(4_999));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            authority.metadata_requests(),
            attempt,
            "retried before the backoff"
        );
        clock.advance(Duration::from_millis(1));
        wait_until("the retry", || authority.metadata_requests() == attempt + 1);
    }
    let metadata = fetch.join().unwrap().unwrap();
    assert_eq!(metadata.token_endpoint(), authority.token_url());
    // Each 503 ended its attempt: the OpenID document was not asked for.
    assert_eq!(authority.metadata_requests(), 3);
}

#[test]
fn max_attempts_bounds_the_retries() {
    let authority = LocalAuthority::start().unwrap();
    for _ in 0..5 {
        authority.push_metadata_fault(Fault::oauth_error(502, "bad_gateway", ""));
    }
    let error = block_on(
        Discovery::new(authority.issuer())
            .clock(ManualClock::at_ms(0))
            .backoff(Backoff::new(Duration::ZERO, 1.0, Duration::ZERO))
            .max_attempts(3)
            .fetch(),
    )
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert!(
        matches!(error, DiscoveryError::UnexpectedStatus { status: 502, .. }),
        "{error:?}"
    );
    assert_eq!(authority.metadata_requests(), 3);
}

#[test]
fn an_auth_method_or_algorithm_the_server_does_not_list_is_a_build_error() {
    let authority = LocalAuthority::start().unwrap();
    let mut document = authority.metadata();
    document["token_endpoint_auth_methods_supported"] =
        json!(["client_secret_basic", "private_key_jwt"]);
    document["token_endpoint_auth_signing_alg_values_supported"] = json!(["ES256"]);
    authority.set_metadata(Some(document));
    let metadata = discover(&authority).unwrap();
    let build = |auth: ClientAuth| {
        TokenEndpoint::from_metadata(&metadata, CLIENT)
            .client_auth(auth)
            .build()
    };

    let error = build(ClientAuth::ClientSecretPost(SECRET.into())).unwrap_err();
    assert_eq!(
        error,
        ConfigError::AuthMethodNotSupported {
            method: AuthMethod::ClientSecretPost,
            supported: vec!["client_secret_basic".into(), "private_key_jwt".into()],
        }
    );
    assert!(
        error.to_string().contains("client_secret_post")
            && error
                .to_string()
                .contains("client_secret_basic, private_key_jwt"),
        "{error}"
    );
    let rsa = PrivateKey::from_pem(include_str!("keys/test-rsa2048.pem")).unwrap();
    match build(ClientAuth::PrivateKeyJwt(rsa)).unwrap_err() {
        ConfigError::SigningAlgorithmNotSupported {
            algorithm,
            supported,
        } => {
            assert_eq!(
                (algorithm.as_str(), supported),
                ("RS256", vec!["ES256".to_owned()])
            );
        }
        other => panic!("{other:?}"),
    }
    let es256 = PrivateKey::from_pem(include_str!("keys/test-es256.pem")).unwrap();
    assert!(build(ClientAuth::PrivateKeyJwt(es256)).is_ok());
    assert!(build(ClientAuth::ClientSecretBasic(SECRET.into())).is_ok());
    // The assertion file is private_key_jwt too; its algorithm is the platform's.
    assert!(build(ClientAuth::ClientAssertionFile("/run/token".into())).is_ok());
    assert!(build(ClientAuth::None).is_err());

    // A document without the list means client_secret_basic alone.
    let mut document = authority.metadata();
    document
        .as_object_mut()
        .unwrap()
        .remove("token_endpoint_auth_methods_supported");
    authority.set_metadata(Some(document));
    let metadata = discover(&authority).unwrap();
    assert!(TokenEndpoint::from_metadata(&metadata, CLIENT)
        .client_secret(SECRET)
        .build()
        .is_ok());
    assert!(matches!(
        TokenEndpoint::from_metadata(&metadata, CLIENT)
            .client_secret_post(SECRET)
            .build(),
        Err(ConfigError::AuthMethodNotSupported { .. })
    ));
}

#[test]
fn a_token_endpoint_the_https_rules_refuse_is_a_build_error() {
    let authority = LocalAuthority::start().unwrap();
    let mut document = authority.metadata();
    document["token_endpoint"] = json!("http://auth.example/token");
    authority.set_metadata(Some(document));
    let metadata = discover(&authority).unwrap();
    let error = TokenEndpoint::from_metadata(&metadata, CLIENT)
        .client_secret(SECRET)
        .build()
        .unwrap_err();
    assert!(matches!(error, ConfigError::InsecureUrl(_)), "{error:?}");
}

/// A JWT's claims.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn assertions_are_signed_for_the_issuer_unless_told_otherwise() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_issuer_path("/realm");
    let key = PrivateKey::from_pem(include_str!("keys/test-es256.pem")).unwrap();
    authority.add_client_key("svc", &key.public_jwk());
    let metadata = discover(&authority).unwrap();
    for (audience, expected) in [
        (None, authority.issuer()),
        (Some(authority.token_url()), authority.token_url()),
    ] {
        let mut builder =
            TokenEndpoint::from_metadata(&metadata, "svc").private_key_jwt(key.clone());
        if let Some(audience) = audience {
            builder = builder.assertion_audience(audience);
        }
        let token = fetch(&mut ClientCredentials::new(builder.build().unwrap()));
        assert!(authority.is_valid_access_token(token.access_token().secret()));
        let assertion = authority
            .requests()
            .pop()
            .unwrap()
            .param("client_assertion")
            .unwrap();
        assert_eq!(claims(&assertion)["aud"], expected.as_str());
    }
}

/// An HTTP client written before `get` existed.
struct PostOnly;

impl HttpClient for PostOnly {
    fn post(&self, _: HttpRequest, _: usize) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        unreachable!("discovery only GETs")
    }
}

#[test]
fn a_client_that_cannot_get_says_so() {
    // Not retried: without max_attempts this ends at once, or never.
    let error = block_on(
        Discovery::new("https://auth.example")
            .http_client(PostOnly)
            .fetch(),
    )
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.to_string().contains("HttpClient::get"), "{error}");
}
