//! The surf middleware with a DPoP-bound token (issue 19) against the
//! local authority's resource, which checks every proof for real
//! (signature, `htm`/`htu`, `ath`, `jti` replay, the binding, the nonce
//! when it demands one). Each test ends by asserting that the authority
//! refused nothing but nonce challenges: the client never sent a bad
//! proof, a bound token without its proof, or one as a Bearer token.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use local_authority::{LocalAuthority, RecordedRequest};
use surf::middleware::{Middleware, Next};
use surf::{Client, Request, Response};
use tokenkeeper::middleware::BearerAuth;
use tokenkeeper::oauth2::{ClientCredentials, DpopKey, TokenEndpoint};
use tokenkeeper::{ClientId, ClientSecret, TokenHandle, TokenManager};

fn bound_manager(authority: &LocalAuthority, key: &DpopKey) -> TokenHandle {
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .dpop(key.clone())
        .build()
        .unwrap();
    let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
    smol::spawn(driver).detach();
    handle
}

fn client(handle: &TokenHandle) -> surf::Client {
    surf::Client::new().with(BearerAuth::new(handle.clone()))
}

fn resource_requests(authority: &LocalAuthority) -> Vec<RecordedRequest> {
    authority
        .requests()
        .into_iter()
        .filter(|r| r.path.split('?').next() == Some("/resource"))
        .collect()
}

/// The claims of the proof `request` carried (the authority checked its
/// signature).
fn proof_claims(request: &RecordedRequest) -> serde_json::Value {
    let proof = request.header("dpop").expect("a DPoP proof");
    let claims = proof.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

/// The authority refused nothing but nonce challenges; how many of those.
fn nonce_challenges_only(authority: &LocalAuthority) -> usize {
    let refusals = authority.dpop_refusals();
    let other: Vec<&String> = refusals
        .iter()
        .filter(|r| !r.starts_with("resource: use_dpop_nonce:"))
        .collect();
    assert!(
        other.is_empty(),
        "the client sent a refused request: {other:?}"
    );
    refusals.len()
}

#[test]
fn a_bound_token_goes_with_a_proof_of_each_request() {
    let authority = LocalAuthority::start().unwrap();
    let key = DpopKey::generate().unwrap();
    smol::block_on(async {
        let handle = bound_manager(&authority, &key);
        let client = client(&handle);
        let mut got = client.get(authority.resource_url()).await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.body_string().await.unwrap(), "ok: ");
        let url = format!("{}?page=2", authority.resource_url());
        let mut posted = client.post(&url).body_string("hello".into()).await.unwrap();
        assert_eq!(posted.status(), 200);
        assert_eq!(posted.body_string().await.unwrap(), "ok: hello");

        let token = handle.current().unwrap();
        assert_eq!(token.token_type(), "DPoP");
        let secret = token.access_token().secret();
        assert_eq!(
            authority.access_token_jkt(secret).as_deref(),
            Some(key.thumbprint())
        );
        let sent = resource_requests(&authority);
        assert_eq!(sent.len(), 2, "no request was sent twice");
        for (request, method) in sent.iter().zip(["GET", "POST"]) {
            assert_eq!(
                request.header("authorization"),
                Some(format!("DPoP {secret}").as_str())
            );
            let claims = proof_claims(request);
            assert_eq!(claims["htm"], method);
            assert_eq!(claims["htu"], authority.resource_url(), "without the query");
            assert!(claims["ath"].is_string());
            assert!(claims.get("nonce").is_none(), "none was asked for");
        }
        assert_ne!(proof_claims(&sent[0])["jti"], proof_claims(&sent[1])["jti"]);
        assert_eq!(nonce_challenges_only(&authority), 0);
    });
}

#[test]
fn a_nonce_challenge_is_answered_once_and_the_nonce_kept_for_the_origin() {
    let authority = LocalAuthority::start().unwrap();
    authority.require_resource_dpop_nonce(true);
    let key = DpopKey::generate().unwrap();
    smol::block_on(async {
        let handle = bound_manager(&authority, &key);
        let client = client(&handle);
        let mut first = client
            .post(authority.resource_url())
            .body_string("hello".into())
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(
            first.body_string().await.unwrap(),
            "ok: hello",
            "the body was sent again"
        );
        assert_eq!(resource_requests(&authority).len(), 2);
        assert_eq!(nonce_challenges_only(&authority), 1);

        // The next requests carry the nonce from the start.
        for _ in 0..2 {
            assert_eq!(
                client.get(authority.resource_url()).await.unwrap().status(),
                200
            );
        }
        let sent = resource_requests(&authority);
        assert_eq!(sent.len(), 4);
        let nonce = authority.dpop_nonce();
        assert!(proof_claims(&sent[0]).get("nonce").is_none());
        for request in &sent[1..] {
            assert_eq!(proof_claims(request)["nonce"], nonce.as_str());
        }
        assert_eq!(nonce_challenges_only(&authority), 1);
        assert_eq!(
            authority.token_requests(),
            1,
            "a nonce challenge is no refresh"
        );
    });
}

/// Inner middleware: a resource server that moves to a new nonce and
/// announces it in its successful answers, as RFC 9449 §9 lets it.
struct RotatesOnSuccess {
    authority: Arc<LocalAuthority>,
}

#[surf::utils::async_trait]
impl Middleware for RotatesOnSuccess {
    async fn handle(
        &self,
        request: Request,
        client: Client,
        next: Next<'_>,
    ) -> surf::Result<Response> {
        let mut response = next.run(request, client).await?;
        if response.status() == 200 {
            response.insert_header("DPoP-Nonce", self.authority.rotate_dpop_nonce());
        }
        Ok(response)
    }
}

#[test]
fn a_new_nonce_in_a_success_is_kept_and_a_rotated_one_is_answered() {
    let authority = Arc::new(LocalAuthority::start().unwrap());
    authority.require_resource_dpop_nonce(true);
    let key = DpopKey::generate().unwrap();
    smol::block_on(async {
        let handle = bound_manager(&authority, &key);
        let plain = client(&handle);
        assert_eq!(
            plain.get(authority.resource_url()).await.unwrap().status(),
            200
        );
        assert_eq!(nonce_challenges_only(&authority), 1);

        // The server rotates behind the client's back: one more challenge.
        authority.rotate_dpop_nonce();
        assert_eq!(
            plain.get(authority.resource_url()).await.unwrap().status(),
            200
        );
        assert_eq!(nonce_challenges_only(&authority), 2);
        assert_eq!(resource_requests(&authority).len(), 4);

        // A server that rotates with every success and says so: the client
        // follows without a challenge.
        let rotating = surf::Client::new()
            .with(BearerAuth::new(handle.clone()))
            .with(RotatesOnSuccess {
                authority: authority.clone(),
            });
        for _ in 0..3 {
            assert_eq!(
                rotating
                    .get(authority.resource_url())
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        assert_eq!(resource_requests(&authority).len(), 7);
        assert_eq!(nonce_challenges_only(&authority), 2);
    });
}

#[test]
fn a_revoked_bound_token_is_replaced_and_the_request_sent_again() {
    let authority = LocalAuthority::start().unwrap();
    authority.require_resource_dpop_nonce(true);
    let key = DpopKey::generate().unwrap();
    smol::block_on(async {
        let handle = bound_manager(&authority, &key);
        let client = client(&handle);
        let first = handle.token().await.unwrap();
        assert_eq!(
            client.get(authority.resource_url()).await.unwrap().status(),
            200
        );
        authority.revoke_access_token(first.access_token().secret());

        let mut retried = client
            .post(authority.resource_url())
            .body_string("again".into())
            .await
            .unwrap();
        assert_eq!(retried.status(), 200);
        assert_eq!(retried.body_string().await.unwrap(), "ok: again");
        assert_eq!(authority.token_requests(), 2);
        let fresh = handle.current().unwrap();
        assert_ne!(fresh, first);
        assert_eq!(
            authority
                .access_token_jkt(fresh.access_token().secret())
                .as_deref(),
            Some(key.thumbprint()),
            "the new token is bound to the same key"
        );
        let sent = resource_requests(&authority);
        let last = sent.last().unwrap();
        assert_eq!(
            last.header("authorization"),
            Some(format!("DPoP {}", fresh.access_token().secret()).as_str())
        );
        assert_eq!(nonce_challenges_only(&authority), 1);
    });
}

#[test]
fn a_bearer_token_is_sent_as_before() {
    let authority = LocalAuthority::start().unwrap();
    smol::block_on(async {
        let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
            .client_secret(ClientSecret::new("secret-a"))
            .build()
            .unwrap();
        let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
        smol::spawn(driver).detach();
        assert_eq!(
            client(&handle)
                .get(authority.resource_url())
                .await
                .unwrap()
                .status(),
            200
        );
        let sent = resource_requests(&authority);
        let token = handle.current().unwrap();
        assert_eq!(
            sent[0].header("authorization"),
            Some(format!("Bearer {}", token.access_token().secret()).as_str())
        );
        assert_eq!(sent[0].header("dpop"), None);
    });
}
