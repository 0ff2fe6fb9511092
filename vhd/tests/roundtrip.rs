//! Property tests: a random sparse disk survives encode → decode, writer → reader, and chains
//! read, merge and coalesce to the content a simple model predicts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use bytes::Bytes;
use common::{LayerModel, blocks_of, make_block, read_all};
use proptest::prelude::*;
use uuid::Uuid;
use vhd::{
    BitmapMode, Block, BlockSet, CreateOptions, DiskKind, LayoutProfile, ParentIdentity,
    SectorBitmap, StreamDecoder, StreamEncoder, StreamEvent, StreamSpec, VhdChain, VhdFile,
    VhdTimestamp, VhdWriter, merge,
};

/// Up to 4 blocks and a partial fifth; each block absent, full or with random sector runs.
fn layer_strategy(size_sectors: u32) -> impl Strategy<Value = LayerModel> {
    let size = u64::from(size_sectors) * 512;
    let blocks = blocks_of(size);
    let block = prop_oneof![
        1 => Just(None),
        2 => any::<u8>().prop_map(|seed| Some((seed, None))),
        2 => (any::<u8>(), proptest::collection::vec((0u32..4096, 1u32..600), 1..4))
            .prop_map(|(seed, runs)| {
                let mut bits = SectorBitmap::empty();
                for (start, len) in runs {
                    bits.insert_range(start..(start + len).min(4096)).unwrap();
                }
                Some((seed, Some(bits)))
            }),
    ];
    proptest::collection::vec(block, usize::try_from(blocks).unwrap()).prop_map(move |choices| {
        let mut model = LayerModel {
            size,
            ..LayerModel::default()
        };
        for (index, choice) in (0u32..).zip(choices) {
            if let Some((seed, sectors)) = choice {
                model.blocks.insert(index, make_block(index, seed, sectors));
            }
        }
        model
    })
}

fn size_strategy() -> impl Strategy<Value = u32> {
    // 1 sector up to 4.5 blocks, often ending mid-block.
    1u32..(4096 * 4 + 2048)
}

fn encode(model: &LayerModel, kind: DiskKind, profile: LayoutProfile) -> Vec<u8> {
    let encoder = StreamEncoder::new(StreamSpec {
        virtual_size: model.size,
        unique_id: Uuid::from_u128(0xC0FFEE),
        kind,
        blocks: model
            .blocks
            .keys()
            .copied()
            .map(vhd::BlockIndex)
            .collect::<BlockSet>(),
        profile,
        bitmaps: BitmapMode::Partial,
    })
    .unwrap();
    let total = encoder.total_len();
    let bytes: Vec<u8> = encoder
        .into_pieces(model.block_list().into_iter().map(Ok))
        .collect::<vhd::Result<Vec<Bytes>>>()
        .unwrap()
        .concat();
    assert_eq!(u64::try_from(bytes.len()).unwrap(), total);
    bytes
}

fn decode(stream: &[u8], chunk: usize) -> Vec<Block> {
    let mut decoder = StreamDecoder::new();
    let mut blocks = Vec::new();
    for piece in stream.chunks(chunk) {
        let mut input = Bytes::copy_from_slice(piece);
        while let Some(event) = decoder.decode(&mut input).unwrap() {
            if let StreamEvent::Block(block) = event {
                blocks.push(block);
            }
        }
    }
    decoder.finish().unwrap();
    blocks
}

/// Blocks normalised the way the decoder reports them: bits past the end of the disk do not
/// count, and a bitmap full inside the disk is `None`.
fn normalised(model: &LayerModel) -> Vec<Block> {
    model
        .block_list()
        .into_iter()
        .map(|mut block| {
            let in_disk = Block::sectors_in_disk(block.index, model.size);
            if block
                .sectors
                .as_ref()
                .is_some_and(|bits| bits.is_full_below(in_disk))
            {
                block.sectors = None;
            }
            block
        })
        .collect()
}

fn write_file(model: &LayerModel, kind: DiskKind, unique_id: Uuid) -> Vec<u8> {
    let mut writer = VhdWriter::create(
        Vec::new(),
        &CreateOptions {
            virtual_size: model.size,
            unique_id,
            kind,
            profile: LayoutProfile::native(VhdTimestamp(1)),
        },
    )
    .unwrap();
    // Reverse order: files do not need increasing block order.
    for block in model.blocks.values().rev() {
        writer.write_block(block).unwrap();
    }
    writer.finish().unwrap()
}

fn child_kind(parent: Uuid) -> DiskKind {
    DiskKind::Differencing(ParentIdentity {
        unique_id: parent,
        timestamp: VhdTimestamp(2),
        path: "parent.vhd".to_owned(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn stream_round_trip_keeps_content_and_allocation(
        (model, chunk, xapi) in size_strategy().prop_flat_map(|sectors| {
            (layer_strategy(sectors), 1000usize..300_000, any::<bool>())
        })
    ) {
        let profile = if xapi { LayoutProfile::xapi() } else { LayoutProfile::native(VhdTimestamp(9)) };
        let stream = encode(&model, DiskKind::Dynamic, profile);
        let decoded = decode(&stream, chunk);
        prop_assert_eq!(&decoded, &normalised(&model));
        // The stream is also a valid file with the model's content.
        let file = VhdFile::open(stream).unwrap();
        let content = read_all(model.size, |o, b| file.read_at(o, b).unwrap());
        prop_assert!(content == model.dynamic_content());
        prop_assert_eq!(
            file.allocated_blocks(),
            model.blocks.keys().copied().map(vhd::BlockIndex).collect::<BlockSet>()
        );
    }

}

proptest! {
    // Each case writes, reads, merges and coalesces two layers of up to 9 MiB.
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn chains_read_merge_and_coalesce_like_the_model(
        (parent, child) in size_strategy().prop_flat_map(|sectors| {
            (layer_strategy(sectors), layer_strategy(sectors))
        })
    ) {
        let parent_id = Uuid::from_u128(1);
        let parent_file = write_file(&parent, DiskKind::Dynamic, parent_id);
        let child_file = write_file(&child, child_kind(parent_id), Uuid::from_u128(2));
        let expected = child.content_over(Some(&parent.dynamic_content()));

        let chain = VhdChain::new(vec![
            VhdFile::open(child_file.clone()).unwrap(),
            VhdFile::open(parent_file.clone()).unwrap(),
        ]).unwrap();
        let read = read_all(child.size, |o, b| chain.read_at(o, b).unwrap());
        prop_assert!(read == expected, "chain read differs");

        // Coalesce into one dynamic file, and into a stream.
        let full = merge::coalesce(&chain, Vec::new(), Uuid::from_u128(3), LayoutProfile::native(VhdTimestamp(3)))
            .unwrap()
            .finish()
            .unwrap();
        let full = VhdFile::open(full).unwrap();
        prop_assert!(read_all(child.size, |o, b| full.read_at(o, b).unwrap()) == expected);
        let pieces = merge::coalesce_stream(&chain, Uuid::from_u128(4), LayoutProfile::xapi()).unwrap();
        let total = pieces.total_len();
        let stream: Vec<u8> = pieces.collect::<vhd::Result<Vec<Bytes>>>().unwrap().concat();
        prop_assert_eq!(u64::try_from(stream.len()).unwrap(), total);
        let streamed = VhdFile::open(stream).unwrap();
        prop_assert!(read_all(child.size, |o, b| streamed.read_at(o, b).unwrap()) == expected);

        // Merge the child into its parent, as a file and as a stream of the child.
        let mut target = VhdWriter::open(parent_file.clone()).unwrap();
        let stats = merge::merge_child_into_parent(&mut target, &VhdFile::open(child_file).unwrap()).unwrap();
        prop_assert_eq!(stats.blocks, child.blocks.len());
        let merged = VhdFile::open(target.finish().unwrap()).unwrap();
        prop_assert!(read_all(child.size, |o, b| merged.read_at(o, b).unwrap()) == expected);

        let child_stream = encode(&child, child_kind(parent_id), LayoutProfile::xapi());
        let mut target = VhdWriter::open(parent_file).unwrap();
        merge::apply_stream(&mut target, child_stream.as_slice(), merge::ParentCheck::Verify).unwrap();
        let applied = VhdFile::open(target.finish().unwrap()).unwrap();
        prop_assert!(read_all(child.size, |o, b| applied.read_at(o, b).unwrap()) == expected);
    }
}

#[test]
fn apply_stream_checks_the_parent_unless_told_not_to() {
    let model = LayerModel {
        size: 4 << 20,
        blocks: [(1, make_block(1, 5, None))].into_iter().collect(),
    };
    let parent = write_file(
        &LayerModel {
            size: 4 << 20,
            ..LayerModel::default()
        },
        DiskKind::Dynamic,
        Uuid::from_u128(1),
    );
    // xapi deltas name an opaque parent uuid.
    let stream = encode(
        &model,
        child_kind(Uuid::from_u128(77)),
        LayoutProfile::xapi(),
    );
    let mut target = VhdWriter::open(parent.clone()).unwrap();
    assert!(matches!(
        merge::apply_stream(&mut target, stream.as_slice(), merge::ParentCheck::Verify),
        Err(vhd::Error::ParentMismatch { .. })
    ));
    let mut target = VhdWriter::open(parent).unwrap();
    let stats =
        merge::apply_stream(&mut target, stream.as_slice(), merge::ParentCheck::Ignore).unwrap();
    assert_eq!(stats.blocks, 1);
    assert_eq!(stats.sectors, 4096);
}

#[test]
fn a_differencing_disk_reads_through_a_fixed_parent() {
    let size: u64 = 3 << 20;
    let raw: Vec<u8> = (0..size).map(|i| (i / 512).to_le_bytes()[0]).collect();
    let footer = vhd::Footer {
        features: vhd::FEATURE_RESERVED,
        data_offset: None,
        timestamp: VhdTimestamp(0),
        creator: vhd::Creator::XAPI,
        original_size: size,
        current_size: size,
        geometry: vhd::Geometry::for_size(size, vhd::GeometryRule::Spec),
        disk_type: vhd::DiskType::Fixed,
        unique_id: Uuid::from_u128(40),
        saved_state: 0,
        hidden: 0,
    };
    let mut fixed = raw.clone();
    fixed.extend_from_slice(&footer.encode());
    let child = LayerModel {
        size,
        blocks: [(1, make_block(1, 9, Some(common::bitmap(&[(10, 20)]))))]
            .into_iter()
            .collect(),
    };
    let child_file = write_file(&child, child_kind(Uuid::from_u128(40)), Uuid::from_u128(41));
    let chain = VhdChain::new(vec![
        VhdFile::open(child_file).unwrap(),
        VhdFile::open(fixed).unwrap(),
    ])
    .unwrap();
    let read = read_all(size, |o, b| chain.read_at(o, b).unwrap());
    assert!(read == child.content_over(Some(&raw)));
    // Unaligned reads cross sector and block boundaries.
    let mut odd = vec![0u8; 5000];
    chain
        .read_at(vhd::ByteOffset((2 << 20) - 1234), &mut odd)
        .unwrap();
    let start = (2 << 20) - 1234;
    assert_eq!(odd, read[start..start + 5000]);
}
