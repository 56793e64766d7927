//! Helpers shared by the test files: a hand-written HTTP/1.1 client, and
//! JWTs signed with ring (ES256, EdDSA, RS256 keys) for client assertions
//! and DPoP proofs.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use local_authority::LocalAuthority;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

pub const FORM: &str = "application/x-www-form-urlencoded";

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_string()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

pub fn request_bytes(path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    request_bytes_with("POST", path, headers, body)
}

/// A request with `method`; `Host: localhost` unless `headers` has a `Host`.
pub fn request_bytes_with(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        out.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// Reads one response; `None` if the connection closed before any byte.
pub fn read_response(stream: &mut TcpStream) -> Option<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) if buf.is_empty() => return None,
            Ok(0) => panic!("closed inside a head: {:?}", String::from_utf8_lossy(&buf)),
            Ok(_) => buf.push(byte[0]),
            Err(e) if buf.is_empty() && e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.trim_end().split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    Some(Response {
        status,
        headers,
        body,
    })
}

/// One POST on a fresh connection.
pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    send(addr, "POST", path, headers, body)
}

/// One request on a fresh connection.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut stream = connect(addr);
    stream
        .write_all(&request_bytes_with(method, path, headers, body))
        .unwrap();
    read_response(&mut stream).expect("a response")
}

/// A `/token` request with `client_secret_post` as `client-a`.
pub fn token_post(authority: &LocalAuthority, params: &str) -> Response {
    let body = format!("client_id=client-a&client_secret=secret-a&{params}");
    post(authority.addr(), "/token", &[("Content-Type", FORM)], &body)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A compact JWS of `header` and `claims`, signed by `sign`.
pub fn jwt(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A private key that signs JWTs.
pub enum TestKey {
    /// P-256, for ES256.
    Es256(EcdsaKeyPair),
    /// Ed25519, for EdDSA.
    Ed25519(Ed25519KeyPair),
    /// RSA, for RS256.
    Rs256(RsaKeyPair),
}

impl TestKey {
    /// A new P-256 key.
    pub fn es256() -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        TestKey::Es256(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    /// A new Ed25519 key.
    pub fn ed25519() -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        TestKey::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// The repository's RSA 2048 test key (`tests/keys/test-rsa2048.pem`).
    pub fn rs256() -> TestKey {
        let pem = include_str!("../../../../tests/keys/test-rsa2048.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        TestKey::Rs256(RsaKeyPair::from_pkcs8(&der).unwrap())
    }

    /// The algorithm it signs with.
    pub fn alg(&self) -> &'static str {
        match self {
            TestKey::Es256(_) => "ES256",
            TestKey::Ed25519(_) => "EdDSA",
            TestKey::Rs256(_) => "RS256",
        }
    }

    /// Its public JWK.
    pub fn jwk(&self) -> Value {
        match self {
            TestKey::Es256(key) => {
                let point = key.public_key().as_ref();
                json!({
                    "kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                })
            }
            TestKey::Ed25519(key) => json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
            }),
            TestKey::Rs256(key) => {
                let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(key.public());
                json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(public.n),
                    "e": URL_SAFE_NO_PAD.encode(public.e),
                })
            }
        }
    }

    /// The raw signature of `input`.
    pub fn signature(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::Es256(key) => key.sign(&rng, input).unwrap().as_ref().to_vec(),
            TestKey::Ed25519(key) => key.sign(input).as_ref().to_vec(),
            TestKey::Rs256(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, input, &mut signature)
                    .unwrap();
                signature
            }
        }
    }

    /// A JWT of `claims` with the header `{"alg": alg}`, signed by this key
    /// whatever `alg` says.
    pub fn sign(&self, alg: &str, claims: &Value) -> String {
        self.sign_with(&json!({ "alg": alg }), claims)
    }

    /// A JWT of `header` and `claims`, signed by this key.
    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        jwt(header, claims, |input| self.signature(input))
    }
}
