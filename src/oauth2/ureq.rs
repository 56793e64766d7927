//! [`HttpClient`] on a blocking `ureq` agent, run on the `blocking` thread
//! pool so it works under any executor.

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use crate::clock::BoxFuture;
use crate::oauth2::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse};

/// A [`HttpClient`] on a [`ureq::Agent`], with rustls for TLS.
///
/// Each request runs on the `blocking` crate's thread pool, so the async
/// side never blocks and no runtime is needed. Each request's timeout (see
/// [`HttpRequest::timeout`], set to end shortly before the manager's request
/// timeout) is applied to the whole exchange, so the thread is free again by
/// the time the manager gives up, and an answer that arrives in time is
/// always read.
///
/// The default agent follows no redirects (a redirect could carry
/// credentials elsewhere), returns error statuses as responses, times out
/// after 30 s when a request sets no timeout, and honours the usual proxy
/// environment variables.
///
/// ```
/// use tokenkeeper::oauth2::{TokenEndpoint, UreqClient};
/// use tokenkeeper::{ClientId, ClientSecret};
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", ClientId::new("svc"), ClientSecret::new("s"))
///     .http_client(UreqClient::new())
///     .build()
///     .unwrap();
/// # let _ = endpoint;
/// ```
#[derive(Clone)]
pub struct UreqClient {
    agent: ureq::Agent,
}

impl fmt::Debug for UreqClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UreqClient")
    }
}

impl Default for UreqClient {
    fn default() -> Self {
        UreqClient::new()
    }
}

impl UreqClient {
    /// A client with the default agent described above.
    pub fn new() -> UreqClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(concat!("tokenkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        UreqClient { agent }
    }

    /// A client on your own agent. Configure it with
    /// `http_status_as_error(false)`, or error responses lose their body and
    /// come back as bare statuses.
    pub fn with_agent(agent: ureq::Agent) -> UreqClient {
        UreqClient { agent }
    }
}

impl HttpClient for UreqClient {
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        let agent = self.agent.clone();
        Box::pin(blocking::unblock(move || {
            post_blocking(&agent, &request, max_body)
        }))
    }
}

fn post_blocking(
    agent: &ureq::Agent,
    request: &HttpRequest,
    max_body: usize,
) -> Result<HttpResponse, HttpError> {
    let mut builder = agent.post(request.url().as_str());
    for (name, value) in request.headers() {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(timeout) = request.timeout() {
        builder = builder.config().timeout_global(Some(timeout)).build();
    }
    let response = builder.send(request.body()).map_err(ureq_error)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let limit = u64::try_from(max_body)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    response
        .into_body()
        .into_reader()
        .take(limit)
        .read_to_end(&mut body)
        .map_err(io_error)?;
    if body.len() > max_body {
        return Err(HttpError::body_too_large(max_body));
    }
    Ok(HttpResponse::new(status, headers, body))
}

fn ureq_error(e: ureq::Error) -> HttpError {
    let kind = match &e {
        ureq::Error::Io(io) => return io_error_ref(io).with_cause(e),
        ureq::Error::Timeout(_) => HttpErrorKind::Timeout,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => HttpErrorKind::Connect,
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => HttpErrorKind::Connect,
        ureq::Error::BodyExceedsLimit(_) => HttpErrorKind::BodyTooLarge,
        _ => HttpErrorKind::Other,
    };
    HttpError::new(kind, e.to_string()).with_cause(e)
}

fn io_error_ref(e: &io::Error) -> HttpError {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::AddrNotAvailable
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable => HttpErrorKind::Connect,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HttpErrorKind::Timeout,
        _ => HttpErrorKind::Io,
    };
    HttpError::new(kind, e.to_string())
}

fn io_error(e: io::Error) -> HttpError {
    // ureq reports its own failures while reading the body as io errors
    // wrapping a ureq::Error.
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
        if matches!(inner, ureq::Error::Timeout(_)) {
            return HttpError::new(HttpErrorKind::Timeout, e.to_string()).with_cause(e);
        }
    }
    io_error_ref(&e).with_cause(e)
}
