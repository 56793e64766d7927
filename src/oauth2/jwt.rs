//! Signed JWTs for client authentication (RFC 7523 §2.2, OpenID Connect
//! Core §9): the private key of `private_key_jwt`, its algorithm, and the
//! signing of compact JWS, on ring (the crypto rustls already builds).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Map, Value};
use zeroize::Zeroize as _;

/// The largest key file read: an 8192-bit RSA key in PEM is under 7 KiB.
pub(crate) const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The smallest RSA modulus accepted, in bits (RFC 7518 §3.3 and §3.5).
const MIN_RSA_BITS: usize = 2048;

/// How a [`PrivateKey`] signs: the JWS `alg` (RFC 7518, RFC 8037).
///
/// A key's algorithm follows from the key (ES256 for an EC P-256 key, RS256
/// for RSA, EdDSA for Ed25519) unless [`PrivateKey::with_algorithm`] picks
/// another one the key can make (PS256 for RSA).
///
/// ```
/// use tokenkeeper::oauth2::SigningAlgorithm;
///
/// let alg: SigningAlgorithm = "PS256".parse().unwrap();
/// assert_eq!(alg, SigningAlgorithm::Ps256);
/// assert_eq!(SigningAlgorithm::EdDsa.to_string(), "EdDSA");
/// assert!("HS256".parse::<SigningAlgorithm>().is_err()); // not a private-key algorithm
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256 (MGF1 with SHA-256, a 32-byte salt).
    Ps256,
    /// EdDSA on Ed25519 (RFC 8037).
    EdDsa,
}

impl SigningAlgorithm {
    /// The JWS name: `ES256`, `RS256`, `PS256` or `EdDSA`.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::Rs256 => "RS256",
            SigningAlgorithm::Ps256 => "PS256",
            SigningAlgorithm::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = KeyError;

    /// Parses a JWS name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        [
            SigningAlgorithm::Es256,
            SigningAlgorithm::Rs256,
            SigningAlgorithm::Ps256,
            SigningAlgorithm::EdDsa,
        ]
        .into_iter()
        .find(|alg| alg.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| KeyError::UnknownAlgorithm(s.to_owned()))
    }
}

/// A private key that signs client assertions (`private_key_jwt`).
///
/// Made from PEM (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`, SEC1
/// `EC PRIVATE KEY`) or DER: an EC P-256 key (ES256), an RSA key of at
/// least 2048 bits (RS256, or PS256), or an Ed25519 key (EdDSA). Everything
/// that cannot sign (an encrypted key, a public key or certificate, another
/// curve, a small RSA key, garbage) is a [`KeyError`] when the key is made,
/// never a failure later.
///
/// The key material never prints: `Debug` shows the algorithm and the key
/// id, and no error quotes the input. Register the public half with the
/// authority, as a JWK from [`public_jwk`](Self::public_jwk) or the public
/// key openssl derives (`openssl pkey -in key.pem -pubout`).
///
/// ```
/// use tokenkeeper::oauth2::{PrivateKey, SigningAlgorithm};
///
/// let pem = include_str!("../../tests/keys/test-rsa2048.pem"); // a test-only key
/// let key = PrivateKey::from_pem(pem)?
///     .with_algorithm(SigningAlgorithm::Ps256)?
///     .with_key_id("2024-01");
/// assert_eq!(key.algorithm(), SigningAlgorithm::Ps256);
/// assert_eq!(format!("{key:?}"), r#"PrivateKey { algorithm: Ps256, key_id: Some("2024-01"), .. }"#);
/// # Ok::<(), tokenkeeper::oauth2::KeyError>(())
/// ```
#[derive(Clone)]
pub struct PrivateKey {
    signer: Arc<Signer>,
    algorithm: SigningAlgorithm,
    key_id: Option<String>,
}

/// A parsed key pair. ring's types hold the private key and never expose
/// it.
enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    /// What kind of key this is, as error messages name it.
    fn kind(&self) -> &'static str {
        match self {
            Signer::Ecdsa(_) => "EC P-256",
            Signer::Rsa(_) => "RSA",
            Signer::Ed25519(_) => "Ed25519",
        }
    }

    /// The algorithm a key of this kind signs with unless told otherwise.
    fn default_algorithm(&self) -> SigningAlgorithm {
        match self {
            Signer::Ecdsa(_) => SigningAlgorithm::Es256,
            Signer::Rsa(_) => SigningAlgorithm::Rs256,
            Signer::Ed25519(_) => SigningAlgorithm::EdDsa,
        }
    }

    fn can_sign(&self, algorithm: SigningAlgorithm) -> bool {
        matches!(
            (self, algorithm),
            (Signer::Ecdsa(_), SigningAlgorithm::Es256)
                | (
                    Signer::Rsa(_),
                    SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256
                )
                | (Signer::Ed25519(_), SigningAlgorithm::EdDsa)
        )
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads a key from PEM text: the first `PRIVATE KEY` (PKCS#8),
    /// `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1) block; other
    /// blocks (a certificate chain after the key) are skipped.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] for an encrypted key, PEM without a private key, or
    /// a key that cannot sign (see [`PrivateKey`]).
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<PrivateKey, KeyError> {
        let pem = pem.as_ref();
        if is_encrypted_pem(pem) {
            return Err(KeyError::Encrypted);
        }
        match PrivateKeyDer::from_pem_slice(pem) {
            Ok(mut der) => {
                let key = match &der {
                    PrivateKeyDer::Pkcs8(der) => from_pkcs8(der.secret_pkcs8_der()),
                    PrivateKeyDer::Pkcs1(der) => from_pkcs1(der.secret_pkcs1_der()),
                    PrivateKeyDer::Sec1(der) => from_sec1(der.secret_sec1_der()),
                    _ => Err(KeyError::Malformed),
                };
                der.zeroize();
                key
            }
            Err(pem::Error::NoItemsFound) if contains(pem, b"-----BEGIN ") => {
                Err(KeyError::NoPrivateKey)
            }
            Err(pem::Error::NoItemsFound) => Err(KeyError::NotPem),
            // Its text may quote a line of the input: not kept.
            Err(_) => Err(KeyError::Malformed),
        }
    }

    /// Reads a key from DER bytes: PKCS#8, PKCS#1 (RSA) or SEC1 (EC),
    /// told apart by their structure.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] for bytes that are none of those, or a key that
    /// cannot sign (see [`PrivateKey`]).
    pub fn from_der(der: impl AsRef<[u8]>) -> Result<PrivateKey, KeyError> {
        let der = der.as_ref();
        let (tag, body, _) = der::read(der).ok_or(KeyError::Malformed)?;
        if tag != der::SEQUENCE {
            return Err(KeyError::Malformed);
        }
        let (_version, rest) = der::expect(body, der::INTEGER).ok_or(KeyError::Malformed)?;
        match rest.first() {
            Some(&der::SEQUENCE) => from_pkcs8(der),
            Some(&der::INTEGER) => from_pkcs1(der),
            Some(&der::OCTET_STRING) => from_sec1(der),
            _ => Err(KeyError::Malformed),
        }
    }

    /// Reads a key from the file at `path`: PEM, or DER.
    ///
    /// # Errors
    ///
    /// [`KeyError::Read`] when the file cannot be read (or is larger than
    /// 64 KiB, which no key is); otherwise as
    /// [`from_pem`](Self::from_pem) and [`from_der`](Self::from_der).
    pub fn from_file(path: impl AsRef<Path>) -> Result<PrivateKey, KeyError> {
        use std::io::Read as _;
        let path = path.as_ref();
        let read_error = |error| KeyError::Read {
            path: path.to_owned(),
            error,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        let read = file
            .take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error);
        let key = match read {
            Err(e) => Err(e),
            Ok(_) if bytes.len() as u64 > MAX_KEY_FILE_BYTES => Err(read_error(
                std::io::Error::other("larger than 64 KiB: not a key"),
            )),
            Ok(_) => PrivateKey::from_key_bytes(&bytes),
        };
        bytes.zeroize();
        key
    }

    /// A key from the bytes of a key file: DER when they start as DER
    /// does, else PEM.
    pub(crate) fn from_key_bytes(bytes: &[u8]) -> Result<PrivateKey, KeyError> {
        if bytes.first() == Some(&der::SEQUENCE) {
            PrivateKey::from_der(bytes)
        } else {
            PrivateKey::from_pem(bytes)
        }
    }

    /// Signs with `algorithm` instead of the key's own (RS256 by default
    /// for RSA: PS256 is the other choice).
    ///
    /// # Errors
    ///
    /// [`KeyError::AlgorithmMismatch`] when the key cannot make it (RS256
    /// with an EC key, say).
    pub fn with_algorithm(mut self, algorithm: SigningAlgorithm) -> Result<PrivateKey, KeyError> {
        if !self.signer.can_sign(algorithm) {
            return Err(KeyError::AlgorithmMismatch {
                key: self.signer.kind(),
                algorithm,
            });
        }
        self.algorithm = algorithm;
        Ok(self)
    }

    /// Names the key in the JWS header (`kid`), for an authority that
    /// holds several keys of the client.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> PrivateKey {
        self.key_id = Some(key_id.into());
        self
    }

    /// The algorithm it signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The key id sent as `kid`, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The public key as a JWK (RFC 7517), with `alg`, `use: "sig"` and
    /// the key id: what to register with an authority that takes JWKs (or
    /// to publish in a JWKS document).
    ///
    /// ```
    /// use tokenkeeper::oauth2::PrivateKey;
    ///
    /// let key = PrivateKey::from_pem(include_str!("../../tests/keys/test-es256.pem"))?.with_key_id("k1");
    /// let jwk: serde_json::Value = serde_json::from_str(&key.public_jwk()).unwrap();
    /// assert_eq!(jwk["kty"], "EC");
    /// assert_eq!(jwk["crv"], "P-256");
    /// assert_eq!(jwk["kid"], "k1");
    /// assert!(jwk.get("d").is_none()); // never the private part
    /// # Ok::<(), tokenkeeper::oauth2::KeyError>(())
    /// ```
    pub fn public_jwk(&self) -> String {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &*self.signer {
            Signer::Ecdsa(key) => {
                // The uncompressed point: 0x04, then x and y.
                let point = key.public_key().as_ref();
                let (x, y) = point.get(1..).unwrap_or_default().split_at(32);
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
            }
            Signer::Rsa(key) => {
                let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
                json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)})
            }
            Signer::Ed25519(key) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref())})
            }
        };
        jwk["alg"] = self.algorithm.as_str().into();
        jwk["use"] = "sig".into();
        if let Some(kid) = &self.key_id {
            jwk["kid"] = kid.as_str().into();
        }
        jwk.to_string()
    }

    /// The public key's required JWK members alone, in lexicographic
    /// order and without whitespace: the input of an RFC 7638 thumbprint,
    /// and the `jwk` a DPoP proof carries.
    pub(crate) fn canonical_public_jwk(&self) -> String {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        // Every member is base64url or a fixed name: nothing to escape.
        match &*self.signer {
            Signer::Ecdsa(key) => {
                let point = key.public_key().as_ref();
                let (x, y) = point.get(1..).unwrap_or_default().split_at(32);
                format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    b64(x),
                    b64(y)
                )
            }
            Signer::Rsa(key) => {
                let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
                format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    b64(&public.e),
                    b64(&public.n)
                )
            }
            Signer::Ed25519(key) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64(key.public_key().as_ref())
            ),
        }
    }

    /// The signature of `message` (the JWS signing input).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        match &*self.signer {
            Signer::Ecdsa(key) => Ok(key.sign(&rng, message)?.as_ref().to_vec()),
            Signer::Rsa(key) => {
                let padding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    SigningAlgorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(padding, &rng, message, &mut out)?;
                Ok(out)
            }
            Signer::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
        }
    }
}

/// What signs a client assertion: a private key, or the client secret as
/// an HMAC key (`client_secret_jwt`, HS256).
#[derive(Clone)]
pub(crate) enum JwtSigner {
    Key(PrivateKey),
    Hs256(ring::hmac::Key),
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtSigner::Key(key) => key.fmt(f),
            JwtSigner::Hs256(_) => f.write_str("Hs256(<redacted>)"),
        }
    }
}

impl JwtSigner {
    /// An HS256 key from the octets of `secret` (OpenID Connect Core §9).
    pub(crate) fn hs256(secret: &str) -> JwtSigner {
        JwtSigner::Hs256(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            secret.as_bytes(),
        ))
    }

    fn algorithm(&self) -> &'static str {
        match self {
            JwtSigner::Key(key) => key.algorithm.as_str(),
            JwtSigner::Hs256(_) => "HS256",
        }
    }

    /// A compact JWS (a JWT) of `claims`: `header.payload.signature`,
    /// each base64url without padding; the header names the algorithm,
    /// `typ: JWT` and the key id.
    pub(crate) fn sign_jwt(&self, claims: &Map<String, Value>) -> Result<String, SignError> {
        let mut header = json!({"alg": self.algorithm(), "typ": "JWT"});
        if let JwtSigner::Key(PrivateKey {
            key_id: Some(kid), ..
        }) = self
        {
            header["kid"] = kid.as_str().into();
        }
        let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(Value::Object(claims.clone()).to_string(), &mut jwt);
        let signature = match self {
            JwtSigner::Key(key) => key.sign(jwt.as_bytes())?,
            JwtSigner::Hs256(key) => ring::hmac::sign(key, jwt.as_bytes()).as_ref().to_vec(),
        };
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }
}

/// 16 random bytes in base64url: a `jti` no other assertion shares.
pub(crate) fn random_jti() -> Result<String, SignError> {
    let bytes: [u8; 16] = ring::rand::generate(&SystemRandom::new())?.expose();
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// How long an assertion this library signs is valid: long enough for a
/// slow request and some clock skew, short enough that a leaked one is soon
/// useless.
const ASSERTION_LIFETIME_S: u64 = 60;

/// What an assertion says (RFC 7523 §3), before the claims of its use.
pub(crate) struct AssertionClaims<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) subject: Option<&'a str>,
    pub(crate) audience: &'a str,
    /// Now, in ms since the Unix epoch, on the fetch's clock.
    pub(crate) now_ms: u64,
}

impl AssertionClaims<'_> {
    /// The assertion signed by `signer`: `iss`, `sub` when given, `aud`, a
    /// new random `jti` (so a server that remembers them never sees one
    /// twice, even for a retried request), `iat` and `nbf` now, `exp` a
    /// minute later, then `extra` claims.
    pub(crate) fn sign(
        &self,
        signer: &JwtSigner,
        extra: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<String, SignError> {
        let now = self.now_ms / 1000;
        let mut claims = Map::new();
        claims.insert("iss".into(), self.issuer.into());
        if let Some(subject) = self.subject {
            claims.insert("sub".into(), subject.into());
        }
        claims.insert("aud".into(), self.audience.into());
        claims.insert("jti".into(), random_jti()?.into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), (now + ASSERTION_LIFETIME_S).into());
        claims.extend(extra);
        signer.sign_jwt(&claims)
    }
}

/// Signing failed: the system's random source did not answer. Nothing in
/// it names the key.
#[derive(Debug)]
pub(crate) struct SignError;

impl From<ring::error::Unspecified> for SignError {
    fn from(_: ring::error::Unspecified) -> SignError {
        SignError
    }
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signing the client assertion failed (no randomness from the system)")
    }
}

impl std::error::Error for SignError {}

/// A private key that cannot sign. No variant holds or quotes key
/// material.
///
/// ```
/// use tokenkeeper::oauth2::{KeyError, PrivateKey};
///
/// let err = PrivateKey::from_pem(include_str!("../../tests/keys/test-rsa1024.pem")).unwrap_err();
/// assert!(matches!(err, KeyError::RsaTooSmall { bits: 1024 }));
/// assert_eq!(err.to_string(), "the RSA key has 1024 bits; at least 2048 are needed");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The key is encrypted (`ENCRYPTED PRIVATE KEY`, or a legacy PEM with
    /// `Proc-Type: 4,ENCRYPTED`): decrypt it first.
    Encrypted,
    /// PEM without a private key (a public key, a certificate).
    NoPrivateKey,
    /// Neither PEM nor DER.
    NotPem,
    /// Not a well-formed PKCS#8, PKCS#1 or SEC1 key.
    Malformed,
    /// A kind of key no supported algorithm uses (another curve, DSA,
    /// Ed448, an EC key stored without its public key).
    Unsupported(String),
    /// An RSA key under 2048 bits.
    RsaTooSmall {
        /// The modulus' length.
        bits: usize,
    },
    /// ring refused the key (inconsistent components, a public exponent
    /// out of range, a modulus over 8192 bits), for this reason: one of
    /// ring's fixed words, never key material.
    Rejected(String),
    /// The algorithm asked for cannot be made with this kind of key.
    AlgorithmMismatch {
        /// The kind of key (`RSA`, `EC P-256`, `Ed25519`).
        key: &'static str,
        /// The algorithm asked for.
        algorithm: SigningAlgorithm,
    },
    /// An algorithm name that is not ES256, RS256, PS256 or EdDSA.
    UnknownAlgorithm(String),
    /// A key file that is not private to this user
    /// ([`DpopKey::load_or_create`](crate::oauth2::DpopKey::load_or_create)
    /// refuses it): another user owns it, group or others may read or
    /// write it, or it is not a regular file.
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why it is not trusted.
        reason: String,
    },
    /// A new key file could not be written, or the system gave no
    /// randomness to make a key (then `path` is empty).
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Read { path, error } => {
                write!(
                    f,
                    "cannot read the private key file {}: {error}",
                    path.display()
                )
            }
            KeyError::Encrypted => f.write_str(
                "the private key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
            ),
            KeyError::NoPrivateKey => f.write_str(
                "the PEM holds no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY); \
                 a public key or a certificate cannot sign",
            ),
            KeyError::NotPem => f.write_str("not a PEM or DER private key"),
            KeyError::Malformed => {
                f.write_str("the private key is not well-formed PKCS#8, PKCS#1 or SEC1")
            }
            KeyError::Unsupported(what) => write!(
                f,
                "unsupported key: {what}; supported are EC P-256 (ES256), RSA of 2048 bits or \
                 more (RS256, PS256) and Ed25519 (EdDSA)"
            ),
            KeyError::RsaTooSmall { bits } => write!(
                f,
                "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
            ),
            KeyError::Rejected(why) => write!(f, "the private key was rejected: {why}"),
            KeyError::AlgorithmMismatch { key, algorithm } => {
                write!(f, "{algorithm} cannot be signed with an {key} key")
            }
            KeyError::UnknownAlgorithm(name) => write!(
                f,
                "unknown signing algorithm {name:?}; expected ES256, RS256, PS256 or EdDSA"
            ),
            KeyError::Untrusted { path, reason } => write!(
                f,
                "refusing the key file {}: {reason}; it must be a regular file of this user \
                 that only this user may read (chmod 600)",
                path.display()
            ),
            KeyError::Create { path, error } if path.as_os_str().is_empty() => {
                write!(f, "cannot make a key: {error}")
            }
            KeyError::Create { path, error } => {
                write!(f, "cannot create the key file {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { error, .. } | KeyError::Create { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Whether `pem` holds an encrypted private key, in either PEM form.
fn is_encrypted_pem(pem: &[u8]) -> bool {
    contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(pem, b"Proc-Type: 4,ENCRYPTED")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn new_key(signer: Signer) -> PrivateKey {
    PrivateKey {
        algorithm: signer.default_algorithm(),
        signer: Arc::new(signer),
        key_id: None,
    }
}

fn rejected(e: ring::error::KeyRejected) -> KeyError {
    KeyError::Rejected(e.to_string())
}

/// A PKCS#8 `PrivateKeyInfo`: its algorithm decides how it is read.
fn from_pkcs8(der: &[u8]) -> Result<PrivateKey, KeyError> {
    let (_, info, _) = der::read(der).ok_or(KeyError::Malformed)?;
    let (_version, rest) = der::expect(info, der::INTEGER).ok_or(KeyError::Malformed)?;
    let (algorithm, rest) = der::expect(rest, der::SEQUENCE).ok_or(KeyError::Malformed)?;
    let (private_key, _) = der::expect(rest, der::OCTET_STRING).ok_or(KeyError::Malformed)?;
    let (oid, params) = der::expect(algorithm, der::OID).ok_or(KeyError::Malformed)?;
    match oid {
        der::RSA_ENCRYPTION => {
            check_rsa_size(private_key)?;
            RsaKeyPair::from_pkcs8(der)
                .map(|key| new_key(Signer::Rsa(key)))
                .map_err(rejected)
        }
        der::EC_PUBLIC_KEY => {
            let curve = der::expect(params, der::OID).map(|(curve, _)| curve);
            if curve != Some(der::P256) {
                return Err(KeyError::Unsupported(format!(
                    "an EC key on {}",
                    curve.map_or("an unnamed curve".to_owned(), der::curve_name)
                )));
            }
            check_ec_public_key(private_key)?;
            EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
                &SystemRandom::new(),
            )
            .map(|key| new_key(Signer::Ecdsa(key)))
            .map_err(rejected)
        }
        der::ED25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|key| new_key(Signer::Ed25519(key)))
            .map_err(rejected),
        other => Err(KeyError::Unsupported(der::algorithm_name(other))),
    }
}

/// A PKCS#1 `RSAPrivateKey`.
fn from_pkcs1(der: &[u8]) -> Result<PrivateKey, KeyError> {
    check_rsa_size(der)?;
    RsaKeyPair::from_der(der)
        .map(|key| new_key(Signer::Rsa(key)))
        .map_err(rejected)
}

/// A SEC1 `ECPrivateKey`, wrapped in PKCS#8 for ring.
fn from_sec1(der: &[u8]) -> Result<PrivateKey, KeyError> {
    let (_, body, _) = der::read(der).ok_or(KeyError::Malformed)?;
    let (_version, rest) = der::expect(body, der::INTEGER).ok_or(KeyError::Malformed)?;
    let (_, rest) = der::expect(rest, der::OCTET_STRING).ok_or(KeyError::Malformed)?;
    // `[0]` names the curve; without it the key is taken for P-256, and
    // ring's check of the public key against the private one catches a
    // key on another curve.
    if let Some((params, _)) = der::expect(rest, der::CONTEXT_0) {
        let (curve, _) = der::expect(params, der::OID).ok_or(KeyError::Malformed)?;
        if curve != der::P256 {
            return Err(KeyError::Unsupported(format!(
                "an EC key on {}",
                der::curve_name(curve)
            )));
        }
    }
    let mut pkcs8 = der::wrap_sec1_p256(der);
    let key = from_pkcs8(&pkcs8);
    pkcs8.zeroize();
    key
}

/// An RSA key under [`MIN_RSA_BITS`] is refused by name (ring says only
/// that the key was rejected).
fn check_rsa_size(pkcs1: &[u8]) -> Result<(), KeyError> {
    let (_, body, _) = der::read(pkcs1).ok_or(KeyError::Malformed)?;
    let (_version, rest) = der::expect(body, der::INTEGER).ok_or(KeyError::Malformed)?;
    let (modulus, _) = der::expect(rest, der::INTEGER).ok_or(KeyError::Malformed)?;
    let bits = der::unsigned_bits(modulus);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall { bits });
    }
    Ok(())
}

/// ring needs the public key inside an EC key; a key stored without it
/// (RFC 5915 makes it optional) is named as such.
fn check_ec_public_key(ec_private_key: &[u8]) -> Result<(), KeyError> {
    let (_, body, _) = der::read(ec_private_key).ok_or(KeyError::Malformed)?;
    let (_version, rest) = der::expect(body, der::INTEGER).ok_or(KeyError::Malformed)?;
    let (_, mut rest) = der::expect(rest, der::OCTET_STRING).ok_or(KeyError::Malformed)?;
    if let Some((_, after)) = der::expect(rest, der::CONTEXT_0) {
        rest = after;
    }
    if der::expect(rest, der::CONTEXT_1).is_none() {
        return Err(KeyError::Unsupported(
            "an EC key stored without its public key (export it again with openssl pkey)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Just enough DER to tell key formats apart, read their algorithm, and
/// wrap a SEC1 key in PKCS#8.
mod der {
    pub(super) const INTEGER: u8 = 0x02;
    pub(super) const OCTET_STRING: u8 = 0x04;
    pub(super) const OID: u8 = 0x06;
    pub(super) const SEQUENCE: u8 = 0x30;
    pub(super) const CONTEXT_0: u8 = 0xa0;
    pub(super) const CONTEXT_1: u8 = 0xa1;

    /// 1.2.840.113549.1.1.1
    pub(super) const RSA_ENCRYPTION: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// 1.2.840.10045.2.1
    pub(super) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// 1.2.840.10045.3.1.7 (prime256v1, secp256r1)
    pub(super) const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// 1.3.101.112
    pub(super) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

    /// The first element of `input`: its tag, its contents, and what
    /// follows it. `None` for anything malformed.
    pub(super) fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            let len = bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b));
            (len, rest)
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// The contents of the first element of `input` if it has `tag`, and
    /// what follows it.
    pub(super) fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        match read(input)? {
            (found, contents, rest) if found == tag => Some((contents, rest)),
            _ => None,
        }
    }

    /// The length in bits of an unsigned big-endian INTEGER's contents.
    pub(super) fn unsigned_bits(contents: &[u8]) -> usize {
        let digits: &[u8] = match contents.iter().position(|&b| b != 0) {
            Some(first) => &contents[first..],
            None => return 0,
        };
        digits.len() * 8 - digits[0].leading_zeros() as usize
    }

    /// One element: `tag`, the length, `contents`.
    pub(super) fn element(tag: u8, contents: &[u8]) -> Vec<u8> {
        let len = contents.len();
        let mut out = Vec::with_capacity(len + 6);
        out.push(tag);
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// A SEC1 P-256 key as PKCS#8 (RFC 5915 §3, RFC 5958): version 0,
    /// the id-ecPublicKey algorithm on P-256, the SEC1 key as the private
    /// key octets.
    pub(super) fn wrap_sec1_p256(sec1: &[u8]) -> Vec<u8> {
        let algorithm = [element(OID, EC_PUBLIC_KEY), element(OID, P256)].concat();
        let body = [
            element(INTEGER, &[0]),
            element(SEQUENCE, &algorithm),
            element(OCTET_STRING, sec1),
        ]
        .concat();
        element(SEQUENCE, &body)
    }

    /// An OID's dotted form.
    fn dotted(oid: &[u8]) -> String {
        let mut arcs: Vec<u64> = Vec::new();
        let mut value: u64 = 0;
        for &byte in oid {
            value = (value << 7) | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// A name for a curve OID.
    pub(super) fn curve_name(oid: &[u8]) -> String {
        match oid {
            [0x2b, 0x81, 0x04, 0x00, 0x22] => "P-384".to_owned(),
            [0x2b, 0x81, 0x04, 0x00, 0x23] => "P-521".to_owned(),
            [0x2b, 0x81, 0x04, 0x00, 0x0a] => "secp256k1".to_owned(),
            other => format!("the curve {}", dotted(other)),
        }
    }

    /// A name for a key algorithm OID that is not supported.
    pub(super) fn algorithm_name(oid: &[u8]) -> String {
        match oid {
            [0x2b, 0x65, 0x71] => "an Ed448 key".to_owned(),
            [0x2b, 0x65, 0x6e] | [0x2b, 0x65, 0x6f] => {
                "an X25519 or X448 key (not for signing)".to_owned()
            }
            [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01] => "a DSA key".to_owned(),
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a] => {
                "an RSA-PSS-only key (store it as a plain RSA key)".to_owned()
            }
            other => format!("a key of algorithm {}", dotted(other)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lengths_in_short_and_long_form() {
            assert_eq!(
                read(&[0x04, 0x01, 0xaa, 0xff]),
                Some((0x04, &[0xaa][..], &[0xff][..]))
            );
            let long = element(OCTET_STRING, &[7; 300]);
            assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
            assert_eq!(read(&long).map(|(_, c, _)| c.len()), Some(300));
            // Truncated, or a length of zero length bytes.
            assert_eq!(read(&long[..100]), None);
            assert_eq!(read(&[0x04, 0x80]), None);
            assert_eq!(read(&[0x04]), None);
        }

        #[test]
        fn bits_of_a_modulus() {
            assert_eq!(unsigned_bits(&[0x00, 0x80, 0x00]), 16);
            assert_eq!(unsigned_bits(&[0x01, 0xff]), 9);
            assert_eq!(unsigned_bits(&[0, 0]), 0);
        }

        #[test]
        fn oids_read_dotted() {
            assert_eq!(dotted(RSA_ENCRYPTION), "1.2.840.113549.1.1.1");
            assert_eq!(dotted(P256), "1.2.840.10045.3.1.7");
            assert_eq!(curve_name(&[0x2b, 0x81, 0x04, 0x00, 0x22]), "P-384");
            assert_eq!(algorithm_name(&[0x2a, 0x03]), "a key of algorithm 1.2.3");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ES256: &str = include_str!("../../tests/keys/test-es256.pem");
    const ES256_SEC1: &str = include_str!("../../tests/keys/test-es256-sec1.pem");
    const RSA: &str = include_str!("../../tests/keys/test-rsa2048.pem");
    const RSA_PKCS1: &str = include_str!("../../tests/keys/test-rsa2048-pkcs1.pem");
    const ED25519: &str = include_str!("../../tests/keys/test-ed25519.pem");

    /// The DER inside a PEM text's first block.
    fn der_of(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    /// The public key of a SubjectPublicKeyInfo PEM: the BIT STRING's bytes
    /// after its unused-bits byte.
    fn spki_key(pem: &str) -> Vec<u8> {
        let der = der_of(pem);
        let (spki, _) = der::expect(&der, der::SEQUENCE).unwrap();
        let (_, rest) = der::expect(spki, der::SEQUENCE).unwrap();
        let (bits, _) = der::expect(rest, 0x03).unwrap();
        bits[1..].to_vec()
    }

    fn verify(key: &PrivateKey, jwt: &str) {
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let jwk: Value = serde_json::from_str(&key.public_jwk()).unwrap();
        let b64 = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        let result = match key.algorithm {
            SigningAlgorithm::Es256 => {
                let point = [vec![4], b64("x"), b64("y")].concat();
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input.as_bytes(), &signature)
            }
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
                let params = if key.algorithm == SigningAlgorithm::Ps256 {
                    &signature::RSA_PSS_2048_8192_SHA256
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                };
                signature::RsaPublicKeyComponents {
                    n: b64("n"),
                    e: b64("e"),
                }
                .verify(params, input.as_bytes(), &signature)
            }
            SigningAlgorithm::EdDsa => {
                signature::UnparsedPublicKey::new(&signature::ED25519, b64("x"))
                    .verify(input.as_bytes(), &signature)
            }
        };
        result.unwrap_or_else(|_| panic!("{:?}: the signature does not verify", key.algorithm));
    }

    #[test]
    fn the_algorithm_follows_from_the_key() {
        for (pem, alg) in [
            (ES256, SigningAlgorithm::Es256),
            (ES256_SEC1, SigningAlgorithm::Es256),
            (RSA, SigningAlgorithm::Rs256),
            (RSA_PKCS1, SigningAlgorithm::Rs256),
            (ED25519, SigningAlgorithm::EdDsa),
        ] {
            let key = PrivateKey::from_pem(pem).unwrap();
            assert_eq!(key.algorithm(), alg);
            // The same key from its DER.
            assert_eq!(
                PrivateKey::from_der(der_of(pem)).unwrap().public_jwk(),
                key.public_jwk()
            );
        }
    }

    #[test]
    fn signatures_verify_with_the_public_jwk_for_every_algorithm() {
        let mut claims = Map::new();
        claims.insert("iss".into(), "client-a".into());
        for (pem, alg) in [
            (ES256, SigningAlgorithm::Es256),
            (ES256_SEC1, SigningAlgorithm::Es256),
            (RSA, SigningAlgorithm::Rs256),
            (RSA, SigningAlgorithm::Ps256),
            (RSA_PKCS1, SigningAlgorithm::Ps256),
            (ED25519, SigningAlgorithm::EdDsa),
        ] {
            let key = PrivateKey::from_pem(pem)
                .unwrap()
                .with_algorithm(alg)
                .unwrap();
            let jwt = JwtSigner::Key(key.clone()).sign_jwt(&claims).unwrap();
            verify(&key, &jwt);
            let header: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(jwt.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(header, json!({"alg": alg.as_str(), "typ": "JWT"}));
        }
    }

    #[test]
    fn the_public_jwk_is_the_public_key_openssl_derives() {
        let es = spki_key(include_str!("../../tests/keys/test-es256.pub.pem"));
        let jwk: Value =
            serde_json::from_str(&PrivateKey::from_pem(ES256).unwrap().public_jwk()).unwrap();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        assert_eq!(es, [vec![4], x, y].concat());

        let ed = spki_key(include_str!("../../tests/keys/test-ed25519.pub.pem"));
        let jwk: Value =
            serde_json::from_str(&PrivateKey::from_pem(ED25519).unwrap().public_jwk()).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
            ed
        );

        // An RSAPublicKey: SEQUENCE { n, e }.
        let rsa = spki_key(include_str!("../../tests/keys/test-rsa2048.pub.pem"));
        let (body, _) = der::expect(&rsa, der::SEQUENCE).unwrap();
        let (n, rest) = der::expect(body, der::INTEGER).unwrap();
        let (e, _) = der::expect(rest, der::INTEGER).unwrap();
        let jwk: Value =
            serde_json::from_str(&PrivateKey::from_pem(RSA).unwrap().public_jwk()).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap(),
            n.strip_prefix(&[0]).unwrap_or(n)
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap(),
            e
        );
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
    }

    #[test]
    fn a_key_id_goes_into_the_header_and_the_jwk() {
        let key = PrivateKey::from_pem(ED25519).unwrap().with_key_id("kid-7");
        let jwt = JwtSigner::Key(key.clone()).sign_jwt(&Map::new()).unwrap();
        let header = URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap();
        let header: Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["kid"], "kid-7");
        assert!(key.public_jwk().contains(r#""kid":"kid-7""#));
        assert_eq!(key.key_id(), Some("kid-7"));
    }

    #[test]
    fn hs256_is_the_hmac_of_the_signing_input_with_the_secret() {
        let jwt = JwtSigner::hs256("s3cret").sign_jwt(&Map::new()).unwrap();
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
        ring::hmac::verify(
            &key,
            input.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .unwrap();
        assert!(input.starts_with(&URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#)));
        assert_eq!(
            format!("{:?}", JwtSigner::hs256("s3cret")),
            "Hs256(<redacted>)"
        );
    }

    #[test]
    fn a_mismatched_algorithm_is_refused_by_name() {
        let cases = [
            (ES256, SigningAlgorithm::Rs256, "EC P-256"),
            (ES256, SigningAlgorithm::EdDsa, "EC P-256"),
            (RSA, SigningAlgorithm::Es256, "RSA"),
            (ED25519, SigningAlgorithm::Ps256, "Ed25519"),
        ];
        for (pem, algorithm, kind) in cases {
            let err = PrivateKey::from_pem(pem)
                .unwrap()
                .with_algorithm(algorithm)
                .unwrap_err();
            assert!(
                matches!(err, KeyError::AlgorithmMismatch { key, algorithm: a } if key == kind && a == algorithm),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_sec1_key_without_curve_parameters_is_taken_for_p256() {
        // The SEC1 key with its `[0]` parameters removed.
        let der = der_of(ES256_SEC1);
        let (body, _) = der::expect(&der, der::SEQUENCE).unwrap();
        let (version, rest) = der::expect(body, der::INTEGER).unwrap();
        let (private, rest) = der::expect(rest, der::OCTET_STRING).unwrap();
        let (_, rest) = der::expect(rest, der::CONTEXT_0).unwrap();
        let inner = [
            der::element(der::INTEGER, version),
            der::element(der::OCTET_STRING, private),
            rest.to_vec(),
        ]
        .concat();
        let key = PrivateKey::from_der(der::element(der::SEQUENCE, &inner)).unwrap();
        assert_eq!(
            key.public_jwk(),
            PrivateKey::from_pem(ES256).unwrap().public_jwk()
        );
        // Without the public key as well: named, not a bare rejection.
        let inner = [
            der::element(der::INTEGER, version),
            der::element(der::OCTET_STRING, private),
        ]
        .concat();
        let err = PrivateKey::from_der(der::element(der::SEQUENCE, &inner)).unwrap_err();
        assert!(err.to_string().contains("without its public key"), "{err}");
    }
}
