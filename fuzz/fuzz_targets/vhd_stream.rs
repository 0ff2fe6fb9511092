//! Fuzzes the push stream decoder, with a chunk size taken from the first byte (`vhd::fuzzing::stream`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vhd::fuzzing::stream(data);
});
