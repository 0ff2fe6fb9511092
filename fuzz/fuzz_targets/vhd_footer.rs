//! Fuzzes the 512-byte footer parser (`vhd::fuzzing::footer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vhd::fuzzing::footer(data);
});
