//! Fuzzes the xmlrpc decoders of `xenapi` (`xenapi::fuzzing::xmlrpc`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xenapi::fuzzing::xmlrpc(data);
});
