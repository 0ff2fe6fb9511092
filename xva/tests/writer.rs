//! The writer: xapi's tar flavour and entry order, sparseness rules, zero-copy, misuse errors,
//! and the async adapters.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use bytes::Bytes;
use common::{assemble, export_with_disks, tar_entries};
use futures::StreamExt as _;
use xva::model::records::Vdi;
use xva::model::{ExportId, OvaXml, Version};
use xva::{
    ArchiveWriter, ByteOffset, ChecksumKind, DiskMismatchProblem, DiskSource, Error, Event, Extent,
    ExtentProblem, WriteOptions,
};

const MIB: u64 = 1 << 20;

fn names(archive: &[u8]) -> Vec<String> {
    tar_entries(archive)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn xapi_tar_flavour_and_entry_order() {
    let (ova, ids) = export_with_disks(&[5 * MIB, 2 * MIB]);
    let disk = ids[0].as_str();
    let options = WriteOptions {
        mtime: 1_700_000_000,
        ..WriteOptions::default()
    };
    // Data only in chunk 2 of the first disk; the second disk is empty.
    let data = Bytes::from(vec![0x5a; 4096]);
    let archive = xva::write_all(
        &ova,
        vec![vec![(ByteOffset::new(2 * MIB + 512), data)], vec![]],
        options,
    )
    .unwrap();
    // ova.xml first; chunks 0, 2 and 4 (the last) of the first disk, 0 and 1 of the second;
    // each chunk followed by its companion.
    let other = ids[1].as_str();
    let expected: Vec<String> = [
        "ova.xml".to_owned(),
        format!("{disk}/00000000"),
        format!("{disk}/00000000.xxhash"),
        format!("{disk}/00000002"),
        format!("{disk}/00000002.xxhash"),
        format!("{disk}/00000004"),
        format!("{disk}/00000004.xxhash"),
        format!("{other}/00000000"),
        format!("{other}/00000000.xxhash"),
        format!("{other}/00000001"),
        format!("{other}/00000001.xxhash"),
    ]
    .into();
    assert_eq!(names(&archive), expected);
    // V7 headers: mode 0400, typeflag NUL, no magic; ova.xml carries the mtime, chunks 0.
    assert_eq!(&archive[100..108], b"0000400\0");
    assert_eq!(archive[156], 0);
    assert_eq!(&archive[257..265], &[0; 8]);
    assert_eq!(
        &archive[136..148],
        format!("{:011o}\0", 1_700_000_000).as_bytes()
    );
    let chunk_header = 512 + ova.to_xml().len().div_ceil(512) * 512;
    assert_eq!(
        &archive[chunk_header + 136..chunk_header + 148],
        b"00000000000\0"
    );
    // Two zero blocks at the end and no record padding.
    assert!(
        archive[archive.len() - 1024..]
            .iter()
            .all(|byte| *byte == 0)
    );
    assert_eq!(archive.len() % 512, 0);
    let entries = tar_entries(&archive);
    let payload: usize = entries
        .iter()
        .map(|(_, data)| 512 + data.len().div_ceil(512) * 512)
        .sum();
    assert_eq!(archive.len(), payload + 1024);
}

#[test]
fn zero_chunks_are_skipped_unless_asked_to_keep_them() {
    let (ova, ids) = export_with_disks(&[4 * MIB]);
    let disk = ids[0].as_str();
    let zeros = vec![(
        ByteOffset::new(MIB),
        Bytes::from(vec![0u8; usize::try_from(MIB).unwrap()]),
    )];
    let skipped = xva::write_all(&ova, vec![zeros.clone()], WriteOptions::default()).unwrap();
    assert!(!names(&skipped).contains(&format!("{disk}/00000001")));
    let kept = xva::write_all(
        &ova,
        vec![zeros],
        WriteOptions {
            skip_zero_chunks: false,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    assert!(names(&kept).contains(&format!("{disk}/00000001")));
    // Holes without data are never written, except the first and last chunks.
    assert!(!names(&kept).contains(&format!("{disk}/00000002")));
}

#[test]
fn small_extents_are_assembled_and_partial_last_chunk_is_exact() {
    let size = 2 * MIB + 3000;
    let (ova, _) = export_with_disks(&[size]);
    let mut raw = vec![0u8; usize::try_from(size).unwrap()];
    for (index, byte) in raw.iter_mut().enumerate() {
        if index % 3000 < 700 {
            *byte = u8::try_from(index % 251).unwrap() | 1;
        }
    }
    // 700-byte extents every 3000 bytes: many per chunk, some straddling chunk boundaries.
    let ranges: Vec<(u64, u64)> = (0..size)
        .step_by(3000)
        .map(|start| (start, 700.min(size - start)))
        .collect();
    let archive = xva::write_all(
        &ova,
        vec![common::extents_of(&raw, &ranges)],
        WriteOptions::default(),
    )
    .unwrap();
    let entries = tar_entries(&archive);
    assert!(entries.last().unwrap().0.ends_with("00000002.xxhash"));
    assert_eq!(entries[entries.len() - 2].1.len(), 3000);
    let (layout, blocks) = xva::read_all(archive).unwrap();
    assert_eq!(assemble(layout.disks[0].virtual_size, &blocks, 0), raw);
}

#[test]
fn whole_chunk_extents_are_moved_not_copied() {
    let (ova, _) = export_with_disks(&[2 * MIB]);
    let mut writer = ArchiveWriter::new(&ova, WriteOptions::default()).unwrap();
    writer.begin_disk().unwrap().unwrap();
    let data = Bytes::from(vec![7u8; usize::try_from(2 * MIB).unwrap()]);
    let range = data.as_ptr_range();
    writer.push_extent(ByteOffset::ZERO, data).unwrap();
    writer.end_disk().unwrap();
    let mut shared = 0;
    while let Some(frame) = writer.pop_output() {
        if range.contains(&frame.as_ptr()) {
            shared += 1;
        }
    }
    assert_eq!(shared, 2, "both chunks should be slices of the extent");
}

#[test]
fn misuse_and_bad_extents_are_typed_errors() {
    let (ova, _) = export_with_disks(&[2 * MIB]);
    let mut writer = ArchiveWriter::new(&ova, WriteOptions::default()).unwrap();
    assert!(matches!(
        writer.push_extent(ByteOffset::ZERO, Bytes::from_static(b"x")),
        Err(Error::WriterState(_))
    ));
    assert!(matches!(writer.finish(), Err(Error::WriterState(_))));
    writer.begin_disk().unwrap().unwrap();
    assert!(matches!(writer.begin_disk(), Err(Error::WriterState(_))));
    writer
        .push_extent(ByteOffset::new(100), Bytes::from_static(b"abc"))
        .unwrap();
    assert!(matches!(
        writer.push_extent(ByteOffset::new(101), Bytes::from_static(b"x")),
        Err(Error::BadExtent {
            problem: ExtentProblem::Overlap { previous_end: 103 },
            ..
        })
    ));
    assert!(matches!(
        writer.push_extent(ByteOffset::new(2 * MIB - 1), Bytes::from_static(b"xy")),
        Err(Error::BadExtent {
            problem: ExtentProblem::BeyondDisk { .. },
            ..
        })
    ));
    writer.end_disk().unwrap();
    assert!(writer.begin_disk().unwrap().is_none());
    writer.finish().unwrap();
    assert!(writer.is_finished());

    // A model xapi would refuse is refused up front.
    let mut bad = ova.clone();
    bad.objects[0]
        .snapshot
        .insert("is_a_template", xva::model::value::Value::from("0"));
    assert!(matches!(
        ArchiveWriter::new(&bad, WriteOptions::default()),
        Err(Error::FieldType { .. })
    ));
}

#[test]
fn a_small_first_disk_makes_later_disks_dense() {
    // Importers size gaps by the archive's first chunk, here 4 KiB: so every chunk of the
    // second disk is written and the archive reads back right.
    let (ova, ids) = export_with_disks(&[4096, 3 * MIB]);
    let data = Bytes::from(vec![3u8; 10]);
    let archive = xva::write_all(
        &ova,
        vec![vec![], vec![(ByteOffset::new(2 * MIB), data.clone())]],
        WriteOptions::default(),
    )
    .unwrap();
    assert!(names(&archive).contains(&format!("{}/00000001", ids[1])));
    let (layout, blocks) = xva::read_all(archive).unwrap();
    let raw = assemble(layout.disks[1].virtual_size, &blocks, 1);
    assert_eq!(&raw[usize::try_from(2 * MIB).unwrap()..][..10], &data[..]);
}

fn source(id: &ExportId, size: u64, extents: Vec<Extent>) -> DiskSource {
    DiskSource::from_extents(id.clone(), size, extents)
}

#[tokio::test]
async fn archive_stream_checks_sources_against_the_model() {
    let (ova, ids) = export_with_disks(&[MIB, 2 * MIB]);
    let options = WriteOptions::default();
    let missing = xva::archive_stream(&ova, vec![source(&ids[0], MIB, vec![])], options);
    assert!(matches!(
        missing.err(),
        Some(Error::DiskMismatch {
            problem: DiskMismatchProblem::NoSource,
            ..
        })
    ));
    let wrong_size = xva::archive_stream(
        &ova,
        vec![source(&ids[0], MIB, vec![]), source(&ids[1], MIB, vec![])],
        options,
    );
    assert!(matches!(
        wrong_size.err(),
        Some(Error::DiskMismatch {
            problem: DiskMismatchProblem::Size { .. },
            ..
        })
    ));
    let extra = xva::archive_stream(
        &ova,
        vec![
            source(&ids[0], MIB, vec![]),
            source(&ids[1], 2 * MIB, vec![]),
            source(&ExportId::new("Ref:99"), 1, vec![]),
        ],
        options,
    );
    assert!(matches!(
        extra.err(),
        Some(Error::DiskMismatch {
            problem: DiskMismatchProblem::NotStreamed,
            ..
        })
    ));
    let duplicate = xva::archive_stream(
        &ova,
        vec![
            source(&ids[0], MIB, vec![]),
            source(&ids[0], MIB, vec![]),
            source(&ids[1], 2 * MIB, vec![]),
        ],
        options,
    );
    assert!(matches!(
        duplicate.err(),
        Some(Error::DiskMismatch {
            problem: DiskMismatchProblem::DuplicateSource,
            ..
        })
    ));
}

#[tokio::test]
async fn a_failing_source_fails_the_stream() {
    let (ova, ids) = export_with_disks(&[2 * MIB]);
    let extents = futures::stream::iter(vec![
        Ok(Extent {
            offset: ByteOffset::ZERO,
            data: Bytes::from_static(b"data"),
        }),
        Err(std::io::Error::other("NBD read failed")),
    ]);
    let disk = DiskSource::new(ids[0].clone(), 2 * MIB, extents);
    let frames: Vec<Result<Bytes, Error>> =
        xva::archive_stream(&ova, vec![disk], WriteOptions::default())
            .unwrap()
            .collect()
            .await;
    let last = frames.last().unwrap();
    assert!(matches!(last, Err(Error::Source { .. })));
}

#[tokio::test]
async fn streams_through_a_pipe_with_bounded_buffers() {
    // Writer and reader run at the same time over a 64 KiB pipe: neither holds the archive.
    let sizes = [3 * MIB + 5, 2 * MIB];
    let (ova, ids) = export_with_disks(&sizes);
    let first: Vec<u8> = (0..sizes[0])
        .map(|index| u8::try_from(index % 253).unwrap())
        .collect();
    let sources = vec![
        // Given in the wrong order on purpose: the writer sorts them.
        source(
            &ids[1],
            sizes[1],
            vec![Extent {
                offset: ByteOffset::new(MIB),
                data: Bytes::from_static(b"second"),
            }],
        ),
        source(
            &ids[0],
            sizes[0],
            vec![Extent {
                offset: ByteOffset::ZERO,
                data: Bytes::from(first.clone()),
            }],
        ),
    ];
    let (mut write_end, read_end) = tokio::io::duplex(64 * 1024);
    let options = WriteOptions {
        checksum: ChecksumKind::Sha1,
        compression: xva::Compression::ZSTD,
        ..WriteOptions::default()
    };
    let ova_for_writer = ova.clone();
    let writer = tokio::spawn(async move {
        xva::write_archive(&ova_for_writer, sources, options, &mut write_end).await
    });
    let mut reader = xva::AsyncArchiveReader::new(read_end);
    let mut blocks = Vec::new();
    let mut layout = None;
    while let Some(event) = reader.next_event().await.unwrap() {
        match event {
            Event::Layout(found) => layout = Some(found),
            Event::Block(block) => blocks.push(block),
            _ => {}
        }
    }
    let written = writer.await.unwrap().unwrap();
    assert!(written > 0);
    let layout = layout.unwrap();
    assert_eq!(layout.compression, xva::CompressionFormat::Zstd);
    assert_eq!(assemble(sizes[0], &blocks, 0), first);
    let second = assemble(sizes[1], &blocks, 1);
    assert_eq!(&second[usize::try_from(MIB).unwrap()..][..6], b"second");
}

#[test]
fn models_can_add_disks_after_building() {
    let mut ova = OvaXml::new(Version::new("h", "d"));
    let vm = ova.add(&xva::model::records::Vm::new("vm", 1 << 30, 1));
    let sr = ExportId::new("Ref:missing");
    assert!(matches!(
        ova.attach_disk(&vm, &Vdi::new("d", sr, 1), 0, true),
        Err(Error::DanglingRef { .. })
    ));
}
