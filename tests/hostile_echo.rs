//! An authority that echoes the request back: in an `error_description`, in
//! an HTML error page, in a 200 (a token response whose `token_type`,
//! `scope` and other members quote it, a page that is not JSON). Whatever
//! part it quotes (the whole request, the `Authorization` header, the form
//! body, the form decoded or re-encoded, the Basic credentials decoded) and
//! however (JSON with `\/` and `\uXXXX`, raw HTML, plain text), no encoding
//! of a secret the library sent reaches an error's `Display` or `Debug`, a
//! log record (trace level, every target), a published token, or the output
//! of the `token` CLI (stderr of a one-shot run, `--watch` JSON lines).
//!
//! The secrets hold `@ + / = % &`, a space, a quote, a backslash and
//! non-ASCII characters, so that every encoding differs from the raw value.
#![cfg(feature = "ureq")]

mod common;
mod echo_secrets;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::logs::{capture_logs, logged_lines};
use common::process::Running;
use common::token_example::{token_cli_without_redis, SECRET_ENV};
use echo_secrets::{encodings, printed, SHAPES};
use futures_lite::future::block_on;
use local_authority::{EchoPart, EchoShape, Fault, LocalAuthority};
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, HttpClient, HttpError, HttpErrorKind, HttpRequest,
    HttpResponse, RefreshTokenGrant, TokenEndpoint, TokenRequestError, UreqClient,
};
use tokenkeeper::{
    BoxFuture, ClientId, ClientSecret, FetchContext, LifetimePolicy, RefreshToken, SystemClock,
    TokenManager, TokenSource,
};

const CLIENT_ID: &str = "echo client";
const SECRET: &str = "p@ss+w/rd=%&x y\"\\é€";
const REFRESH: &str = "rt/+=%& y\"\\ü€-refresh";
/// A client assertion (RFC 7523) given as an extra parameter.
const ASSERTION: &str = "eyJ.as/+=%& y\"\\ä€.sig";

const PARTS: [EchoPart; 6] = [
    EchoPart::Request,
    EchoPart::Authorization,
    EchoPart::Body,
    EchoPart::DecodedForm,
    EchoPart::ReencodedForm,
    EchoPart::DecodedCredentials,
];

/// Every status and shape an echo comes in.
fn forbidden() -> Vec<String> {
    let mut all = encodings(Some(CLIENT_ID), SECRET);
    all.extend(encodings(None, REFRESH));
    all.extend(encodings(None, ASSERTION));
    all
}

/// Fails naming the first output that holds a forbidden form.
fn assert_clean<'a>(outputs: impl IntoIterator<Item = &'a String>, context: &str) {
    let forbidden = forbidden();
    for output in outputs {
        for form in &forbidden {
            assert!(
                !output.contains(form.as_str()),
                "{context}: {form:?} leaked into: {output}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Logs

/// Every record logged so far, by any target. (Checked record by record,
/// as a log line is read. At trace level `ureq_proto` also dumps the bytes
/// on the wire in rows of 16, the `Authorization` header included: no row
/// holds a whole encoding, but the rows together do. Only that crate can
/// change it; the README should tell users to keep it below trace.)
fn all_logs() -> Vec<String> {
    logged_lines()
}

// ---------------------------------------------------------------------------
// The library

fn endpoint(authority: &LocalAuthority, auth: AuthMethod) -> TokenEndpoint {
    TokenEndpoint::builder(authority.token_url(), ClientId::new(CLIENT_ID))
        .client_auth(ClientAuth::with_secret(auth, ClientSecret::new(SECRET)).unwrap())
        .build()
        .unwrap()
}

fn cx() -> FetchContext {
    FetchContext::new(SystemClock, LifetimePolicy::default())
}

#[test]
fn echoed_client_secrets_never_reach_errors_tokens_or_logs() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    let mut outputs = Vec::new();
    let mut leaks_without_scrubbing = 0;
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let mut source = ClientCredentials::new(endpoint(&authority, auth)).scope("read");
        for (status, shape) in SHAPES {
            for part in PARTS {
                authority.push_fault(Fault::echo(status, part, shape));
                let result = block_on(source.fetch(cx()));
                let context = format!("{auth:?} {status} {part:?} {shape:?}");
                if shape == EchoShape::TokenResponse {
                    assert!(result.is_ok(), "{context}: {result:?}");
                } else {
                    assert!(result.is_err(), "{context}: {result:?}");
                }
                let text = printed(&result);
                assert_clean([&text], &context);
                if text.contains("<redacted>") {
                    leaks_without_scrubbing += 1;
                }
                outputs.push(text);
            }
        }
    }
    // Many echoes did carry a secret (not all: an `Authorization` echo of
    // a post client, the form of a basic one, a 200 that is not a token
    // response, a long request cut before its body carry none).
    assert!(
        leaks_without_scrubbing >= 30,
        "only {leaks_without_scrubbing} outputs needed scrubbing"
    );
    let logs = all_logs();
    assert!(
        logs.iter().any(|l| l.contains("not Bearer")),
        "the odd token_type was logged"
    );
    assert_clean(&logs, "log record");
}

#[test]
fn echoed_refresh_tokens_never_reach_errors_tokens_or_logs() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let mut grant =
            RefreshTokenGrant::new(endpoint(&authority, auth), RefreshToken::new(REFRESH));
        for (status, shape) in SHAPES {
            for part in [
                EchoPart::Request,
                EchoPart::Body,
                EchoPart::DecodedForm,
                EchoPart::ReencodedForm,
            ] {
                authority.push_fault(Fault::echo(status, part, shape));
                let result = block_on(grant.fetch(cx()));
                let context = format!("refresh {auth:?} {status} {part:?} {shape:?}");
                assert_clean([&printed(&result)], &context);
                if let Ok(token) = &result {
                    // The grant keeps the refresh token it sent.
                    assert_eq!(token.refresh_token().unwrap().secret(), REFRESH);
                }
            }
        }
        assert_eq!(grant.refresh_token().secret(), REFRESH);
    }
    assert_clean(&all_logs(), "log record");
}

#[test]
fn echoed_credentials_given_as_parameters_never_reach_errors_tokens_or_logs() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    let endpoint = endpoint(&authority, AuthMethod::ClientSecretBasic);
    let mut client = ClientCredentials::new(endpoint.clone())
        .param(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .param("client_assertion", ASSERTION);
    let mut refresh = RefreshTokenGrant::new(endpoint, RefreshToken::new(REFRESH))
        .param("subject_token", ASSERTION);
    let mut redacted = 0;
    for (status, shape) in SHAPES {
        for part in [
            EchoPart::Body,
            EchoPart::DecodedForm,
            EchoPart::ReencodedForm,
        ] {
            for source in [&mut client as &mut dyn TokenSource, &mut refresh] {
                authority.push_fault(Fault::echo(status, part, shape));
                let text = printed(&block_on(source.fetch(cx())));
                assert_clean([&text], &format!("parameter {status} {part:?} {shape:?}"));
                redacted += usize::from(text.contains("<redacted>"));
            }
        }
    }
    assert!(redacted >= 20, "only {redacted} outputs needed scrubbing");
    assert_clean(&all_logs(), "log record");
}

#[test]
fn the_manager_logs_and_keeps_echoed_errors_scrubbed() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    let basic = AuthMethod::ClientSecretBasic;
    let post = AuthMethod::ClientSecretPost;
    {
        for (auth, status, part, shape) in [
            (
                basic,
                401,
                EchoPart::DecodedCredentials,
                EchoShape::ErrorDescription,
            ),
            (basic, 401, EchoPart::Authorization, EchoShape::Html),
            (basic, 400, EchoPart::Authorization, EchoShape::EscapedJson),
            (
                post,
                401,
                EchoPart::DecodedForm,
                EchoShape::ErrorDescription,
            ),
            (post, 401, EchoPart::ReencodedForm, EchoShape::Html),
            (post, 400, EchoPart::Body, EchoShape::EscapedJson),
        ] {
            authority.set_outage(Some(Fault::echo(status, part, shape)));
            let source = ClientCredentials::new(endpoint(&authority, auth));
            let (handle, driver) = TokenManager::builder(source)
                .wait_timeout(Duration::from_secs(5))
                .build();
            let ((), (error, state)) = smol::block_on(futures_lite::future::zip(driver, async {
                let error = handle.token().await.unwrap_err();
                let state = handle.state();
                handle.shutdown().await;
                (error, state)
            }));
            let text = format!("{error} {error:?} {error:#?} {state:?} {state:#?}");
            assert!(text.contains("<redacted>"), "{text}");
            assert_clean([&text], &format!("manager {auth:?} {part:?} {shape:?}"));
        }
    }
    authority.set_outage(None);
    let logs = all_logs();
    assert!(
        logs.iter().any(|l| l.contains("tokenkeeper::manager")),
        "the manager's records were captured"
    );
    assert_clean(&logs, "log record");
}

/// A client that reports error statuses as errors carrying the body, as
/// "error for status" middleware does: the server's text then arrives in
/// an `HttpError`'s message and in its cause.
struct ErrorForStatus(UreqClient);

impl HttpClient for ErrorForStatus {
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        Box::pin(async move {
            let response = self.0.post(request, max_body).await?;
            if response.status() < 400 {
                return Ok(response);
            }
            let body = String::from_utf8_lossy(response.body()).into_owned();
            Err(HttpError::new(
                HttpErrorKind::Other,
                format!("HTTP {}: {body}", response.status()),
            )
            .with_cause(std::io::Error::other(body)))
        })
    }
}

#[test]
fn echoes_inside_http_client_errors_are_scrubbed() {
    capture_logs();
    let authority = LocalAuthority::start().unwrap();
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new(CLIENT_ID))
            .client_auth(ClientAuth::with_secret(auth, ClientSecret::new(SECRET)).unwrap())
            .http_client(ErrorForStatus(UreqClient::new()))
            .build()
            .unwrap();
        let mut source = ClientCredentials::new(endpoint);
        for part in PARTS {
            for (status, shape) in [(401, EchoShape::Text), (500, EchoShape::Html)] {
                authority.push_fault(Fault::echo(status, part, shape));
                let result = block_on(source.fetch(cx()));
                let error = result.as_ref().unwrap_err();
                let http = error
                    .cause()
                    .and_then(|c| c.downcast_ref::<TokenRequestError>());
                assert!(
                    matches!(http, Some(TokenRequestError::Http(e)) if e.kind() == HttpErrorKind::Other),
                    "{error:?}"
                );
                assert_clean(
                    [&printed(&result)],
                    &format!("http error {auth:?} {part:?}"),
                );
            }
        }
    }
    assert_clean(&all_logs(), "log record");
}

// ---------------------------------------------------------------------------
// The CLI

const RUN_LIMIT: Duration = Duration::from_secs(30);
const WHAT: &str = "the token example";

fn token_cmd(authority: &LocalAuthority, auth: &str, extra: &[&str]) -> Command {
    let url = authority.token_url();
    let mut cmd = token_cli_without_redis();
    cmd.args([
        "--token-url",
        &url,
        "--client-id",
        CLIENT_ID,
        "--auth",
        auth,
    ])
    .args(extra)
    .env(SECRET_ENV, SECRET)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// The parts of a request that hold the secret sent with `auth`.
fn parts_with_secret(auth: &str) -> [EchoPart; 3] {
    match auth {
        "basic" => [
            EchoPart::Authorization,
            EchoPart::DecodedCredentials,
            EchoPart::Request,
        ],
        _ => [
            EchoPart::Body,
            EchoPart::DecodedForm,
            EchoPart::ReencodedForm,
        ],
    }
}

#[test]
fn the_cli_prints_no_echoed_secret_one_shot() {
    for auth in ["basic", "post"] {
        let mut runs = Vec::new();
        for part in parts_with_secret(auth) {
            for (status, shape) in [
                (401, EchoShape::ErrorDescription),
                (400, EchoShape::ErrorDescription),
                (401, EchoShape::Html),
                (403, EchoShape::EscapedJson),
                (200, EchoShape::TokenResponse),
            ] {
                let authority = LocalAuthority::start().unwrap();
                authority.set_outage(Some(Fault::echo(status, part, shape)));
                let child = Running::spawn(token_cmd(&authority, auth, &[]), WHAT);
                runs.push((
                    authority,
                    child,
                    format!("{auth} {status} {part:?} {shape:?}"),
                ));
            }
        }
        let mut redacted = 0;
        for (_authority, child, context) in runs {
            let out = child.finish(RUN_LIMIT, WHAT);
            let stderr = out.stderr.clone();
            if context.contains("TokenResponse") {
                assert!(out.status.success(), "{context}: {stderr}");
            } else {
                assert_eq!(out.status.code(), Some(1), "{context}: {stderr}");
                assert_eq!(stderr.lines().count(), 1, "{context}: {stderr}");
            }
            redacted += usize::from(stderr.contains("redacted"));
            assert_clean([&out.stdout, &stderr], &format!("CLI {context}"));
        }
        assert!(
            redacted >= 8,
            "{auth}: only {redacted} runs needed scrubbing"
        );
    }
}

#[test]
fn the_cli_prints_no_echoed_secret_while_watching() {
    for auth in ["basic", "post"] {
        let mut runs = Vec::new();
        let [first, second, third] = parts_with_secret(auth);
        for (status, part, shape) in [
            (200, first, EchoShape::TokenResponse),
            (200, second, EchoShape::TokenResponse),
            (200, third, EchoShape::TokenResponse),
            (500, first, EchoShape::Html),
            (500, second, EchoShape::EscapedJson),
            (503, third, EchoShape::ErrorDescription),
        ] {
            let authority = LocalAuthority::start().unwrap();
            authority.set_outage(Some(Fault::echo(status, part, shape)));
            let child = Running::spawn(token_cmd(&authority, auth, &["--watch", "1"]), WHAT);
            runs.push((
                authority,
                child,
                format!("{auth} {status} {part:?} {shape:?}"),
            ));
        }
        for (_authority, child, context) in runs {
            let out = child.finish(RUN_LIMIT, WHAT);
            assert!(out.status.success(), "{context}: {}", out.stderr);
            assert!(
                out.stdout.lines().count() >= 1,
                "{context}: no event: {}",
                out.stderr
            );
            assert!(out.stdout.contains("redacted"), "{context}: {}", out.stdout);
            assert_clean(
                [&out.stdout, &out.stderr],
                &format!("CLI --watch {context}"),
            );
        }
    }
}
