//! Client authentication without a shared secret on the wire (issue 17),
//! against the in-process authority, which verifies what it receives for
//! real (signature with the registered key, `iss`, `sub`, `aud`, `exp`,
//! `jti` never replayed): `private_key_jwt` with each algorithm,
//! `client_secret_jwt`, and an assertion file re-read for every request,
//! for each grant (the JWT bearer grant of RFC 7523 §2.1 among them, and
//! Google service-account keys); keys that cannot sign refused when they
//! are made; no key, secret or assertion in any output; and the token
//! CLI's flags.
//!
//! The keys are test-only ones in `tests/keys/`.
#![cfg(all(feature = "ureq", feature = "jwt"))]

mod common;
mod echo_secrets;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::logs::{capture_logs, logged_lines};
use common::process::{run, TempDir};
use common::token_example::{token_cli_without_redis, SECRET_ENV};
use echo_secrets::{assert_clean, encodings, printed};
use futures_lite::future::block_on;
use local_authority::{EchoPart, EchoShape, Fault, LocalAuthority, RecordedRequest};
use serde_json::{json, Value};
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, CustomGrant, ErrorCode, GoogleServiceAccount,
    GoogleServiceAccountError, JwtBearerGrant, KeyError, PrivateKey, RefreshTokenGrant,
    RequestBody, SigningAlgorithm, TokenEndpoint, TokenEndpointBuilder,
};
use tokenkeeper::source::{TokenFileError, TokenFileProblem};
use tokenkeeper::{
    ErrorKind, FetchContext, LifetimePolicy, ManualClock, RefreshToken, SourceError, SystemClock,
    Token, TokenManager, TokenSource,
};

const ES256: &str = include_str!("keys/test-es256.pem");
const ES256_SEC1: &str = include_str!("keys/test-es256-sec1.pem");
const RSA: &str = include_str!("keys/test-rsa2048.pem");
const RSA_PKCS1: &str = include_str!("keys/test-rsa2048-pkcs1.pem");
const ED25519: &str = include_str!("keys/test-ed25519.pem");
/// Every test key that can sign, with its file.
const KEYS: [(&str, &str); 5] = [
    (ES256, "test-es256.pem"),
    (ES256_SEC1, "test-es256-sec1.pem"),
    (RSA, "test-rsa2048.pem"),
    (RSA_PKCS1, "test-rsa2048-pkcs1.pem"),
    (ED25519, "test-ed25519.pem"),
];

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The issuer of the JWT bearer grants' assertions.
const GRANT_ISSUER: &str = "https://issuer.example";
/// The authority's default client: its secret signs `client_secret_jwt`.
const SECRET_CLIENT: &str = "client-a";
const SECRET: &str = "secret-a";

fn key_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(file)
}

/// Each way to sign: the client id it is registered under, the
/// authentication, and the `alg` its assertions must carry.
fn signers(authority: &LocalAuthority) -> Vec<(String, ClientAuth, &'static str)> {
    let mut all = Vec::new();
    for (pem, alg) in [
        (ES256, SigningAlgorithm::Es256),
        (ES256_SEC1, SigningAlgorithm::Es256),
        (RSA, SigningAlgorithm::Rs256),
        (RSA_PKCS1, SigningAlgorithm::Ps256),
        (ED25519, SigningAlgorithm::EdDsa),
    ] {
        let key = PrivateKey::from_pem(pem)
            .unwrap()
            .with_algorithm(alg)
            .unwrap();
        let client = format!("svc-{}-{}", alg, all.len());
        authority.add_client_key(&client, &key.public_jwk());
        all.push((client, ClientAuth::PrivateKeyJwt(key), alg.as_str()));
    }
    all.push((
        SECRET_CLIENT.to_owned(),
        ClientAuth::ClientSecretJwt(SECRET.into()),
        "HS256",
    ));
    all
}

fn endpoint(authority: &LocalAuthority, client: &str, auth: ClientAuth) -> TokenEndpointBuilder {
    TokenEndpoint::builder(authority.token_url(), client).client_auth(auth)
}

fn cx() -> FetchContext {
    FetchContext::new(SystemClock, LifetimePolicy::default())
}

fn fetch(source: &mut dyn TokenSource) -> Result<Token, SourceError> {
    block_on(source.fetch(cx()))
}

/// The grants that exist, on `endpoint`, for `client`.
fn grants(
    authority: &LocalAuthority,
    endpoint: TokenEndpoint,
    client: &str,
) -> Vec<(&'static str, Box<dyn TokenSource>)> {
    authority.allow_grant_type(DEVICE_CODE);
    let grant_key = PrivateKey::from_pem(ED25519).unwrap();
    authority.add_client_key(GRANT_ISSUER, &grant_key.public_jwk());
    let refresh = RefreshToken::new(authority.issue_refresh_token(client));
    vec![
        (
            "client_credentials",
            Box::new(ClientCredentials::new(endpoint.clone()).scope("read")),
        ),
        (
            "refresh_token",
            Box::new(RefreshTokenGrant::new(endpoint.clone(), refresh)),
        ),
        (
            DEVICE_CODE,
            Box::new(
                CustomGrant::new(endpoint.clone(), DEVICE_CODE).secret_param("device_code", "dc-1"),
            ),
        ),
        (
            JWT_BEARER_GRANT,
            Box::new(JwtBearerGrant::new(endpoint, grant_key, GRANT_ISSUER).subject(client)),
        ),
    ]
}

/// A JWT's header and claims.
fn decode(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut part = || -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let header = part();
    (header, part())
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks how `request` authenticated `client` with an assertion, and
/// returns the assertion.
fn assertion_of(request: &RecordedRequest, client: &str) -> String {
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.param("client_secret"), None);
    assert_eq!(request.param("client_id").as_deref(), Some(client));
    assert_eq!(
        request.param("client_assertion_type").as_deref(),
        Some(JWT_BEARER)
    );
    request
        .param("client_assertion")
        .expect("a client_assertion")
}

#[test]
fn every_algorithm_authenticates_every_grant_with_a_fresh_assertion() {
    let authority = LocalAuthority::start().unwrap();
    let mut jtis = HashSet::new();
    for (client, auth, alg) in signers(&authority) {
        let endpoint = endpoint(&authority, &client, auth).build().unwrap();
        for (grant, mut source) in grants(&authority, endpoint, &client) {
            let before = now_s();
            let token = fetch(&mut *source).unwrap_or_else(|e| panic!("{alg} {grant}: {e:?}"));
            assert!(authority.is_valid_access_token(token.access_token().secret()));

            let request = authority.requests().pop().unwrap();
            assert_eq!(request.param("grant_type").as_deref(), Some(grant));
            let (header, claims) = decode(&assertion_of(&request, &client));
            assert_eq!(header, json!({"alg": alg, "typ": "JWT"}), "{grant}");
            assert_eq!(claims["iss"], client.as_str());
            assert_eq!(claims["sub"], client.as_str());
            assert_eq!(claims["aud"], authority.token_url());
            let iat = claims["iat"].as_u64().unwrap();
            assert!(iat >= before && iat <= now_s(), "{claims}");
            assert_eq!(claims["nbf"].as_u64(), Some(iat));
            assert_eq!(claims["exp"].as_u64(), Some(iat + 60));
            let jti = claims["jti"].as_str().unwrap().to_owned();
            assert!(jti.len() >= 22, "{jti}");
            assert!(jtis.insert(jti), "a jti was sent twice");
        }
    }
    assert_eq!(jtis.len(), 24);
}

#[test]
fn assertions_travel_in_json_bodies_too() {
    let authority = LocalAuthority::start().unwrap();
    for (client, auth, _) in signers(&authority).into_iter().step_by(2) {
        let endpoint = endpoint(&authority, &client, auth)
            .request_body(RequestBody::Json)
            .build()
            .unwrap();
        let token = fetch(&mut ClientCredentials::new(endpoint).scope("read")).unwrap();
        assert!(authority.is_valid_access_token(token.access_token().secret()));
        let request = authority.requests().pop().unwrap();
        assert!(request.is_json());
        assertion_of(&request, &client);
        assert_eq!(request.param("scope").as_deref(), Some("read"));
    }
}

#[test]
fn a_retry_or_a_refresh_signs_a_new_assertion_the_authority_accepts() {
    let authority = LocalAuthority::start().unwrap();
    let key = PrivateKey::from_pem(ES256).unwrap();
    authority.add_client_key("svc", &key.public_jwk());
    let endpoint = endpoint(&authority, "svc", ClientAuth::PrivateKeyJwt(key))
        .build()
        .unwrap();
    // The manager's first attempt meets a 503, the retry gets a token; a
    // rejected token is then replaced: three requests, three assertions.
    authority.push_fault(Fault::json(503, r#"{"error":"temporarily_unavailable"}"#));
    let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
    smol::block_on(futures_lite::future::zip(driver, async {
        let first = handle.token().await.unwrap();
        handle.refresh_rejected(&first).await.unwrap();
        handle.shutdown().await;
    }));
    let requests = authority.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(authority.tokens_issued(), 2);
    let jtis: HashSet<String> = requests
        .iter()
        .map(|r| {
            decode(&assertion_of(r, "svc")).1["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 3);
}

#[test]
fn the_key_id_and_the_audience_are_configurable() {
    let authority = LocalAuthority::start().unwrap();
    let key = PrivateKey::from_pem(ED25519)
        .unwrap()
        .with_key_id("key-2024");
    authority.add_client_key("svc", &key.public_jwk());
    let issuer = "https://issuer.example";
    let mut source = ClientCredentials::new(
        endpoint(&authority, "svc", ClientAuth::PrivateKeyJwt(key))
            .assertion_audience(issuer)
            .build()
            .unwrap(),
    );
    // The authority checks `aud`: another one is refused until allowed.
    let refused = fetch(&mut source).unwrap_err();
    assert_eq!(
        refused.oauth2_error().map(|e| e.code().clone()),
        Some(ErrorCode::InvalidClient)
    );
    authority.accept_assertion_audience(issuer);
    fetch(&mut source).unwrap();
    let (header, claims) = decode(&assertion_of(&authority.requests().pop().unwrap(), "svc"));
    assert_eq!(header["kid"], "key-2024");
    assert_eq!(claims["aud"], issuer);
}

#[test]
fn a_refused_assertion_is_a_permanent_invalid_client() {
    let authority = LocalAuthority::start().unwrap();
    // Registered with the EC key, signing with the RSA one.
    authority.add_client_key("svc", &PrivateKey::from_pem(ES256).unwrap().public_jwk());
    let wrong_key = PrivateKey::from_pem(RSA).unwrap();
    let e = fetch(&mut ClientCredentials::new(
        endpoint(&authority, "svc", ClientAuth::PrivateKeyJwt(wrong_key))
            .build()
            .unwrap(),
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    let oauth2 = e.oauth2_error().unwrap();
    assert_eq!(oauth2.code(), &ErrorCode::InvalidClient);
    assert!(oauth2.description().unwrap().contains("signature"), "{e}");

    // Signed on a clock two minutes behind: expired when it arrives. The
    // times come from the fetch's clock, the manager's.
    let key = PrivateKey::from_pem(ES256).unwrap();
    let mut source = ClientCredentials::new(
        endpoint(&authority, "svc", ClientAuth::PrivateKeyJwt(key))
            .build()
            .unwrap(),
    );
    let late = ManualClock::at_ms((now_s() - 120) * 1000);
    let e = block_on(source.fetch(FetchContext::new(late, LifetimePolicy::default()))).unwrap_err();
    assert!(
        e.oauth2_error()
            .unwrap()
            .description()
            .unwrap()
            .contains("expired"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// The JWT bearer grant

#[test]
fn the_jwt_bearer_grant_signs_a_fresh_assertion_with_its_claims() {
    let authority = LocalAuthority::start().unwrap();
    let key = PrivateKey::from_pem(ES256)
        .unwrap()
        .with_key_id("grant-key");
    authority.add_client_key(GRANT_ISSUER, &key.public_jwk());
    let endpoint = endpoint(&authority, "svc", ClientAuth::None)
        .build()
        .unwrap();
    let mut grant = JwtBearerGrant::new(endpoint.clone(), key, GRANT_ISSUER)
        .subject("user-42")
        .scope("orders:read")
        .claim("tenant", "t1")
        .claim("iss", "ignored")
        .param("resource", "https://api.example")
        .param("assertion", "ignored");
    let debug = format!("{grant:?}");
    assert_no_key_material(&debug, ES256, "JwtBearerGrant Debug");
    let mut jtis = HashSet::new();
    for _ in 0..2 {
        let token = fetch(&mut grant).unwrap();
        assert_eq!(token.scope(), Some("orders:read"));
        let request = authority.requests().pop().unwrap();
        // No client authentication: the public client's id alone.
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.param("client_id").as_deref(), Some("svc"));
        assert_eq!(
            request.param("grant_type").as_deref(),
            Some(JWT_BEARER_GRANT)
        );
        assert_eq!(request.param("scope").as_deref(), Some("orders:read"));
        assert_eq!(
            request.param("resource").as_deref(),
            Some("https://api.example")
        );
        let assertions: Vec<_> = request
            .params()
            .into_iter()
            .filter(|(n, _)| n == "assertion")
            .collect();
        assert_eq!(assertions.len(), 1);
        let (header, claims) = decode(&assertions[0].1);
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JWT", "kid": "grant-key"})
        );
        assert_eq!(claims["iss"], GRANT_ISSUER);
        assert_eq!(claims["sub"], "user-42");
        assert_eq!(claims["aud"], authority.token_url());
        assert_eq!(claims["tenant"], "t1");
        assert!(claims.get("scope").is_none(), "{claims}");
        let iat = claims["iat"].as_u64().unwrap();
        assert_eq!(claims["exp"].as_u64(), Some(iat + 60));
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
    // Another subject is another token to cache.
    let other = JwtBearerGrant::new(
        endpoint.clone(),
        PrivateKey::from_pem(ES256).unwrap(),
        GRANT_ISSUER,
    );
    assert_ne!(
        grant.cache_key(),
        other.clone().subject("user-7").cache_key()
    );
    assert_ne!(
        other.cache_key(),
        other.clone().subject("user-7").cache_key()
    );

    // An assertion the authority cannot verify: a permanent invalid_grant.
    let unknown = PrivateKey::from_pem(RSA).unwrap();
    let e = fetch(&mut JwtBearerGrant::new(endpoint, unknown, GRANT_ISSUER)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert_eq!(e.oauth2_error().unwrap().code(), &ErrorCode::InvalidGrant);
}

/// A service-account key file as Google's console writes it, for `token_uri`.
fn service_account_json(token_uri: &str, private_key: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": "8f2a",
        "private_key": private_key,
        "client_email": "reporter@my-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

#[test]
fn a_google_service_account_key_file_gets_tokens_with_the_scope_as_a_claim() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("service-account");
    let path = dir.path().join("sa.json");
    std::fs::write(&path, service_account_json(&authority.token_url(), RSA)).unwrap();
    let account = GoogleServiceAccount::from_file(&path).unwrap();
    let email = account.client_email().to_owned();
    let key = PrivateKey::from_pem(RSA).unwrap();
    authority.add_client_key(&email, &key.public_jwk());
    assert_no_key_material(&format!("{account:?}"), RSA, "GoogleServiceAccount Debug");

    let scope = "https://www.googleapis.com/auth/cloud-platform";
    let mut grant =
        JwtBearerGrant::google(account.token_endpoint().build().unwrap(), &account).scope(scope);
    let token = fetch(&mut grant).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(token.scope(), Some(scope));
    let request = authority.requests().pop().unwrap();
    // grant_type and assertion, nothing else: no client id, no scope parameter.
    let names: Vec<String> = request.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["grant_type", "assertion"]);
    assert_eq!(request.header("authorization"), None);
    let (header, claims) = decode(&request.param("assertion").unwrap());
    assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "8f2a"}));
    assert_eq!(claims["iss"], email.as_str());
    assert_eq!(claims["aud"], authority.token_url());
    assert_eq!(claims["scope"], scope);
    assert!(claims.get("sub").is_none(), "{claims}");
}

#[test]
fn a_key_file_that_is_not_a_service_account_s_is_a_typed_error() {
    let uri = "https://oauth2.googleapis.com/token";
    let good: Value = serde_json::from_str(&service_account_json(uri, RSA)).unwrap();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut json = good.clone();
        change(&mut json);
        GoogleServiceAccount::from_json(&json.to_string()).unwrap_err()
    };
    let remove =
        |name: &'static str| move |j: &mut Value| drop(j.as_object_mut().unwrap().remove(name));
    let cases = [
        (
            with(&|j| j["type"] = json!("authorized_user")),
            "its type is \"authorized_user\"",
        ),
        (
            with(&|j| j["private_key"] = json!("")),
            "has no private_key",
        ),
        (with(&remove("client_email")), "has no client_email"),
        (with(&remove("token_uri")), "has no token_uri"),
        (with(&|j| j["private_key"] = json!(ES256)), "not RSA"),
        (
            with(&|j| j["private_key"] = json!(&RSA[..300])),
            "not well-formed",
        ),
        (
            GoogleServiceAccount::from_json(&good.to_string()[..400]).unwrap_err(),
            "not JSON",
        ),
        (
            GoogleServiceAccount::from_file("/nonexistent/sa.json").unwrap_err(),
            "cannot read the service-account key file /nonexistent/sa.json",
        ),
    ];
    for (e, message) in cases {
        let text = format!("{e} {e:?}");
        assert!(e.to_string().contains(message), "{text}");
        assert_no_key_material(&text, RSA, message);
        assert_no_key_material(&text, ES256, message);
    }
    assert!(matches!(
        with(&|j| j["private_key"] = json!(ES256)),
        GoogleServiceAccountError::Key(KeyError::Unsupported(_))
    ));
}

// ---------------------------------------------------------------------------
// An assertion file

#[test]
fn an_assertion_file_is_read_again_for_every_request() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("client-assertion");
    let path = dir.path().join("token");
    let endpoint = endpoint(
        &authority,
        SECRET_CLIENT,
        ClientAuth::ClientAssertionFile(path.clone()),
    )
    .build()
    .unwrap();
    assert_eq!(endpoint.auth_method(), AuthMethod::PrivateKeyJwt);
    for (grant, mut source) in grants(&authority, endpoint, SECRET_CLIENT) {
        for _ in 0..2 {
            // The platform rotates the file between requests; each one
            // sends what the file holds then (the authority accepts an
            // assertion once).
            let minted = authority.mint_client_assertion(SECRET_CLIENT, 300);
            std::fs::write(&path, format!("{minted}\n")).unwrap();
            fetch(&mut *source).unwrap_or_else(|e| panic!("{grant}: {e:?}"));
            let request = authority.requests().pop().unwrap();
            assert_eq!(assertion_of(&request, SECRET_CLIENT), minted, "{grant}");
        }
    }
    assert_eq!(authority.tokens_issued(), 8);
}

#[test]
fn a_missing_empty_or_expired_assertion_file_is_a_transient_error_naming_the_path() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("client-assertion");
    let path = dir.path().join("token");
    let mut source = ClientCredentials::new(
        endpoint(
            &authority,
            SECRET_CLIENT,
            ClientAuth::ClientAssertionFile(path.clone()),
        )
        .build()
        .unwrap(),
    );
    let expired = authority.mint_client_assertion(SECRET_CLIENT, 0);
    for (content, problem) in [
        (None, "Unreadable"),
        (Some(" \n"), "Empty"),
        (Some(expired.as_str()), "Expired"),
    ] {
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let e = fetch(&mut source).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
        let cause = e.cause().and_then(|c| c.downcast_ref::<TokenFileError>());
        let cause = cause.unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(cause.path(), path);
        assert!(
            format!("{:?}", cause.problem()).starts_with(problem),
            "{cause:?}"
        );
        let text = e.to_string();
        assert!(text.contains("client assertion file"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(!text.contains(&expired), "{text}");
        assert!(matches!(
            cause.problem(),
            TokenFileProblem::Unreadable(_) | TokenFileProblem::Empty | TokenFileProblem::Expired
        ));
    }
    // Nothing was sent.
    assert_eq!(authority.token_requests(), 0);
}

// ---------------------------------------------------------------------------
// Keys that cannot sign

/// Every 12-character window of the base64 inside a PEM text: no output
/// may hold one.
fn key_material(pem: &str) -> Vec<String> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.contains(':'))
        .collect();
    let chars: Vec<char> = body.chars().collect();
    chars.windows(12).map(|w| w.iter().collect()).collect()
}

fn assert_no_key_material(text: &str, pem: &str, context: &str) {
    for window in key_material(pem) {
        assert!(
            !text.contains(&window),
            "{context}: key material {window:?} in {text}"
        );
    }
}

#[test]
fn keys_that_cannot_sign_are_typed_errors_when_made() {
    let file = |name: &str| std::fs::read_to_string(key_path(name)).unwrap();
    let truncated = &ES256[..ES256.len() / 2];
    /// Whether an error is the one expected.
    type Expected = fn(&KeyError) -> bool;
    let cases: Vec<(String, Expected)> = vec![
        (file("test-es256-encrypted.pem"), |e| {
            matches!(e, KeyError::Encrypted)
        }),
        (file("test-rsa2048-encrypted-pkcs1.pem"), |e| {
            matches!(e, KeyError::Encrypted)
        }),
        (file("test-rsa1024.pem"), |e| {
            matches!(e, KeyError::RsaTooSmall { bits: 1024 })
        }),
        (
            file("test-p384.pem"),
            |e| matches!(e, KeyError::Unsupported(what) if what.contains("P-384")),
        ),
        (file("test-es256.pub.pem"), |e| {
            matches!(e, KeyError::NoPrivateKey)
        }),
        ("not a key at all".to_owned(), |e| {
            matches!(e, KeyError::NotPem)
        }),
        (String::new(), |e| matches!(e, KeyError::NotPem)),
        (truncated.to_owned(), |e| matches!(e, KeyError::Malformed)),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
            |e| matches!(e, KeyError::Malformed),
        ),
        (ES256.replace("MIGHAgEAMBMG", "MIGHAgEAMBMH"), |e| {
            matches!(
                e,
                KeyError::Malformed | KeyError::Unsupported(_) | KeyError::Rejected(_)
            )
        }),
    ];
    for (pem, expected) in &cases {
        let e = PrivateKey::from_pem(pem).unwrap_err();
        assert!(expected(&e), "{e:?} for {:?}", pem.lines().next());
        let text = format!("{e} {e:?}");
        assert_no_key_material(&text, pem, "error");
        assert_no_key_material(&text, ES256, "error");
    }
    // DER that is not a key; a file that is not there.
    for der in [
        &b""[..],
        &[0x30, 0x03, 0x02, 0x01, 0x00],
        &[0x04, 0x00],
        &[0x30, 0x82],
    ] {
        assert!(PrivateKey::from_der(der).is_err(), "{der:?}");
    }
    let missing = PrivateKey::from_file("/nonexistent/key.pem").unwrap_err();
    assert!(matches!(missing, KeyError::Read { .. }), "{missing:?}");
    assert!(missing.to_string().contains("/nonexistent/key.pem"));

    // A key that does not fit the algorithm asked for.
    for (pem, alg) in [
        (ES256, SigningAlgorithm::Rs256),
        (RSA, SigningAlgorithm::Es256),
        (RSA, SigningAlgorithm::EdDsa),
        (ED25519, SigningAlgorithm::Ps256),
    ] {
        let e = PrivateKey::from_pem(pem)
            .unwrap()
            .with_algorithm(alg)
            .unwrap_err();
        assert!(matches!(e, KeyError::AlgorithmMismatch { algorithm, .. } if algorithm == alg));
        assert_no_key_material(&format!("{e} {e:?}"), pem, "mismatch");
    }
    // The files as files, PEM and DER alike.
    for (pem, name) in KEYS {
        let key = PrivateKey::from_file(key_path(name)).unwrap();
        assert_eq!(
            key.public_jwk(),
            PrivateKey::from_pem(pem).unwrap().public_jwk()
        );
    }
}

#[test]
fn no_key_or_secret_in_debug_output() {
    let authority = LocalAuthority::start().unwrap();
    for (client, auth, _) in signers(&authority) {
        let builder = endpoint(&authority, &client, auth.clone());
        let built = builder_debug_and_build(builder);
        let text = format!(
            "{auth:?} {auth:#?} {built:?} {:?} {:?}",
            ClientCredentials::new(built.clone()),
            RefreshTokenGrant::new(built.clone(), RefreshToken::new("r")),
        );
        for (pem, _) in KEYS {
            assert_no_key_material(&text, pem, "Debug");
        }
        assert!(!text.contains(SECRET), "{text}");
    }
}

fn builder_debug_and_build(builder: TokenEndpointBuilder) -> TokenEndpoint {
    let debug = format!("{builder:?}");
    for (pem, _) in KEYS {
        assert_no_key_material(&debug, pem, "builder Debug");
    }
    assert!(!debug.contains(SECRET), "{debug}");
    builder.build().unwrap()
}

#[test]
fn echoed_assertions_and_secrets_never_reach_errors_tokens_or_logs() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("client-assertion");
    let path = dir.path().join("token");
    let mut auths = signers(&authority);
    auths.push((
        SECRET_CLIENT.to_owned(),
        ClientAuth::ClientAssertionFile(path.clone()),
        "HS256",
    ));
    let mut sources: Vec<(String, Box<dyn TokenSource>, &str)> = auths
        .into_iter()
        .map(|(client, auth, alg)| {
            let endpoint = endpoint(&authority, &client, auth).build().unwrap();
            let source: Box<dyn TokenSource> = Box::new(ClientCredentials::new(endpoint));
            (client, source, alg)
        })
        .collect();
    // The JWT bearer grant's assertion is a credential too.
    let grant_key = PrivateKey::from_pem(ES256).unwrap();
    authority.add_client_key(GRANT_ISSUER, &grant_key.public_jwk());
    let public = endpoint(&authority, "svc", ClientAuth::None)
        .build()
        .unwrap();
    sources.push((
        "svc".to_owned(),
        Box::new(JwtBearerGrant::new(public, grant_key, GRANT_ISSUER)),
        "grant",
    ));
    let mut redacted = 0;
    let mut all_forbidden = Vec::new();
    for (client, mut source, alg) in sources {
        for (status, shape) in [
            (401, EchoShape::ErrorDescription),
            (400, EchoShape::EscapedJson),
            (500, EchoShape::Html),
            (200, EchoShape::TokenResponse),
        ] {
            for part in [
                EchoPart::Request,
                EchoPart::Body,
                EchoPart::DecodedForm,
                EchoPart::ReencodedForm,
            ] {
                std::fs::write(&path, authority.mint_client_assertion(SECRET_CLIENT, 60)).unwrap();
                authority.push_fault(Fault::echo(status, part, shape));
                let result = fetch(&mut *source);
                let context = format!("{alg} {status} {part:?} {shape:?}");
                assert_eq!(
                    result.is_ok(),
                    shape == EchoShape::TokenResponse,
                    "{context}"
                );
                let sent = authority.requests().pop().unwrap();
                let mut forbidden = encodings(Some(&client), SECRET);
                let assertions = sent
                    .params()
                    .into_iter()
                    .filter(|(name, _)| name == "client_assertion" || name == "assertion");
                for (_, assertion) in assertions {
                    forbidden.extend(encodings(None, &assertion));
                    // Its signature alone too.
                    forbidden.extend(encodings(None, assertion.rsplit('.').next().unwrap()));
                }
                let text = printed(&result);
                assert_clean(&forbidden, &text, &context);
                redacted += usize::from(text.contains("<redacted>"));
                all_forbidden.extend(forbidden);
            }
        }
    }
    assert!(redacted >= 45, "only {redacted} outputs needed scrubbing");
    all_forbidden.sort();
    all_forbidden.dedup();
    for line in logged_lines() {
        assert_clean(&all_forbidden, &line, "log record");
    }
}

// ---------------------------------------------------------------------------
// The CLI

const RUN_LIMIT: Duration = Duration::from_secs(30);
const WHAT: &str = "the token example";

/// The CLI for `client` at `authority` with `args`, no secret in the
/// environment.
fn token_cmd(authority: &LocalAuthority, client: &str, args: &[&str]) -> Command {
    let mut cmd = token_cli_without_redis();
    cmd.args(["--token-url", &authority.token_url(), "--client-id", client])
        .args(args)
        .env_remove(SECRET_ENV)
        .env_remove("TOKENKEEPER_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn path_arg(name: &str) -> String {
    key_path(name).display().to_string()
}

#[test]
fn the_cli_signs_with_a_private_key_file() {
    let authority = LocalAuthority::start().unwrap();
    for (name, alg, expected) in [
        ("test-es256.pem", None, "ES256"),
        ("test-es256-sec1.pem", Some("ES256"), "ES256"),
        ("test-rsa2048.pem", None, "RS256"),
        ("test-rsa2048-pkcs1.pem", Some("PS256"), "PS256"),
        ("test-ed25519.pem", Some("eddsa"), "EdDSA"),
    ] {
        let key = PrivateKey::from_file(key_path(name)).unwrap();
        authority.add_client_key(name, &key.public_jwk());
        let path = path_arg(name);
        let mut args = vec!["--auth", "private_key_jwt", "--private-key-file", &path];
        args.extend(["--key-id", "k1"]);
        if let Some(alg) = alg {
            args.extend(["--alg", alg]);
        }
        let out = run(token_cmd(&authority, name, &args), WHAT, RUN_LIMIT);
        assert!(out.status.success(), "{name}: {}", out.stderr);
        assert_eq!(out.stderr, "");
        assert!(authority.is_valid_access_token(out.stdout.trim()));
        let (header, _) = decode(&assertion_of(&authority.requests().pop().unwrap(), name));
        assert_eq!(header, json!({"alg": expected, "typ": "JWT", "kid": "k1"}));
    }
    // A key file says private_key_jwt by itself; --watch prints events.
    let path = path_arg("test-es256.pem");
    let out = run(
        token_cmd(
            &authority,
            "test-es256.pem",
            &["--private-key-file", &path, "--watch", "1"],
        ),
        WHAT,
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains(r#""event":"token""#), "{}", out.stdout);
    assert_no_key_material(&format!("{} {}", out.stdout, out.stderr), ES256, "--watch");
}

#[test]
fn the_cli_signs_with_the_client_secret_and_sends_an_assertion_file() {
    let authority = LocalAuthority::start().unwrap();
    let mut cmd = token_cmd(&authority, SECRET_CLIENT, &["--auth", "client_secret_jwt"]);
    cmd.env(SECRET_ENV, SECRET);
    let out = run(cmd, WHAT, RUN_LIMIT);
    assert!(out.status.success(), "{}", out.stderr);
    let request = authority.requests().pop().unwrap();
    let (header, _) = decode(&assertion_of(&request, SECRET_CLIENT));
    assert_eq!(header["alg"], "HS256");
    assert!(!request.body.contains(SECRET));

    let dir = TempDir::new("client-assertion");
    let path = dir.path().join("token");
    for _ in 0..2 {
        let minted = authority.mint_client_assertion(SECRET_CLIENT, 60);
        std::fs::write(&path, &minted).unwrap();
        let file = path.display().to_string();
        let out = run(
            token_cmd(
                &authority,
                SECRET_CLIENT,
                &["--client-assertion-file", &file],
            ),
            WHAT,
            RUN_LIMIT,
        );
        assert!(out.status.success(), "{}", out.stderr);
        assert!(authority.is_valid_access_token(out.stdout.trim()));
        let request = authority.requests().pop().unwrap();
        assert_eq!(assertion_of(&request, SECRET_CLIENT), minted);
        assert!(!out.stderr.contains(&minted));
    }
}

#[test]
fn the_cli_refuses_keys_and_flags_that_cannot_work_before_any_request() {
    let authority = LocalAuthority::start().unwrap();
    let es256 = path_arg("test-es256.pem");
    let encrypted = path_arg("test-es256-encrypted.pem");
    let small = path_arg("test-rsa1024.pem");
    let cases: [(&[&str], &str); 10] = [
        (
            &["--private-key-file", &es256, "--alg", "RS256"],
            "--alg: RS256 cannot be signed with an EC P-256 key",
        ),
        (
            &["--private-key-file", &es256, "--alg", "HS256"],
            "--alg takes ES256, RS256, PS256 or EdDSA",
        ),
        (&["--private-key-file", &encrypted], "encrypted"),
        (&["--private-key-file", &small], "1024 bits"),
        (
            &["--private-key-file", "/nonexistent/key.pem"],
            "cannot read the private key file /nonexistent/key.pem",
        ),
        (
            &["--auth", "private_key_jwt"],
            "--auth private_key_jwt needs --private-key-file",
        ),
        (&["--key-id", "k1"], "--key-id and --alg go with"),
        (
            &["--auth", "post", "--client-assertion-file", "/tmp/x"],
            "--client-assertion-file is a client authentication of its own",
        ),
        (
            &["--auth", "post", "--private-key-file", &es256],
            "--private-key-file goes with --auth private_key_jwt",
        ),
        (&["--auth", "bogus"], "--auth takes basic, post"),
    ];
    for (args, message) in cases {
        let mut cmd = token_cmd(&authority, "svc", args);
        cmd.env(SECRET_ENV, SECRET);
        let out = run(cmd, WHAT, RUN_LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        for name in [
            "test-es256.pem",
            "test-es256-encrypted.pem",
            "test-rsa1024.pem",
        ] {
            let pem = std::fs::read_to_string(key_path(name)).unwrap();
            assert_no_key_material(&out.stderr, &pem, &format!("{args:?}"));
        }
    }
    assert_eq!(authority.token_requests(), 0);
}
