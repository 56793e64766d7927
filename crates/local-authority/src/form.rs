//! `application/x-www-form-urlencoded` decoding, JSON bodies and base64
//! decoding.

use serde_json::Value;

/// The parameters of a JSON body: an object whose members are strings, or
/// arrays of strings for a repeated parameter.
pub(crate) fn json_params(body: &str) -> Result<Vec<(String, String)>, &'static str> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(body) else {
        return Err("the JSON body must be an object");
    };
    let mut params = Vec::new();
    for (name, value) in object {
        match value {
            Value::String(value) => params.push((name, value)),
            Value::Array(values) => {
                for value in values {
                    let Value::String(value) = value else {
                        return Err("JSON parameters must be strings");
                    };
                    params.push((name.clone(), value));
                }
            }
            _ => return Err("JSON parameters must be strings"),
        }
    }
    Ok(params)
}

/// Splits a form body into decoded `(name, value)` pairs, in order.
///
/// `+` is a space, `%XX` is a byte, and a malformed escape is kept literally.
/// Bytes that are not UTF-8 after decoding become U+FFFD.
pub(crate) fn parse(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (decode(name), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Decodes one form-urlencoded component.
pub(crate) fn decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes standard base64 (RFC 4648 §4); padding is optional.
pub(crate) fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let trimmed = input.trim_end_matches('=');
    if input.len() - trimmed.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in trimmed.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover sextet cannot encode a byte.
    if trimmed.len() % 4 == 1 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_malformed_escapes() {
        assert_eq!(decode("a+b%20c%2Bd%3a"), "a b c+d:");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%C3%A9"), "é");
    }

    #[test]
    fn parses_pairs_in_order() {
        assert_eq!(
            parse("a=1&&b&c=x%3Dy=z&resource=r1&resource=r2"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "x=y=z".into()),
                ("resource".into(), "r1".into()),
                ("resource".into(), "r2".into()),
            ]
        );
    }

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(
            base64_decode("Y2xpZW50LWE6c2VjcmV0LWE=").unwrap(),
            b"client-a:secret-a"
        );
        assert!(base64_decode("Zm9v!").is_none());
        assert!(base64_decode("Z").is_none());
        assert!(base64_decode("Zg===").is_none());
    }
}
