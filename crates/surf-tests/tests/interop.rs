//! `SurfClient` against a real OAuth2 server from npm: oauth2-mock-server,
//! started by `interop/server.js` on 127.0.0.1 (the servers and the checks
//! are the main package's tests/interop.rs's, shared through
//! `tests/common/interop_servers.rs`). The server authenticates its one
//! client by exactly one of `client_secret_basic` (form-decoding the Basic
//! credentials) and `client_secret_post`, and its tokens record which.
//!
//! Without Node.js or `interop/node_modules` (`npm ci --prefix interop`)
//! the test is reported as ignored, with the reason; with `CI=true` it
//! fails instead (the harness is `common::harness`).

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/interop_servers.rs"]
mod interop_servers;

use common::harness::{add_tests, Harness, Needs};
use interop_servers::{check_access_token, fetch, unavailable, Server, CLIENT_ID, CLIENT_SECRET};
use tokenkeeper::oauth2::{AuthMethod, ClientAuth, ClientCredentials, SurfClient, TokenEndpoint};
use tokenkeeper::{ClientId, ClientSecret};

fn main() {
    let server = Needs::new("the interop server", unavailable("oauth2-mock-server"));
    let mut harness = Harness::from_args();
    add_tests!(harness needing server; client_credentials_through_surf);
    harness.run()
}

fn client_credentials_through_surf() {
    let server = Server::start();
    for (auth, wire_name) in [
        (AuthMethod::ClientSecretBasic, "client_secret_basic"),
        (AuthMethod::ClientSecretPost, "client_secret_post"),
    ] {
        let endpoint =
            TokenEndpoint::builder(server.token_endpoint.as_str(), ClientId::new(CLIENT_ID))
                .client_auth(
                    ClientAuth::with_secret(auth, ClientSecret::new(CLIENT_SECRET)).unwrap(),
                )
                .http_client(SurfClient::new(surf::Client::new()))
                .build()
                .unwrap();
        let mut source = ClientCredentials::new(endpoint).scope("orders:read");
        let token = fetch(&mut source).expect("a token through surf");
        let claims = check_access_token(&server, &token);
        assert_eq!(claims["client_auth"], wire_name, "{claims}");
        assert_eq!(token.scope(), Some("orders:read"));
    }
}
