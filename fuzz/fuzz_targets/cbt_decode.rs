//! Fuzzes the changed-block bitmap decoder (`cbt::fuzzing::decode`): never panics, and whatever
//! decodes re-encodes to a bitmap that decodes to the same map.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(map) = cbt::fuzzing::decode(data) {
        let again = cbt::ChangedBlocks::from_base64(
            map.to_base64(),
            map.virtual_size(),
            map.granularity(),
        );
        assert_eq!(again.ok().as_ref(), Some(&map));
    }
});
