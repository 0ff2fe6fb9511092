//! Fuzzes the 1024-byte dynamic header parser (`vhd::fuzzing::header`): never panics, and
//! whatever parses encodes and parses back to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(round_trip) = vhd::fuzzing::header(data) {
        assert_eq!(round_trip.reparsed, round_trip.parsed, "header round trip");
    }
});
