//! The local authority over real TCP, with a hand-written HTTP/1.1 client.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

use local_authority::{Fault, LocalAuthority};
use serde_json::{json, Value};

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn basic(id: &str, secret: &str) -> String {
    let credentials = format!("{}:{}", urlencode(id), urlencode(secret));
    format!("Basic {}", base64(credentials.as_bytes()))
}

#[test]
fn client_credentials_with_basic_auth() {
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("id:with space", "s3cr/et+%é");
    let auth = basic("id:with space", "s3cr/et+%é");
    let response = post(
        authority.addr(),
        "/token",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8"),
        ],
        "grant_type=client_credentials&scope=read+write&audience=api&resource=https%3A%2F%2Fr1&resource=r2",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(
        response.header("content-type"),
        Some("application/json;charset=UTF-8")
    );
    let body = response.json();
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("at-"), "{token}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 60);
    assert_eq!(body["scope"], "read write");
    assert!(body.get("refresh_token").is_none());
    assert!(authority.is_valid_access_token(token));
    assert!(!authority.is_valid_access_token("at-0-nope"));
    assert_eq!(authority.token_requests(), 1);
    assert_eq!(authority.tokens_issued(), 1);

    let requests = authority.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/token");
    assert_eq!(recorded.header("AUTHORIZATION"), Some(auth.as_str()));
    assert!(recorded.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(recorded.form_value("audience").as_deref(), Some("api"));
    assert_eq!(recorded.form_value("scope").as_deref(), Some("read write"));
    let resources: Vec<String> = recorded
        .form()
        .into_iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(resources, ["https://r1", "r2"]);
}

#[test]
fn client_credentials_with_post_auth() {
    let authority = LocalAuthority::start().unwrap();
    let response = token_post(&authority, "grant_type=client_credentials");
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("scope").is_none());
    assert_eq!(authority.tokens_issued(), 1);
}

#[test]
fn client_authentication_failures_are_401_invalid_client() {
    let authority = LocalAuthority::start().unwrap();
    let wrong_basic = basic("client-a", "bad-pass");
    let right_basic = basic("client-a", "secret-a");
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[("Authorization", &wrong_basic)],
            "grant_type=client_credentials",
        ),
        (
            &[],
            "grant_type=client_credentials&client_id=client-a&client_secret=bad-pass",
        ),
        (
            &[],
            "grant_type=client_credentials&client_id=nobody&client_secret=secret-a",
        ),
        // Both methods at once.
        (
            &[("Authorization", &right_basic)],
            "grant_type=client_credentials&client_id=client-a&client_secret=secret-a",
        ),
        // Neither.
        (&[], "grant_type=client_credentials&client_id=client-a"),
        (
            &[("Authorization", "Basic !!not-base64")],
            "grant_type=client_credentials",
        ),
    ];
    for (headers, body) in cases {
        let mut headers = headers.to_vec();
        headers.push(("Content-Type", FORM));
        let response = post(authority.addr(), "/token", &headers, body);
        assert_eq!(response.status, 401, "{body}");
        assert_eq!(
            response.header("www-authenticate"),
            Some(r#"Basic realm="local-authority""#)
        );
        assert_eq!(response.error(), "invalid_client");
        let description = response.json()["error_description"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!description.contains("secret-a") && !description.contains("bad-pass"));
    }
    assert_eq!(authority.tokens_issued(), 0);
    assert_eq!(authority.token_requests(), 6);
}

#[test]
fn request_errors() {
    let authority = LocalAuthority::start().unwrap();
    let cases = [
        ("", 400, "invalid_request"),
        (
            "grant_type=authorization_code&code=x",
            400,
            "unsupported_grant_type",
        ),
        ("grant_type=refresh_token", 400, "invalid_request"),
        (
            "grant_type=client_credentials&grant_type=password",
            400,
            "invalid_request",
        ),
        ("grant_type=password&username=u", 400, "invalid_request"),
    ];
    for (params, status, code) in cases {
        let response = token_post(&authority, params);
        assert_eq!(response.status, status, "{params}");
        assert_eq!(response.error(), code, "{params}");
        assert_eq!(response.header("cache-control"), Some("no-store"));
    }

    // A body that is neither a form nor JSON is refused.
    let response = post(
        authority.addr(),
        "/token",
        &[("Content-Type", "text/plain")],
        "grant_type=client_credentials&client_id=client-a&client_secret=secret-a",
    );
    assert_eq!(response.status, 400);
    assert_eq!(response.error(), "invalid_request");

    let response = post(authority.addr(), "/elsewhere", &[], "");
    assert_eq!(response.status, 404);
    assert_eq!(authority.tokens_issued(), 0);
    assert_eq!(authority.token_requests(), 6);
    assert_eq!(authority.requests().len(), 7);
}

#[test]
fn refresh_tokens_rotate_and_reuse_is_rejected() {
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("client-b", "secret-b");
    let first = authority.issue_refresh_token("client-a");

    let response = token_post(
        &authority,
        &format!("grant_type=refresh_token&refresh_token={first}"),
    );
    assert_eq!(response.status, 200);
    let body = response.json();
    let second = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert!(authority.is_valid_access_token(body["access_token"].as_str().unwrap()));

    // The used one is revoked.
    let response = token_post(
        &authority,
        &format!("grant_type=refresh_token&refresh_token={first}"),
    );
    assert_eq!(response.status, 400);
    assert_eq!(response.error(), "invalid_grant");

    // Another client cannot use it.
    let response = post(
        authority.addr(),
        "/token",
        &[
            ("Content-Type", FORM),
            ("Authorization", &basic("client-b", "secret-b")),
        ],
        &format!("grant_type=refresh_token&refresh_token={second}"),
    );
    assert_eq!(response.error(), "invalid_grant");

    // The new one works once.
    let response = token_post(
        &authority,
        &format!("grant_type=refresh_token&refresh_token={second}"),
    );
    assert_eq!(response.status, 200);
    assert_eq!(authority.tokens_issued(), 2);
}

#[test]
fn refresh_tokens_without_rotation_stay_valid() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_rotate_refresh_tokens(false);
    let token = authority.issue_refresh_token("client-a");
    for _ in 0..2 {
        let response = token_post(
            &authority,
            &format!("grant_type=refresh_token&refresh_token={token}"),
        );
        assert_eq!(response.status, 200);
        assert!(response.json().get("refresh_token").is_none());
    }
    let response = token_post(
        &authority,
        "grant_type=refresh_token&refresh_token=rt-unknown",
    );
    assert_eq!(response.error(), "invalid_grant");
}

#[test]
fn password_grant_returns_a_refresh_token_that_keeps_its_scope() {
    let authority = LocalAuthority::start().unwrap();
    let response = token_post(
        &authority,
        "grant_type=password&username=alice&password=pw&scope=s1",
    );
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["scope"], "s1");
    let refresh = body["refresh_token"].as_str().unwrap();
    let response = token_post(
        &authority,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["scope"], "s1");
}

#[test]
fn expires_in_is_sent_as_configured() {
    let authority = LocalAuthority::start().unwrap();
    let cases = [
        (Some(json!("3600")), true),
        (Some(json!(1e300)), true),
        (Some(json!(0)), false),
        (None, true),
    ];
    for (expires_in, valid) in cases {
        authority.set_expires_in(expires_in.clone());
        let body = token_post(&authority, "grant_type=client_credentials").json();
        assert_eq!(body.get("expires_in"), expires_in.as_ref());
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(
            authority.is_valid_access_token(token),
            valid,
            "{expires_in:?}"
        );
    }
}

#[test]
fn respond_faults_are_fifo_then_outage_then_normal() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(
        Fault::oauth_error(503, "temporarily_unavailable", "try later")
            .with_header("Retry-After", "7"),
    );
    authority.push_fault(Fault::json(
        200,
        r#"{"access_token":"a\/b","token_type":"bearer"}"#,
    ));
    authority.push_fault(Fault::Respond {
        status: 500,
        headers: vec![
            ("Content-Type".into(), "text/html".into()),
            ("Content-Length".into(), "999".into()),
        ],
        body: b"<html>oops</html>".to_vec(),
    });
    authority.set_outage(Some(Fault::json(429, "{}")));

    let response = token_post(&authority, "grant_type=client_credentials");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("7"));
    assert_eq!(response.error(), "temporarily_unavailable");
    assert_eq!(response.json()["error_description"], "try later");

    let response = token_post(&authority, "grant_type=client_credentials");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        br#"{"access_token":"a\/b","token_type":"bearer"}"#
    );
    assert_eq!(response.header("content-type"), Some("application/json"));

    // The Content-Length given is replaced by the correct one.
    let response = token_post(&authority, "grant_type=client_credentials");
    assert_eq!(response.status, 500);
    assert_eq!(response.body, b"<html>oops</html>");

    for _ in 0..2 {
        assert_eq!(
            token_post(&authority, "grant_type=client_credentials").status,
            429
        );
    }
    authority.set_outage(None);
    assert_eq!(
        token_post(&authority, "grant_type=client_credentials").status,
        200
    );
    assert_eq!(authority.token_requests(), 6);
    assert_eq!(authority.tokens_issued(), 1);
}

#[test]
fn faults_apply_only_to_the_token_endpoint() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(Fault::Reset);
    assert_eq!(post(authority.addr(), "/other", &[], "").status, 404);
    let mut stream = connect(authority.addr());
    stream
        .write_all(&request_bytes("/token?x=1", &[("Content-Type", FORM)], ""))
        .unwrap();
    assert!(read_response(&mut stream).is_none());
    assert_eq!(authority.token_requests(), 1);
}

#[test]
fn reset_closes_without_a_response() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(Fault::Reset);
    let mut stream = connect(authority.addr());
    stream
        .write_all(&request_bytes(
            "/token",
            &[("Content-Type", FORM)],
            "grant_type=client_credentials",
        ))
        .unwrap();
    assert!(read_response(&mut stream).is_none());
    assert_eq!(authority.token_requests(), 1);
    assert_eq!(
        authority.requests()[0].form_value("grant_type").as_deref(),
        Some("client_credentials")
    );
}

#[test]
fn hang_never_answers_until_the_server_is_dropped() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(Fault::Hang);
    let mut stream = connect(authority.addr());
    stream
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    stream
        .write_all(&request_bytes(
            "/token",
            &[("Content-Type", FORM)],
            "grant_type=client_credentials",
        ))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = stream.read(&mut byte).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert_eq!(authority.token_requests(), 1);

    // Other connections are served meanwhile.
    assert_eq!(
        token_post(&authority, "grant_type=client_credentials").status,
        200
    );

    let started = Instant::now();
    drop(authority);
    assert!(started.elapsed() < Duration::from_secs(1));
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the hanging connection closed, got {other:?}"),
    }
}

#[test]
fn half_body_declares_more_than_it_sends() {
    let authority = LocalAuthority::start().unwrap();
    authority.push_fault(Fault::HalfBody {
        status: 200,
        declared_len: 100,
        body: br#"{"access_tok"#.to_vec(),
    });
    let mut stream = connect(authority.addr());
    stream
        .write_all(&request_bytes(
            "/token",
            &[("Content-Type", FORM)],
            "grant_type=client_credentials",
        ))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 100\r\n"), "{head}");
    assert_eq!(body, r#"{"access_tok"#);
}

#[test]
fn huge_streams_the_declared_length() {
    let authority = LocalAuthority::start().unwrap();
    let len = 3 * 1024 * 1024 + 7;
    authority.push_fault(Fault::Huge { len });
    let mut stream = connect(authority.addr());
    stream
        .write_all(&request_bytes(
            "/token",
            &[("Content-Type", FORM)],
            "grant_type=client_credentials",
        ))
        .unwrap();
    let response = read_response(&mut stream).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), len);
    assert!(response.body.starts_with(br#"{"access_token":"aaaa"#));
    assert!(response.body[17..].iter().all(|b| *b == b'a'));

    // A tiny one is just a truncated prefix.
    authority.push_fault(Fault::Huge { len: 5 });
    let response = token_post(&authority, "grant_type=client_credentials");
    assert_eq!(response.body, br#"{"acc"#);
}

#[test]
fn latency_delays_answers() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(
        token_post(&authority, "grant_type=client_credentials").status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    authority.set_latency(Duration::ZERO);
    let started = Instant::now();
    assert_eq!(
        token_post(&authority, "grant_type=client_credentials").status,
        200
    );
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[test]
fn keep_alive_and_pipelining() {
    let authority = LocalAuthority::start().unwrap();
    let body = "grant_type=client_credentials&client_id=client-a&client_secret=secret-a";
    let one = request_bytes("/token", &[("Content-Type", FORM)], body);
    let mut stream = connect(authority.addr());
    // Sequential requests on one connection.
    for _ in 0..2 {
        stream.write_all(&one).unwrap();
        let response = read_response(&mut stream).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), None);
    }
    // Three pipelined in one write, the last asking to close.
    let last = request_bytes(
        "/token",
        &[("Content-Type", FORM), ("Connection", "close")],
        body,
    );
    stream
        .write_all(&[one.clone(), one, last].concat())
        .unwrap();
    for _ in 0..2 {
        assert_eq!(read_response(&mut stream).unwrap().status, 200);
    }
    let response = read_response(&mut stream).unwrap();
    assert_eq!(response.header("connection"), Some("close"));
    assert!(read_response(&mut stream).is_none());
    assert_eq!(authority.tokens_issued(), 5);
}

#[test]
fn chunked_bodies_and_expect_continue() {
    let authority = LocalAuthority::start().unwrap();
    let mut stream = connect(authority.addr());
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Transfer-Encoding: chunked\r\n\r\n\
              e\r\ngrant_type=cli\r\n39;ext=1\r\nent_credentials&client_id=client-a&client_secret=secret-a\r\n0\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 200);

    let body = "grant_type=client_credentials&client_id=client-a&client_secret=secret-a";
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let interim = read_response_head_only(&mut stream);
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 200);
    assert_eq!(authority.requests()[0].body, body);
}

fn read_response_head_only(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap()
}

#[test]
fn oversized_bodies_get_413_and_close() {
    let authority = LocalAuthority::start().unwrap();
    let mut stream = connect(authority.addr());
    let body = "a".repeat(64 * 1024 + 1);
    stream
        .write_all(&request_bytes("/token", &[("Content-Type", FORM)], &body))
        .unwrap();
    let response = read_response(&mut stream).unwrap();
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(read_response(&mut stream).is_none());
    assert_eq!(authority.token_requests(), 1);

    // Exactly 64 KiB is accepted.
    let body = format!(
        "grant_type=client_credentials&client_id=client-a&client_secret=secret-a&pad={}",
        "a".repeat(64 * 1024 - 76)
    );
    assert_eq!(body.len(), 64 * 1024);
    assert_eq!(token_post_raw(&authority, &body).status, 200);
}

fn token_post_raw(authority: &LocalAuthority, body: &str) -> Response {
    post(authority.addr(), "/token", &[("Content-Type", FORM)], body)
}

#[test]
fn malformed_requests_get_400() {
    let authority = LocalAuthority::start().unwrap();
    for raw in [
        &b"NONSENSE\r\n\r\n"[..],
        b"POST /token HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST /token HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ] {
        let mut stream = connect(authority.addr());
        stream.write_all(raw).unwrap();
        let response = read_response(&mut stream).unwrap();
        assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(authority.tokens_issued(), 0);
}

#[test]
fn dropping_stops_the_server() {
    let authority = LocalAuthority::start().unwrap();
    let addr = authority.addr();
    assert_eq!(
        authority.token_url(),
        format!("http://127.0.0.1:{}/token", addr.port())
    );
    // An idle keep-alive connection must not keep the server alive.
    let mut idle = connect(addr);
    idle.write_all(&request_bytes("/nothing", &[], "")).unwrap();
    assert_eq!(read_response(&mut idle).unwrap().status, 404);

    let started = Instant::now();
    drop(authority);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    assert!(read_response(&mut idle).is_none());
}

#[test]
fn instances_are_independent_and_parallel() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let authority = LocalAuthority::start().unwrap();
                for _ in 0..5 {
                    assert_eq!(
                        token_post(&authority, "grant_type=client_credentials").status,
                        200
                    );
                }
                assert_eq!(authority.tokens_issued(), 5);
                authority.addr()
            })
        })
        .collect();
    let mut ports: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().unwrap().port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
}

#[test]
fn debug_shows_no_secrets() {
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("client-b", "very-secret");
    let debug = format!("{authority:?}");
    assert!(debug.contains("client-b"), "{debug}");
    assert!(
        !debug.contains("very-secret") && !debug.contains("secret-a"),
        "{debug}"
    );
}

#[test]
fn json_bodies_are_accepted_and_may_be_required() {
    let authority = LocalAuthority::start().unwrap();
    let json_post = |body: &str| {
        post(
            authority.addr(),
            "/token",
            &[
                ("Content-Type", "application/json; charset=utf-8"),
                ("Authorization", &basic("client-a", "secret-a")),
            ],
            body,
        )
    };
    let ok =
        json_post(r#"{"grant_type":"client_credentials","scope":"a b","resource":["r1","r2"]}"#);
    assert_eq!(ok.status, 200, "{:?}", ok.json());
    assert_eq!(ok.json()["scope"], "a b");
    let recorded = authority.requests().pop().unwrap();
    assert!(recorded.is_json());
    assert_eq!(recorded.param("scope").as_deref(), Some("a b"));
    let resources: Vec<String> = recorded
        .params()
        .into_iter()
        .filter(|(n, _)| n == "resource")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(resources, ["r1", "r2"]);

    // client_secret_post in JSON.
    let post_auth = post(
        authority.addr(),
        "/token",
        &[("Content-Type", "application/json")],
        r#"{"grant_type":"client_credentials","client_id":"client-a","client_secret":"secret-a"}"#,
    );
    assert_eq!(post_auth.status, 200);

    for bad in [r#"["grant_type"]"#, r#"{"grant_type":1}"#, "not json"] {
        let response = json_post(bad);
        assert_eq!(response.status, 400, "{bad}");
        assert_eq!(response.error(), "invalid_request");
    }

    // Forms are still served, until JSON is required.
    assert_eq!(
        token_post(&authority, "grant_type=client_credentials").status,
        200
    );
    authority.set_json_only(true);
    let refused = token_post(&authority, "grant_type=client_credentials");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error(), "invalid_request");
    assert_eq!(
        json_post(r#"{"grant_type":"client_credentials"}"#).status,
        200
    );
}

#[test]
fn allowed_grant_types_are_answered_like_client_credentials() {
    let authority = LocalAuthority::start().unwrap();
    let device = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=d1";
    let refused = token_post(&authority, device);
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error(), "unsupported_grant_type");

    authority.allow_grant_type("urn:ietf:params:oauth:grant-type:device_code");
    let ok = token_post(&authority, &format!("{device}&scope=tv"));
    assert_eq!(ok.status, 200);
    let body = ok.json();
    assert_eq!(body["scope"], "tv");
    assert!(body.get("refresh_token").is_none());
    assert!(authority.is_valid_access_token(body["access_token"].as_str().unwrap()));
    // Client authentication still applies.
    let anonymous = post(
        authority.addr(),
        "/token",
        &[("Content-Type", FORM)],
        device,
    );
    assert_eq!(anonymous.status, 401);
}

// ---------------------------------------------------------------------------
// Client assertions (RFC 7523 §2.2), signed here with ring directly

mod assertions {
    use super::*;

    const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

    /// Claims that pass for `client` at `authority`; a new `jti` each time.
    fn claims(authority: &LocalAuthority, client: &str) -> Value {
        json!({
            "iss": client, "sub": client, "aud": authority.token_url(),
            "iat": now(), "exp": now() + 60, "jti": format!("{:x}", fastrand::u128(..)),
        })
    }

    fn hs256(secret: &str, claims: &Value) -> String {
        jwt(&json!({"alg": "HS256"}), claims, |input| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
            ring::hmac::sign(&key, input).as_ref().to_vec()
        })
    }

    /// A client-credentials request authenticated by `assertion` alone.
    fn with_assertion(authority: &LocalAuthority, assertion: &str, extra: &str) -> Response {
        let body = format!(
            "grant_type=client_credentials&client_assertion_type={JWT_BEARER}&client_assertion={assertion}{extra}"
        );
        post(authority.addr(), "/token", &[("Content-Type", FORM)], &body)
    }

    fn refused(response: &Response, why: &str) {
        assert_eq!(
            response.status,
            401,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.error(), "invalid_client");
        let description = response.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(description.contains(why), "{description}");
    }

    #[test]
    fn an_hs256_assertion_is_accepted_once_and_its_replay_refused() {
        let authority = LocalAuthority::start().unwrap();
        let assertion = hs256("secret-a", &claims(&authority, "client-a"));
        let first = with_assertion(&authority, &assertion, "&client_id=client-a");
        assert_eq!(
            first.status,
            200,
            "{}",
            String::from_utf8_lossy(&first.body)
        );
        refused(&with_assertion(&authority, &assertion, ""), "replay");
        // The minted ones pass too, once.
        let minted = authority.mint_client_assertion("client-a", 60);
        assert_eq!(with_assertion(&authority, &minted, "").status, 200);
        refused(&with_assertion(&authority, &minted, ""), "replay");
        refused(
            &with_assertion(
                &authority,
                &hs256("wrong", &claims(&authority, "client-a")),
                "",
            ),
            "signature",
        );
    }

    #[test]
    fn an_es256_assertion_verifies_with_the_registered_key_only() {
        let authority = LocalAuthority::start().unwrap();
        let key = TestKey::es256();
        authority.add_client_key("svc", &key.jwk().to_string());
        let ok = with_assertion(
            &authority,
            &key.sign("ES256", &claims(&authority, "svc")),
            "",
        );
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        let other = TestKey::es256();
        refused(
            &with_assertion(
                &authority,
                &other.sign("ES256", &claims(&authority, "svc")),
                "",
            ),
            "signature",
        );
        // The key's own signature under another algorithm's name.
        refused(
            &with_assertion(
                &authority,
                &key.sign("RS256", &claims(&authority, "svc")),
                "",
            ),
            "signature",
        );
        refused(
            &with_assertion(
                &authority,
                &key.sign("ES256", &claims(&authority, "nobody")),
                "",
            ),
            "unknown client",
        );
    }

    #[test]
    fn the_jwt_bearer_grant_takes_an_assertion_once_without_client_authentication() {
        let authority = LocalAuthority::start().unwrap();
        let key = TestKey::es256();
        authority.add_client_key("https://issuer.example", &key.jwk().to_string());
        let mut about_user = claims(&authority, "https://issuer.example");
        about_user["sub"] = json!("user-42");
        about_user["scope"] = json!("read");
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            key.sign("ES256", &about_user)
        );
        let send = || post(authority.addr(), "/token", &[("Content-Type", FORM)], &body);
        let ok = send();
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        assert_eq!(ok.json()["scope"], "read");
        let replayed = send();
        assert_eq!(replayed.status, 400);
        assert_eq!(replayed.error(), "invalid_grant");
        // Signed by a key the issuer did not register.
        let other = TestKey::es256().sign("ES256", &claims(&authority, "https://issuer.example"));
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={other}"
        );
        let refused = post(authority.addr(), "/token", &[("Content-Type", FORM)], &body);
        assert_eq!(refused.error(), "invalid_grant");
    }

    #[test]
    fn each_claim_is_checked() {
        let authority = LocalAuthority::start().unwrap();
        let with = |change: &dyn Fn(&mut Value)| {
            let mut claims = claims(&authority, "client-a");
            change(&mut claims);
            with_assertion(&authority, &hs256("secret-a", &claims), "")
        };
        refused(&with(&|c| c["exp"] = json!(now() - 1)), "expired");
        refused(
            &with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            "no exp",
        );
        refused(&with(&|c| c["nbf"] = json!(now() + 600)), "nbf");
        refused(&with(&|c| c["iat"] = json!(now() + 600)), "iat");
        refused(
            &with(&|c| drop(c.as_object_mut().unwrap().remove("jti"))),
            "no jti",
        );
        refused(&with(&|c| c["sub"] = json!("someone-else")), "iss and sub");
        refused(
            &with(&|c| c["aud"] = json!("https://elsewhere/token")),
            "aud",
        );
        authority.accept_assertion_audience("https://issuer.example");
        assert_eq!(
            with(&|c| c["aud"] = json!(["x", "https://issuer.example"])).status,
            200
        );

        let assertion = hs256("secret-a", &claims(&authority, "client-a"));
        refused(
            &with_assertion(&authority, &assertion, "&client_id=client-b"),
            "client_id differs",
        );
        refused(
            &with_assertion(
                &authority,
                &assertion,
                "&client_secret=secret-a&client_id=client-a",
            ),
            "more than one",
        );
        refused(&with_assertion(&authority, "not.a.jwt", ""), "well-formed");
        let wrong_type = format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aother&client_assertion={assertion}"
        );
        refused(
            &post(
                authority.addr(),
                "/token",
                &[("Content-Type", FORM)],
                &wrong_type,
            ),
            "client_assertion_type",
        );
    }
}
