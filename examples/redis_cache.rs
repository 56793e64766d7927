//! Two token managers sharing a Redis cache: the second starts from the
//! token the first stored, and from then on they refresh it together, one
//! authority request per refresh. About 5 s:
//!
//! ```sh
//! cargo run --example redis_cache --features redis
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example redis_cache --features redis
//! ```
//!
//! Which Redis: the one in `REDIS_URL` if it is set (the example's keys get
//! a prefix of their own and are deleted at the end); otherwise a
//! `redis-server` it starts on a free loopback port if one is installed (and
//! stops at the end); otherwise it says how to run it and exits (status 0).
//!
//! What it shows:
//!
//! - Each manager's source is
//!   `Chain::new(ClientCredentials).cache(MemoryCache::new()).cache(RedisCache::new(url)?)`,
//!   with its own Redis connection, as two services (or two processes)
//!   would have. A fetch looks in memory, then in Redis, and only then asks
//!   the authority, under the Redis refresh lease (`SET NX PX`, released
//!   with a compare-and-delete), writing the new token back to both.
//! - The authority is embedded (the workspace's `local-authority` crate, on
//!   127.0.0.1) and hands out 4 s tokens. Manager A asks it for the first
//!   token; manager B, started next, finds that token in Redis and the
//!   authority's request count does not move. Each later refresh is made by
//!   whichever manager is due first; the other finds the token in Redis.
//!
//! Token values are secrets and are never printed, nor is the Redis URL
//! (it may hold a password). Tokens are named by the time they were issued
//! (`T+1.93` = 1.93 s after the example started).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use local_authority::LocalAuthority;
use smol::Timer;
use tokenkeeper::cache::{Chain, MemoryCache, RedisCache, TokenCache};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{
    ClientId, ClientSecret, Driver, RandomEarlyJitter, Token, TokenHandle, TokenManager,
};

/// How long each token lives (stale after half of it).
const LIFETIME: Duration = Duration::from_secs(4);
const JITTER: Duration = Duration::from_millis(300);
/// How long both managers run.
const RUN_FOR: Duration = Duration::from_secs(5);

/// A `redis-server` this example started; stopped on drop.
struct OwnServer {
    child: Child,
    port: u16,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Redis is.
enum Redis {
    /// `REDIS_URL`.
    FromEnv(String),
    /// A server this example started.
    Own(OwnServer),
}

impl Redis {
    fn url(&self) -> String {
        match self {
            Redis::FromEnv(url) => url.clone(),
            Redis::Own(server) => format!("redis://127.0.0.1:{}/0", server.port),
        }
    }
}

fn main() -> ExitCode {
    let redis = match find_redis() {
        Ok(Some(redis)) => redis,
        Ok(None) => {
            println!("redis cache: skipped: no Redis to talk to.");
            println!(
                "  This example needs either REDIS_URL (e.g. REDIS_URL=redis://127.0.0.1:6379/0)"
            );
            println!(
                "  or redis-server on the PATH (Debian/Ubuntu: apt-get install redis-server),"
            );
            println!("  then: cargo run --example redis_cache --features redis");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("redis cache: {message}");
            return ExitCode::FAILURE;
        }
    };
    let code = smol::block_on(run(&redis));
    if let Redis::Own(server) = &redis {
        println!("stopping redis-server (pid {})", server.child.id());
    }
    code
}

/// `REDIS_URL`, else a `redis-server` started here, else `None`.
fn find_redis() -> Result<Option<Redis>, String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        // The redis crate's messages never quote the URL.
        ping(&url).map_err(|e| format!("cannot reach the Redis server in REDIS_URL: {e}"))?;
        return Ok(Some(Redis::FromEnv(url)));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let child = match Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot start redis-server: {e}")),
    };
    let server = OwnServer { child, port };
    let redis = Redis::Own(server);
    let url = redis.url();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = ping(&url) {
        if Instant::now() > deadline {
            return Err(format!("redis-server started but does not answer: {e}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(redis))
}

/// Whether the server at `url` answers `PING`.
fn ping(url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
    redis::cmd("PING").query::<String>(&mut connection)?;
    Ok(())
}

async fn run(redis: &Redis) -> ExitCode {
    let start = SystemTime::now();
    let authority = LocalAuthority::start().expect("start the local authority");
    authority.set_expires_in(Some(serde_json::json!(LIFETIME.as_secs())));
    // Keys of their own, so a shared server's other data is left alone.
    let prefix = format!("tokenkeeper-example:{}:", std::process::id());
    let url = redis.url();
    let cache = || {
        RedisCache::new(&url)
            .expect("a valid Redis URL")
            .key_prefix(prefix.clone())
    };
    println!(
        "redis cache: two managers, one Redis entry, {}s tokens, running {}s",
        LIFETIME.as_secs(),
        RUN_FOR.as_secs()
    );
    match redis {
        Redis::FromEnv(_) => println!("  redis:     from REDIS_URL, {}", cache().describe()),
        Redis::Own(server) => println!(
            "  redis:     started redis-server (pid {}), {}",
            server.child.id(),
            cache().describe()
        ),
    }
    println!("  authority: {}", authority.token_url());
    println!("  tokens are named by their issue time (T+seconds); values are never printed\n");

    let (a, driver_a) = manager(&authority, cache());
    let driver_a = smol::spawn(driver_a);
    let printer_a = smol::spawn(print_tokens(a.clone(), "A", start));
    let token = match a.token().await {
        Ok(token) => token,
        Err(error) => {
            eprintln!("manager A: no token: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} first token: {} from the authority (authority requests: {}), now in Redis",
        at(start, "A"),
        label(&token, start),
        authority.token_requests()
    );

    // A second manager with its own connection and an empty memory cache.
    let before = authority.token_requests();
    let (b, driver_b) = manager(&authority, cache());
    let driver_b = smol::spawn(driver_b);
    let token = match b.token().await {
        Ok(token) => token,
        Err(error) => {
            eprintln!("manager B: no token: {error}");
            return ExitCode::FAILURE;
        }
    };
    let now = authority.token_requests();
    let verdict = if now == before {
        "from Redis: the authority was not asked"
    } else {
        "but the authority was asked again"
    };
    println!(
        "{} first token: {} {verdict} (authority requests: {now})",
        at(start, "B"),
        label(&token, start)
    );
    let printer_b = smol::spawn(print_tokens(b.clone(), "B", start));

    let wait = (start + RUN_FOR)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Timer::after(wait).await;
    for (handle, driver, printer) in [(&a, driver_a, printer_a), (&b, driver_b, printer_b)] {
        handle.shutdown().await;
        driver.await;
        printer.await;
    }

    let (published_a, published_b) = (a.state().refreshes, b.state().refreshes);
    let total = published_a + published_b;
    let requests = authority.token_requests();
    println!("\nsummary");
    println!("  authority requests      {requests:>3}");
    println!("  tokens published        {total:>3}  (A {published_a}, B {published_b})");
    println!(
        "  read from Redis         {:>3}  (published without asking the authority)",
        total.saturating_sub(requests)
    );

    if let Redis::FromEnv(url) = redis {
        // Leave the shared server as it was.
        let cache = cache();
        let deleted = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut c| {
                redis::cmd("DEL")
                    .arg(cache.token_key())
                    .arg(cache.lease_key())
                    .query::<u64>(&mut c)
            });
        match deleted {
            Ok(_) => println!("deleted the example's keys ({prefix}*)"),
            Err(e) => eprintln!("could not delete the example's keys ({prefix}*): {e}"),
        }
    }
    ExitCode::SUCCESS
}

/// A manager on Redis, with a memory cache in front of it.
fn manager(authority: &LocalAuthority, redis: RedisCache) -> (TokenHandle, Driver) {
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .expect("a loopback token URL");
    let chain = Chain::new(ClientCredentials::new(endpoint))
        .cache(MemoryCache::new())
        .cache(redis);
    TokenManager::builder(chain)
        .jitter(RandomEarlyJitter::new(JITTER))
        .build()
}

/// A log prefix: seconds since the example started, and which manager.
fn at(start: SystemTime, who: &str) -> String {
    let secs = start.elapsed().unwrap_or_default().as_secs_f64();
    format!("[T+{secs:.2} {who}]")
}

/// A token's name: when it was issued.
fn label(token: &Token, start: SystemTime) -> String {
    let secs = token
        .issued_at()
        .duration_since(start)
        .unwrap_or_default()
        .as_secs_f64();
    format!("token T+{secs:.2}")
}

/// Prints each token the manager starts using; ends when it stops.
async fn print_tokens(handle: TokenHandle, who: &'static str, start: SystemTime) {
    let mut tokens = handle.subscribe();
    while let Some(token) = tokens.next().await {
        println!(
            "{} now using {} (expires in {:.1} s)",
            at(start, who),
            label(&token, start),
            token.expires_in().as_secs_f64()
        );
    }
}
