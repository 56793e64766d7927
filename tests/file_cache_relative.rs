//! A file cache named by a bare file name (`FileCache::new("token.json")`)
//! lives in the working directory: its folder is ".", not "", for the
//! write, the lease and the clean-up of what dead writers left.
//!
//! The working directory is the whole process's, and the other test files'
//! tests run in threads that share it, so the test re-runs this test binary
//! as a child, started in a folder of its own, running this one test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use futures_lite::future::block_on;
use tokenkeeper::cache::{CacheKey, FileCache, TokenCache};
use tokenkeeper::{AccessToken, LifetimePolicy, Token};

/// Set in the child: it runs the test's body in its working directory.
const CHILD: &str = "TOKENKEEPER_TEST_RELATIVE_CACHE_CHILD";
const NAME: &str = "tok.json";

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-relative-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A temporary file as a writer leaves it when it dies before its rename,
/// last changed `age` ago.
fn leftover(dir: &Path, age: Duration) -> PathBuf {
    let path = dir.join(format!(".{NAME}.{}.{:016x}.tmp", std::process::id(), 7));
    std::fs::write(&path, b"{\"half\":").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    path
}

/// The child's part, in the folder the parent made for it.
fn in_the_working_directory() {
    let here = std::env::current_dir().unwrap();
    let abandoned = leftover(&here, Duration::from_secs(11 * 60));
    let cache = FileCache::new(NAME);
    let key = CacheKey::builder().field("client_id", "relative").build();
    let token = Token::new_ms(
        AccessToken::new("relative-token"),
        1_000,
        Duration::from_secs(60),
        &LifetimePolicy::default(),
    );
    block_on(async {
        cache.write(key, &token).await.unwrap();
        assert_eq!(cache.read(key).await.unwrap(), Some(token.clone()));
        let lease = cache.try_lease(Duration::from_secs(5)).await.unwrap();
        assert!(
            lease.is_some(),
            "no lease on {NAME}.lock in the working directory"
        );
    });
    assert!(here.join(NAME).is_file());
    assert!(here.join(format!("{NAME}.lock")).is_file());
    assert!(
        !abandoned.exists(),
        "the write left an abandoned temporary file of {NAME} in its folder"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(here.join(NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_cache_named_by_a_bare_file_name_lives_in_the_working_directory() {
    if std::env::var_os(CHILD).is_some() {
        in_the_working_directory();
        return;
    }
    let dir = scratch_dir();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_cache_named_by_a_bare_file_name_lives_in_the_working_directory",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An empty run (the name filtered everything out) would pass too.
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}\n{stderr}"
    );
    assert!(
        out.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(dir.join(NAME).is_file(), "no {NAME} in the child's folder");
    std::fs::remove_dir_all(&dir).unwrap();
}
