//! DPoP (RFC 9449) at the local authority: proofs crafted here with ring,
//! each flaw refused and recorded, good proofs accepted, nonces, and the
//! binding of access and refresh tokens.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use local_authority::LocalAuthority;
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};

const PASSWORD: &str = "grant_type=password&username=u&password=p";

/// Claims of a proof for `htm` `htu`, with a new `jti`.
fn claims(htm: &str, htu: &str) -> Value {
    json!({
        "jti": format!("{:032x}", fastrand::u128(..)),
        "htm": htm,
        "htu": htu,
        "iat": now(),
    })
}

/// The header of a proof signed by `key`.
fn header(key: &TestKey) -> Value {
    json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.jwk()})
}

/// A proof signed by `key` with `claims`.
fn proof(key: &TestKey, claims: &Value) -> String {
    key.sign_with(&header(key), claims)
}

/// A good proof for the token endpoint.
fn token_proof(authority: &LocalAuthority, key: &TestKey) -> String {
    proof(key, &claims("POST", &authority.token_url()))
}

/// A good proof for a GET of the resource with `token`.
fn resource_proof(authority: &LocalAuthority, key: &TestKey, token: &str) -> String {
    let mut claims = claims("GET", &authority.resource_url());
    claims["ath"] = json!(ath(token));
    proof(key, &claims)
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()))
}

/// The RFC 7638 thumbprint of `key`, computed here on its own.
fn jkt(key: &TestKey) -> String {
    let jwk = key.jwk();
    let member = |name: &str| jwk[name].as_str().unwrap().to_owned();
    let canonical = match key {
        TestKey::Es256(_) => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            member("x"),
            member("y")
        ),
        TestKey::Ed25519(_) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, member("x")),
        TestKey::Rs256(_) => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            member("e"),
            member("n")
        ),
    };
    URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
}

fn host(authority: &LocalAuthority) -> String {
    authority.addr().to_string()
}

/// A `/token` request as `client-a` (`client_secret_post`) with `params`
/// and a `DPoP` header per proof.
fn token_request(authority: &LocalAuthority, proofs: &[&str], params: &str) -> Response {
    let body = format!("client_id=client-a&client_secret=secret-a&{params}");
    raw_token_request(authority, proofs, &body)
}

/// A `/token` request with `body` as it is.
fn raw_token_request(authority: &LocalAuthority, proofs: &[&str], body: &str) -> Response {
    let host = host(authority);
    let mut headers = vec![("Host", host.as_str()), ("Content-Type", FORM)];
    headers.extend(proofs.iter().map(|p| ("DPoP", *p)));
    post(authority.addr(), "/token", &headers, body)
}

/// A `GET /resource` with `authorization` and a `DPoP` header per proof.
fn resource_request(authority: &LocalAuthority, authorization: &str, proofs: &[&str]) -> Response {
    let host = host(authority);
    let mut headers = vec![("Host", host.as_str()), ("Authorization", authorization)];
    headers.extend(proofs.iter().map(|p| ("DPoP", *p)));
    send(authority.addr(), "GET", "/resource", &headers, "")
}

fn body(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// Asserts a 200 with a DPoP-bound access token, and returns the response.
fn bound(response: Response) -> Value {
    assert_eq!(response.status, 200, "{}", body(&response));
    let json = response.json();
    assert_eq!(json["token_type"], "DPoP", "{json}");
    json
}

/// Asserts that `response` is a 400 `code` and that the last refusal
/// recorded names `code` and says `why`.
fn refused_at_token(authority: &LocalAuthority, response: &Response, code: &str, why: &str) {
    assert_eq!(response.status, 400, "{}", body(response));
    assert_eq!(response.error(), code, "{}", body(response));
    let last = authority
        .dpop_refusals()
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(last.starts_with(&format!("token: {code}: ")), "{last}");
    assert!(last.contains(why), "{why:?} not in {last:?}");
}

/// Asserts that `response` is a 401 whose DPoP challenge names `code`, and
/// that the last refusal recorded names `code` and says `why`.
fn refused_at_resource(authority: &LocalAuthority, response: &Response, code: &str, why: &str) {
    assert_eq!(response.status, 401, "{}", body(response));
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(
        challenge.contains(&format!(r#"error="{code}""#)),
        "{challenge}"
    );
    let last = authority
        .dpop_refusals()
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(last.starts_with(&format!("resource: {code}: ")), "{last}");
    assert!(last.contains(why), "{why:?} not in {last:?}");
}

#[test]
fn a_good_proof_gets_a_token_bound_to_its_key_for_each_algorithm() {
    let authority = LocalAuthority::start().unwrap();
    for key in [TestKey::es256(), TestKey::ed25519(), TestKey::rs256()] {
        let json = bound(token_request(
            &authority,
            &[&token_proof(&authority, &key)],
            "grant_type=client_credentials",
        ));
        let token = json["access_token"].as_str().unwrap();
        assert_eq!(authority.access_token_jkt(token), Some(jkt(&key)));
        let ok = resource_request(
            &authority,
            &format!("DPoP {token}"),
            &[&resource_proof(&authority, &key, token)],
        );
        assert_eq!(ok.status, 200, "{}: {}", key.alg(), body(&ok));
    }
    assert_eq!(authority.dpop_refusals(), Vec::<String>::new());
    // Without a proof the token is a Bearer one, as before.
    let plain = token_request(&authority, &[], "grant_type=client_credentials");
    assert_eq!(plain.json()["token_type"], "Bearer");
    let token = plain.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(authority.access_token_jkt(&token), None);
    assert_eq!(
        authority.metadata()["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "RS256", "PS256"])
    );
}

#[test]
fn htu_ignores_the_query_and_the_fragment() {
    let authority = LocalAuthority::start().unwrap();
    let key = TestKey::es256();
    let htu = format!("{}?x=1#frag", authority.token_url());
    bound(token_request(
        &authority,
        &[&proof(&key, &claims("POST", &htu))],
        "grant_type=client_credentials",
    ));
}

#[test]
fn each_flaw_of_a_token_proof_is_refused_and_recorded() {
    let authority = LocalAuthority::start().unwrap();
    let key = TestKey::es256();
    let other = TestKey::ed25519();
    let url = authority.token_url();
    let with_claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims("POST", &url);
        change(&mut claims);
        proof(&key, &claims)
    };
    let with_header = |change: &dyn Fn(&mut Value)| {
        let mut header = header(&key);
        change(&mut header);
        key.sign_with(&header, &claims("POST", &url))
    };
    let hs256 = jwt(
        &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
        &claims("POST", &url),
        |input| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
            ring::hmac::sign(&key, input).as_ref().to_vec()
        },
    );
    let unsigned = {
        let signed = with_header(&|h| h["alg"] = json!("none"));
        format!("{}.", &signed[..signed.rfind('.').unwrap()])
    };
    let mut private_jwk = key.jwk();
    private_jwk["d"] = json!("AAAA");
    let replayed = token_proof(&authority, &key);
    bound(token_request(
        &authority,
        &[&replayed],
        "grant_type=client_credentials",
    ));
    let issued = authority.tokens_issued();

    let cases: Vec<(String, &str)> = vec![
        ("not-a-jwt".to_owned(), "not a compact JWS"),
        ("a.b.c".to_owned(), "not a well-formed JWT"),
        (with_header(&|h| h["typ"] = json!("JWT")), "typ"),
        (
            with_header(&|h| drop(h.as_object_mut().unwrap().remove("typ"))),
            "typ",
        ),
        (unsigned, "alg \"none\""),
        (hs256, "alg \"HS256\""),
        (
            with_header(&|h| drop(h.as_object_mut().unwrap().remove("jwk"))),
            "no jwk",
        ),
        (
            with_header(&|h| h["jwk"] = private_jwk.clone()),
            "private key",
        ),
        (with_header(&|h| h["jwk"] = other.jwk()), "signature"),
        (with_header(&|h| h["alg"] = json!("RS256")), "signature"),
        (
            with_claims(&|c| drop(c.as_object_mut().unwrap().remove("jti"))),
            "no jti",
        ),
        (with_claims(&|c| c["htm"] = json!("GET")), "htm"),
        (
            with_claims(&|c| drop(c.as_object_mut().unwrap().remove("htm"))),
            "no htm",
        ),
        (
            with_claims(&|c| c["htu"] = json!(authority.resource_url())),
            "htu",
        ),
        (
            with_claims(&|c| c["htu"] = json!(url.replace("http:", "https:"))),
            "htu",
        ),
        (
            with_claims(&|c| drop(c.as_object_mut().unwrap().remove("htu"))),
            "no htu",
        ),
        (with_claims(&|c| c["iat"] = json!(now() - 120)), "iat"),
        (with_claims(&|c| c["iat"] = json!(now() + 120)), "iat"),
        (with_claims(&|c| c["iat"] = json!("now")), "no iat"),
        (replayed, "replay"),
    ];
    for (proof, why) in &cases {
        let response = token_request(&authority, &[proof], "grant_type=client_credentials");
        refused_at_token(&authority, &response, "invalid_dpop_proof", why);
    }
    let good = token_proof(&authority, &key);
    let twice = token_request(&authority, &[&good, &good], "grant_type=client_credentials");
    refused_at_token(&authority, &twice, "invalid_dpop_proof", "more than one");
    assert_eq!(authority.tokens_issued(), issued);
    assert_eq!(authority.dpop_refusals().len(), cases.len() + 1);
    // A refused proof's jti is not used up.
    bound(token_request(
        &authority,
        &[&good],
        "grant_type=client_credentials",
    ));
}

#[test]
fn the_nonce_is_demanded_then_accepted_and_rotates() {
    let authority = LocalAuthority::start().unwrap();
    authority.require_dpop_nonce(true);
    let key = TestKey::es256();
    let first = token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        "grant_type=client_credentials",
    );
    refused_at_token(&authority, &first, "use_dpop_nonce", "no nonce");
    let nonce = first.header("dpop-nonce").unwrap().to_owned();
    assert_eq!(nonce, authority.dpop_nonce());

    let with_nonce = |nonce: &str| {
        let mut claims = claims("POST", &authority.token_url());
        claims["nonce"] = json!(nonce);
        proof(&key, &claims)
    };
    let ok = token_request(
        &authority,
        &[&with_nonce(&nonce)],
        "grant_type=client_credentials",
    );
    assert_eq!(ok.header("dpop-nonce"), Some(nonce.as_str()));
    bound(ok);

    let rotated = authority.rotate_dpop_nonce();
    assert_ne!(rotated, nonce);
    let stale = token_request(
        &authority,
        &[&with_nonce(&nonce)],
        "grant_type=client_credentials",
    );
    refused_at_token(&authority, &stale, "use_dpop_nonce", "not the current one");
    assert_eq!(stale.header("dpop-nonce"), Some(rotated.as_str()));
    bound(token_request(
        &authority,
        &[&with_nonce(&rotated)],
        "grant_type=client_credentials",
    ));
    // Any answer carries the nonce, a request without a proof too.
    let plain = token_request(&authority, &[], "grant_type=client_credentials");
    assert_eq!(plain.header("dpop-nonce"), Some(rotated.as_str()));

    authority.require_dpop_nonce(false);
    let off = token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        "grant_type=client_credentials",
    );
    assert_eq!(off.header("dpop-nonce"), None);
    bound(off);
}

#[test]
fn require_dpop_refuses_a_request_without_a_proof() {
    let authority = LocalAuthority::start().unwrap();
    authority.require_dpop(true);
    let response = token_request(&authority, &[], "grant_type=client_credentials");
    refused_at_token(&authority, &response, "invalid_dpop_proof", "required");
    assert_eq!(authority.tokens_issued(), 0);
    let key = TestKey::es256();
    bound(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        "grant_type=client_credentials",
    ));
}

#[test]
fn a_downgrade_answers_bearer_and_binds_nothing() {
    let authority = LocalAuthority::start().unwrap();
    authority.set_dpop_downgrade(true);
    let key = TestKey::es256();
    let response = token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        "grant_type=client_credentials",
    );
    assert_eq!(response.status, 200, "{}", body(&response));
    assert_eq!(response.json()["token_type"], "Bearer");
    let token = response.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(authority.access_token_jkt(&token), None);
    let ok = resource_request(&authority, &format!("Bearer {token}"), &[]);
    assert_eq!(ok.status, 200);
}

#[test]
fn every_grant_binds_its_token() {
    let authority = LocalAuthority::start().unwrap();
    let key = TestKey::es256();
    let check = |response: Response| {
        let json = bound(response);
        let token = json["access_token"].as_str().unwrap().to_owned();
        assert_eq!(authority.access_token_jkt(&token), Some(jkt(&key)));
        token
    };
    let subject = check(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        "grant_type=client_credentials",
    ));
    check(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        PASSWORD,
    ));
    let refresh = authority.issue_refresh_token("client-a");
    check(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    ));

    let issuer_key = TestKey::es256();
    authority.add_client_key("https://issuer.example", &issuer_key.jwk().to_string());
    let assertion = issuer_key.sign(
        "ES256",
        &json!({
            "iss": "https://issuer.example", "sub": "user-1", "aud": authority.token_url(),
            "exp": now() + 60, "jti": format!("{:x}", fastrand::u128(..)),
        }),
    );
    check(raw_token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        &format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"),
    ));

    check(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        &format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token={subject}\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
        ),
    ));
    assert_eq!(authority.dpop_refusals(), Vec::<String>::new());
}

#[test]
fn a_refresh_token_issued_under_dpop_needs_its_key() {
    let authority = LocalAuthority::start().unwrap();
    let key = TestKey::es256();
    let json = bound(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        PASSWORD,
    ));
    let refresh = json["refresh_token"].as_str().unwrap().to_owned();
    let params = format!("grant_type=refresh_token&refresh_token={refresh}");

    let other = TestKey::ed25519();
    let wrong_key = token_request(&authority, &[&token_proof(&authority, &other)], &params);
    refused_at_token(&authority, &wrong_key, "invalid_grant", "another DPoP key");
    let no_proof = token_request(&authority, &[], &params);
    refused_at_token(&authority, &no_proof, "invalid_grant", "proof with its key");

    // With its key, and the rotated one is bound too.
    let json = bound(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        &params,
    ));
    let rotated = json["refresh_token"].as_str().unwrap().to_owned();
    let params = format!("grant_type=refresh_token&refresh_token={rotated}");
    let wrong_key = token_request(&authority, &[&token_proof(&authority, &other)], &params);
    refused_at_token(&authority, &wrong_key, "invalid_grant", "another DPoP key");
    bound(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        &params,
    ));

    // One issued without DPoP is not bound.
    let plain = token_request(&authority, &[], PASSWORD);
    let refresh = plain.json()["refresh_token"].as_str().unwrap().to_owned();
    let again = token_request(
        &authority,
        &[],
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    );
    assert_eq!(again.status, 200, "{}", body(&again));
    assert_eq!(again.json()["token_type"], "Bearer");
}

#[test]
fn the_resource_refuses_a_bound_token_without_its_proof() {
    let authority = LocalAuthority::start().unwrap();
    let key = TestKey::es256();
    let json = bound(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        "grant_type=client_credentials",
    ));
    let token = json["access_token"].as_str().unwrap().to_owned();
    let dpop = format!("DPoP {token}");
    let good = resource_proof(&authority, &key, &token);
    let with_claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims("GET", &authority.resource_url());
        claims["ath"] = json!(ath(&token));
        change(&mut claims);
        proof(&key, &claims)
    };

    let as_bearer = resource_request(&authority, &format!("Bearer {token}"), &[&good]);
    refused_at_resource(&authority, &as_bearer, "invalid_token", "as a Bearer token");
    let no_proof = resource_request(&authority, &dpop, &[]);
    refused_at_resource(&authority, &no_proof, "invalid_dpop_proof", "no DPoP proof");
    let twice = resource_request(&authority, &dpop, &[&good, &good]);
    refused_at_resource(&authority, &twice, "invalid_dpop_proof", "more than one");
    let cases: Vec<(String, &str)> = vec![
        (with_claims(&|c| c["htm"] = json!("POST")), "htm"),
        (
            with_claims(&|c| c["htu"] = json!(authority.token_url())),
            "htu",
        ),
        (
            with_claims(&|c| drop(c.as_object_mut().unwrap().remove("ath"))),
            "no ath",
        ),
        (
            with_claims(&|c| c["ath"] = json!(ath("another token"))),
            "ath",
        ),
        (
            resource_proof(&authority, &TestKey::ed25519(), &token),
            "the access token is bound to",
        ),
        (with_claims(&|c| c["iat"] = json!(now() - 3600)), "iat"),
    ];
    for (proof, why) in &cases {
        let response = resource_request(&authority, &dpop, &[proof]);
        refused_at_resource(&authority, &response, "invalid_dpop_proof", why);
    }
    assert_eq!(authority.dpop_refusals().len(), cases.len() + 3);

    let ok = resource_request(&authority, &dpop, &[&good]);
    assert_eq!(ok.status, 200, "{}", body(&ok));
    let replayed = resource_request(&authority, &dpop, &[&good]);
    refused_at_resource(&authority, &replayed, "invalid_dpop_proof", "replay");

    // An unbound token may not pretend to be bound.
    let plain = token_request(&authority, &[], "grant_type=client_credentials");
    let plain = plain.json()["access_token"].as_str().unwrap().to_owned();
    let pretend = resource_request(
        &authority,
        &format!("DPoP {plain}"),
        &[&resource_proof(&authority, &key, &plain)],
    );
    refused_at_resource(&authority, &pretend, "invalid_token", "not DPoP-bound");
    assert_eq!(
        resource_request(&authority, &format!("Bearer {plain}"), &[]).status,
        200
    );

    // A revoked bound token is invalid whatever the proof.
    authority.revoke_access_token(&token);
    let revoked = resource_request(
        &authority,
        &dpop,
        &[&resource_proof(&authority, &key, &token)],
    );
    assert_eq!(revoked.status, 401);
    assert!(revoked
        .header("www-authenticate")
        .unwrap()
        .contains(r#"error="invalid_token""#));
}

#[test]
fn the_resource_demands_its_nonce_when_told_to() {
    let authority = LocalAuthority::start().unwrap();
    let key = TestKey::ed25519();
    let json = bound(token_request(
        &authority,
        &[&token_proof(&authority, &key)],
        "grant_type=client_credentials",
    ));
    let token = json["access_token"].as_str().unwrap().to_owned();
    let dpop = format!("DPoP {token}");
    authority.require_resource_dpop_nonce(true);

    let first = resource_request(
        &authority,
        &dpop,
        &[&resource_proof(&authority, &key, &token)],
    );
    refused_at_resource(&authority, &first, "use_dpop_nonce", "no nonce");
    let nonce = first.header("dpop-nonce").unwrap().to_owned();
    assert_eq!(nonce, authority.dpop_nonce());

    let mut claims = claims("GET", &authority.resource_url());
    claims["ath"] = json!(ath(&token));
    claims["nonce"] = json!(nonce);
    let ok = resource_request(&authority, &dpop, &[&proof(&key, &claims)]);
    assert_eq!(ok.status, 200, "{}", body(&ok));
    assert_eq!(ok.header("dpop-nonce"), Some(nonce.as_str()));

    authority.rotate_dpop_nonce();
    claims["jti"] = json!("another");
    let stale = resource_request(&authority, &dpop, &[&proof(&key, &claims)]);
    refused_at_resource(&authority, &stale, "use_dpop_nonce", "not the current one");
    assert_eq!(
        stale.header("dpop-nonce").map(str::to_owned),
        Some(authority.dpop_nonce())
    );
}
