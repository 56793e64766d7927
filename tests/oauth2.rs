//! OAuth2 over real HTTP against the in-process authority on 127.0.0.1:
//! grants, client authentication, and every failure the issue lists, each
//! with its typed error and its effect on backoff.
#![cfg(feature = "ureq")]

use std::time::Duration;

use futures_lite::future::block_on;
use local_authority::{Fault, LocalAuthority};
use serde_json::json;
use tokenkeeper::oauth2::{
    ClientCredentials, ErrorCode, HttpClient, HttpErrorKind, RefreshTokenGrant, TokenEndpoint,
    TokenEndpointBuilder, TokenRequestError,
};
use tokenkeeper::{
    Backoff, ClientId, ClientSecret, Clock, ErrorKind, FetchContext, LifetimePolicy, ManualClock,
    RefreshToken, SourceError, SystemClock, Token, TokenManager, TokenSource,
};

fn endpoint(authority: &LocalAuthority) -> TokenEndpointBuilder {
    TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
}

fn fetch(source: &mut impl TokenSource) -> Result<Token, SourceError> {
    block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
}

fn request_error(e: &SourceError) -> &TokenRequestError {
    e.cause()
        .and_then(|c| c.downcast_ref::<TokenRequestError>())
        .unwrap_or_else(|| panic!("no TokenRequestError in {e:?}"))
}

fn client_credentials(authority: &LocalAuthority) -> ClientCredentials {
    ClientCredentials::new(endpoint(authority).build().unwrap())
}

#[test]
fn client_credentials_with_basic_auth_sends_a_form_and_gets_a_token() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = client_credentials(&authority)
        .scope("read write")
        .audience("https://api.example")
        .resource("https://api.example/a")
        .resource("https://api.example/b")
        .param("tenant", "t1")
        .param("grant_type", "ignored");
    let before = SystemClock.now_ms();
    let token = fetch(&mut source).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(token.scope(), Some("read write"));
    let lifetime = token.expiry_ms() - token.issued_ms();
    assert_eq!(lifetime, 60_000);
    assert!(token.issued_ms() >= before);

    let request = authority.requests().pop().unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(request
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));
    assert_eq!(
        request.form(),
        vec![
            ("grant_type".into(), "client_credentials".into()),
            ("scope".into(), "read write".into()),
            ("audience".into(), "https://api.example".into()),
            ("resource".into(), "https://api.example/a".into()),
            ("resource".into(), "https://api.example/b".into()),
            ("tenant".into(), "t1".into()),
        ]
    );
    assert!(!request.body.contains("secret-a"));
}

#[test]
fn client_secret_post_puts_credentials_in_the_body() {
    let authority = LocalAuthority::start().unwrap();
    let endpoint = endpoint(&authority)
        .client_secret_post(ClientSecret::new("secret-a"))
        .build()
        .unwrap();
    let token = fetch(&mut ClientCredentials::new(endpoint)).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    let request = authority.requests().pop().unwrap();
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.form_value("client_id").as_deref(), Some("client-a"));
    assert_eq!(
        request.form_value("client_secret").as_deref(),
        Some("secret-a")
    );
}

#[test]
fn basic_auth_encodes_special_characters_per_rfc_6749() {
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("svc one:ü", "p@ss:w/rd +%");
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("svc one:ü"))
        .client_secret(ClientSecret::new("p@ss:w/rd +%"))
        .build()
        .unwrap();
    assert!(fetch(&mut ClientCredentials::new(endpoint)).is_ok());
}

#[test]
fn a_wrong_secret_is_a_permanent_invalid_client_without_the_secret() {
    let authority = LocalAuthority::start().unwrap();
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("wrong-secret-value"))
        .build()
        .unwrap();
    let e = fetch(&mut ClientCredentials::new(endpoint)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert_eq!(request_error(&e).code(), Some(&ErrorCode::InvalidClient));
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("invalid_client"), "{shown}");
    assert!(!shown.contains("wrong-secret-value"), "{shown}");
}

/// One fault and what it must produce.
struct Case {
    name: &'static str,
    fault: Fault,
    kind: ErrorKind,
    retry_after: Option<Duration>,
    check: fn(&TokenRequestError) -> bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "500 plain text",
            fault: Fault::Respond {
                status: 500,
                headers: vec![],
                body: b"internal error".to_vec(),
            },
            kind: ErrorKind::Transient,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::UnexpectedStatus { status: 500, excerpt } if excerpt == "internal error"),
        },
        Case {
            name: "503 with Retry-After seconds",
            fault: Fault::json(503, r#"{"error":"temporarily_unavailable"}"#)
                .with_header("Retry-After", "7"),
            kind: ErrorKind::Transient,
            retry_after: Some(Duration::from_secs(7)),
            check: |e| matches!(e.code(), Some(ErrorCode::Other(c)) if c == "temporarily_unavailable"),
        },
        Case {
            name: "429 with Retry-After in the past (HTTP date)",
            fault: Fault::Respond {
                status: 429,
                headers: vec![("Retry-After".into(), "Sun, 06 Nov 1994 08:49:37 GMT".into())],
                body: vec![],
            },
            kind: ErrorKind::Transient,
            retry_after: Some(Duration::ZERO),
            check: |e| matches!(e, TokenRequestError::UnexpectedStatus { status: 429, .. }),
        },
        Case {
            name: "invalid_client",
            fault: Fault::oauth_error(401, "invalid_client", "client unknown"),
            kind: ErrorKind::Permanent,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::OAuth2(o) if o.code() == &ErrorCode::InvalidClient && o.description() == Some("client unknown") && o.status() == 401),
        },
        Case {
            name: "invalid_scope",
            fault: Fault::oauth_error(400, "invalid_scope", "no such scope"),
            kind: ErrorKind::Permanent,
            retry_after: None,
            check: |e| e.code() == Some(&ErrorCode::InvalidScope),
        },
        Case {
            name: "unauthorized_client",
            fault: Fault::oauth_error(400, "unauthorized_client", ""),
            kind: ErrorKind::Permanent,
            retry_after: None,
            check: |e| e.code() == Some(&ErrorCode::UnauthorizedClient),
        },
        Case {
            name: "malformed JSON on 200",
            fault: Fault::json(200, r#"{"access_token": "abc""#),
            kind: ErrorKind::Transient,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::InvalidResponse { status: 200, .. }),
        },
        Case {
            name: "HTML error page",
            fault: Fault::Respond {
                status: 502,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body:
                    b"<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>"
                        .to_vec(),
            },
            kind: ErrorKind::Transient,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::UnexpectedStatus { status: 502, excerpt } if excerpt.contains("502 Bad Gateway") && !excerpt.contains('\n')),
        },
        Case {
            name: "body over the cap",
            fault: Fault::Huge {
                len: 10 * 1024 * 1024,
            },
            kind: ErrorKind::Transient,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::Http(h) if h.kind() == HttpErrorKind::BodyTooLarge),
        },
        Case {
            name: "connection reset",
            fault: Fault::Reset,
            kind: ErrorKind::Transient,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::Http(_)),
        },
        Case {
            name: "truncated body",
            fault: Fault::HalfBody {
                status: 200,
                declared_len: 100,
                body: b"{\"access_token\":\"a".to_vec(),
            },
            kind: ErrorKind::Transient,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::Http(_)),
        },
        Case {
            name: "missing access_token",
            fault: Fault::json(200, r#"{"token_type":"Bearer","expires_in":60}"#),
            kind: ErrorKind::Transient,
            retry_after: None,
            check: |e| matches!(e, TokenRequestError::InvalidResponse { reason, .. } if reason == "access_token is missing"),
        },
    ]
}

#[test]
fn every_fault_gives_its_typed_error() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = client_credentials(&authority);
    for case in cases() {
        authority.push_fault(case.fault);
        let e = fetch(&mut source).expect_err(case.name);
        assert_eq!(e.kind(), case.kind, "{}: {e}", case.name);
        assert_eq!(e.retry_after(), case.retry_after, "{}", case.name);
        assert!(
            (case.check)(request_error(&e)),
            "{}: {:?}",
            case.name,
            request_error(&e)
        );
        assert!(!format!("{e} {e:?}").contains("secret-a"), "{}", case.name);
    }
    // The authority still works afterwards.
    assert!(fetch(&mut source).is_ok());
}

#[test]
fn lenient_responses_are_accepted() {
    let authority = LocalAuthority::start().unwrap();
    let mut source = client_credentials(&authority);

    authority.set_expires_in(Some(json!("120")));
    let t = fetch(&mut source).unwrap();
    assert_eq!(t.expiry_ms() - t.issued_ms(), 120_000);

    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"a\/b\/c","token_type":"bearer","expires_in":30}"#,
    ));
    let t = fetch(&mut source).unwrap();
    assert_eq!(t.access_token().secret(), "a/b/c");

    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"m1","token_type":"mac","expires_in":30}"#,
    ));
    let t = fetch(&mut source).unwrap();
    assert_eq!(t.token_type(), "mac", "other token types are recorded");

    authority.set_expires_in(None);
    let t = fetch(&mut source).unwrap();
    assert_eq!(
        t.expiry_ms() - t.issued_ms(),
        300_000,
        "the policy's default lifetime"
    );
}

#[test]
fn a_refused_connection_is_a_network_error_not_an_http_400() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint =
        TokenEndpoint::builder(format!("http://127.0.0.1:{port}/token"), ClientId::new("a"))
            .client_secret(ClientSecret::new("b"))
            .build()
            .unwrap();
    let e = fetch(&mut ClientCredentials::new(endpoint)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    match request_error(&e) {
        TokenRequestError::Http(h) => assert_eq!(h.kind(), HttpErrorKind::Connect, "{h}"),
        other => panic!("expected a network error, got {other:?}"),
    }
}

#[test]
fn refresh_token_grant_persists_rotation() {
    let authority = LocalAuthority::start().unwrap();
    let first_refresh = authority.issue_refresh_token("client-a");
    let mut grant = RefreshTokenGrant::new(
        endpoint(&authority).build().unwrap(),
        RefreshToken::new(first_refresh.clone()),
    );
    let t1 = fetch(&mut grant).unwrap();
    let r1 = t1.refresh_token().unwrap().secret().to_owned();
    assert_ne!(r1, first_refresh, "the authority rotated it");
    assert_eq!(grant.refresh_token().secret(), r1);
    let request = authority.requests().pop().unwrap();
    assert_eq!(
        request.form_value("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(
        request.form_value("refresh_token").as_deref(),
        Some(first_refresh.as_str())
    );

    // The next fetch redeems the rotated token; reusing the first would fail.
    let t2 = fetch(&mut grant).unwrap();
    assert_ne!(t2.refresh_token().unwrap().secret(), r1);
    let request = authority.requests().pop().unwrap();
    assert_eq!(
        request.form_value("refresh_token").as_deref(),
        Some(r1.as_str())
    );

    // A revoked refresh token is a permanent invalid_grant, scrubbed.
    let mut stale = RefreshTokenGrant::new(
        endpoint(&authority).build().unwrap(),
        RefreshToken::new(first_refresh.clone()),
    );
    let e = fetch(&mut stale).unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(request_error(&e).code(), Some(&ErrorCode::InvalidGrant));
    assert!(!format!("{e:?}").contains(&first_refresh));
}

#[test]
fn without_rotation_the_old_refresh_token_stays_on_the_token() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_rotate_refresh_tokens(false);
    let refresh = authority.issue_refresh_token("client-a");
    let mut grant = RefreshTokenGrant::new(
        endpoint(&authority).build().unwrap(),
        RefreshToken::new(refresh.clone()),
    );
    for _ in 0..2 {
        let t = fetch(&mut grant).unwrap();
        assert_eq!(t.refresh_token().unwrap().secret(), refresh);
    }
}

#[test]
fn the_manager_prefers_the_refresh_token_of_the_current_token() {
    let authority = LocalAuthority::start().unwrap();
    let initial = authority.issue_refresh_token("client-a");
    let mut grant = RefreshTokenGrant::new(
        endpoint(&authority).build().unwrap(),
        RefreshToken::new("stale-value"),
    );
    // A current token (say, from a shared cache) carries the newest one.
    let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
    let current = cx
        .token(
            tokenkeeper::AccessToken::new("old"),
            Some(Duration::from_secs(60)),
        )
        .with_refresh_token(RefreshToken::new(initial.clone()));
    let cx = cx.with_current(current);
    let t = block_on(grant.fetch(cx)).unwrap();
    assert!(authority.is_valid_access_token(t.access_token().secret()));
    let request = authority.requests().pop().unwrap();
    assert_eq!(
        request.form_value("refresh_token").as_deref(),
        Some(initial.as_str())
    );
}

/// Runs `cond` checks while the executor and the real network make progress.
fn run_until(ex: &smol::LocalExecutor<'_>, what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        while ex.try_tick() {}
        if cond() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn the_manager_serves_the_last_token_through_every_fault_and_backs_off() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_expires_in(Some(json!(3600)));
    let clock = ManualClock::at_ms(1_700_000_000_000);
    let (handle, driver) = TokenManager::builder(client_credentials(&authority))
        .clock(clock.clone())
        .jitter(tokenkeeper::NoJitter)
        // Seeded: no draw is 0 ms, which would start the next attempt
        // before the test has set up the next fault.
        .backoff(Backoff::new(Duration::from_millis(500), 2.0, Duration::from_secs(60)).seed(3))
        .request_timeout(Duration::from_secs(10))
        .build();
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    run_until(&ex, "the first token", || handle.current().is_some());
    let first = handle.current().unwrap();
    clock.set_ms(first.stale_ms());

    for (n, case) in cases().into_iter().enumerate() {
        authority.push_fault(case.fault);
        let requests = handle.state().source_requests;
        // Move to the planned attempt; it runs over real HTTP.
        clock.set_ms(
            clock
                .now_ms()
                .max(handle.state().next_refresh_ms().unwrap()),
        );
        run_until(&ex, case.name, || {
            let s = handle.state();
            s.source_requests > requests && s.consecutive_failures as usize == n + 1
        });
        let state = handle.state();
        let error = state.last_error.as_ref().unwrap();
        assert!((case.check)(request_error(error)), "{}", case.name);
        let next = state.next_refresh_ms().expect("no attempt in flight");
        assert!(
            next > clock.now_ms(),
            "{}: the next attempt is in the future",
            case.name
        );
        let wait = next - clock.now_ms();
        match case.kind {
            ErrorKind::Permanent => {
                assert_eq!(wait, 60_000, "{}: permanent waits the cap", case.name)
            }
            ErrorKind::Transient => assert!(
                wait <= 60_000.max(case.retry_after.map_or(0, |d| d.as_millis() as u64)),
                "{}",
                case.name
            ),
        }
        if let Some(hint) = case.retry_after {
            assert!(
                wait >= hint.as_millis() as u64,
                "{}: Retry-After honoured",
                case.name
            );
        }
        assert_eq!(
            handle.current().as_ref(),
            Some(&first),
            "{}: grace period",
            case.name
        );
    }

    // A hanging authority: the manager's own timeout on its clock ends it.
    authority.push_fault(Fault::Hang);
    let received = authority.token_requests();
    clock.set_ms(handle.state().next_refresh_ms().unwrap());
    // Wait until the authority holds the request, not just until the
    // manager started it: a timeout before that would cancel it unsent.
    run_until(&ex, "the hanging request to arrive", || {
        authority.token_requests() > received
    });
    let failures = handle.state().consecutive_failures;
    clock.advance(Duration::from_secs(10));
    run_until(&ex, "the request timeout", || {
        handle.state().consecutive_failures > failures
    });
    assert!(handle
        .state()
        .last_error
        .unwrap()
        .to_string()
        .contains("timed out"));
    assert_eq!(handle.current().as_ref(), Some(&first));

    // Recovery.
    clock.set_ms(handle.state().next_refresh_ms().unwrap());
    run_until(&ex, "recovery", || handle.state().consecutive_failures == 0);
    assert_ne!(handle.current().unwrap(), first);
}

#[test]
fn http_client_reports_status_headers_and_body() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(Fault::json(418, "{}").with_header("X-Test", "yes"));
    let client = tokenkeeper::oauth2::UreqClient::new();
    let request = tokenkeeper::oauth2::HttpRequest::form_post(
        authority.token_url().parse().unwrap(),
        b"a=1".to_vec(),
    );
    let response = block_on(client.post(request, 1024)).unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(response.header("x-test"), Some("yes"));
    assert_eq!(response.body(), b"{}");
}

#[test]
fn the_http_request_gives_up_before_the_fetch_deadline() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(Fault::Hang);
    let mut source = client_credentials(&authority);
    let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
    let cx = cx.clone().with_deadline_ms(cx.now_ms() + 1_000);
    let e = block_on(source.fetch(cx)).unwrap_err();
    // The HTTP client's own timeout, not the manager's: an answer arriving
    // before it would have been read, so a rotated refresh token is kept.
    match request_error(&e) {
        TokenRequestError::Http(h) => assert_eq!(h.kind(), HttpErrorKind::Timeout, "{h}"),
        other => panic!("expected an HTTP timeout, got {other:?}"),
    }
    assert_eq!(e.kind(), ErrorKind::Transient);
}
