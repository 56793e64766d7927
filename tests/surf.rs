//! The surf HTTP client (with surf's curl backend, which compiles no tokio)
//! against the in-process authority.
#![cfg(feature = "surf")]

use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority};
use tokenkeeper::oauth2::{
    ClientCredentials, ErrorCode, HttpErrorKind, SurfClient, TokenEndpoint, TokenRequestError,
};
use tokenkeeper::{
    ClientId, ClientSecret, ErrorKind, FetchContext, LifetimePolicy, SourceError, SystemClock,
    Token, TokenSource,
};

fn source(url: String) -> ClientCredentials {
    let endpoint = TokenEndpoint::builder(url, ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .http_client(SurfClient::new(surf::Client::new()))
        .build()
        .unwrap();
    ClientCredentials::new(endpoint)
}

fn fetch(source: &mut ClientCredentials) -> Result<Token, SourceError> {
    block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
}

fn request_error(e: &SourceError) -> &TokenRequestError {
    e.cause().and_then(|c| c.downcast_ref()).unwrap()
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
