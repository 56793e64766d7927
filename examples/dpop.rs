//! DPoP (RFC 9449): tokens bound to a key the service holds, so that a
//! leaked token is useless without it. About 1 s:
//!
//! ```sh
//! cargo run --example dpop
//! ```
//!
//! What it shows:
//!
//! - An embedded OAuth2 authority on 127.0.0.1 (the workspace's
//!   `local-authority` crate) that demands DPoP at its token endpoint and a
//!   nonce at its protected resource (`/resource`), and checks every proof
//!   for real: signature, method and URL, the token's hash, replays, the
//!   binding of the token to the key.
//! - DPoP turned on with one builder call, `.dpop(key)` on the token
//!   endpoint, with a key made for this run (`DpopKey::generate`; a service
//!   keeps its key with `DpopKey::load_or_create(path)`, a 0600 file). The
//!   manager's tokens come back with `token_type` `DPoP`, bound to the key's
//!   thumbprint.
//! - Resource requests made with a plain HTTP client (ureq) and
//!   `handle.authorization(method, url)`: `Authorization: DPoP <token>` and a
//!   new proof for each request. The resource's first answer is a nonce
//!   challenge (401, `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a
//!   `DPoP-Nonce`): the example hands the nonce to
//!   `handle.remember_dpop_nonce` and asks again; later requests carry it
//!   from the start. (The surf middleware, `middleware::BearerAuth`, does
//!   all of this itself.)
//! - A proof sent twice is refused: make one for every request.
//!
//! Token values, proofs and keys are secrets and are never printed; the
//! key's thumbprint is public.

use std::process::ExitCode;

use local_authority::LocalAuthority;
use tokenkeeper::oauth2::{ClientCredentials, DpopKey, TokenEndpoint};
use tokenkeeper::{Authorization, ClientId, ClientSecret, TokenManager};

/// One answer of the resource: its status, its `DPoP-Nonce` and its
/// challenge.
struct Answer {
    status: u16,
    nonce: Option<String>,
    challenge: String,
}

/// A GET of `url` with `headers`.
fn send(agent: &ureq::Agent, url: &str, headers: &Authorization) -> Answer {
    let request = agent
        .get(url)
        .header("Authorization", headers.authorization());
    let request = match headers.dpop() {
        Some(proof) => request.header("DPoP", proof),
        None => request,
    };
    let response = request.call().expect("the resource answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: response.status().as_u16(),
        nonce: header("dpop-nonce"),
        challenge: header("www-authenticate").unwrap_or_default(),
    }
}

fn main() -> ExitCode {
    let authority = LocalAuthority::start().expect("start the local authority");
    authority.require_dpop(true);
    authority.require_resource_dpop_nonce(true);

    let key = DpopKey::generate().expect("a new key");
    println!(
        "DPoP key: {}, thumbprint {}",
        key.algorithm(),
        key.thumbprint()
    );
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .dpop(key.clone()) // the one call that turns DPoP on
        .build()
        .expect("a loopback token URL");
    let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
    let driver = smol::spawn(driver);

    let token = smol::block_on(handle.token()).expect("a token");
    let bound = authority.access_token_jkt(token.access_token().secret());
    println!(
        "token: token_type {}, bound to the key: {}",
        token.token_type(),
        bound.as_deref() == Some(key.thumbprint())
    );

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = authority.resource_url();
    let mut challenges = 0;
    for n in 1..=3 {
        let headers = smol::block_on(handle.authorization("GET", &url)).expect("headers");
        let mut answer = send(&agent, &url, &headers);
        // A server may send a nonce with any answer; keep the latest.
        if let Some(nonce) = &answer.nonce {
            handle
                .remember_dpop_nonce(&url, nonce)
                .expect("an http URL");
        }
        if answer.status == 401 && answer.challenge.contains("use_dpop_nonce") {
            challenges += 1;
            print!("request {n}: 401 use_dpop_nonce; asked again with the nonce: ");
            let headers = smol::block_on(handle.authorization("GET", &url)).expect("headers");
            answer = send(&agent, &url, &headers);
        } else {
            print!("request {n}: ");
        }
        println!("{}", answer.status);
        if answer.status != 200 {
            eprintln!(
                "dpop: the resource refused: {:?}",
                authority.dpop_refusals()
            );
            return ExitCode::FAILURE;
        }
    }

    // Why a proof per request: the resource remembers each proof's jti.
    let headers = smol::block_on(handle.authorization("GET", &url)).expect("headers");
    let first = send(&agent, &url, &headers).status;
    let replayed = send(&agent, &url, &headers).status;
    println!("a proof sent twice: {first}, then {replayed}");

    let refusals = authority.dpop_refusals();
    let bad_proofs = refusals
        .iter()
        .filter(|r| !r.contains("use_dpop_nonce"))
        .count();
    println!("nonce challenges: {challenges}");
    println!("refused proofs: {bad_proofs} (the one sent twice)");
    println!("resource requests: {}", authority.resource_requests());
    smol::block_on(async {
        handle.shutdown().await;
        driver.await;
    });
    ExitCode::SUCCESS
}
