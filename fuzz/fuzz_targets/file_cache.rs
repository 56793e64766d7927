//! File-cache contents through `cache::decode_entry` (the format the file
//! and Redis caches share).
//! Input format and invariants: `fuzz/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: tokenkeeper_fuzz::init_fuzz_target(),
    |data: &[u8]| tokenkeeper_fuzz::file_cache(data)
);
