//! DPoP proofs (RFC 9449) read and checked on the test side, with ring,
//! independently of the library: the signature against the `jwk` the
//! proof carries, the thumbprint of that `jwk` (RFC 7638) and `ath`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;

/// A proof whose signature checked out: its header and claims.
#[derive(Debug)]
pub struct Proof {
    pub header: Value,
    pub claims: Value,
}

impl Proof {
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

fn b64(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url without padding")
}

/// Decodes `proof` and checks its signature with the public key in its
/// header; panics when anything is off.
pub fn verify(proof: &str) -> Proof {
    let parts: Vec<&str> = proof.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {proof}");
    let header: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    let claims: Value = serde_json::from_slice(&b64(parts[1])).unwrap();
    let message = format!("{}.{}", parts[0], parts[1]);
    let signature = b64(parts[2]);
    let jwk = &header["jwk"];
    let member = |name: &str| b64(jwk[name].as_str().unwrap_or_else(|| panic!("jwk.{name}")));
    let verified = match header["alg"].as_str().unwrap() {
        "ES256" => {
            let mut point = vec![4];
            point.extend(member("x"));
            point.extend(member("y"));
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message.as_bytes(), &signature)
        }
        "EdDSA" => UnparsedPublicKey::new(&signature::ED25519, member("x"))
            .verify(message.as_bytes(), &signature),
        alg @ ("RS256" | "PS256") => {
            let params = if alg == "RS256" {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PSS_2048_8192_SHA256
            };
            signature::RsaPublicKeyComponents {
                n: member("n"),
                e: member("e"),
            }
            .verify(params, message.as_bytes(), &signature)
        }
        other => panic!("unexpected alg {other}"),
    };
    verified.unwrap_or_else(|_| panic!("the proof's signature does not verify: {header}"));
    Proof { header, claims }
}

/// The RFC 7638 thumbprint of `jwk`: its required members, sorted,
/// without whitespace, hashed with SHA-256.
pub fn thumbprint(jwk: &Value) -> String {
    let names: &[&str] = match jwk["kty"].as_str().unwrap() {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => panic!("kty {other}"),
    };
    let members: BTreeMap<&str, &str> = names
        .iter()
        .map(|&n| (n, jwk[n].as_str().unwrap()))
        .collect();
    let canonical = serde_json::to_string(&members).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// `ath` of `access_token`: base64url of its SHA-256.
pub fn ath(access_token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A GET of the resource at `url` with `authorization` and, if given, a
/// `DPoP` proof, as a script's curl would send them, over a new
/// connection: the status and the response's headers (names lowercased).
pub fn resource_get(
    url: &str,
    authorization: &str,
    proof: Option<&str>,
) -> (u16, Vec<(String, String)>) {
    use std::io::{Read as _, Write as _};
    let url = url::Url::parse(url).unwrap();
    let address = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: {authorization}\r\n",
        &url[url::Position::BeforePath..]
    );
    if let Some(proof) = proof {
        head.push_str(&format!("DPoP: {proof}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let mut lines = response.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}
