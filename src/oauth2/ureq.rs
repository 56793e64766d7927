//! [`HttpClient`] on a blocking `ureq` agent, run on the `blocking` thread
//! pool so it works under any executor.

mod proxy;

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::oauth2::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse};
use crate::BoxFuture;
use proxy::{ProxyEnv, Route};

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
/// credentials elsewhere), returns error statuses as responses, and times
/// out after 30 s when a request sets no timeout.
///
/// # Proxies
///
/// [`UreqClient::new`] reads the proxy environment variables once, when it
/// is called, the way curl reads them:
///
/// - Requests to loopback (`localhost`, `127.0.0.0/8`, `::1`) never go
///   through a proxy, whatever the variables say: a proxy has no business
///   seeing credentials sent to this very machine.
/// - An `https` URL uses `https_proxy` (or `HTTPS_PROXY`), an `http` URL
///   `http_proxy` (lower case only, as in curl: CGI servers set
///   `HTTP_PROXY` from a request header), and either falls back to
///   `all_proxy` (or `ALL_PROXY`). The lower-case name wins when both are
///   set; an empty variable counts as unset.
/// - A proxy is `[http://|https://][user:password@]host[:port]` (port 1080
///   by default, 443 for `https://`), reached with an HTTP `CONNECT` tunnel,
///   so TLS runs end to end through it. A value that is not such a URL (a
///   SOCKS proxy, for one) makes the requests it would carry fail with a
///   connect error naming the variable, rather than bypass the proxy.
/// - `no_proxy` (or `NO_PROXY`) lists hosts that go direct, separated by
///   commas: `*` for all; a name such as `example.com` for itself and its
///   subdomains (`www.example.com`, not `notexample.com`), with or without
///   a leading dot (or `*.`); an IP address, or a network such as
///   `10.0.0.0/8` or `fd00::/8` (IPv6 without brackets); any of them with
///   `:port` to match one port only (`[::1]:8443` for IPv6).
///
/// [`UreqClient::with_agent`] keeps the agent's own proxy settings (ureq's
/// reading of the environment, by default), except that loopback is never
/// proxied there either.
///
/// # Logging
///
/// ureq's protocol crate logs every byte it sends and receives at TRACE
/// level under the target `ureq_proto::util`, credentials and tokens
/// included. tokenkeeper's own records never hold a secret, but it cannot
/// filter another crate's: keep that target at DEBUG or less (for
/// `env_logger`, `RUST_LOG=trace,ureq_proto=debug`). When the logger would
/// record those lines, the first request logs a warning saying so.
///
/// ```
/// use tokenkeeper::oauth2::{TokenEndpoint, UreqClient};
/// use tokenkeeper::{ClientId, ClientSecret};
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", ClientId::new("svc"))
///     .client_secret(ClientSecret::new("s"))
///     .http_client(UreqClient::new())
///     .build()
///     .unwrap();
/// # let _ = endpoint;
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "ureq")))]
pub struct UreqClient {
    agent: ureq::Agent,
    /// The proxies from the environment ([`UreqClient::new`]); `None` when
    /// the agent brings its own settings ([`UreqClient::with_agent`]).
    proxies: Option<Arc<ProxyEnv>>,
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
    /// A client with the default agent described above, and the proxies
    /// the environment names now (see [Proxies](#proxies)).
    pub fn new() -> UreqClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(concat!("tokenkeeper/", env!("CARGO_PKG_VERSION")))
            // Chosen per request instead (`ProxyEnv::route`): ureq's own
            // reading of the environment would proxy loopback.
            .proxy(None)
            .build()
            .into();
        UreqClient {
            agent,
            proxies: Some(Arc::new(ProxyEnv::from_env())),
        }
    }

    /// A client on your own agent. Configure it with
    /// `http_status_as_error(false)`, or error responses lose their body and
    /// come back as bare statuses. Its proxy settings are kept, except for
    /// loopback hosts, which are always reached directly.
    pub fn with_agent(agent: ureq::Agent) -> UreqClient {
        UreqClient {
            agent,
            proxies: None,
        }
    }

    /// What a request to `url` does about proxies.
    fn proxy_for(&self, url: &url::Url) -> Result<ProxyOverride, HttpError> {
        match &self.proxies {
            // The agent has no proxy of its own: direct unless routed.
            Some(proxies) => match proxies.route(url) {
                Route::Direct => Ok(ProxyOverride::Keep),
                Route::Proxy(proxy) => Ok(ProxyOverride::Set(Some(proxy.clone()))),
                Route::Refused(why) => Err(HttpError::new(HttpErrorKind::Connect, why)),
            },
            None => {
                let loopback = url.host().is_some_and(|host| proxy::is_loopback(&host));
                if loopback && self.agent.config().proxy().is_some() {
                    Ok(ProxyOverride::Set(None))
                } else {
                    Ok(ProxyOverride::Keep)
                }
            }
        }
    }
}

/// What one request does about proxies.
enum ProxyOverride {
    /// Whatever the agent is configured with.
    Keep,
    /// This proxy, or none.
    Set(Option<ureq::Proxy>),
}

/// Warns once per process when the logger records ureq's wire dumps.
///
/// `ureq-proto` logs every byte sent and received at TRACE level (target
/// `ureq_proto::util`, 16 bytes a line): credentials, assertions, proofs
/// and tokens included. A library cannot filter another crate's records,
/// so the application that turned them on is told how to turn them off.
fn warn_if_wire_dumps_are_logged() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if log::log_enabled!(target: WIRE_DUMP_TARGET, log::Level::Trace)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        log::warn!(
            target: "tokenkeeper::oauth2",
            "the logger records TRACE lines of {WIRE_DUMP_TARGET}, which dump every byte ureq \
             sends and receives, client credentials and tokens included; set that target to \
             DEBUG or less (RUST_LOG=...,ureq_proto=debug)"
        );
    }
}

/// Where `ureq-proto` logs the bytes it writes and reads.
const WIRE_DUMP_TARGET: &str = "ureq_proto::util";

impl HttpClient for UreqClient {
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        warn_if_wire_dumps_are_logged();
        let agent = self.agent.clone();
        let proxy = self.proxy_for(request.url());
        Box::pin(blocking::unblock(move || {
            let builder = configure(agent.post(request.url().as_str()), proxy?, &request);
            let response = builder.send(request.body()).map_err(ureq_error)?;
            read_response(response, max_body)
        }))
    }

    fn get(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        warn_if_wire_dumps_are_logged();
        let agent = self.agent.clone();
        let proxy = self.proxy_for(request.url());
        Box::pin(blocking::unblock(move || {
            let builder = configure(agent.get(request.url().as_str()), proxy?, &request);
            let response = builder.call().map_err(ureq_error)?;
            read_response(response, max_body)
        }))
    }
}

/// `builder` with the headers of `request`, its timeout, and the proxy
/// setting overridden as `proxy` says.
fn configure<B>(
    mut builder: ureq::RequestBuilder<B>,
    proxy: ProxyOverride,
    request: &HttpRequest,
) -> ureq::RequestBuilder<B> {
    for (name, value) in request.headers() {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if request.timeout().is_some() || matches!(proxy, ProxyOverride::Set(_)) {
        let mut config = builder.config();
        if let Some(timeout) = request.timeout() {
            config = config.timeout_global(Some(timeout));
        }
        if let ProxyOverride::Set(proxy) = proxy {
            config = config.proxy(proxy);
        }
        builder = config.build();
    }
    builder
}

/// The response, its body read up to `max_body` bytes.
fn read_response(
    response: ureq::http::Response<ureq::Body>,
    max_body: usize,
) -> Result<HttpResponse, HttpError> {
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
        _ if is_lookup_failure(e) => HttpErrorKind::Connect,
        _ => HttpErrorKind::Io,
    };
    HttpError::new(kind, e.to_string())
}

/// Whether `e` is the standard library's failure to resolve a host name,
/// which ureq passes on as an I/O error (its `HostNotFound` is only for a
/// name that resolves to no address). The error has no kind of its own
/// (`Uncategorized`, which cannot be matched), only this text.
fn is_lookup_failure(e: &io::Error) -> bool {
    e.to_string()
        .starts_with("failed to lookup address information")
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
