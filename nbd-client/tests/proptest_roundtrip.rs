//! Round-trip properties of every encoder/decoder pair, and robustness of the state machines
//! on arbitrary input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use bytes::BytesMut;
use nbd_client::proto::handshake::{ExportNameReply, OptionReplyHeader, encode_option_reply};
use nbd_client::proto::transmission::encode_chunk_header;
use nbd_client::proto::{
    BlockSizeConstraints, BlockStatusChunk, ChunkHeader, ChunkType, CommandFlags, CommandType,
    Errno, ErrorChunk, ExportEntry, Extent, Info, InfoRequest, InfoType, MetaContextReply,
    MetaContextRequest, OptionCode, OptionReplyType, ReplyFlags, ReplyHeader, ReplyMode, Request,
    TransmissionFlags,
};
use nbd_client::{ContextId, Cookie, fuzzing};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:/?=_.-]{0,64}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn request_round_trips(
        flags in any::<u16>(), command in any::<u16>(), cookie in any::<u64>(),
        offset in any::<u64>(), length in any::<u32>(), extended in any::<bool>(), wide in any::<u64>(),
    ) {
        let mode = if extended { ReplyMode::Extended } else { ReplyMode::Structured };
        let request = Request {
            flags: CommandFlags(flags),
            command: CommandType(command),
            cookie: Cookie(cookie),
            offset,
            length: if extended { wide } else { u64::from(length) },
        };
        let mut buf = BytesMut::new();
        request.encode(mode, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), mode.request_len());
        prop_assert_eq!(Request::decode(&buf).unwrap(), request);
    }

    #[test]
    fn chunk_header_round_trips(
        flags in any::<u16>(), chunk_type in any::<u16>(), cookie in any::<u64>(),
        offset in proptest::option::of(any::<u64>()), length in any::<u32>(),
    ) {
        let header = ChunkHeader {
            flags: ReplyFlags(flags),
            chunk_type: ChunkType(chunk_type),
            cookie: Cookie(cookie),
            offset,
            length: u64::from(length),
        };
        let mut buf = BytesMut::new();
        encode_chunk_header(&header, &mut buf).unwrap();
        prop_assert_eq!(ReplyHeader::decode(&buf).unwrap(), ReplyHeader::Chunk(header));
    }

    #[test]
    fn block_status_round_trips(
        context in any::<u32>(),
        extents in proptest::collection::vec((1u32.., any::<u32>()), 1..32),
        extended in any::<bool>(),
    ) {
        let chunk = BlockStatusChunk {
            context: ContextId(context),
            extents: extents
                .into_iter()
                .map(|(length, flags)| Extent { length: u64::from(length), flags: u64::from(flags) })
                .collect(),
        };
        let mut buf = BytesMut::new();
        chunk.encode(extended, &mut buf).unwrap();
        let decoded = if extended {
            BlockStatusChunk::decode_extended(&buf).unwrap()
        } else {
            BlockStatusChunk::decode(&buf).unwrap()
        };
        prop_assert_eq!(decoded, chunk);
    }

    #[test]
    fn error_chunk_round_trips(errno in 1u32.., message in "[ -~]{0,100}", offset in proptest::option::of(any::<u64>())) {
        let chunk = ErrorChunk { errno: Errno(errno), message, offset };
        let mut buf = BytesMut::new();
        chunk.encode(&mut buf);
        prop_assert_eq!(ErrorChunk::decode(&buf, chunk.offset.is_some()).unwrap(), chunk);
    }

    #[test]
    fn option_payloads_round_trip(
        export_name in name(),
        queries in proptest::collection::vec(name(), 0..8),
        infos in proptest::collection::vec(any::<u16>(), 0..8),
        id in any::<u32>(),
        description in name(),
    ) {
        let info = InfoRequest { export_name: export_name.clone(), requests: infos.into_iter().map(InfoType).collect() };
        let mut buf = BytesMut::new();
        info.encode(&mut buf).unwrap();
        prop_assert_eq!(InfoRequest::decode(&buf).unwrap(), info);

        let meta = MetaContextRequest { export_name: export_name.clone(), queries };
        let mut buf = BytesMut::new();
        meta.encode(&mut buf).unwrap();
        prop_assert_eq!(MetaContextRequest::decode(&buf).unwrap(), meta);

        let reply = MetaContextReply { id: ContextId(id), name: export_name.clone() };
        let mut buf = BytesMut::new();
        reply.encode(&mut buf);
        prop_assert_eq!(MetaContextReply::decode(&buf).unwrap(), reply);

        let entry = ExportEntry { name: export_name, description };
        let mut buf = BytesMut::new();
        entry.encode(&mut buf).unwrap();
        prop_assert_eq!(ExportEntry::decode(&buf).unwrap(), entry);
    }

    #[test]
    fn info_and_export_replies_round_trip(size in any::<u64>(), flags in any::<u16>(), shift in 0u32..17) {
        let sizes = BlockSizeConstraints { minimum: 1 << shift.min(16), preferred: 1 << 16, maximum_payload: 1 << 25 };
        for info in [Info::Export { size, flags: TransmissionFlags(flags) }, Info::BlockSize(sizes)] {
            let mut buf = BytesMut::new();
            info.encode(&mut buf);
            prop_assert_eq!(Info::decode(&buf).unwrap(), info);
        }
        let reply = ExportNameReply { size, flags: TransmissionFlags(flags) };
        let mut buf = BytesMut::new();
        reply.encode(true, &mut buf);
        prop_assert_eq!(ExportNameReply::decode(&buf).unwrap(), reply);
        let mut buf = BytesMut::new();
        encode_option_reply(OptionCode(flags.into()), OptionReplyType::INFO, &[7; 12], &mut buf).unwrap();
        let header = OptionReplyHeader::decode(&buf[..20]).unwrap();
        prop_assert_eq!(header.length, 12);
    }

    #[test]
    fn state_machines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = fuzzing::client_handshake(&bytes);
        let _ = fuzzing::reply_stream(&bytes);
        let _ = fuzzing::server_messages(&bytes);
    }
}
