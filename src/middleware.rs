//! surf middleware that sends the current token with every request.
//!
//! [`BearerAuth`] adds `Authorization: Bearer <token>` from a
//! [`TokenHandle`] to each request. When the server answers 401 because of
//! the token (a `WWW-Authenticate: Bearer` challenge with
//! `error="invalid_token"`, or a 401 without any Bearer challenge), it
//! reports the token it sent with
//! [`refresh_rejected`](TokenHandle::refresh_rejected), so a burst of such
//! answers costs one refresh, and retries the request once with the new
//! token, provided the body can be sent again (its length is known and at
//! most [`MAX_REPLAY`] bytes; streamed bodies are not retried).
//!
//! ```no_run
//! use tokenkeeper::middleware::BearerAuth;
//! # fn handle() -> tokenkeeper::TokenHandle { unimplemented!() }
//! # fn surf_client() -> surf::Client { unimplemented!() }
//!
//! let handle = handle(); // from TokenManager::builder(...).build()
//! // `surf::Client::new()` with the surf backend you enabled (such as curl-client).
//! let client = surf_client().with(BearerAuth::new(handle));
//! # let _ = client;
//! ```
//!
//! `crates/surf-tests/examples/surf_middleware.rs` in the repository is a
//! whole program.

use std::fmt;

use surf::http::headers::{AUTHORIZATION, WWW_AUTHENTICATE};
use surf::http::StatusCode;
use surf::middleware::{Middleware, Next};
use surf::{Body, Client, Request, Response};

use crate::manager::TokenHandle;
use crate::token::Token;

const LOG: &str = "tokenkeeper::middleware";

/// The largest request body kept to be sent again after a 401: 1 MiB.
pub const MAX_REPLAY: usize = 1024 * 1024;

/// surf middleware adding the manager's token to requests; see the
/// [module docs](self).
#[derive(Clone)]
pub struct BearerAuth {
    handle: TokenHandle,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth").finish_non_exhaustive()
    }
}

impl BearerAuth {
    /// Middleware that takes tokens from `handle`.
    pub fn new(handle: TokenHandle) -> BearerAuth {
        BearerAuth { handle }
    }
}

fn bearer(token: &Token) -> String {
    format!("Bearer {}", token.access_token().secret())
}

/// Whether a response says the token itself was rejected (RFC 6750 §3.1).
fn rejects_token(response: &Response) -> bool {
    if response.status() != StatusCode::Unauthorized {
        return false;
    }
    let challenges: Vec<&str> = response
        .header(WWW_AUTHENTICATE)
        .map(|values| values.iter().map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let bearer: Vec<&&str> = challenges
        .iter()
        .filter(|c| {
            c.trim_start()
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        })
        .collect();
    bearer.is_empty() || bearer.iter().any(|c| c.contains("invalid_token"))
}

#[surf::utils::async_trait]
impl Middleware for BearerAuth {
    async fn handle(
        &self,
        mut request: Request,
        client: Client,
        next: Next<'_>,
    ) -> surf::Result<Response> {
        // surf's error type needs a status; this one is ours, not a server's.
        let token = self
            .handle
            .token()
            .await
            .map_err(|e| surf::Error::new(StatusCode::ServiceUnavailable, e))?;

        let body = request.take_body();
        let replay = match body.len() {
            Some(len) if len <= MAX_REPLAY => Some(body.into_bytes().await?),
            _ => {
                request.set_body(body);
                None
            }
        };
        // Cloned before the token goes in; a clone's body is empty.
        let retry = replay.as_ref().map(|_| request.clone());
        if let Some(bytes) = &replay {
            request.set_body(Body::from_bytes(bytes.clone()));
        }
        request.insert_header(AUTHORIZATION, bearer(&token));
        let response = next.run(request, client.clone()).await?;
        if !rejects_token(&response) {
            return Ok(response);
        }

        log::info!(target: LOG, "the server rejected the token (HTTP 401); reporting it to the manager");
        let fresh = match self.handle.refresh_rejected(&token).await {
            Ok(fresh) => fresh,
            Err(e) => {
                log::warn!(target: LOG, "no new token after a 401: {e}");
                return Ok(response);
            }
        };
        match (retry, replay) {
            (Some(mut retry), Some(bytes)) => {
                retry.set_body(Body::from_bytes(bytes));
                retry.insert_header(AUTHORIZATION, bearer(&fresh));
                next.run(retry, client).await
            }
            _ => {
                log::debug!(target: LOG, "not retrying: the request body cannot be sent again");
                Ok(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: StatusCode, challenges: &[&str]) -> Response {
        let mut response = surf::http::Response::new(status);
        for c in challenges {
            response.append_header(WWW_AUTHENTICATE, *c);
        }
        Response::from(response)
    }

    #[test]
    fn which_401s_reject_the_token() {
        assert!(rejects_token(&response(StatusCode::Unauthorized, &[])));
        assert!(rejects_token(&response(
            StatusCode::Unauthorized,
            &[r#"Bearer realm="x", error="invalid_token""#]
        )));
        assert!(rejects_token(&response(
            StatusCode::Unauthorized,
            &[r#"Basic realm="x""#]
        )));
        assert!(!rejects_token(&response(
            StatusCode::Unauthorized,
            &[r#"Bearer realm="x""#]
        )));
        assert!(!rejects_token(&response(
            StatusCode::Unauthorized,
            &[r#"Bearer error="invalid_request""#]
        )));
        assert!(!rejects_token(&response(StatusCode::Forbidden, &[])));
        assert!(!rejects_token(&response(StatusCode::Ok, &[])));
    }
}
