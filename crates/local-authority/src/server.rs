//! The server thread: accept loop, connections, faults and the token endpoint.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_executor::Executor;
use async_io::{Async, Timer};
use futures_lite::FutureExt;
use serde_json::{Map, Value};

use crate::http::{BodyError, Conn, Head, ReadError};
use crate::{assertion, dpop, form};
use crate::{json_headers, Fault, MetadataKind, RecordedRequest, RefreshGrant, Shared, State};

/// Serves until `stop` closes (its sender is dropped), then drops every
/// connection task with the executor.
pub(crate) fn run(
    listener: Async<TcpListener>,
    shared: Arc<Shared>,
    stop: async_channel::Receiver<()>,
) {
    let ex = Executor::new();
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.get_ref().set_nodelay(true);
                    ex.spawn(connection(stream, shared.clone())).detach();
                }
                // Out of descriptors or similar: back off instead of spinning.
                Err(_) => {
                    Timer::after(Duration::from_millis(10)).await;
                }
            }
        }
    };
    async_io::block_on(ex.run(accept.or(async {
        let _ = stop.recv().await;
    })));
    // Dropping `ex` here cancels the connection tasks, closing their sockets.
}

/// A complete response to write.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves the requests of one connection until it closes.
async fn connection(stream: Async<TcpStream>, shared: Arc<Shared>) {
    let mut conn = Conn::new(stream);
    loop {
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) | Err(ReadError::Io) => return,
            Err(ReadError::Status(status)) => {
                let _ = conn.respond(status, &[], &[], true).await;
                conn.close().await;
                return;
            }
        };
        let is_token = head.target.split('?').next() == Some("/token");
        let body = conn.read_body(&head).await;
        let (body, failure) = match body {
            Ok(body) => (body, None),
            Err(BodyError::Io) => return,
            Err(BodyError::Malformed) => (Vec::new(), Some(400)),
            Err(BodyError::TooLarge) => (Vec::new(), Some(413)),
        };
        let close = head.wants_close();
        let Head {
            method,
            target,
            headers,
            ..
        } = head;
        let request = RecordedRequest {
            method,
            path: target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };

        // Record, count and pick a fault in one step.
        let (fault, latency, metadata) = {
            let mut state = shared.lock();
            state.requests.push(request.clone());
            let metadata = state.metadata_kind(&request.path);
            if is_token {
                state.token_requests += 1;
            }
            if is_token && failure.is_none() {
                let fault = state.faults.pop_front().or_else(|| state.outage.clone());
                (fault, state.latency, metadata)
            } else if metadata.is_some() && failure.is_none() {
                (state.metadata_faults.pop_front(), Duration::ZERO, metadata)
            } else {
                (None, Duration::ZERO, metadata)
            }
        };

        if let Some(status) = failure {
            let description = if status == 413 {
                "request body exceeds 64 KiB"
            } else {
                "malformed request body"
            };
            let body = error_body("invalid_request", description);
            let _ = conn
                .respond(status, &json_headers(), body.as_bytes(), true)
                .await;
            conn.close().await;
            return;
        }
        if !latency.is_zero() {
            Timer::after(latency).await;
        }

        let response = match fault {
            None if is_token => token_endpoint(&shared, &request),
            None if metadata.is_some() => {
                metadata_endpoint(&shared, &request, metadata.unwrap_or(MetadataKind::OAuth))
            }
            None if request.path.split('?').next() == Some("/resource") => {
                resource_endpoint(&shared, &request)
            }
            None => Response {
                status: 404,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: b"not found\n".to_vec(),
            },
            Some(Fault::Respond {
                status,
                headers,
                body,
            }) => Response {
                status,
                headers,
                body,
            },
            Some(Fault::Echo {
                status,
                part,
                shape,
            }) => {
                let (status, headers, body) =
                    crate::echo::respond(status, part, shape, &request, || {
                        shared.lock().new_access_token()
                    });
                Response {
                    status,
                    headers,
                    body,
                }
            }
            Some(Fault::Hang) => {
                // Keep `conn` (and its socket) alive until the executor drops us.
                futures_lite::future::pending::<()>().await;
                return;
            }
            Some(Fault::Reset) => return,
            Some(Fault::HalfBody {
                status,
                declared_len,
                body,
            }) => {
                let headers = vec![("Content-Type".into(), "application/json".into())];
                if conn
                    .respond_head(status, &headers, declared_len)
                    .await
                    .is_ok()
                {
                    let _ = conn.write_all(&body).await;
                }
                conn.close().await;
                return;
            }
            Some(Fault::Huge { len }) => {
                huge(&mut conn, len).await;
                conn.close().await;
                return;
            }
        };

        let close = close
            || response.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("connection")
                    && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
            });
        if conn
            .respond(response.status, &response.headers, &response.body, close)
            .await
            .is_err()
        {
            return;
        }
        if close {
            conn.close().await;
            return;
        }
    }
}

/// Streams a 200 of `len` bytes: `{"access_token":"` then `a`s.
async fn huge(conn: &mut Conn, len: usize) {
    const PREFIX: &[u8] = br#"{"access_token":""#;
    let headers = vec![(
        "Content-Type".to_string(),
        "application/json;charset=UTF-8".to_string(),
    )];
    if conn.respond_head(200, &headers, len).await.is_err() {
        return;
    }
    let mut chunk = vec![b'a'; 16 * 1024];
    let first = PREFIX.len().min(len);
    chunk[..first].copy_from_slice(&PREFIX[..first]);
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        if conn.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        if left == len {
            chunk[..first].fill(b'a');
        }
        left -= n;
    }
}

/// A protected resource (RFC 6750): 200 for a valid bearer token, 401 with
/// a Bearer challenge otherwise; a DPoP-bound token only with its proof
/// (RFC 9449 §7), and the current nonce on every answer while the resource
/// demands one. The body of a 200 echoes the request body.
fn resource_endpoint(shared: &Shared, request: &RecordedRequest) -> Response {
    let mut state = shared.lock();
    let mut response = resource_response(&mut state, request);
    if state.require_resource_dpop_nonce {
        response
            .headers
            .push(("DPoP-Nonce".into(), state.dpop_nonce.clone()));
    }
    response
}

fn resource_response(state: &mut State, request: &RecordedRequest) -> Response {
    let authorization = request.header("authorization");
    let bearer = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let dpop_token = authorization
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("DPoP"))
        .map(|(_, token)| token.trim());
    let usable =
        |state: &State, token: &str| state.token_is_valid(token) && !state.revoked.contains(token);
    if let Some(token) = dpop_token {
        return dpop_resource(state, request, token, usable(state, token));
    }
    if bearer.is_some_and(|t| state.access_token_jkt.contains_key(t)) {
        return refuse_resource(
            state,
            "invalid_token",
            "a DPoP-bound token sent as a Bearer token",
        );
    }
    if bearer.is_some_and(|t| usable(state, t)) {
        return resource_ok(request);
    }
    let challenge = match bearer {
        None => r#"Bearer realm="local-authority""#.to_owned(),
        Some(_) => r#"Bearer realm="local-authority", error="invalid_token", error_description="the access token is invalid""#.to_owned(),
    };
    unauthorized(challenge)
}

/// A resource request with `Authorization: DPoP token`.
fn dpop_resource(
    state: &mut State,
    request: &RecordedRequest,
    token: &str,
    usable: bool,
) -> Response {
    let Some(jkt) = state.access_token_jkt.get(token).cloned() else {
        if usable {
            return refuse_resource(state, "invalid_token", "the access token is not DPoP-bound");
        }
        return unauthorized(dpop_challenge(
            "invalid_token",
            "the access token is invalid",
        ));
    };
    if !usable {
        return unauthorized(dpop_challenge(
            "invalid_token",
            "the access token is invalid",
        ));
    }
    let proof = match dpop::header(request) {
        Ok(Some(proof)) => proof,
        Ok(None) => return refuse_resource(state, "invalid_dpop_proof", "no DPoP proof"),
        Err(refusal) => return refuse_resource(state, refusal.code(), refusal.reason()),
    };
    let expect = dpop::Expect {
        access_token: Some(token),
        jkt: Some(&jkt),
        nonce: state.require_resource_dpop_nonce,
    };
    match dpop::verify(state, request, proof, expect) {
        Ok(_) => resource_ok(request),
        Err(refusal) => refuse_resource(state, refusal.code(), refusal.reason()),
    }
}

fn resource_ok(request: &RecordedRequest) -> Response {
    Response {
        status: 200,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: format!("ok: {}", request.body).into_bytes(),
    }
}

/// A 401 with a DPoP challenge, recorded.
fn refuse_resource(state: &mut State, code: &str, why: &str) -> Response {
    record_refusal(state, "resource", code, why);
    unauthorized(dpop_challenge(code, why))
}

/// A DPoP challenge (RFC 9449 §7.1) with an error.
fn dpop_challenge(code: &str, why: &str) -> String {
    // A quoted-string cannot hold `"` or `\` unescaped; the reasons quote
    // URLs with Rust's `{:?}`.
    let why = why.replace(['"', '\\'], "'");
    format!(
        r#"DPoP algs="{}", error="{code}", error_description="{why}""#,
        dpop::ALGS.join(" ")
    )
}

fn unauthorized(challenge: String) -> Response {
    Response {
        status: 401,
        headers: vec![
            ("WWW-Authenticate".into(), challenge),
            ("Content-Type".into(), "text/plain".into()),
        ],
        body: b"unauthorized\n".to_vec(),
    }
}

/// A metadata document (RFC 8414, OpenID Connect Discovery), when it exists.
fn metadata_endpoint(shared: &Shared, request: &RecordedRequest, kind: MetadataKind) -> Response {
    let state = shared.lock();
    if request.method != "GET" {
        return Response {
            status: 405,
            headers: vec![("Allow".into(), "GET".into())],
            body: Vec::new(),
        };
    }
    if !state.serves(kind) {
        return Response {
            status: 404,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"not found\n".to_vec(),
        };
    }
    Response {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: state.metadata().to_string().into_bytes(),
    }
}

/// An RFC 6749 §5.2 error body; the description is omitted when empty.
pub(crate) fn error_body(code: &str, description: &str) -> String {
    let mut body = Map::new();
    body.insert("error".into(), code.into());
    if !description.is_empty() {
        body.insert("error_description".into(), description.into());
    }
    Value::Object(body).to_string()
}

fn json_response(status: u16, body: &Value) -> Response {
    Response {
        status,
        headers: json_headers(),
        body: body.to_string().into_bytes(),
    }
}

fn oauth_error(status: u16, code: &str, description: &str) -> Response {
    let mut response = Response {
        status,
        headers: json_headers(),
        body: error_body(code, description).into_bytes(),
    };
    if status == 401 {
        response.headers.push((
            "WWW-Authenticate".into(),
            r#"Basic realm="local-authority""#.into(),
        ));
    }
    response
}

fn invalid_request(description: &str) -> Response {
    oauth_error(400, "invalid_request", description)
}

fn invalid_client(description: &str) -> Response {
    oauth_error(401, "invalid_client", description)
}

/// The JWT bearer grant (RFC 7523 §2.1).
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Parameters that RFC 6749 §3.2 forbids repeating.
const SINGLE_PARAMS: [&str; 15] = [
    "assertion",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "client_assertion",
    "client_assertion_type",
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "refresh_token",
    "username",
    "password",
];

/// `POST /token` without a fault (RFC 6749), with the current DPoP nonce
/// on every answer while nonces are demanded (RFC 9449 §8).
fn token_endpoint(shared: &Shared, request: &RecordedRequest) -> Response {
    let mut response = token_response(shared, request);
    let state = shared.lock();
    if state.require_dpop_nonce {
        response
            .headers
            .push(("DPoP-Nonce".into(), state.dpop_nonce.clone()));
    }
    response
}

/// The DPoP proof of a token request checked (RFC 9449 §4.3): the
/// thumbprint of its key, `None` without a proof (or when proofs are
/// ignored), or the refusal to send.
fn token_proof(state: &mut State, request: &RecordedRequest) -> Result<Option<String>, Response> {
    if state.dpop_downgrade {
        return Ok(None);
    }
    let checked = match dpop::header(request) {
        Ok(Some(proof)) => {
            let expect = dpop::Expect {
                access_token: None,
                jkt: None,
                nonce: state.require_dpop_nonce,
            };
            dpop::verify(state, request, proof, expect).map(Some)
        }
        Ok(None) if state.require_dpop => Err(dpop::Refusal::Invalid(
            "a DPoP proof is required".to_owned(),
        )),
        Ok(None) => Ok(None),
        Err(refusal) => Err(refusal),
    };
    checked.map_err(|refusal| {
        record_refusal(state, "token", refusal.code(), refusal.reason());
        oauth_error(400, refusal.code(), refusal.reason())
    })
}

/// Records a DPoP refusal for [`LocalAuthority::dpop_refusals`](crate::LocalAuthority::dpop_refusals).
fn record_refusal(state: &mut State, endpoint: &str, code: &str, why: &str) {
    state
        .dpop_refusals
        .push(format!("{endpoint}: {code}: {why}"));
}

/// The answer of `POST /token`, before the DPoP nonce is added.
fn token_response(shared: &Shared, request: &RecordedRequest) -> Response {
    if request.method != "POST" {
        let mut response = invalid_request("the token endpoint accepts POST only");
        response.status = 405;
        response.headers.push(("Allow".into(), "POST".into()));
        return response;
    }
    let media_type = request
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    let json_only = shared.lock().json_only;
    let params = if request.is_json() {
        match form::json_params(&request.body) {
            Ok(params) => params,
            Err(why) => return invalid_request(why),
        }
    } else if json_only {
        return invalid_request("the body must be application/json");
    } else if media_type
        .is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    {
        request.form()
    } else {
        return invalid_request(
            "the body must be application/x-www-form-urlencoded or application/json",
        );
    };
    for name in SINGLE_PARAMS {
        if params.iter().filter(|(k, _)| k == name).count() > 1 {
            return invalid_request(&format!("parameter {name} is repeated"));
        }
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    let mut state = shared.lock();
    // Before client authentication, so that a nonce challenge does not use
    // up a client assertion.
    let jkt = match token_proof(&mut state, request) {
        Ok(jkt) => jkt,
        Err(response) => return response,
    };
    let by_assertion =
        param("client_assertion_type").is_some() || param("client_assertion").is_some();
    let authenticates = by_assertion
        || request.header("authorization").is_some()
        || param("client_secret").is_some();
    let authenticated = if by_assertion {
        authenticate_assertion(&mut state, request.header("authorization"), &param)
    } else if !authenticates
        && matches!(
            param("grant_type"),
            Some(JWT_BEARER_GRANT | crate::exchange::TOKEN_EXCHANGE_GRANT)
        )
    {
        // RFC 7523 §3.1: the assertion may be the only credential; the
        // client is then whoever it names. A security token service
        // exchanges tokens for anyone who presents a valid one, as cloud
        // STS endpoints do. A public client names itself.
        Ok(param("client_id").unwrap_or_default().to_owned())
    } else {
        authenticate(request.header("authorization"), &param, |id, secret| {
            state.clients.get(id).is_some_and(|s| s == secret)
        })
    };
    let client_id = match authenticated {
        Ok(id) => id,
        Err(response) => return response,
    };

    let scope = param("scope").map(str::to_string);
    // What a token exchange issued (RFC 8693 §2.2.1).
    let mut issued_token_type = None;
    let (scope, with_refresh) = match param("grant_type") {
        None => return invalid_request("missing grant_type"),
        Some("client_credentials") => (scope, false),
        Some("password") => {
            match (param("username"), param("password")) {
                (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {}
                (Some(_), Some(_)) => {
                    return oauth_error(400, "invalid_grant", "empty username or password")
                }
                _ => return invalid_request("missing username or password"),
            }
            (scope, true)
        }
        Some("refresh_token") => {
            let Some(token) = param("refresh_token") else {
                return invalid_request("missing refresh_token");
            };
            let granted = match state.refresh_tokens.get(token) {
                Some(RefreshGrant {
                    client_id: owner,
                    jkt: Some(bound),
                    ..
                }) if *owner == client_id && jkt.as_ref() != Some(bound) => {
                    let why = if jkt.is_some() {
                        "the refresh token is bound to another DPoP key"
                    } else {
                        "the refresh token is DPoP-bound: a proof with its key is required"
                    };
                    record_refusal(&mut state, "token", "invalid_grant", why);
                    return oauth_error(400, "invalid_grant", why);
                }
                Some(grant) if grant.client_id == client_id => grant.scope.clone(),
                _ => {
                    return oauth_error(
                        400,
                        "invalid_grant",
                        "refresh token unknown, already used, or issued to another client",
                    )
                }
            };
            if state.rotate {
                state.refresh_tokens.remove(token);
            }
            (scope.or(granted), state.rotate)
        }
        Some(JWT_BEARER_GRANT) => {
            let Some(assertion) = param("assertion") else {
                return invalid_request("missing assertion");
            };
            let token_url = state.token_url.clone();
            let claims = match assertion::verify(&state, assertion, &token_url) {
                Ok(claims) => claims,
                Err(why) => return oauth_error(400, "invalid_grant", &why),
            };
            assertion::spend(&mut state, &claims);
            // A scope may travel as a parameter or, as Google has it, a claim.
            let claimed = claims
                .get("scope")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (scope.or(claimed), false)
        }
        Some(crate::exchange::TOKEN_EXCHANGE_GRANT) => {
            match crate::exchange::exchange(&mut state, &client_id, &params) {
                Ok(issued) => issued_token_type = Some(issued),
                Err((code, why)) => return oauth_error(400, code, &why),
            }
            (scope, false)
        }
        Some(grant) if state.extra_grants.contains(grant) => (scope, false),
        Some(_) => return oauth_error(
            400,
            "unsupported_grant_type",
            "supported: client_credentials, refresh_token, password, jwt-bearer, token-exchange",
        ),
    };

    let mut body = Map::new();
    let access_token = state.new_access_token();
    if let Some(jkt) = &jkt {
        state
            .access_token_jkt
            .insert(access_token.clone(), jkt.clone());
    }
    body.insert("access_token".into(), access_token.into());
    // RFC 8693 §2.2.1: "N_A" for a token that is not an access token.
    let token_type = match &issued_token_type {
        Some(issued) if issued != crate::exchange::ACCESS_TOKEN_TYPE => "N_A",
        _ if jkt.is_some() => "DPoP",
        _ => "Bearer",
    };
    body.insert("token_type".into(), token_type.into());
    if let Some(issued) = issued_token_type {
        body.insert("issued_token_type".into(), issued.into());
    }
    if let Some(expires_in) = state.expires_in.clone() {
        body.insert("expires_in".into(), expires_in);
    }
    if with_refresh {
        let refresh = state.new_refresh_token(&client_id, scope.clone(), jkt);
        body.insert("refresh_token".into(), refresh.into());
    }
    if let Some(scope) = scope {
        body.insert("scope".into(), scope.into());
    }
    state.tokens_issued += 1;
    json_response(200, &Value::Object(body))
}

/// Authenticates the client by `client_secret_basic` or `client_secret_post`
/// (exactly one of them) and returns its id.
fn authenticate<'a>(
    authorization: Option<&str>,
    param: &impl Fn(&str) -> Option<&'a str>,
    verify: impl Fn(&str, &str) -> bool,
) -> Result<String, Response> {
    let body_id = param("client_id");
    let body_secret = param("client_secret");
    let (id, secret) = match (authorization, body_secret) {
        (Some(_), Some(_)) => {
            return Err(invalid_client("more than one client authentication method"))
        }
        (Some(header), None) => {
            let (id, secret) = basic_credentials(header)
                .ok_or_else(|| invalid_client("malformed Basic credentials"))?;
            if body_id.is_some_and(|b| b != id) {
                return Err(invalid_client(
                    "client_id in the body differs from the authenticated client",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => {
            let id = body_id.ok_or_else(|| invalid_client("client_secret without client_id"))?;
            (id.to_string(), secret.to_string())
        }
        (None, None) => return Err(invalid_client("client authentication required")),
    };
    if verify(&id, &secret) {
        Ok(id)
    } else {
        Err(invalid_client("unknown client or wrong secret"))
    }
}

/// Authenticates the client by a JWT assertion (RFC 7523 §2.2), the only
/// method it may use, and returns its id.
fn authenticate_assertion<'a>(
    state: &mut State,
    authorization: Option<&str>,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Result<String, Response> {
    if authorization.is_some() || param("client_secret").is_some() {
        return Err(invalid_client("more than one client authentication method"));
    }
    if param("client_assertion_type") != Some(assertion::JWT_BEARER) {
        return Err(invalid_client(
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
    }
    let Some(jwt) = param("client_assertion") else {
        return Err(invalid_client(
            "client_assertion_type without client_assertion",
        ));
    };
    let token_url = state.token_url.clone();
    assertion::authenticate(state, jwt, param("client_id"), &token_url)
        .map_err(|why| invalid_client(&why))
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))`
/// (RFC 6749 §2.3.1).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, credentials) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = form::base64_decode(credentials.trim())?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form::decode(id), form::decode(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_urldecoded() {
        // base64("id%3Awith+space:s%2Fe+c") = aWQlM0F3aXRoK3NwYWNlOnMlMkZlK2M=
        assert_eq!(
            basic_credentials("Basic aWQlM0F3aXRoK3NwYWNlOnMlMkZlK2M="),
            Some(("id:with space".into(), "s/e c".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        // base64("nocolon")
        assert_eq!(basic_credentials("Basic bm9jb2xvbg=="), None);
    }

    #[test]
    fn error_body_omits_empty_description() {
        assert_eq!(
            error_body("invalid_grant", ""),
            r#"{"error":"invalid_grant"}"#
        );
    }
}
