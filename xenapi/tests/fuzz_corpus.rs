//! Replays the fuzz seed corpora (`fuzz/corpus/xenapi_*`) through the fuzz entry points: every
//! input must come back as `Ok` or a typed error, never a panic; the well-formed seeds must
//! decode.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::fs;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus")).join(target);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

#[test]
fn xmlrpc_corpus() {
    for (name, data) in corpus("xenapi_xmlrpc") {
        let outcome = xenapi::fuzzing::xmlrpc(&data);
        // Hand-written seeds (with an extension) are well-formed; fuzzer finds may not be.
        if name.ends_with(".xml") && name != "task_result.xml" {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
    }
}

#[test]
fn jsonrpc_corpus() {
    for (name, data) in corpus("xenapi_jsonrpc") {
        let outcome = xenapi::fuzzing::jsonrpc(&data);
        if name.ends_with(".json") {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
    }
}

#[test]
fn chunked_corpus() {
    for (name, data) in corpus("xenapi_chunked") {
        let outcome = xenapi::fuzzing::chunked(&data);
        if name.ends_with(".bin") {
            let expect_ok = !name.starts_with("trailing");
            assert_eq!(outcome.is_ok(), expect_ok, "{name}: {outcome:?}");
        }
    }
}
