//! Replays the fuzz corpora (`fuzz/corpus/vhd_*`) through the same entry points as the fuzz
//! targets: every input returns Ok or a typed error, and the named seeds give their known
//! outcome.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::path::Path;

use vhd::Error;

fn corpus(target: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus")).join(target);
    let inputs: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    assert!(!inputs.is_empty(), "empty corpus {}", dir.display());
    inputs
}

#[test]
fn footer_corpus() {
    let inputs = corpus("vhd_footer");
    for data in inputs.values() {
        if let Ok(round_trip) = vhd::fuzzing::footer(data) {
            assert_eq!(round_trip.reparsed, round_trip.parsed);
        }
    }
    assert!(vhd::fuzzing::footer(&inputs["xapi-dynamic"]).is_ok());
    assert_eq!(
        vhd::fuzzing::footer(&inputs["qemu-fixed"])
            .unwrap()
            .parsed
            .disk_type,
        vhd::DiskType::Fixed
    );
    assert!(matches!(
        vhd::fuzzing::footer(&inputs["bad-checksum"]),
        Err(Error::BadChecksum { .. })
    ));
    assert!(matches!(
        vhd::fuzzing::footer(&inputs["short"]),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn header_corpus() {
    let inputs = corpus("vhd_header");
    for data in inputs.values() {
        if let Ok(round_trip) = vhd::fuzzing::header(data) {
            assert_eq!(round_trip.reparsed, round_trip.parsed);
        }
    }
    let delta = vhd::fuzzing::header(&inputs["xapi-delta-macx"])
        .unwrap()
        .parsed;
    assert_eq!(
        delta.parent_locators[0].unwrap().platform_code,
        vhd::PlatformCode::MacX
    );
    let child = vhd::fuzzing::header(&inputs["vhdlib-w2ku"]).unwrap().parsed;
    assert_eq!(child.parent_unicode_name, "vhdlib-parent.vhd");
    // Two byte-order marks before "x": both dropped, so the name round-trips (review finding).
    let marked = vhd::fuzzing::header(&inputs["double-byte-order-mark"]).unwrap();
    assert_eq!(marked.parsed.parent_unicode_name, "x");
    assert!(matches!(
        vhd::fuzzing::header(&inputs["short"]),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn stream_corpus() {
    let inputs = corpus("vhd_stream");
    for data in inputs.values() {
        let _ = vhd::fuzzing::stream(data);
    }
    // Footer, header, BAT, trailing footer.
    assert_eq!(vhd::fuzzing::stream(&inputs["xapi-empty"]).unwrap(), 4);
    assert_eq!(
        vhd::fuzzing::stream(&inputs["xapi-delta-empty"]).unwrap(),
        4
    );
    assert!(matches!(
        vhd::fuzzing::stream(&inputs["one-block-truncated"]),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        vhd::fuzzing::stream(&inputs["bat-into-header"]),
        Err(Error::BatEntryOutOfRange { .. })
    ));
}

#[test]
fn file_corpus() {
    let inputs = corpus("vhd_file");
    for data in inputs.values() {
        let _ = vhd::fuzzing::file(data);
    }
    assert_eq!(vhd::fuzzing::file(&inputs["fixed-4k"]).unwrap(), 4096);
    assert_eq!(vhd::fuzzing::file(&inputs["xapi-empty"]).unwrap(), 4 << 20);
    assert!(matches!(
        vhd::fuzzing::file(&inputs["xapi-delta-empty"]),
        Err(Error::MissingParent { .. })
    ));
    assert!(matches!(
        vhd::fuzzing::file(&inputs["vhdlib-child-head"]),
        Err(Error::BatEntryOutOfRange { .. })
    ));
}
