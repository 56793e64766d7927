//! [`HttpClient`] on a `surf::Client` you configure.

use std::fmt;

use futures_lite::{AsyncReadExt, FutureExt};

use crate::oauth2::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse};
use crate::BoxFuture;

/// A [`HttpClient`] on a [`surf::Client`].
///
/// The feature enables no surf backend: build your client with the one you
/// chose. `curl-client` compiles no tokio; surf's `h1-client*` backends
/// compile tokio (through deadpool) and its `hyper-client` needs a tokio 0.2
/// runtime. surf reports network failures as errors carrying HTTP status
/// 400 or 500; this client never reads that status, so a refused connection
/// is never mistaken for an authority's answer. Do not add surf's redirect
/// middleware: a redirect could carry credentials elsewhere.
///
/// ```ignore
/// // With surf's `curl-client` feature enabled:
/// let http = tokenkeeper::oauth2::SurfClient::new(surf::Client::new());
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "surf")))]
pub struct SurfClient {
    client: surf::Client,
}

impl fmt::Debug for SurfClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SurfClient")
    }
}

impl SurfClient {
    /// Wraps `client`.
    pub fn new(client: surf::Client) -> SurfClient {
        SurfClient { client }
    }
}

impl From<surf::Client> for SurfClient {
    fn from(client: surf::Client) -> SurfClient {
        SurfClient::new(client)
    }
}

impl HttpClient for SurfClient {
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        let builder = self
            .client
            .post(request.url().as_str())
            .body(surf::Body::from_bytes(request.body().to_vec()));
        send(builder, request, max_body)
    }

    fn get(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        let builder = self.client.get(request.url().as_str());
        send(builder, request, max_body)
    }
}

/// Sends `builder` with the headers of `request`, within its timeout.
fn send(
    mut builder: surf::RequestBuilder,
    request: HttpRequest,
    max_body: usize,
) -> BoxFuture<'static, Result<HttpResponse, HttpError>> {
    let timeout = request.timeout();
    let exchange = async move {
        for (name, value) in request.headers() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut response = builder.send().await.map_err(surf_error)?;
        let status = u16::from(response.status());
        let headers: Vec<(String, String)> = response
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(|v| (name.as_str().to_owned(), v.as_str().to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let declared = response.len().unwrap_or(0);
        if declared > max_body {
            return Err(HttpError::body_too_large(max_body));
        }
        let limit = u64::try_from(max_body)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut body = Vec::new();
        response
            .take_body()
            .into_reader()
            .take(limit)
            .read_to_end(&mut body)
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Io, e.to_string()).with_cause(e))?;
        if body.len() > max_body {
            return Err(HttpError::body_too_large(max_body));
        }
        Ok(HttpResponse::new(status, headers, body))
    };
    match timeout {
        None => exchange.boxed(),
        Some(timeout) => exchange
            .or(async move {
                async_io::Timer::after(timeout).await;
                Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    format!("no complete response within {timeout:?}"),
                ))
            })
            .boxed(),
    }
}

/// A surf error is always a failure below HTTP: surf delivers every real
/// response, 4xx and 5xx included, as `Ok`. Its status (400 or 500) is made
/// up and ignored here.
fn surf_error(e: surf::Error) -> HttpError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let kind =
        if lower.contains("refused") || lower.contains("connect") || lower.contains("resolve") {
            HttpErrorKind::Connect
        } else if lower.contains("timed out") || lower.contains("timeout") {
            HttpErrorKind::Timeout
        } else {
            HttpErrorKind::Io
        };
    HttpError::new(kind, text)
}
