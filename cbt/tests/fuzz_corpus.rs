//! Replays the seed corpus of the `cbt_decode` fuzz target: every input must decode or give a
//! typed error, and whatever decodes must round-trip through base64.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::fs;

use cbt::{ChangedBlocks, Error};

#[test]
fn decode_corpus_replays_without_panics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/cbt_decode");
    let mut decoded = 0;
    let mut rejected = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        match cbt::fuzzing::decode(&data) {
            Ok(map) => {
                let again = ChangedBlocks::from_base64(
                    map.to_base64(),
                    map.virtual_size(),
                    map.granularity(),
                )
                .unwrap();
                assert_eq!(again, map, "{}", path.display());
                decoded += 1;
            }
            Err(error) => {
                // Typed errors carry a message; the point is that they are errors, not panics.
                assert!(!error.to_string().is_empty());
                rejected += 1;
            }
        }
    }
    assert!(
        decoded >= 2 && rejected >= 2,
        "corpus too narrow: {decoded} ok, {rejected} errors"
    );
}

#[test]
fn known_corpus_entries_give_the_expected_outcome() {
    let read = |name: &str| {
        fs::read(format!(
            "{}/../fuzz/corpus/cbt_decode/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    assert!(matches!(
        cbt::fuzzing::decode(&read("invalid_char")),
        Err(Error::InvalidBase64(_))
    ));
    assert!(matches!(
        cbt::fuzzing::decode(&read("surplus_bits")),
        Err(Error::BitsBeyondEnd { .. })
    ));
    assert!(matches!(
        cbt::fuzzing::decode(&read("short")),
        Err(Error::BitmapTooShort { .. })
    ));
    let map = cbt::fuzzing::decode(&read("xenapi_5_2")).unwrap();
    assert_eq!(map.changed_block_count(), 3);
}
