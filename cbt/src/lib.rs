//! Changed-block bitmaps for incremental disk copies.
//!
//! A [`ChangedBlocks`] map says which blocks of a virtual disk changed, one bit per block of a
//! [`Granularity`] (64 KiB for xapi's Changed Block Tracking). It is built from:
//! - the base64 string returned by `VDI.list_changed_blocks` ([`ChangedBlocks::from_xapi_base64`],
//!   strict, or [`ChangedBlocks::from_base64_tolerant`]): bit `i` is byte `i >> 3`, mask `0x80 >> (i & 7)`;
//! - NBD `BLOCK_STATUS` descriptors of a `qemu:dirty-bitmap:` or `base:allocation` context
//!   ([`BlockStatusBuilder`]);
//! - written byte ranges ([`ChangedBlocks::mark_changed`]), and encoded back with
//!   [`ChangedBlocks::to_base64`].
//!
//! Maps combine with [`union`](ChangedBlocks::union), [`intersection`](ChangedBlocks::intersection)
//! and [`difference`](ChangedBlocks::difference), and are viewed as coalesced byte extents
//! ([`ChangedBlocks::byte_extents`]), 2 MiB VHD blocks ([`ChangedBlocks::vhd_blocks`]) or NBD read
//! requests ([`ChangedBlocks::read_requests`]). Scans go a 64-bit word at a time. No I/O, no async.
//!
//! ```
//! use cbt::{ByteExtent, ByteLen, ChangedBlocks, ReadPlanConfig, VhdBlockIndex};
//!
//! // 4 MiB disk, 64 KiB blocks {0, 9, 33} changed (the example of the XenAPI notes, §5.2).
//! let map = ChangedBlocks::from_xapi_base64("gEAAAEAAAAA=", ByteLen::new(4 << 20))?;
//! assert_eq!(map.changed_block_count(), 3);
//! assert_eq!(map.changed_bytes(), ByteLen::new(3 * 65536));
//!
//! // Whole 2 MiB VHD blocks to send: block 0 (bits 0 and 9) and block 1 (bit 33).
//! let blocks: Vec<_> = map.vhd_blocks()?.collect();
//! assert_eq!(blocks, [VhdBlockIndex::new(0), VhdBlockIndex::new(1)]);
//!
//! // NBD reads of at most 64 KiB, 512-byte aligned, for xapi-nbd.
//! let plan: Vec<_> = map.read_requests(ReadPlanConfig::new(65536, 512)?).collect();
//! let offsets: Vec<u64> = plan.iter().map(|request| request.offset.get()).collect();
//! assert_eq!(offsets, [0, 9 * 65536, 33 * 65536]);
//!
//! // A simulator recording a 100-byte write at 1 MiB, then encoding its log.
//! let mut log = ChangedBlocks::new_xapi(ByteLen::new(4 << 20))?;
//! log.mark_changed(ByteExtent::at(1 << 20, 100)?)?;
//! assert_eq!(log.to_base64(), "AACAAAAAAAA=");
//! # Ok::<(), cbt::Error>(())
//! ```
#![forbid(unsafe_code)]

mod bitmap;
mod block_status;
mod error;
pub mod fuzzing;
mod units;
mod views;

pub use bitmap::{
    BlockRuns, ByteExtents, ChangedBlockIter, ChangedBlocks, MAX_BITS, MAX_VIRTUAL_SIZE, Tolerated,
};
pub use block_status::{BlockStatusBuilder, StatusRule};
pub use error::Error;
pub use units::{
    ByteExtent, ByteLen, ByteOffset, CbtBlockIndex, Granularity, VHD_BLOCK_SIZE, VhdBlockIndex,
};
pub use views::{ReadPlanConfig, ReadRequest, ReadRequests, VhdBlocks};

/// Compiles and runs the README's example with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
