//! Fuzz target: arbitrary peer bytes into `nbd_client::fuzzing::reply_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nbd_client::fuzzing::reply_stream(data);
});
