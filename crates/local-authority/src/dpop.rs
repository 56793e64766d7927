//! DPoP (RFC 9449): proofs verified for real at the token endpoint and at
//! the resource, tokens bound to the thumbprint (RFC 7638) of the proof's
//! key, and server nonces.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use serde_json::{Map, Value};

use crate::assertion::{now_s, Jws, PublicKey};
use crate::{RecordedRequest, State};

/// The algorithms a proof may be signed with: asymmetric ones only
/// (RFC 9449 §4.3 forbids `none` and MACs).
pub(crate) const ALGS: [&str; 4] = ["ES256", "EdDSA", "RS256", "PS256"];

/// How far a proof's `iat` may be from this server's clock, either way.
const IAT_WINDOW_S: u64 = 60;

/// Members of a JWK that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Why a proof is refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// `invalid_dpop_proof`, and why.
    Invalid(String),
    /// `use_dpop_nonce`: the proof lacks the current nonce, and why.
    Nonce(String),
}

impl Refusal {
    /// The OAuth error code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid_dpop_proof",
            Refusal::Nonce(_) => "use_dpop_nonce",
        }
    }

    /// Why.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Refusal::Invalid(why) | Refusal::Nonce(why) => why,
        }
    }
}

/// What a request demands of its proof besides what every proof must be.
pub(crate) struct Expect<'a> {
    /// The access token the proof must hash into `ath` (resource requests).
    pub(crate) access_token: Option<&'a str>,
    /// The thumbprint the proof's key must have (that of the key the
    /// access token is bound to).
    pub(crate) jkt: Option<&'a str>,
    /// Whether the current nonce must be in the proof.
    pub(crate) nonce: bool,
}

/// The single `DPoP` header of `request`: `Ok(None)` without one, an error
/// when there are several.
pub(crate) fn header(request: &RecordedRequest) -> Result<Option<&str>, Refusal> {
    let mut values = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("dpop"))
        .map(|(_, value)| value.as_str());
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(proof), None) => Ok(Some(proof)),
        (Some(_), Some(_)) => Err(Refusal::Invalid(
            "more than one DPoP header (RFC 9449 §4.3 allows one)".to_owned(),
        )),
    }
}

/// Verifies `proof` for `request`, spends its `jti`, and returns the
/// thumbprint of its key. The `jti` is spent only when the proof is
/// accepted, so that a client may answer a nonce challenge with any new
/// proof.
pub(crate) fn verify(
    state: &mut State,
    request: &RecordedRequest,
    proof: &str,
    expect: Expect<'_>,
) -> Result<String, Refusal> {
    let invalid = |why: String| Refusal::Invalid(why);
    let jws = Jws::decode(proof).map_err(|why| invalid(format!("the proof {why}")))?;
    let header = &jws.header;
    let claims = &jws.claims;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(invalid("the proof's typ is not dpop+jwt".to_owned()));
    }
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !ALGS.contains(&alg) {
        return Err(invalid(format!(
            "the proof's alg {alg:?} is not one of {}",
            ALGS.join(", ")
        )));
    }
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(invalid("the proof has no jwk".to_owned()));
    };
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(invalid(format!(
            "the proof's jwk holds a private key (member {member:?})"
        )));
    }
    let key = PublicKey::from_jwk_value(&Value::Object(jwk.clone()))
        .map_err(|why| invalid(format!("the proof's jwk: {why}")))?;
    if !key.verifies(alg, jws.input.as_bytes(), &jws.signature) {
        return Err(invalid(format!(
            "the proof's {alg} signature does not verify with its jwk"
        )));
    }
    let jkt = thumbprint(jwk).map_err(|why| invalid(format!("the proof's jwk: {why}")))?;

    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    let Some(jti) = claim("jti").filter(|jti| !jti.is_empty()) else {
        return Err(invalid("the proof has no jti".to_owned()));
    };
    match claim("htm") {
        Some(htm) if htm == request.method => {}
        Some(htm) => {
            return Err(invalid(format!(
                "the proof's htm {htm:?} is not this request's method {:?}",
                request.method
            )))
        }
        None => return Err(invalid("the proof has no htm".to_owned())),
    }
    let url = request_url(state, request);
    match claim("htu") {
        Some(htu) if normalize(htu).as_deref() == Some(url.as_str()) => {}
        Some(htu) => {
            return Err(invalid(format!(
                "the proof's htu {htu:?} is not this request's URL {url:?}"
            )))
        }
        None => return Err(invalid("the proof has no htu".to_owned())),
    }
    let now = now_s();
    match claims.get("iat").and_then(Value::as_u64) {
        Some(iat) if iat.abs_diff(now) <= IAT_WINDOW_S => {}
        Some(_) => {
            return Err(invalid(format!(
                "the proof's iat is more than {IAT_WINDOW_S} s from now"
            )))
        }
        None => return Err(invalid("the proof has no iat (a number)".to_owned())),
    }
    if let Some(token) = expect.access_token {
        let hash = URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()));
        match claim("ath") {
            Some(ath) if ath == hash => {}
            Some(_) => {
                return Err(invalid(
                    "the proof's ath is not the hash of this access token".to_owned(),
                ))
            }
            None => return Err(invalid("the proof has no ath".to_owned())),
        }
    }
    if expect.jkt.is_some_and(|bound| bound != jkt) {
        return Err(invalid(
            "the proof's key is not the one the access token is bound to".to_owned(),
        ));
    }
    if state.dpop_jti.contains(jti) {
        return Err(invalid(
            "the proof's jti was used before (a replay)".to_owned(),
        ));
    }
    if expect.nonce {
        match claim("nonce") {
            Some(nonce) if nonce == state.dpop_nonce => {}
            Some(_) => {
                return Err(Refusal::Nonce(
                    "the proof's nonce is not the current one".to_owned(),
                ))
            }
            None => return Err(Refusal::Nonce("the proof has no nonce".to_owned())),
        }
    }
    state.dpop_jti.insert(jti.to_owned());
    Ok(jkt)
}

/// The JWK SHA-256 thumbprint of a public key (RFC 7638): its required
/// members, in lexicographic order, without whitespace, hashed.
pub(crate) fn thumbprint(jwk: &Map<String, Value>) -> Result<String, String> {
    let required: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("RSA") => &["e", "kty", "n"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => return Err("no kty this server knows".to_owned()),
    };
    let mut members = Vec::new();
    for name in required {
        let Some(value) = jwk.get(*name).and_then(Value::as_str) else {
            return Err(format!("no member {name:?}"));
        };
        members.push(format!("{}:{}", Value::from(*name), Value::from(value)));
    }
    let canonical = format!("{{{}}}", members.join(","));
    Ok(URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes())))
}

/// The URL `request` was sent to, as `htu` must name it: this server's
/// scheme, the `Host` the client sent (this server's address without one),
/// and the path without query.
fn request_url(state: &State, request: &RecordedRequest) -> String {
    let base = state.token_url.trim_end_matches("/token");
    let origin = match request.header("host") {
        Some(host) => format!("http://{host}"),
        None => base.to_owned(),
    };
    let path = request.path.split('?').next().unwrap_or("");
    normalize(&format!("{origin}{path}")).unwrap_or_default()
}

/// `url` without query and fragment, its scheme and host lowercased, a
/// default port dropped and an empty path made `/` (the normalizations of
/// RFC 3986 §6.2.2 and §6.2.3 that RFC 9449 §4.3 allows); `None` for what
/// is not an absolute http(s) URL.
fn normalize(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

/// A new nonce: unpredictable, and readable in logs.
pub(crate) fn new_nonce() -> String {
    format!("n-{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7638_example_thumbprint() {
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29",
        });
        let Value::Object(jwk) = jwk else {
            unreachable!()
        };
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn htu_ignores_query_fragment_case_and_default_port() {
        assert_eq!(
            normalize("HTTP://Example.COM:80/a/B?x=1#f").as_deref(),
            Some("http://example.com/a/B")
        );
        assert_eq!(normalize("https://h:443").as_deref(), Some("https://h/"));
        assert_eq!(
            normalize("http://h:8080/p").as_deref(),
            Some("http://h:8080/p")
        );
        assert_eq!(normalize("ftp://h/p"), None);
        assert_eq!(normalize("/token"), None);
        assert_eq!(normalize("http://user@h/p"), None);
    }
}
