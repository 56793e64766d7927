//! The HTTP layer the OAuth2 sources talk through.
//!
//! The sources only ever make one kind of request: a POST to the token
//! endpoint, of a form (or of JSON, for an authority that demands it).
//! [`HttpClient`] is that one operation, so any HTTP stack can be
//! plugged in: the `surf` feature provides one for [`surf::Client`], the
//! `ureq` feature one for a blocking `ureq` agent run on a thread pool.
//! An implementation must read at most `max_body` bytes of the response
//! body and fail with [`HttpErrorKind::BodyTooLarge`] beyond that, and must
//! report network failures as [`HttpError`]s, never as a status code.
//!
//! [`surf::Client`]: https://docs.rs/surf
//!
//! ```
//! use tokenkeeper::oauth2::{HttpRequest, HttpResponse};
//!
//! let request = HttpRequest::form_post("https://auth.example/token".parse().unwrap(), b"grant_type=client_credentials".to_vec())
//!     .header("Authorization", "Basic c2VjcmV0");
//! assert!(!format!("{request:?}").contains("c2VjcmV0")); // header values are not printed
//! let response = HttpResponse::new(200, vec![("Retry-After".into(), "5".into())], b"{}".to_vec());
//! assert_eq!(response.header("retry-after"), Some("5"));
//! ```

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use url::Url;

use crate::BoxFuture;

/// Sends the token endpoint's POSTs, with the headers given (the
/// `Content-Type` among them) and the body as it is; and the GETs of
/// discovery ([`Discovery`](crate::oauth2::Discovery)).
pub trait HttpClient: Send + Sync + 'static {
    /// POSTs `request` and returns the response, reading at most `max_body`
    /// bytes of its body.
    ///
    /// # Errors
    ///
    /// An [`HttpError`] for anything that did not produce a complete HTTP
    /// response: connection failures, TLS errors, I/O errors, a body over
    /// `max_body`. HTTP error statuses are responses, not errors.
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>>;

    /// GETs `request` (made by [`HttpRequest::get`]: its body is empty)
    /// and returns the response, reading at most `max_body` bytes of its
    /// body, with the same errors as [`post`](Self::post). Discovery
    /// fetches the authority's metadata with it.
    ///
    /// The default fails with [`HttpErrorKind::Unsupported`]: a client
    /// written for token requests alone cannot discover.
    fn get(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        let _ = (request, max_body);
        Box::pin(std::future::ready(Err(HttpError::new(
            HttpErrorKind::Unsupported,
            "this HTTP client sends no GET requests (HttpClient::get), which discovery needs",
        ))))
    }
}

impl<C: HttpClient + ?Sized> HttpClient for std::sync::Arc<C> {
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        (**self).post(request, max_body)
    }

    fn get(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        (**self).get(request, max_body)
    }
}

/// A POST to a token endpoint, or a GET of a discovery document. Its
/// headers and body carry credentials, so `Debug` shows only the URL, the
/// header names and the body length.
#[derive(Clone)]
pub struct HttpRequest {
    url: Url,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl HttpRequest {
    /// A POST of an `application/x-www-form-urlencoded` body to `url`,
    /// accepting JSON.
    pub fn form_post(url: Url, body: Vec<u8>) -> HttpRequest {
        HttpRequest::post(url, "application/x-www-form-urlencoded", body)
    }

    /// A POST of a `content_type` body to `url`, accepting JSON.
    fn post(url: Url, content_type: &str, body: Vec<u8>) -> HttpRequest {
        // Room for a third header: most token requests add `Authorization`,
        // and growing the list then costs a reallocation per request.
        let mut headers = Vec::with_capacity(3);
        headers.push(("Content-Type".into(), content_type.into()));
        headers.push(("Accept".into(), "application/json".into()));
        HttpRequest {
            url,
            headers,
            body,
            timeout: None,
        }
    }

    /// A GET of `url`, accepting JSON, for [`HttpClient::get`]: no body.
    ///
    /// ```
    /// use tokenkeeper::oauth2::HttpRequest;
    ///
    /// let request = HttpRequest::get("https://auth.example/.well-known/openid-configuration".parse().unwrap());
    /// assert!(request.body().is_empty());
    /// assert!(request.headers().contains(&("Accept".into(), "application/json".into())));
    /// ```
    pub fn get(url: Url) -> HttpRequest {
        HttpRequest {
            url,
            headers: vec![("Accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A POST of an `application/json` body to `url`, accepting JSON.
    ///
    /// ```
    /// use tokenkeeper::oauth2::HttpRequest;
    ///
    /// let request = HttpRequest::json_post("https://auth.example/token".parse().unwrap(), br#"{"grant_type":"client_credentials"}"#.to_vec());
    /// assert!(request.headers().contains(&("Content-Type".into(), "application/json".into())));
    /// ```
    pub fn json_post(url: Url, body: Vec<u8>) -> HttpRequest {
        HttpRequest::post(url, "application/json", body)
    }

    /// Sets how long the whole exchange may take. Clients should honour it:
    /// it ends before the manager abandons the fetch, so an answer that
    /// arrives in time is never dropped unread.
    pub fn with_timeout(mut self, timeout: Duration) -> HttpRequest {
        self.timeout = Some(timeout);
        self
    }

    /// How long the whole exchange may take, if limited.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The URL to POST to (or GET).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body (a form, or JSON, as the `Content-Type` header says).
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("url", &self.url.as_str())
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A complete HTTP response.
#[derive(Clone)]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status`, `headers` and `body`.
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header named `name`, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl fmt::Debug for HttpResponse {
    // The body of a successful response holds tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What went wrong below HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// The connection could not be made (refused, DNS, unreachable, TLS).
    Connect,
    /// The HTTP client's own timeout fired.
    Timeout,
    /// The connection failed during the exchange (reset, closed early).
    Io,
    /// The response body was longer than allowed.
    BodyTooLarge,
    /// The client cannot send this request at all: a GET (for discovery)
    /// by a client that implements only [`HttpClient::post`]. Retrying
    /// cannot help.
    Unsupported,
    /// Anything else the client reports.
    Other,
}

/// A failure to get a complete HTTP response.
///
/// A kind, a message and, through [`source`](StdError::source), the
/// client's own error. It is not a [`SourceError`](crate::SourceError):
/// the endpoint wraps it in [`TokenRequestError::Http`](crate::oauth2::TokenRequestError::Http),
/// which decides whether retrying helps, after scrubbing from its text the
/// secrets the request sent (a client may quote what the server said).
/// Its [`kind`](Self::kind) says what to check (the network, a timeout, a
/// body over the cap), which a [`CacheError`](crate::cache::CacheError)
/// has no use for.
///
/// ```
/// use tokenkeeper::oauth2::{HttpError, HttpErrorKind};
/// let e = HttpError::new(HttpErrorKind::Connect, "connection refused");
/// assert_eq!(e.to_string(), "connect: connection refused");
/// ```
#[derive(Debug)]
pub struct HttpError {
    kind: HttpErrorKind,
    message: String,
    cause: Option<Box<dyn StdError + Send + Sync>>,
}

impl HttpError {
    /// An error of `kind` described by `message`.
    pub fn new(kind: HttpErrorKind, message: impl Into<String>) -> HttpError {
        HttpError {
            kind,
            message: message.into(),
            cause: None,
        }
    }

    /// The body exceeded `limit` bytes.
    pub fn body_too_large(limit: usize) -> HttpError {
        HttpError::new(
            HttpErrorKind::BodyTooLarge,
            format!("response body exceeds {limit} bytes"),
        )
    }

    /// Adds the underlying error.
    pub fn with_cause(mut self, cause: impl StdError + Send + Sync + 'static) -> HttpError {
        self.cause = Some(Box::new(cause));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> HttpErrorKind {
        self.kind
    }

    /// The description, without the kind that `Display` puts before it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// This error with `scrub` applied to its message and to the text of
    /// its causes: a client may quote what the server sent. A cause whose
    /// text `scrub` changes is replaced by its scrubbed text (it can no
    /// longer be downcast); the kind is kept.
    pub(crate) fn scrubbed(self, scrub: impl Fn(&str) -> Cow<'_, str>) -> HttpError {
        let message = scrub(&self.message).into_owned();
        let cause = self.cause.map(|cause| {
            let display = chain_text(&*cause);
            let debug = format!("{cause:?}");
            match (scrub(&display), scrub(&debug)) {
                (Cow::Borrowed(_), Cow::Borrowed(_)) => cause,
                (display, debug) => Box::new(ScrubbedCause {
                    display: display.into_owned(),
                    debug: debug.into_owned(),
                }) as Box<dyn StdError + Send + Sync>,
            }
        });
        HttpError {
            kind: self.kind,
            message,
            cause,
        }
    }
}

/// `error` and its sources, joined by `": "`.
fn chain_text(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// What is left of a cause that quoted a secret: its text, scrubbed.
struct ScrubbedCause {
    display: String,
    debug: String,
}

impl fmt::Display for ScrubbedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for ScrubbedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.debug)
    }
}

impl StdError for ScrubbedCause {}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            HttpErrorKind::Connect => "connect",
            HttpErrorKind::Timeout => "timeout",
            HttpErrorKind::Io => "i/o",
            HttpErrorKind::BodyTooLarge => "body too large",
            HttpErrorKind::Unsupported => "unsupported",
            HttpErrorKind::Other => "http",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl StdError for HttpError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str) -> Cow<'_, str> {
        if text.contains("hunter22") {
            Cow::Owned(text.replace("hunter22", "<redacted>"))
        } else {
            Cow::Borrowed(text)
        }
    }

    #[test]
    fn scrubbed_errors_keep_their_kind_and_lose_the_secret() {
        let echo = std::io::Error::other("server said: hunter22");
        let e = HttpError::new(HttpErrorKind::Io, "reset after hunter22")
            .with_cause(echo)
            .scrubbed(scrub);
        assert_eq!(e.kind(), HttpErrorKind::Io);
        let cause = e.source().unwrap();
        let text = format!("{e} {e:?} {cause} {cause:?}");
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains("server said: <redacted>"), "{text}");
    }

    #[test]
    fn causes_without_a_secret_stay_as_they_are() {
        let e = HttpError::new(HttpErrorKind::Connect, "refused")
            .with_cause(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
            .scrubbed(scrub);
        let cause = e.source().unwrap();
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(e.to_string(), "connect: refused");
    }
}
