//! What must never come out of a fetch against an echoing authority: every
//! form in which a secret is sent and comes back, for the tests of the
//! custom grant, JSON bodies, hostile echoes and client authentication;
//! and a logger that keeps every record, to look for them in logs.

#![allow(dead_code)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;

use local_authority::EchoShape;
use tokenkeeper::oauth2::TokenRequestError;
use tokenkeeper::{SourceError, Token};

/// Every status and shape an echo comes in.
pub const SHAPES: [(u16, EchoShape); 9] = [
    (400, EchoShape::ErrorDescription),
    (401, EchoShape::ErrorDescription),
    (500, EchoShape::Html),
    (401, EchoShape::Html),
    (500, EchoShape::EscapedJson),
    (502, EchoShape::Text),
    (200, EchoShape::Html),
    (200, EchoShape::EscapedJson),
    (200, EchoShape::TokenResponse),
];

/// `application/x-www-form-urlencoded`, space as `+`, upper-case hex.
fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `encoded` with the hex digits of its `%XX` escapes in lower case.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The inside of a JSON string: as serde_json writes it, with `\/`, and
/// with every non-ASCII character as `\uXXXX` in either hex case.
fn json_forms(value: &str) -> Vec<String> {
    let plain = serde_json::to_string(value).unwrap();
    let plain = plain[1..plain.len() - 1].to_owned();
    let slash = plain.replace('/', "\\/");
    let ascii = |upper: bool| -> String {
        slash
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    return c.to_string();
                }
                let mut units = [0; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| {
                        if upper {
                            format!("\\u{u:04X}")
                        } else {
                            format!("\\u{u:04x}")
                        }
                    })
                    .collect()
            })
            .collect()
    };
    vec![plain.clone(), slash.clone(), ascii(false), ascii(true)]
}

/// Every form of `secret`: raw, form-urlencoded (`+` or `%20`, either hex
/// case), JSON-escaped once (as in a JSON body) and twice (a JSON body
/// quoted in a JSON string); with `client_id`, the base64 of `id:secret`,
/// padded or not; and each of those as `{:?}` prints it.
pub fn encodings(client_id: Option<&str>, secret: &str) -> Vec<String> {
    let plus = form_encode(secret);
    let pct20 = plus.replace('+', "%20");
    let mut all = vec![
        secret.to_owned(),
        lower_hex(&plus),
        lower_hex(&pct20),
        plus.clone(),
        pct20,
    ];
    for once in json_forms(secret) {
        all.extend(json_forms(&once));
        all.push(once);
    }
    if let Some(id) = client_id {
        for pair in [
            format!("{}:{}", form_encode(id), plus),
            format!("{id}:{secret}"),
        ] {
            for engine in [&STANDARD, &URL_SAFE] {
                let padded = engine.encode(&pair);
                all.push(padded.trim_end_matches('=').to_owned());
                all.push(padded);
            }
        }
    }
    // Messages quote server text with `{:?}`: each form escaped once more.
    let debug: Vec<String> = all
        .iter()
        .map(|form| {
            let quoted = format!("{form:?}");
            quoted[1..quoted.len() - 1].to_owned()
        })
        .collect();
    all.extend(debug);
    all.sort();
    all.dedup();
    all
}

/// Fails naming the first output that holds a forbidden form.
pub fn assert_clean(forbidden: &[String], output: &str, context: &str) {
    for form in forbidden {
        assert!(
            !output.contains(form.as_str()),
            "{context}: {form:?} leaked into: {output}"
        );
    }
}

/// Everything a caller can print of a fetch's result.
pub fn printed(result: &Result<Token, SourceError>) -> String {
    match result {
        Ok(token) => format!(
            "{token:?} {token:#?} {} {:?}",
            token.token_type(),
            token.scope()
        ),
        Err(error) => {
            let mut text = format!("{error} {error:?} {error:#?}");
            let mut next: Option<&(dyn std::error::Error + 'static)> =
                std::error::Error::source(error);
            while let Some(cause) = next {
                text.push_str(&format!(" / {cause} {cause:?} {cause:#?}"));
                next = cause.source();
            }
            if let Some(typed) = error
                .cause()
                .and_then(|c| c.downcast_ref::<TokenRequestError>())
            {
                text.push_str(&format!(" / {typed} {typed:?} {typed:#?}"));
            }
            text
        }
    }
}
