//! Fuzz target: arbitrary peer bytes into `nbd_client::fuzzing::client_handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nbd_client::fuzzing::client_handshake(data);
});
