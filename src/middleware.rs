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
//! For a DPoP-bound token (RFC 9449; an endpoint with
//! [`dpop`](crate::oauth2::TokenEndpointBuilder::dpop)) it sends
//! `Authorization: DPoP <token>` and a new `DPoP` proof for the request's
//! method and URL ([`TokenHandle::authorization`]). It keeps the
//! `DPoP-Nonce` any answer carries for that origin (the next proofs carry
//! it), and answers a resource server's nonce challenge (401 with
//! `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce`) by
//! sending the request once more with a proof that carries the nonce, once
//! per token, under the same condition on the body. A DPoP 401 rejects the
//! token when its challenge says `invalid_token` (or there is no `DPoP` or
//! `Bearer` challenge), as above; an `invalid_dpop_proof` answer is
//! returned as it is, since a new token would not mend the proof.
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
use std::sync::Arc;

use surf::http::headers::{AUTHORIZATION, WWW_AUTHENTICATE};
use surf::http::StatusCode;
use surf::middleware::{Middleware, Next};
use surf::{Body, Client, Request, Response};

use crate::manager::{Authorization, TokenHandle};
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

/// The request without its token, and its body, to send it again.
struct Replay {
    request: Request,
    body: Vec<u8>,
}

impl Replay {
    fn request(&self) -> Request {
        // A clone's body is empty.
        let mut request = self.request.clone();
        request.set_body(Body::from_bytes(self.body.clone()));
        request
    }
}

/// The scheme of an authentication challenge, the word before its
/// parameters.
fn scheme(challenge: &str) -> &str {
    challenge
        .trim_start()
        .split(|c: char| c.is_ascii_whitespace())
        .next()
        .unwrap_or_default()
}

fn challenges(response: &Response) -> Vec<&str> {
    response
        .header(WWW_AUTHENTICATE)
        .map(|values| values.iter().map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

/// Whether a response says the token itself was rejected (RFC 6750 §3.1;
/// RFC 9449 §7.1 for a DPoP-bound token, whose server may challenge with
/// either scheme).
fn rejects_token(response: &Response, dpop: bool) -> bool {
    if response.status() != StatusCode::Unauthorized {
        return false;
    }
    let ours: Vec<&str> = challenges(response)
        .into_iter()
        .filter(|c| {
            let scheme = scheme(c);
            scheme.eq_ignore_ascii_case("bearer") || (dpop && scheme.eq_ignore_ascii_case("dpop"))
        })
        .collect();
    ours.is_empty() || ours.iter().any(|c| c.contains("invalid_token"))
}

/// The `DPoP-Nonce` a response carries, if any.
fn dpop_nonce(response: &Response) -> Option<&str> {
    response
        .header("DPoP-Nonce")
        .map(|values| values.last().as_str())
        .filter(|nonce| !nonce.is_empty())
}

/// Whether a response is a resource server's nonce challenge (RFC 9449
/// §9): a 401 with a `DPoP` challenge `use_dpop_nonce` and the nonce.
fn demands_nonce(response: &Response) -> bool {
    response.status() == StatusCode::Unauthorized
        && dpop_nonce(response).is_some()
        && challenges(response)
            .iter()
            .any(|c| scheme(c).eq_ignore_ascii_case("dpop") && c.contains("use_dpop_nonce"))
}

/// surf's error type needs a status; these errors are ours, not a server's.
fn our_error(error: crate::Error) -> surf::Error {
    surf::Error::new(StatusCode::ServiceUnavailable, error)
}

impl BearerAuth {
    /// The headers of `request` with `token`.
    fn authorize(&self, request: &mut Request, token: Arc<Token>) -> surf::Result<Authorization> {
        let method = request.method().to_string();
        let url = request.url().to_string();
        let headers = self
            .handle
            .authorization_for(token, &method, &url)
            .map_err(our_error)?;
        request.insert_header(AUTHORIZATION, headers.authorization());
        if let Some(proof) = headers.dpop() {
            request.insert_header("DPoP", proof);
        }
        Ok(headers)
    }

    /// Keeps the nonce an answer to a DPoP request carried, for the
    /// request's origin.
    fn remember_nonce(&self, url: &str, response: &Response) {
        #[cfg(feature = "jwt")]
        if let Some(nonce) = dpop_nonce(response) {
            // The URL is the one the proof was made for: it parses.
            let _ = self.handle.remember_dpop_nonce(url, nonce);
        }
        #[cfg(not(feature = "jwt"))]
        let _ = (url, response);
    }

    /// Sends `request` with `token`, and once more with the nonce if the
    /// server answers with a nonce challenge and the body can be sent
    /// again.
    async fn send(
        &self,
        mut request: Request,
        token: &Arc<Token>,
        replay: Option<&Replay>,
        client: &Client,
        next: Next<'_>,
    ) -> surf::Result<(Response, bool)> {
        let url = request.url().to_string();
        let dpop = self.authorize(&mut request, token.clone())?.is_dpop();
        let response = next.run(request, client.clone()).await?;
        if !dpop {
            return Ok((response, false));
        }
        self.remember_nonce(&url, &response);
        if !demands_nonce(&response) {
            return Ok((response, true));
        }
        let Some(replay) = replay else {
            log::debug!(target: LOG, "not answering the DPoP nonce challenge: the request body cannot be sent again");
            return Ok((response, true));
        };
        log::debug!(target: LOG, "the server demands a DPoP nonce: sending the request again with it");
        let mut again = replay.request();
        self.authorize(&mut again, token.clone())?;
        let response = next.run(again, client.clone()).await?;
        self.remember_nonce(&url, &response);
        Ok((response, true))
    }
}

#[surf::utils::async_trait]
impl Middleware for BearerAuth {
    async fn handle(
        &self,
        mut request: Request,
        client: Client,
        next: Next<'_>,
    ) -> surf::Result<Response> {
        let token = self.handle.token().await.map_err(our_error)?;

        let body = request.take_body();
        let (first, replay) = match body.len() {
            Some(len) if len <= MAX_REPLAY => {
                let replay = Replay {
                    request,
                    body: body.into_bytes().await?,
                };
                (replay.request(), Some(replay))
            }
            _ => {
                request.set_body(body);
                (request, None)
            }
        };
        let (response, dpop) = self
            .send(first, &token, replay.as_ref(), &client, next)
            .await?;
        if !rejects_token(&response, dpop) {
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
        match &replay {
            Some(replay) => {
                let (response, _) = self
                    .send(replay.request(), &fresh, Some(replay), &client, next)
                    .await?;
                Ok(response)
            }
            None => {
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

    fn rejects_token(response: &Response) -> bool {
        super::rejects_token(response, false)
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

    #[test]
    fn which_401s_reject_a_dpop_bound_token() {
        let dpop =
            |status, challenges: &[&str]| super::rejects_token(&response(status, challenges), true);
        assert!(dpop(StatusCode::Unauthorized, &[]));
        assert!(dpop(
            StatusCode::Unauthorized,
            &[r#"DPoP algs="ES256", error="invalid_token""#]
        ));
        assert!(dpop(StatusCode::Unauthorized, &[r#"Basic realm="x""#]));
        assert!(!dpop(
            StatusCode::Unauthorized,
            &[r#"DPoP algs="ES256", error="invalid_dpop_proof""#]
        ));
        assert!(!dpop(
            StatusCode::Unauthorized,
            &[r#"DPoP algs="ES256", error="use_dpop_nonce""#]
        ));
        assert!(!dpop(StatusCode::Forbidden, &[]));
    }

    #[test]
    fn a_nonce_challenge_needs_the_dpop_scheme_and_the_nonce() {
        let mut challenge = response(
            StatusCode::Unauthorized,
            &[r#"DPoP error="use_dpop_nonce""#],
        );
        assert!(!demands_nonce(&challenge), "no DPoP-Nonce header");
        challenge.insert_header("DPoP-Nonce", "n-1");
        assert!(demands_nonce(&challenge));
        assert_eq!(dpop_nonce(&challenge), Some("n-1"));
        let mut bearer = response(
            StatusCode::Unauthorized,
            &[r#"Bearer error="use_dpop_nonce""#],
        );
        bearer.insert_header("DPoP-Nonce", "n-1");
        assert!(!demands_nonce(&bearer));
        let mut ok = response(StatusCode::Ok, &[]);
        ok.insert_header("DPoP-Nonce", "n-2");
        assert!(!demands_nonce(&ok));
        assert_eq!(dpop_nonce(&ok), Some("n-2"));
    }
}
