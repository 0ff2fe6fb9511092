//! Fuzzes the streaming XVA reader (tar framing, decompression, ova.xml, chunk arithmetic,
//! checksums) through `xva::verify`, which keeps no data, so memory stays bounded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xva::verify(data.to_vec().into());
});
