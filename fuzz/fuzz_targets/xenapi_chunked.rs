//! Fuzzes the chunked decoders of `xenapi` (`xenapi::fuzzing::chunked`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xenapi::fuzzing::chunked(data);
});
