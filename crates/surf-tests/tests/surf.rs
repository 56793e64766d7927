//! The surf HTTP client (`SurfClient`, with surf's curl backend, which
//! compiles no tokio) against the in-process authority: tokens and OAuth2
//! errors, network errors, the largest body read, JSON bodies, discovery.

#[path = "../../../tests/common/mod.rs"]
mod common;

use common::http_checks::{
    assert_max_body_is_the_largest_read, fetch, http_error_kind, last_json, request_error,
    sized_endpoint,
};
use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority};
use serde_json::json;
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, Discovery, ErrorCode, HttpErrorKind, RequestBody,
    SurfClient, TokenEndpoint, TokenRequestError,
};
use tokenkeeper::{ClientId, ClientSecret, ErrorKind};

fn surf() -> SurfClient {
    SurfClient::new(surf::Client::new())
}

fn source(url: String) -> ClientCredentials {
    let endpoint = TokenEndpoint::builder(url, ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .http_client(surf())
        .build()
        .unwrap();
    ClientCredentials::new(endpoint)
}

#[test]
fn surf_fetches_tokens_and_reports_oauth_errors() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = source(authority.token_url());
    let token = fetch(&mut source).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert!(authority.requests()[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));

    authority.push_fault(Fault::oauth_error(401, "invalid_client", "nope"));
    let e = fetch(&mut source).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert_eq!(request_error(&e).code(), Some(&ErrorCode::InvalidClient));

    authority.push_fault(Fault::Huge { len: 1 << 20 });
    let e = fetch(&mut source).unwrap_err();
    assert!(
        matches!(request_error(&e), TokenRequestError::Http(h) if h.kind() == HttpErrorKind::BodyTooLarge)
    );

    authority.push_fault(Fault::Reset);
    let e = fetch(&mut source).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert!(matches!(request_error(&e), TokenRequestError::Http(_)));
}

#[test]
fn surf_refused_connection_is_not_an_http_400() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = fetch(&mut source(format!("http://127.0.0.1:{port}/token"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    match request_error(&e) {
        TokenRequestError::Http(h) => assert_eq!(h.kind(), HttpErrorKind::Connect, "{h}"),
        other => panic!("a refused connection must be a network error, got {other:?}"),
    }
}

#[test]
fn surf_reads_a_body_of_exactly_max_body_bytes() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = sized_endpoint(&authority, surf(), 300);
    assert_max_body_is_the_largest_read(&authority, &mut source, 300);
}

#[test]
fn surf_reports_an_unknown_host_as_a_connect_error() {
    assert_eq!(
        http_error_kind("https://tokenkeeper-test.invalid/token", surf()),
        HttpErrorKind::Connect
    );
}

#[test]
fn surf_sends_the_json_content_type() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_json_only(true);
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .request_body(RequestBody::Json)
        .http_client(surf())
        .build()
        .unwrap();
    let token = fetch(&mut ClientCredentials::new(endpoint).scope("s")).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(
        last_json(&authority),
        json!({"grant_type": "client_credentials", "scope": "s"})
    );
}

#[test]
fn surf_discovers_too() {
    let authority = LocalAuthority::start().unwrap();
    authority.serve_metadata(false, true);
    let metadata = block_on(
        Discovery::new(authority.issuer())
            .http_client(surf())
            .max_attempts(1)
            .fetch(),
    )
    .unwrap();
    assert_eq!(metadata.token_endpoint(), authority.token_url());
    assert_eq!(authority.metadata_requests(), 2);
    assert!(authority.requests().iter().all(|r| r.method == "GET"));
}

/// Both ways of sending a client secret, with a secret that Basic must
/// form-urlencode before base64 (RFC 6749 §2.3.1): tests/interop.rs checks
/// the same against oauth2-mock-server, where Node.js is installed.
#[test]
fn surf_sends_a_secret_that_needs_encoding_by_basic_and_by_post() {
    const ID: &str = "surf client";
    const SECRET: &str = "surf secret: a/b+c%d";
    let authority = LocalAuthority::start().unwrap();
    authority.add_client(ID, SECRET);
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new(ID))
            .client_auth(ClientAuth::with_secret(auth, ClientSecret::new(SECRET)).unwrap())
            .http_client(surf())
            .build()
            .unwrap();
        let token = fetch(&mut ClientCredentials::new(endpoint)).expect("a token through surf");
        assert!(authority.is_valid_access_token(token.access_token().secret()));
        let request = authority.requests().pop().unwrap();
        let basic = request.header("authorization").map(str::to_owned);
        match auth {
            AuthMethod::ClientSecretBasic => {
                assert!(basic.unwrap().starts_with("Basic "));
                assert_eq!(request.form_value("client_secret"), None);
            }
            _ => {
                assert_eq!(basic, None);
                assert_eq!(request.form_value("client_secret").as_deref(), Some(SECRET));
            }
        }
    }
}
