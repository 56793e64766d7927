//! The surf middleware against a loopback resource server that rejects
//! revoked tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::AsyncRead;
use local_authority::LocalAuthority;
use surf::http::headers::{AUTHORIZATION, WWW_AUTHENTICATE};
use surf::middleware::{Middleware, Next};
use surf::{Client, Request, Response};
use tokenkeeper::middleware::{BearerAuth, MAX_REPLAY};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{ClientId, ClientSecret, TokenHandle, TokenManager};

fn manager(authority: &LocalAuthority) -> TokenHandle {
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
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

/// Inner middleware that makes a burst of rejections a real one: it holds
/// the first try of each request that carries `old` until `BURST` of them
/// are in flight together, and then hands the first 401 back at once and
/// the others only once the manager has published a token other than
/// `old`: their reports of `old` come late, after the replacement.
struct Burst {
    handle: TokenHandle,
    old: String,
    arrived: AtomicUsize,
    together: smol::lock::Barrier,
}

const BURST: usize = 20;

#[surf::utils::async_trait]
impl Middleware for Burst {
    async fn handle(
        &self,
        request: Request,
        client: Client,
        next: Next<'_>,
    ) -> surf::Result<Response> {
        let sent = request.header(AUTHORIZATION).map(|v| v.as_str().to_owned());
        if sent.as_deref() != Some(self.old.as_str()) {
            return next.run(request, client).await;
        }
        let n = self.arrived.fetch_add(1, Ordering::SeqCst);
        within("the burst to form", self.together.wait()).await;
        let response = next.run(request, client).await?;
        if n > 0 {
            within("a new token", async {
                let mut tokens = self.handle.subscribe();
                while let Some(t) = tokens.next().await {
                    if format!("Bearer {}", t.access_token().secret()) != self.old {
                        return;
                    }
                }
            })
            .await;
        }
        Ok(response)
    }
}

/// `fut`, or a failed test after 10 s.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::or(fut, async {
        smol::Timer::after(Duration::from_secs(10)).await;
        panic!("no {what} within 10 s");
    })
    .await
}

#[test]
fn a_burst_of_rejections_costs_one_refresh() {
    let authority = LocalAuthority::start().unwrap();
    smol::block_on(async {
        let handle = manager(&authority);
        let first = handle.token().await.unwrap();
        let old = format!("Bearer {}", first.access_token().secret());
        let client = surf::Client::new()
            .with(BearerAuth::new(handle.clone()))
            .with(Burst {
                handle: handle.clone(),
                old: old.clone(),
                arrived: AtomicUsize::new(0),
                together: smol::lock::Barrier::new(BURST),
            });
        authority.revoke_access_token(first.access_token().secret());
        let requests = (0..BURST).map(|_| {
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
        // The late reports of the revoked token did not touch its
        // replacement (a second refresh may be merely rate-limited yet).
        assert_eq!(handle.state().rejections, 1, "{:?}", handle.state());
        let new = handle.current().expect("the replacement stays published");
        let new = format!("Bearer {}", new.access_token().secret());
        // The burst was rejected: every request went out with the revoked
        // token (and got a 401), then once more with the new one.
        let sent: Vec<String> = authority
            .requests()
            .iter()
            .filter(|r| r.path == "/resource")
            .map(|r| r.header("authorization").unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            sent.iter().filter(|s| **s == old).count(),
            BURST,
            "{sent:?}"
        );
        assert_eq!(
            sent.iter().filter(|s| **s == new).count(),
            BURST,
            "{sent:?}"
        );
        assert_eq!(authority.resource_requests(), 2 * BURST);
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

/// Inner middleware standing in for a resource server that takes a body
/// of any size (the local authority's stop at 64 KiB): it answers 401
/// `invalid_token` to the token `rejected` and 200 to any other, and
/// records the length of each body it is sent.
struct AnswersLocally {
    rejected: String,
    lengths: Arc<Mutex<Vec<usize>>>,
}

#[surf::utils::async_trait]
impl Middleware for AnswersLocally {
    async fn handle(&self, mut request: Request, _: Client, _: Next<'_>) -> surf::Result<Response> {
        let body = request.take_body().into_bytes().await?;
        self.lengths.lock().unwrap().push(body.len());
        let rejected = request
            .header(AUTHORIZATION)
            .is_some_and(|v| v.as_str() == self.rejected);
        let mut response = surf::http::Response::new(if rejected { 401 } else { 200 });
        if rejected {
            response.insert_header(WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#);
        }
        Ok(response.into())
    }
}

#[test]
fn a_body_of_up_to_1_mib_is_sent_again_after_a_401_a_longer_one_is_not() {
    const ONE_MIB: usize = 1024 * 1024;
    assert_eq!(MAX_REPLAY, ONE_MIB);
    let authority = LocalAuthority::start().unwrap();
    smol::block_on(async {
        let handle = manager(&authority);
        for (len, sent_again) in [(ONE_MIB, true), (ONE_MIB + 1, false)] {
            let old = handle.token().await.unwrap();
            let lengths = Arc::new(Mutex::new(Vec::new()));
            let client = surf::Client::new()
                .with(BearerAuth::new(handle.clone()))
                .with(AnswersLocally {
                    rejected: format!("Bearer {}", old.access_token().secret()),
                    lengths: lengths.clone(),
                });
            let response = client
                .post(authority.resource_url())
                .body_bytes(vec![b'x'; len])
                .await
                .unwrap();
            let lengths = lengths.lock().unwrap().clone();
            if sent_again {
                assert_eq!(response.status(), 200, "{len}");
                assert_eq!(lengths, [len, len]);
            } else {
                assert_eq!(response.status(), 401, "{len}");
                assert_eq!(lengths, [len]);
            }
            // Either way the rejected token was replaced.
            assert_ne!(handle.token().await.unwrap(), old, "{len}");
        }
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
