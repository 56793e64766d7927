//! Parsing token endpoint responses (RFC 6749 §5.1 and §5.2).
//!
//! Lenient where real servers differ from the RFC: `expires_in` may be a
//! number or a numeric string, `token_type` may be missing or in any case,
//! `scope` may be a list. Strict where safety matters: a success without a
//! usable `access_token` is an error, and so is an access token with
//! characters that cannot go into an HTTP header.
//!
//! Not part of the API: the endpoint parses its responses itself. With the
//! feature `test-support` the module is public (hidden from the docs) for
//! this crate's tests and the fuzz targets (`fuzz/`).

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::oauth2::error::{ErrorCode, OAuth2Error, TokenRequestError};
use crate::oauth2::scrub::Secrets;
use crate::time::duration_ms;
use crate::token::{AccessToken, IdToken, RefreshToken};

/// The longest server-provided text kept in an error.
const MAX_TEXT: usize = 200;

/// A parsed successful token response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token.
    pub access_token: AccessToken,
    /// The token type as sent; `Bearer` when missing.
    pub token_type: String,
    /// The lifetime, when the authority gave one.
    pub expires_in: Option<Duration>,
    /// A new refresh token, when the authority issued one.
    pub refresh_token: Option<RefreshToken>,
    /// An OpenID Connect ID token, when present.
    pub id_token: Option<IdToken>,
    /// The granted scope, when the authority said.
    pub scope: Option<String>,
    /// What a token exchange issued (RFC 8693 §2.2.1), when the authority
    /// said.
    pub issued_token_type: Option<String>,
}

/// Parses a token endpoint response with HTTP `status` and `body`.
///
/// `secrets` are the values that were sent in the request's form (servers
/// sometimes echo what they were sent): they are scrubbed, raw or in any
/// encoding (form-urlencoded, JSON- or HTML-escaped), from any server text
/// kept in an error or in the response (`token_type`, `scope`).
///
/// # Errors
///
/// [`TokenRequestError::OAuth2`] for an RFC 6749 error body (with any
/// status), [`TokenRequestError::UnexpectedStatus`] for another error body,
/// [`TokenRequestError::InvalidResponse`] for a success that is not a usable
/// token response.
#[cfg(any(test, feature = "test-support"))]
pub fn parse_token_response(
    status: u16,
    body: &[u8],
    secrets: &[&str],
) -> Result<TokenResponse, TokenRequestError> {
    let scrubber = crate::oauth2::scrub::Scrubber::from_secrets(secrets);
    parse(status, body, &Secrets::new(&scrubber, &[]), None)
}

/// [`parse_token_response`] for a request that sent `secrets` and asked
/// for `sent_scope`: a granted scope equal to it is taken as is, any other
/// is scrubbed (an authority may echo the request there).
pub(crate) fn parse(
    status: u16,
    body: &[u8],
    secrets: &Secrets<'_>,
    sent_scope: Option<&str>,
) -> Result<TokenResponse, TokenRequestError> {
    // One UTF-8 check of the whole body, not one per string: serde_json
    // reading a `&str` trusts it. A body that is not UTF-8 is no JSON either.
    let members = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<Members>(text).ok());
    if let Some(members) = &members {
        if let Some(error) = oauth2_error(status, members, secrets) {
            // Some servers send errors with a 200; an access token wins over it.
            if !(200..300).contains(&status) || members.access_token.is_none() {
                return Err(TokenRequestError::OAuth2(error));
            }
        }
    }
    if !(200..300).contains(&status) {
        return Err(TokenRequestError::UnexpectedStatus {
            status,
            excerpt: excerpt(body, secrets),
        });
    }
    let invalid = |reason: &str| TokenRequestError::InvalidResponse {
        status,
        reason: reason.to_owned(),
    };
    let Some(members) = members else {
        return Err(invalid("the body is not a JSON object"));
    };
    let access_token = match members.access_token {
        Some(Value::String(token)) if token.is_empty() => {
            return Err(invalid("access_token is empty"))
        }
        Some(Value::String(token)) if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            return Err(invalid(
                "access_token has characters not allowed in an HTTP header",
            ));
        }
        Some(Value::String(token)) => AccessToken::new(token),
        Some(_) => return Err(invalid("access_token is not a string")),
        None => return Err(invalid("access_token is missing")),
    };
    // Anything but the usual Bearer is logged and published: server text.
    let token_type = match members.token_type {
        None | Some(Value::Null) => "Bearer".to_owned(),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => t,
        Some(Value::String(t)) if secrets.is_empty() && is_clean(&t) => t,
        Some(Value::String(t)) => clean(&t, secrets),
        Some(_) => return Err(invalid("token_type is not a string")),
    };
    let expires_in = expires_in(members.expires_in.as_ref()).map_err(&invalid)?;
    let refresh_token = optional_string(members.refresh_token)
        .map_err(|()| invalid("refresh_token is not a string"))?
        .map(RefreshToken::new);
    let id_token = optional_string(members.id_token)
        .map_err(|()| invalid("id_token is not a string"))?
        .map(IdToken::new);
    let scope = match members.scope {
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    let scope = match scope {
        Some(s) if Some(s.as_str()) == sent_scope => Some(s),
        Some(s) => Some(scrub_scope(s, secrets)),
        None => None,
    };
    // Server text, like the token type: an identifier (a URI) normally.
    let issued_token_type = match optional_string(members.issued_token_type) {
        Ok(Some(t)) if secrets.is_empty() && is_clean(&t) => Some(t),
        Ok(Some(t)) => Some(clean(&t, secrets)),
        Ok(None) => None,
        Err(()) => return Err(invalid("issued_token_type is not a string")),
    };
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in,
        refresh_token,
        id_token,
        scope,
        issued_token_type,
    })
}

/// The members of a response object that this module reads, each as sent
/// (the last one wins when a name repeats). Other members are parsed as
/// strictly, so a body that is not valid JSON is refused wherever the fault
/// is, and dropped: a map of the whole object would cost more than the
/// rest of the parse.
#[derive(Default)]
struct Members {
    access_token: Option<Value>,
    token_type: Option<Value>,
    expires_in: Option<Value>,
    refresh_token: Option<Value>,
    id_token: Option<Value>,
    scope: Option<Value>,
    issued_token_type: Option<Value>,
    error: Option<Value>,
    error_description: Option<Value>,
    error_uri: Option<Value>,
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Members, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Members::default();
        while let Some(name) = map.next_key::<Name>()? {
            let slot = match name {
                Name::AccessToken => &mut members.access_token,
                Name::TokenType => &mut members.token_type,
                Name::ExpiresIn => &mut members.expires_in,
                Name::RefreshToken => &mut members.refresh_token,
                Name::IdToken => &mut members.id_token,
                Name::Scope => &mut members.scope,
                Name::IssuedTokenType => &mut members.issued_token_type,
                Name::Error => &mut members.error,
                Name::ErrorDescription => &mut members.error_description,
                Name::ErrorUri => &mut members.error_uri,
                Name::Other => {
                    map.next_value::<Value>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(members)
    }
}

/// A member name, matched after JSON escapes are decoded.
enum Name {
    AccessToken,
    TokenType,
    ExpiresIn,
    RefreshToken,
    IdToken,
    Scope,
    IssuedTokenType,
    Error,
    ErrorDescription,
    ErrorUri,
    Other,
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl Visitor<'_> for NameVisitor {
    type Value = Name;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
        Ok(match name {
            "access_token" => Name::AccessToken,
            "token_type" => Name::TokenType,
            "expires_in" => Name::ExpiresIn,
            "refresh_token" => Name::RefreshToken,
            "id_token" => Name::IdToken,
            "scope" => Name::Scope,
            "issued_token_type" => Name::IssuedTokenType,
            "error" => Name::Error,
            "error_description" => Name::ErrorDescription,
            "error_uri" => Name::ErrorUri,
            _ => Name::Other,
        })
    }
}

fn oauth2_error(status: u16, members: &Members, secrets: &Secrets<'_>) -> Option<OAuth2Error> {
    let code = members.error.as_ref()?.as_str()?;
    let mut error = OAuth2Error::new(status, ErrorCode::from(clean(code, secrets).as_str()));
    if let Some(description) = members.error_description.as_ref().and_then(Value::as_str) {
        error = error.with_description(clean(description, secrets));
    }
    if let Some(uri) = members.error_uri.as_ref().and_then(Value::as_str) {
        error = error.with_uri(clean(uri, secrets));
    }
    Some(error)
}

/// An optional string member; empty counts as absent.
fn optional_string(value: Option<Value>) -> Result<Option<String>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// `expires_in` as a number of seconds or a numeric string; fractions are
/// cut, huge values saturate, negative ones are an error.
fn expires_in(value: Option<&Value>) -> Result<Option<Duration>, &'static str> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(|s| s as f64).or_else(|| n.as_f64()),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Some(_) => return Err("expires_in is not a number"),
    };
    match seconds {
        Some(s) if s < 0.0 => Err("expires_in is negative"),
        // `as` saturates at u64::MAX.
        Some(s) => Ok(Some(Duration::from_secs(s as u64))),
        None => Err("expires_in is not a number"),
    }
}

/// A granted scope that is not the one asked for, without secrets or
/// control characters. Not cut: long scopes are legitimate.
fn scrub_scope(scope: String, secrets: &Secrets<'_>) -> String {
    if secrets.is_empty() && !scope.chars().any(char::is_control) {
        return scope;
    }
    let scope: String = scope.chars().filter(|c| !c.is_control()).collect();
    secrets.scrub(&scope).into_owned()
}

/// The start of an unexpected body, printable and scrubbed.
fn excerpt(body: &[u8], secrets: &Secrets<'_>) -> String {
    // The whole body (capped by the HTTP client) is scrubbed before it is
    // cut, so no secret is cut into a visible prefix, and before its
    // whitespace is collapsed, so a secret with two spaces in a row is
    // still found. Other control characters go first: a secret split by
    // one must not survive.
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .collect();
    let scrubbed = secrets.scrub(&text);
    let collapsed = scrubbed.split_whitespace().collect::<Vec<_>>().join(" ");
    clean(&collapsed, secrets)
}

/// Whether [`clean`] without secrets would return `text` unchanged.
fn is_clean(text: &str) -> bool {
    text.len() <= MAX_TEXT && !text.chars().any(char::is_control)
}

/// Server text made safe to log: control characters dropped, then secrets
/// replaced in any encoding (in that order, so a secret split by a control
/// character is caught), then cut at [`MAX_TEXT`] characters.
fn clean(text: &str, secrets: &Secrets<'_>) -> String {
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    let text = secrets.scrub(&text);
    let mut out: String = text.chars().take(MAX_TEXT).collect();
    if text.chars().nth(MAX_TEXT).is_some() {
        out.push('…');
    }
    out
}

/// Parses a `Retry-After` value (seconds or an HTTP date) relative to
/// `now_ms`; a date in the past means no wait.
pub fn retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0);
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::scrub::Scrubber;

    fn ok(body: &str) -> TokenResponse {
        parse_token_response(200, body.as_bytes(), &[]).unwrap()
    }

    fn invalid(body: &str) -> String {
        match parse_token_response(200, body.as_bytes(), &[]) {
            Err(TokenRequestError::InvalidResponse { reason, .. }) => reason,
            other => panic!("expected invalid response for {body}, got {other:?}"),
        }
    }

    #[test]
    fn full_response() {
        let r = ok(
            r#"{"access_token":"at","token_type":"Bearer","expires_in":60,"refresh_token":"rt","id_token":"it","scope":"a b"}"#,
        );
        assert_eq!(r.access_token.secret(), "at");
        assert_eq!(r.token_type, "Bearer");
        assert_eq!(r.expires_in, Some(Duration::from_secs(60)));
        assert_eq!(r.refresh_token.unwrap().secret(), "rt");
        assert_eq!(r.id_token.unwrap().secret(), "it");
        assert_eq!(r.scope.as_deref(), Some("a b"));
        assert_eq!(r.issued_token_type, None);
    }

    #[test]
    fn a_token_exchange_answer_says_what_it_issued() {
        let r = ok(
            r#"{"access_token":"at","issued_token_type":"urn:ietf:params:oauth:token-type:jwt","token_type":"N_A"}"#,
        );
        assert_eq!(
            r.issued_token_type.as_deref(),
            Some("urn:ietf:params:oauth:token-type:jwt")
        );
        assert_eq!(r.token_type, "N_A");
        assert_eq!(
            invalid(r#"{"access_token":"a","issued_token_type":7}"#),
            "issued_token_type is not a string"
        );
        // Server text: an echo of a credential sent is scrubbed from it.
        let r = parse_token_response(
            200,
            br#"{"access_token":"a","issued_token_type":"urn:x:subject-tok-3141592653"}"#,
            &["subject-tok-3141592653"],
        )
        .unwrap();
        assert!(!r.issued_token_type.unwrap().contains("3141592653"));
    }

    #[test]
    fn lenient_fields() {
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":"  90 "}"#).expires_in,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":90.9}"#).expires_in,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":1e300}"#).expires_in,
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":null}"#).expires_in,
            None
        );
        assert_eq!(ok(r#"{"access_token":"a"}"#).token_type, "Bearer");
        assert_eq!(
            ok(r#"{"access_token":"a","token_type":"mac"}"#).token_type,
            "mac"
        );
        assert_eq!(
            ok(r#"{"access_token":"a","scope":["x","y"]}"#)
                .scope
                .as_deref(),
            Some("x y")
        );
        assert_eq!(
            ok(r#"{"access_token":"a\/b\u0041"}"#).access_token.secret(),
            "a/bA"
        );
        assert_eq!(
            ok(r#"{"access_token":"a","refresh_token":""}"#).refresh_token,
            None
        );
    }

    #[test]
    fn member_names_match_after_unescaping() {
        assert_eq!(
            ok(r#"{"acc\u0065ss_token":"a","expires_\u0069n":5}"#).expires_in,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            ok(r#"{"access_token":"a","scope":"x","scope":"y"}"#)
                .scope
                .as_deref(),
            Some("y")
        );
    }

    #[test]
    fn unknown_members_must_be_valid_json_too() {
        let deep = format!(
            r#"{{"access_token":"a","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for body in [
            r#"{"access_token":"a","x":"\ud800"}"#,
            r#"{"access_token":"a","x":1e400}"#,
            r#"{"access_token":"a","x":tru}"#,
            deep.as_str(),
        ] {
            assert_eq!(invalid(body), "the body is not a JSON object", "{body}");
        }
        let bad_utf8 = b"{\"access_token\":\"a\",\"x\":\"\xff\"}";
        assert!(matches!(
            parse_token_response(200, bad_utf8, &[]),
            Err(TokenRequestError::InvalidResponse { .. })
        ));
    }

    #[test]
    fn strict_fields() {
        assert_eq!(
            invalid(r#"{"token_type":"Bearer"}"#),
            "access_token is missing"
        );
        assert_eq!(invalid(r#"{"access_token":""}"#), "access_token is empty");
        assert_eq!(
            invalid(r#"{"access_token":7}"#),
            "access_token is not a string"
        );
        assert_eq!(
            invalid(r#"{"access_token":"a\r\nX-Evil: 1"}"#),
            "access_token has characters not allowed in an HTTP header"
        );
        assert_eq!(
            invalid(r#"{"access_token":"a","expires_in":-5}"#),
            "expires_in is negative"
        );
        assert_eq!(
            invalid(r#"{"access_token":"a","expires_in":"soon"}"#),
            "expires_in is not a number"
        );
        assert_eq!(
            invalid(r#"{"access_token":"a","expires_in":[1]}"#),
            "expires_in is not a number"
        );
        assert_eq!(
            invalid(r#"{"access_token":"a","refresh_token":{}}"#),
            "refresh_token is not a string"
        );
        assert_eq!(invalid("[1,2]"), "the body is not a JSON object");
        assert_eq!(
            invalid("{\"access_token\":\"a\""),
            "the body is not a JSON object"
        );
        assert_eq!(invalid(""), "the body is not a JSON object");
    }

    #[test]
    fn oauth2_errors_with_any_status() {
        let e = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"revoked","error_uri":"https://x/e"}"#,
            &[],
        )
        .unwrap_err();
        match e {
            TokenRequestError::OAuth2(e) => {
                assert_eq!(e.code(), &ErrorCode::InvalidGrant);
                assert_eq!(e.description(), Some("revoked"));
                assert_eq!(e.uri(), Some("https://x/e"));
                assert_eq!(e.status(), 400);
            }
            other => panic!("{other:?}"),
        }
        let e = parse_token_response(200, br#"{"error":"invalid_scope"}"#, &[]).unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::InvalidScope));
    }

    #[test]
    fn unexpected_bodies_keep_a_clean_excerpt() {
        let html = b"<html>\r\n<body>\n502 Bad Gateway</body></html>";
        match parse_token_response(502, html, &[]).unwrap_err() {
            TokenRequestError::UnexpectedStatus { status, excerpt } => {
                assert_eq!(status, 502);
                assert_eq!(excerpt, "<html> <body> 502 Bad Gateway</body></html>");
            }
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(10_000);
        match parse_token_response(500, long.as_bytes(), &[]).unwrap_err() {
            TokenRequestError::UnexpectedStatus { excerpt, .. } => {
                assert!(excerpt.chars().count() <= MAX_TEXT + 1)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secrets_are_scrubbed_from_server_text() {
        let body =
            br#"{"error":"invalid_client","error_description":"bad secret hunter22 for client"}"#;
        let e = parse_token_response(401, body, &["hunter22"]).unwrap_err();
        assert!(!e.to_string().contains("hunter22"), "{e}");
        let e = parse_token_response(500, b"echo: hunter22", &["hunter22"]).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter22"));
        // Split by control characters, raw or escaped, it is still caught.
        let e = parse_token_response(500, b"echo: hunt\x07er22", &["hunter22"]).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter22"), "{e}");
        let body = br#"{"error":"invalid_client","error_description":"hunt\u0001er22"}"#;
        let e = parse_token_response(401, body, &["hunter22"]).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter22"), "{e}");
        // Past the first 800 bytes too: the excerpt is scrubbed before it is cut.
        let mut body = vec![b' '; 795];
        body.extend_from_slice(b"hunter22");
        let e = parse_token_response(500, &body, &["hunter22"]).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunt"), "{e}");
    }

    #[test]
    fn echoes_in_a_success_are_scrubbed() {
        // An authority that echoes the form in token_type and scope, with
        // the hex in lower case and a space as %20.
        let body = br#"{"access_token":"a","token_type":"client_secret=p%40ss%2bw%2frd%20x","scope":["echo","p@ss+w/rd x"]}"#;
        let r = parse_token_response(200, body, &["p@ss+w/rd x"]).unwrap();
        assert_eq!(r.token_type, "client_secret=<redacted>");
        assert_eq!(r.scope.as_deref(), Some("echo <redacted>"));
        // Control characters in a granted scope go too.
        let body = b"{\"access_token\":\"a\",\"scope\":\"a\\u0007b\"}";
        assert_eq!(
            ok(std::str::from_utf8(body).unwrap()).scope.as_deref(),
            Some("ab")
        );
    }

    #[test]
    fn the_scope_asked_for_and_bearer_are_taken_without_a_look() {
        // The usual success costs no scrubbing: even a (contrived) secret
        // equal to them is not looked for there.
        let scrubber = Scrubber::from_secrets(&["orders:read", "Bearer"]);
        let secrets = Secrets::new(&scrubber, &[]);
        let body = br#"{"access_token":"a","token_type":"Bearer","scope":"orders:read"}"#;
        let r = parse(200, body, &secrets, Some("orders:read")).unwrap();
        assert_eq!(r.token_type, "Bearer");
        assert_eq!(r.scope.as_deref(), Some("orders:read"));
        let r = parse(200, body, &secrets, Some("orders:write")).unwrap();
        assert_eq!(r.scope.as_deref(), Some("<redacted>"));
    }

    #[test]
    fn excerpts_are_scrubbed_before_their_whitespace_is_collapsed() {
        let e =
            parse_token_response(500, b"<pre>x=two  spaces\n</pre>", &["two  spaces"]).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("two"), "{e}");
    }

    #[test]
    fn escapes_and_a_string_lifetime_are_read_and_an_rfc_error_is_typed() {
        let body = br#"{"access_token":"a\/b","token_type":"bearer","expires_in":"3600"}"#;
        let parsed = parse_token_response(200, body, &[]).unwrap();
        assert_eq!(parsed.access_token.secret(), "a/b");
        assert_eq!(parsed.expires_in, Some(Duration::from_secs(3600)));
        let error = parse_token_response(401, br#"{"error":"invalid_client"}"#, &[]).unwrap_err();
        assert_eq!(error.code().unwrap().as_str(), "invalid_client");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("120", 0), Some(Duration::from_secs(120)));
        // 1994-11-06T08:49:37Z is 784111777 s after the epoch.
        let now_ms = 784_111_777_000 - 30_000;
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now_ms),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("soon", 0), None);
        assert_eq!(retry_after(" 7 ", 0), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("99999999999999999999999", 0),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", u64::MAX),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("-1", 0), None);
        assert_eq!(retry_after("", 0), None);
    }
}
