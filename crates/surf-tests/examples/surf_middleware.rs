//! surf middleware: `BearerAuth` puts the current token on every request,
//! and when the server rejects it (HTTP 401) refreshes it once and retries.
//! About 1 s:
//!
//! ```sh
//! cargo run --manifest-path crates/surf-tests/Cargo.toml --example surf_middleware
//! ```
//!
//! What it shows:
//!
//! - An embedded OAuth2 authority on 127.0.0.1 (the workspace's
//!   `local-authority` crate) with a protected resource (`/resource`) that
//!   answers 200 to a valid bearer token and 401 otherwise.
//! - A manager with the client-credentials source, its driver spawned on
//!   async-std (surf's executor), and a surf client (its `curl-client`
//!   backend) with `BearerAuth::new(handle)` as middleware: application
//!   code makes plain requests and never touches the token.
//! - The server then revokes the token (`revoke_access_token`, as after a
//!   key rotation). A burst of four POSTs all get 401; the middleware
//!   reports the rejected token with `refresh_rejected` (compare-and-
//!   invalidate: the burst causes one refresh, not four) and replays each
//!   request, body included, with the new token: all four succeed.
//! - The middleware's log lines (target `tokenkeeper::middleware`), printed
//!   by a minimal logger; they never contain a token either.
//!
//! Token values are secrets and are never printed.

use local_authority::LocalAuthority;
use tokenkeeper::middleware::BearerAuth;
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{ClientId, ClientSecret, TokenManager};

/// Prints the middleware's log records.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "tokenkeeper::middleware" && metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            println!(
                "    log {} {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

#[async_std::main]
async fn main() -> surf::Result<()> {
    log::set_logger(&LOGGER).expect("no other logger");
    log::set_max_level(log::LevelFilter::Info);

    let authority = LocalAuthority::start().expect("start the local authority");
    let resource = authority.resource_url();
    println!("surf middleware: BearerAuth against a protected resource");
    println!("  authority: {}", authority.token_url());
    println!("  resource:  {resource}\n");

    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .expect("a loopback token URL");
    let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
    let driver = async_std::task::spawn(driver);

    // Without the middleware, the resource says no.
    let plain = surf::Client::new();
    let response = plain.get(&resource).await?;
    println!(
        "1. GET without BearerAuth          -> {}",
        response.status()
    );

    // With it, every request carries the current token.
    let client = surf::Client::new().with(BearerAuth::new(handle.clone()));
    let response = client.get(&resource).await?;
    println!(
        "2. GET with BearerAuth             -> {}",
        response.status()
    );
    println!(
        "   authority: {} token request(s), {} resource request(s)",
        authority.token_requests(),
        authority.resource_requests()
    );

    // The server stops accepting the token the manager holds.
    handle.with_current(|token| authority.revoke_access_token(token.access_token().secret()));
    println!("3. the server revokes the current token; four POSTs at once:");
    let resource_before = authority.resource_requests();
    let tokens_before = authority.token_requests();
    let calls: Vec<_> = (1..=4)
        .map(|i| {
            let client = client.clone();
            let resource = resource.clone();
            async_std::task::spawn(async move {
                let mut response = client
                    .post(&resource)
                    .body_string(format!("order {i}"))
                    .await?;
                let body = response.body_string().await?;
                Ok::<_, surf::Error>((i, response.status(), body))
            })
        })
        .collect();
    for call in calls {
        let (i, status, body) = call.await?;
        println!("   POST #{i} (body \"order {i}\")       -> {status} {body:?}");
    }
    let resource_requests = authority.resource_requests() - resource_before;
    let refreshes = authority.token_requests() - tokens_before;
    println!(
        "   authority: {refreshes} token request(s) for the burst{}, {resource_requests} resource \
         requests for 4 calls ({} rejected with 401 and replayed with the new token)",
        if refreshes == 1 {
            " (one refresh for all four)"
        } else {
            ""
        },
        resource_requests.saturating_sub(4)
    );

    let response = client.get(&resource).await?;
    println!(
        "4. GET with BearerAuth             -> {}",
        response.status()
    );

    let state = handle.state();
    println!("\nsummary");
    println!(
        "  authority token requests  {}  (tokens published: {}, withdrawn after a rejection: {})",
        authority.token_requests(),
        state.refreshes,
        state.rejections
    );
    println!(
        "  resource requests         {}",
        authority.resource_requests()
    );
    handle.shutdown().await;
    driver.await;
    Ok(())
}
