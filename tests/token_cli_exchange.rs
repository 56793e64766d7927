//! The token CLI's token exchange (`--grant token-exchange
//! --subject-token-file PATH`) and discovery (`--issuer URL`), issue 17:
//! the built example run against the in-process authority, one-shot and
//! with `--watch` and `--cache-file`.
#![cfg(all(feature = "ureq", feature = "jwt"))]

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::process::{assert_no_access_token, run, Finished, TempDir};
use common::token_example::{token_command, SECRET_ENV};
use local_authority::{Fault, LocalAuthority};
use serde_json::{json, Value};
use tokenkeeper::oauth2::{token_type, PrivateKey};

const RUN_LIMIT: Duration = Duration::from_secs(30);
const WHAT: &str = "the token example";
const CLIENT: &str = "client-a";
const SECRET: &str = "secret-a";
/// A workload's identity token, as a platform writes it.
const SUBJECT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3b3JrbG9hZCJ9.c3ViamVjdC1zaWduYXR1cmU";

fn token(args: &[&str], secret: bool) -> Finished {
    let mut cmd = token_command(args);
    if secret {
        cmd.env(SECRET_ENV, SECRET);
    }
    run(cmd, WHAT, RUN_LIMIT)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `--watch` output as JSON objects.
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The subject token file, holding `SUBJECT`, registered with the authority.
fn subject_file(authority: &LocalAuthority, dir: &TempDir) -> String {
    authority.add_subject_token(SUBJECT, token_type::JWT);
    let path = dir.path().join("subject.jwt");
    std::fs::write(&path, format!("{SUBJECT}\n")).unwrap();
    path.display().to_string()
}

#[test]
fn token_exchange_of_a_subject_token_file_without_client_authentication() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-exchange");
    let file = subject_file(&authority, &dir);
    let url = authority.token_url();
    let out = token(
        &[
            "--token-url",
            &url,
            "--auth",
            "none",
            "--grant",
            "token-exchange",
            "--subject-token-file",
            &file,
            "--requested-token-type",
            token_type::ACCESS_TOKEN,
            "--audience",
            "//iam.example/pools/p",
            "--audience",
            "https://api.example",
            "--resource",
            "https://api.example/v1",
            "--scope",
            "cloud-platform",
        ],
        false,
    );
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert_eq!(out.stderr, "");
    assert!(authority.is_valid_access_token(out.stdout.trim()));
    let exchange = authority.exchanges().pop().unwrap();
    assert_eq!(exchange.client_id, "");
    assert_eq!(exchange.subject_token, SUBJECT);
    assert_eq!(exchange.subject_token_type, token_type::JWT);
    assert_eq!(
        exchange.requested_token_type.as_deref(),
        Some(token_type::ACCESS_TOKEN)
    );
    assert_eq!(
        exchange.audiences,
        ["//iam.example/pools/p", "https://api.example"]
    );
    assert_eq!(exchange.resources, ["https://api.example/v1"]);
    assert_eq!(exchange.scope.as_deref(), Some("cloud-platform"));
    let request = authority.requests().pop().unwrap();
    assert_eq!(request.param("client_id"), None);
    assert_eq!(request.header("authorization"), None);
}

#[test]
fn token_exchange_with_a_client_secret_watches_and_shares_a_cache_file() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-exchange-cache");
    let file = subject_file(&authority, &dir);
    let cache = dir.path().join("cache.json").display().to_string();
    let url = authority.token_url();
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "--token-url".to_owned(),
            url.clone(),
            "--client-id".into(),
            CLIENT.into(),
            "--grant".into(),
            "token-exchange".into(),
            "--subject-token-file".into(),
            file.clone(),
            "--subject-token-type".into(),
            token_type::ID_TOKEN.into(),
            "--cache-file".into(),
            cache.clone(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    // The authority holds the subject as a JWT: an ID token is refused.
    let out = token(&strs(&args(&[])), true);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("invalid_request"), "{}", out.stderr);
    assert!(!out.stderr.contains(SUBJECT), "{}", out.stderr);

    authority.add_subject_token(SUBJECT, token_type::ID_TOKEN);
    let first = token(&strs(&args(&[])), true);
    assert!(first.status.success(), "{}", first.stderr);
    assert_eq!(authority.exchanges().len(), 1);
    // A second run reads the cached token: no new exchange.
    let second = token(&strs(&args(&[])), true);
    assert!(second.status.success(), "{}", second.stderr);
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(authority.exchanges().len(), 1);

    // --watch: events, never a token value.
    authority.set_expires_in(Some(json!(2)));
    std::fs::remove_file(&cache).unwrap();
    let out = token(&strs(&args(&["--watch", "2"])), true);
    assert!(out.status.success(), "{}", out.stderr);
    let events = events(&out.stdout);
    assert!(
        !events.is_empty() && events.iter().all(|e| e["event"] == "token"),
        "{}",
        out.stdout
    );
    assert_no_access_token(&out.stdout);
    assert!(!out.stdout.contains(SUBJECT) && !out.stderr.contains(SUBJECT));
    assert!(authority.exchanges().len() >= 2);
}

#[test]
fn a_missing_subject_token_file_is_a_transient_failure_naming_the_path() {
    let authority = LocalAuthority::start().unwrap();
    let url = authority.token_url();
    let out = token(
        &[
            "--token-url",
            &url,
            "--client-id",
            CLIENT,
            "--grant",
            "token-exchange",
            "--subject-token-file",
            "/nonexistent/subject.jwt",
        ],
        true,
    );
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("subject token file /nonexistent/subject.jwt"),
        "{}",
        out.stderr
    );
    assert_eq!(authority.token_requests(), 0);
}

#[test]
fn exchange_and_issuer_flags_that_cannot_work_are_bad_usage() {
    let authority = LocalAuthority::start().unwrap();
    let url = authority.token_url();
    let issuer = authority.issuer();
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "--token-url",
                &url,
                "--client-id",
                CLIENT,
                "--grant",
                "token-exchange",
            ],
            "--grant token-exchange needs --subject-token-file",
        ),
        (
            &[
                "--token-url",
                &url,
                "--client-id",
                CLIENT,
                "--subject-token-file",
                "/x",
            ],
            "go with --grant token-exchange",
        ),
        (
            &[
                "--token-url",
                &url,
                "--client-id",
                CLIENT,
                "--grant",
                "password",
            ],
            "--grant takes client-credentials or token-exchange",
        ),
        (
            &[
                "--token-url",
                &url,
                "--issuer",
                &issuer,
                "--client-id",
                CLIENT,
            ],
            "give one",
        ),
        (
            &[
                "--token-url",
                &url,
                "--client-id",
                CLIENT,
                "--audience",
                "a",
                "--audience",
                "b",
            ],
            "--audience is given twice",
        ),
        (
            &["--issuer", "http://10.0.0.1", "--client-id", CLIENT],
            "--issuer must be an https URL",
        ),
        (&["--token-url", &url], "--client-id is required"),
    ];
    for (args, message) in cases {
        let out = token(args, true);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "");
    }
    assert!(
        authority.requests().is_empty(),
        "{:?}",
        authority.requests()
    );
}

#[test]
fn an_issuer_is_discovered_once_then_tokens_come_from_its_endpoint() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_issuer_path("/tenant-a");
    let issuer = authority.issuer();
    let out = token(&["--issuer", &issuer, "--client-id", CLIENT], true);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    assert!(authority.is_valid_access_token(out.stdout.trim()));
    let paths: Vec<String> = authority.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/.well-known/oauth-authorization-server/tenant-a", "/token"]
    );

    // With --watch and a cache file: one discovery for the whole run.
    let dir = TempDir::new("cli-issuer-watch");
    let cache = dir.path().join("cache.json").display().to_string();
    authority.set_expires_in(Some(json!(2)));
    let before = authority.metadata_requests();
    let out = token(
        &[
            "--issuer",
            &issuer,
            "--client-id",
            CLIENT,
            "--watch",
            "2",
            "--cache-file",
            &cache,
        ],
        true,
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(events(&out.stdout).len() >= 2, "{}", out.stdout);
    assert_eq!(authority.metadata_requests(), before + 1);
}

#[test]
fn with_an_issuer_a_private_key_signs_for_the_issuer() {
    let authority = LocalAuthority::start().unwrap();
    let key_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/test-es256.pem");
    let key = PrivateKey::from_file(key_file).unwrap();
    authority.add_client_key("svc", &key.public_jwk());
    let issuer = authority.issuer();
    let out = token(
        &[
            "--issuer",
            &issuer,
            "--client-id",
            "svc",
            "--private-key-file",
            key_file,
        ],
        false,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let assertion = authority
        .requests()
        .pop()
        .unwrap()
        .param("client_assertion")
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(assertion.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], issuer.as_str());
}

#[test]
fn metadata_that_does_not_fit_is_refused_before_any_token_request() {
    let authority = LocalAuthority::start().unwrap();
    let issuer = authority.issuer();
    // A method the authority does not list: bad usage.
    let mut document = authority.metadata();
    document["token_endpoint_auth_methods_supported"] = json!(["private_key_jwt"]);
    authority.set_metadata(Some(document));
    let out = token(&["--issuer", &issuer, "--client-id", CLIENT], true);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("does not support client authentication client_secret_basic"),
        "{}",
        out.stderr
    );

    // Metadata for another issuer, or none: refused.
    let mut document = authority.metadata();
    document["issuer"] = json!("https://evil.example");
    document["token_endpoint"] = json!("https://evil.example/token");
    authority.set_metadata(Some(document));
    let out = token(&["--issuer", &issuer, "--client-id", CLIENT], true);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("names another issuer"),
        "{}",
        out.stderr
    );
    authority.set_metadata(None);
    authority.serve_metadata(false, false);
    let out = token(&["--issuer", &issuer, "--client-id", CLIENT], true);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("no authorization server metadata"),
        "{}",
        out.stderr
    );
    assert_eq!(authority.token_requests(), 0);
}

#[test]
fn discovery_failures_that_may_pass_are_retried_then_given_up() {
    let authority = LocalAuthority::start().unwrap();
    let issuer = authority.issuer();
    authority.push_metadata_fault(Fault::oauth_error(503, "temporarily_unavailable", ""));
    let out = token(&["--issuer", &issuer, "--client-id", CLIENT], true);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(authority.is_valid_access_token(out.stdout.trim()));
    assert_eq!(authority.metadata_requests(), 2);
    assert!(
        out.stderr.contains("token: warning: discovery of"),
        "{}",
        out.stderr
    );

    for _ in 0..3 {
        authority.push_metadata_fault(Fault::oauth_error(503, "temporarily_unavailable", ""));
    }
    let out = token(&["--issuer", &issuer, "--client-id", CLIENT], true);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("no metadata after 3 attempts"),
        "{}",
        out.stderr
    );
    assert_eq!(authority.metadata_requests(), 5);
}
