//! The OAuth2 servers of the interop tests (tests/interop.rs here, and
//! crates/surf-tests/tests/interop.rs, which includes this file through
//! `#[path]`): `node interop/SCRIPT` processes started on 127.0.0.1 and
//! killed on drop, `oauth2-mock-server` (`interop/server.js`) with the one
//! client it knows, whether Node.js and the npm packages are there, and
//! what every test checks of the tokens it hands out.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use futures_lite::future;
use serde_json::Value;
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ErrorCode, HttpClient, HttpRequest, TokenEndpoint, TokenRequestError,
    UreqClient,
};
use tokenkeeper::{
    ClientId, ClientSecret, FetchContext, LifetimePolicy, SourceError, SystemClock, Token,
    TokenSource,
};

/// The client the server knows. The secret has characters that
/// `client_secret_basic` must form-urlencode before base64 (space, `:`,
/// `/`, `+`, `%`); the server rejects them unencoded.
pub const CLIENT_ID: &str = "tokenkeeper-interop";
pub const CLIENT_SECRET: &str = "interop secret: a/b+c%d";
/// The resource owner for the `password` grant.
pub const USERNAME: &str = "alice";
pub const PASSWORD: &str = "wonderland";
/// What the server's tokens live (oauth2-mock-server's fixed TTL).
pub const SERVER_TTL_S: u64 = 3600;
/// Upper bound for the server to start and for any one scenario.
pub const STARTUP: Duration = Duration::from_secs(30);
pub const OVERALL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `node interop/SCRIPT`; killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// Held open: the server exits when its stdin closes, so it dies with
    /// this process even if `Drop` never runs.
    _stdin: ChildStdin,
    log: Arc<Mutex<Vec<String>>>,
    /// The JSON of its first line on stdout: where it listens.
    ready: Value,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log.lock().map(|l| l.join("\n")).unwrap_or_default();
            eprintln!("--- interop server log ---\n{log}\n--- end of interop server log ---");
        }
    }
}

impl NodeProcess {
    /// Starts `node SCRIPT` in `interop/` with `envs`, and waits for the
    /// line that says where it listens.
    pub fn start(script: &str, envs: &[(&str, &str)]) -> NodeProcess {
        let dir = interop_dir();
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(&dir)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node {script}` in {}: {e}", dir.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        // The log, shown if a test fails; read all along so the pipe never fills.
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // The first line on stdout says where it listens.
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = ready_tx.send(lines.next());
            for _ in lines {}
        });

        let mut process = NodeProcess {
            child,
            _stdin: stdin,
            log,
            ready: Value::Null,
        };
        let line = match ready_rx.recv_timeout(STARTUP) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => {
                // Give the log reader a moment to collect why it died.
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "{script} exited before listening ({:?})",
                    process.child.try_wait()
                );
            }
            Err(_) => panic!("{script} did not listen within {STARTUP:?}"),
        };
        process.ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("unexpected first line from {script} {line:?}: {e}"));
        assert_eq!(process.ready["event"], "listening", "{line}");
        process
    }

    /// A string field of the line that said where it listens.
    pub fn field(&self, name: &str) -> String {
        self.ready[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {}", self.ready))
            .to_owned()
    }
}

/// A running `node interop/server.js` (oauth2-mock-server).
pub struct Server {
    _node: NodeProcess,
    pub token_endpoint: String,
    pub issuer: String,
    pub kid: String,
}

/// The repository's `interop/`: found from the package that includes this
/// file, the repository's root or a package under it.
pub fn interop_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join("interop"))
        .find(|dir| dir.join("package.json").is_file())
        .unwrap_or_else(|| panic!("no interop/package.json above {}", manifest_dir.display()))
}

/// Why `package` cannot run here, if it cannot: no Node.js, one too old
/// for oauth2-mock-server 8.2.3 and oidc-provider 9, or
/// `interop/node_modules` not installed.
pub fn unavailable(package: &str) -> Option<String> {
    let version = match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => return Some(format!("`node --version` failed ({})", out.status)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some("`node` is not on the PATH; install Node.js 20.19 or newer".into())
        }
        Err(e) => return Some(format!("cannot run `node`: {e}")),
    };
    let mut parts = version.trim_start_matches('v').split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (20, 19) {
        return Some(format!(
            "Node.js {version} is too old: {package} needs 20.19 or newer"
        ));
    }
    let package = interop_dir().join(format!("node_modules/{package}/package.json"));
    if !package.is_file() {
        return Some("interop/node_modules is not installed; run `npm ci --prefix interop`".into());
    }
    None
}

impl Server {
    pub fn start() -> Server {
        let node = NodeProcess::start(
            "server.js",
            &[
                ("INTEROP_CLIENT_ID", CLIENT_ID),
                ("INTEROP_CLIENT_SECRET", CLIENT_SECRET),
                ("INTEROP_USERNAME", USERNAME),
                ("INTEROP_PASSWORD", PASSWORD),
            ],
        );
        let server = Server {
            token_endpoint: node.field("token_endpoint"),
            issuer: node.field("issuer"),
            kid: node.field("kid"),
            _node: node,
        };
        assert!(
            server.token_endpoint.starts_with("http://127.0.0.1:"),
            "{}",
            server.token_endpoint
        );
        server
    }

    /// An endpoint for the known client on this server, with the default
    /// HTTP client (`UreqClient`).
    pub fn endpoint(&self, auth: AuthMethod) -> TokenEndpoint {
        self.endpoint_with_secret(auth, CLIENT_SECRET)
    }

    pub fn endpoint_with_secret(&self, auth: AuthMethod, secret: &str) -> TokenEndpoint {
        TokenEndpoint::builder(self.token_endpoint.as_str(), ClientId::new(CLIENT_ID))
            .client_auth(ClientAuth::with_secret(auth, ClientSecret::new(secret)).unwrap())
            .build()
            .expect("a loopback http endpoint is allowed")
    }

    /// The `password` grant, by hand (tokenkeeper has no source for it):
    /// a form POST through `UreqClient` with `client_secret_post`. Returns
    /// the refresh token it hands out.
    pub fn password_grant(&self, scope: &str) -> String {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "password")
            .append_pair("username", USERNAME)
            .append_pair("password", PASSWORD)
            .append_pair("scope", scope)
            .append_pair("client_id", CLIENT_ID)
            .append_pair("client_secret", CLIENT_SECRET)
            .finish();
        let request = HttpRequest::form_post(
            self.token_endpoint.parse().expect("a URL"),
            body.into_bytes(),
        );
        let client = UreqClient::new();
        let response = run(client.post(request, 64 * 1024)).expect("the password grant POST");
        let text = String::from_utf8_lossy(response.body());
        assert_eq!(response.status(), 200, "password grant: {text}");
        let json: Value = serde_json::from_str(&text).expect("a JSON token response");
        assert_eq!(json["scope"], scope, "{json}");
        json["refresh_token"]
            .as_str()
            .expect("the password grant hands out a refresh token")
            .to_owned()
    }

    /// Checks that `jwt` is a token this server signed (RS256 with its key,
    /// its issuer, its TTL) and returns its claims. The signature itself is
    /// not verified: no RSA implementation is at hand, and the `kid` and the
    /// claims the server adds are proof enough that it came from there.
    pub fn claims(&self, jwt: &str) -> Value {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT has 3 dot-separated parts: {jwt:?}");
        let decode = |part: &str| -> Value {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap_or_else(|e| panic!("JWT part {part:?} is not base64url: {e}"));
            serde_json::from_slice(&bytes).expect("a JWT part is JSON")
        };
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "RS256", "{header}");
        assert_eq!(header["typ"], "JWT", "{header}");
        assert_eq!(
            header["kid"],
            self.kid.as_str(),
            "signed with the server's key"
        );
        assert!(!parts[2].is_empty(), "a signature");
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], self.issuer.as_str(), "{claims}");
        let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
        assert_eq!(
            exp.zip(iat).map(|(e, i)| e - i),
            Some(SERVER_TTL_S),
            "{claims}"
        );
        claims
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `fut` to completion on this thread, failing after `OVERALL`.
pub fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
    future::block_on(future::or(fut, async {
        async_io::Timer::after(OVERALL).await;
        panic!("no result within {OVERALL:?}");
    }))
}

pub fn cx() -> FetchContext {
    FetchContext::new(SystemClock, LifetimePolicy::default())
}

/// One fetch from `source`, outside any manager.
pub fn fetch(source: &mut impl TokenSource) -> Result<Token, SourceError> {
    run(source.fetch(cx()))
}

/// The OAuth2 error code and kind of a failed fetch.
pub fn oauth2_code(error: &SourceError) -> ErrorCode {
    error
        .cause()
        .and_then(|c| c.downcast_ref::<TokenRequestError>())
        .and_then(TokenRequestError::code)
        .cloned()
        .unwrap_or_else(|| panic!("not an OAuth2 error response: {error}"))
}

/// Checks what every access token from the server has: Bearer, the
/// server's lifetime, a JWT it signed. Returns the claims.
pub fn check_access_token(server: &Server, token: &Token) -> Value {
    assert!(token.token_type().eq_ignore_ascii_case("bearer"));
    assert_eq!(
        token.expiry_ms() - token.issued_ms(),
        SERVER_TTL_S * 1000,
        "expires_in from the server"
    );
    let claims = server.claims(token.access_token().secret());
    assert_eq!(claims["client_id"], CLIENT_ID, "{claims}");
    claims
}

pub fn refresh_secret(token: &Token) -> &str {
    token
        .refresh_token()
        .expect("a refresh token on the token")
        .secret()
}
