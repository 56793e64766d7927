//! RFC 6749 §5.2 error responses: status 400 + first byte % 200, the rest the body; its first line as Retry-After.
//! Input format and invariants: `fuzz/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: tokenkeeper_fuzz::init_fuzz_target(),
    |data: &[u8]| tokenkeeper_fuzz::error_response(data)
);
