//! The token CLI with DPoP (issue 19): `--dpop-key-file PATH` binds the
//! printed token to a key kept in a private file, and `--dpop-proof METHOD
//! URL` prints, after the token, a proof that the local authority's
//! resource accepts from a script (curl's two headers).
#![cfg(all(feature = "ureq", feature = "jwt", unix))]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::dpop::resource_get;
use common::process::{assert_no_access_token, run, Finished, TempDir};
use common::token_example::{token_command, SECRET_ENV};
use local_authority::LocalAuthority;
use tokenkeeper::oauth2::DpopKey;

const RUN_LIMIT: Duration = Duration::from_secs(30);
const WHAT: &str = "the token example";

/// The CLI with `args` after the authority's client-a flags, the secret in
/// its environment.
fn token(authority: &LocalAuthority, args: &[&str]) -> Finished {
    let url = authority.token_url();
    let mut all = vec!["--token-url", url.as_str(), "--client-id", "client-a"];
    all.extend_from_slice(args);
    let mut cmd = token_command(&all);
    cmd.env(SECRET_ENV, "secret-a");
    run(cmd, WHAT, RUN_LIMIT)
}

fn key_path(dir: &TempDir) -> String {
    dir.path().join("dpop.pem").display().to_string()
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The thumbprint of the key in `path`.
fn thumbprint(path: &str) -> String {
    DpopKey::from_file(Path::new(path))
        .unwrap()
        .thumbprint()
        .to_owned()
}

#[test]
fn the_printed_token_and_proof_are_accepted_by_the_resource() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-dpop-proof");
    let key = key_path(&dir);
    let resource = format!("{}?page=2", authority.resource_url());
    let out = token(
        &authority,
        &["--dpop-key-file", &key, "--dpop-proof", "GET", &resource],
    );
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    assert_eq!(out.stderr, "");
    assert_no_access_token(&out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let [access_token, proof] = lines[..] else {
        panic!("two lines, the token then the proof: {:?}", out.stdout)
    };
    assert_eq!(
        authority.access_token_jkt(access_token).as_deref(),
        Some(thumbprint(&key).as_str()),
        "bound to the key in the file"
    );
    let claims = common::dpop::verify(proof).claims;
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["ath"], common::dpop::ath(access_token));

    let authorization = format!("DPoP {access_token}");
    let (status, _) = resource_get(&resource, &authorization, Some(proof));
    assert_eq!(status, 200, "{:?}", authority.dpop_refusals());
    assert_eq!(authority.dpop_refusals(), Vec::<String>::new());
    // A proof is good for one request: the resource refuses it again.
    let (status, _) = resource_get(&resource, &authorization, Some(proof));
    assert_eq!(status, 401);
}

#[test]
fn the_key_file_is_created_private_and_kept_across_runs() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-dpop-key");
    let key = key_path(&dir);
    let first = token(&authority, &["--dpop-key-file", &key]);
    assert!(first.status.success(), "{}", first.stderr);
    assert_eq!(first.stdout.lines().count(), 1, "the token alone");
    assert_eq!(mode(&key), 0o600);
    let jkt = thumbprint(&key);

    // Through a config file this time: the same key, so the same binding.
    let config = dir.path().join("token.toml");
    std::fs::write(&config, format!("dpop-key-file = {key:?}\n")).unwrap();
    let second = token(&authority, &["--config", config.to_str().unwrap()]);
    assert!(second.status.success(), "{}", second.stderr);
    assert_eq!(thumbprint(&key), jkt, "the file was not replaced");
    for out in [&first, &second] {
        let access_token = out.stdout.trim();
        assert_eq!(
            authority.access_token_jkt(access_token).as_deref(),
            Some(jkt.as_str())
        );
    }
    assert_ne!(first.stdout, second.stdout, "two token requests");
    assert_eq!(authority.dpop_refusals(), Vec::<String>::new());
}

#[test]
fn a_key_file_others_may_read_is_refused_before_any_request() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-dpop-open");
    let key = key_path(&dir);
    DpopKey::load_or_create(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = token(&authority, &["--dpop-key-file", &key]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "the reason, then the usage: {}", out.stderr);
    assert!(
        lines[0].starts_with("token: --dpop-key-file: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("group or others may read it"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("chmod 600"), "{}", lines[0]);
    assert_eq!(authority.token_requests(), 0);
}

#[test]
fn dpop_proof_usage_errors_name_the_flag_never_the_value() {
    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("cli-dpop-usage");
    let key = key_path(&dir);
    let url = authority.resource_url();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--dpop-proof", "GET", &url],
            "--dpop-proof needs --dpop-key-file PATH",
        ),
        (
            &[
                "--dpop-key-file",
                &key,
                "--dpop-proof",
                "GET",
                "not-a-url-s3cr3t",
            ],
            "--dpop-proof: URL must be an absolute http or https URL",
        ),
        (
            &["--dpop-key-file", &key, "--dpop-proof", "GET /x", &url],
            "--dpop-proof: METHOD is an HTTP method",
        ),
        (
            &[
                "--dpop-key-file",
                &key,
                "--dpop-proof",
                "GET",
                &url,
                "--watch",
                "5",
            ],
            "--dpop-proof goes with one printed token, not with --watch",
        ),
    ];
    for (args, message) in cases {
        let out = token(&authority, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
        assert_eq!(out.stdout, "");
    }
    assert_eq!(authority.token_requests(), 0);
    assert!(
        !Path::new(&key).exists(),
        "no key made for a bad command line"
    );
}

#[test]
fn help_describes_the_dpop_flags_and_the_output() {
    let out = run(token_command(&["--help"]), WHAT, RUN_LIMIT);
    assert!(out.status.success());
    for text in [
        "--dpop-key-file <PATH>",
        "--dpop-proof <METHOD> <URL>",
        "the token then the proof",
        "Authorization: DPoP $TOKEN",
    ] {
        assert!(out.stdout.contains(text), "{text}: {}", out.stdout);
    }
}
