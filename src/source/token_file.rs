//! A token that another program keeps fresh in a file.

use std::error::Error as StdError;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine as _};
use serde_json::Value;

use crate::cache::CacheKey;
use crate::error::SourceError;
use crate::source::{FetchContext, TokenSource};
use crate::time::duration_ms;
use crate::token::{AccessToken, Token};
use crate::BoxFuture;

const LOG: &str = "tokenkeeper::source";

/// The largest token file read. A JWT with many claims is a few kilobytes;
/// anything bigger is not a token and is not read into memory.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// A source that reads an access token from a file another program keeps
/// fresh: a Kubernetes projected service-account token, a sidecar's
/// output, a secret an operator rotates.
///
/// The file is read at every fetch, never cached here: when the manager's
/// token turns stale, and when a server rejects it
/// ([`TokenHandle::refresh_rejected`](crate::TokenHandle::refresh_rejected)),
/// so a token the writer replaced is picked up then. If the writer has not
/// replaced it yet, the same token is published again and the manager asks
/// again later: its spacing between refreshes (see
/// [`TokenManagerBuilder`](crate::TokenManagerBuilder)) keeps that from
/// becoming a loop.
///
/// The content, with surrounding whitespace trimmed, is the access token.
/// Its expiry:
///
/// - a JWT (three base64url parts whose first two are JSON objects) expires
///   at its `exp` claim (seconds since the Unix epoch), and counts as issued
///   at its `iat` claim when it has one (else when it is read). The
///   signature is **not** verified: the token is only passed on, and
///   whoever receives it checks it. A JWT whose `exp` has passed is an
///   error, so the manager retries until the writer replaces it;
/// - anything else (or a JWT without `exp`) counts as issued when it is
///   read and lives the [lifetime](Self::lifetime) set here, or the
///   manager's [default lifetime](crate::LifetimePolicy::default_lifetime)
///   without one. Set it no longer than the writer's refresh period, so
///   that a replaced token is read before the old one runs out.
///
/// Reading runs on the `blocking` thread pool, so the executor never
/// waits for the disk. The file may be a symbolic link (Kubernetes mounts
/// are); it must lead to a regular file of at most
/// [`MAX_TOKEN_FILE_BYTES`]. A FIFO or a device at the path is refused
/// without blocking. Unlike a [`FileCache`](crate::cache::FileCache), who
/// owns the file and its mode are not checked: it is the writer's file,
/// often root's, and only read here. Each failure is a transient [`SourceError`] whose
/// cause is a [`TokenFileError`] naming the path, never the content.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::source::TokenFile;
/// use tokenkeeper::{FetchContext, LifetimePolicy, ManualClock, TokenSource};
///
/// let path = std::env::temp_dir().join(format!("tokenkeeper-doc-{}", std::process::id()));
/// std::fs::write(&path, "opaque-token-from-a-sidecar\n")?;
///
/// let mut source = TokenFile::new(&path).lifetime(Duration::from_secs(600));
/// let cx = FetchContext::new(ManualClock::new(SystemTime::now()), LifetimePolicy::default());
/// let token = futures_lite::future::block_on(source.fetch(cx)).unwrap();
/// assert_eq!(token.access_token().secret(), "opaque-token-from-a-sidecar");
/// assert_eq!(token.lifetime(), Duration::from_secs(600));
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// With a manager:
///
/// ```no_run
/// use tokenkeeper::source::TokenFile;
/// use tokenkeeper::TokenManager;
///
/// let source = TokenFile::new("/var/run/secrets/kubernetes.io/serviceaccount/token");
/// let (handle, driver) = TokenManager::builder(source).build();
/// smol::spawn(driver).detach(); // or any executor
/// # let _ = handle;
/// ```
#[derive(Clone)]
pub struct TokenFile {
    path: PathBuf,
    lifetime: Option<Duration>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl TokenFile {
    /// A source that reads the token in the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile {
            path: path.into(),
            lifetime: None,
        }
    }

    /// How long a token that is not a JWT with an `exp` claim lives, from
    /// when it is read. Without it, the manager's
    /// [default lifetime](crate::LifetimePolicy::default_lifetime).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// The path read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl TokenSource for TokenFile {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        let path = self.path.clone();
        let lifetime = self.lifetime;
        Box::pin(async move {
            let read = {
                let path = path.clone();
                blocking::unblock(move || read_token(&path)).await
            };
            let result = read.and_then(|value| token_from(value, lifetime, &cx));
            result.map_err(|kind| {
                let error = TokenFileError::new("token file", path, kind);
                log::debug!(target: LOG, "{error}");
                SourceError::transient(error.to_string()).with_cause(error)
            })
        })
    }

    /// A digest of the path: a chain keeps tokens from different files
    /// apart.
    fn cache_key(&self) -> Option<CacheKey> {
        Some(
            CacheKey::builder()
                .field("token_file", self.path.as_os_str().as_encoded_bytes())
                .build(),
        )
    }
}

/// Reads the trimmed content of the file at `path`, checked to be a
/// header-safe value.
pub(crate) fn read_token(path: &Path) -> Result<String, TokenFileProblem> {
    let mut file = open(path).map_err(TokenFileProblem::Unreadable)?;
    let meta = file.metadata().map_err(TokenFileProblem::Unreadable)?;
    if !meta.file_type().is_file() {
        return Err(TokenFileProblem::NotAFile);
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(TokenFileProblem::TooLarge);
    }
    let mut bytes = Vec::new();
    // The file may grow between the check and the read.
    (&mut file)
        .take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(TokenFileProblem::Unreadable)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(TokenFileProblem::TooLarge);
    }
    let value = bytes.trim_ascii();
    if value.is_empty() {
        return Err(TokenFileProblem::Empty);
    }
    // Visible ASCII only: what goes into an `Authorization` header.
    if !value.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(TokenFileProblem::NotHeaderSafe);
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// Opens `path` to read, following links, without blocking on a FIFO or a
/// device (the type is checked on the open handle afterwards).
fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The open flags fit in an int; the kernel takes them as one.
        let nonblock = i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0);
        options.custom_flags(nonblock);
    }
    options.open(path)
}

/// The token for `value`, read now.
fn token_from(
    value: String,
    lifetime: Option<Duration>,
    cx: &FetchContext,
) -> Result<Token, TokenFileProblem> {
    let now = cx.now_ms();
    let Some(claims) = jwt_claims(&value) else {
        return Ok(cx.token(AccessToken::new(value), lifetime));
    };
    let Some(exp) = claims.get("exp") else {
        return Ok(cx.token(AccessToken::new(value), lifetime));
    };
    let expiry = numeric_date_ms(exp).ok_or(TokenFileProblem::BadExpiry)?;
    if expiry <= now {
        return Err(TokenFileProblem::Expired);
    }
    // An `iat` after now (a writer's clock ahead of ours) or after `exp`
    // says nothing useful: the token then counts as issued now.
    let issued = claims
        .get("iat")
        .and_then(numeric_date_ms)
        .filter(|&iat| iat <= now)
        .unwrap_or(now);
    let lifetime = Duration::from_millis(expiry - issued);
    Ok(Token::new_ms(
        AccessToken::new(value),
        issued,
        lifetime,
        cx.policy(),
    ))
}

/// The claims of `value` if it is a JWS in compact form: three base64url
/// parts, the first two JSON objects. The signature is not checked.
pub(crate) fn jwt_claims(value: &str) -> Option<serde_json::Map<String, Value>> {
    // JWTs are written without padding; some writers add it anyway.
    const BASE64URL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut parts = value.split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let object = |part: &str| match serde_json::from_slice(&BASE64URL.decode(part).ok()?) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    object(header)?;
    object(payload)
}

/// A NumericDate (RFC 7519 §2: seconds since the epoch, maybe with a
/// fraction) in ms, saturating; `None` for anything else or a negative.
pub(crate) fn numeric_date_ms(value: &Value) -> Option<u64> {
    let secs = value.as_f64()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(duration_ms(
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
    ))
}

/// What is wrong with a token file.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenFileProblem {
    /// It could not be opened or read (missing, no permission, an I/O
    /// error).
    Unreadable(io::Error),
    /// It is not a regular file (a FIFO, a device, a directory).
    NotAFile,
    /// It is larger than [`MAX_TOKEN_FILE_BYTES`].
    TooLarge,
    /// It holds nothing but whitespace.
    Empty,
    /// It holds characters that cannot go into an HTTP header (binary
    /// data, inner spaces, non-ASCII text).
    NotHeaderSafe,
    /// It holds a JWT whose `exp` claim is not a NumericDate.
    BadExpiry,
    /// It holds a JWT whose `exp` claim has passed.
    Expired,
}

/// A token file that could not give a token: found as the
/// [`cause`](SourceError::cause) of the fetch's error. It names the path,
/// never the content.
///
/// Typed rather than a message and a cause: what is wrong is a
/// [`TokenFileProblem`] to match on, and only an unreadable file has an
/// underlying error (its [`source`](StdError::source)).
///
/// ```
/// use tokenkeeper::source::{TokenFile, TokenFileError, TokenFileProblem};
/// use tokenkeeper::{FetchContext, LifetimePolicy, ManualClock, TokenSource};
///
/// let mut source = TokenFile::new("/nonexistent/token");
/// let cx = FetchContext::new(ManualClock::default(), LifetimePolicy::default());
/// let err = futures_lite::future::block_on(source.fetch(cx)).unwrap_err();
/// let cause = err.cause().unwrap().downcast_ref::<TokenFileError>().unwrap();
/// assert!(matches!(cause.problem(), TokenFileProblem::Unreadable(_)));
/// assert!(err.to_string().contains("/nonexistent/token"));
/// ```
///
/// A client assertion file
/// ([`ClientAuth::ClientAssertionFile`](crate::oauth2::ClientAuth::ClientAssertionFile))
/// that cannot be sent fails with this error too, its message naming a
/// "client assertion file".
#[derive(Debug)]
pub struct TokenFileError {
    /// What the file is, as messages name it.
    what: &'static str,
    path: PathBuf,
    problem: TokenFileProblem,
}

impl TokenFileError {
    pub(crate) fn new(what: &'static str, path: PathBuf, problem: TokenFileProblem) -> Self {
        TokenFileError {
            what,
            path,
            problem,
        }
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &TokenFileProblem {
        &self.problem
    }
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, path) = (self.what, self.path.display());
        match &self.problem {
            TokenFileProblem::Unreadable(e) => write!(f, "cannot read {what} {path}: {e}"),
            TokenFileProblem::NotAFile => write!(f, "{what} {path} is not a regular file"),
            TokenFileProblem::TooLarge => {
                write!(
                    f,
                    "{what} {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes"
                )
            }
            TokenFileProblem::Empty => write!(f, "{what} {path} is empty"),
            TokenFileProblem::NotHeaderSafe => write!(
                f,
                "{what} {path} holds characters not allowed in an HTTP header"
            ),
            TokenFileProblem::BadExpiry => {
                write!(f, "{what} {path} holds a JWT whose exp is not a date")
            }
            TokenFileProblem::Expired => {
                write!(f, "{what} {path} holds a JWT that has expired")
            }
        }
    }
}

impl StdError for TokenFileError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.problem {
            TokenFileProblem::Unreadable(e) => Some(e),
            _ => None,
        }
    }
}
