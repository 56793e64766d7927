//! Why a token request failed, and whether retrying can help.

use std::error::Error as StdError;
use std::fmt;

use crate::error::ErrorKind;
use crate::oauth2::http::HttpError;

/// An RFC 6749 §5.2 error code.
///
/// ```
/// use tokenkeeper::oauth2::ErrorCode;
/// assert_eq!(ErrorCode::from("invalid_client"), ErrorCode::InvalidClient);
/// assert_eq!(ErrorCode::from("slow_down").as_str(), "slow_down");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`: the request is malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the grant (say, a refresh token) is invalid, expired
    /// or revoked.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`: the server does not support this grant.
    UnsupportedGrantType,
    /// `invalid_scope`: the scope is invalid or exceeds what was granted.
    InvalidScope,
    /// Any other code, as sent (`server_error`, `temporarily_unavailable`...).
    Other(String),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::Other(code) => code,
        }
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> ErrorCode {
        match code {
            "invalid_request" => ErrorCode::InvalidRequest,
            "invalid_client" => ErrorCode::InvalidClient,
            "invalid_grant" => ErrorCode::InvalidGrant,
            "unauthorized_client" => ErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => ErrorCode::UnsupportedGrantType,
            "invalid_scope" => ErrorCode::InvalidScope,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error response from the token endpoint (RFC 6749 §5.2).
///
/// ```
/// use tokenkeeper::oauth2::{ErrorCode, OAuth2Error};
/// let e = OAuth2Error::new(401, ErrorCode::InvalidClient).with_description("unknown client");
/// assert_eq!(e.to_string(), "invalid_client (HTTP 401): unknown client");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2Error {
    status: u16,
    code: ErrorCode,
    description: Option<String>,
    uri: Option<String>,
}

impl OAuth2Error {
    /// An error with `code`, received with HTTP `status`.
    pub fn new(status: u16, code: ErrorCode) -> OAuth2Error {
        OAuth2Error {
            status,
            code,
            description: None,
            uri: None,
        }
    }

    /// Adds the `error_description`.
    pub fn with_description(mut self, description: impl Into<String>) -> OAuth2Error {
        self.description = Some(description.into());
        self
    }

    /// Adds the `error_uri`.
    pub fn with_uri(mut self, uri: impl Into<String>) -> OAuth2Error {
        self.uri = Some(uri.into());
        self
    }

    /// The HTTP status it came with.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `error` code.
    pub fn code(&self) -> &ErrorCode {
        &self.code
    }

    /// The `error_description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The `error_uri`, if any.
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }
}

impl fmt::Display for OAuth2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {})", self.code, self.status)?;
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        if let Some(uri) = &self.uri {
            write!(f, " <{uri}>")?;
        }
        Ok(())
    }
}

impl StdError for OAuth2Error {}

/// Why a token request failed.
///
/// The manager receives it as the cause of a [`SourceError`](crate::SourceError),
/// which hands it out with [`request_error`](crate::SourceError::request_error)
/// (and the RFC 6749 part with [`oauth2_error`](crate::SourceError::oauth2_error)).
/// Nothing in it holds a secret: server-provided text is cut short, stripped
/// of control characters and scrubbed of the credentials that were sent, in
/// every form they were sent in and a server may echo them in (raw,
/// form-urlencoded in either hex case, the base64 of HTTP Basic, JSON- or
/// HTML-escaped), wherever the text comes from: an `error_description`, an
/// error page, an HTTP client's error message.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenRequestError {
    /// No complete HTTP response: network, TLS, a body over the cap.
    Http(HttpError),
    /// The authority answered with an RFC 6749 error.
    OAuth2(OAuth2Error),
    /// The authority answered with an error status and a body that is not an
    /// RFC 6749 error (an HTML page, a proxy's message).
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// The start of the body, made printable and scrubbed.
        excerpt: String,
    },
    /// A success status with a body that is not a usable token response.
    InvalidResponse {
        /// The HTTP status.
        status: u16,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint asked for a DPoP-bound token
    /// ([`TokenEndpointBuilder::dpop`](crate::oauth2::TokenEndpointBuilder::dpop))
    /// and the authority issued one of another type: it would not be bound
    /// to the key. Permanent: the authority's configuration decides it
    /// (allow it with `dpop_allow_bearer`).
    NotDpopBound {
        /// The `token_type` the authority answered.
        token_type: String,
    },
}

impl TokenRequestError {
    /// Whether retrying can help.
    ///
    /// Transient: network failures, timeouts, 5xx, 408, 429, malformed
    /// success responses, `temporarily_unavailable`, `server_error`,
    /// `slow_down`, `use_dpop_nonce` (the nonce it came with goes with the
    /// next request). Permanent: `invalid_client`, `unauthorized_client`,
    /// `invalid_grant`, `invalid_scope`, `unsupported_grant_type`,
    /// `invalid_request`, other 4xx answers, and a token that is not
    /// DPoP-bound when one was asked for.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TokenRequestError::Http(_) | TokenRequestError::InvalidResponse { .. } => {
                ErrorKind::Transient
            }
            TokenRequestError::OAuth2(e) => match e.code() {
                ErrorCode::Other(code)
                    if matches!(
                        code.as_str(),
                        "temporarily_unavailable" | "server_error" | "slow_down" | "use_dpop_nonce"
                    ) =>
                {
                    ErrorKind::Transient
                }
                ErrorCode::Other(_) => status_kind(e.status()),
                _ => ErrorKind::Permanent,
            },
            TokenRequestError::UnexpectedStatus { status, .. } => status_kind(*status),
            TokenRequestError::NotDpopBound { .. } => ErrorKind::Permanent,
        }
    }

    /// The OAuth2 error code, if the authority sent one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            TokenRequestError::OAuth2(e) => Some(e.code()),
            _ => None,
        }
    }
}

fn status_kind(status: u16) -> ErrorKind {
    if status >= 500 || status == 408 || status == 429 {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    }
}

impl fmt::Display for TokenRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRequestError::Http(e) => write!(f, "token request failed: {e}"),
            TokenRequestError::OAuth2(e) => write!(f, "token request rejected: {e}"),
            TokenRequestError::UnexpectedStatus { status, excerpt } => {
                write!(f, "token endpoint answered HTTP {status}: {excerpt:?}")
            }
            TokenRequestError::InvalidResponse { status, reason } => {
                write!(f, "invalid token response (HTTP {status}): {reason}")
            }
            TokenRequestError::NotDpopBound { token_type } => write!(
                f,
                "the authority issued a token of type {token_type:?}, not DPoP: it would not be \
                 bound to the DPoP key (dpop_allow_bearer accepts it)"
            ),
        }
    }
}

impl StdError for TokenRequestError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TokenRequestError::Http(e) => Some(e),
            TokenRequestError::OAuth2(e) => Some(e),
            _ => None,
        }
    }
}
