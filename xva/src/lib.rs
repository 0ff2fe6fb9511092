//! XVA, the whole-VM archive of XCP-ng and XenServer, read and written the way xapi does.
//!
//! An XVA is a tar stream (optionally gzip- or zstd-compressed as a whole) holding `ova.xml`,
//! the VM's records as one XML-RPC value, followed by every streamed disk cut into 1 MiB chunks
//! `Ref:N/00000000`, each with an `.xxhash` (XXH64) or `.checksum` (SHA-1) companion.
//!
//! - [`model`]: `ova.xml` as [`model::OvaXml`]: typed records for VM, VDI, VBD, VIF, SR and
//!   network with xapi's typing rules (strings must be strings, booleans `<boolean>`), every
//!   unknown field kept; [`model::OvaXml::streamed_disks`] picks the disks as xapi's importer.
//! - [`ArchiveWriter`]: sans-IO writer (extents in, frames out), in xapi's tar flavour; all-zero
//!   chunks left out except the first and last; disks in xapi's order.
//! - [`ArchiveReader`]: sans-IO forward-only reader (bytes in, [`Event`]s out) with xapi's
//!   relative chunk arithmetic (keepalive chunks of old exports, v26 exports), every checksum
//!   verified, compression detected, memory bounded by one chunk. A chunk split across input
//!   frames is hashed piece by piece ([`ChecksumHasher`]) and handed out, once verified, as
//!   one [`Block`] per piece, never copied back together.
//! - Thin adapters: [`archive_stream`] / [`read_stream`] over `futures` streams, and (feature
//!   `tokio`, on by default) [`AsyncArchiveReader`] and [`write_archive`].
//!
//! ```
//! # fn main() -> Result<(), xva::Error> {
//! use bytes::Bytes;
//! use xva::model::{OvaXml, Version, records::{Sr, Vdi, Vm}};
//! use xva::{ByteOffset, ChecksumKind, Event, WriteOptions};
//!
//! // A VM with one 3 MiB disk holding 4 KiB of data at 1 MiB.
//! let mut ova = OvaXml::new(Version::new("host", "2024-05-01"));
//! let vm = ova.add(&Vm::new("web", 1 << 30, 2));
//! let sr = ova.add(&Sr::new("local"));
//! let disk = ova.attach_disk(&vm, &Vdi::new("root", sr, 3 << 20), 0, true)?;
//!
//! let options = WriteOptions { checksum: ChecksumKind::Sha1, ..WriteOptions::default() };
//! let data = Bytes::from(vec![0xab; 4096]);
//! let archive = xva::write_all(&ova, vec![vec![(ByteOffset::new(1 << 20), data.clone())]], options)?;
//!
//! // Read it back: the layout first, then verified blocks.
//! let mut reader = xva::ArchiveReader::new();
//! reader.push(archive);
//! reader.finish_input();
//! let mut found = Vec::new();
//! while let Some(event) = reader.next_event()? {
//!     match event {
//!         Event::Layout(layout) => assert_eq!(layout.disks[0].id, disk),
//!         Event::Block(block) => found.push((block.offset, block.data)),
//!         Event::DiskEnd(_) | Event::End => {}
//!         _ => {}
//!     }
//! }
//! // Chunk 0 (zeros, always written), chunk 1 (our data, padded to 1 MiB), chunk 2 (the last).
//! assert_eq!(found.len(), 3);
//! assert_eq!(found[1].0, ByteOffset::new(1 << 20));
//! assert_eq!(&found[1].1[..4096], &data[..]);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod checksum;
pub mod compress;
mod error;
#[cfg(feature = "tokio")]
mod io;
pub mod model;
mod pieces;
mod queue;
pub mod read;
mod stream;
pub mod tar;
mod units;
pub mod write;

pub use checksum::{ChecksumHasher, ChecksumKind};
pub use compress::{Compression, CompressionFormat};
pub use error::{BoxError, DiskMismatchProblem, Error, ExtentProblem, TarHeaderProblem};
#[cfg(feature = "tokio")]
pub use io::{AsyncArchiveReader, write_archive};
pub use read::{
    ArchiveLayout, ArchiveReader, Block, Event, ReaderLimits, Verified, read_all, verify,
};
pub use stream::{DiskSource, Extent, ExtentStream, archive_stream, read_stream};
pub use units::{ByteOffset, CHUNK_SIZE, ChunkIndex, DiskIndex};
pub use write::{ArchiveWriter, WriteOptions, write_all};

/// Compiles and runs the README's example with the doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
