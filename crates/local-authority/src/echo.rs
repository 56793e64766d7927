//! [`Fault::Echo`](crate::Fault::Echo): the request quoted back, as servers,
//! proxies and gateways that echo what they received do.

use serde_json::json;

use crate::form;
use crate::RecordedRequest;

/// Which part of the request an echo quotes, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EchoPart {
    /// The whole request as received: request line, headers (names
    /// lowercased), a blank line, the body.
    Request,
    /// The `Authorization` header's value (`Basic <base64>`).
    Authorization,
    /// The body as received (form-urlencoded).
    Body,
    /// The form decoded, one `name=value` line per parameter, as a server
    /// that logs its parameters would print it.
    DecodedForm,
    /// The form decoded and encoded again with `%20` for a space and
    /// lower-case hex, as some frameworks re-encode what they forward.
    ReencodedForm,
    /// The credentials of the `Authorization` header decoded (base64, then
    /// form-urlencoding): `id:secret` in the clear.
    DecodedCredentials,
}

/// How an echo is shaped into a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EchoShape {
    /// An RFC 6749 error (`invalid_client` for a 401, `invalid_request`
    /// otherwise) with the echo in `error_description`.
    ErrorDescription,
    /// A JSON object `{"echo": ...}` that is not an RFC 6749 error, written
    /// as PHP's `json_encode` does: `/` as `\/`, every non-ASCII character
    /// as `\uXXXX`.
    EscapedJson,
    /// A `text/html` page with the echo in a `<pre>`, not escaped.
    Html,
    /// A `text/plain` body.
    Text,
    /// A token response with a usable access token whose `token_type`,
    /// `scope` and an extra member carry the echo.
    TokenResponse,
}

/// The response: status, headers, body.
pub(crate) fn respond(
    status: u16,
    part: EchoPart,
    shape: EchoShape,
    request: &RecordedRequest,
    access_token: impl FnOnce() -> String,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let echo = quote(part, request);
    let json = || vec![("Content-Type".to_owned(), "application/json".to_owned())];
    match shape {
        EchoShape::ErrorDescription => {
            let code = if status == 401 {
                "invalid_client"
            } else {
                "invalid_request"
            };
            let body = json!({"error": code, "error_description": echo});
            (status, json(), body.to_string().into_bytes())
        }
        EchoShape::EscapedJson => {
            let body = format!("{{\"echo\":\"{}\"}}", php_json_escape(&echo));
            (status, json(), body.into_bytes())
        }
        EchoShape::Html => {
            let body = format!(
                "<!DOCTYPE html>\n<html><head><title>Error {status}</title></head>\n\
                 <body><h1>Error {status}</h1>\n<p>Request received:</p>\n<pre>{echo}</pre>\n</body></html>\n"
            );
            let headers = vec![("Content-Type".to_owned(), "text/html".to_owned())];
            (status, headers, body.into_bytes())
        }
        EchoShape::Text => {
            let headers = vec![("Content-Type".to_owned(), "text/plain".to_owned())];
            (status, headers, echo.into_bytes())
        }
        EchoShape::TokenResponse => {
            let body = json!({
                "access_token": access_token(),
                "token_type": echo,
                "expires_in": 60,
                "scope": echo,
                "echo": echo,
            });
            (status, json(), body.to_string().into_bytes())
        }
    }
}

/// The part of the request an echo quotes.
fn quote(part: EchoPart, request: &RecordedRequest) -> String {
    let authorization = request.header("authorization").unwrap_or_default();
    match part {
        EchoPart::Request => {
            let mut text = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
            for (name, value) in &request.headers {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\n");
            text.push_str(&request.body);
            text
        }
        EchoPart::Authorization => authorization.to_owned(),
        EchoPart::Body => request.body.clone(),
        EchoPart::DecodedForm => request
            .form()
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect(),
        EchoPart::ReencodedForm => request
            .form()
            .iter()
            .map(|(name, value)| format!("{}={}", reencode(name), reencode(value)))
            .collect::<Vec<_>>()
            .join("&"),
        EchoPart::DecodedCredentials => {
            let decoded = authorization
                .strip_prefix("Basic ")
                .and_then(|b64| form::base64_decode(b64.trim()))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            match decoded.split_once(':') {
                Some((id, secret)) => format!(
                    "client {} with secret {}",
                    form::decode(id),
                    form::decode(secret)
                ),
                None => String::new(),
            }
        }
    }
}

/// Percent-encodes all but `A-Z a-z 0-9 - . _ ~`, in lower-case hex, a
/// space as `%20`.
fn reencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// The inside of a JSON string as PHP writes it by default.
fn php_json_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() && !c.is_control() => out.push(c),
            c => {
                let mut units = [0; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}
