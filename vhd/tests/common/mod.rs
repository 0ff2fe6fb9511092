//! Helpers shared by the integration tests: content models, fixture patterns, hashing.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use vhd::{BLOCK_SIZE, Block, BlockIndex, ByteOffset, SectorBitmap};

pub const BLOCK: usize = 2 << 20;

/// A disk described block by block: what a layer holds (data and which sectors).
#[derive(Debug, Clone, Default)]
pub struct LayerModel {
    pub size: u64,
    pub blocks: BTreeMap<u32, Block>,
}

impl LayerModel {
    /// Content of this layer over `below` (the parent chain's content, or zeros).
    pub fn content_over(&self, below: Option<&[u8]>) -> Vec<u8> {
        let size = usize::try_from(self.size).unwrap();
        let mut out = vec![0u8; size];
        if let Some(below) = below {
            let n = below.len().min(size);
            out[..n].copy_from_slice(&below[..n]);
        }
        for block in self.blocks.values() {
            for (offset, bytes) in block.present_extents(self.size) {
                let start = usize::try_from(offset.0).unwrap();
                out[start..start + bytes.len()].copy_from_slice(&bytes);
            }
        }
        out
    }

    /// Content when absent sectors of allocated blocks read as zeros (a dynamic disk).
    pub fn dynamic_content(&self) -> Vec<u8> {
        self.content_over(None)
    }

    pub fn block_list(&self) -> Vec<Block> {
        self.blocks.values().cloned().collect()
    }
}

/// 2 MiB of data where every sector differs: byte `i` of sector `s` is `seed + s*7 + i/64`.
pub fn block_data(seed: u8, sectors: Option<&SectorBitmap>) -> Bytes {
    let mut data = vec![0u8; BLOCK];
    for (sector, chunk) in data.chunks_mut(512).enumerate() {
        let present = sectors.is_none_or(|bits| bits.contains(u32::try_from(sector).unwrap()));
        if !present {
            continue; // writers zero-fill absent sectors; keep the model identical
        }
        let base = seed.wrapping_add((sector % 256).to_le_bytes()[0].wrapping_mul(7));
        for (i, run) in (0u8..).zip(chunk.chunks_mut(64)) {
            run.fill(base.wrapping_add(i));
        }
    }
    Bytes::from(data)
}

/// A block with data for its present sectors and zeros elsewhere.
pub fn make_block(index: u32, seed: u8, sectors: Option<SectorBitmap>) -> Block {
    let data = block_data(seed, sectors.as_ref());
    match sectors {
        None => Block::full(BlockIndex(index), data),
        Some(bits) => Block::partial(BlockIndex(index), data, bits),
    }
}

/// A bitmap with the given runs of sectors set.
pub fn bitmap(runs: &[(u32, u32)]) -> SectorBitmap {
    let mut bits = SectorBitmap::empty();
    for (start, end) in runs {
        bits.insert_range(*start..*end).unwrap();
    }
    bits
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a whole virtual disk through `read`, 1 MiB at a time.
pub fn read_all(size: u64, mut read: impl FnMut(ByteOffset, &mut [u8])) -> Vec<u8> {
    let mut out = vec![0u8; usize::try_from(size).unwrap()];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        read(ByteOffset(u64::try_from(i).unwrap() << 20), chunk);
    }
    out
}

/// The third-party fixtures vendored at the repository root (`fixtures/`, see its README).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures"))
}

/// The fixtures' position-dependent pattern (recipes/pattern.py): the byte at absolute offset
/// `a` under tag `T` is byte `a % 32` of `T + "@" + "%016x" % (a - a % 32) + ".........." + "\n"`.
pub fn pattern(tag: &str, start: u64, len: u64) -> Vec<u8> {
    let first = start - start % 32;
    let mut out = Vec::with_capacity(usize::try_from(len + 64).unwrap());
    let mut record = first;
    while record < start + len {
        out.extend_from_slice(format!("{tag}@{record:016x}..........\n").as_bytes());
        record += 32;
    }
    let skip = usize::try_from(start - first).unwrap();
    out[skip..skip + usize::try_from(len).unwrap()].to_vec()
}

/// Applies the manifest's `writes` (tag, offset, length) over zeros.
pub fn apply_writes(size: u64, writes: &[(String, u64, u64)]) -> Vec<u8> {
    let mut disk = vec![0u8; usize::try_from(size).unwrap()];
    for (tag, offset, len) in writes {
        let start = usize::try_from(*offset).unwrap();
        disk[start..start + usize::try_from(*len).unwrap()]
            .copy_from_slice(&pattern(tag, *offset, *len));
    }
    disk
}

/// Block count of a disk.
pub fn blocks_of(size: u64) -> u32 {
    u32::try_from(size.div_ceil(BLOCK_SIZE)).unwrap()
}
