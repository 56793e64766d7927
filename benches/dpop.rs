//! DPoP (RFC 9449): what a resource proof costs, "cheap enough for every
//! request". `TokenHandle::authorization_for` on a bound 800-byte token
//! (URL parse, the origin's nonce looked up, the claims, one signature),
//! with an ES256 key (the default) and an Ed25519 key, next to the same
//! call for a bearer token (no proof) and to `DpopKey::proof` alone.
//!
//! ```sh
//! cargo bench --bench dpop
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench dpop
//! ```

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::oauth2::DpopKey;
use tokenkeeper::{
    AccessToken, FetchContext, SourceError, Token, TokenHandle, TokenManager, TokenSource,
};

const URL: &str = "https://api.example.com/v1/orders/12345?expand=items";

/// A source that hands out one token of `token_type`, bound to `key`.
struct Bound {
    token: String,
    token_type: &'static str,
    key: Option<DpopKey>,
}

impl TokenSource for Bound {
    fn fetch(
        &mut self,
        cx: FetchContext,
    ) -> tokenkeeper::BoxFuture<'_, Result<Token, SourceError>> {
        let token = cx
            .token(
                AccessToken::new(self.token.clone()),
                Some(Duration::from_secs(3600)),
            )
            .with_token_type(self.token_type);
        Box::pin(async move { Ok(token) })
    }

    fn dpop_key(&self) -> Option<DpopKey> {
        self.key.clone()
    }
}

/// A manager holding its first token, its driver on a thread of its own.
fn manager(
    token: &str,
    token_type: &'static str,
    key: Option<DpopKey>,
) -> (TokenHandle, Arc<Token>) {
    let source = Bound {
        token: token.to_owned(),
        token_type,
        key,
    };
    let (handle, driver) = TokenManager::builder(source).build();
    std::thread::spawn(move || futures_lite::future::block_on(driver));
    let token = futures_lite::future::block_on(handle.token()).expect("first token");
    (handle, token)
}

fn main() {
    let token = support::jwt_like();
    let mut c = support::criterion();
    let mut group = c.benchmark_group("dpop");
    for (name, key) in [
        ("ES256", DpopKey::generate().unwrap()),
        ("EdDSA", DpopKey::generate_ed25519().unwrap()),
    ] {
        let (handle, bound) = manager(&token, "DPoP", Some(key.clone()));
        handle
            .remember_dpop_nonce(URL, "nonce-from-the-resource-server")
            .unwrap();
        group.bench_function(format!("authorization_for {name}"), |b| {
            b.iter(|| {
                black_box(handle.authorization_for(Arc::clone(&bound), "GET", black_box(URL)))
                    .unwrap()
            })
        });
        let access = AccessToken::new(token.clone());
        group.bench_function(format!("DpopKey::proof {name}"), |b| {
            b.iter(|| black_box(key.proof("GET", black_box(URL), Some(&access), None)).unwrap())
        });
    }
    let (handle, bearer) = manager(&token, "Bearer", None);
    group.bench_function("authorization_for Bearer", |b| {
        b.iter(|| {
            black_box(handle.authorization_for(Arc::clone(&bearer), "GET", black_box(URL))).unwrap()
        })
    });
    group.finish();
    c.final_summary();
}
