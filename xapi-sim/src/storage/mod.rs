//! Simulated SR storage: disk data as copy-on-write layers of 2 MiB blocks, and CBT logs.
//!
//! A [`Storage`] holds disks named by [`DiskId`]s (the `db` layer maps VDI refs onto them).
//! - **Data.** Each disk writes into its own leaf layer; [`Storage::snapshot`] and
//!   [`Storage::clone_disk`] freeze the leaf into a hidden parent shared with the new disk, as sm
//!   does on VHD SRs, so blocks are shared (`bytes::Bytes`) until written. Memory is proportional
//!   to the 2 MiB blocks written: a 2 TiB disk with three writes holds three blocks. Unwritten
//!   blocks read as zeros. Sizes are rounded up to 2 MiB like sm's `validate_and_round_vhd_size`.
//! - **Transfer views.** [`Storage::allocated_blocks`] (blocks allocated anywhere in the chain: a
//!   VHD export without base), [`Storage::differing_blocks`] (blocks allocated in the symmetric
//!   difference of two chains: a VHD export with `base`), [`Storage::read_block`] (zero-copy),
//!   [`Storage::apply_block`] (an imported VHD block: only sectors whose bitmap bit is set).
//! - **CBT.** One log per disk, as sm's `<vdi>.cbtlog`: a snapshot takes the live log and the
//!   source starts a fresh one; destroying a snapshot ORs its log into the next one; a resize
//!   extends the live log; [`Storage::data_destroy`] drops data and keeps the log.
//!   [`Storage::list_changed_blocks`] returns xapi's exact bitmap (64 KiB units, MSB-first).
//! - **Guest activity.** [`Storage::guest_write`] and [`Storage::guest_write_random_blocks`] write
//!   deterministic [`Pattern`]s.
//!
//! Every method is synchronous and holds one mutex briefly (never across an `.await`): reads
//! clone block handles under the lock and copy outside it, so many async handlers can share a
//! cloned `Storage`.

mod cbt_log;
mod chain;
mod pattern;
mod state;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
pub use cbt::{ByteExtent, ByteLen, ByteOffset, ChangedBlocks, VhdBlockIndex};
use sha2::{Digest as _, Sha256};

pub use self::pattern::Pattern;
use self::state::{State, block_count};
use crate::Error;

/// Size of a data block, the unit of sharing, allocation and VHD transfer: 2 MiB.
pub const BLOCK_SIZE: u64 = 2 << 20;
/// Size of a sector, the unit of a VHD sector bitmap.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the sector bitmap of one block (4096 sectors, one bit each).
pub const SECTOR_BITMAP_LEN: usize = 512;
/// Size of one CBT unit (one bit of a `list_changed_blocks` bitmap): 64 KiB.
pub const CBT_BLOCK_SIZE: u64 = 1 << CBT_BLOCK_SHIFT;
/// Smallest virtual size: sm rounds smaller requests up to one block.
pub const MIN_VIRTUAL_SIZE: u64 = BLOCK_SIZE;
/// Largest virtual size the simulated storage accepts (16 TiB, qcow2 SRs' limit); SR-specific
/// limits (2040 GiB on VHD SRs) belong to the `db` layer.
pub const MAX_VIRTUAL_SIZE: u64 = 16 << 40;
/// Largest read served by one [`Storage::read`] call.
pub const MAX_READ_LEN: usize = 64 << 20;

pub(crate) const BLOCK_BYTES: usize = 2 << 20;
pub(crate) const BLOCK_BYTES_U64: u64 = BLOCK_SIZE;
pub(crate) const SECTOR_BYTES: usize = 512;
pub(crate) const SECTOR_BITMAP_BYTES: usize = SECTOR_BITMAP_LEN;
pub(crate) const CBT_BLOCK_SHIFT: u32 = 16;
pub(crate) const CBT_UNITS_PER_BLOCK: u64 = BLOCK_SIZE >> CBT_BLOCK_SHIFT;

/// Identifies a disk inside one [`Storage`]; never reused after the disk is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskId(u64);

impl DiskId {
    pub(crate) const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The number behind the id (for logs and state dumps).
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "disk-{}", self.0)
    }
}

/// What a disk looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskInfo {
    /// Virtual size (a multiple of [`BLOCK_SIZE`]).
    pub virtual_size: ByteLen,
    /// Whether the disk has a CBT log (what xapi shows as `cbt_enabled`).
    pub cbt_enabled: bool,
    /// Whether [`Storage::data_destroy`] dropped the data.
    pub data_destroyed: bool,
    /// Blocks allocated in the disk's own leaf layer (what its VHD file holds).
    pub leaf_blocks: u64,
    /// Blocks allocated anywhere in the chain.
    pub allocated_blocks: u64,
    /// Layers from the leaf to the root.
    pub chain_depth: u64,
}

/// Memory held by a [`Storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageStats {
    /// Disks, data-destroyed ones included.
    pub disks: usize,
    /// Layers, hidden ones included.
    pub layers: usize,
    /// Distinct block buffers referenced by any layer.
    pub unique_blocks: u64,
    /// Bytes of those buffers.
    pub block_bytes: u64,
    /// CBT logs.
    pub cbt_logs: usize,
    /// Touched 2 MiB groups summed over all CBT logs (each costs a few bytes).
    pub cbt_log_entries: usize,
}

/// Rounds a requested virtual size as sm does on VHD SRs: at least one block, up to whole blocks.
///
/// # Errors
/// [`Error::VirtualSizeTooLarge`] past [`MAX_VIRTUAL_SIZE`].
pub fn round_virtual_size(requested: ByteLen) -> Result<ByteLen, Error> {
    let size = requested.get();
    if size > MAX_VIRTUAL_SIZE {
        return Err(Error::VirtualSizeTooLarge {
            requested: size,
            max: MAX_VIRTUAL_SIZE,
        });
    }
    Ok(ByteLen::new(
        size.max(MIN_VIRTUAL_SIZE).div_ceil(BLOCK_SIZE) * BLOCK_SIZE,
    ))
}

fn block_index(index: u32) -> VhdBlockIndex {
    VhdBlockIndex::new(index)
}

/// Simulated SR storage shared by the XAPI, HTTP and NBD handlers; cloning shares the state.
#[derive(Clone)]
pub struct Storage {
    state: Arc<Mutex<State>>,
    /// One zeroed block, sliced for every read of unallocated data.
    zeros: Bytes,
}

impl fmt::Debug for Storage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Storage")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Storage {
    fn default() -> Self {
        Self::new()
    }
}

impl Storage {
    /// An empty storage.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            zeros: Bytes::from(vec![0u8; BLOCK_BYTES]),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before anything can panic, so a poisoned lock
        // still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates an empty disk of `virtual_size` bytes, rounded by [`round_virtual_size`].
    ///
    /// # Errors
    /// [`Error::VirtualSizeTooLarge`].
    pub fn create(&self, virtual_size: ByteLen) -> Result<DiskId, Error> {
        let disk = self.lock().create(virtual_size)?;
        tracing::debug!(%disk, virtual_size = virtual_size.get(), "disk created");
        Ok(disk)
    }

    /// Snapshots a disk: the new disk shares every block, and takes the CBT log if there is one
    /// (the source starts a fresh log linked after it).
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn snapshot(&self, source: DiskId) -> Result<DiskId, Error> {
        let disk = self.lock().fork(source, true)?;
        tracing::debug!(%source, snapshot = %disk, "disk snapshotted");
        Ok(disk)
    }

    /// Clones a disk: shares every block like a snapshot, but CBT is not inherited.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn clone_disk(&self, source: DiskId) -> Result<DiskId, Error> {
        let disk = self.lock().fork(source, false)?;
        tracing::debug!(%source, clone = %disk, "disk cloned");
        Ok(disk)
    }

    /// Copies a disk into a new, unrelated disk of the same size (a chain of one layer; block
    /// buffers are shared, so the copy costs no data memory until written). No CBT.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn copy(&self, source: DiskId) -> Result<DiskId, Error> {
        let disk = self.lock().copy(source)?;
        tracing::debug!(%source, copy = %disk, "disk copied");
        Ok(disk)
    }

    /// Copies `source` into the existing disk `target` (`VDI.copy` with `into_vdi`): with `base`,
    /// only the blocks of [`Self::differing_blocks`]`(source, base)`; without, every block
    /// allocated in either disk, so that `target` reads like `source` over `source`'s size.
    /// Returns the blocks written. Target writes are CBT-tracked.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`], [`Error::TargetTooSmall`].
    pub fn copy_into(
        &self,
        source: DiskId,
        target: DiskId,
        base: Option<DiskId>,
    ) -> Result<Vec<VhdBlockIndex>, Error> {
        let mut state = self.lock();
        let required = state.live(source)?.1;
        let available = state.live(target)?.1;
        if available < required {
            return Err(Error::TargetTooSmall {
                target,
                required,
                available,
            });
        }
        let blocks = match base {
            Some(base) => state.differing_blocks(source, base)?,
            None => {
                let count = block_count(required);
                let mut blocks = state.allocated_blocks(source)?;
                blocks.extend(state.allocated_blocks(target)?);
                blocks.retain(|block| u64::from(*block) < count);
                blocks
            }
        };
        for block in &blocks {
            let data = state
                .block(source, *block)?
                .unwrap_or_else(|| self.zeros.clone());
            state.apply_block(target, *block, &data, None)?;
        }
        tracing::debug!(%source, %target, blocks = blocks.len(), "disk copied into another");
        Ok(blocks.into_iter().map(block_index).collect())
    }

    /// Destroys a disk: its data (hidden parents are merged or dropped when no longer shared)
    /// and its CBT log, which is ORed into the next log of its chain as sm does.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn destroy(&self, disk: DiskId) -> Result<(), Error> {
        self.lock().destroy(disk)?;
        tracing::debug!(%disk, "disk destroyed");
        Ok(())
    }

    /// Drops a disk's data but keeps the disk and its CBT log (`VDI.data_destroy`); idempotent.
    /// Reads, writes, snapshots and copies then fail with [`Error::DataDestroyed`].
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn data_destroy(&self, disk: DiskId) -> Result<(), Error> {
        self.lock().data_destroy(disk)?;
        tracing::debug!(%disk, "disk data destroyed");
        Ok(())
    }

    /// Grows a disk (rounded like [`Self::create`]); the live CBT log grows too. Returns the new size.
    ///
    /// # Errors
    /// [`Error::CannotShrink`] for any size below the current one (compared before rounding, as
    /// sm does), [`Error::VirtualSizeTooLarge`], [`Error::UnknownDisk`],
    /// [`Error::DataDestroyed`].
    pub fn resize(&self, disk: DiskId, virtual_size: ByteLen) -> Result<ByteLen, Error> {
        let size = self.lock().resize(disk, virtual_size)?;
        tracing::debug!(%disk, virtual_size = size, "disk resized");
        Ok(ByteLen::new(size))
    }

    /// Current state of a disk.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn info(&self, disk: DiskId) -> Result<DiskInfo, Error> {
        self.lock().info(disk)
    }

    /// Virtual size of a disk.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn virtual_size(&self, disk: DiskId) -> Result<ByteLen, Error> {
        self.lock().virtual_size(disk).map(ByteLen::new)
    }

    /// Every disk, ascending.
    #[must_use]
    pub fn disks(&self) -> Vec<DiskId> {
        self.lock().disk_ids()
    }

    /// Memory held, for assertions.
    #[must_use]
    pub fn stats(&self) -> StorageStats {
        self.lock().stats()
    }

    /// Writes `data` at `offset` (any alignment); CBT-tracked.
    ///
    /// # Errors
    /// [`Error::OutOfRange`], [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn write(&self, disk: DiskId, offset: ByteOffset, data: &[u8]) -> Result<(), Error> {
        self.lock().write(disk, offset.get(), data)
    }

    /// Reads `length` bytes at `offset` (any alignment). A range inside one block is a zero-copy
    /// slice of the block (or of a shared zero block).
    ///
    /// # Errors
    /// [`Error::ReadTooLarge`] past [`MAX_READ_LEN`], [`Error::OutOfRange`], [`Error::UnknownDisk`],
    /// [`Error::DataDestroyed`].
    pub fn read(&self, disk: DiskId, offset: ByteOffset, length: usize) -> Result<Bytes, Error> {
        let length_u64 = u64::try_from(length).unwrap_or(u64::MAX);
        if length > MAX_READ_LEN {
            return Err(Error::ReadTooLarge {
                length: length_u64,
                max: u64::try_from(MAX_READ_LEN).unwrap_or(u64::MAX),
            });
        }
        let offset = offset.get();
        let pieces = self.lock().blocks_for_range(disk, offset, length_u64)?;
        let within = usize::try_from(offset % BLOCK_SIZE).unwrap_or(0);
        if let [single] = pieces.as_slice() {
            let block = single.as_ref().unwrap_or(&self.zeros);
            let end = within.saturating_add(length);
            if end <= block.len() {
                return Ok(block.slice(within..end));
            }
        }
        let mut out = BytesMut::with_capacity(length);
        let mut skip = within;
        for piece in &pieces {
            let block = piece.as_ref().unwrap_or(&self.zeros);
            let take = BLOCK_BYTES
                .saturating_sub(skip)
                .min(length.saturating_sub(out.len()));
            out.extend_from_slice(block.get(skip..skip.saturating_add(take)).unwrap_or(&[]));
            skip = 0;
        }
        Ok(out.freeze())
    }

    /// A whole block as the disk shows it (zero-copy; the shared zero block when unallocated).
    ///
    /// # Errors
    /// [`Error::BlockOutOfRange`], [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn read_block(&self, disk: DiskId, block: VhdBlockIndex) -> Result<Bytes, Error> {
        let found = self.lock().block(disk, block.get())?;
        Ok(found.unwrap_or_else(|| self.zeros.clone()))
    }

    /// Applies an imported block: `data` is the whole 2 MiB block; with a sector bitmap (512 bytes,
    /// sector `n` at byte `n >> 3` under mask `0x80 >> (n & 7)`) only sectors whose bit is set are
    /// written, the rest of the disk keeps its content (the VHD import rule). Without a bitmap, or
    /// with all bits set, the buffer is stored as is, without a copy. CBT-tracked per written range.
    ///
    /// # Errors
    /// [`Error::BlockLength`], [`Error::SectorBitmapLength`], [`Error::BlockOutOfRange`],
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn apply_block(
        &self,
        disk: DiskId,
        block: VhdBlockIndex,
        data: Bytes,
        sectors: Option<&[u8]>,
    ) -> Result<(), Error> {
        self.lock().apply_block(disk, block.get(), &data, sectors)
    }

    /// Blocks allocated in any layer of the disk's chain, ascending (a VHD export without base).
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn allocated_blocks(&self, disk: DiskId) -> Result<Vec<VhdBlockIndex>, Error> {
        let blocks = self.lock().allocated_blocks(disk)?;
        Ok(blocks.into_iter().map(block_index).collect())
    }

    /// Blocks allocated in a layer on exactly one of the chains of `disk` and `base`, ascending,
    /// limited to `disk`'s size: xapi's delta for a VHD export with `base` (changes since the
    /// base plus blocks of the base's own branch to revert; a block counts even if its bytes
    /// are unchanged). Read their content from `disk`.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`] (for either disk).
    pub fn differing_blocks(
        &self,
        disk: DiskId,
        base: DiskId,
    ) -> Result<Vec<VhdBlockIndex>, Error> {
        let blocks = self.lock().differing_blocks(disk, base)?;
        Ok(blocks.into_iter().map(block_index).collect())
    }

    /// SHA-256 of the whole disk content (`virtual_size` bytes); time grows with the virtual size.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn sha256(&self, disk: DiskId) -> Result<[u8; 32], Error> {
        let count = block_count(self.lock().live(disk)?.1);
        let mut hasher = Sha256::new();
        for index in 0..count {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            hasher.update(self.read_block(disk, VhdBlockIndex::new(index))?);
        }
        Ok(hasher.finalize().into())
    }

    /// Starts CBT on a disk with a fresh, unlinked log; `false` if it was already on (idempotent).
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn enable_cbt(&self, disk: DiskId) -> Result<bool, Error> {
        self.lock().enable_cbt(disk)
    }

    /// Stops CBT: deletes the disk's log and ends its chain there; `false` if it was off.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn disable_cbt(&self, disk: DiskId) -> Result<bool, Error> {
        self.lock().disable_cbt(disk)
    }

    /// Test switch: the disk's log was found inconsistent at activation (host crash while attached
    /// read-write). sm then deletes the log without relinking (`_disable_cbt_on_error`): CBT is
    /// off, the `db` layer raises the `VDI_CBT_METADATA_INCONSISTENT` alert and clears
    /// `cbt_enabled`, and [`Self::list_changed_blocks`] ending at this disk fails with
    /// [`Error::CbtNotEnabled`] (sm 460). Returns whether a log was dropped.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn cbt_mark_inconsistent(&self, disk: DiskId) -> Result<bool, Error> {
        self.lock().cbt_drop_inconsistent(disk)
    }

    /// Test switch: the disk's log bitmap is shorter than its disk (truncated file). CBT stays on;
    /// any [`Self::list_changed_blocks`] walking through this log fails with
    /// [`Error::CbtInconsistent`] (sm 459). Returns whether the disk has a log.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`].
    pub fn cbt_truncate_log(&self, disk: DiskId) -> Result<bool, Error> {
        self.lock().cbt_truncate(disk)
    }

    /// The 64 KiB units changed after `from` up to and including `to`, as sm computes them: the
    /// OR of the logs met walking child pointers from `from` to `to`, sized by the newest log
    /// (older ones zero-extended). `to_base64()` on the result is `VDI.list_changed_blocks`'s answer.
    ///
    /// # Errors
    /// [`Error::CbtSameDisk`], [`Error::CbtNotEnabled`], [`Error::CbtUnrelated`] (also for reversed
    /// order), [`Error::CbtInconsistent`], [`Error::UnknownDisk`]; see
    /// [`Error::sm_backend_failure`] for the XAPI error.
    pub fn list_changed_blocks(&self, from: DiskId, to: DiskId) -> Result<ChangedBlocks, Error> {
        self.lock().list_changed_blocks(from, to)
    }

    /// [`Self::list_changed_blocks`] encoded as xapi returns it: standard base64 with padding.
    ///
    /// # Errors
    /// As [`Self::list_changed_blocks`].
    pub fn list_changed_blocks_base64(&self, from: DiskId, to: DiskId) -> Result<String, Error> {
        Ok(self.list_changed_blocks(from, to)?.to_base64())
    }

    /// A guest writes `pattern` over `extent`, block by block (the lock is released between
    /// blocks, so a long write does not stall other handlers).
    ///
    /// # Errors
    /// [`Error::OutOfRange`], [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn guest_write(
        &self,
        disk: DiskId,
        extent: ByteExtent,
        pattern: Pattern,
    ) -> Result<(), Error> {
        self.write_pattern(disk, extent.offset().get(), extent.end().get(), pattern)
    }

    fn write_pattern(
        &self,
        disk: DiskId,
        start: u64,
        end: u64,
        pattern: Pattern,
    ) -> Result<(), Error> {
        self.lock()
            .check_range(disk, start, end.saturating_sub(start))?;
        let mut position = start;
        let mut buffer = Vec::new();
        while position < end {
            let block_end = (position / BLOCK_SIZE + 1).saturating_mul(BLOCK_SIZE);
            let piece = usize::try_from(block_end.min(end) - position).unwrap_or(BLOCK_BYTES);
            buffer.resize(piece, 0);
            pattern.fill(position, &mut buffer);
            self.write(disk, ByteOffset::new(position), &buffer)?;
            position += u64::try_from(piece).unwrap_or(BLOCK_SIZE);
        }
        Ok(())
    }

    /// A guest rewrites `count` distinct whole blocks chosen from `seed` (all blocks when `count`
    /// exceeds them) with `pattern`. Returns the blocks, ascending.
    ///
    /// # Errors
    /// [`Error::UnknownDisk`], [`Error::DataDestroyed`].
    pub fn guest_write_random_blocks(
        &self,
        disk: DiskId,
        count: u32,
        seed: u64,
        pattern: Pattern,
    ) -> Result<Vec<VhdBlockIndex>, Error> {
        let blocks = block_count(self.lock().live(disk)?.1);
        let chosen = choose_blocks(blocks, u64::from(count), seed);
        for block in &chosen {
            let start = u64::from(*block) * BLOCK_SIZE;
            self.write_pattern(disk, start, start + BLOCK_SIZE, pattern)?;
        }
        Ok(chosen.into_iter().map(block_index).collect())
    }
}

/// `count` distinct indices below `total` from a splitmix64 stream, ascending.
fn choose_blocks(total: u64, count: u64, seed: u64) -> Vec<u32> {
    let to_index = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    if count >= total {
        return (0..total).map(to_index).collect();
    }
    let mut chosen = std::collections::BTreeSet::new();
    let mut state = seed;
    // Rejection sampling needs few draws while count <= total / 2; past that, choose the
    // blocks to leave out instead.
    let (wanted, invert) = if count * 2 <= total {
        (count, false)
    } else {
        (total - count, true)
    };
    while u64::try_from(chosen.len()).unwrap_or(u64::MAX) < wanted {
        state = pattern::splitmix64(state);
        chosen.insert(state % total);
    }
    if invert {
        (0..total)
            .filter(|index| !chosen.contains(index))
            .map(to_index)
            .collect()
    } else {
        chosen.into_iter().map(to_index).collect()
    }
}
