//! The surf middleware against a loopback resource server that rejects
//! revoked tokens.
#![cfg(all(feature = "surf", feature = "ureq"))]

use futures_lite::AsyncRead;
use local_authority::LocalAuthority;
use tokenkeeper::middleware::BearerAuth;
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{ClientId, ClientSecret, TokenHandle, TokenManager};

fn manager(authority: &LocalAuthority) -> TokenHandle {
    let endpoint = TokenEndpoint::builder(
        authority.token_url(),
        ClientId::new("client-a"),
        ClientSecret::new("secret-a"),
    )
    .build()
    .unwrap();
    let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
    smol::spawn(driver).detach();
    handle
}

fn client(handle: &TokenHandle) -> surf::Client {
    surf::Client::new().with(BearerAuth::new(handle.clone()))
}

#[test]
fn a_rejected_token_is_refreshed_once_and_the_request_retried_with_its_body() {
    let authority = LocalAuthority::start().unwrap();
    smol::block_on(async {
        let handle = manager(&authority);
        let client = client(&handle);
        let mut ok = client.get(authority.resource_url()).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.body_string().await.unwrap(), "ok: ");
        assert_eq!(authority.token_requests(), 1);

        let first = handle.current().unwrap();
        authority.revoke_access_token(first.access_token().secret());
        let mut retried = client
            .post(authority.resource_url())
            .body_string("hello".into())
            .await
            .unwrap();
        assert_eq!(retried.status(), 200);
        assert_eq!(
            retried.body_string().await.unwrap(),
            "ok: hello",
            "the body was sent again"
        );
        assert_eq!(authority.token_requests(), 2);
        assert_eq!(authority.resource_requests(), 3);
        assert_ne!(handle.current().unwrap(), first);
        // Both tries carried a bearer token: the old one, then the new one.
        let sent: Vec<String> = authority
            .requests()
            .iter()
            .filter(|r| r.path == "/resource")
            .map(|r| r.header("authorization").unwrap_or("").to_owned())
            .collect();
        assert_eq!(sent[1], format!("Bearer {}", first.access_token().secret()));
        assert_eq!(
            sent[2],
            format!(
                "Bearer {}",
                handle.current().unwrap().access_token().secret()
            )
        );
    });
}

#[test]
fn a_burst_of_rejections_costs_one_refresh() {
    let authority = LocalAuthority::start().unwrap();
    smol::block_on(async {
        let handle = manager(&authority);
        let client = client(&handle);
        let first = handle.token().await.unwrap();
        authority.revoke_access_token(first.access_token().secret());
        let requests = (0..20).map(|_| {
            let client = client.clone();
            let url = authority.resource_url();
            smol::spawn(async move { client.get(url).await.unwrap().status() })
        });
        let mut statuses = Vec::new();
        for r in requests.collect::<Vec<_>>() {
            statuses.push(r.await);
        }
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        assert_eq!(
            authority.token_requests(),
            2,
            "one refresh for the whole burst"
        );
    });
}

/// A body of unknown length, which cannot be sent twice.
struct Stream(Option<&'static [u8]>);

impl AsyncRead for Stream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let chunk = self.0.take().unwrap_or_default();
        buf[..chunk.len()].copy_from_slice(chunk);
        std::task::Poll::Ready(Ok(chunk.len()))
    }
}

#[test]
fn a_streamed_body_is_not_retried_but_the_token_is_replaced() {
    let authority = LocalAuthority::start().unwrap();
    smol::block_on(async {
        let handle = manager(&authority);
        let client = client(&handle);
        let first = handle.token().await.unwrap();
        authority.revoke_access_token(first.access_token().secret());
        let body = surf::Body::from_reader(
            futures_lite::io::BufReader::new(Stream(Some(b"data"))),
            None,
        );
        let response = client
            .post(authority.resource_url())
            .body(body)
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "no retry without a replayable body");
        assert_eq!(authority.resource_requests(), 1);
        // The next request goes out with the new token.
        assert_eq!(
            client.get(authority.resource_url()).await.unwrap().status(),
            200
        );
        assert_eq!(authority.token_requests(), 2);
    });
}

#[test]
fn other_failures_do_not_refresh() {
    let authority = LocalAuthority::start().unwrap();
    smol::block_on(async {
        let handle = manager(&authority);
        let client = client(&handle);
        handle.token().await.unwrap();
        let response = client
            .get(format!("http://{}/missing", authority.addr()))
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(authority.token_requests(), 1);
    });
}
