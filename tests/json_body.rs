//! JSON request bodies (`RequestBody::Json`) against the in-process
//! authority over real HTTP: every grant sends the same parameters as a JSON
//! object, client_secret_post puts the credentials in it, an authority that
//! accepts only JSON is served, and nothing the body carries leaks back
//! through an echo.
#![cfg(feature = "ureq")]

mod common;
mod echo_secrets;

use common::http_checks::{fetch, last_json};
use echo_secrets::{assert_clean, encodings, printed, SHAPES};
use local_authority::{EchoPart, Fault, LocalAuthority};
use serde_json::json;
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, CustomGrant, ErrorCode, RefreshTokenGrant,
    RequestBody, TokenEndpoint, TokenRequestError,
};
use tokenkeeper::{ClientId, ClientSecret, RefreshToken, TokenSource};

fn endpoint(authority: &LocalAuthority, auth: AuthMethod, body: RequestBody) -> TokenEndpoint {
    TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_auth(ClientAuth::with_secret(auth, ClientSecret::new("secret-a")).unwrap())
        .request_body(body)
        .build()
        .unwrap()
}

#[test]
fn client_credentials_sends_its_parameters_as_a_json_object() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_json_only(true);
    let mut source = ClientCredentials::new(endpoint(
        &authority,
        AuthMethod::ClientSecretBasic,
        RequestBody::Json,
    ))
    .scope("read write")
    .audience("https://api.example")
    .resource("https://a.example")
    .resource("https://b.example")
    .param("tenant", "t1");
    let token = fetch(&mut source).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(token.scope(), Some("read write"));
    assert_eq!(
        last_json(&authority),
        json!({
            "grant_type": "client_credentials",
            "scope": "read write",
            "audience": "https://api.example",
            "resource": ["https://a.example", "https://b.example"],
            "tenant": "t1",
        })
    );
    // The credentials went in the Authorization header, not the body.
    let request = authority.requests().pop().unwrap();
    assert!(request
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));

    // A second fetch sends the same body (it is encoded once).
    fetch(&mut source).unwrap();
    assert_eq!(last_json(&authority)["resource"][1], "https://b.example");
}

#[test]
fn client_secret_post_puts_the_credentials_in_the_json_object() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_json_only(true);
    let mut source = ClientCredentials::new(endpoint(
        &authority,
        AuthMethod::ClientSecretPost,
        RequestBody::Json,
    ));
    fetch(&mut source).unwrap();
    assert_eq!(
        last_json(&authority),
        json!({
            "grant_type": "client_credentials",
            "client_id": "client-a",
            "client_secret": "secret-a",
        })
    );
    let request = authority.requests().pop().unwrap();
    assert_eq!(request.header("authorization"), None);
}

#[test]
fn the_refresh_token_and_custom_grants_send_json_too() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_json_only(true);
    let endpoint = endpoint(&authority, AuthMethod::ClientSecretPost, RequestBody::Json);

    let first = RefreshToken::new(authority.issue_refresh_token("client-a"));
    let mut refresh = RefreshTokenGrant::new(endpoint.clone(), first.clone());
    let token = fetch(&mut refresh).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    let body = last_json(&authority);
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(body["refresh_token"], first.secret());
    // Rotated, and the rotated one is redeemed next, in JSON.
    let rotated = token.refresh_token().unwrap().clone();
    fetch(&mut refresh).unwrap();
    assert_eq!(last_json(&authority)["refresh_token"], rotated.secret());

    authority.allow_grant_type("urn:example:grant");
    let mut custom = CustomGrant::new(endpoint, "urn:example:grant")
        .param("subject", "s-1")
        .secret_param("proof", "p-1");
    let token = fetch(&mut custom).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(
        last_json(&authority),
        json!({
            "grant_type": "urn:example:grant",
            "subject": "s-1",
            "proof": "p-1",
            "client_id": "client-a",
            "client_secret": "secret-a",
        })
    );
}

#[test]
fn a_json_only_authority_refuses_the_default_form() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_json_only(true);
    let mut form = ClientCredentials::new(endpoint(
        &authority,
        AuthMethod::ClientSecretBasic,
        RequestBody::Form,
    ));
    let err = fetch(&mut form).unwrap_err();
    let typed = err
        .cause()
        .and_then(|c| c.downcast_ref::<TokenRequestError>())
        .unwrap();
    assert!(
        matches!(typed, TokenRequestError::OAuth2(error) if error.code() == &ErrorCode::InvalidRequest),
        "{typed:?}"
    );
    let request = authority.requests().pop().unwrap();
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

const CLIENT_ID: &str = "echo client";
const SECRET: &str = "p@ss+w/rd=%&x y\"\\é€";
const REFRESH: &str = "rt/+=%& y\"\\ü€-refresh";
const PROOF: &str = "pr/+=%& y\"\\ö€-proof";

#[test]
fn secrets_in_a_json_body_never_come_back_through_an_echo() {
    let authority = LocalAuthority::start().unwrap();
    authority.add_client(CLIENT_ID, SECRET);
    let mut forbidden = encodings(Some(CLIENT_ID), SECRET);
    forbidden.extend(encodings(None, REFRESH));
    forbidden.extend(encodings(None, PROOF));
    let mut redacted = 0;
    for auth in [AuthMethod::ClientSecretPost, AuthMethod::ClientSecretBasic] {
        let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new(CLIENT_ID))
            .client_auth(ClientAuth::with_secret(auth, ClientSecret::new(SECRET)).unwrap())
            .request_body(RequestBody::Json)
            .build()
            .unwrap();
        let mut client = ClientCredentials::new(endpoint.clone()).param("assertion", PROOF);
        let mut refresh = RefreshTokenGrant::new(endpoint.clone(), RefreshToken::new(REFRESH));
        let mut custom =
            CustomGrant::new(endpoint, "urn:example:grant").secret_param("proof", PROOF);
        for (status, shape) in SHAPES {
            for part in [EchoPart::Request, EchoPart::Body, EchoPart::Authorization] {
                for source in [
                    &mut client as &mut dyn TokenSource,
                    &mut refresh,
                    &mut custom,
                ] {
                    authority.push_fault(Fault::echo(status, part, shape));
                    let text = printed(&fetch(source));
                    let context = format!("{auth:?} {status} {part:?} {shape:?}");
                    assert_clean(&forbidden, &text, &context);
                    redacted += usize::from(text.contains("<redacted>"));
                }
            }
        }
    }
    assert!(redacted >= 40, "only {redacted} outputs needed scrubbing");
}
