//! `UreqClient::new` and the proxy environment variables, over real HTTP:
//! loopback never proxied, other hosts through an HTTP `CONNECT` proxy on
//! 127.0.0.1 unless `NO_PROXY` says otherwise, as curl reads it.
//!
//! ONE test in this file, on purpose: it sets process-wide environment
//! variables, which a test running beside it would see. (Each file under
//! tests/ is a process of its own.) The host `auth.example.test` does not
//! resolve (`.test` is reserved, RFC 6761): the proxy resolves nothing
//! either, it answers every tunnel itself, so a request that goes direct
//! fails to connect and one that goes through the proxy gets its token.
#![cfg(feature = "ureq")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use futures_lite::future::block_on;
use local_authority::LocalAuthority;
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint, TokenRequestError, UreqClient};
use tokenkeeper::{
    ClientId, ClientSecret, FetchContext, LifetimePolicy, SourceError, SystemClock, Token,
    TokenSource,
};

const PROXY_VARIABLES: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];
const NO_PROXY_VARIABLES: [&str; 2] = ["no_proxy", "NO_PROXY"];
/// The token the proxy hands out at the end of every tunnel.
const VIA_PROXY: &str = "token-via-the-proxy";
/// A host that is not loopback and resolves nowhere.
const REMOTE_URL: &str = "http://auth.example.test:9/token";

/// An HTTP proxy on 127.0.0.1 that records the first line of each request
/// it gets (the `CONNECT`, then the request inside the tunnel) and answers
/// the tunnelled request itself with a token.
struct FakeProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    fn start() -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        // Lives as long as the test process: a leaked listener is harmless.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &record);
                });
            }
        });
        FakeProxy { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines seen since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Reads a request head; returns its request line and `Content-Length`.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(String, usize)> {
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    Ok((first.trim_end().to_owned(), length))
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let (line, _) = read_head(&mut reader)?;
    let connect = line.starts_with("CONNECT ");
    seen.lock().unwrap().push(line);
    if !connect {
        writer.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    }
    writer.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (inner, length) = read_head(&mut reader)?;
    seen.lock().unwrap().push(inner);
    reader
        .by_ref()
        .take(length as u64)
        .read_to_end(&mut Vec::new())?;
    let body = format!(r#"{{"access_token":"{VIA_PROXY}","token_type":"Bearer","expires_in":60}}"#);
    write!(
        writer,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One token from `url` with a client made now (so it reads the
/// environment as it is now).
fn fetch(url: &str) -> Result<Token, SourceError> {
    let endpoint = TokenEndpoint::builder(url, ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .allow_insecure_http(true)
        .build()
        .unwrap();
    let mut source = ClientCredentials::new(endpoint);
    block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
}

/// Sets `NO_PROXY` (the lower-case one unset), or unsets both.
fn set_no_proxy(value: Option<&str>) {
    for name in NO_PROXY_VARIABLES {
        std::env::remove_var(name);
    }
    if let Some(value) = value {
        std::env::set_var("NO_PROXY", value);
    }
}

/// Asserts that a fetch from [`REMOTE_URL`] went direct: it could not
/// connect (the name resolves nowhere), and the proxy saw nothing.
fn assert_direct(proxy: &FakeProxy, what: &str) {
    let error = fetch(REMOTE_URL).expect_err(what);
    // The name lookup failed (ureq reports it as an i/o error).
    let http = matches!(
        error
            .cause()
            .and_then(|c| c.downcast_ref::<TokenRequestError>()),
        Some(TokenRequestError::Http(_))
    );
    assert!(http, "{what}: not an HTTP error: {error:?}");
    assert_eq!(proxy.take(), Vec::<String>::new(), "{what}");
}

/// Asserts that a fetch from [`REMOTE_URL`] went through the proxy.
fn assert_proxied(proxy: &FakeProxy, what: &str) {
    let token = fetch(REMOTE_URL).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(token.access_token().secret(), VIA_PROXY, "{what}");
    assert_eq!(
        proxy.take(),
        [
            "CONNECT auth.example.test:9 HTTP/1.1",
            "POST /token HTTP/1.1"
        ],
        "{what}"
    );
}

#[test]
fn proxies_from_the_environment_as_curl_reads_them() {
    let proxy = FakeProxy::start();
    for name in PROXY_VARIABLES {
        std::env::set_var(name, proxy.url());
    }
    set_no_proxy(None);

    // Loopback: never through the proxy, by address or by name.
    let authority = LocalAuthority::start().unwrap();
    let port = authority.addr().port();
    for url in [
        authority.token_url(),
        format!("http://localhost:{port}/token"),
    ] {
        let token = fetch(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(
            authority.is_valid_access_token(token.access_token().secret()),
            "{url}"
        );
        assert_eq!(
            proxy.take(),
            Vec::<String>::new(),
            "{url} went through the proxy"
        );
    }

    // Another host: through the proxy.
    assert_proxied(&proxy, "every proxy variable set");

    // NO_PROXY: the host, its domain (with or without a leading dot), the
    // host and its port, everything.
    for no_proxy in [
        "auth.example.test",
        "example.test",
        ".example.test",
        "*.example.test",
        "other.test, auth.example.test:9",
        "*",
    ] {
        set_no_proxy(Some(no_proxy));
        assert_direct(&proxy, &format!("NO_PROXY={no_proxy}"));
    }
    // ... but not another port, nor a name the host merely ends with.
    for no_proxy in ["auth.example.test:10", "xample.test", "other.test"] {
        set_no_proxy(Some(no_proxy));
        assert_proxied(&proxy, &format!("NO_PROXY={no_proxy}"));
    }
    // The lower-case one wins.
    set_no_proxy(Some("other.test"));
    std::env::set_var("no_proxy", "auth.example.test");
    assert_direct(&proxy, "no_proxy=auth.example.test, NO_PROXY=other.test");
    set_no_proxy(None);

    // An http URL: `http_proxy`, else ALL_PROXY; never HTTP_PROXY alone.
    for name in PROXY_VARIABLES {
        std::env::remove_var(name);
    }
    std::env::set_var("HTTP_PROXY", proxy.url());
    assert_direct(&proxy, "HTTP_PROXY alone");
    std::env::set_var("ALL_PROXY", proxy.url());
    assert_proxied(&proxy, "ALL_PROXY");
    std::env::remove_var("ALL_PROXY");
    std::env::set_var("http_proxy", proxy.url());
    assert_proxied(&proxy, "http_proxy");
    std::env::remove_var("http_proxy");
    // HTTPS_PROXY is for https URLs only.
    std::env::set_var("HTTPS_PROXY", proxy.url());
    assert_direct(&proxy, "HTTPS_PROXY and an http URL");
    std::env::remove_var("HTTPS_PROXY");

    // Your own agent keeps its proxy, except for loopback.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(Some(ureq::Proxy::new(&proxy.url()).unwrap()))
        .build()
        .into();
    let client = UreqClient::with_agent(agent);
    let with_agent = |url: &str| {
        let endpoint = TokenEndpoint::builder(url, ClientId::new("client-a"))
            .client_secret(ClientSecret::new("secret-a"))
            .allow_insecure_http(true)
            .http_client(client.clone())
            .build()
            .unwrap();
        let mut source = ClientCredentials::new(endpoint);
        block_on(source.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
    };
    let token = with_agent(&authority.token_url()).unwrap();
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(proxy.take(), Vec::<String>::new(), "with_agent to loopback");
    let token = with_agent(REMOTE_URL).unwrap();
    assert_eq!(token.access_token().secret(), VIA_PROXY);
    assert_eq!(
        proxy.take(),
        [
            "CONNECT auth.example.test:9 HTTP/1.1",
            "POST /token HTTP/1.1"
        ],
        "with_agent elsewhere"
    );
}
