//! `xapi-sim`: a faithful simulated XCP-ng pool, so that replication, seeding, backup and restore
//! can be tested end to end without a real host.
//!
//! The simulator is being built up module by module. Available now:
//! - [`storage`]: disk data as copy-on-write layers of 2 MiB blocks shared between snapshots and
//!   clones, xapi's transfer views (allocated blocks, 2 MiB deltas, sector-bitmap imports), and
//!   sm's CBT logs with `list_changed_blocks`' exact bitmap.
//!
//! ```
//! use xapi_sim::storage::{ByteLen, ByteOffset, Storage};
//!
//! let storage = Storage::new();
//! // A 2 TiB disk costs nothing until written.
//! let disk = storage.create(ByteLen::new(2 << 40))?;
//! storage.enable_cbt(disk)?;
//! let base = storage.snapshot(disk)?;
//! storage.write(disk, ByteOffset::new(3 << 20), b"hello")?;
//! let newer = storage.snapshot(disk)?;
//!
//! assert_eq!(storage.read(newer, ByteOffset::new(3 << 20), 5)?.as_ref(), b"hello");
//! assert_eq!(storage.stats().unique_blocks, 1);
//! // 64 KiB unit 48 changed between the two snapshots: bit 0x80 of byte 6.
//! let changed = storage.list_changed_blocks(base, newer)?;
//! assert_eq!(changed.to_bitmap_bytes().get(..8), Some(&[0, 0, 0, 0, 0, 0, 0x80, 0][..]));
//! # Ok::<(), xapi_sim::Error>(())
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod storage;

pub use error::{Error, SmBackendFailure};
