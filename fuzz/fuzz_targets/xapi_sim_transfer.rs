//! Fuzzes the simulator's transfer-handler and NBD-server parsers: URL queries, cookies,
//! `Authorization` headers, NBD export names and request headers, `format=tar` bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _accepted = xapi_sim::fuzzing::transfer_inputs(data);
});
