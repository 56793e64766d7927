//! DPoP (RFC 9449): the key, its proofs, and what an endpoint and a
//! manager keep for it (the authority's nonce, resource servers' nonces).
//! The whole story, with an example, is in the `oauth2` module's docs.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use url::Url;
use zeroize::Zeroize as _;

use crate::cache::trust;
use crate::error::DpopError;
use crate::oauth2::jwt::{random_jti, KeyError, PrivateKey, SigningAlgorithm, MAX_KEY_FILE_BYTES};
use crate::token::AccessToken;

#[cfg(doc)]
use crate::oauth2::TokenEndpointBuilder;

const LOG: &str = "tokenkeeper::oauth2";

/// The key a client binds its tokens to (DPoP, RFC 9449), and the proofs
/// it signs with it.
///
/// Made new ([`generate`](Self::generate): ES256, the default of most
/// authorities; [`generate_ed25519`](Self::generate_ed25519)), kept in a
/// private file ([`load_or_create`](Self::load_or_create)), or from any
/// [`PrivateKey`] (ES256, EdDSA, RS256, PS256). Cheap to clone: clones
/// share the key. It is a secret like any private key: `Debug` shows the
/// algorithm and the thumbprint, never the key.
///
/// ```
/// use tokenkeeper::oauth2::{DpopKey, SigningAlgorithm};
///
/// let key = DpopKey::generate()?;
/// assert_eq!(key.algorithm(), SigningAlgorithm::Es256);
/// assert_eq!(key.thumbprint().len(), 43); // base64url of a SHA-256
/// let proof = key.proof("POST", "https://auth.example.com/token", None, None)?;
/// assert_eq!(proof.split('.').count(), 3); // a compact JWS
/// assert_eq!(format!("{key:?}"), format!("DpopKey {{ algorithm: ES256, thumbprint: {:?} }}", key.thumbprint()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<Inner>,
}

struct Inner {
    key: PrivateKey,
    /// The public key's required members, canonical (RFC 7638).
    jwk: String,
    thumbprint: String,
    /// The proof's JOSE header in base64url, with a `.` after it: the
    /// same for every proof of this key.
    header: String,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("algorithm", &format_args!("{}", self.algorithm()))
            .field("thumbprint", &self.inner.thumbprint)
            .finish()
    }
}

impl From<PrivateKey> for DpopKey {
    fn from(key: PrivateKey) -> DpopKey {
        DpopKey::from_private_key(key)
    }
}

impl DpopKey {
    /// A new EC P-256 key (ES256), from the system's randomness.
    ///
    /// # Errors
    ///
    /// [`KeyError::Create`] when the system gives no randomness.
    pub fn generate() -> Result<DpopKey, KeyError> {
        let pkcs8 = new_es256_pkcs8()?;
        Ok(DpopKey::from_private_key(PrivateKey::from_der(pkcs8)?))
    }

    /// A new Ed25519 key (EdDSA), from the system's randomness.
    ///
    /// ```
    /// let key = tokenkeeper::oauth2::DpopKey::generate_ed25519()?;
    /// assert_eq!(key.algorithm().as_str(), "EdDSA");
    /// # Ok::<(), tokenkeeper::oauth2::KeyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`KeyError::Create`] when the system gives no randomness.
    pub fn generate_ed25519() -> Result<DpopKey, KeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(no_randomness)?;
        Ok(DpopKey::from_private_key(PrivateKey::from_der(pkcs8)?))
    }

    /// The DPoP key of `key`, with its algorithm (RS256 or PS256 for an
    /// RSA key: see [`PrivateKey::with_algorithm`]). Its key id is not
    /// used: a proof carries the public key itself.
    pub fn from_private_key(key: PrivateKey) -> DpopKey {
        let jwk = key.canonical_public_jwk();
        let digest = ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes());
        let thumbprint = URL_SAFE_NO_PAD.encode(digest.as_ref());
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{jwk}}}"#,
            key.algorithm()
        );
        let mut header = URL_SAFE_NO_PAD.encode(header);
        header.push('.');
        DpopKey {
            inner: Arc::new(Inner {
                key,
                jwk,
                thumbprint,
                header,
            }),
        }
    }

    /// A key from PEM, as [`PrivateKey::from_pem`] reads it.
    ///
    /// # Errors
    ///
    /// As [`PrivateKey::from_pem`].
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<DpopKey, KeyError> {
        PrivateKey::from_pem(pem).map(DpopKey::from_private_key)
    }

    /// A key from a PEM or DER file, as [`PrivateKey::from_file`] reads it
    /// (without the checks of [`load_or_create`](Self::load_or_create)).
    ///
    /// # Errors
    ///
    /// As [`PrivateKey::from_file`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<DpopKey, KeyError> {
        PrivateKey::from_file(path).map(DpopKey::from_private_key)
    }

    /// The key kept in the file at `path`: read if it exists; else a new
    /// ES256 key, written there as PKCS#8 PEM, readable by this user alone
    /// (mode 0600), and made whole before it appears at `path` (processes
    /// starting together all end up with the one key that got there
    /// first). So a service restarted keeps its key, and the tokens cached
    /// for it.
    ///
    /// On Unix, a file that another user owns, that group or others may
    /// read or write, that is a symbolic link or not a regular file, is
    /// refused ([`KeyError::Untrusted`]): anyone who can read it can use the
    /// tokens bound to it.
    ///
    /// ```
    /// use tokenkeeper::oauth2::DpopKey;
    ///
    /// let path = std::env::temp_dir().join(format!("tokenkeeper-doc-dpop-{}.pem", std::process::id()));
    /// let key = DpopKey::load_or_create(&path)?; // created
    /// let again = DpopKey::load_or_create(&path)?; // read back
    /// assert_eq!(key.thumbprint(), again.thumbprint());
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), tokenkeeper::oauth2::KeyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`KeyError::Untrusted`] as above, [`KeyError::Read`] or
    /// [`KeyError::Create`] when the file cannot be read or written, and
    /// the errors of [`PrivateKey::from_pem`] for a file that holds no
    /// usable key.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<DpopKey, KeyError> {
        let path = path.as_ref();
        // A second look after losing a race to create the file.
        for _ in 0..2 {
            match trust::open_to_read(path) {
                Ok(file) => return read_private(path, file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(KeyError::Read {
                        path: path.to_owned(),
                        error,
                    })
                }
            }
            if let Some(key) = create(path)? {
                log::info!(
                    target: LOG,
                    "created the DPoP key file {} ({})",
                    path.display(),
                    key.thumbprint()
                );
                return Ok(key);
            }
        }
        Err(KeyError::Read {
            path: path.to_owned(),
            error: io::Error::other("the file came and went while it was read"),
        })
    }

    /// The JWK thumbprint (RFC 7638): base64url of the SHA-256 of the
    /// public key's canonical JWK, the `jkt` an authority binds tokens to
    /// (`cnf.jkt`).
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// The algorithm the proofs are signed with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.inner.key.algorithm()
    }

    /// The public key as the JWK a proof carries: its required members
    /// alone, in the canonical order of RFC 7638.
    ///
    /// ```
    /// let key = tokenkeeper::oauth2::DpopKey::generate()?;
    /// let jwk: serde_json::Value = serde_json::from_str(key.public_jwk()).unwrap();
    /// assert_eq!(jwk["kty"], "EC");
    /// assert!(jwk.get("d").is_none()); // never the private part
    /// # Ok::<(), tokenkeeper::oauth2::KeyError>(())
    /// ```
    pub fn public_jwk(&self) -> &str {
        &self.inner.jwk
    }

    /// A proof for a request of `method` to `url`, issued now (the system
    /// clock): a compact JWS whose header has `typ: dpop+jwt`, `alg` and
    /// the public `jwk`, and whose claims are `jti` (128 random bits, new
    /// for every proof), `htm` (`method`), `htu` (`url` without its query
    /// and fragment, RFC 9449 §4.2), `iat`, `ath` (the base64url SHA-256
    /// of `access_token`, for a resource request) and `nonce` when given.
    ///
    /// A manager makes these itself: a token endpoint for every token
    /// request, [`TokenHandle::authorization`](crate::TokenHandle::authorization)
    /// for resource requests. This is for requests made some other way.
    ///
    /// ```
    /// use tokenkeeper::oauth2::DpopKey;
    /// use tokenkeeper::AccessToken;
    ///
    /// let key = DpopKey::generate()?;
    /// let token = AccessToken::new("bound-token");
    /// let proof = key.proof("GET", "https://api.example.com/orders?page=2#top", Some(&token), Some("n-1"))?;
    /// # use base64::Engine as _;
    /// let claims = proof.split('.').nth(1).unwrap();
    /// let claims: serde_json::Value = serde_json::from_slice(
    ///     &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    /// assert_eq!(claims["htm"], "GET");
    /// assert_eq!(claims["htu"], "https://api.example.com/orders");
    /// assert_eq!(claims["nonce"], "n-1");
    /// assert!(claims["ath"].is_string());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`DpopError::InvalidUrl`] for a URL that is not absolute `http(s)`;
    /// [`DpopError::NoRandomness`] when the system gives no randomness.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&AccessToken>,
        nonce: Option<&str>,
    ) -> Result<String, DpopError> {
        let htu = htu(url)?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.proof_at(now_ms, method, htu.as_str(), access_token, nonce)
    }

    /// A proof issued at `now_ms` for `htu`, already normalised.
    pub(crate) fn proof_at(
        &self,
        now_ms: u64,
        method: &str,
        htu: &str,
        access_token: Option<&AccessToken>,
        nonce: Option<&str>,
    ) -> Result<String, DpopError> {
        let jti = random_jti().map_err(|_| DpopError::NoRandomness)?;
        let mut claims = serde_json::Map::new();
        claims.insert("jti".into(), jti.into());
        claims.insert("htm".into(), method.into());
        claims.insert("htu".into(), htu.into());
        claims.insert("iat".into(), (now_ms / 1000).into());
        if let Some(token) = access_token {
            claims.insert("ath".into(), ath(token).into());
        }
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), nonce.into());
        }
        let claims = serde_json::Value::Object(claims).to_string();
        let inner = &*self.inner;
        let mut jws = String::with_capacity(inner.header.len() + claims.len() * 4 / 3 + 400);
        jws.push_str(&inner.header);
        URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
        let signature = inner
            .key
            .sign(jws.as_bytes())
            .map_err(|_| DpopError::NoRandomness)?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        Ok(jws)
    }
}

/// `ath`: the base64url SHA-256 of the access token's ASCII.
fn ath(token: &AccessToken) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.secret().as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The `htu` of a request to `url`: the URL parsed (so normalised: scheme
/// and host in lower case, a default port dropped) without its query,
/// fragment and user information (RFC 9449 §4.2).
pub(crate) fn htu(url: &str) -> Result<Url, DpopError> {
    let mut url = Url::parse(url).map_err(|e| DpopError::InvalidUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DpopError::InvalidUrl(format!(
            "unsupported scheme {:?}",
            url.scheme()
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    // Cannot fail for an http(s) URL, which has a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(url)
}

fn no_randomness(_: ring::error::Unspecified) -> KeyError {
    KeyError::Create {
        path: PathBuf::new(),
        error: io::Error::other("the system gave no randomness"),
    }
}

fn new_es256_pkcs8() -> Result<ring::pkcs8::Document, KeyError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(no_randomness)
}

/// The key in `file` (open at `path`), if the file is private to this
/// user.
fn read_private(path: &Path, file: std::fs::File) -> Result<DpopKey, KeyError> {
    let read_error = |error| KeyError::Read {
        path: path.to_owned(),
        error,
    };
    let meta = file.metadata().map_err(read_error)?;
    let reason = trust::distrust(&meta).or_else(|| {
        trust::readable_by_others(&meta).then(|| "group or others may read it".to_owned())
    });
    if let Some(reason) = reason {
        return Err(KeyError::Untrusted {
            path: path.to_owned(),
            reason,
        });
    }
    let mut bytes = Vec::new();
    let read = file
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error);
    let key = match read {
        Err(e) => Err(e),
        Ok(_) if bytes.len() as u64 > MAX_KEY_FILE_BYTES => Err(read_error(io::Error::other(
            "larger than 64 KiB: not a key",
        ))),
        Ok(_) => PrivateKey::from_key_bytes(&bytes).map(DpopKey::from_private_key),
    };
    bytes.zeroize();
    key
}

/// Writes a new key to a private temporary file beside `path` and links
/// it there: `None` when another process put a file there first.
fn create(path: &Path) -> Result<Option<DpopKey>, KeyError> {
    let create_error = |error| KeyError::Create {
        path: path.to_owned(),
        error,
    };
    let name = path
        .file_name()
        .ok_or_else(|| create_error(io::Error::other("the path names no file")))?;
    let temp = path.with_file_name(trust::temp_name(&name.to_string_lossy()));
    let pkcs8 = new_es256_pkcs8()?;
    let key = PrivateKey::from_der(pkcs8.as_ref()).map(DpopKey::from_private_key)?;
    let mut pem = pem_pkcs8(pkcs8.as_ref());
    let written = trust::private_file(&temp).and_then(|mut file| {
        file.write_all(pem.as_bytes())?;
        file.sync_all()
    });
    pem.zeroize();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(create_error(e));
    }
    // A link never replaces a file: of processes racing, one wins and the
    // others read its key.
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(Some(key)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(create_error(e)),
    }
}

/// PKCS#8 DER as PEM (`PRIVATE KEY`, lines of 64 characters).
fn pem_pkcs8(der: &[u8]) -> String {
    let mut b64 = STANDARD.encode(der);
    let mut pem = String::with_capacity(b64.len() + 80);
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    b64.zeroize();
    pem
}

/// What a token endpoint keeps for DPoP: its key, whether a Bearer answer
/// is accepted, and the latest nonce the authority sent.
pub(crate) struct EndpointDpop {
    pub(crate) key: DpopKey,
    pub(crate) allow_bearer: bool,
    /// The token URL as a proof names it.
    htu: String,
    nonce: Mutex<Option<String>>,
}

impl fmt::Debug for EndpointDpop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpop")
            .field("key", &self.key)
            .field("allow_bearer", &self.allow_bearer)
            .finish_non_exhaustive()
    }
}

impl EndpointDpop {
    pub(crate) fn new(key: DpopKey, allow_bearer: bool, token_url: &Url) -> EndpointDpop {
        let htu = htu(token_url.as_str()).map_or_else(|_| token_url.to_string(), String::from);
        EndpointDpop {
            key,
            allow_bearer,
            htu,
            nonce: Mutex::new(None),
        }
    }

    /// The nonce to send: the latest the authority gave.
    pub(crate) fn nonce(&self) -> Option<String> {
        self.nonce
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps the nonce a response carried, if any.
    pub(crate) fn remember(&self, nonce: Option<&str>) {
        if let Some(nonce) = nonce.filter(|n| !n.is_empty()) {
            let mut kept = self.nonce.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.as_deref() != Some(nonce) {
                *kept = Some(nonce.to_owned());
            }
        }
    }

    /// The `DPoP` header of a token request, issued at `now_ms`, with
    /// `nonce`.
    pub(crate) fn proof(&self, now_ms: u64, nonce: Option<&str>) -> Result<String, DpopError> {
        self.key.proof_at(now_ms, "POST", &self.htu, None, nonce)
    }
}

/// The most resource servers whose nonce a manager keeps: more than a
/// service talks to; past it the oldest are forgotten, which costs a
/// `use_dpop_nonce` challenge, never a failure.
const MAX_RESOURCE_NONCES: usize = 64;

/// The nonces resource servers gave, by origin.
#[derive(Default)]
pub(crate) struct ResourceNonces {
    /// Origin → (nonce, when it was stored, in insertion order).
    nonces: Mutex<HashMap<String, (String, u64)>>,
}

impl ResourceNonces {
    pub(crate) fn get(&self, origin: &str) -> Option<String> {
        let nonces = self.nonces.lock().unwrap_or_else(PoisonError::into_inner);
        nonces.get(origin).map(|(nonce, _)| nonce.clone())
    }

    pub(crate) fn set(&self, origin: String, nonce: &str) {
        let mut nonces = self.nonces.lock().unwrap_or_else(PoisonError::into_inner);
        let order = nonces.values().map(|(_, n)| *n).max().map_or(0, |n| n + 1);
        if nonces.len() >= MAX_RESOURCE_NONCES && !nonces.contains_key(&origin) {
            let oldest = nonces
                .iter()
                .min_by_key(|(_, (_, n))| *n)
                .map(|(origin, _)| origin.clone());
            if let Some(oldest) = oldest {
                nonces.remove(&oldest);
            }
        }
        nonces.insert(origin, (nonce.to_owned(), order));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_64_characters_and_read_back() {
        let pkcs8 = new_es256_pkcs8().unwrap();
        let pem = pem_pkcs8(pkcs8.as_ref());
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN PRIVATE KEY-----"));
        assert_eq!(lines.last(), Some(&"-----END PRIVATE KEY-----"));
        assert!(lines[1..lines.len() - 2].iter().all(|l| l.len() == 64));
        let a = DpopKey::from_pem(&pem).unwrap();
        let b = DpopKey::from_der(pkcs8.as_ref());
        assert_eq!(a.thumbprint(), b.thumbprint());
    }

    impl DpopKey {
        fn from_der(der: &[u8]) -> DpopKey {
            DpopKey::from_private_key(PrivateKey::from_der(der).unwrap())
        }
    }

    #[test]
    fn creating_over_an_existing_file_loses_the_race_and_leaves_the_file() {
        let path = std::env::temp_dir().join(format!(
            "tokenkeeper-dpop-lost-race-{}.pem",
            std::process::id()
        ));
        std::fs::write(&path, "the winner's key").unwrap();
        let created = create(&path);
        let kept = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        assert!(matches!(created, Ok(None)), "{created:?}");
        assert_eq!(kept.unwrap(), "the winner's key");
    }

    #[test]
    fn resource_nonces_keep_the_latest_and_forget_the_oldest_past_the_cap() {
        let nonces = ResourceNonces::default();
        nonces.set("https://a".into(), "1");
        nonces.set("https://a".into(), "2");
        assert_eq!(nonces.get("https://a").as_deref(), Some("2"));
        for i in 0..MAX_RESOURCE_NONCES {
            nonces.set(format!("https://{i}"), "x");
        }
        assert_eq!(nonces.get("https://a"), None);
        assert_eq!(nonces.get("https://0").as_deref(), Some("x"));
        assert_eq!(nonces.nonces.lock().unwrap().len(), MAX_RESOURCE_NONCES);
    }
}
