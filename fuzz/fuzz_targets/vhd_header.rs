//! Fuzzes the 1024-byte dynamic header parser (`vhd::fuzzing::header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vhd::fuzzing::header(data);
});
