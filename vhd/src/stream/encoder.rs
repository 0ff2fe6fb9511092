//! Stream encoder: footer, header, BAT, blocks in increasing index, footer — with the exact
//! total length known before the first byte, so it can be sent with `Content-Length`.

use bytes::Bytes;
use uuid::Uuid;

use crate::bat::Bat;
use crate::block::{Block, BlockSet};
use crate::error::{Error, Result};
use crate::footer::Footer;
use crate::header::DynamicHeader;
use crate::layout::{DiskKind, LayoutProfile, Metadata};
use crate::units::{BITMAP_SIZE, BLOCK_SIZE, BlockIndex, u64_from_usize};

/// Bytes one block takes in a stream: a 512-byte bitmap and 2 MiB of data.
pub const STREAM_BLOCK_LEN: u64 = 512 + BLOCK_SIZE;

/// A bitmap with every sector present, shared by every full block (no allocation per block).
static FULL_BITMAP: [u8; BITMAP_SIZE] = [0xFF; BITMAP_SIZE];

/// Which bitmaps the encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BitmapMode {
    /// Every block whole with all bits set: what xapi emits and what Xen Orchestra's merges
    /// and readers need. A block carrying a partial bitmap is refused.
    #[default]
    Full,
    /// Each block's own bitmap is written (`None` = all set): for differencing files whose
    /// readers honour bitmaps (libvhdi, xapi import, this crate).
    Partial,
}

/// What to encode.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Virtual size in bytes (a multiple of 512, at most [`crate::MAX_VIRTUAL_SIZE`]).
    pub virtual_size: u64,
    /// Footer uuid (xapi draws a fresh random one per export).
    pub unique_id: Uuid,
    /// Dynamic, or differencing with the parent's identity.
    pub kind: DiskKind,
    /// Exactly the blocks that will be encoded.
    pub blocks: BlockSet,
    /// Whose layout habits to copy.
    pub profile: LayoutProfile,
    /// Full blocks (default) or partial bitmaps.
    pub bitmaps: BitmapMode,
}

/// Where the encoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Blocks,
    Done,
}

/// A push encoder producing the stream as a sequence of [`Bytes`] pieces. Block payloads are
/// passed through without copying.
///
/// Call [`StreamEncoder::head`], then [`StreamEncoder::encode_block`] once per announced block
/// in increasing index order, then [`StreamEncoder::tail`]; or let
/// [`StreamEncoder::into_pieces`] drive it.
#[derive(Debug)]
pub struct StreamEncoder {
    meta: Metadata,
    bat: Bat,
    blocks: BlockSet,
    bitmaps: BitmapMode,
    next: usize,
    stage: Stage,
    total_len: u64,
}

impl StreamEncoder {
    /// Plans the stream: validates the size and block set and places every block.
    pub fn new(spec: StreamSpec) -> Result<Self> {
        let meta = Metadata::plan(spec.virtual_size, spec.unique_id, &spec.kind, &spec.profile)?;
        let entries = meta.header.max_table_entries;
        let mut bat = Bat::unallocated(entries)?;
        let first_sector = meta.first_block_offset / 512;
        for (position, index) in spec.blocks.iter().enumerate() {
            if index.0 >= entries {
                return Err(Error::UnexpectedBlock {
                    index,
                    reason: "beyond the end of the disk",
                });
            }
            let sector = u64_from_usize(position)
                .checked_mul(STREAM_BLOCK_LEN / 512)
                .and_then(|offset| offset.checked_add(first_sector))
                .and_then(|sector| u32::try_from(sector).ok())
                .filter(|sector| *sector != crate::bat::BAT_UNALLOCATED)
                .ok_or(Error::BatEntryOutOfRange {
                    block: index,
                    sector: u64::from(u32::MAX),
                    reason: "too many blocks for 32-bit BAT sectors",
                })?;
            bat.set(index, Some(sector))?;
        }
        let total_len = u64_from_usize(spec.blocks.len())
            .checked_mul(STREAM_BLOCK_LEN)
            .and_then(|blocks| blocks.checked_add(meta.first_block_offset))
            .and_then(|len| len.checked_add(512))
            .ok_or(Error::Overflow {
                what: "stream length",
            })?;
        tracing::debug!(
            disk = %spec.unique_id,
            blocks = spec.blocks.len(),
            total_len,
            "planned VHD stream"
        );
        Ok(Self {
            meta,
            bat,
            blocks: spec.blocks,
            bitmaps: spec.bitmaps,
            next: 0,
            stage: Stage::Head,
            total_len,
        })
    }

    /// Exact number of bytes the whole stream will have (the `Content-Length`).
    #[must_use]
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// The footer written at both ends.
    #[must_use]
    pub fn footer(&self) -> &Footer {
        &self.meta.footer
    }

    /// The dynamic header.
    #[must_use]
    pub fn header(&self) -> &DynamicHeader {
        &self.meta.header
    }

    /// The BAT as it will be written.
    #[must_use]
    pub fn bat(&self) -> &Bat {
        &self.bat
    }

    /// Everything before the first block: footer, header, locator sector and padded BAT.
    pub fn head(&mut self) -> Result<Bytes> {
        if self.stage != Stage::Head {
            return Err(Error::OutOfOrder { operation: "head" });
        }
        let head = self.meta.encode_head(&self.bat)?;
        self.stage = Stage::Blocks;
        Ok(Bytes::from(head))
    }

    /// Bitmap and data of the next announced block (the data is the block's own buffer).
    pub fn encode_block(&mut self, block: Block) -> Result<[Bytes; 2]> {
        if self.stage != Stage::Blocks {
            return Err(Error::OutOfOrder {
                operation: "encode_block",
            });
        }
        let expected = self.blocks.get(self.next).ok_or(Error::UnexpectedBlock {
            index: block.index,
            reason: "more blocks than announced",
        })?;
        if block.index != expected {
            return Err(Error::UnexpectedBlock {
                index: block.index,
                reason: if self.blocks.contains(block.index) {
                    "out of order (blocks go in increasing index)"
                } else {
                    "not in the announced block set"
                },
            });
        }
        block.check_shape()?;
        let bitmap = match (&block.sectors, self.bitmaps) {
            (None, _) => Bytes::from_static(&FULL_BITMAP),
            (Some(sectors), _) if sectors.is_full() => Bytes::from_static(&FULL_BITMAP),
            (Some(sectors), BitmapMode::Partial) => Bytes::copy_from_slice(sectors.as_bytes()),
            (Some(_), BitmapMode::Full) => {
                return Err(Error::InvalidBlock {
                    index: block.index,
                    reason: "partial bitmap in full-block mode",
                });
            }
        };
        self.next += 1;
        Ok([bitmap, block.data])
    }

    /// The trailing footer, byte-identical to the one at offset 0. Fails if announced blocks
    /// were not encoded.
    pub fn tail(&mut self) -> Result<Bytes> {
        if self.stage != Stage::Blocks {
            return Err(Error::OutOfOrder { operation: "tail" });
        }
        if self.next != self.blocks.len() {
            return Err(Error::MissingBlocks {
                expected: self.blocks.len(),
                written: self.next,
            });
        }
        self.stage = Stage::Done;
        Ok(Bytes::copy_from_slice(&self.meta.footer.encode()))
    }

    /// Drives the encoder over `blocks`, yielding every piece of the stream in order. Errors
    /// from `blocks` or from encoding end the iteration after being yielded.
    pub fn into_pieces<I>(self, blocks: I) -> Pieces<I::IntoIter>
    where
        I: IntoIterator<Item = Result<Block>>,
    {
        Pieces {
            encoder: self,
            blocks: blocks.into_iter(),
            pending_data: None,
            failed: false,
        }
    }

    /// Blocks announced but not yet encoded.
    #[must_use]
    pub fn remaining_blocks(&self) -> usize {
        self.blocks.len().saturating_sub(self.next)
    }

    /// The block the encoder expects next, if any.
    #[must_use]
    pub fn next_block(&self) -> Option<BlockIndex> {
        self.blocks.get(self.next)
    }
}

/// Iterator over the pieces of a stream; see [`StreamEncoder::into_pieces`].
#[derive(Debug)]
pub struct Pieces<I> {
    encoder: StreamEncoder,
    blocks: I,
    pending_data: Option<Bytes>,
    failed: bool,
}

impl<I> Pieces<I> {
    /// Exact length of the whole stream, known before the first piece.
    #[must_use]
    pub fn total_len(&self) -> u64 {
        self.encoder.total_len()
    }
}

impl<I> Iterator for Pieces<I>
where
    I: Iterator<Item = Result<Block>>,
{
    type Item = Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(data) = self.pending_data.take() {
            return Some(Ok(data));
        }
        let piece = match self.encoder.stage {
            Stage::Head => self.encoder.head(),
            Stage::Done => return None,
            Stage::Blocks => match self.blocks.next() {
                Some(Ok(block)) => self.encoder.encode_block(block).map(|[bitmap, data]| {
                    self.pending_data = Some(data);
                    bitmap
                }),
                Some(Err(error)) => Err(error),
                None => self.encoder.tail(),
            },
        };
        self.failed = piece.is_err();
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::SectorBitmap;
    use crate::layout::ParentIdentity;
    use crate::units::{BLOCK_BYTES, SectorIndex, VhdTimestamp};

    fn xapi_delta_spec(blocks: &[u32]) -> StreamSpec {
        StreamSpec {
            virtual_size: 10 << 30,
            unique_id: Uuid::from_u128(1),
            kind: DiskKind::Differencing(ParentIdentity {
                unique_id: Uuid::from_u128(2),
                timestamp: VhdTimestamp(3),
                path: "/dev/VG/base".to_owned(),
            }),
            blocks: blocks.iter().copied().map(BlockIndex).collect(),
            profile: LayoutProfile::xapi(),
            bitmaps: BitmapMode::Full,
        }
    }

    /// Spec §7.2 example: a 10 GiB delta with blocks 0 and 5 has 5120 BAT entries at
    /// 2048–22527, BAT[0] = 44, BAT[5] = 4141, the trailing footer at 4217856 and 4218368 bytes
    /// in all.
    #[test]
    fn xapi_delta_offsets() {
        let encoder = StreamEncoder::new(xapi_delta_spec(&[5, 0])).unwrap();
        assert_eq!(encoder.total_len(), 4_218_368);
        assert_eq!(encoder.bat().get(BlockIndex(0)), Some(SectorIndex(44)));
        assert_eq!(encoder.bat().get(BlockIndex(5)), Some(SectorIndex(4141)));
        let data = Bytes::from(vec![0xAB; BLOCK_BYTES]);
        let pieces: Vec<Bytes> = encoder
            .into_pieces([0, 5].map(|i| Ok(Block::full(BlockIndex(i), data.clone()))))
            .collect::<Result<_>>()
            .unwrap();
        let total: usize = pieces.iter().map(Bytes::len).sum();
        assert_eq!(total, 4_218_368);
        let head = &pieces[0];
        assert_eq!(head.len(), 22528);
        // The trailing footer starts at 4217856 and equals the head copy.
        assert_eq!(pieces.last().unwrap()[..], head[..512]);
        // Block data is passed through, not copied.
        assert_eq!(pieces[2].as_ptr(), data.as_ptr());
    }

    #[test]
    fn refuses_out_of_order_unannounced_missing_and_partial_blocks() {
        let data = Bytes::from(vec![0; BLOCK_BYTES]);
        let mut encoder = StreamEncoder::new(xapi_delta_spec(&[1, 2])).unwrap();
        assert!(matches!(encoder.tail(), Err(Error::OutOfOrder { .. })));
        encoder.head().unwrap();
        assert!(matches!(
            encoder.encode_block(Block::full(BlockIndex(2), data.clone())),
            Err(Error::UnexpectedBlock { .. })
        ));
        assert!(matches!(
            encoder.encode_block(Block::full(BlockIndex(3), data.clone())),
            Err(Error::UnexpectedBlock { .. })
        ));
        let mut half = SectorBitmap::empty();
        half.insert_range(0..8).unwrap();
        assert!(matches!(
            encoder.encode_block(Block::partial(BlockIndex(1), data.clone(), half)),
            Err(Error::InvalidBlock { .. })
        ));
        encoder
            .encode_block(Block::full(BlockIndex(1), data))
            .unwrap();
        assert!(matches!(
            encoder.tail(),
            Err(Error::MissingBlocks {
                expected: 2,
                written: 1
            })
        ));
        assert!(matches!(
            StreamEncoder::new(xapi_delta_spec(&[5120])),
            Err(Error::UnexpectedBlock { .. })
        ));
    }
}
