//! Fuzzes the 512-byte footer parser (`vhd::fuzzing::footer`): never panics, and
//! whatever parses encodes and parses back to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(round_trip) = vhd::fuzzing::footer(data) {
        assert_eq!(round_trip.reparsed, round_trip.parsed, "footer round trip");
    }
});
