//! Checks of an `HttpClient` against the in-process authority that every
//! client must pass, shared by the tests of `UreqClient` here and those of
//! `SurfClient` in crates/surf-tests (which include this file through
//! `#[path]`): one fetch outside a manager, the largest body read, the
//! network error an unknown host gives, the JSON body the authority got.

use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority};
use serde_json::Value;
use tokenkeeper::oauth2::{
    ClientCredentials, HttpClient, HttpErrorKind, TokenEndpoint, TokenRequestError,
};
use tokenkeeper::{
    ClientId, ClientSecret, ErrorKind, FetchContext, LifetimePolicy, SourceError, SystemClock,
    Token, TokenSource,
};

/// One fetch from `source`, outside any manager, on the system clock.
pub fn fetch(source: &mut (impl TokenSource + ?Sized)) -> Result<Token, SourceError> {
    block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
}

/// The typed error of a failed token request.
pub fn request_error(e: &SourceError) -> &TokenRequestError {
    e.request_error()
        .unwrap_or_else(|| panic!("no TokenRequestError in {e:?}"))
}

/// A token response of exactly `len` bytes (spaces pad it).
pub fn response_of_len(len: usize) -> String {
    let body = r#"{"access_token":"sized","expires_in":60}"#;
    format!("{body}{}", " ".repeat(len - body.len()))
}

/// Client credentials on the authority through `http`, reading at most
/// `max` bytes of a response body.
pub fn sized_endpoint(
    authority: &LocalAuthority,
    http: impl HttpClient,
    max: usize,
) -> ClientCredentials {
    ClientCredentials::new(
        TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
            .client_secret(ClientSecret::new("secret-a"))
            .http_client(http)
            .max_body(max)
            .build()
            .unwrap(),
    )
}

/// A body of `max_body` bytes is read; one byte more is refused.
pub fn assert_max_body_is_the_largest_read(
    authority: &LocalAuthority,
    source: &mut ClientCredentials,
    max: usize,
) {
    authority.push_fault(Fault::json(200, &response_of_len(max)));
    let token = fetch(source).unwrap();
    assert_eq!(token.access_token().secret(), "sized");
    authority.push_fault(Fault::json(200, &response_of_len(max + 1)));
    let e = fetch(source).unwrap_err();
    assert!(
        matches!(request_error(&e), TokenRequestError::Http(h) if h.kind() == HttpErrorKind::BodyTooLarge),
        "{e:?}"
    );
}

/// Fails the fetch with the kind of network error that `url` gives.
pub fn http_error_kind(url: &str, http: impl HttpClient) -> HttpErrorKind {
    let endpoint = TokenEndpoint::builder(url, ClientId::new("id"))
        .client_secret(ClientSecret::new("secret"))
        .http_client(http)
        .build()
        .unwrap();
    let e = fetch(&mut ClientCredentials::new(endpoint)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    match request_error(&e) {
        TokenRequestError::Http(h) => h.kind(),
        other => panic!("expected a network error, got {other:?}"),
    }
}

/// The body of the authority's last request, parsed as JSON, after
/// checking that it was sent and asked for as JSON.
pub fn last_json(authority: &LocalAuthority) -> Value {
    let request = authority.requests().pop().unwrap();
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("accept"), Some("application/json"));
    serde_json::from_str(&request.body).unwrap()
}
