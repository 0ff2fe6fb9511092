//! Replays the fuzz corpora through the fuzz targets' entry points: every input returns Ok or a
//! typed error, and what parses round-trips.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::path::Path;

use xva::model::OvaXml;
use xva::model::value::Value;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus")).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect()
}

#[test]
fn tar_reader_corpus() {
    let mut accepted = 0;
    for (name, data) in corpus("xva_tar_reader") {
        match xva::verify(data.into()) {
            Ok(verified) => {
                accepted += 1;
                assert!(!verified.layout.disks.is_empty(), "{name}");
            }
            Err(error) => {
                // A typed error with a message; never a panic.
                assert!(!error.to_string().is_empty(), "{name}");
            }
        }
    }
    assert!(accepted >= 5, "the seed archives should verify");
}

#[test]
fn ova_xml_corpus() {
    let mut parsed = 0;
    for (name, data) in corpus("xva_ova_xml") {
        if let Ok(value) = Value::parse(&data) {
            let xml = value.to_xml();
            assert_eq!(
                Value::parse(xml.as_bytes()).unwrap().to_xml(),
                xml,
                "{name}"
            );
        }
        if let Ok(ova) = OvaXml::parse(&data) {
            parsed += 1;
            let xml = ova.to_xml();
            assert_eq!(
                OvaXml::parse(xml.as_bytes()).unwrap().to_xml(),
                xml,
                "{name}"
            );
            let _ = ova.streamed_disks();
            let _ = ova.check_importable();
        }
    }
    assert!(
        parsed >= 2,
        "the seed files built.xml and xo-fixture.xml should parse"
    );
}
