//! Rules of the OAuth2 layer that mutation testing (MUTANTS.md) found
//! unchecked: each test here fails with a mutant that the rest of the suite
//! let through. HTTP goes to the in-process authority on 127.0.0.1.
#![cfg(feature = "ureq")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::error::Error as _;

use common::http_checks::{
    assert_max_body_is_the_largest_read, fetch, http_error_kind, request_error, sized_endpoint,
};
use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority};
use tokenkeeper::oauth2::response::parse_token_response;
use tokenkeeper::oauth2::{
    ClientCredentials, ConfigError, HttpClient, HttpError, HttpErrorKind, HttpRequest,
    HttpResponse, OAuth2Error, RefreshTokenGrant, TokenEndpoint, TokenRequestError, UreqClient,
};
use tokenkeeper::{
    BoxFuture, ClientId, ClientSecret, ErrorKind, FetchContext, LifetimePolicy, ManualClock,
    RefreshToken, SystemClock, TokenSource,
};

const NOW_MS: u64 = 1_700_000_000_000;

/// The real ureq client, noting the timeout of each request it is handed.
#[derive(Clone)]
struct NotingTimeouts {
    inner: Arc<UreqClient>,
    timeouts: Arc<Mutex<Vec<Option<Duration>>>>,
}

impl NotingTimeouts {
    fn new() -> NotingTimeouts {
        NotingTimeouts {
            inner: Arc::new(UreqClient::new()),
            timeouts: Arc::default(),
        }
    }
}

impl HttpClient for NotingTimeouts {
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        self.timeouts.lock().unwrap().push(request.timeout());
        self.inner.post(request, max_body)
    }
}

#[test]
fn the_request_timeout_leaves_a_tenth_of_the_time_left_at_least_200_ms() {
    let authority = LocalAuthority::start().unwrap();
    let http = NotingTimeouts::new();
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .http_client(http.clone())
        .build()
        .unwrap();
    let mut source = ClientCredentials::new(endpoint);
    let cx = FetchContext::new(ManualClock::at_ms(NOW_MS), LifetimePolicy::default());
    for left_ms in [10_000, 2_000, 1_000, 0] {
        let cx = cx.clone().with_deadline_ms(NOW_MS + left_ms);
        // A timeout of 0 or 1 ms may or may not beat the authority.
        let _ = block_on(source.fetch(cx));
    }
    block_on(source.fetch(cx)).unwrap();
    let ms = |ms| Some(Duration::from_millis(ms));
    assert_eq!(
        *http.timeouts.lock().unwrap(),
        [ms(9_000), ms(1_800), ms(800), ms(1), None]
    );
}

#[test]
fn a_token_url_with_a_user_name_or_a_password_alone_is_refused() {
    for url in [
        "https://user@auth.example/token",
        "https://:pw@auth.example/token",
        "https://user:pw@auth.example/token",
    ] {
        let built = TokenEndpoint::builder(url, ClientId::new("id"))
            .client_secret(ClientSecret::new("secret"))
            .build();
        assert_eq!(built.unwrap_err(), ConfigError::CredentialsInUrl, "{url}");
    }
}

fn endpoint(authority: &LocalAuthority) -> TokenEndpoint {
    TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .unwrap()
}

/// What each answer of the authority makes of the fetch: retrying helps
/// (transient) or cannot (permanent), by the OAuth2 error code first and
/// the HTTP status for codes RFC 6749 does not define.
#[test]
fn each_error_answer_is_transient_or_permanent_by_its_code_then_its_status() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = ClientCredentials::new(endpoint(&authority));
    let cases = [
        // Codes that say "try again", whatever the status.
        (
            Fault::oauth_error(400, "temporarily_unavailable", ""),
            ErrorKind::Transient,
        ),
        (
            Fault::oauth_error(400, "server_error", ""),
            ErrorKind::Transient,
        ),
        (
            Fault::oauth_error(400, "slow_down", ""),
            ErrorKind::Transient,
        ),
        // The codes of RFC 6749, whatever the status.
        (
            Fault::oauth_error(503, "invalid_client", ""),
            ErrorKind::Permanent,
        ),
        (
            Fault::oauth_error(500, "invalid_grant", ""),
            ErrorKind::Permanent,
        ),
        // Any other code: by the status.
        (
            Fault::oauth_error(400, "access_denied", ""),
            ErrorKind::Permanent,
        ),
        (
            Fault::oauth_error(503, "access_denied", ""),
            ErrorKind::Transient,
        ),
        (
            Fault::oauth_error(429, "rate_limited", ""),
            ErrorKind::Transient,
        ),
        // No OAuth2 error at all: by the status.
        (Fault::json(400, "{}"), ErrorKind::Permanent),
        (Fault::json(404, "not here"), ErrorKind::Permanent),
        (Fault::json(407, "proxy"), ErrorKind::Permanent),
        (Fault::json(408, "slow"), ErrorKind::Transient),
        (Fault::json(409, "conflict"), ErrorKind::Permanent),
        (Fault::json(429, "busy"), ErrorKind::Transient),
        (Fault::json(499, "closed"), ErrorKind::Permanent),
        (Fault::json(500, "oops"), ErrorKind::Transient),
        (Fault::json(502, "gateway"), ErrorKind::Transient),
        // A success that is no token response: the next answer may be.
        (Fault::json(200, "{}"), ErrorKind::Transient),
        // The connection dropped.
        (Fault::Reset, ErrorKind::Transient),
    ];
    for (fault, kind) in cases {
        let what = format!("{fault:?}");
        authority.push_fault(fault);
        let e = fetch(&mut source).unwrap_err();
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert_eq!(request_error(&e).kind(), kind, "{what}: {e}");
    }
}

#[test]
fn a_request_error_names_the_http_or_oauth2_error_it_comes_from() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = ClientCredentials::new(endpoint(&authority));

    authority.push_fault(Fault::oauth_error(400, "invalid_scope", "no such scope"));
    let e = fetch(&mut source).unwrap_err();
    let cause = request_error(&e)
        .source()
        .expect("an OAuth2 error has a source");
    let oauth2 = cause.downcast_ref::<OAuth2Error>().unwrap();
    assert_eq!(oauth2.description(), Some("no such scope"));

    authority.push_fault(Fault::Reset);
    let e = fetch(&mut source).unwrap_err();
    let cause = request_error(&e)
        .source()
        .expect("an HTTP error has a source");
    let http = cause.downcast_ref::<HttpError>().unwrap();
    // Cut off mid-exchange: no connect error.
    assert_eq!(http.kind(), HttpErrorKind::Io, "{http}");

    authority.push_fault(Fault::json(502, "gateway"));
    let e = fetch(&mut source).unwrap_err();
    assert!(request_error(&e).source().is_none(), "{e:?}");
}

#[test]
fn client_credentials_cache_under_every_parameter_but_the_reserved_ones() {
    let authority = LocalAuthority::start().unwrap();
    let base = || ClientCredentials::new(endpoint(&authority));
    let key = |source: ClientCredentials| source.cache_key().expect("a client has a cache key");
    assert_eq!(key(base()), key(base()));
    // Reserved names are never sent as extra parameters, so they do not
    // make another token.
    for name in [
        "grant_type",
        "client_id",
        "client_secret",
        "refresh_token",
        "scope",
    ] {
        assert_eq!(key(base().param(name, "x")), key(base()), "{name}");
    }
    let others = [
        base().param("tenant", "a"),
        base().scope("read"),
        base().audience("https://api.example"),
        base().resource("https://api.example/a"),
    ];
    for other in others {
        assert_ne!(key(base()), key(other.clone()), "{other:?}");
    }
    assert_ne!(
        key(base().param("tenant", "a")),
        key(base().param("tenant", "b"))
    );

    let grant =
        |refresh: &str| RefreshTokenGrant::new(endpoint(&authority), RefreshToken::new(refresh));
    let key = |source: RefreshTokenGrant| source.cache_key().expect("a grant has a cache key");
    assert_eq!(key(grant("r1").param("scope", "x")), key(grant("r1")));
    assert_ne!(key(grant("r1").param("tenant", "a")), key(grant("r1")));
    assert_ne!(key(grant("r1")), key(grant("r2")));
}

#[test]
fn an_access_token_wins_over_an_error_only_in_a_success() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = ClientCredentials::new(endpoint(&authority));
    let both = r#"{"access_token":"tok-1","error":"invalid_request"}"#;

    authority.push_fault(Fault::json(200, both));
    let token = fetch(&mut source).unwrap();
    assert_eq!(token.access_token().secret(), "tok-1");

    authority.push_fault(Fault::json(400, both));
    let e = fetch(&mut source).unwrap_err();
    assert!(
        matches!(request_error(&e), TokenRequestError::OAuth2(o) if o.status() == 400),
        "{e:?}"
    );

    authority.push_fault(Fault::json(200, r#"{"error":"invalid_request"}"#));
    let e = fetch(&mut source).unwrap_err();
    assert!(
        matches!(request_error(&e), TokenRequestError::OAuth2(o) if o.status() == 200),
        "{e:?}"
    );
}

/// An error that names the error it comes from.
#[derive(Debug)]
struct Upstream(std::io::Error);

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gateway refused")
    }
}

impl std::error::Error for Upstream {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The real ureq client, turning an error status into an [`HttpError`]
/// whose cause quotes the body one error deep, as HTTP stacks that wrap
/// errors do.
struct ErrorsForStatus(UreqClient);

impl HttpClient for ErrorsForStatus {
    fn post(
        &self,
        request: HttpRequest,
        max_body: usize,
    ) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        Box::pin(async move {
            let response = self.0.post(request, max_body).await?;
            let has = |name: &str| {
                response
                    .headers()
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(name))
            };
            assert!(has("content-type"), "{:?}", response.headers());
            if response.status() < 400 {
                return Ok(response);
            }
            let body = String::from_utf8_lossy(response.body()).into_owned();
            Err(
                HttpError::new(HttpErrorKind::Other, format!("HTTP {}", response.status()))
                    .with_cause(Upstream(std::io::Error::other(body))),
            )
        })
    }
}

#[test]
fn a_scrubbed_http_error_keeps_the_text_of_its_cause_and_the_causes_sources() {
    const SECRET: &str = "s3cr3t-for-the-gateway";
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("client-b", SECRET);
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-b"))
        .client_secret(ClientSecret::new(SECRET))
        .http_client(ErrorsForStatus(UreqClient::new()))
        .build()
        .unwrap();
    let mut source = ClientCredentials::new(endpoint);
    fetch(&mut source).unwrap();

    authority.push_fault(Fault::json(502, &format!("bad credentials {SECRET}")));
    let e = fetch(&mut source).unwrap_err();
    let TokenRequestError::Http(http) = request_error(&e) else {
        panic!("expected an HTTP error, got {e:?}");
    };
    assert_eq!(http.message(), "HTTP 502");
    let cause = http.source().expect("the cause is kept, scrubbed");
    assert_eq!(
        cause.to_string(),
        "the gateway refused: bad credentials <redacted>"
    );
    assert!(!format!("{cause:?}").contains(SECRET), "{cause:?}");
}

#[test]
fn a_response_hands_out_its_headers_as_received() {
    let headers = vec![
        ("Retry-After".to_owned(), "5".to_owned()),
        ("X-Request-Id".to_owned(), "r-1".to_owned()),
    ];
    let response = HttpResponse::new(503, headers.clone(), Vec::new());
    assert_eq!(response.headers(), headers.as_slice());
    assert_eq!(
        HttpError::new(HttpErrorKind::Io, "reset by peer").message(),
        "reset by peer"
    );
}

#[test]
fn a_token_type_is_published_without_control_characters_and_cut_to_200() {
    let parse = |token_type: &str| {
        let body = serde_json::json!({"access_token": "a", "token_type": token_type}).to_string();
        parse_token_response(200, body.as_bytes(), &[])
            .unwrap()
            .token_type
    };
    assert_eq!(parse("mac"), "mac");
    assert_eq!(parse("ma\u{7}c\r\n"), "mac");
    let long = "m".repeat(300);
    let cut = parse(&long);
    assert_eq!(cut, format!("{}…", "m".repeat(200)));
}

#[test]
fn a_secret_echoed_form_encoded_twice_is_scrubbed() {
    // `form_encode("p@ss w/rd")` is `p%40ss+w%2Frd`; encoded once more,
    // as a gateway that quotes the request body in a URL does.
    let secret = "p@ss w/rd-42";
    for echo in ["p%2540ss%2Bw%252Frd-42", "p%2540ss%2bw%252Frd-42"] {
        let body = format!("rejected client_secret={echo}");
        let e = parse_token_response(400, body.as_bytes(), &[secret]).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains("2540ss"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}

/// The excerpt an error status with `body` leaves in the error, scrubbed
/// of `secrets` as sent in a form.
fn excerpt_of(body: &str, secrets: &[&str]) -> String {
    match parse_token_response(500, body.as_bytes(), secrets).unwrap_err() {
        TokenRequestError::UnexpectedStatus { excerpt, .. } => excerpt,
        other => panic!("expected an unexpected status, got {other:?}"),
    }
}

#[test]
fn a_secret_whose_first_character_is_escaped_is_scrubbed() {
    // Form encoding leaves `p` alone, so only the echo escapes it: the
    // scrubber must look for a match at `%`, `\` and `&` too.
    let secret = "p4ss-w0rd-XYZ";
    for first in ["%70", "\\u0070", "&#112;", "&#x70;"] {
        let body = format!("echo: {first}4ss-w0rd-XYZ.");
        assert_eq!(excerpt_of(&body, &[secret]), "echo: <redacted>.", "{first}");
    }
    // Near misses stay as they are: `+` stands for a space only, an HTML
    // reference ends at its `;`, a backslash at the end escapes nothing.
    for near_miss in [
        "echo: p4ss+w0rd-XYZ.",
        "echo: &#112!4ss-w0rd-XYZ.",
        "echo: p4ss\\",
    ] {
        assert_eq!(excerpt_of(near_miss, &[secret]), near_miss);
    }
}

#[test]
fn a_secret_echoed_json_escaped_twice_is_scrubbed() {
    // `pa"ss\word-1` in a JSON string is `pa\"ss\\word-1`; that quoted
    // again in a JSON string is `pa\\\"ss\\\\word-1`.
    let secret = r#"pa"ss\word-1"#;
    let body = r#"echo: pa\\\"ss\\\\word-1 end"#;
    assert_eq!(excerpt_of(body, &[secret]), "echo: <redacted> end");
}

/// An endpoint of the authority for the client `client-b` with `secret`.
fn endpoint_with_secret(authority: &LocalAuthority, secret: &str) -> TokenEndpoint {
    authority.add_client("client-b", secret);
    TokenEndpoint::builder(authority.token_url(), ClientId::new("client-b"))
        .client_secret(ClientSecret::new(secret))
        .build()
        .unwrap()
}

/// The excerpt of the error the endpoint returns for a 500 with `body`.
fn endpoint_excerpt(
    authority: &LocalAuthority,
    source: &mut ClientCredentials,
    body: &str,
) -> String {
    authority.push_fault(Fault::json(500, body));
    let e = fetch(source).unwrap_err();
    match request_error(&e) {
        TokenRequestError::UnexpectedStatus { excerpt, .. } => excerpt.clone(),
        other => panic!("expected an unexpected status, got {other:?}"),
    }
}

fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[test]
fn base64_echoes_of_a_client_secret_are_scrubbed_whole() {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    // Its form encoding makes `client-b:<secret>` 40 bytes: base64 pads.
    const SECRET: &str = "Base64-Echo-Secret/Value+12";
    let authority = LocalAuthority::start().unwrap();
    let mut source = ClientCredentials::new(endpoint_with_secret(&authority, SECRET));
    fetch(&mut source).unwrap();

    // The padding goes with the match, percent-encoded too.
    let basic = STANDARD.encode(format!("client-b:{}", form_encode(SECRET)));
    assert!(basic.ends_with("=="), "{basic}");
    let echo = format!("Basic%20{}.", basic.replace('=', "%3D"));
    assert_eq!(
        endpoint_excerpt(&authority, &mut source, &echo),
        "Basic%20<redacted>."
    );

    // A pair with another client id: all of the secret's base64 goes when
    // the id ends on a group of three bytes ("xy:").
    let other = STANDARD.encode(format!("xy:{}", form_encode(SECRET)));
    assert_eq!(
        endpoint_excerpt(&authority, &mut source, &other),
        format!("{}<redacted>", STANDARD.encode("xy:"))
    );

    // The secret inside a base64 body (a gateway that logs request bodies
    // that way), at each alignment, with text after it: every group of
    // four characters that encodes secret bytes only goes.
    for prefix in ["", "a", "ab"] {
        let body = STANDARD.encode(format!(
            r#"{prefix}{{"client_secret":"{SECRET}","scope":"orders"}}"#
        ));
        let out = endpoint_excerpt(&authority, &mut source, &body);
        assert!(out.contains("<redacted>"), "{prefix:?}: {out}");
        let redactions = out.matches("<redacted>").count();
        let removed = body.len() - (out.len() - redactions * "<redacted>".len());
        let whole_groups = (SECRET.len() - 2) / 3;
        assert!(
            removed >= 4 * whole_groups,
            "{prefix:?}: only {removed} characters of {body} went: {out}"
        );
    }
}

#[test]
fn ureq_reads_a_body_of_exactly_max_body_bytes() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = sized_endpoint(&authority, UreqClient::new(), 300);
    assert_max_body_is_the_largest_read(&authority, &mut source, 300);
}

#[test]
fn ureq_reports_an_unknown_host_as_a_connect_error() {
    assert_eq!(
        http_error_kind("https://tokenkeeper-test.invalid/token", UreqClient::new()),
        HttpErrorKind::Connect
    );
}

/// The configured refresh token stays the fallback after a cached one of
/// another lineage was redeemed: only redeeming the configured token
/// itself (and getting another back) spends it.
#[test]
fn redeeming_a_cached_refresh_token_keeps_the_configured_one_as_the_fallback() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_rotate_refresh_tokens(true);
    let cx = || FetchContext::new(SystemClock, LifetimePolicy::default());
    let carrying = |refresh: &str| {
        cx().token(
            tokenkeeper::AccessToken::new("old"),
            Some(Duration::from_secs(60)),
        )
        .with_refresh_token(RefreshToken::new(refresh))
    };
    let configured = authority.issue_refresh_token("client-a");
    let cached = authority.issue_refresh_token("client-a");
    let mut source = RefreshTokenGrant::new(endpoint(&authority), RefreshToken::new(&configured));

    // Another instance's token, from the cache: redeemed and rotated.
    let token = block_on(source.fetch(cx().with_current(carrying(&cached)))).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_ne!(source.refresh_token().secret(), cached);

    // A cached token the authority refuses: the configured one, unspent,
    // is tried and works.
    let token = block_on(source.fetch(cx().with_current(carrying("refused-lineage")))).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    let sent: Vec<String> = authority
        .requests()
        .iter()
        .filter_map(|r| r.form_value("refresh_token"))
        .collect();
    assert_eq!(
        sent[sent.len() - 2..],
        ["refused-lineage".to_owned(), configured]
    );
}

/// Only `invalid_grant` sends the configured refresh token after a cached
/// one: any other failure is the authority's, not the cached token's.
#[test]
fn a_cached_refresh_token_failing_otherwise_than_invalid_grant_is_not_replaced() {
    let authority = LocalAuthority::start().unwrap();
    let cx = || FetchContext::new(SystemClock, LifetimePolicy::default());
    let carrying = |refresh: &str| {
        cx().token(
            tokenkeeper::AccessToken::new("old"),
            Some(Duration::from_secs(60)),
        )
        .with_refresh_token(RefreshToken::new(refresh))
    };
    let configured = authority.issue_refresh_token("client-a");
    let cached = authority.issue_refresh_token("client-a");
    let mut source = RefreshTokenGrant::new(endpoint(&authority), RefreshToken::new(&configured));
    for fault in [
        Fault::oauth_error(503, "temporarily_unavailable", ""),
        Fault::oauth_error(400, "invalid_scope", ""),
        Fault::Reset,
    ] {
        let what = format!("{fault:?}");
        authority.push_fault(fault);
        let before = authority.requests().len();
        block_on(source.fetch(cx().with_current(carrying(&cached)))).unwrap_err();
        let sent: Vec<String> = authority.requests()[before..]
            .iter()
            .filter_map(|r| r.form_value("refresh_token"))
            .collect();
        assert_eq!(sent, std::slice::from_ref(&cached), "{what}");
    }
}
