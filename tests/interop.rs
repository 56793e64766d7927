//! Interop against real OAuth2 servers from npm (pinned in
//! `interop/package.json`), started on 127.0.0.1 and spoken to over real
//! HTTP with the default `UreqClient` (crates/surf-tests/tests/interop.rs
//! does the same with `SurfClient`, on the servers of
//! `common/interop_servers.rs`): `oauth2-mock-server`, started by
//! `interop/server.js`, for secrets and refresh tokens; and the OpenID provider `oidc-provider`,
//! started by `interop/oidc-provider.js`, which verifies client assertions
//! itself (`private_key_jwt` with ES256 and RS256, `client_secret_jwt`), for
//! those and for discovery.
//!
//! `interop/server.js` tightens the stock server: it authenticates the one
//! configured client by exactly one of `client_secret_basic` (form-decoding
//! the Basic credentials, RFC 6749 §2.3.1) and `client_secret_post`, accepts
//! only form bodies, and makes refresh tokens one-time (a refresh token is
//! accepted once, and only if the server issued it). Each JWT it issues
//! records what it saw (`client_id`, `client_auth`, `grant_type`), which the
//! tests read back out of the token.
//!
//! Install the servers with `npm ci --prefix interop` (Node.js 20.19+;
//! `.ci/run` does it). Without Node.js or `interop/node_modules` the tests
//! are reported as ignored, with the reason; with `CI=true` they fail
//! instead (the harness is `common::harness`). They need the `ureq` feature
//! (on by default; required in Cargo.toml).

mod common;
// Not in `common`'s list: it needs the `ureq` feature, which this file
// requires and the others may lack.
#[path = "common/interop_servers.rs"]
mod interop_servers;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::harness::{add_tests, Harness, Needs};
use futures_lite::future;
use interop_servers::*;
use serde_json::Value;
#[cfg(feature = "jwt")]
use tokenkeeper::oauth2::DpopKey;
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, ConfigError, Discovery, ErrorCode, PrivateKey,
    RefreshTokenGrant, ServerMetadata, TokenEndpoint,
};
use tokenkeeper::{ErrorKind, RefreshToken, Token, TokenManager};

fn main() {
    let server = Needs::new("the interop server", unavailable("oauth2-mock-server"));
    let oidc = Needs::new("the OpenID provider", unavailable("oidc-provider"));
    let mut harness = Harness::from_args();
    #[cfg(feature = "jwt")]
    add_tests!(harness needing oidc;
        oidc_private_key_jwt_with_es256_and_rs256_from_discovery,
        oidc_client_secret_jwt_from_discovery,
        oidc_verifies_what_it_receives,
        oidc_discovery_checks_the_auth_method_at_build_time,
        oidc_the_manager_keeps_a_private_key_jwt_token,
        oidc_dpop_client_credentials_tokens_are_bound_to_the_key,
        oidc_dpop_nonce_challenge_is_answered_and_the_nonce_kept,
    );
    #[cfg(not(feature = "jwt"))]
    drop(oidc);
    add_tests!(harness needing server;
        client_credentials_with_client_secret_basic_and_scope,
        client_credentials_with_client_secret_post_and_scope,
        a_wrong_secret_is_a_permanent_invalid_client,
        refresh_token_grant_follows_rotation,
        refresh_token_grant_with_post_auth_and_scope,
        the_manager_publishes_the_servers_tokens,
    );
    harness.run()
}

// ---------------------------------------------------------------------------
// Client credentials
// ---------------------------------------------------------------------------

fn client_credentials(auth: AuthMethod, wire_name: &str) {
    let server = Server::start();
    let scope = "orders:read orders:write";
    let mut source = ClientCredentials::new(server.endpoint(auth)).scope(scope);
    let token = fetch(&mut source).expect("a token from the server");
    let claims = check_access_token(&server, &token);
    assert_eq!(claims["client_auth"], wire_name, "{claims}");
    assert_eq!(claims["grant_type"], "client_credentials", "{claims}");
    assert_eq!(claims["scope"], scope, "{claims}");
    // The server echoes the scope in the response.
    assert_eq!(token.scope(), Some(scope));
    // Client credentials come without a refresh token (RFC 6749 §4.4.3).
    assert!(token.refresh_token().is_none());
}

fn client_credentials_with_client_secret_basic_and_scope() {
    client_credentials(AuthMethod::ClientSecretBasic, "client_secret_basic");
}

fn client_credentials_with_client_secret_post_and_scope() {
    client_credentials(AuthMethod::ClientSecretPost, "client_secret_post");
}

fn a_wrong_secret_is_a_permanent_invalid_client() {
    let server = Server::start();
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let mut source =
            ClientCredentials::new(server.endpoint_with_secret(auth, "not the secret"));
        let error = fetch(&mut source).expect_err("a wrong secret is refused");
        assert_eq!(oauth2_code(&error), ErrorCode::InvalidClient, "{auth:?}");
        assert_eq!(error.kind(), ErrorKind::Permanent, "{auth:?}");
        assert!(!error.to_string().contains("not the secret"), "{error}");
    }
}

// ---------------------------------------------------------------------------
// Refresh tokens
// ---------------------------------------------------------------------------

fn refresh_token_grant_follows_rotation() {
    let server = Server::start();
    let scope = "openid orders:read";
    let original = server.password_grant(scope);
    let mut grant = RefreshTokenGrant::new(
        server.endpoint(AuthMethod::ClientSecretBasic),
        RefreshToken::new(original.clone()),
    );

    let first = fetch(&mut grant).expect("the first refresh");
    let claims = check_access_token(&server, &first);
    assert_eq!(claims["grant_type"], "refresh_token", "{claims}");
    assert_eq!(claims["client_auth"], "client_secret_basic", "{claims}");
    // Without `scope` the refresh keeps the granted scope (RFC 6749 §6).
    assert_eq!(first.scope(), Some(scope));
    let id_token = first.id_token().expect("the server sends an ID token");
    assert_eq!(server.claims(id_token.secret())["aud"], CLIENT_ID);
    // The server rotated: a new refresh token, on the token and in the grant.
    let rotated = refresh_secret(&first).to_owned();
    assert_ne!(rotated, original, "the server rotates refresh tokens");
    assert_eq!(grant.refresh_token().secret(), rotated);

    // The server accepts each refresh token once, so this succeeds only if
    // the grant redeems the rotated one, not the original.
    let second = fetch(&mut grant).expect("the second refresh redeems the rotated token");
    check_access_token(&server, &second);
    let newest = refresh_secret(&second).to_owned();
    assert_ne!(newest, rotated);
    assert_ne!(newest, original);
    assert_eq!(grant.refresh_token().secret(), newest);

    // The redeemed ones are dead: reusing one is a permanent invalid_grant.
    for used in [original, rotated] {
        let mut stale = RefreshTokenGrant::new(
            server.endpoint(AuthMethod::ClientSecretPost),
            RefreshToken::new(used.clone()),
        );
        let error = fetch(&mut stale).expect_err("a used refresh token is refused");
        assert_eq!(oauth2_code(&error), ErrorCode::InvalidGrant);
        assert_eq!(error.kind(), ErrorKind::Permanent);
        assert!(!error.to_string().contains(&used), "{error}");
        // A failed redemption leaves the grant's refresh token alone.
        assert_eq!(stale.refresh_token().secret(), used);
    }
}

fn refresh_token_grant_with_post_auth_and_scope() {
    let server = Server::start();
    let original = server.password_grant("openid orders:read orders:write");
    let endpoint = server.endpoint(AuthMethod::ClientSecretPost);

    // A narrower scope is granted and echoed.
    let mut grant =
        RefreshTokenGrant::new(endpoint.clone(), RefreshToken::new(original)).scope("orders:read");
    let token = fetch(&mut grant).expect("a narrower scope");
    let claims = check_access_token(&server, &token);
    assert_eq!(claims["client_auth"], "client_secret_post", "{claims}");
    assert_eq!(claims["scope"], "orders:read", "{claims}");
    assert_eq!(token.scope(), Some("orders:read"));

    // A broader one is a permanent invalid_scope; the refresh token survives.
    let live = grant.refresh_token().clone();
    let mut broader = RefreshTokenGrant::new(endpoint, live.clone()).scope("orders:delete");
    let error = fetch(&mut broader).expect_err("a broader scope is refused");
    assert_eq!(oauth2_code(&error), ErrorCode::InvalidScope);
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert_eq!(broader.refresh_token().secret(), live.secret());
}

// ---------------------------------------------------------------------------
// Through the manager
// ---------------------------------------------------------------------------

fn the_manager_publishes_the_servers_tokens() {
    let server = Server::start();
    let original = server.password_grant("openid orders:read");
    let client_credentials =
        ClientCredentials::new(server.endpoint(AuthMethod::ClientSecretBasic)).scope("orders:read");
    let refresh = RefreshTokenGrant::new(
        server.endpoint(AuthMethod::ClientSecretPost),
        RefreshToken::new(original.clone()),
    );

    smol::block_on(future::or(
        async {
            // Client credentials.
            let (handle, driver) = TokenManager::builder(client_credentials).build();
            let driver = smol::spawn(driver);
            let token = handle.token().await.expect("a token from the server");
            let claims = check_access_token(&server, &token);
            assert_eq!(claims["grant_type"], "client_credentials", "{claims}");
            assert_eq!(token.scope(), Some("orders:read"));
            let current = handle.current().expect("the published token");
            assert_eq!(*current, *token);
            handle.shutdown().await;
            driver.await;

            // Refresh tokens, rotated through a forced refresh.
            let (handle, driver) = TokenManager::builder(refresh)
                .forced_refresh_interval(Duration::ZERO)
                .build();
            let driver = smol::spawn(driver);
            let first = handle
                .token()
                .await
                .expect("a token from the refresh grant");
            let claims = check_access_token(&server, &first);
            assert_eq!(claims["grant_type"], "refresh_token", "{claims}");
            assert_eq!(claims["client_auth"], "client_secret_post", "{claims}");
            let rotated = refresh_secret(&first).to_owned();
            assert_ne!(rotated, original);
            // As if an API had answered 401: the manager refreshes once more,
            // redeeming the rotated token (the server refuses the original).
            let second = handle
                .refresh_rejected(&first)
                .await
                .expect("a token from the second refresh");
            check_access_token(&server, &second);
            let newest = refresh_secret(&second).to_owned();
            assert_ne!(newest, rotated);
            assert_ne!(newest, original);
            assert_eq!(
                handle.current().as_deref().map(refresh_secret),
                Some(newest.as_str())
            );
            let state = handle.state();
            assert_eq!(state.refreshes, 2, "{state:?}");
            assert_eq!(state.consecutive_failures, 0, "{state:?}");
            assert!(state.last_error.is_none(), "{state:?}");
            handle.shutdown().await;
            driver.await;
        },
        async {
            async_io::Timer::after(OVERALL).await;
            panic!("the manager scenario took over {OVERALL:?}");
        },
    ));
}

// ---------------------------------------------------------------------------
// oidc-provider: signed client assertions and discovery
// ---------------------------------------------------------------------------

/// The secret of the provider's `csjwt` and `basic` clients.
#[cfg(feature = "jwt")]
const OIDC_SECRET: &str = "interop client_secret_jwt secret: a/b+c%d, 32+ bytes";
/// The resource the provider's access tokens are for.
#[cfg(feature = "jwt")]
const OIDC_RESOURCE: &str = "urn:tokenkeeper:interop";
/// What its access tokens live.
#[cfg(feature = "jwt")]
const OIDC_TTL_S: u64 = 60;

#[cfg(feature = "jwt")]
fn test_key(file: &str) -> PrivateKey {
    PrivateKey::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/keys")
            .join(file),
    )
    .expect("a test key")
}

/// A running `node interop/oidc-provider.js`, whose `pkjwt-es256` and
/// `pkjwt-rs256` clients have the public keys of `test-es256.pem` and
/// `test-rsa2048.pem` (the latter under the key id `interop-rs256`).
#[cfg(feature = "jwt")]
struct Oidc {
    _node: NodeProcess,
    issuer: String,
}

#[cfg(feature = "jwt")]
impl Oidc {
    fn start() -> Oidc {
        let es256 = test_key("test-es256.pem").public_jwk();
        // With a kid: the provider picks the key a header's kid names.
        let rs256 = test_key("test-rsa2048.pem")
            .with_key_id("interop-rs256")
            .public_jwk();
        let ttl = OIDC_TTL_S.to_string();
        let node = NodeProcess::start(
            "oidc-provider.js",
            &[
                ("INTEROP_ES256_JWK", &es256),
                ("INTEROP_RS256_JWK", &rs256),
                ("INTEROP_CLIENT_SECRET", OIDC_SECRET),
                ("INTEROP_TTL", &ttl),
            ],
        );
        Oidc {
            issuer: node.field("issuer"),
            _node: node,
        }
    }

    /// The provider's metadata, discovered.
    fn metadata(&self) -> ServerMetadata {
        run(Discovery::new(self.issuer.as_str()).fetch()).expect("the provider's metadata")
    }
}

/// The claims of a JWT, unverified.
#[cfg(feature = "jwt")]
fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Checks an access token the provider issued to `client`.
#[cfg(feature = "jwt")]
fn check_oidc_token(oidc: &Oidc, token: &Token, client: &str, scope: &str) {
    assert!(token.token_type().eq_ignore_ascii_case("bearer"));
    assert_eq!(token.expiry_ms() - token.issued_ms(), OIDC_TTL_S * 1000);
    assert_eq!(token.scope(), Some(scope));
    let claims = jwt_claims(token.access_token().secret());
    assert_eq!(claims["client_id"], client, "{claims}");
    assert_eq!(claims["iss"], oidc.issuer.as_str(), "{claims}");
    assert_eq!(claims["aud"], OIDC_RESOURCE, "{claims}");
    assert_eq!(claims["scope"], scope, "{claims}");
}

#[cfg(feature = "jwt")]
fn oidc_private_key_jwt_with_es256_and_rs256_from_discovery() {
    let oidc = Oidc::start();
    let metadata = oidc.metadata();
    assert_eq!(metadata.issuer(), oidc.issuer);
    assert_eq!(metadata.token_endpoint(), format!("{}/token", oidc.issuer));
    for (client, file, alg) in [
        ("pkjwt-es256", "test-es256.pem", "ES256"),
        ("pkjwt-rs256", "test-rsa2048.pem", "RS256"),
    ] {
        let key = test_key(file);
        assert_eq!(key.algorithm().as_str(), alg);
        let endpoint = TokenEndpoint::from_metadata(&metadata, client)
            .private_key_jwt(key)
            .build()
            .expect("the provider lists private_key_jwt and the algorithm");
        let mut source = ClientCredentials::new(endpoint).scope("api:read");
        // Twice: each request's assertion has its own jti (the provider
        // refuses a replay).
        for _ in 0..2 {
            let token = fetch(&mut source).unwrap_or_else(|e| panic!("{client}: {e}"));
            check_oidc_token(&oidc, &token, client, "api:read");
        }
    }
}

#[cfg(feature = "jwt")]
fn oidc_client_secret_jwt_from_discovery() {
    let oidc = Oidc::start();
    let endpoint = run(TokenEndpoint::discover(oidc.issuer.as_str(), "csjwt"))
        .expect("discovery")
        .client_secret_jwt(OIDC_SECRET)
        .build()
        .unwrap();
    let mut source = ClientCredentials::new(endpoint).scope("api:read api:write");
    for _ in 0..2 {
        let token = fetch(&mut source).expect("a token for a client_secret_jwt assertion");
        check_oidc_token(&oidc, &token, "csjwt", "api:read api:write");
    }
    // A secret the provider does not know makes a signature it refuses.
    let endpoint = TokenEndpoint::from_metadata(&oidc.metadata(), "csjwt")
        .client_secret_jwt("not the secret, but 32 bytes long or more")
        .build()
        .unwrap();
    let error = fetch(&mut ClientCredentials::new(endpoint)).expect_err("a bad signature");
    assert_eq!(oauth2_code(&error), ErrorCode::InvalidClient);
    assert_eq!(error.kind(), ErrorKind::Permanent);
}

#[cfg(feature = "jwt")]
fn oidc_verifies_what_it_receives() {
    let oidc = Oidc::start();
    let metadata = oidc.metadata();
    let refused = |client: &str, auth: ClientAuth, audience: Option<&str>| {
        let mut builder = TokenEndpoint::from_metadata(&metadata, client).client_auth(auth);
        if let Some(audience) = audience {
            builder = builder.assertion_audience(audience);
        }
        let error = fetch(&mut ClientCredentials::new(builder.build().unwrap()))
            .expect_err("the provider refuses it");
        assert_eq!(
            oauth2_code(&error),
            ErrorCode::InvalidClient,
            "{client}: {error}"
        );
    };
    // Signed for another audience.
    refused(
        "pkjwt-es256",
        ClientAuth::PrivateKeyJwt(test_key("test-es256.pem")),
        Some("https://elsewhere.example"),
    );
    // Another key than the one registered (and another algorithm).
    refused(
        "pkjwt-rs256",
        ClientAuth::PrivateKeyJwt(test_key("test-es256.pem")),
        None,
    );
    refused(
        "pkjwt-es256",
        ClientAuth::PrivateKeyJwt(test_key("test-ed25519.pem")),
        None,
    );
    // The registered key under another key id.
    refused(
        "pkjwt-rs256",
        ClientAuth::PrivateKeyJwt(test_key("test-rsa2048.pem").with_key_id("another-key")),
        None,
    );
    // The token endpoint URL is an audience the provider accepts too.
    let endpoint = TokenEndpoint::from_metadata(&metadata, "pkjwt-es256")
        .private_key_jwt(test_key("test-es256.pem"))
        .assertion_audience(metadata.token_endpoint())
        .build()
        .unwrap();
    let token = fetch(&mut ClientCredentials::new(endpoint).scope("api:read")).unwrap();
    check_oidc_token(&oidc, &token, "pkjwt-es256", "api:read");
}

#[cfg(feature = "jwt")]
fn oidc_discovery_checks_the_auth_method_at_build_time() {
    let oidc = Oidc::start();
    let metadata = oidc.metadata();
    assert!(metadata.supports_auth_method(AuthMethod::PrivateKeyJwt));
    // The provider does not list client_secret_post.
    let error = TokenEndpoint::from_metadata(&metadata, "basic")
        .client_secret_post(OIDC_SECRET)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::AuthMethodNotSupported {
                method: AuthMethod::ClientSecretPost,
                ..
            }
        ),
        "{error:?}"
    );
    // client_secret_basic it does.
    let endpoint = TokenEndpoint::from_metadata(&metadata, "basic")
        .client_secret(OIDC_SECRET)
        .build()
        .unwrap();
    let token = fetch(&mut ClientCredentials::new(endpoint).scope("api:write")).unwrap();
    check_oidc_token(&oidc, &token, "basic", "api:write");
}

#[cfg(feature = "jwt")]
fn oidc_the_manager_keeps_a_private_key_jwt_token() {
    let oidc = Oidc::start();
    let endpoint = TokenEndpoint::from_metadata(&oidc.metadata(), "pkjwt-rs256")
        .private_key_jwt(test_key("test-rsa2048.pem").with_key_id("interop-rs256"))
        .build()
        .unwrap();
    let source = ClientCredentials::new(endpoint).scope("api:read");
    run(async {
        let (handle, driver) = TokenManager::builder(source)
            .forced_refresh_interval(Duration::ZERO)
            .build();
        let driver = smol::spawn(driver);
        let first = handle.token().await.expect("a token");
        check_oidc_token(&oidc, &first, "pkjwt-rs256", "api:read");
        // As after a 401: a new assertion, a new token.
        let second = handle
            .refresh_rejected(&first)
            .await
            .expect("a second token");
        check_oidc_token(&oidc, &second, "pkjwt-rs256", "api:read");
        assert_ne!(first.access_token(), second.access_token());
        handle.shutdown().await;
        driver.await;
    });
}

// ---------------------------------------------------------------------------
// DPoP (RFC 9449, issue 19)
// ---------------------------------------------------------------------------

/// A client-credentials source of the provider's `client` (registered
/// with `client_secret_basic` and `dpop_bound_access_tokens`), its tokens
/// bound to `key`.
#[cfg(feature = "jwt")]
fn dpop_source(oidc: &Oidc, client: &str, key: &DpopKey) -> ClientCredentials {
    let endpoint = TokenEndpoint::from_metadata(&oidc.metadata(), client)
        .client_secret(OIDC_SECRET)
        .dpop(key.clone())
        .build()
        .unwrap();
    ClientCredentials::new(endpoint).scope("api:read")
}

/// `token` is the provider's, for `client`, and bound to `key`.
#[cfg(feature = "jwt")]
fn check_bound(token: &Token, client: &str, key: &DpopKey) {
    assert_eq!(token.token_type(), "DPoP");
    let claims = jwt_claims(token.access_token().secret());
    assert_eq!(claims["client_id"], client, "{claims}");
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint(), "{claims}");
}

#[cfg(feature = "jwt")]
fn oidc_dpop_client_credentials_tokens_are_bound_to_the_key() {
    let oidc = Oidc::start();
    for key in [
        DpopKey::generate().unwrap(),
        DpopKey::generate_ed25519().unwrap(),
    ] {
        let mut source = dpop_source(&oidc, "dpop", &key);
        // Twice: each request has a proof of its own (the provider refuses
        // a replayed jti).
        for _ in 0..2 {
            let token = fetch(&mut source).expect("a DPoP-bound token");
            check_bound(&token, "dpop", &key);
        }
    }
    // The client's tokens must be bound: without a proof it gets none.
    let endpoint = TokenEndpoint::from_metadata(&oidc.metadata(), "dpop")
        .client_secret(OIDC_SECRET)
        .build()
        .unwrap();
    let error = fetch(&mut ClientCredentials::new(endpoint)).expect_err("a proof is required");
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
}

#[cfg(feature = "jwt")]
fn oidc_dpop_nonce_challenge_is_answered_and_the_nonce_kept() {
    let oidc = Oidc::start();
    let key = DpopKey::generate().unwrap();
    let source = dpop_source(&oidc, "dpop-nonce", &key);
    run(async {
        let (handle, driver) = TokenManager::builder(source)
            .forced_refresh_interval(Duration::ZERO)
            .build();
        let driver = smol::spawn(driver);
        // The first request is answered `use_dpop_nonce`; the retry with
        // the nonce gets the token.
        let first = handle
            .token()
            .await
            .expect("a token after the nonce challenge");
        check_bound(&first, "dpop-nonce", &key);
        let second = handle
            .refresh_rejected(&first)
            .await
            .expect("a second token, with the nonce kept");
        check_bound(&second, "dpop-nonce", &key);
        assert_ne!(first.access_token(), second.access_token());
        let headers = handle
            .authorization("GET", "https://api.example.com/orders")
            .await
            .unwrap();
        assert_eq!(
            headers.authorization(),
            format!("DPoP {}", second.access_token().secret())
        );
        assert!(headers.is_dpop());
        assert_eq!(handle.state().source_requests, 2, "{:?}", handle.state());
        handle.shutdown().await;
        driver.await;
    });
}
