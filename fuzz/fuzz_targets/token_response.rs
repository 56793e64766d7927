//! Token endpoint responses: any body with HTTP 200, and `STATUS\n` + body with that status.
//! Input format and invariants: `fuzz/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: tokenkeeper_fuzz::init_fuzz_target(),
    |data: &[u8]| tokenkeeper_fuzz::token_response(data)
);
