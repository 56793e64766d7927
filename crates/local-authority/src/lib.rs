//! An in-process OAuth2 authorization server (the token endpoint of RFC 6749)
//! on `127.0.0.1`, with fault injection, for tokenkeeper's integration tests,
//! examples and benchmarks.
//!
//! [`LocalAuthority::start`] binds `127.0.0.1:0` and serves `POST /token` from
//! a dedicated background thread that runs its own `async-executor`, so it
//! works the same under any executor the caller uses (or none). It depends on
//! smol-rs crates only, never on tokio. Dropping the [`LocalAuthority`] stops
//! the server and closes every connection.
//!
//! Supported on `/token`:
//! - grants `client_credentials`, `refresh_token` (with or without rotation),
//!   `password`, the JWT bearer grant (RFC 7523 §2.1: an `assertion` signed
//!   with the key registered for its issuer, checked as client assertions
//!   are; `invalid_grant` otherwise; client authentication optional; a
//!   `scope` claim counts as the scope asked for), token exchange (RFC 8693:
//!   the subject and actor tokens must be access tokens this server issued
//!   and that are still valid, or tokens registered with
//!   [`LocalAuthority::add_subject_token`], each presented with its type;
//!   `invalid_grant` otherwise; an exchange without client authentication
//!   is answered, as a cloud STS does, for a public client that sends its
//!   `client_id` alone or for nobody; each
//!   one is recorded, see [`LocalAuthority::exchanges`]), and any other
//!   grant type allowed with [`LocalAuthority::allow_grant_type`];
//! - form bodies, and JSON bodies (an object of strings) for authorities that
//!   demand them ([`LocalAuthority::set_json_only`] refuses forms);
//! - client authentication `client_secret_basic` (RFC 6749 §2.3.1: id and
//!   secret form-urlencoded before base64), `client_secret_post`, and JWT
//!   assertions (RFC 7523 §2.2): `private_key_jwt` with a public key
//!   registered by [`LocalAuthority::add_client_key`] (ES256, RS256, PS256,
//!   EdDSA) and `client_secret_jwt` (HS256 with the client's secret), each
//!   checked for real: signature, `iss` = `sub` = the client, `aud` (the
//!   token URL, or one allowed with
//!   [`LocalAuthority::accept_assertion_audience`]), `exp`, `nbf`, `iat`,
//!   and a `jti` never seen before; anything else is `invalid_client`;
//! - DPoP (RFC 9449) for every grant: a request with a `DPoP` proof gets
//!   it checked for real (one header, `typ` `dpop+jwt`, an asymmetric
//!   `alg`, a public `jwk` whose signature verifies, `htm`, `htu`, `iat`
//!   within 60 s, a `jti` never seen before, and the nonce when one is
//!   demanded: [`LocalAuthority::require_dpop_nonce`]) and a token of
//!   `token_type` `DPoP` bound to the key's thumbprint
//!   ([`LocalAuthority::access_token_jkt`]); a refresh token issued so is
//!   bound to that key too. A bad proof is 400 `invalid_dpop_proof`, a
//!   missing nonce 400 `use_dpop_nonce` with a `DPoP-Nonce` header; each
//!   refusal is recorded ([`LocalAuthority::dpop_refusals`]). The resource
//!   ([`LocalAuthority::resource_url`]) checks the proofs of bound tokens;
//!   [`LocalAuthority::require_dpop`] and
//!   [`LocalAuthority::set_dpop_downgrade`] test what a client does with a
//!   server that demands DPoP or ignores it;
//! - RFC 6749 §5.2 error responses;
//! - discovery: `GET /.well-known/oauth-authorization-server` (RFC 8414) and
//!   `GET /.well-known/openid-configuration`, for the issuer
//!   [`LocalAuthority::issuer`] (with a path inserted or appended as the
//!   specifications say, see [`LocalAuthority::set_issuer_path`]); the
//!   document is [`LocalAuthority::metadata`] unless replaced, either may
//!   be turned off, and faults can be queued for them
//!   ([`LocalAuthority::push_metadata_fault`]). Client assertions for the
//!   issuer are accepted as for the token URL;
//! - faults ([`Fault`]) queued for the next requests or applied to all of them.
//!
//! HTTP/1.1 is hand-written and minimal: `Content-Length` and chunked request
//! bodies up to 64 KiB (larger ones get 413), keep-alive and pipelining,
//! `Expect: 100-continue`.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let authority = local_authority::LocalAuthority::start()?;
//! assert!(authority.token_url().starts_with("http://127.0.0.1:"));
//!
//! let body = "grant_type=client_credentials&client_id=client-a&client_secret=secret-a";
//! let mut stream = std::net::TcpStream::connect(authority.addr())?;
//! write!(
//!     stream,
//!     "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
//!      Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
//!     body.len()
//! )?;
//! let mut response = String::new();
//! stream.read_to_string(&mut response)?;
//! assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(response.contains(r#""token_type":"Bearer""#));
//! assert_eq!(authority.tokens_issued(), 1);
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod assertion;
mod dpop;
mod echo;
mod exchange;
mod form;
mod http;
mod server;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_io::Async;
use serde_json::Value;

pub use echo::{EchoPart, EchoShape};

/// An OAuth2 token endpoint running on `127.0.0.1` in a background thread.
///
/// Every setter takes effect for the next request. Dropping it stops the
/// server: the listening socket and all connections (hanging ones included)
/// are closed and the thread is joined.
pub struct LocalAuthority {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping the only sender tells the server thread to stop.
    stop: Option<async_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LocalAuthority {
    /// Binds `127.0.0.1:0`, starts serving from a new thread, and returns.
    ///
    /// It knows one client, `client-a` with secret `secret-a`, and answers
    /// with `"expires_in": 60` and rotating refresh tokens.
    pub fn start() -> std::io::Result<LocalAuthority> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let listener = Async::new(listener)?;
        let shared = Arc::new(Shared::new(format!("http://{addr}/token")));
        let (stop, stopped) = async_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("local-authority-{}", addr.port()))
            .spawn({
                let shared = shared.clone();
                move || server::run(listener, shared, stopped)
            })?;
        Ok(LocalAuthority {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the server listens on (`127.0.0.1` and an ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token endpoint's URL, `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The issuer identifier: `http://127.0.0.1:PORT` and the path set
    /// with [`set_issuer_path`](Self::set_issuer_path) (none by default).
    pub fn issuer(&self) -> String {
        self.shared.lock().issuer()
    }

    /// Gives the issuer a path (`/tenant-a`, say): the RFC 8414 document
    /// is then at `/.well-known/oauth-authorization-server/tenant-a` and
    /// the OpenID one at `/tenant-a/.well-known/openid-configuration`.
    pub fn set_issuer_path(&self, path: &str) {
        self.shared.lock().issuer_path = path.trim_end_matches('/').to_owned();
    }

    /// The metadata document served: the one set with
    /// [`set_metadata`](Self::set_metadata), else this server's (its
    /// issuer, token endpoint, every client authentication method and
    /// algorithm it verifies, and its grant types).
    pub fn metadata(&self) -> Value {
        self.shared.lock().metadata()
    }

    /// Serves `document` as the metadata (a test's own, with another
    /// issuer or fewer methods, say); `None` serves this server's again.
    pub fn set_metadata(&self, document: Option<Value>) {
        self.shared.lock().metadata = document;
    }

    /// Which metadata documents exist: the RFC 8414 one (`oauth`) and the
    /// OpenID one (`openid`); both by default. One that does not exist is
    /// a 404.
    pub fn serve_metadata(&self, oauth: bool, openid: bool) {
        let mut state = self.shared.lock();
        state.serve_oauth_metadata = oauth;
        state.serve_openid_metadata = openid;
    }

    /// Queues a fault for the next request of a metadata document, as
    /// [`push_fault`](Self::push_fault) does for `/token`.
    pub fn push_metadata_fault(&self, fault: Fault) {
        self.shared.lock().metadata_faults.push_back(fault);
    }

    /// How many requests the metadata documents received.
    pub fn metadata_requests(&self) -> usize {
        let state = self.shared.lock();
        state
            .requests
            .iter()
            .filter(|r| state.metadata_kind(&r.path).is_some())
            .count()
    }

    /// Registers a client (or replaces its secret).
    pub fn add_client(&self, id: &str, secret: &str) {
        self.shared
            .lock()
            .clients
            .insert(id.to_string(), secret.to_string());
    }

    /// Registers a client that authenticates with `private_key_jwt`: its
    /// public key as a JWK (RFC 7517: `EC` on `P-256`, `RSA`, or `OKP` on
    /// `Ed25519`), which checks the signature of its assertions. A client
    /// may have a key and a secret.
    ///
    /// # Panics
    ///
    /// If `jwk` is not such a key.
    pub fn add_client_key(&self, id: &str, jwk: &str) {
        let key = assertion::PublicKey::from_jwk(jwk)
            .unwrap_or_else(|e| panic!("add_client_key({id:?}): {e}"));
        self.shared.lock().client_keys.insert(id.to_string(), key);
    }

    /// Accepts client assertions whose `aud` is `audience` (besides the
    /// token URL, always accepted), as an authority that takes its issuer
    /// identifier does.
    pub fn accept_assertion_audience(&self, audience: &str) {
        self.shared.lock().audiences.push(audience.to_owned());
    }

    /// A client assertion for `client_id` as a platform would issue one
    /// for a workload (to put in an assertion file): an HS256 JWT signed
    /// with the client's secret, for the token URL, valid for
    /// `lifetime_s` seconds, with a new `jti`. This server accepts it once.
    ///
    /// # Panics
    ///
    /// If the client has no secret.
    pub fn mint_client_assertion(&self, client_id: &str, lifetime_s: u64) -> String {
        let state = self.shared.lock();
        let secret = state
            .clients
            .get(client_id)
            .unwrap_or_else(|| panic!("mint_client_assertion: no secret for {client_id:?}"));
        assertion::mint_hs256(client_id, secret, &state.token_url, lifetime_s)
    }

    /// Sets what successful responses carry as `expires_in`: `None` omits the
    /// member; any JSON value is sent as-is, so tests can send `"3600"` as a
    /// string or `1e300`. The default is `Some(60)`.
    ///
    /// [`is_valid_access_token`](Self::is_valid_access_token) reads a number
    /// or numeric string as seconds; tokens issued without a usable lifetime
    /// never expire.
    pub fn set_expires_in(&self, expires_in: Option<Value>) {
        self.shared.lock().expires_in = expires_in;
    }

    /// Whether each use of a refresh token revokes it and returns a new one
    /// (`true`, the default), or keeps it valid and returns none (`false`).
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.shared.lock().rotate = rotate;
    }

    /// Mints a refresh token for `client_id` without a request, as if an
    /// earlier grant had returned it.
    pub fn issue_refresh_token(&self, client_id: &str) -> String {
        self.shared.lock().new_refresh_token(client_id, None, None)
    }

    /// Answers requests of `grant_type` (a custom or extension grant, such
    /// as `urn:ietf:params:oauth:grant-type:device_code`) as
    /// `client_credentials` are answered: after client authentication, an
    /// access token with the scope asked for. Its parameters are recorded
    /// and not checked.
    pub fn allow_grant_type(&self, grant_type: &str) {
        self.shared
            .lock()
            .extra_grants
            .insert(grant_type.to_owned());
    }

    /// Accepts `token`, of the type `token_type` (an RFC 8693 token type
    /// identifier such as `urn:ietf:params:oauth:token-type:jwt`), as the
    /// subject or actor token of a token exchange, as an STS that trusts
    /// its issuer would (a Kubernetes service-account token, say).
    pub fn add_subject_token(&self, token: &str, token_type: &str) {
        self.shared
            .lock()
            .subject_tokens
            .insert(token.to_owned(), token_type.to_owned());
    }

    /// Every token exchange answered, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.lock().exchanges.clone()
    }

    /// Whether `/token` accepts only JSON bodies (`true`), refusing a form
    /// with 400 `invalid_request` as some proprietary authorities do, or
    /// both (`false`, the default).
    pub fn set_json_only(&self, json_only: bool) {
        self.shared.lock().json_only = json_only;
    }

    /// Queues a fault: the next request to `/token` without a queued fault
    /// ahead of it gets this one (first in, first out; one per request).
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Gives every `/token` request this fault until it is cleared with
    /// `None`. Queued faults ([`push_fault`](Self::push_fault)) come first.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.shared.lock().outage = fault;
    }

    /// Delays every answer on `/token` (faults included) by `latency`, in
    /// real time, after the request has been read. Zero (the default) turns
    /// it off.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// How many requests `/token` received, faults and errors included.
    pub fn token_requests(&self) -> u64 {
        self.shared.lock().token_requests
    }

    /// How many successful token responses were sent.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.lock().tokens_issued
    }

    /// Every request received, on any path, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Whether this server issued `token` as an access token and it has not
    /// expired yet (in real time).
    pub fn is_valid_access_token(&self, token: &str) -> bool {
        self.shared.lock().token_is_valid(token)
    }

    /// The URL of a protected resource (RFC 6750) on this server:
    /// `http://127.0.0.1:PORT/resource`. It answers 200 (echoing the request
    /// body) to a valid bearer token that was not revoked, and 401 with a
    /// `WWW-Authenticate: Bearer` challenge (`error="invalid_token"` when a
    /// token was sent) otherwise.
    ///
    /// A DPoP-bound token (RFC 9449 §7) must come as
    /// `Authorization: DPoP <token>` with a `DPoP` proof for this request
    /// (`htm`, `htu`), its hash in `ath`, signed by the key the token is
    /// bound to, with a `jti` never seen before, and the nonce when
    /// [`require_resource_dpop_nonce`](Self::require_resource_dpop_nonce)
    /// says so; anything else is a 401 with a `WWW-Authenticate: DPoP`
    /// challenge (`invalid_dpop_proof`, `use_dpop_nonce` or
    /// `invalid_token`), recorded in
    /// [`dpop_refusals`](Self::dpop_refusals).
    pub fn resource_url(&self) -> String {
        format!("http://{}/resource", self.addr)
    }

    /// Makes the resource reject `token` from now on, as a server that
    /// revoked it would.
    pub fn revoke_access_token(&self, token: &str) {
        self.shared.lock().revoked.insert(token.to_owned());
    }

    /// Whether `/token` refuses a request without a DPoP proof (RFC 9449)
    /// with 400 `invalid_dpop_proof` (`true`), or answers it with a Bearer
    /// token (`false`, the default). A request with a proof is checked and
    /// answered with a bound token either way.
    ///
    /// ```
    /// let authority = local_authority::LocalAuthority::start()?;
    /// authority.require_dpop(true);
    /// let body = "grant_type=client_credentials&client_id=client-a&client_secret=secret-a";
    /// let response = post_token(&authority, body);
    /// assert!(response.starts_with("HTTP/1.1 400 "));
    /// assert!(response.contains(r#""error":"invalid_dpop_proof""#));
    /// assert_eq!(authority.dpop_refusals(), ["token: invalid_dpop_proof: a DPoP proof is required"]);
    /// # fn post_token(authority: &local_authority::LocalAuthority, body: &str) -> String {
    /// #     use std::io::{Read, Write};
    /// #     let mut stream = std::net::TcpStream::connect(authority.addr()).unwrap();
    /// #     write!(stream, "POST /token HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
    /// #         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
    /// #         authority.addr(), body.len()).unwrap();
    /// #     let mut response = String::new();
    /// #     stream.read_to_string(&mut response).unwrap();
    /// #     response
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn require_dpop(&self, require: bool) {
        self.shared.lock().require_dpop = require;
    }

    /// Whether a DPoP proof sent to `/token` must carry the current nonce
    /// ([`dpop_nonce`](Self::dpop_nonce)); one without it (or with an old
    /// one) is answered 400 `use_dpop_nonce` (RFC 9449 §8). While this is
    /// on, every answer of `/token` carries the nonce in a `DPoP-Nonce`
    /// header. Off by default.
    pub fn require_dpop_nonce(&self, require: bool) {
        self.shared.lock().require_dpop_nonce = require;
    }

    /// As [`require_dpop_nonce`](Self::require_dpop_nonce), for the proofs
    /// sent to the resource ([`resource_url`](Self::resource_url)) with a
    /// DPoP-bound token: one without the nonce is answered 401 with
    /// `WWW-Authenticate: DPoP error="use_dpop_nonce"` (RFC 9449 §9), and
    /// every answer of the resource carries `DPoP-Nonce`. Off by default.
    pub fn require_resource_dpop_nonce(&self, require: bool) {
        self.shared.lock().require_resource_dpop_nonce = require;
    }

    /// The DPoP nonce both endpoints demand when told to: the token
    /// endpoint and the resource share it.
    pub fn dpop_nonce(&self) -> String {
        self.shared.lock().dpop_nonce.clone()
    }

    /// Replaces the DPoP nonce with a new one and returns it, as a server
    /// does from time to time: a proof with the old one is then answered
    /// `use_dpop_nonce`.
    pub fn rotate_dpop_nonce(&self) -> String {
        let mut state = self.shared.lock();
        state.dpop_nonce = dpop::new_nonce();
        state.dpop_nonce.clone()
    }

    /// Whether `/token` ignores DPoP proofs, as a server that does not
    /// know DPoP does (`true`): a request with a proof is answered with
    /// `"token_type": "Bearer"` and an unbound token, the proof unchecked
    /// (and [`require_dpop`](Self::require_dpop) has no effect). For
    /// testing that a client refuses such a downgrade. Off by default.
    pub fn set_dpop_downgrade(&self, downgrade: bool) {
        self.shared.lock().dpop_downgrade = downgrade;
    }

    /// Every DPoP refusal, in order, at `/token` and at the resource, as
    /// `ENDPOINT: CODE: why` where `ENDPOINT` is `token` or `resource` and
    /// `CODE` is `invalid_dpop_proof`, `use_dpop_nonce`, `invalid_token`
    /// (a bound token sent without its scheme or an unbound one with it)
    /// or `invalid_grant` (a bound refresh token without its key). A
    /// nonce challenge is a refusal too: a client that answers it leaves
    /// one `use_dpop_nonce` entry.
    pub fn dpop_refusals(&self) -> Vec<String> {
        self.shared.lock().dpop_refusals.clone()
    }

    /// The JWK SHA-256 thumbprint (RFC 7638) of the key the access token
    /// `token` is bound to (its `cnf.jkt`), or `None` for a token issued
    /// without DPoP or not issued here.
    pub fn access_token_jkt(&self, token: &str) -> Option<String> {
        self.shared.lock().access_token_jkt.get(token).cloned()
    }

    /// How many requests the resource received.
    pub fn resource_requests(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path.split('?').next() == Some("/resource"))
            .count()
    }
}

impl fmt::Debug for LocalAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        let mut clients: Vec<&str> = state.clients.keys().map(String::as_str).collect();
        clients.sort_unstable();
        f.debug_struct("LocalAuthority")
            .field("addr", &self.addr)
            .field("clients", &clients)
            .field("token_requests", &state.token_requests)
            .field("tokens_issued", &state.tokens_issued)
            .finish_non_exhaustive()
    }
}

impl Drop for LocalAuthority {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been reported there.
            let _ = thread.join();
        }
    }
}

/// A request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target as sent, e.g. `/token` (a query string included).
    pub path: String,
    /// Header names lowercased, values with surrounding whitespace trimmed,
    /// in order of arrival.
    pub headers: Vec<(String, String)>,
    /// The raw body (decoded from chunked transfer coding if need be);
    /// bytes that are not UTF-8 become U+FFFD.
    pub body: String,
}

impl RecordedRequest {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body decoded as `application/x-www-form-urlencoded`: percent
    /// escapes decoded, `+` as space, pairs in order, repeats kept.
    pub fn form(&self) -> Vec<(String, String)> {
        form::parse(&self.body)
    }

    /// The first value of form parameter `key`, decoded.
    pub fn form_value(&self, key: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The parameters, from a form or, when the `Content-Type` says
    /// `application/json`, from a JSON object of strings (an array of
    /// strings for a repeated parameter); empty for a JSON body of any other
    /// shape.
    pub fn params(&self) -> Vec<(String, String)> {
        if self.is_json() {
            form::json_params(&self.body).unwrap_or_default()
        } else {
            self.form()
        }
    }

    /// The first value of parameter `key`, from a form or a JSON body.
    pub fn param(&self, key: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Whether the `Content-Type` is `application/json`.
    pub fn is_json(&self) -> bool {
        self.media_type()
            .is_some_and(|t| t.eq_ignore_ascii_case("application/json"))
    }

    /// The `Content-Type` without its parameters.
    fn media_type(&self) -> Option<&str> {
        self.header("content-type")
            .and_then(|v| v.split(';').next())
            .map(str::trim)
    }
}

/// A token exchange (RFC 8693) the server answered: what it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The authenticated client; empty for an exchange without client
    /// authentication.
    pub client_id: String,
    /// The subject token.
    pub subject_token: String,
    /// Its type identifier.
    pub subject_token_type: String,
    /// The actor token, if one was presented.
    pub actor_token: Option<String>,
    /// Its type identifier.
    pub actor_token_type: Option<String>,
    /// The token type asked for, if any.
    pub requested_token_type: Option<String>,
    /// Every `audience`, in order.
    pub audiences: Vec<String>,
    /// Every `resource`, in order.
    pub resources: Vec<String>,
    /// The scope asked for.
    pub scope: Option<String>,
}

/// A misbehaviour to inflict on a `/token` request instead of answering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this response, written as-is except that `Content-Length`
    /// is always the correct one (a `Content-Length` in `headers` is
    /// replaced). The connection stays open unless the request or `headers`
    /// say `Connection: close`.
    Respond {
        /// The status code.
        status: u16,
        /// Headers, written in order.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// Read the request, never answer, and keep the connection open until
    /// the server is dropped.
    Hang,
    /// Read the request, then close the connection without any response.
    Reset,
    /// Send a head declaring `Content-Length: declared_len` but only `body`,
    /// then close the connection.
    HalfBody {
        /// The status code.
        status: u16,
        /// The `Content-Length` declared.
        declared_len: usize,
        /// The bytes actually sent.
        body: Vec<u8>,
    },
    /// Answer with `part` of the request quoted back in the shape `shape`,
    /// with `status`, as a server, proxy or gateway that echoes what it
    /// received does (a hostile one, or a misconfigured one).
    Echo {
        /// The status code.
        status: u16,
        /// What is quoted.
        part: EchoPart,
        /// How the quote is put in the response.
        shape: EchoShape,
    },
    /// Answer 200 with `Content-Length: len` and stream `len` bytes of
    /// `{"access_token":"aaaa…` (an unterminated JSON document, streamed in
    /// small chunks, never built in memory), then close the connection.
    Huge {
        /// The body's length in bytes.
        len: usize,
    },
}

impl Fault {
    /// [`Fault::Echo`]: `part` of the request quoted back in `shape`.
    ///
    /// ```
    /// use local_authority::{EchoPart, EchoShape, Fault};
    /// let fault = Fault::echo(401, EchoPart::Authorization, EchoShape::ErrorDescription);
    /// assert!(matches!(fault, Fault::Echo { status: 401, .. }));
    /// ```
    pub fn echo(status: u16, part: EchoPart, shape: EchoShape) -> Fault {
        Fault::Echo {
            status,
            part,
            shape,
        }
    }

    /// A response with `Content-Type: application/json` and `body`.
    pub fn json(status: u16, body: &str) -> Fault {
        Fault::Respond {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// An RFC 6749 §5.2 error response: `{"error": code,
    /// "error_description": description}` (the description is omitted when
    /// empty), with `Content-Type: application/json;charset=UTF-8` and
    /// `Cache-Control: no-store`.
    pub fn oauth_error(status: u16, code: &str, description: &str) -> Fault {
        Fault::Respond {
            status,
            headers: json_headers(),
            body: server::error_body(code, description).into_bytes(),
        }
    }

    /// Adds a header to a [`Fault::Respond`], e.g. `Retry-After`. Other
    /// variants have no headers to add to and are returned unchanged.
    pub fn with_header(self, name: &str, value: &str) -> Fault {
        match self {
            Fault::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_string(), value.to_string()));
                Fault::Respond {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }
}

/// The headers every JSON answer of the token endpoint carries.
fn json_headers() -> Vec<(String, String)> {
    vec![
        (
            "Content-Type".into(),
            "application/json;charset=UTF-8".into(),
        ),
        ("Cache-Control".into(), "no-store".into()),
        ("Pragma".into(), "no-cache".into()),
    ]
}

/// State shared between the handle and the server thread.
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn new(token_url: String) -> Self {
        Shared {
            state: Mutex::new(State {
                token_url,
                clients: HashMap::from([("client-a".to_string(), "secret-a".to_string())]),
                client_keys: HashMap::new(),
                audiences: Vec::new(),
                seen_jti: Default::default(),
                subject_tokens: HashMap::new(),
                issuer_path: String::new(),
                metadata: None,
                serve_oauth_metadata: true,
                serve_openid_metadata: true,
                metadata_faults: VecDeque::new(),
                exchanges: Vec::new(),
                extra_grants: Default::default(),
                json_only: false,
                expires_in: Some(Value::from(60)),
                rotate: true,
                refresh_tokens: HashMap::new(),
                access_tokens: HashMap::new(),
                access_token_jkt: HashMap::new(),
                require_dpop: false,
                require_dpop_nonce: false,
                require_resource_dpop_nonce: false,
                dpop_nonce: dpop::new_nonce(),
                dpop_downgrade: false,
                dpop_jti: Default::default(),
                dpop_refusals: Vec::new(),
                revoked: Default::default(),
                faults: VecDeque::new(),
                outage: None,
                latency: Duration::ZERO,
                token_requests: 0,
                tokens_issued: 0,
                requests: Vec::new(),
                next_id: 1,
            }),
        }
    }

    /// Locks the state; a panic elsewhere never makes it unusable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A live refresh token: whose it is and the scope it was granted with.
struct RefreshGrant {
    client_id: String,
    scope: Option<String>,
    /// The thumbprint of the DPoP key it is bound to, if it was issued
    /// under DPoP.
    jkt: Option<String>,
}

struct State {
    /// `http://127.0.0.1:PORT/token`: the audience of client assertions.
    token_url: String,
    /// Client id → secret.
    clients: HashMap<String, String>,
    /// Client id → the public key of its `private_key_jwt` assertions.
    client_keys: HashMap<String, assertion::PublicKey>,
    /// Client assertion audiences accepted besides the token URL.
    audiences: Vec<String>,
    /// Every client assertion `jti` accepted: none is accepted twice.
    seen_jti: std::collections::HashSet<String>,
    /// The path of the issuer identifier, without a final `/`.
    issuer_path: String,
    /// A metadata document that replaces this server's.
    metadata: Option<Value>,
    serve_oauth_metadata: bool,
    serve_openid_metadata: bool,
    /// Faults for the next metadata requests.
    metadata_faults: VecDeque<Fault>,
    /// Token → type: tokens a token exchange accepts besides this server's
    /// access tokens.
    subject_tokens: HashMap<String, String>,
    /// Every token exchange answered.
    exchanges: Vec<Exchange>,
    /// Grant types answered as `client_credentials`.
    extra_grants: std::collections::HashSet<String>,
    /// Whether form bodies are refused.
    json_only: bool,
    expires_in: Option<Value>,
    rotate: bool,
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// Access token → expiry (`None`: never).
    access_tokens: HashMap<String, Option<Instant>>,
    /// DPoP-bound access token → the thumbprint of its key.
    access_token_jkt: HashMap<String, String>,
    /// Whether token requests without a DPoP proof are refused.
    require_dpop: bool,
    /// Whether proofs sent to the token endpoint must carry `dpop_nonce`.
    require_dpop_nonce: bool,
    /// Whether proofs sent to the resource must carry `dpop_nonce`.
    require_resource_dpop_nonce: bool,
    /// The nonce demanded, by both endpoints.
    dpop_nonce: String,
    /// Whether the token endpoint ignores DPoP proofs.
    dpop_downgrade: bool,
    /// Every accepted proof's `jti`: none is accepted twice.
    dpop_jti: std::collections::HashSet<String>,
    /// Every refused proof: endpoint, error code and why.
    dpop_refusals: Vec<String>,
    /// Access tokens the resource rejects.
    revoked: std::collections::HashSet<String>,
    faults: VecDeque<Fault>,
    outage: Option<Fault>,
    latency: Duration,
    token_requests: u64,
    tokens_issued: u64,
    requests: Vec<RecordedRequest>,
    /// Numbers tokens so that they are unique and readable in logs.
    next_id: u64,
}

/// The metadata documents of discovery.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetadataKind {
    /// RFC 8414's `/.well-known/oauth-authorization-server`.
    OAuth,
    /// OpenID Connect's `/.well-known/openid-configuration`.
    OpenId,
}

impl State {
    /// `http://127.0.0.1:PORT` and the issuer's path.
    pub(crate) fn issuer(&self) -> String {
        let base = self.token_url.trim_end_matches("/token");
        format!("{base}{}", self.issuer_path)
    }

    /// Which metadata document `target` (a request target) asks for.
    pub(crate) fn metadata_kind(&self, target: &str) -> Option<MetadataKind> {
        let path = target.split('?').next().unwrap_or(target);
        if path
            == format!(
                "/.well-known/oauth-authorization-server{}",
                self.issuer_path
            )
        {
            Some(MetadataKind::OAuth)
        } else if path == format!("{}/.well-known/openid-configuration", self.issuer_path) {
            Some(MetadataKind::OpenId)
        } else {
            None
        }
    }

    /// Whether the document of `kind` exists.
    pub(crate) fn serves(&self, kind: MetadataKind) -> bool {
        match kind {
            MetadataKind::OAuth => self.serve_oauth_metadata,
            MetadataKind::OpenId => self.serve_openid_metadata,
        }
    }

    /// The metadata document served.
    pub(crate) fn metadata(&self) -> Value {
        if let Some(document) = &self.metadata {
            return document.clone();
        }
        serde_json::json!({
            "issuer": self.issuer(),
            "token_endpoint": self.token_url,
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "client_secret_jwt",
                "private_key_jwt",
                "none",
            ],
            "token_endpoint_auth_signing_alg_values_supported": [
                "HS256", "ES256", "RS256", "PS256", "EdDSA",
            ],
            "dpop_signing_alg_values_supported": dpop::ALGS,
            "grant_types_supported": [
                "client_credentials",
                "refresh_token",
                "password",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                exchange::TOKEN_EXCHANGE_GRANT,
            ],
        })
    }

    /// Whether `token` was issued here and has not expired.
    pub(crate) fn token_is_valid(&self, token: &str) -> bool {
        match self.access_tokens.get(token) {
            Some(Some(expiry)) => Instant::now() < *expiry,
            Some(None) => true,
            None => false,
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_refresh_token(
        &mut self,
        client_id: &str,
        scope: Option<String>,
        jkt: Option<String>,
    ) -> String {
        let token = format!("rt-{}-{:016x}", self.next_id(), fastrand::u64(..));
        self.refresh_tokens.insert(
            token.clone(),
            RefreshGrant {
                client_id: client_id.to_string(),
                scope,
                jkt,
            },
        );
        token
    }

    fn new_access_token(&mut self) -> String {
        let token = format!("at-{}-{:016x}", self.next_id(), fastrand::u64(..));
        let expiry = self
            .expires_in
            .as_ref()
            .and_then(lifetime)
            .and_then(|d| Instant::now().checked_add(d));
        self.access_tokens.insert(token.clone(), expiry);
        token
    }
}

/// Reads an `expires_in` value as a lifetime: a number or numeric string of
/// seconds. Negative means already expired; anything unusable (or too large
/// to represent) means no expiry.
fn lifetime(value: &Value) -> Option<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if secs.is_nan() {
        None
    } else if secs <= 0.0 {
        Some(Duration::ZERO)
    } else {
        Duration::try_from_secs_f64(secs).ok()
    }
}
