//! Malformed and hostile token endpoint responses: each gives a typed error
//! (or a deliberately lenient success), none a panic.

use std::time::Duration;

use tokenkeeper::oauth2::response::parse_token_response;
use tokenkeeper::oauth2::TokenRequestError;

/// What a case must produce.
#[derive(Debug)]
enum Expect {
    /// A token with this lifetime (None: the default applies).
    Token(Option<Duration>),
    /// `InvalidResponse` (a success status with an unusable body).
    Invalid,
    /// An RFC 6749 error with this code.
    OAuth(&'static str),
    /// A non-OAuth error status.
    Status,
}

fn cases() -> Vec<(&'static str, u16, Vec<u8>, Expect)> {
    use Expect::*;
    let s = |text: &str| text.as_bytes().to_vec();
    let gzip = vec![
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0x56,
    ];
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!(
        r#"{{"access_token":"a","x":{}1{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let long_token = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(60_000));
    vec![
        ("empty body", 200, vec![], Invalid),
        ("whitespace", 200, s("   \n\t "), Invalid),
        ("null", 200, s("null"), Invalid),
        ("number", 200, s("42"), Invalid),
        ("string", 200, s(r#""access_token""#), Invalid),
        ("array", 200, s(r#"[{"access_token":"a"}]"#), Invalid),
        (
            "truncated JSON",
            200,
            s(r#"{"access_token":"a","expires_in":36"#),
            Invalid,
        ),
        (
            "trailing garbage",
            200,
            s(r#"{"access_token":"a"} trailing"#),
            Invalid,
        ),
        ("gzip without Content-Encoding", 200, gzip, Invalid),
        (
            "invalid UTF-8",
            200,
            b"{\"access_token\":\"\xff\xfe\"}".to_vec(),
            Invalid,
        ),
        (
            "UTF-8 BOM",
            200,
            b"\xef\xbb\xbf{\"access_token\":\"a\"}".to_vec(),
            Invalid,
        ),
        (
            "HTML on 200",
            200,
            s("<html><body>login</body></html>"),
            Invalid,
        ),
        (
            "access_token null",
            200,
            s(r#"{"access_token":null}"#),
            Invalid,
        ),
        (
            "access_token number",
            200,
            s(r#"{"access_token":123}"#),
            Invalid,
        ),
        (
            "access_token object",
            200,
            s(r#"{"access_token":{"v":"a"}}"#),
            Invalid,
        ),
        (
            "access_token array",
            200,
            s(r#"{"access_token":["a"]}"#),
            Invalid,
        ),
        (
            "access_token bool",
            200,
            s(r#"{"access_token":true}"#),
            Invalid,
        ),
        (
            "access_token empty",
            200,
            s(r#"{"access_token":""}"#),
            Invalid,
        ),
        (
            "access_token with CRLF",
            200,
            s(r#"{"access_token":"a\r\nSet-Cookie: x"}"#),
            Invalid,
        ),
        (
            "access_token with space",
            200,
            s(r#"{"access_token":"a b"}"#),
            Invalid,
        ),
        (
            "access_token with NUL",
            200,
            s(r#"{"access_token":"a\u0000b"}"#),
            Invalid,
        ),
        (
            "access_token non-ASCII",
            200,
            s(r#"{"access_token":"tökén"}"#),
            Invalid,
        ),
        (
            "expires_in negative",
            200,
            s(r#"{"access_token":"a","expires_in":-1}"#),
            Invalid,
        ),
        (
            "expires_in negative string",
            200,
            s(r#"{"access_token":"a","expires_in":"-60"}"#),
            Invalid,
        ),
        (
            "expires_in bool",
            200,
            s(r#"{"access_token":"a","expires_in":true}"#),
            Invalid,
        ),
        (
            "expires_in object",
            200,
            s(r#"{"access_token":"a","expires_in":{}}"#),
            Invalid,
        ),
        (
            "expires_in word",
            200,
            s(r#"{"access_token":"a","expires_in":"an hour"}"#),
            Invalid,
        ),
        (
            "expires_in NaN string",
            200,
            s(r#"{"access_token":"a","expires_in":"NaN"}"#),
            Invalid,
        ),
        (
            "expires_in inf string",
            200,
            s(r#"{"access_token":"a","expires_in":"inf"}"#),
            Invalid,
        ),
        (
            "expires_in huge",
            200,
            s(r#"{"access_token":"a","expires_in":1e308}"#),
            Token(Some(Duration::from_secs(u64::MAX))),
        ),
        (
            "expires_in beyond u64",
            200,
            s(r#"{"access_token":"a","expires_in":184467440737095516150}"#),
            Token(Some(Duration::from_secs(u64::MAX))),
        ),
        (
            "expires_in overflowing JSON number",
            200,
            s(r#"{"access_token":"a","expires_in":1e400}"#),
            Invalid,
        ),
        (
            "expires_in zero",
            200,
            s(r#"{"access_token":"a","expires_in":0}"#),
            Token(Some(Duration::ZERO)),
        ),
        (
            "expires_in fraction",
            200,
            s(r#"{"access_token":"a","expires_in":59.99}"#),
            Token(Some(Duration::from_secs(59))),
        ),
        (
            "expires_in string",
            200,
            s(r#"{"access_token":"a","expires_in":"3600"}"#),
            Token(Some(Duration::from_secs(3600))),
        ),
        (
            "duplicate keys, last wins",
            200,
            s(r#"{"access_token":"a","access_token":"b","expires_in":1,"expires_in":2}"#),
            Token(Some(Duration::from_secs(2))),
        ),
        (
            "refresh_token number",
            200,
            s(r#"{"access_token":"a","refresh_token":5}"#),
            Invalid,
        ),
        (
            "id_token array",
            200,
            s(r#"{"access_token":"a","id_token":[]}"#),
            Invalid,
        ),
        (
            "token_type number",
            200,
            s(r#"{"access_token":"a","token_type":1}"#),
            Invalid,
        ),
        (
            "scope number ignored",
            200,
            s(r#"{"access_token":"a","scope":7}"#),
            Token(None),
        ),
        (
            "nested junk ignored",
            200,
            s(r#"{"access_token":"a","x":{"y":[1,{"z":null}]}}"#),
            Token(None),
        ),
        ("deeply nested array", 200, deep.into_bytes(), Invalid),
        ("deeply nested member", 200, deep_obj.into_bytes(), Invalid),
        ("very long token", 200, long_token.into_bytes(), Token(None)),
        (
            "error on 200",
            200,
            s(r#"{"error":"invalid_client"}"#),
            OAuth("invalid_client"),
        ),
        (
            "error not a string",
            400,
            s(r#"{"error":{"code":"x"}}"#),
            Status,
        ),
        (
            "error with junk description",
            400,
            s(r#"{"error":"invalid_grant","error_description":[1,2]}"#),
            OAuth("invalid_grant"),
        ),
        (
            "error code with control chars",
            400,
            s(r#"{"error":"bad\u0007code\n"}"#),
            OAuth("badcode"),
        ),
        ("plain text 500", 500, s("Internal Server Error"), Status),
        ("empty 503", 503, vec![], Status),
        ("binary 502", 502, vec![0, 159, 146, 150], Status),
        ("JSON array on 400", 400, s("[]"), Status),
        ("redirect", 302, vec![], Status),
    ]
}

#[test]
fn every_hostile_response_is_handled() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (name, status, body, expect) in cases {
        let result =
            std::panic::catch_unwind(|| parse_token_response(status, &body, &["s3cr3t-value"]));
        let result = result.unwrap_or_else(|_| panic!("{name}: panicked"));
        match (&expect, &result) {
            (Expect::Token(lifetime), Ok(parsed)) => {
                assert_eq!(&parsed.expires_in, lifetime, "{name}")
            }
            (Expect::Invalid, Err(TokenRequestError::InvalidResponse { status: s, .. })) => {
                assert_eq!(*s, status, "{name}")
            }
            (Expect::OAuth(code), Err(TokenRequestError::OAuth2(e))) => {
                assert_eq!(e.code().as_str(), *code, "{name}")
            }
            (Expect::Status, Err(TokenRequestError::UnexpectedStatus { status: s, excerpt })) => {
                assert_eq!(*s, status, "{name}");
                assert!(
                    excerpt.chars().all(|c| !c.is_control()),
                    "{name}: {excerpt:?}"
                );
            }
            _ => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
        if let Err(e) = &result {
            // Every error is classified and printable without control characters.
            let _ = e.kind();
            let shown = e.to_string();
            assert!(
                !shown.contains('\n') && !shown.contains('\r'),
                "{name}: {shown:?}"
            );
        }
    }
}
