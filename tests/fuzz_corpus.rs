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

/// The fuzz targets, each with its folder under `fuzz/corpus/` and, when it
/// has regression inputs, under `fuzz/regressions/`.
const TARGETS: [&str; 3] = ["token_response", "error_response", "file_cache"];

/// The regression inputs committed so far (`<target>/<file>`): the replay
/// must find at least these. An input moved or renamed, or a folder
/// renamed, would otherwise drop out of the replay unnoticed (`files`
/// finds no folder as an empty one).
const REGRESSIONS: [&str; 4] = [
    "error_response/secret-split-by-control-char-html",
    "error_response/secret-split-by-escaped-control-char-uri",
    "token_response/secret-split-by-control-char-excerpt",
    "token_response/secret-split-by-escaped-control-char-description",
];

/// Every folder in `fuzz/regressions/` is a fuzz target's (a folder of
/// another name would never be replayed), the committed regression inputs
/// are all there, and every `KNOWN_OPEN` entry names one of them.
#[test]
fn every_regression_input_is_replayed_and_every_known_open_one_exists() {
    let mut inputs = Vec::new();
    for entry in fs::read_dir(fuzz_dir().join("regressions")).expect("fuzz/regressions") {
        let folder = entry.expect("a readable folder entry").path();
        let target = folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        assert!(
            folder.is_dir() && TARGETS.contains(&target.as_str()),
            "fuzz/regressions/{target} is not the folder of a fuzz target ({TARGETS:?}): \
             its inputs are never replayed"
        );
        for input in files(&folder) {
            let name = input.file_name().unwrap_or_default().to_string_lossy();
            inputs.push(format!("{target}/{name}"));
        }
    }
    assert!(
        inputs.len() >= REGRESSIONS.len(),
        "{} regression inputs: {inputs:?}",
        inputs.len()
    );
    for name in REGRESSIONS {
        assert!(
            inputs.iter().any(|i| i == name),
            "{name} is not in fuzz/regressions: {inputs:?}"
        );
    }
    let missing: Vec<String> = checks::KNOWN_OPEN
        .iter()
        .filter(|(name, _, _)| !inputs.iter().any(|i| i == name))
        .map(|(name, _, issue)| format!("{name} ({issue})"))
        .collect();
    assert!(
        missing.is_empty(),
        "KNOWN_OPEN names inputs that are not in fuzz/regressions: {missing:?}"
    );
}

/// The seed `written-by-file-cache` is a file `FileCache` wrote, and reads
/// back as the token it wrote; set `FUZZ_WRITE_SEEDS=1` to write it anew.
#[test]
fn file_cache_seed_is_what_file_cache_writes() {
    let token = Token::new_ms(
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
    let (mut ok, mut bad) = (0, 0);
    for path in files(&fuzz_dir().join("corpus").join("file_cache")) {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let decoded = decode_entry(&fs::read(&path).expect("a readable seed"));
        if name.starts_with("ok-") || name == "written-by-file-cache" {
            assert!(decoded.is_ok(), "{name}: {:?}", decoded.err());
            ok += 1;
        } else if name.starts_with("bad-") {
            assert!(decoded.is_err(), "{name} decodes");
            bad += 1;
        } else {
            panic!("{name}: a file-cache seed is named ok-*, bad-* or written-by-file-cache");
        }
    }
    // As committed: 9 ok-* seeds and the one FileCache wrote, 42 bad-*.
    assert!(
        ok >= 10 && bad >= 40,
        "{ok} seeds that decode, {bad} that do not"
    );
}
