//! The tokio adapters: an encoder writing into one end of a pipe while a decoder reads the
//! other, as an HTTP export feeding an import would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use common::{bitmap, make_block};
use uuid::Uuid;
use vhd::tokio_io::{AsyncReadDecoder, AsyncWriteEncoder};
use vhd::{
    BitmapMode, Block, BlockIndex, DiskKind, LayoutProfile, ParentIdentity, StreamDecoder,
    StreamEncoder, StreamEvent, StreamSpec, VhdTimestamp,
};

#[tokio::test(flavor = "current_thread")]
async fn encoder_and_decoder_stream_through_a_pipe() {
    let blocks: Vec<Block> = vec![
        make_block(0, 1, None),
        make_block(3, 2, Some(bitmap(&[(8, 64)]))),
        make_block(4, 3, None),
    ];
    let encoder = StreamEncoder::new(StreamSpec {
        virtual_size: (9 << 20) + 512,
        unique_id: Uuid::from_u128(5),
        kind: DiskKind::Differencing(ParentIdentity {
            unique_id: Uuid::from_u128(6),
            timestamp: VhdTimestamp(7),
            path: "/base.vhd".to_owned(),
        }),
        blocks: blocks.iter().map(|b| b.index).collect(),
        profile: LayoutProfile::xapi(),
        bitmaps: BitmapMode::Partial,
    })
    .unwrap();
    let total = encoder.total_len();
    // A small pipe: the writer must wait for the reader, so both run interleaved.
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    let sent = blocks.clone();
    let produce = async move {
        let mut sink = AsyncWriteEncoder::new(writer, encoder);
        assert_eq!(sink.total_len(), total);
        for block in sent {
            sink.write_block(block).await.unwrap();
        }
        let written_before_tail = sink.written();
        sink.finish().await.unwrap();
        written_before_tail + 512
    };
    let consume = async move {
        let mut source = AsyncReadDecoder::new(reader, StreamDecoder::new());
        let mut events = Vec::new();
        while let Some(event) = source.next_event().await.unwrap() {
            events.push(event);
        }
        (events, source.decoder().position())
    };
    let (written, (events, consumed)) = tokio::join!(produce, consume);
    assert_eq!(written, total);
    assert_eq!(consumed, total);
    let received: Vec<Block> = events
        .into_iter()
        .filter_map(|event| match event {
            StreamEvent::Block(block) => Some(block),
            _ => None,
        })
        .collect();
    assert_eq!(received, blocks);
    assert_eq!(received[1].index, BlockIndex(3));
}

#[tokio::test(flavor = "current_thread")]
async fn a_short_async_stream_is_a_typed_error() {
    let mut source = AsyncReadDecoder::new(&[0u8; 100][..], StreamDecoder::new());
    assert!(matches!(
        source.next_event().await,
        Err(vhd::Error::Truncated { .. })
    ));
}
