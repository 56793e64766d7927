//! Client authentication by a JWT assertion (RFC 7523 §2.2, OpenID Connect
//! Core §9): `private_key_jwt` checked against a registered public key (a
//! JWK), `client_secret_jwt` against the client's secret. Everything is
//! checked for real: the signature, `iss`, `sub`, `aud`, `exp`, `nbf`,
//! `iat`, and that a `jti` is never used twice.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{json, Map, Value};

use crate::State;

/// The `client_assertion_type` of a JWT (RFC 7523 §2.2).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How far ahead of this server's clock an `iat` or `nbf` may be.
const LEEWAY_S: u64 = 60;

/// A client's registered public key.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    /// P-256: the uncompressed point.
    Ec(Vec<u8>),
    /// RSA: modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Ed25519: the 32-byte key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Reads a public JWK: `EC` on `P-256`, `RSA`, or `OKP` on `Ed25519`.
    pub(crate) fn from_jwk(jwk: &str) -> Result<PublicKey, String> {
        let jwk: Value = serde_json::from_str(jwk).map_err(|e| format!("not JSON: {e}"))?;
        PublicKey::from_jwk_value(&jwk)
    }

    /// [`from_jwk`](Self::from_jwk) for a JWK already parsed.
    pub(crate) fn from_jwk_value(jwk: &Value) -> Result<PublicKey, String> {
        let member = |name: &str| -> Result<Vec<u8>, String> {
            let text = jwk[name]
                .as_str()
                .ok_or_else(|| format!("no member {name:?}"))?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|e| format!("{name}: {e}"))
        };
        match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
            (Some("EC"), Some("P-256")) => Ok(PublicKey::Ec(
                [vec![4], member("x")?, member("y")?].concat(),
            )),
            (Some("RSA"), _) => Ok(PublicKey::Rsa {
                n: member("n")?,
                e: member("e")?,
            }),
            (Some("OKP"), Some("Ed25519")) => Ok(PublicKey::Ed25519(member("x")?)),
            _ => Err("a key other than EC P-256, RSA or Ed25519".to_owned()),
        }
    }

    /// Whether `signature` is `alg`'s signature of `input` with this key.
    pub(crate) fn verifies(&self, alg: &str, input: &[u8], signature: &[u8]) -> bool {
        match (self, alg) {
            (PublicKey::Ec(point), "ES256") => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input, signature)
                    .is_ok()
            }
            (PublicKey::Rsa { n, e }, "RS256" | "PS256") => {
                let params = if alg == "PS256" {
                    &signature::RSA_PSS_2048_8192_SHA256
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, input, signature)
                    .is_ok()
            }
            (PublicKey::Ed25519(key), "EdDSA") => UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(input, signature)
                .is_ok(),
            _ => false,
        }
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A compact JWS taken apart; nothing verified yet.
pub(crate) struct Jws<'a> {
    /// The protected header.
    pub(crate) header: Map<String, Value>,
    /// The payload, a JSON object.
    pub(crate) claims: Map<String, Value>,
    /// The signature, decoded.
    pub(crate) signature: Vec<u8>,
    /// What the signature signs: `header.payload` as sent.
    pub(crate) input: &'a str,
}

impl<'a> Jws<'a> {
    /// Splits and decodes `jws`, or says why it is not a JWT (to follow
    /// "the assertion" or "the proof").
    pub(crate) fn decode(jws: &'a str) -> Result<Jws<'a>, &'static str> {
        let mut parts = jws.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("is not a compact JWS");
        };
        let object = |part: &str| -> Option<Map<String, Value>> {
            match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            }
        };
        let (Some(header), Some(claims), Ok(signature)) = (
            object(header),
            object(payload),
            URL_SAFE_NO_PAD.decode(signature),
        ) else {
            return Err("is not a well-formed JWT");
        };
        Ok(Jws {
            header,
            claims,
            signature,
            input: &jws[..jws.rfind('.').unwrap_or(0)],
        })
    }
}

/// The claims of `assertion` once everything but its `jti` checks out:
/// a compact JWS signed by its issuer's registered key (or, for HS256, the
/// issuer's client secret), for `token_url` or an accepted audience, within
/// its times, with a `jti` not seen before. [`spend`] records the `jti`.
pub(crate) fn verify(
    state: &State,
    assertion: &str,
    token_url: &str,
) -> Result<Map<String, Value>, String> {
    let Jws {
        header,
        claims,
        signature,
        input,
    } = Jws::decode(assertion).map_err(|why| format!("the assertion {why}"))?;

    let Some(iss) = claims.get("iss").and_then(Value::as_str) else {
        return Err("the assertion has no iss".to_owned());
    };
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let signed = if alg == "HS256" {
        let Some(secret) = state.clients.get(iss) else {
            return Err("unknown client, or no secret for HS256".to_owned());
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::verify(&key, input.as_bytes(), &signature).is_ok()
    } else {
        let Some(key) = state.client_keys.get(iss) else {
            return Err("unknown client, or no public key registered".to_owned());
        };
        key.verifies(alg, input.as_bytes(), &signature)
    };
    if !signed {
        return Err(format!(
            "the assertion's {alg} signature does not verify with the issuer's key"
        ));
    }

    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let issuer = state.issuer();
    let accepted = |aud: &&str| {
        *aud == token_url || *aud == issuer || state.audiences.iter().any(|a| a == aud)
    };
    if !audiences.iter().any(accepted) {
        return Err("the assertion's aud is neither this token endpoint nor its issuer".to_owned());
    }

    let now = now_s();
    let time = |name: &str| claims.get(name).and_then(Value::as_u64);
    match time("exp") {
        Some(exp) if exp > now => {}
        Some(_) => return Err("the assertion has expired".to_owned()),
        None => return Err("the assertion has no exp".to_owned()),
    }
    if time("nbf").is_some_and(|nbf| nbf > now + LEEWAY_S) {
        return Err("the assertion is not valid yet (nbf)".to_owned());
    }
    if time("iat").is_some_and(|iat| iat > now + LEEWAY_S) {
        return Err("the assertion was issued in the future (iat)".to_owned());
    }
    match claims.get("jti").and_then(Value::as_str) {
        None => return Err("the assertion has no jti".to_owned()),
        Some(jti) if state.seen_jti.contains(jti) => {
            return Err("the assertion's jti was used before (a replay)".to_owned())
        }
        Some(_) => {}
    }
    Ok(claims)
}

/// Records the `jti` of verified `claims`: the assertion is used up.
pub(crate) fn spend(state: &mut State, claims: &Map<String, Value>) {
    if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
        state.seen_jti.insert(jti.to_owned());
    }
}

/// The client `assertion` authenticates (RFC 7523 §2.2: its issuer and
/// subject are the client), or why it does not. `client_id` is the
/// body's, if sent.
pub(crate) fn authenticate(
    state: &mut State,
    assertion: &str,
    client_id: Option<&str>,
    token_url: &str,
) -> Result<String, String> {
    let claims = verify(state, assertion, token_url)?;
    let iss = claims.get("iss").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    let client = match (iss, sub) {
        (Some(iss), Some(sub)) if iss == sub => iss.to_owned(),
        _ => return Err("the assertion's iss and sub must both be the client id".to_owned()),
    };
    if client_id.is_some_and(|id| id != client) {
        return Err("client_id differs from the assertion's issuer".to_owned());
    }
    spend(state, &claims);
    Ok(client)
}

/// An HS256 assertion for `client_id`, signed with `secret`, valid for
/// `lifetime_s` seconds, with a new `jti`.
pub(crate) fn mint_hs256(client_id: &str, secret: &str, audience: &str, lifetime_s: u64) -> String {
    let now = now_s();
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": format!("{:032x}", fastrand::u128(..)),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signature = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}
