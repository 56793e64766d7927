//! Replays the fuzz corpus on stable Rust, without `cargo fuzz`: every
//! committed seed in `fuzz/corpus/<target>/` and every regression input in
//! `fuzz/regressions/<target>/` goes through the same checks as the fuzz
//! targets (`fuzz/src/lib.rs`, included here by path): no panic, and the
//! invariants hold. Regression inputs listed in `KNOWN_OPEN` there must
//! still fail; one that passes means its issue was fixed and the entry (and
//! its tolerance) should go.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenkeeper::cache::{decode_entry, CacheKey, FileCache, TokenCache};
use tokenkeeper::{AccessToken, IdToken, LifetimePolicy, RefreshToken, Token};

// `init_fuzz_target` is for the fuzz targets only.
#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of a folder, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on `bytes`; the panic message if it panicked.
fn run(check: fn(&[u8]), bytes: &[u8]) -> Option<String> {
    panic::catch_unwind(AssertUnwindSafe(|| check(bytes)))
        .err()
        .map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".to_owned())
        })
}

fn replay(target: &str, check: fn(&[u8])) {
    checks::tolerate_known_issues(false);
    let seeds = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        seeds.len() >= 30,
        "only {} seeds for {target} in fuzz/corpus/{target}",
        seeds.len()
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut failures = Vec::new();
    for path in seeds.iter().chain(&regressions) {
        let bytes = fs::read(path).expect("a readable corpus file");
        let name = format!(
            "{target}/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        let known = checks::KNOWN_OPEN.iter().find(|(n, _, _)| *n == name);
        match (run(check, &bytes), known) {
            (None, None) => {}
            (Some(message), Some((_, expected, _))) if message.contains(expected) => {}
            (Some(message), _) => failures.push(format!("{name}: {message}")),
            (None, Some(_)) => failures.push(format!(
                "{name} passes now: remove it from KNOWN_OPEN in fuzz/src/lib.rs \
                 (and its tolerance, if no other entry needs it)"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed:\n{}",
        failures.len(),
        seeds.len() + regressions.len(),
        failures.join("\n")
    );
}

#[test]
fn token_response_corpus() {
    replay("token_response", checks::token_response);
}

#[test]
fn error_response_corpus() {
    replay("error_response", checks::error_response);
}

#[test]
fn file_cache_corpus() {
    replay("file_cache", checks::file_cache);
}

#[test]
fn every_known_open_input_exists() {
    for (name, _, issue) in checks::KNOWN_OPEN {
        let path = fuzz_dir().join("regressions").join(name);
        assert!(
            path.is_file(),
            "{name} ({issue}) is not in fuzz/regressions"
        );
    }
}

/// The seed `written-by-file-cache` is a file `FileCache` wrote, and reads
/// back as the token it wrote; set `FUZZ_WRITE_SEEDS=1` to write it anew.
#[test]
fn file_cache_seed_is_what_file_cache_writes() {
    let token = Token::new(
        AccessToken::new("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzZWVkIn0.c2lnbmF0dXJl"),
        1_700_000_000_000,
        Duration::from_secs(3600),
        &LifetimePolicy::default(),
    )
    .with_refresh_token(RefreshToken::new("rt-seed-1"))
    .with_id_token(IdToken::new("id-seed-1"))
    .with_scope("read write");
    let dir = std::env::temp_dir().join(format!("tokenkeeper-fuzz-seed-{}", std::process::id()));
    let cache = FileCache::new(dir.join("token.json"));
    let key = CacheKey::builder().field("client_id", "seed").build();
    futures_lite::future::block_on(cache.write(key, &token)).expect("the cache writes");
    let written = fs::read(cache.path()).expect("the cache file");
    fs::remove_dir_all(&dir).expect("the folder is removed");

    let entry: serde_json::Value = serde_json::from_slice(&written).expect("JSON");
    assert_eq!(
        entry["version"],
        checks::CACHE_FORMAT_VERSION,
        "update CACHE_FORMAT_VERSION in fuzz/src/lib.rs and the file_cache seeds"
    );
    let seed = fuzz_dir().join("corpus/file_cache/written-by-file-cache");
    if std::env::var_os("FUZZ_WRITE_SEEDS").is_some() {
        fs::write(&seed, &written).expect("the seed is written");
    }
    let seed_bytes = fs::read(&seed).expect("the seed written by FileCache");
    assert_eq!(
        decode_entry(&seed_bytes).expect("the seed decodes"),
        (key, token.clone())
    );
    assert_eq!(
        decode_entry(&written).expect("the file decodes"),
        (key, token)
    );
}

/// The file-cache seeds say what they hold: `ok-*` seeds decode and `bad-*`
/// seeds do not, so a format change that turns every seed into an error (an
/// old version, say) is caught here, not only by the fuzzer's coverage.
#[test]
fn file_cache_seeds_decode_as_their_names_say() {
    for path in files(&fuzz_dir().join("corpus/file_cache")) {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let decoded = decode_entry(&fs::read(&path).expect("a readable seed"));
        if name.starts_with("ok-") || name == "written-by-file-cache" {
            assert!(decoded.is_ok(), "{name}: {:?}", decoded.err());
        } else if name.starts_with("bad-") {
            assert!(decoded.is_err(), "{name} decodes");
        }
    }
}
