//! File-cache contents through `FileCache::decode`.
//! Input format and invariants: `fuzz/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: tokenkeeper_fuzz::init_fuzz_target(),
    |data: &[u8]| tokenkeeper_fuzz::file_cache(data)
);
