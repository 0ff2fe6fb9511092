//! Fuzzes the random-access reader over an in-memory file (`vhd::fuzzing::file`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vhd::fuzzing::file(data);
});
