//! A token file shared by two processes: the second one starts from the
//! cached token without asking the authority, and from then on the two
//! refresh it together, one authority request per refresh. About 5 s:
//!
//! ```sh
//! cargo run --example shared_file_cache
//! ```
//!
//! What it shows:
//!
//! - Each process runs a manager whose source is
//!   `Chain::new(ClientCredentials).cache(MemoryCache::new()).cache(FileCache::new(path))`:
//!   a fetch looks in memory, then in the JSON file (written atomically,
//!   mode 0600), and only then asks the authority, under the file's refresh
//!   lease (a lock on `<path>.lock`), writing the new token back to both.
//! - The example starts an embedded OAuth2 authority on 127.0.0.1 (the
//!   workspace's `local-authority` crate) handing out 4 s tokens, runs the
//!   first manager, then launches a second copy of itself as another OS
//!   process (`--child <token url> <cache file> <start> <end>`; the client
//!   secret goes through the environment variable
//!   `TOKENKEEPER_EXAMPLE_CLIENT_SECRET`, never through argv).
//! - The child's first token comes from the file: the authority's request
//!   count does not move. Each later refresh is made by whichever process is
//!   due first; the other finds the new token in the file.
//!
//! Token values are secrets and are never printed. Tokens are named by the
//! time they were issued (`T+1.93` = 1.93 s after the example started),
//! which both processes see the same.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use local_authority::LocalAuthority;
use smol::Timer;
use tokenkeeper::cache::{Chain, FileCache, MemoryCache};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{
    ClientId, ClientSecret, Driver, RandomEarlyJitter, Token, TokenHandle, TokenManager,
};

/// Where the child process finds the client secret.
const SECRET_ENV: &str = "TOKENKEEPER_EXAMPLE_CLIENT_SECRET";
/// The authority's built-in client.
const CLIENT_ID: &str = "client-a";
const CLIENT_SECRET: &str = "secret-a";
/// How long each token lives (stale after half of it).
const LIFETIME: Duration = Duration::from_secs(4);
const JITTER: Duration = Duration::from_millis(300);
/// How long both processes run.
const RUN_FOR: Duration = Duration::from_secs(5);
/// What the child prints when it has its first token.
const FIRST_TOKEN: &str = "first token:";
/// What the child prints last, followed by its number of tokens.
const DONE: &str = "done: tokens published:";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => parent(),
        Some("--child") => child(&args[1..]),
        Some(_) => {
            eprintln!("usage: shared_file_cache (no arguments; --child is for the copy it starts)");
            ExitCode::from(2)
        }
    }
}

/// A manager on the shared file, with a memory cache in front of it.
fn manager(token_url: &str, secret: String, path: &Path) -> (TokenHandle, Driver) {
    let endpoint = TokenEndpoint::builder(token_url, ClientId::new(CLIENT_ID))
        .client_secret(ClientSecret::new(secret))
        .build()
        .expect("a loopback token URL");
    let chain = Chain::new(ClientCredentials::new(endpoint))
        .cache(MemoryCache::new())
        .cache(FileCache::new(path));
    TokenManager::builder(chain)
        .jitter(RandomEarlyJitter::new(JITTER))
        .build()
}

/// A log prefix: seconds since the example started, and who speaks.
fn at(start: SystemTime, who: &str) -> String {
    let secs = start.elapsed().unwrap_or_default().as_secs_f64();
    format!("[T+{secs:.2} {who:<6}]")
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

fn parent() -> ExitCode {
    let start = SystemTime::now();
    let authority = Arc::new(LocalAuthority::start().expect("start the local authority"));
    authority.set_expires_in(Some(serde_json::json!(LIFETIME.as_secs())));
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-shared-file-cache-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("token.json");
    println!(
        "shared file cache: two processes, one token file, {}s tokens, running {}s",
        LIFETIME.as_secs(),
        RUN_FOR.as_secs()
    );
    println!("  file:      {}", path.display());
    println!("  authority: {}", authority.token_url());
    println!("  tokens are named by their issue time (T+seconds); values are never printed\n");

    let code = smol::block_on(run_parent(start, Arc::clone(&authority), &path));
    let _ = std::fs::remove_dir_all(&dir);
    code
}

async fn run_parent(start: SystemTime, authority: Arc<LocalAuthority>, path: &Path) -> ExitCode {
    let (handle, driver) = manager(&authority.token_url(), CLIENT_SECRET.to_owned(), path);
    let driver = smol::spawn(driver);
    let printer = smol::spawn(print_tokens(handle.clone(), "parent", start));
    let token = match handle.token().await {
        Ok(token) => token,
        Err(error) => {
            eprintln!("no token: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} first token: {} from the authority (authority requests: {}), now in the file{}",
        at(start, "parent"),
        label(&token, start),
        authority.token_requests(),
        file_mode(path)
    );

    // The second process: this program again, in child mode.
    let end = start + RUN_FOR;
    let exe = std::env::current_exe().expect("the path of this program");
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(authority.token_url())
        .arg(path)
        .arg(epoch_ms(start).to_string())
        .arg(epoch_ms(end).to_string())
        .env(SECRET_ENV, CLIENT_SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child process");
    println!(
        "{} started the child process (pid {})",
        at(start, "parent"),
        child.id()
    );
    // Relays the child's lines; after its first token, says whether the
    // authority was asked. Returns the number of tokens the child published.
    let relay = std::thread::spawn({
        let stdout = child.stdout.take().expect("the child's stdout");
        let authority = Arc::clone(&authority);
        let before = authority.token_requests();
        move || {
            let mut published = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("{line}");
                if line.contains(FIRST_TOKEN) {
                    let now = authority.token_requests();
                    let verdict = if now == before {
                        "unchanged: the child did not ask the authority"
                    } else {
                        "the child asked the authority too"
                    };
                    println!(
                        "{} authority requests: {now} ({verdict})",
                        at(start, "parent")
                    );
                }
                if let Some(n) = line.split(DONE).nth(1) {
                    published = n.trim().parse::<u64>().ok();
                }
            }
            published
        }
    });

    Timer::after(until(end)).await;
    let child_ok = wait_for(&mut child, Duration::from_secs(10));
    let child_published = relay.join().unwrap_or(None);
    handle.shutdown().await;
    driver.await;
    printer.await;

    let parent_published = handle.state().refreshes;
    let requests = authority.token_requests();
    println!("\nsummary");
    println!("  authority requests      {requests:>3}");
    match child_published {
        Some(child_published) => {
            let total = parent_published + child_published;
            println!(
                "  tokens published        {total:>3}  (parent {parent_published}, child {child_published})"
            );
            println!(
                "  read from the file      {:>3}  (published without asking the authority)",
                total.saturating_sub(requests)
            );
        }
        None => println!("  the child did not report its tokens"),
    }
    if child_ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("the child process failed");
        ExitCode::FAILURE
    }
}

/// `t` in whole milliseconds since the Unix epoch, as the child's arguments
/// carry it.
fn epoch_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// The time left until `t`, zero once it has passed.
fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Waits for the child to exit, killing it after `limit`; whether it
/// succeeded.
fn wait_for(child: &mut std::process::Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// " (mode 600)" on Unix.
fn file_mode(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            return format!(" (mode {:o})", meta.permissions().mode() & 0o777);
        }
    }
    let _ = path;
    String::new()
}

/// The second process: the same manager on the same file, until `end`.
fn child(args: &[String]) -> ExitCode {
    let [token_url, path, start_ms, end_ms] = args else {
        eprintln!("usage: shared_file_cache --child <token url> <cache file> <start ms> <end ms>");
        return ExitCode::from(2);
    };
    let (Ok(start_ms), Ok(end_ms)) = (start_ms.parse::<u64>(), end_ms.parse::<u64>()) else {
        eprintln!("start and end are milliseconds since the Unix epoch");
        return ExitCode::from(2);
    };
    let start = UNIX_EPOCH + Duration::from_millis(start_ms);
    let end = UNIX_EPOCH + Duration::from_millis(end_ms);
    let Ok(secret) = std::env::var(SECRET_ENV) else {
        eprintln!("the client secret comes from the environment variable {SECRET_ENV}");
        return ExitCode::from(2);
    };
    let path = PathBuf::from(path);
    let started = SystemTime::now();
    println!(
        "{} started (pid {}), same file, empty memory cache",
        at(start, "child"),
        std::process::id()
    );
    smol::block_on(async {
        let (handle, driver) = manager(token_url, secret, &path);
        let driver = smol::spawn(driver);
        let token = match handle.token().await {
            Ok(token) => token,
            Err(error) => {
                eprintln!("child: no token: {error}");
                return ExitCode::FAILURE;
            }
        };
        // A token this process fetched was issued after it started.
        let source = if let Ok(before) = started.duration_since(token.issued_at()) {
            format!(
                "from the file (issued {} ms before this process started)",
                before.as_millis()
            )
        } else {
            "from the authority".to_owned()
        };
        println!(
            "{} {FIRST_TOKEN} {} {source}",
            at(start, "child"),
            label(&token, start)
        );
        let printer = smol::spawn(print_tokens(handle.clone(), "child", start));
        Timer::after(until(end)).await;
        handle.shutdown().await;
        driver.await;
        printer.await;
        println!("{} {DONE} {}", at(start, "child"), handle.state().refreshes);
        ExitCode::SUCCESS
    })
}
