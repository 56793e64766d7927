//! `token`: print an OAuth2 access token for scripts, or watch the manager
//! keep one fresh. A tool in the spirit of `gcloud auth print-access-token`,
//! and a worked example of the client-credentials source driven by a
//! `TokenManager` on smol, over the default HTTP client (ureq).
//!
//! Its code is the `tokenkeeper` command's (crates/cli, `tokenkeeper token`,
//! installable with `cargo install --path crates/cli`), compiled here as a
//! module so that this package's `jwt` and `redis` features are its own.
//!
//! ```sh
//! read -rs TOKENKEEPER_CLIENT_SECRET && export TOKENKEEPER_CLIENT_SECRET  # typed, not echoed
//! cargo run --example token -- --token-url https://auth.example.com/oauth/token \
//!     --client-id my-service --scope "orders:read"
//! curl -H "Authorization: Bearer $(cargo run -q --example token -- ...)" https://api.example.com/
//!
//! # Watch the manager for 60 s: one JSON object per line, never a token value.
//! cargo run --example token -- --token-url ... --client-id ... --watch 60
//!
//! # Share one token between processes: the first run asks the authority,
//! # later runs (and concurrent ones) reuse the cached token while it lasts.
//! cargo run --example token -- ... --cache-file ~/.cache/my-service/token.json
//! TOKENKEEPER_REDIS_URL=redis://:password@127.0.0.1:6379/0 \
//!     cargo run --features redis --example token -- ...
//! ```
//!
//! Run with `--help` for the flags. What it shows:
//!
//! - Configuration: a `TokenEndpoint` (URL, client id, and a
//!   `ClientAuth`: a secret sent as `client_secret_basic` or
//!   `client_secret_post`, or signed assertions, below) under a
//!   `ClientCredentials` grant with optional `scope`, `audience` and
//!   repeatable `resource` (RFC 8707).
//! - The secret stays out of argv, where any local user can read it (`ps`,
//!   `/proc/PID/cmdline`) and shell history keeps it: it comes from the
//!   environment variable `TOKENKEEPER_CLIENT_SECRET` or from
//!   `--client-secret-file PATH` (one trailing newline trimmed; the file
//!   wins when both are set). `--client-secret` is refused.
//! - Typed errors: a failure is a `SourceError` whose
//!   `request_error` is a
//!   `TokenRequestError`, which carries the RFC 6749 error code.
//! - Running the manager on an executor the library knows nothing about:
//!   the driver is a plain future, spawned on smol here.
//! - Caches shared between processes (`--cache-file`, `--redis-url`): a
//!   `Chain` in front of the source, below.
//!
//! # Without a shared secret on the wire
//!
//! ```sh
//! # private_key_jwt: a JWT signed with the key for every request (ES256, RS256
//! # or EdDSA from the key; --alg PS256 for an RSA key); no secret needed.
//! cargo run --example token -- --token-url ... --client-id my-service \
//!     --auth private_key_jwt --private-key-file key.pem --key-id 2024-01
//! # client_secret_jwt: a JWT signed HS256 with the secret, which stays here.
//! cargo run --example token -- --token-url ... --client-id my-service --auth client_secret_jwt
//! # Workload identity: the assertion a platform writes to a file, read for
//! # every request (Kubernetes, AZURE_FEDERATED_TOKEN_FILE, CI).
//! cargo run --example token -- --token-url ... --client-id my-app \
//!     --client-assertion-file "$AZURE_FEDERATED_TOKEN_FILE"
//! ```
//!
//! The key file is PEM (PKCS#8, PKCS#1 RSA or SEC1 EC) or DER; a key that
//! cannot sign (encrypted, an RSA key under 2048 bits, another curve, not
//! the `--alg` asked for) is bad usage (exit 2), told before any request and
//! never quoting the key. `--assertion-audience AUD` sets the signed
//! assertions' `aud` for an authority that wants its issuer rather than the
//! token URL. Signed assertions need the example's `jwt` feature (on by
//! default).
//!
//! # Discovery and token exchange
//!
//! ```sh
//! # The token endpoint from the authority's metadata (RFC 8414, else OpenID
//! # discovery), fetched once; signed assertions are then for the issuer.
//! cargo run --example token -- --issuer https://login.example.com/tenant-a \
//!     --client-id my-service --private-key-file key.pem
//! # Token exchange (RFC 8693): the workload's identity token, read from its
//! # file for every request, for a token for another audience; a security
//! # token service that wants no client authentication takes --auth none.
//! cargo run --example token -- --token-url https://sts.example.com/v1/token --auth none \
//!     --grant token-exchange --subject-token-file /var/run/secrets/tokens/sts \
//!     --audience //iam.example.com/pools/prod --scope cloud-platform
//! ```
//!
//! With `--issuer`, a client authentication the metadata does not list in
//! `token_endpoint_auth_methods_supported` (or a key whose algorithm it does
//! not list) is bad usage (exit 2), told before any token request. Discovery
//! is tried 3 times at most; no metadata after failures that may pass
//! (network, 5xx) is exit 3, and metadata that is missing or names another
//! issuer is exit 1. The subject token file is read as the assertion file is:
//! a missing or empty file, or a JWT in it that has expired, is a transient
//! failure naming the path. `--subject-token-type` defaults to
//! `urn:ietf:params:oauth:token-type:jwt`; `--audience` may be repeated with
//! token exchange.
//!
//! # DPoP-bound tokens
//!
//! ```sh
//! # The token bound to the key in dpop.pem (ES256, made with mode 0600 if
//! # missing; refused if others may read it), then a proof of one request.
//! URL=https://api.example.com/orders
//! cargo run -q --example token -- --token-url ... --client-id my-service \
//!     --dpop-key-file dpop.pem --dpop-proof GET "$URL" | {
//!   read -r TOKEN; read -r PROOF
//!   curl -H "Authorization: DPoP $TOKEN" -H "DPoP: $PROOF" "$URL"; }
//! ```
//!
//! `--dpop-key-file` alone prints the bound token alone; with `--dpop-proof
//! METHOD URL` a second line follows: the `DPoP` proof (RFC 9449) for that
//! request, with the token's hash (`ath`). A proof is good for one request
//! (servers refuse a replayed one): run the tool again for the next. The key
//! file outlives the run, so later runs, and a `--cache-file` shared with
//! them, use the same binding. DPoP needs the example's `jwt` feature.
//!
//! # Printing one token (no `--watch`)
//!
//! This runs the same manager a service would, waits for its first token
//! and prints the access token alone on stdout (then exits 0). The manager,
//! rather than one direct `TokenSource::fetch`, gives the retries a script
//! wants: a transient failure (network, timeout, HTTP 5xx or 429,
//! `temporarily_unavailable`) is retried with a short backoff (250 ms
//! doubling, at most 2 s between attempts, each attempt at most 5 s) for up
//! to 10 s in total. A permanent failure (`invalid_client`, `invalid_scope`,
//! `invalid_grant`, `unauthorized_client`, other 4xx answers) cannot improve
//! by retrying: `handle.token()` returns it at once, and the tool gives up
//! on the first one.
//!
//! On failure, stderr gets exactly one line naming the OAuth2 error code (or
//! the kind of failure when the authority sent none) and its description:
//!
//! ```text
//! token: error: invalid_client: client authentication failed (HTTP 401)
//! ```
//!
//! # Warnings
//!
//! What does not stop the run but deserves a look is a line on stderr, in
//! both modes (stdout keeps the token, or the JSON lines, alone):
//!
//! ```text
//! token: warning: token endpoint issued a token of type "mac", not Bearer; recorded on the token
//! token: warning: the authority granted scope "orders:read", not the scope asked for ("orders:read orders:write")
//! ```
//!
//! - The library's own warnings (its `log` records of warning level and
//!   above): a token type other than Bearer, a cache that cannot be read or
//!   written, a Redis server that is down or refuses our password. Never a
//!   token, a secret or the Redis URL.
//! - A granted scope other than the one asked for with `--scope`, compared
//!   as sets of scope tokens (an answer without `scope` grants what was
//!   asked). `--watch` repeats it only when the granted scope changes.
//!
//! Output into a closed pipe (`token --help | head -1`) is dropped quietly:
//! no panic, and the exit code is the one the run would have had (1 for a
//! token that could not be delivered).
//!
//! # Proxies
//!
//! Requests go through the proxy that `https_proxy` (or `http_proxy` for an
//! `http` URL, or `all_proxy`) names, except to hosts listed in `no_proxy`,
//! as curl reads these variables (upper-case names too, but `HTTP_PROXY`);
//! a token URL on loopback (`127.0.0.1`, `::1`, `localhost`) never goes
//! through a proxy. See `UreqClient` for the details.
//!
//! # Watching (`--watch SECS`)
//!
//! Runs the manager with the library's defaults for SECS seconds and prints
//! one JSON object per line on stdout, then exits 0:
//!
//! ```text
//! {"event":"token","expires_at_ms":1767225660000,"issued_at_ms":1767225600000,"stale_at_ms":1767225630000,"token_type":"Bearer","scope":"orders:read"}
//! {"event":"error","error":"temporarily_unavailable","kind":"transient","description":"try later (HTTP 503)","consecutive_failures":1,"at_ms":1767225625000,"retry_in_ms":412}
//! ```
//!
//! - `token`: each published token (times in ms since the Unix epoch, no
//!   later than the end of the year 9999, where a token with an absurd
//!   lifetime expires, so that readers parsing numbers as doubles read them
//!   exactly; the token value is never printed). `scope` is null when the
//!   authority sent none.
//! - `error`: each failed attempt. `error` is the OAuth2 code, or one of
//!   `connect`, `timeout`, `io`, `body_too_large`, `http`, `http_status`
//!   (an error status without an RFC 6749 body), `invalid_response`,
//!   `transient`, `permanent`. `retry_in_ms` is the backoff chosen after
//!   this failure. Lines follow the manager's events
//!   (`TokenHandle::events`), one for each failure, in the order things
//!   happened; the tool waits on them rather than polling.
//!
//! # Exit codes
//!
//! - 0: a token was printed (or the watch ran its course).
//! - 1: the authority refused: a permanent error such as `invalid_client`.
//!   Retrying will not help until the configuration changes. (Also: the
//!   token could not be written to stdout.)
//! - 1 also: discovery found no metadata, or metadata for another issuer.
//! - 2: bad usage: unknown or repeated flag, missing value, no secret, a
//!   key that cannot sign, a plain `http` token URL (or issuer) to a host
//!   that is not loopback, a client authentication the discovered metadata
//!   does not list.
//! - 3: no token within 10 s: transient failures, or no answer. Try later.
//!
//! # Sharing a token between processes (`--cache-file`, `--redis-url`)
//!
//! With `--cache-file PATH`, `--redis-url URL` or both, the source becomes
//! `Chain::new(source).cache(MemoryCache::new()).cache(file).cache(redis)`
//! (the file before Redis), in both modes: a run first reads the caches and
//! publishes (or prints) a cached token that is still valid for a while
//! (60 s, or half its lifetime for shorter tokens) without asking the
//! authority; otherwise it takes the refresh lease of the last shared cache
//! (a lock file next to the cache file, or a Redis `SET NX PX` key), reads
//! again in case another process just refreshed, and only then asks the
//! authority and writes the new token to every cache. Processes that find
//! the lease taken read the cache again every 200 ms or so, for at most
//! 2 s, then ask the authority themselves: a neighbour that hangs holding
//! the lease (or a plain `flock` on the lock file) costs cooperation, never
//! the token. So any number of scripts,
//! one-shot or `--watch`, started together or not, cost the authority about
//! what one process alone would (eight `--watch` processes on one file or
//! Redis server: 0.9 to 1.1 times, cold start included). A cache that fails
//! (unreadable file, Redis down or refusing the password) is skipped, with
//! a warning on stderr: the run still gets a token from the authority.
//!
//! - `FileCache`: JSON (the access token included) written with mode
//!   0600 to a temporary file and renamed over PATH, so readers never see
//!   half a file; the folder is created when missing. The entry records
//!   whom its token is for (a digest of the token URL, client id, scope,
//!   audience and resources, never the secret): a run for another client
//!   or scope reads it as a miss and replaces it, so give each its own file
//!   to keep both cached. A file that is not a regular file of the user's
//!   own, or that group or others may write, is not trusted (see the
//!   library's `FileCache`).
//! - `RedisCache` (only when the example is built with `--features
//!   redis`; without it the flag is a usage error saying so): the keys are
//!   `{tokenkeeper:token-cli:<hash>:}token` and `...lease`, where the hash
//!   covers the token URL, client id, scope, audience and resources (not
//!   the secret), so different clients and scopes on one server never share
//!   a token. The URL may carry a password (`redis://:password@host:6379/0`):
//!   it is never printed, and like the client secret it is better kept out
//!   of argv, so the URL may come from the environment variable
//!   `TOKENKEEPER_REDIS_URL` instead (the flag wins).
//! - A one-shot run takes the lease for at most 6 s (its 5 s request
//!   timeout and a margin), so if it dies holding the Redis lease, the
//!   lease runs out within 6 s; `--watch` keeps the library's defaults
//!   (30 s). A file lock goes with its process at once, however it exits.
//!   Either way no other run waits for it more than the 2 s lease wait.

use std::process::ExitCode;

// The CLI crate's library part, built against this package: a dependency
// on the CLI crate would turn this package's `ureq` and `jwt` features on
// for every test build, the feature matrix's included. Only `token` is
// used here; the rest of the CLI is the `tokenkeeper` binary's.
#[allow(dead_code, unused_imports)]
#[path = "../crates/cli/src/lib.rs"]
mod tokenkeeper_cli;

fn main() -> ExitCode {
    tokenkeeper_cli::run_token(std::env::args_os().skip(1))
}
