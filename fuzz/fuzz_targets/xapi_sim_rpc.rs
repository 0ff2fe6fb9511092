//! Fuzzes the simulator's XAPI dispatcher: arbitrary bytes as an XML-RPC and a JSON-RPC request
//! body to a fresh simulated pool, on a runtime with paused time (calls may sleep).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let sim = xapi_sim::pool::build_offline(&xapi_sim::PoolSpec::new("fuzz")).expect("pool");
    runtime.block_on(xapi_sim::rpc::dispatch_untrusted(&sim, data));
});
