//! What a shared cache trusts: an entry is served only to the client it was
//! written for (its cache key), and the file cache reads only a file of its
//! own, private, regular, small and plausible, without blocking.
//!
//! Two clients on one cache are tested against real authorities on
//! 127.0.0.1. The file checks write cache files by hand, as a careless
//! operator or another local user could. The tests that need root (to act
//! as another user) are reported as ignored, with the reason, when not run
//! as root, except under CI (`CI=true`), where that is a failure (the harness
//! is `common::harness`). The `ureq` feature is required in Cargo.toml.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::harness::{add_tests, Harness};
use common::logs::{capture_logs, logged, Logged};
use futures_lite::future::block_on;
use local_authority::LocalAuthority;
use tokenkeeper::cache::{CacheKey, Chain, FileCache, MemoryCache, TokenCache};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{
    AccessToken, ClientId, ClientSecret, Clock, FetchContext, LifetimePolicy, SystemClock, Token,
    TokenSource,
};

fn main() {
    let mut harness = Harness::from_args();
    add_tests!(harness;
        two_client_ids_on_one_cache_file_each_get_their_own_token,
        two_token_urls_on_one_cache_file_each_get_their_own_token,
        two_scopes_on_one_cache_file_each_get_their_own_token,
        two_clients_sharing_a_memory_cache_each_get_their_own_token,
        an_entry_for_another_key_is_logged_once_not_on_every_read,
        unkeyed_entries_are_for_unkeyed_chains_only,
        an_entry_issued_in_the_future_is_corrupt,
        an_entry_expiring_absurdly_far_away_is_corrupt,
        a_file_over_the_size_cap_is_a_miss_without_reading_it_all,
        an_entry_of_exactly_the_size_cap_is_read_one_byte_more_is_not,
        a_missing_file_is_a_quiet_miss,
        writers_at_the_same_time_never_collide_on_a_temporary_file,
        #[cfg(unix)]
        unix::a_group_writable_cache_file_is_not_trusted,
        #[cfg(unix)]
        unix::an_other_writable_cache_file_is_not_trusted,
        #[cfg(unix)]
        unix::a_cache_file_others_can_read_is_made_private_on_read,
        #[cfg(unix)]
        unix::a_group_writable_lock_file_is_replaced_by_our_own,
        #[cfg(unix)]
        unix::a_fifo_at_the_path_is_a_prompt_miss_and_replaced_by_the_next_write,
        #[cfg(unix)]
        unix::a_symlink_at_the_path_is_not_followed,
        #[cfg(unix)]
        unix::a_symlink_to_dev_zero_is_a_prompt_miss,
        #[cfg(unix)]
        unix::a_symlink_at_the_lock_path_is_replaced_and_the_lease_taken,
        #[cfg(unix)]
        unix::temporary_files_of_dead_or_old_writers_are_removed_by_the_next_write,
    );
    #[cfg(unix)]
    {
        let (root, root_and_setpriv) = unix::needs();
        add_tests!(harness needing root;
            unix::a_cache_file_owned_by_another_user_is_not_trusted
        );
        add_tests!(harness needing root_and_setpriv;
            unix::in_a_sticky_folder_another_users_file_cannot_be_replaced_and_the_error_says_so
        );
    }
    harness.run()
}

/// The records at or above debug that mention `text` (tests run in
/// parallel: each filters by its own folder).
fn logs_about(text: &str) -> Vec<Logged> {
    logged()
        .into_iter()
        .filter(|(level, line)| *level <= log::Level::Debug && line.contains(text))
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-trust-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn client(authority: &LocalAuthority, id: &str, secret: &str) -> ClientCredentials {
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new(id))
        .client_secret(ClientSecret::new(secret))
        .build()
        .unwrap();
    ClientCredentials::new(endpoint)
}

fn fetch(chain: &mut Chain) -> Token {
    block_on(chain.fetch(FetchContext::new(SystemClock, LifetimePolicy::default())))
        .expect("a token")
}

fn secret(token: &Token) -> String {
    token.access_token().secret().to_owned()
}

/// Two clients take turns on one cache; each must get a token of its own
/// authority, never the other's, and the second must have asked its own
/// authority. `cache` makes the shared cache for each chain.
fn two_clients_take_turns(
    a: (ClientCredentials, &LocalAuthority),
    b: (ClientCredentials, &LocalAuthority),
    cache: impl Fn() -> Arc<dyn TokenCache>,
) {
    let (source_a, authority_a) = a;
    let (source_b, authority_b) = b;
    let mut chain_a = Chain::new(source_a).cache(cache());
    let mut chain_b = Chain::new(source_b).cache(cache());
    let issued = |authority: &LocalAuthority| authority.tokens_issued();
    let before = (issued(authority_a), issued(authority_b));

    let first_a = fetch(&mut chain_a);
    let first_b = fetch(&mut chain_b);
    assert_ne!(secret(&first_b), secret(&first_a), "b was served a's token");
    assert!(authority_b.is_valid_access_token(&secret(&first_b)));
    // a again: the cache now holds b's token, which is not a's.
    let second_a = fetch(&mut chain_a);
    assert_ne!(
        secret(&second_a),
        secret(&first_b),
        "a was served b's token"
    );
    assert!(authority_a.is_valid_access_token(&secret(&second_a)));
    if !std::ptr::eq(authority_a, authority_b) {
        assert!(!authority_a.is_valid_access_token(&secret(&first_b)));
        assert!(!authority_b.is_valid_access_token(&secret(&second_a)));
    }
    // And a's own token, left alone, is served from the cache.
    let third_a = fetch(&mut chain_a);
    assert_eq!(secret(&third_a), secret(&second_a));
    let asked = (
        issued(authority_a) - before.0,
        issued(authority_b) - before.1,
    );
    if std::ptr::eq(authority_a, authority_b) {
        assert_eq!(asked.0, 3, "a, b, a asked the authority once each");
    } else {
        assert_eq!(asked, (2, 1), "each asked its own authority");
    }
}

fn one_file(dir: &Path) -> impl Fn() -> Arc<dyn TokenCache> + '_ {
    move || Arc::new(FileCache::new(dir.join("token.json")))
}

fn two_client_ids_on_one_cache_file_each_get_their_own_token() {
    let dir = temp_dir("client-id");
    let authority = LocalAuthority::start().unwrap();
    authority.add_client("client-b", "secret-b");
    two_clients_take_turns(
        (client(&authority, "client-a", "secret-a"), &authority),
        (client(&authority, "client-b", "secret-b"), &authority),
        one_file(&dir),
    );
    // The file names whom its entry is for by a digest only.
    let contents = std::fs::read_to_string(dir.join("token.json")).unwrap();
    assert!(!contents.contains("client-a") && !contents.contains("secret"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn two_token_urls_on_one_cache_file_each_get_their_own_token() {
    let dir = temp_dir("token-url");
    let first = LocalAuthority::start().unwrap();
    let second = LocalAuthority::start().unwrap();
    two_clients_take_turns(
        (client(&first, "client-a", "secret-a"), &first),
        (client(&second, "client-a", "secret-a"), &second),
        one_file(&dir),
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn two_scopes_on_one_cache_file_each_get_their_own_token() {
    let dir = temp_dir("scope");
    let authority = LocalAuthority::start().unwrap();
    let read = client(&authority, "client-a", "secret-a").scope("read");
    let write = client(&authority, "client-a", "secret-a").scope("write");
    two_clients_take_turns((read, &authority), (write, &authority), one_file(&dir));
    let mut chain = Chain::new(client(&authority, "client-a", "secret-a").scope("write"))
        .cache(FileCache::new(dir.join("token.json")));
    assert_eq!(fetch(&mut chain).scope(), Some("write"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn two_clients_sharing_a_memory_cache_each_get_their_own_token() {
    let first = LocalAuthority::start().unwrap();
    let second = LocalAuthority::start().unwrap();
    let shared = MemoryCache::new();
    two_clients_take_turns(
        (client(&first, "client-a", "secret-a"), &first),
        (client(&second, "client-a", "secret-a"), &second),
        || Arc::new(shared.clone()),
    );
}

fn an_entry_for_another_key_is_logged_once_not_on_every_read() {
    let dir = temp_dir("other-key-log");
    let path = dir.join("token.json");
    let theirs = CacheKey::builder().field("client_id", "theirs").build();
    let mine = CacheKey::builder().field("client_id", "mine").build();
    let cache = FileCache::new(&path);
    let t = Token::new_ms(
        AccessToken::new("theirs"),
        SystemClock.now_ms(),
        Duration::from_secs(60),
        &LifetimePolicy::default(),
    );
    block_on(cache.write(theirs, &t)).unwrap();
    capture_logs();
    for _ in 0..5 {
        assert_eq!(block_on(cache.read(mine)).unwrap(), None);
    }
    assert_eq!(block_on(cache.read(theirs)).unwrap(), Some(t));
    let logs = logs_about(&dir.display().to_string());
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].0, log::Level::Debug, "{logs:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Chains without a key read only what other chains without a key wrote.
fn unkeyed_entries_are_for_unkeyed_chains_only() {
    let authority = LocalAuthority::start().unwrap();
    let shared = MemoryCache::new();
    let fixed =
        || tokenkeeper::FixedSource::new(AccessToken::new("api-key"), Duration::from_secs(600));
    assert_eq!(fixed().cache_key(), None);
    let mut unkeyed = Chain::new(fixed()).cache(shared.clone());
    assert_eq!(secret(&fetch(&mut unkeyed)), "api-key");
    let mut keyed = Chain::new(client(&authority, "client-a", "secret-a")).cache(shared.clone());
    assert_ne!(secret(&fetch(&mut keyed)), "api-key");
    assert_eq!(block_on(shared.read(CacheKey::unkeyed())).unwrap(), None);
    // A key set by hand keeps two fixed sources apart.
    let by_hand = CacheKey::builder().field("api_key_name", "billing").build();
    let mut named = Chain::new(fixed()).cache(shared.clone()).cache_key(by_hand);
    fetch(&mut named);
    assert!(block_on(shared.read(by_hand)).unwrap().is_some());
    assert_eq!(block_on(shared.read(CacheKey::unkeyed())).unwrap(), None);
}

// ---------------------------------------------------------------------------
// The file cache trusts only a file of its own.

const KEY: CacheKey = CacheKey::unkeyed();

fn now_ms() -> u64 {
    SystemClock.now_ms()
}

fn valid_token(value: &str) -> Token {
    Token::new_ms(
        AccessToken::new(value),
        now_ms(),
        Duration::from_secs(3600),
        &LifetimePolicy::default(),
    )
}

/// A cache file holding a valid entry for `token`, written by the cache.
fn cache_with(dir: &Path, token: &Token) -> (FileCache, PathBuf) {
    let path = dir.join("token.json");
    let cache = FileCache::new(&path);
    block_on(cache.write(KEY, token)).unwrap();
    (cache, path)
}

/// Runs `read` on another thread: a read that blocks fails the test after
/// 10 s instead of hanging it.
fn read_promptly(cache: &FileCache) -> Option<Token> {
    let cache = cache.clone();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(block_on(cache.read(KEY)));
    });
    result
        .recv_timeout(Duration::from_secs(10))
        .expect("the read returned within 10 s")
        .unwrap()
}

/// The warnings that name `path`; none may show the token.
fn warnings_about(path: &Path, token: &Token) -> Vec<String> {
    let warnings: Vec<String> = logs_about(&path.display().to_string())
        .into_iter()
        .filter(|(level, _)| *level == log::Level::Warn)
        .map(|(_, line)| line)
        .collect();
    for line in &warnings {
        assert!(!line.contains(token.access_token().secret()), "{line}");
    }
    warnings
}

#[cfg(unix)]
mod unix {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use common::harness::Needs;

    /// What the tests that act as another user need: root (to make files
    /// owned by another user, or to become one), and for the one
    /// that runs itself again as `nobody`, `setpriv` too. That second run
    /// (not root) needs nothing.
    pub fn needs() -> (Needs, Needs) {
        if std::env::var_os("TOKENKEEPER_TRUST_STICKY_CHILD").is_some() {
            return (
                Needs::new("root", None),
                Needs::new("root and setpriv", None),
            );
        }
        let uid = rustix::process::geteuid();
        let not_root = (!uid.is_root()).then(|| format!("running as uid {}", uid.as_raw()));
        let no_setpriv = std::fs::metadata("/usr/bin/setpriv")
            .is_err()
            .then(|| "no /usr/bin/setpriv (util-linux)".to_owned());
        let both = not_root.clone().or(no_setpriv);
        (
            Needs::new("root", not_root),
            Needs::new("root and setpriv", both),
        )
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    /// Our effective uid: the owner of a file we just created.
    fn my_uid(dir: &Path) -> u32 {
        let probe = dir.join("uid-probe");
        std::fs::write(&probe, "").unwrap();
        let uid = std::fs::metadata(&probe).unwrap().uid();
        std::fs::remove_file(probe).unwrap();
        uid
    }

    /// After a write the file is ours: a regular file, our uid, mode 0600,
    /// and holds `token`.
    fn assert_replaced_by_our_own(cache: &FileCache, path: &Path, token: &Token) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.file_type().is_file(), "a regular file");
        assert_eq!(meta.uid(), my_uid(path.parent().unwrap()));
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(block_on(cache.read(KEY)).unwrap().as_ref(), Some(token));
    }

    /// A valid entry in a file that `others` (group or world) can write is
    /// a miss with one warning; the next write replaces the file.
    fn writable_by_others_is_untrusted(name: &str, file_mode: u32) {
        let dir = temp_dir(name);
        let theirs = valid_token(&format!("planted-{name}"));
        let (cache, path) = cache_with(&dir, &theirs);
        set_mode(&path, file_mode);
        capture_logs();
        for _ in 0..3 {
            assert_eq!(read_promptly(&cache), None, "mode {file_mode:o} trusted");
        }
        let warnings = warnings_about(&path, &theirs);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let ours = valid_token("ours");
        block_on(cache.write(KEY, &ours)).unwrap();
        assert_replaced_by_our_own(&cache, &path, &ours);
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_group_writable_cache_file_is_not_trusted() {
        writable_by_others_is_untrusted("group-writable", 0o620);
    }

    pub fn an_other_writable_cache_file_is_not_trusted() {
        writable_by_others_is_untrusted("other-writable", 0o602);
    }

    pub fn a_cache_file_others_can_read_is_made_private_on_read() {
        let dir = temp_dir("world-readable");
        let token = valid_token("token-0644");
        let (cache, path) = cache_with(&dir, &token);
        set_mode(&path, 0o644);
        capture_logs();
        assert_eq!(read_promptly(&cache), Some(token.clone()));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(warnings_about(&path, &token).len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_cache_file_owned_by_another_user_is_not_trusted() {
        let dir = temp_dir("other-owner");
        let theirs = valid_token("planted-by-nobody");
        let (cache, path) = cache_with(&dir, &theirs);
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        capture_logs();
        assert_eq!(read_promptly(&cache), None);
        assert_eq!(read_promptly(&cache), None);
        assert_eq!(warnings_about(&path, &theirs).len(), 1);
        let ours = valid_token("ours");
        block_on(cache.write(KEY, &ours)).unwrap();
        assert_replaced_by_our_own(&cache, &path, &ours);
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_group_writable_lock_file_is_replaced_by_our_own() {
        let dir = temp_dir("lock-writable");
        let path = dir.join("token.json");
        let lock = dir.join("token.json.lock");
        std::fs::write(&lock, "").unwrap();
        set_mode(&lock, 0o660);
        let planted = std::fs::metadata(&lock).unwrap().ino();
        let cache = FileCache::new(&path);
        capture_logs();
        let lease = block_on(cache.try_lease(Duration::from_secs(5)))
            .unwrap()
            .expect("the lease");
        let meta = std::fs::symlink_metadata(&lock).unwrap();
        assert_ne!(meta.ino(), planted, "the planted lock file was used");
        assert_eq!(meta.mode() & 0o777, 0o600);
        // The lock taken is on the file now at the path: another handle
        // cannot take it.
        assert!(
            block_on(FileCache::new(&path).try_lease(Duration::from_secs(5)))
                .unwrap()
                .is_none()
        );
        drop(lease);
        let warnings: Vec<_> = logs_about(&lock.display().to_string())
            .into_iter()
            .filter(|(level, _)| *level == log::Level::Warn)
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_fifo_at_the_path_is_a_prompt_miss_and_replaced_by_the_next_write() {
        let dir = temp_dir("fifo");
        let path = dir.join("token.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let cache = FileCache::new(&path);
        assert_eq!(read_promptly(&cache), None);
        let ours = valid_token("ours");
        block_on(cache.write(KEY, &ours)).unwrap();
        assert_replaced_by_our_own(&cache, &path, &ours);
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_symlink_at_the_path_is_not_followed() {
        let dir = temp_dir("symlink");
        // Even to a valid entry of our own: someone else may have made the
        // link, and may point it anywhere.
        let elsewhere = dir.join("elsewhere.json");
        let token = valid_token("behind-a-link");
        block_on(FileCache::new(&elsewhere).write(KEY, &token)).unwrap();
        let path = dir.join("token.json");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let cache = FileCache::new(&path);
        capture_logs();
        assert_eq!(read_promptly(&cache), None);
        let warnings = warnings_about(&path, &token);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // Said as a symlink, not as whatever error opening it gave.
        assert!(warnings[0].contains("not followed"), "{warnings:?}");
        // The next write replaces the link, not what it points to.
        let ours = valid_token("ours");
        block_on(cache.write(KEY, &ours)).unwrap();
        assert_replaced_by_our_own(&cache, &path, &ours);
        assert_eq!(
            block_on(FileCache::new(&elsewhere).read(KEY)).unwrap(),
            Some(token)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_symlink_at_the_lock_path_is_replaced_and_the_lease_taken() {
        let dir = temp_dir("lock-symlink");
        let path = dir.join("token.json");
        let lock = dir.join("token.json.lock");
        let elsewhere = dir.join("elsewhere");
        std::fs::write(&elsewhere, "not a lock file").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &lock).unwrap();
        let cache = FileCache::new(&path);
        capture_logs();
        let lease = block_on(cache.try_lease(Duration::from_secs(5)))
            .expect("a symlink at the lock path is replaced, not an error")
            .expect("the lease");
        let meta = std::fs::symlink_metadata(&lock).unwrap();
        assert!(meta.file_type().is_file(), "the link is still there");
        assert_eq!(meta.mode() & 0o777, 0o600);
        // What the link pointed to is left alone.
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not a lock file");
        drop(lease);
        let warnings: Vec<_> = logs_about(&lock.display().to_string())
            .into_iter()
            .filter(|(level, line)| *level == log::Level::Warn && line.contains("symbolic link"))
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_symlink_to_dev_zero_is_a_prompt_miss() {
        let dir = temp_dir("dev-zero");
        let path = dir.join("token.json");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert_eq!(read_promptly(&FileCache::new(&path)), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A pid that was alive a moment ago and is not now.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    pub fn temporary_files_of_dead_or_old_writers_are_removed_by_the_next_write() {
        let dir = temp_dir("leftovers");
        let token = valid_token("leftover");
        let entry = |name: &str| {
            let path = dir.join(name);
            block_on(FileCache::new(&path).write(KEY, &token)).unwrap();
            std::fs::rename(&path, dir.join(format!(".{name}.tmp-src"))).unwrap();
            dir.join(format!(".{name}.tmp-src"))
        };
        let plant = |name: String| {
            std::fs::rename(entry("src.json"), dir.join(&name)).unwrap();
            dir.join(name)
        };
        let me = std::process::id();
        let age = |path: &Path, by: Duration| {
            let at = std::time::SystemTime::now() - by;
            let file = std::fs::File::options().write(true).open(path).unwrap();
            file.set_modified(at).unwrap();
        };
        let minute = Duration::from_secs(60);
        let dead = plant(format!(".token.json.{}.00000000deadbeef.tmp", dead_pid()));
        age(&dead, minute);
        // Just written by a pid we do not see: maybe a writer in another
        // PID namespace, still at work. Left for a few seconds.
        let just_now = plant(format!(".token.json.{}.00000000feedf00d.tmp", dead_pid()));
        let live = plant(format!(".token.json.{me}.0000000011112222.tmp"));
        age(&live, minute);
        let abandoned = plant(format!(".token.json.{me}.0000000033334444.tmp"));
        age(&abandoned, Duration::from_secs(3600));
        let unrelated = plant(format!(".other.json.{}.00000000deadbeef.tmp", dead_pid()));
        age(&unrelated, minute);

        block_on(FileCache::new(dir.join("token.json")).write(KEY, &valid_token("new"))).unwrap();
        assert!(!dead.exists(), "a dead writer's file stays");
        assert!(!abandoned.exists(), "an abandoned file stays");
        assert!(live.exists(), "a live writer's file was removed");
        assert!(just_now.exists(), "a file just written was removed");
        assert!(unrelated.exists(), "another cache's file was removed");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// As `nobody` (a child of this test, run through `setpriv`): a cache
    /// file of root's in a sticky folder is a miss, and the write fails
    /// with an error that says why.
    pub fn in_a_sticky_folder_another_users_file_cannot_be_replaced_and_the_error_says_so() {
        if let Ok(path) = std::env::var("TOKENKEEPER_TRUST_STICKY_CHILD") {
            let cache = FileCache::new(&path);
            assert_eq!(read_promptly(&cache), None);
            let e = block_on(cache.write(KEY, &valid_token("ours"))).unwrap_err();
            println!("CHILD-ERROR: {e}");
            return;
        }
        let dir = temp_dir("sticky");
        set_mode(&dir, 0o1777);
        let (_, path) = cache_with(&dir, &valid_token("roots"));
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "unix::in_a_sticky_folder_another_users_file_cannot_be_replaced_and_the_error_says_so",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TOKENKEEPER_TRUST_STICKY_CHILD", &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("CHILD-ERROR: ").map(|(_, e)| e))
            .unwrap_or_else(|| panic!("no error from the child: {stdout}"));
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(
            line.contains("another user") && line.contains("sticky"),
            "{line}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn an_entry_issued_in_the_future_is_corrupt() {
    let dir = temp_dir("future");
    let path = dir.join("token.json");
    let cache = FileCache::new(&path);
    let at = |issued_ms: u64| {
        Token::new_ms(
            AccessToken::new("from-the-future"),
            issued_ms,
            Duration::from_secs(3600),
            &LifetimePolicy::default(),
        )
    };
    // A minute ahead: another machine's clock may be.
    let skewed = at(now_ms() + 60_000);
    block_on(cache.write(KEY, &skewed)).unwrap();
    assert_eq!(read_promptly(&cache), Some(skewed));
    let future = at(now_ms() + 3_600_000);
    block_on(cache.write(KEY, &future)).unwrap();
    capture_logs();
    assert_eq!(read_promptly(&cache), None);
    assert_eq!(warnings_about(&path, &future).len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

fn an_entry_expiring_absurdly_far_away_is_corrupt() {
    let dir = temp_dir("absurd-expiry");
    let path = dir.join("token.json");
    let cache = FileCache::new(&path);
    let living = |lifetime: Duration| {
        Token::new_ms(
            AccessToken::new("forever"),
            now_ms(),
            lifetime,
            &LifetimePolicy::default(),
        )
    };
    let day = living(Duration::from_secs(86_400));
    block_on(cache.write(KEY, &day)).unwrap();
    assert_eq!(read_promptly(&cache), Some(day));
    for years in [2, 30, 500] {
        let absurd = living(Duration::from_secs(years * 366 * 86_400));
        block_on(cache.write(KEY, &absurd)).unwrap();
        assert_eq!(read_promptly(&cache), None, "{years} years");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn a_file_over_the_size_cap_is_a_miss_without_reading_it_all() {
    let dir = temp_dir("huge");
    let token = valid_token("padded");
    let (cache, path) = cache_with(&dir, &token);
    // A valid entry, then a megabyte of JSON whitespace: valid JSON, but no
    // honest entry is that big.
    let mut contents = std::fs::read(&path).unwrap();
    contents.resize(contents.len() + (1 << 20), b' ');
    std::fs::write(&path, &contents).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(read_promptly(&cache), None);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The size cap is on what no honest entry reaches, not below it: an entry
/// padded (with JSON whitespace in front, so that its last byte ends it) to
/// exactly the cap is read whole, and one more byte makes it a miss.
fn an_entry_of_exactly_the_size_cap_is_read_one_byte_more_is_not() {
    const CAP: usize = 64 * 1024;
    let dir = temp_dir("at-the-cap");
    let token = valid_token("padded-to-the-cap");
    let (cache, path) = cache_with(&dir, &token);
    let entry = std::fs::read(&path).unwrap();
    let mut contents = vec![b' '; CAP - entry.len()];
    contents.extend_from_slice(&entry);
    let write = |contents: &[u8]| {
        std::fs::write(&path, contents).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    };
    write(&contents);
    assert_eq!(read_promptly(&cache), Some(token.clone()));
    contents.insert(0, b' ');
    write(&contents);
    assert_eq!(read_promptly(&cache), None);
    std::fs::remove_dir_all(dir).unwrap();
}

/// No file yet is the usual first run: a miss, and nothing to warn about.
fn a_missing_file_is_a_quiet_miss() {
    let dir = temp_dir("missing");
    let path = dir.join("token.json");
    capture_logs();
    assert_eq!(read_promptly(&FileCache::new(&path)), None);
    let records = logs_about(&path.display().to_string());
    assert!(records.is_empty(), "{records:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every write goes through a temporary file of its own (a name with the
/// writer's pid and a random part): writers at the same time, in one
/// process or several, never trip over each other's, and every write lands.
fn writers_at_the_same_time_never_collide_on_a_temporary_file() {
    let dir = temp_dir("concurrent-writers");
    let path = dir.join("token.json");
    let token = valid_token("written-by-many");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let cache = FileCache::new(&path);
                for _ in 0..50 {
                    block_on(cache.write(KEY, &token)).expect("every write lands");
                }
            });
        }
    });
    assert_eq!(read_promptly(&FileCache::new(&path)), Some(token));
    std::fs::remove_dir_all(dir).unwrap();
}
