//! VHD codec for files and xapi streams.
//!
//! XCP-ng moves disk deltas as VHD: `GET /export_raw_vdi?format=vhd[&base=…]` emits a
//! dynamic or differencing VHD of whole 2 MiB blocks, `PUT /import_raw_vdi?format=vhd`
//! applies one, and backups store chains of VHD files. This crate covers all of it:
//!
//! - **format layer** (sans-IO): [`Footer`], [`DynamicHeader`] with [`ParentLocator`]s,
//!   [`Bat`], [`SectorBitmap`], blktap's [`Batmap`] (read only), [`Geometry`] and
//!   [`vhd_checksum`]; parse from bytes, encode into bytes, every field validated;
//! - **streams** (sans-IO): [`StreamDecoder`] (push, forward-only, any chunking, memory bounded
//!   by one block plus the BAT) and [`StreamEncoder`] (xapi's layout, exact length known up
//!   front), with blocking adapters [`ReadDecoder`] / [`encode_to_writer`] and async ones in
//!   `tokio_io` (feature `tokio`);
//! - **files**: [`VhdFile`] and [`VhdChain`] read fixed, dynamic and differencing disks over any
//!   positional [`ReadAt`] source, resolving parents sector by sector; [`VhdWriter`] creates and
//!   updates dynamic and differencing files;
//! - **merges**: [`merge::merge_child_into_parent`], [`merge::apply_stream`],
//!   [`merge::coalesce`] and [`merge::coalesce_stream`].
//!
//! The pipeline vocabulary shared with the other crates is [`Block`] (`index`, 2 MiB `data` as
//! [`bytes::Bytes`], `sectors: Option<SectorBitmap>` with `None` = all present), [`BlockIndex`]
//! and [`BlockSet`]. Virtual sizes are limited to [`MAX_VIRTUAL_SIZE`] (2 TiB − 8 KiB).
//!
//! # Example: encode a delta, decode it, apply it
//!
//! ```
//! use bytes::Bytes;
//! use vhd::{
//!     BitmapMode, Block, BlockIndex, DiskKind, LayoutProfile, ParentIdentity, StreamDecoder,
//!     StreamEncoder, StreamEvent, StreamSpec, VhdTimestamp,
//! };
//!
//! # fn main() -> Result<(), vhd::Error> {
//! // A 6 MiB disk whose block 1 changed since the base: xapi's export layout.
//! let changed = Block::full(BlockIndex(1), Bytes::from(vec![0xAB; 2 << 20]));
//! let encoder = StreamEncoder::new(StreamSpec {
//!     virtual_size: 6 << 20,
//!     unique_id: uuid::Uuid::from_u128(1),
//!     kind: DiskKind::Differencing(ParentIdentity {
//!         unique_id: uuid::Uuid::from_u128(2),
//!         timestamp: VhdTimestamp(0),
//!         path: "/dev/VG_XenStorage-sr/VHD-base".into(),
//!     }),
//!     blocks: [BlockIndex(1)].into_iter().collect(),
//!     profile: LayoutProfile::xapi(),
//!     bitmaps: BitmapMode::Full,
//! })?;
//! let content_length = encoder.total_len(); // known before the first byte
//! let stream: Vec<u8> = encoder
//!     .into_pieces([Ok(changed)])
//!     .collect::<Result<Vec<_>, _>>()?
//!     .concat();
//! assert_eq!(u64::try_from(stream.len()).unwrap(), content_length);
//!
//! // Decode it in awkward chunks, applying present sectors onto a raw 6 MiB base.
//! let mut base = vec![0u8; 6 << 20];
//! let mut decoder = StreamDecoder::new();
//! for chunk in stream.chunks(1000) {
//!     let mut input = Bytes::copy_from_slice(chunk);
//!     while let Some(event) = decoder.decode(&mut input)? {
//!         if let StreamEvent::Block(block) = event {
//!             for (offset, bytes) in block.present_extents(6 << 20) {
//!                 let start = usize::try_from(offset.0).unwrap();
//!                 base[start..start + bytes.len()].copy_from_slice(&bytes);
//!             }
//!         }
//!     }
//! }
//! decoder.finish()?;
//! assert!(base[2 << 20..4 << 20].iter().all(|byte| *byte == 0xAB));
//! assert!(base[..2 << 20].iter().all(|byte| *byte == 0));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod bat;
mod batmap;
mod bitmap;
mod block;
mod checksum;
mod error;
mod footer;
pub mod fuzzing;
mod geometry;
mod header;
mod io;
mod layout;
pub mod merge;
mod reader;
mod stream;
#[cfg(feature = "tokio")]
pub mod tokio_io;
mod units;
mod writer;

pub use bat::{BAT_UNALLOCATED, Bat, MAX_BAT_ENTRIES};
pub use batmap::{BATMAP_COOKIE, Batmap, BatmapHeader};
pub use bitmap::SectorBitmap;
pub use block::{Block, BlockSet};
pub use checksum::vhd_checksum;
pub use error::{Error, Result, Structure};
pub use footer::{
    Creator, DiskType, FEATURE_RESERVED, FEATURE_TEMPORARY, FOOTER_COOKIE, FOOTER_SIZE,
    FORMAT_VERSION, Footer,
};
pub use geometry::{Geometry, GeometryRule};
pub use header::{
    DynamicHeader, HEADER_COOKIE, HEADER_SIZE, HEADER_VERSION, LOCATOR_COUNT, ParentLocator,
    PlatformCode,
};
pub use io::{ReadAt, WriteAt};
pub use layout::{DiskKind, LayoutProfile, LocatorStyle, ParentIdentity, ParentNameStyle};
pub use reader::{MAX_CHAIN_DEPTH, VhdChain, VhdFile};
pub use stream::{
    BitmapMode, DEFAULT_MAX_SKIPPED_BYTES, DecoderOptions, Pieces, ReadDecoder, STREAM_BLOCK_LEN,
    StreamDecoder, StreamEncoder, StreamEvent, StreamSpec, encode_to_writer,
};
pub use units::{
    BITMAP_SIZE, BLOCK_SIZE, BlockIndex, ByteOffset, MAX_VIRTUAL_SIZE, SECTOR_SIZE,
    SECTORS_PER_BLOCK, SectorIndex, VhdTimestamp, XAPI_MAX_VHD_SIZE,
};
pub use writer::{CreateOptions, VhdWriter};

/// Compiles and runs the README's example with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
