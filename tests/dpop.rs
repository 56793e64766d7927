//! DPoP (RFC 9449, issue 19), the client side: the key and its proofs
//! (checked with ring from the `jwk` they carry), proofs on every grant's
//! token request to the in-process authority, the `use_dpop_nonce`
//! challenge answered exactly once and the nonce kept, a token that is not
//! bound refused unless allowed, cache keys by key, resource proofs from a
//! handle with `ath` and the resource server's nonce, the key file's
//! permissions, and no secret in any output.
#![cfg(all(feature = "ureq", feature = "jwt"))]

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::dpop::{ath, thumbprint, verify, Proof};
use common::logs::{capture_logs, logged_lines};
use common::process::TempDir;
use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority, RecordedRequest};
use tokenkeeper::cache::Chain;
use tokenkeeper::oauth2::{
    token_type, ClientAuth, ClientCredentials, CustomGrant, DpopKey, JwtBearerGrant, KeyError,
    PresentedToken, PrivateKey, RefreshTokenGrant, SigningAlgorithm, TokenEndpoint,
    TokenEndpointBuilder, TokenExchange, TokenRequestError,
};
use tokenkeeper::{
    AccessToken, ClientSecret, DpopError, Error, ErrorKind, FetchContext, LifetimePolicy,
    ManualClock, RefreshToken, SourceError, SystemClock, Token, TokenManager, TokenSource,
};

const ES256: &str = include_str!("keys/test-es256.pem");
const RSA: &str = include_str!("keys/test-rsa2048.pem");
const ED25519: &str = include_str!("keys/test-ed25519.pem");

fn endpoint(authority: &LocalAuthority, key: &DpopKey) -> TokenEndpointBuilder {
    TokenEndpoint::builder(authority.token_url(), "client-a")
        .client_secret(ClientSecret::new("secret-a"))
        .dpop(key.clone())
}

fn fetch(source: &mut dyn TokenSource) -> Result<Token, SourceError> {
    block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
}

/// A scripted token response with a DPoP-bound token, for the tests that
/// script the authority's answers.
fn bound(access_token: &str) -> Fault {
    Fault::json(
        200,
        &format!(r#"{{"access_token":"{access_token}","token_type":"DPoP","expires_in":600}}"#),
    )
}

fn use_nonce(status: u16, nonce: &str) -> Fault {
    Fault::oauth_error(
        status,
        "use_dpop_nonce",
        "Authorization server requires nonce in DPoP proof",
    )
    .with_header("DPoP-Nonce", nonce)
}

fn token_requests(authority: &LocalAuthority) -> Vec<RecordedRequest> {
    authority
        .requests()
        .into_iter()
        .filter(|r| r.path == "/token")
        .collect()
}

/// The proof of a token request, checked: signed by `key`, for a POST to
/// the token URL, without `ath`.
fn token_proof(authority: &LocalAuthority, request: &RecordedRequest, key: &DpopKey) -> Proof {
    let proof = verify(request.header("dpop").expect("a DPoP header"));
    assert_eq!(thumbprint(&proof.header["jwk"]), key.thumbprint());
    assert_eq!(proof.claim("htm"), Some("POST"));
    assert_eq!(proof.claim("htu"), Some(authority.token_url().as_str()));
    assert_eq!(proof.claim("ath"), None);
    proof
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn request_error(e: &SourceError) -> &TokenRequestError {
    e.request_error()
        .unwrap_or_else(|| panic!("no TokenRequestError in {e:?}"))
}

#[test]
fn a_proof_is_a_dpop_jwt_signed_by_the_key_it_carries_for_every_algorithm() {
    let keys = [
        (DpopKey::generate().unwrap(), "ES256"),
        (DpopKey::generate_ed25519().unwrap(), "EdDSA"),
        (DpopKey::from_pem(ES256).unwrap(), "ES256"),
        (DpopKey::from_pem(ED25519).unwrap(), "EdDSA"),
        (DpopKey::from_pem(RSA).unwrap(), "RS256"),
        (
            DpopKey::from(
                PrivateKey::from_pem(RSA)
                    .unwrap()
                    .with_algorithm(SigningAlgorithm::Ps256)
                    .unwrap(),
            ),
            "PS256",
        ),
    ];
    for (key, alg) in keys {
        assert_eq!(key.algorithm().as_str(), alg);
        let token = AccessToken::new("the-access-token");
        let before = now_s();
        let text = key
            .proof(
                "GET",
                "https://api.example.com/orders",
                Some(&token),
                Some("n-1"),
            )
            .unwrap();
        let proof = verify(&text);
        assert_eq!(proof.header["typ"], "dpop+jwt", "{alg}");
        assert_eq!(proof.header["alg"], alg);
        let jwk = &proof.header["jwk"];
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{alg}: {private} in {jwk}");
        }
        assert_eq!(thumbprint(jwk), key.thumbprint(), "{alg}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(key.public_jwk()).unwrap(),
            *jwk
        );
        assert_eq!(proof.claim("htm"), Some("GET"));
        assert_eq!(proof.claim("htu"), Some("https://api.example.com/orders"));
        assert_eq!(proof.claim("ath"), Some(ath("the-access-token").as_str()));
        assert_eq!(proof.claim("nonce"), Some("n-1"));
        let iat = proof.claims["iat"].as_u64().unwrap();
        assert!(iat >= before && iat <= now_s(), "{iat}");
        // 128 random bits at least.
        assert!(proof.claim("jti").unwrap().len() >= 22);

        let bare = verify(
            &key.proof("POST", "https://a.example/t", None, None)
                .unwrap(),
        );
        assert_eq!(bare.claim("ath"), None);
        assert_eq!(bare.claim("nonce"), None);
    }
}

#[test]
fn the_thumbprint_is_the_rfc_7638_example() {
    // RFC 7638 §3.1: this RSA key's thumbprint.
    let jwk = serde_json::json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        thumbprint(&jwk),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn htu_is_the_url_without_query_fragment_and_user_normalised() {
    let key = DpopKey::generate().unwrap();
    for (url, htu) in [
        (
            "HTTPS://API.Example.COM:443/a/b?q=1&r=2#frag",
            "https://api.example.com/a/b",
        ),
        (
            "http://127.0.0.1:8080/token?x",
            "http://127.0.0.1:8080/token",
        ),
        (
            "https://user:pw@api.example.com/x",
            "https://api.example.com/x",
        ),
        ("https://api.example.com", "https://api.example.com/"),
        (
            "https://api.example.com/a%2Fb/ü",
            "https://api.example.com/a%2Fb/%C3%BC",
        ),
    ] {
        let proof = verify(&key.proof("GET", url, None, None).unwrap());
        assert_eq!(proof.claim("htu"), Some(htu), "{url}");
    }
    for url in ["/relative", "ftp://files.example.com/x", "not a url"] {
        assert!(
            matches!(
                key.proof("GET", url, None, None),
                Err(DpopError::InvalidUrl(_))
            ),
            "{url}"
        );
    }
}

#[test]
fn every_proof_has_its_own_jti() {
    let key = DpopKey::generate().unwrap();
    let jtis: HashSet<String> = (0..500)
        .map(|_| {
            let proof = verify(&key.proof("GET", "https://a.example/", None, None).unwrap());
            proof.claim("jti").unwrap().to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 500);
}

#[test]
fn a_token_request_carries_a_proof_and_a_bound_token_comes_back() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    let mut source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
    authority.push_fault(bound("bound-1"));
    let before = now_s();
    let token = fetch(&mut source).unwrap();
    assert_eq!(token.access_token().secret(), "bound-1");
    assert_eq!(token.token_type(), "DPoP");
    let requests = token_requests(&authority);
    assert_eq!(requests.len(), 1);
    let proof = token_proof(&authority, &requests[0], &key);
    assert_eq!(proof.claim("nonce"), None);
    let iat = proof.claims["iat"].as_u64().unwrap();
    assert!(iat >= before && iat <= now_s());
    // The client still authenticates as before.
    assert!(requests[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));
}

#[test]
fn the_iat_of_a_token_request_proof_is_on_the_managers_clock() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    let mut source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
    authority.push_fault(bound("bound-1"));
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    block_on(source.fetch(FetchContext::new(clock, LifetimePolicy::default()))).unwrap();
    let proof = token_proof(&authority, &token_requests(&authority)[0], &key);
    assert_eq!(proof.claims["iat"], 1_800_000_000);
}

#[test]
fn a_nonce_challenge_is_answered_once_with_its_nonce_and_the_nonce_is_kept() {
    for status in [400, 401] {
        let authority = LocalAuthority::start().unwrap();
        let key = DpopKey::generate().unwrap();
        let mut source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
        authority.push_fault(use_nonce(status, "n1"));
        authority.push_fault(bound("bound-1"));
        let token = fetch(&mut source).unwrap();
        assert_eq!(token.access_token().secret(), "bound-1");
        let requests = token_requests(&authority);
        assert_eq!(requests.len(), 2, "HTTP {status}");
        let first = token_proof(&authority, &requests[0], &key);
        let second = token_proof(&authority, &requests[1], &key);
        assert_eq!(first.claim("nonce"), None);
        assert_eq!(second.claim("nonce"), Some("n1"));
        assert_ne!(first.claim("jti"), second.claim("jti"));

        // The next fetch sends the kept nonce at once; a success that
        // brings a new one replaces it.
        authority.push_fault(bound("bound-2").with_header("DPoP-Nonce", "n2"));
        fetch(&mut source).unwrap();
        authority.push_fault(bound("bound-3"));
        fetch(&mut source).unwrap();
        let requests = token_requests(&authority);
        assert_eq!(requests.len(), 4);
        assert_eq!(
            token_proof(&authority, &requests[2], &key).claim("nonce"),
            Some("n1")
        );
        assert_eq!(
            token_proof(&authority, &requests[3], &key).claim("nonce"),
            Some("n2")
        );
    }
}

#[test]
fn a_clone_of_the_endpoint_shares_the_nonce() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    let endpoint = endpoint(&authority, &key).build().unwrap();
    let mut first = ClientCredentials::new(endpoint.clone());
    let mut second = ClientCredentials::new(endpoint).scope("other");
    authority.push_fault(bound("bound-1").with_header("DPoP-Nonce", "shared"));
    fetch(&mut first).unwrap();
    authority.push_fault(bound("bound-2"));
    fetch(&mut second).unwrap();
    let requests = token_requests(&authority);
    assert_eq!(
        token_proof(&authority, &requests[1], &key).claim("nonce"),
        Some("shared")
    );
}

#[test]
fn a_second_nonce_challenge_is_an_error_not_a_loop() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    let mut source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
    authority.push_fault(use_nonce(400, "n1"));
    authority.push_fault(use_nonce(400, "n2"));
    authority.push_fault(bound("never-asked-for"));
    let error = fetch(&mut source).unwrap_err();
    assert_eq!(token_requests(&authority).len(), 2);
    assert_eq!(
        request_error(&error).code().map(|c| c.as_str()),
        Some("use_dpop_nonce")
    );
    // The newest nonce is kept: the manager's next try, after its backoff,
    // sends it.
    assert_eq!(error.kind(), ErrorKind::Transient);
    fetch(&mut source).unwrap();
    let requests = token_requests(&authority);
    assert_eq!(
        token_proof(&authority, &requests[2], &key).claim("nonce"),
        Some("n2")
    );
}

#[test]
fn a_nonce_challenge_without_a_nonce_is_not_retried() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    let mut source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
    authority.push_fault(Fault::oauth_error(400, "use_dpop_nonce", "no nonce given"));
    authority.push_fault(bound("never-asked-for"));
    fetch(&mut source).unwrap_err();
    assert_eq!(token_requests(&authority).len(), 1);
}

#[test]
fn another_error_that_brings_a_new_nonce_is_not_retried_and_the_nonce_is_kept() {
    for (status, code) in [(400, "invalid_grant"), (401, "invalid_client")] {
        let authority = LocalAuthority::start().unwrap();
        let key = DpopKey::generate().unwrap();
        let mut source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
        authority.push_fault(
            Fault::oauth_error(status, code, "refused").with_header("DPoP-Nonce", "n1"),
        );
        authority.push_fault(bound("bound-1"));
        let error = fetch(&mut source).unwrap_err();
        assert_eq!(request_error(&error).code().map(|c| c.as_str()), Some(code));
        assert_eq!(token_requests(&authority).len(), 1, "{code}");
        fetch(&mut source).unwrap();
        let requests = token_requests(&authority);
        assert_eq!(
            token_proof(&authority, &requests[1], &key).claim("nonce"),
            Some("n1"),
            "{code}"
        );
    }
}

#[test]
fn only_a_token_type_other_than_bearer_or_the_expected_dpop_is_warned_about() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    // The usual answers: Bearer without a key, DPoP with one.
    let mut plain = ClientCredentials::new(
        TokenEndpoint::builder(authority.token_url(), "client-a")
            .client_secret(ClientSecret::new("secret-a"))
            .build()
            .unwrap(),
    );
    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"plain-1","token_type":"bearer","expires_in":600}"#,
    ));
    fetch(&mut plain).unwrap();
    let mut bound_source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
    authority.push_fault(bound("bound-1"));
    fetch(&mut bound_source).unwrap();
    // Any other type is recorded on the token, and worth a warning.
    let mut odd = ClientCredentials::new(
        endpoint(&authority, &key)
            .dpop_allow_bearer(true)
            .build()
            .unwrap(),
    );
    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"odd-1","token_type":"N_A-warned","expires_in":600}"#,
    ));
    assert_eq!(fetch(&mut odd).unwrap().token_type(), "N_A-warned");
    // Other tests of this process log too: none may warn about the usual
    // types.
    let logs = logged_lines();
    let warned: Vec<String> = logs
        .iter()
        .filter(|l| l.contains("not Bearer"))
        .map(|l| l.to_ascii_lowercase())
        .collect();
    assert!(
        warned.iter().any(|l| l.contains(r#""n_a-warned""#)),
        "{logs:?}"
    );
    assert!(
        warned
            .iter()
            .all(|l| !l.contains(r#""bearer""#) && !l.contains(r#""dpop""#)),
        "{warned:?}"
    );
}

#[test]
fn the_retry_after_a_nonce_challenge_signs_a_new_client_assertion() {
    // The authority checks the client assertion for real and refuses a
    // replayed jti: the retry must make a new one.
    let authority = LocalAuthority::start().unwrap();
    let client_key = PrivateKey::from_pem(ES256).unwrap();
    authority.add_client_key("svc", &client_key.public_jwk());
    let key = DpopKey::generate().unwrap();
    let endpoint = TokenEndpoint::builder(authority.token_url(), "svc")
        .private_key_jwt(client_key)
        .dpop(key.clone())
        .dpop_allow_bearer(true)
        .build()
        .unwrap();
    let mut source = ClientCredentials::new(endpoint);
    authority.push_fault(use_nonce(400, "n1"));
    let token = fetch(&mut source).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    let requests = token_requests(&authority);
    assert_eq!(requests.len(), 2);
    assert_ne!(
        requests[0].form_value("client_assertion"),
        requests[1].form_value("client_assertion")
    );
    assert_eq!(
        token_proof(&authority, &requests[1], &key).claim("nonce"),
        Some("n1")
    );
}

#[test]
fn a_token_that_is_not_bound_is_refused_unless_allowed() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    // The authority answers Bearer to a client it does not bind (the
    // scripted downgrade; `end_to_end` has the authority's own).
    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"unbound","token_type":"Bearer","expires_in":60}"#,
    ));
    let mut strict = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
    let error = fetch(&mut strict).unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(
        matches!(
            request_error(&error),
            TokenRequestError::NotDpopBound { token_type } if token_type == "Bearer"
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("not be bound"), "{error}");

    let mut lenient = ClientCredentials::new(
        endpoint(&authority, &key)
            .dpop_allow_bearer(true)
            .build()
            .unwrap(),
    );
    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"unbound","token_type":"Bearer","expires_in":60}"#,
    ));
    let token = fetch(&mut lenient).unwrap();
    assert_eq!(token.token_type(), "Bearer");

    // Any case of DPoP is a bound token.
    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"b","token_type":"dpop","expires_in":60}"#,
    ));
    assert_eq!(fetch(&mut strict).unwrap().token_type(), "dpop");
}

#[test]
fn every_grant_sends_a_proof() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    let endpoint = endpoint(&authority, &key).build().unwrap();
    let grant_key = PrivateKey::from_pem(ED25519).unwrap();
    let mut grants: Vec<(&str, Box<dyn TokenSource>)> = vec![
        (
            "client_credentials",
            Box::new(ClientCredentials::new(endpoint.clone())),
        ),
        (
            "refresh_token",
            Box::new(RefreshTokenGrant::new(
                endpoint.clone(),
                RefreshToken::new("refresh-1"),
            )),
        ),
        (
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            Box::new(JwtBearerGrant::new(endpoint.clone(), grant_key, "issuer-x")),
        ),
        (
            "urn:ietf:params:oauth:grant-type:token-exchange",
            Box::new(TokenExchange::new(
                endpoint.clone(),
                PresentedToken::value("subject-1").token_type(token_type::JWT),
            )),
        ),
        (
            "urn:example:custom",
            Box::new(CustomGrant::new(endpoint, "urn:example:custom")),
        ),
    ];
    for (n, (grant_type, grant)) in grants.iter_mut().enumerate() {
        authority.push_fault(bound(&format!("bound-{n}")));
        let token = fetch(&mut **grant).unwrap();
        assert_eq!(token.token_type(), "DPoP", "{grant_type}");
        assert_eq!(
            grant
                .dpop_key()
                .map(|k| k.thumbprint().to_owned())
                .as_deref(),
            Some(key.thumbprint())
        );
        let request = token_requests(&authority).pop().unwrap();
        assert_eq!(
            request.form_value("grant_type").as_deref(),
            Some(*grant_type)
        );
        token_proof(&authority, &request, &key);
    }
}

#[test]
fn without_dpop_no_proof_is_sent_and_bearer_is_fine() {
    let authority = LocalAuthority::start().unwrap();
    let endpoint = TokenEndpoint::builder(authority.token_url(), "client-a")
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .unwrap();
    assert!(endpoint.dpop_key().is_none());
    let mut source = ClientCredentials::new(endpoint);
    assert!(source.dpop_key().is_none());
    fetch(&mut source).unwrap();
    assert_eq!(token_requests(&authority)[0].header("dpop"), None);
}

#[test]
fn the_cache_key_covers_the_dpop_key() {
    let authority = LocalAuthority::start().unwrap();
    let (a, b) = (DpopKey::generate().unwrap(), DpopKey::generate().unwrap());
    let key_of = |dpop: Option<&DpopKey>| {
        let builder = TokenEndpoint::builder(authority.token_url(), "client-a")
            .client_secret(ClientSecret::new("secret-a"));
        let builder = match dpop {
            Some(key) => builder.dpop(key.clone()),
            None => builder,
        };
        ClientCredentials::new(builder.build().unwrap())
            .cache_key()
            .unwrap()
    };
    assert_ne!(key_of(Some(&a)), key_of(Some(&b)));
    assert_ne!(key_of(Some(&a)), key_of(None));
    // The key, not the endpoint: the same key (a clone) gives the same entry.
    assert_eq!(key_of(Some(&a)), key_of(Some(&a.clone())));
    let same = DpopKey::from_pem(ES256).unwrap();
    assert_eq!(
        key_of(Some(&same)),
        key_of(Some(&DpopKey::from_pem(ES256).unwrap()))
    );
    // Every grant keys by it (the refresh token grant here).
    let refresh_key = |key: &DpopKey| {
        RefreshTokenGrant::new(
            endpoint(&authority, key).build().unwrap(),
            RefreshToken::new("r"),
        )
        .cache_key()
    };
    assert_ne!(refresh_key(&a), refresh_key(&b));
    // A chain keeps the source's key, and forwards its DPoP key.
    let chain = Chain::new(ClientCredentials::new(
        endpoint(&authority, &a).build().unwrap(),
    ));
    assert_eq!(TokenSource::cache_key(&chain), Some(key_of(Some(&a))));
    assert_eq!(chain.dpop_key().unwrap().thumbprint(), a.thumbprint());
}

/// A manager on a DPoP endpoint whose first token is `access_token`, on
/// `clock`.
fn bound_manager(
    authority: &LocalAuthority,
    key: &DpopKey,
    access_token: &str,
    clock: ManualClock,
) -> (tokenkeeper::TokenHandle, tokenkeeper::Driver) {
    authority.push_fault(bound(access_token));
    let source = Chain::new(ClientCredentials::new(
        endpoint(authority, key).build().unwrap(),
    ));
    TokenManager::builder(source).clock(clock).build()
}

#[test]
fn a_handle_gives_the_headers_of_a_resource_request_with_ath_and_nonces_by_origin() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (handle, driver) = bound_manager(&authority, &key, "bound-1", ManualClock::new(now));
    assert_eq!(handle.dpop_key().unwrap().thumbprint(), key.thumbprint());
    block_on(futures_lite::future::or(driver, async move {
        let url = "https://api.example.com/orders?page=2";
        let headers = handle.authorization("GET", url).await.unwrap();
        assert!(headers.is_dpop());
        assert_eq!(headers.authorization(), "DPoP bound-1");
        assert_eq!(headers.token().access_token().secret(), "bound-1");
        let proof = verify(headers.dpop().unwrap());
        assert_eq!(thumbprint(&proof.header["jwk"]), key.thumbprint());
        assert_eq!(proof.claim("htm"), Some("GET"));
        assert_eq!(proof.claim("htu"), Some("https://api.example.com/orders"));
        assert_eq!(proof.claim("ath"), Some(ath("bound-1").as_str()));
        assert_eq!(proof.claim("nonce"), None);
        assert_eq!(proof.claims["iat"], 1_800_000_000, "the manager's clock");

        // A nonce is kept for its origin, and only for it.
        handle
            .remember_dpop_nonce("https://api.example.com/other?x=1", "rs-1")
            .unwrap();
        let again = handle.authorization("POST", url).await.unwrap();
        let proof_again = verify(again.dpop().unwrap());
        assert_eq!(proof_again.claim("nonce"), Some("rs-1"));
        assert_eq!(proof_again.claim("htm"), Some("POST"));
        assert_ne!(proof_again.claim("jti"), proof.claim("jti"));
        for other in [
            "https://api.example.com:8443/orders",
            "http://api.example.com/orders",
            "https://other.example.com/orders",
        ] {
            let headers = handle.authorization("GET", other).await.unwrap();
            assert_eq!(
                verify(headers.dpop().unwrap()).claim("nonce"),
                None,
                "{other}"
            );
        }
        handle
            .remember_dpop_nonce("https://API.example.com:443/", "rs-2")
            .unwrap();
        let latest = handle.authorization("GET", url).await.unwrap();
        assert_eq!(verify(latest.dpop().unwrap()).claim("nonce"), Some("rs-2"));

        // A token in hand (as refresh_rejected returns one) gets the same.
        let for_token = handle
            .authorization_for(headers.token().clone(), "DELETE", url)
            .unwrap();
        assert_eq!(
            verify(for_token.dpop().unwrap()).claim("htm"),
            Some("DELETE")
        );

        assert!(matches!(
            handle.authorization("GET", "/relative").await,
            Err(Error::Dpop(DpopError::InvalidUrl(_)))
        ));
        assert!(handle.remember_dpop_nonce("nope", "n").is_err());
        handle.shutdown().await;
    }));
}

#[test]
fn a_bearer_token_gets_no_proof_even_with_a_key() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_dpop_downgrade(true);
    let key = DpopKey::generate().unwrap();
    let source = ClientCredentials::new(
        endpoint(&authority, &key)
            .dpop_allow_bearer(true)
            .build()
            .unwrap(),
    );
    let (handle, driver) = TokenManager::builder(source).build();
    block_on(futures_lite::future::or(driver, async move {
        let headers = handle
            .authorization("GET", "https://api.example.com/")
            .await
            .unwrap();
        assert!(!headers.is_dpop());
        assert_eq!(headers.dpop(), None);
        let token = headers.token().access_token().secret().to_owned();
        assert_eq!(headers.authorization(), format!("Bearer {token}"));
        handle.shutdown().await;
    }));
}

#[test]
fn a_bound_token_without_a_key_is_an_error_not_a_bearer_header() {
    let source = tokenkeeper::source::from_fn(|cx: FetchContext| async move {
        Ok::<_, SourceError>(
            cx.token(AccessToken::new("bound"), Some(Duration::from_secs(60)))
                .with_token_type("DPoP"),
        )
    });
    let (handle, driver) = TokenManager::builder(source).build();
    block_on(futures_lite::future::or(driver, async move {
        let error = handle
            .authorization("GET", "https://api.example.com/")
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Dpop(DpopError::NoKey)), "{error:?}");
        handle.shutdown().await;
    }));
}

#[test]
fn no_key_token_or_proof_in_debug_or_logs() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::from_pem(ES256).unwrap();
    let endpoint = endpoint(&authority, &key).build().unwrap();
    let debug_key = format!("{key:?}");
    assert_eq!(
        debug_key,
        format!(
            "DpopKey {{ algorithm: ES256, thumbprint: {:?} }}",
            key.thumbprint()
        )
    );
    // The private scalar of the test key, as its PEM holds it.
    let pem_body: String = ES256.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut source = ClientCredentials::new(endpoint.clone());
    authority.push_fault(use_nonce(400, "nonce-secretless"));
    authority.push_fault(bound("bound-token-xyz"));
    let token = fetch(&mut source).unwrap();
    let proof = token_requests(&authority)[1]
        .header("dpop")
        .unwrap()
        .to_owned();

    let (handle, driver) = bound_manager(
        &authority,
        &key,
        "bound-token-xyz",
        ManualClock::new(SystemTime::now()),
    );
    let ((), headers) = block_on(futures_lite::future::zip(driver, async {
        let headers = handle
            .authorization("GET", "https://api.example.com/")
            .await
            .unwrap();
        handle.shutdown().await;
        headers
    }));
    let printed = format!(
        "{key:?} {endpoint:?} {source:?} {token:?} {headers:?} {:?}",
        TokenEndpoint::builder(authority.token_url(), "c")
            .client_auth(ClientAuth::None)
            .dpop(key.clone())
    );
    // This crate's records (an HTTP client's wire traces are its own).
    let logs: Vec<String> = logged_lines()
        .into_iter()
        .filter(|l| {
            l.split(' ')
                .nth(1)
                .is_some_and(|t| t.starts_with("tokenkeeper"))
        })
        .collect();
    assert!(logs.iter().any(|l| l.contains("DPoP nonce")), "{logs:?}");
    let logs = logs.join("\n");
    for text in [&printed, &logs] {
        assert!(!text.contains("bound-token-xyz"), "{text}");
        assert!(!text.contains(&proof), "{text}");
        assert!(!text.contains(headers.dpop().unwrap()), "{text}");
        assert!(!text.contains(&pem_body[..40]), "{text}");
    }
    assert!(printed.contains(key.thumbprint()), "{printed}");
    assert!(printed.contains("scheme: \"DPoP\""), "{printed}");
}

#[cfg(unix)]
mod key_file {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn a_missing_key_file_is_created_0600_and_read_back() {
        let dir = TempDir::new("dpop-key");
        let path = dir.path().join("dpop.pem");
        let key = DpopKey::load_or_create(&path).unwrap();
        assert_eq!(key.algorithm(), SigningAlgorithm::Es256);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        // PKCS#8 PEM any tool reads, and the same key again.
        assert_eq!(
            DpopKey::from_pem(&text).unwrap().thumbprint(),
            key.thumbprint()
        );
        assert_eq!(
            DpopKey::load_or_create(&path).unwrap().thumbprint(),
            key.thumbprint()
        );
        // No temporary file left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn processes_racing_to_create_the_key_file_end_up_with_one_key() {
        let dir = TempDir::new("dpop-race");
        let path = dir.path().join("dpop.pem");
        let thumbprints: HashSet<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| DpopKey::load_or_create(&path).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().thumbprint().to_owned())
                .collect()
        });
        assert_eq!(thumbprints.len(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = TempDir::new("dpop-perms");
        let path = dir.path().join("dpop.pem");
        DpopKey::load_or_create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = DpopKey::load_or_create(&path).unwrap_err();
            assert!(
                matches!(error, KeyError::Untrusted { .. }),
                "{mode:o}: {error}"
            );
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        // A link is not followed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(DpopKey::load_or_create(&link).is_err());
        // A file that holds no key is an error, never replaced.
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            DpopKey::load_or_create(&garbage),
            Err(KeyError::NotPem)
        ));
        assert_eq!(std::fs::read_to_string(&garbage).unwrap(), "not a key");
    }

    #[test]
    fn a_key_path_that_cannot_be_opened_is_a_read_error_and_no_key_is_made() {
        let dir = TempDir::new("dpop-unopenable");
        // A link at the path: refused as such, not taken for a missing
        // file (which would try to create a key beside it).
        let target = dir.path().join("dpop.pem");
        DpopKey::load_or_create(&target).unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = DpopKey::load_or_create(&link).unwrap_err();
        assert!(
            matches!(&error, KeyError::Read { error, .. }
                if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())),
            "{error:?}"
        );
        // A path under a regular file: the open's error, never a write.
        let under_a_file = target.join("dpop.pem");
        let error = DpopKey::load_or_create(&under_a_file).unwrap_err();
        assert!(
            matches!(&error, KeyError::Read { error, .. }
                if error.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())),
            "{error:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_key_file_of_exactly_64_kib_is_read_one_byte_more_is_not() {
        const CAP: usize = 64 * 1024;
        let dir = TempDir::new("dpop-cap");
        let path = dir.path().join("dpop.pem");
        let key = DpopKey::load_or_create(&path).unwrap();
        let pem = std::fs::read_to_string(&path).unwrap();
        // Text after the PEM block is ignored by the PEM reader.
        let padded = |len: usize| format!("{pem}{}", "\n".repeat(len - pem.len()));
        std::fs::write(&path, padded(CAP)).unwrap();
        assert_eq!(
            DpopKey::load_or_create(&path).unwrap().thumbprint(),
            key.thumbprint()
        );
        std::fs::write(&path, padded(CAP + 1)).unwrap();
        let error = DpopKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(&error, KeyError::Read { error, .. } if error.to_string().contains("64 KiB")),
            "{error:?}"
        );
    }

    #[test]
    fn a_key_path_whose_link_fails_is_a_create_error_not_a_lost_race() {
        let dir = TempDir::new("dpop-link-fails");
        // The trailing slash: the temporary file is written beside it,
        // the link to a name ending in `/` fails with NotFound.
        let path = format!("{}/dpop.pem/", dir.path().display());
        let error = DpopKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(&error, KeyError::Create { error, .. } if error.kind() == std::io::ErrorKind::NotFound),
            "{error:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_key_file_another_user_owns_is_refused() {
        let dir = TempDir::new("dpop-owner");
        let path = dir.path().join("dpop.pem");
        DpopKey::load_or_create(&path).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let other = if me == 0 { 65534 } else { 0 };
        if rustix::fs::chown(&path, Some(rustix::fs::Uid::from_raw(other)), None).is_err() {
            eprintln!("skipped: changing the owner needs root");
            return;
        }
        let error = DpopKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(&error, KeyError::Untrusted { reason, .. } if reason.contains("another user")),
            "{error}"
        );
    }
}

/// Against the authority that verifies proofs for real (RFC 9449 at its
/// token endpoint and its resource): bound tokens, `ath`, nonces, and not
/// one refused proof.
mod end_to_end {
    use std::io::{Read as _, Write as _};

    use tokenkeeper::{Authorization, TokenHandle};

    use super::*;

    /// A GET of `url` with `headers`, over a new connection: the status and
    /// the response's headers (names lowercased).
    fn get(url: &str, headers: &Authorization) -> (u16, Vec<(String, String)>) {
        let url = url::Url::parse(url).unwrap();
        let address = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: {}\r\n",
            url.path(),
            headers.authorization()
        );
        if let Some(proof) = headers.dpop() {
            head.push_str(&format!("DPoP: {proof}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let mut lines = response.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Runs `test` with a manager on `source`, its driver beside it.
    fn with_manager(source: impl TokenSource, test: impl AsyncFnOnce(&TokenHandle)) {
        let (handle, driver) = TokenManager::builder(source).build();
        block_on(futures_lite::future::zip(driver, async {
            test(&handle).await;
            handle.shutdown().await;
        }));
    }

    #[test]
    fn a_bound_token_and_resource_requests_with_ath() {
        let authority = LocalAuthority::start().unwrap();
        authority.require_dpop(true);
        let key = DpopKey::generate().unwrap();
        let source = Chain::new(ClientCredentials::new(
            endpoint(&authority, &key).build().unwrap(),
        ));
        with_manager(source, async |handle| {
            for _ in 0..3 {
                let headers = handle
                    .authorization("GET", &authority.resource_url())
                    .await
                    .unwrap();
                assert!(headers.is_dpop());
                let token = headers.token().access_token().secret().to_owned();
                assert_eq!(
                    authority.access_token_jkt(&token).as_deref(),
                    Some(key.thumbprint())
                );
                let (status, _) = get(&authority.resource_url(), &headers);
                assert_eq!(status, 200, "{:?}", authority.dpop_refusals());
            }
        });
        assert_eq!(authority.dpop_refusals(), Vec::<String>::new());
        assert_eq!(authority.resource_requests(), 3);
    }

    #[test]
    fn nonce_challenges_at_the_token_endpoint_and_the_resource_are_answered_once() {
        let authority = LocalAuthority::start().unwrap();
        authority.require_dpop(true);
        authority.require_dpop_nonce(true);
        authority.require_resource_dpop_nonce(true);
        let key = DpopKey::generate().unwrap();
        let source = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
        with_manager(source, async |handle| {
            let url = authority.resource_url();
            let headers = handle.authorization("GET", &url).await.unwrap();
            // One challenge at the token endpoint, answered.
            assert_eq!(token_requests(&authority).len(), 2);
            let (status, answer) = get(&url, &headers);
            assert_eq!(status, 401);
            let challenge = header(&answer, "www-authenticate").unwrap();
            assert!(challenge.contains("use_dpop_nonce"), "{challenge}");
            handle
                .remember_dpop_nonce(&url, header(&answer, "dpop-nonce").unwrap())
                .unwrap();
            let retry = handle.authorization("GET", &url).await.unwrap();
            assert_eq!(get(&url, &retry).0, 200, "{:?}", authority.dpop_refusals());
            // The nonce is kept: the next request needs no challenge.
            let next = handle.authorization("GET", &url).await.unwrap();
            assert_eq!(get(&url, &next).0, 200);

            // A new nonce: one challenge more at the token endpoint (the
            // nonce kept is old), answered.
            authority.rotate_dpop_nonce();
            let fresh = handle.refresh_rejected(next.token()).await.unwrap();
            assert_ne!(fresh.access_token(), next.token().access_token());
            assert_eq!(token_requests(&authority).len(), 4);
        });
        let refusals = authority.dpop_refusals();
        let codes: Vec<&str> = refusals
            .iter()
            .map(|r| r.splitn(3, ": ").take(2).last().unwrap())
            .collect();
        assert_eq!(codes, ["use_dpop_nonce"; 3], "{refusals:?}");
        assert!(refusals[1].starts_with("resource: "), "{refusals:?}");
    }

    #[test]
    fn a_downgrade_is_refused_unless_allowed() {
        let authority = LocalAuthority::start().unwrap();
        authority.set_dpop_downgrade(true);
        let key = DpopKey::generate().unwrap();
        let mut strict = ClientCredentials::new(endpoint(&authority, &key).build().unwrap());
        let error = fetch(&mut strict).unwrap_err();
        assert!(matches!(
            request_error(&error),
            TokenRequestError::NotDpopBound { .. }
        ));
        let lenient = ClientCredentials::new(
            endpoint(&authority, &key)
                .dpop_allow_bearer(true)
                .build()
                .unwrap(),
        );
        with_manager(lenient, async |handle| {
            let headers = handle
                .authorization("GET", &authority.resource_url())
                .await
                .unwrap();
            assert!(!headers.is_dpop());
            assert_eq!(get(&authority.resource_url(), &headers).0, 200);
        });
        assert_eq!(authority.dpop_refusals(), Vec::<String>::new());
    }

    #[test]
    fn every_grant_gets_a_token_bound_to_the_key() {
        let authority = LocalAuthority::start().unwrap();
        authority.require_dpop(true);
        authority.require_dpop_nonce(true);
        authority.allow_grant_type("urn:example:custom");
        let key = DpopKey::generate_ed25519().unwrap();
        let endpoint = endpoint(&authority, &key).build().unwrap();
        let grant_key = PrivateKey::from_pem(ED25519).unwrap();
        authority.add_client_key("issuer-x", &grant_key.public_jwk());
        authority.add_subject_token("subject-1", token_type::ACCESS_TOKEN);
        let mut grants: Vec<Box<dyn TokenSource>> = vec![
            Box::new(ClientCredentials::new(endpoint.clone())),
            Box::new(RefreshTokenGrant::new(
                endpoint.clone(),
                RefreshToken::new(authority.issue_refresh_token("client-a")),
            )),
            Box::new(
                JwtBearerGrant::new(endpoint.clone(), grant_key, "issuer-x").subject("client-a"),
            ),
            Box::new(TokenExchange::new(
                endpoint.clone(),
                PresentedToken::value("subject-1"),
            )),
            Box::new(CustomGrant::new(endpoint, "urn:example:custom")),
        ];
        for grant in &mut grants {
            let token = fetch(&mut **grant).unwrap();
            assert_eq!(token.token_type(), "DPoP");
            assert_eq!(
                authority
                    .access_token_jkt(token.access_token().secret())
                    .as_deref(),
                Some(key.thumbprint())
            );
        }
        // The nonce was demanded once, then kept for every grant.
        assert_eq!(
            authority.dpop_refusals().len(),
            1,
            "{:?}",
            authority.dpop_refusals()
        );
    }
}
