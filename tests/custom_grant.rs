//! `oauth2::CustomGrant` against the in-process authority over real HTTP:
//! any grant type goes through a `TokenEndpoint` with its client
//! authentication, timeouts, error parsing and scrubbing, and has a cache
//! key of its own.
#![cfg(feature = "ureq")]

mod echo_secrets;

use echo_secrets::{assert_clean, encodings, printed, SHAPES};
use futures_lite::future::block_on;
use local_authority::{EchoPart, Fault, LocalAuthority};
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, CustomGrant, ErrorCode, HttpErrorKind, TokenEndpoint, TokenRequestError,
};
use tokenkeeper::{
    ClientId, ClientSecret, ErrorKind, FetchContext, LifetimePolicy, SourceError, SystemClock,
    Token, TokenSource,
};

const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn endpoint(authority: &LocalAuthority, auth: AuthMethod) -> TokenEndpoint {
    TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_auth(ClientAuth::with_secret(auth, ClientSecret::new("secret-a")).unwrap())
        .build()
        .unwrap()
}

fn fetch(source: &mut dyn TokenSource) -> Result<Token, SourceError> {
    block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
}

fn request_error(e: &SourceError) -> &TokenRequestError {
    e.cause()
        .and_then(|c| c.downcast_ref::<TokenRequestError>())
        .unwrap_or_else(|| panic!("no TokenRequestError in {e:?}"))
}

#[test]
fn a_custom_grant_sends_its_type_and_parameters_with_the_endpoint_s_authentication() {
    let authority = LocalAuthority::start().unwrap();
    authority.allow_grant_type(DEVICE_CODE);
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let mut grant = CustomGrant::new(endpoint(&authority, auth), DEVICE_CODE)
            .secret_param("device_code", "dc-123")
            .param("resource", "https://a.example")
            .param("resource", "https://b.example")
            .scope("tv:watch")
            // Set by the grant or the endpoint: ignored here.
            .param("grant_type", "client_credentials")
            .param("client_id", "someone-else")
            .secret_param("client_secret", "not-ours")
            .param("scope", "admin");
        assert_eq!(grant.grant_type(), DEVICE_CODE);
        let token = fetch(&mut grant).unwrap();
        assert!(authority.is_valid_access_token(token.access_token().secret()));
        assert_eq!(token.scope(), Some("tv:watch"));

        let request = authority.requests().pop().unwrap();
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let mut expected = vec![
            ("grant_type", DEVICE_CODE),
            ("scope", "tv:watch"),
            ("device_code", "dc-123"),
            ("resource", "https://a.example"),
            ("resource", "https://b.example"),
        ];
        if auth == AuthMethod::ClientSecretPost {
            expected.extend([("client_id", "client-a"), ("client_secret", "secret-a")]);
            assert_eq!(request.header("authorization"), None);
        } else {
            assert!(request
                .header("authorization")
                .unwrap()
                .starts_with("Basic "));
        }
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(request.form(), expected, "{auth:?}");
    }
}

#[test]
fn the_authority_s_errors_and_timeouts_come_typed() {
    let authority = LocalAuthority::start().unwrap();
    // Not allowed: the authority answers unsupported_grant_type.
    let mut grant = CustomGrant::new(
        endpoint(&authority, AuthMethod::ClientSecretBasic),
        "urn:example:unknown",
    );
    let e = fetch(&mut grant).unwrap_err();
    match request_error(&e) {
        TokenRequestError::OAuth2(error) => {
            assert_eq!(error.code(), &ErrorCode::UnsupportedGrantType)
        }
        other => panic!("expected an OAuth2 error, got {other:?}"),
    }
    assert_eq!(e.kind(), ErrorKind::Permanent);

    // A wrong client secret fails the same way as for any grant.
    authority.allow_grant_type("urn:example:unknown");
    let wrong = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("wrong"))
        .build()
        .unwrap();
    let e = fetch(&mut CustomGrant::new(wrong, "urn:example:unknown")).unwrap_err();
    assert!(
        matches!(request_error(&e), TokenRequestError::OAuth2(o) if o.code() == &ErrorCode::InvalidClient),
        "{e:?}"
    );

    // The request gives up before the manager's deadline.
    authority.push_fault(Fault::Hang);
    let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
    let cx = cx.clone().with_deadline_ms(cx.now_ms() + 1_000);
    let e = block_on(grant.fetch(cx)).unwrap_err();
    match request_error(&e) {
        TokenRequestError::Http(h) => assert_eq!(h.kind(), HttpErrorKind::Timeout, "{h}"),
        other => panic!("expected an HTTP timeout, got {other:?}"),
    }
}

#[test]
fn each_grant_has_a_cache_key_of_its_own() {
    let authority = LocalAuthority::start().unwrap();
    let endpoint = endpoint(&authority, AuthMethod::ClientSecretBasic);
    let key = |grant: CustomGrant| grant.cache_key().unwrap();
    let base = || CustomGrant::new(endpoint.clone(), DEVICE_CODE).secret_param("device_code", "a");
    assert_eq!(key(base()), key(base()));
    let others = [
        CustomGrant::new(endpoint.clone(), "urn:example:other").secret_param("device_code", "a"),
        CustomGrant::new(endpoint.clone(), DEVICE_CODE).secret_param("device_code", "b"),
        base().scope("s"),
        base().param("audience", "x"),
    ];
    for other in others {
        assert_ne!(key(base()), key(other.clone()), "{other:?}");
    }
    // Not the client secret: a rotated secret keeps the cached token.
    let rotated = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("rotated"))
        .build()
        .unwrap();
    assert_eq!(
        key(base()),
        key(CustomGrant::new(rotated, DEVICE_CODE).secret_param("device_code", "a"))
    );
    // Ignored parameters are not part of it either.
    assert_eq!(key(base()), key(base().param("grant_type", "x")));
}

const CLIENT_ID: &str = "echo client";
const SECRET: &str = "p@ss+w/rd=%&x y\"\\é€";
/// A credential under a name the library knows nothing about.
const PROOF: &str = "pr/+=%& y\"\\ö€-proof";
/// A credential under a name the library knows as one.
const DEVICE: &str = "dc/+=%& y\"\\ä€-device";

#[test]
fn secret_params_never_come_back_through_an_echo() {
    let authority = LocalAuthority::start().unwrap();
    authority.add_client(CLIENT_ID, SECRET);
    let mut forbidden = encodings(Some(CLIENT_ID), SECRET);
    forbidden.extend(encodings(None, PROOF));
    forbidden.extend(encodings(None, DEVICE));
    let mut redacted = 0;
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new(CLIENT_ID))
            .client_auth(ClientAuth::with_secret(auth, ClientSecret::new(SECRET)).unwrap())
            .build()
            .unwrap();
        let mut grant = CustomGrant::new(endpoint, "urn:example:proof")
            .secret_param("proof", PROOF)
            .param("device_code", DEVICE)
            .param("plain", "shown-as-is");
        // Debug names the grant and its parameters, never a value.
        let debug = format!("{grant:?}");
        assert!(
            !debug.contains("pr/") && !debug.contains("shown-as-is"),
            "{debug}"
        );
        assert!(
            debug.contains("urn:example:proof") && debug.contains("\"proof\""),
            "{debug}"
        );
        for (status, shape) in SHAPES {
            for part in [
                EchoPart::Request,
                EchoPart::Body,
                EchoPart::DecodedForm,
                EchoPart::ReencodedForm,
            ] {
                authority.push_fault(Fault::echo(status, part, shape));
                let text = printed(&fetch(&mut grant));
                let context = format!("{auth:?} {status} {part:?} {shape:?}");
                assert_clean(&forbidden, &text, &context);
                redacted += usize::from(text.contains("<redacted>"));
            }
        }
    }
    assert!(redacted >= 40, "only {redacted} outputs needed scrubbing");
}
