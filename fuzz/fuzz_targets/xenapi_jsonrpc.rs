//! Fuzzes the jsonrpc decoders of `xenapi` (`xenapi::fuzzing::jsonrpc`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xenapi::fuzzing::jsonrpc(data);
});
