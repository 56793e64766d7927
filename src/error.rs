//! Errors: what a token source reports, and what a handle returns.
//!
//! A [`SourceError`] says whether retrying can help ([`ErrorKind`]) and may
//! carry a retry-after hint; the manager uses both to schedule the next
//! attempt and keeps the latest one in its state. An [`Error`] is what
//! [`TokenHandle`](crate::TokenHandle) calls return: the manager stopped, or
//! no valid token arrived in time (with the last source error as its cause).
//!
//! Messages must never contain a secret: sources build them from error
//! codes, statuses and descriptions, not from request or response bodies
//! that may echo credentials.
//!
//! ```
//! use std::time::Duration;
//! use tokenkeeper::{ErrorKind, SourceError};
//!
//! let e = SourceError::transient("authority returned 503").with_retry_after(Duration::from_secs(5));
//! assert_eq!(e.kind(), ErrorKind::Transient);
//! assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
//! assert_eq!(e.to_string(), "authority returned 503");
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::oauth2::{OAuth2Error, TokenRequestError};

/// Whether retrying a failed fetch can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The network, a timeout, an overloaded authority: retry with backoff.
    Transient,
    /// Bad credentials, a revoked grant, an unknown scope: retrying will not
    /// help until someone changes something, so retries wait the backoff cap.
    Permanent,
}

/// A failure to fetch a token, reported by a [`TokenSource`](crate::TokenSource).
///
/// Cheap to clone (the cause is shared), so the manager can hand it to every
/// waiter and keep it in its state.
///
/// A message and a cause like [`CacheError`](crate::cache::CacheError) and
/// [`HttpError`](crate::oauth2::HttpError), which say what failed below a
/// source; this one is what the manager acts on: whether retrying can help
/// ([`kind`](Self::kind)) and how soon ([`retry_after`](Self::retry_after)).
/// Typed causes are found with [`request_error`](Self::request_error) (the
/// OAuth2 sources), [`cause`](Self::cause) and a downcast (others, such as
/// [`TokenFileError`](crate::source::TokenFileError)), or
/// [`source`](StdError::source).
#[derive(Clone)]
pub struct SourceError {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
    cause: Option<Arc<dyn StdError + Send + Sync>>,
}

impl SourceError {
    /// A failure that may go away by itself.
    pub fn transient(message: impl Into<String>) -> SourceError {
        SourceError::new(ErrorKind::Transient, message)
    }

    /// A failure that retrying will not fix.
    ///
    /// ```
    /// let e = tokenkeeper::SourceError::permanent("invalid_client");
    /// assert!(e.is_permanent());
    /// ```
    pub fn permanent(message: impl Into<String>) -> SourceError {
        SourceError::new(ErrorKind::Permanent, message)
    }

    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> SourceError {
        SourceError {
            kind,
            message: message.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// Adds a hint: do not retry sooner than `after`.
    pub fn with_retry_after(mut self, after: Duration) -> SourceError {
        self.retry_after = Some(after);
        self
    }

    /// Adds the underlying error, returned by [`source`](StdError::source).
    ///
    /// ```
    /// use std::error::Error;
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    /// let e = tokenkeeper::SourceError::transient("cannot reach the authority").with_cause(io);
    /// assert_eq!(e.source().unwrap().to_string(), "refused");
    /// ```
    pub fn with_cause(mut self, cause: impl StdError + Send + Sync + 'static) -> SourceError {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// Whether retrying can help.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Shorthand for `kind() == ErrorKind::Permanent`.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }

    /// The source's hint for the earliest retry.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The underlying error, to downcast to a source's own error type.
    pub fn cause(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.cause.as_deref()
    }

    /// Why a token request to an OAuth2 authority failed, when this error
    /// comes from one of the [`oauth2`](crate::oauth2) sources: the network,
    /// an RFC 6749 error answer, another error status, or an unusable
    /// response.
    ///
    /// ```
    /// use tokenkeeper::oauth2::{ErrorCode, OAuth2Error, TokenRequestError};
    /// # use tokenkeeper::SourceError;
    /// // What a `TokenEndpoint` reports for `{"error":"invalid_client"}` with HTTP 401:
    /// let refused = TokenRequestError::OAuth2(OAuth2Error::new(401, ErrorCode::InvalidClient));
    /// let error = SourceError::permanent(refused.to_string()).with_cause(refused);
    /// assert!(matches!(error.request_error(), Some(TokenRequestError::OAuth2(_))));
    /// assert!(SourceError::transient("no cause").request_error().is_none());
    /// ```
    pub fn request_error(&self) -> Option<&TokenRequestError> {
        self.cause()?.downcast_ref::<TokenRequestError>()
    }

    /// The authority's RFC 6749 error answer (`error`, `error_description`,
    /// `error_uri` and the HTTP status), when it sent one. Whether retrying
    /// can help is [`kind`](Self::kind).
    ///
    /// ```
    /// use tokenkeeper::oauth2::{ErrorCode, OAuth2Error, TokenRequestError};
    /// # use tokenkeeper::SourceError;
    /// // What a `TokenEndpoint` reports for
    /// // `{"error":"invalid_scope","error_description":"no such scope"}` with HTTP 400:
    /// let answer = OAuth2Error::new(400, ErrorCode::InvalidScope).with_description("no such scope");
    /// let refused = TokenRequestError::OAuth2(answer);
    /// let error = SourceError::permanent(refused.to_string()).with_cause(refused);
    /// let oauth2 = error.oauth2_error().unwrap();
    /// assert_eq!(oauth2.code(), &ErrorCode::InvalidScope);
    /// assert_eq!(oauth2.description(), Some("no such scope"));
    /// assert_eq!(oauth2.status(), 400);
    /// ```
    pub fn oauth2_error(&self) -> Option<&OAuth2Error> {
        match self.request_error()? {
            TokenRequestError::OAuth2(error) => Some(error),
            _ => None,
        }
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("retry_after", &self.retry_after)
            .field("cause", &self.cause)
            .finish()
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for SourceError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The manager abandoned a fetch that took longer than its request timeout;
/// found as the [`cause`](SourceError::cause) of the resulting error.
///
/// ```
/// use std::time::Duration;
/// let e = tokenkeeper::RequestTimedOut { after: Duration::from_secs(20) };
/// assert_eq!(e.to_string(), "token request timed out after 20s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTimedOut {
    /// The request timeout that ran out.
    pub after: Duration,
}

impl fmt::Display for RequestTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token request timed out after {:?}", self.after)
    }
}

impl StdError for RequestTimedOut {}

/// What a [`TokenHandle`](crate::TokenHandle) call can fail with.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{Error, SourceError};
///
/// let e = Error::Timeout { waited: Duration::from_secs(30), last_error: Some(SourceError::transient("503")) };
/// assert_eq!(e.to_string(), "no valid token within 30s; last error: 503");
/// assert_eq!(Error::Stopped.to_string(), "the token manager has stopped");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// The manager stopped (shut down, or its driver was dropped), so no
    /// token will come.
    Stopped,
    /// The source failed with a permanent error (say, `invalid_client`) and
    /// there is no valid token: waiting would not help. The manager keeps
    /// retrying at its backoff cap.
    Source(SourceError),
    /// No valid token was published within the wait timeout.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// The latest source failure, if the manager had one.
        last_error: Option<SourceError>,
    },
    /// The headers of a resource request could not be made
    /// ([`TokenHandle::authorization`](crate::TokenHandle::authorization)).
    Dpop(DpopError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Stopped => f.write_str("the token manager has stopped"),
            Error::Source(e) => write!(f, "no valid token: {e}"),
            Error::Timeout {
                waited,
                last_error: None,
            } => write!(f, "no valid token within {waited:?}"),
            Error::Timeout {
                waited,
                last_error: Some(e),
            } => write!(f, "no valid token within {waited:?}; last error: {e}"),
            Error::Dpop(e) => write!(f, "no DPoP proof: {e}"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Timeout {
                last_error: Some(e),
                ..
            }
            | Error::Source(e) => Some(e),
            Error::Dpop(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DpopError> for Error {
    fn from(e: DpopError) -> Error {
        Error::Dpop(e)
    }
}

/// Why a DPoP proof (RFC 9449) could not be made. Nothing in it is secret.
///
/// ```
/// use tokenkeeper::DpopError;
/// let e = DpopError::InvalidUrl("relative URL without a base".into());
/// assert_eq!(e.to_string(), "the request URL is not an absolute http(s) URL: relative URL without a base");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopError {
    /// The URL of the request does not parse as an absolute `http` or
    /// `https` URL.
    InvalidUrl(String),
    /// The token is DPoP-bound but the manager's source has no DPoP key
    /// ([`TokenSource::dpop_key`](crate::TokenSource::dpop_key)), so no
    /// proof can go with it.
    NoKey,
    /// The system gave no randomness for the proof's `jti` or signature.
    NoRandomness,
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpopError::InvalidUrl(why) => {
                write!(f, "the request URL is not an absolute http(s) URL: {why}")
            }
            DpopError::NoKey => f.write_str(
                "the token is DPoP-bound but the manager has no DPoP key to prove it holds it",
            ),
            DpopError::NoRandomness => {
                f.write_str("signing the DPoP proof failed (no randomness from the system)")
            }
        }
    }
}

impl StdError for DpopError {}
