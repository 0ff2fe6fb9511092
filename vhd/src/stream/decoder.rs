//! Push decoder for VHD streams laid out as xapi exports them: forward-only, any chunking,
//! memory bounded by one block plus the BAT.

use bytes::{Buf, Bytes, BytesMut};

use crate::bat::Bat;
use crate::bitmap::SectorBitmap;
use crate::block::Block;
use crate::error::{Error, Result, Structure};
use crate::footer::{FOOTER_SIZE, Footer};
use crate::header::{DynamicHeader, HEADER_SIZE};
use crate::units::{BITMAP_SIZE, BLOCK_BYTES, BLOCK_SIZE, BlockIndex, u64_from_usize};

/// What the decoder found, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The footer copy at offset 0.
    Footer(Footer),
    /// The dynamic header.
    Header(DynamicHeader),
    /// The BAT (its used entries): the exact set of blocks that will follow, known up front.
    Bat(Bat),
    /// One block, in increasing file offset; `sectors` is `None` when every sector inside the
    /// disk is marked present.
    Block(Block),
    /// The trailing footer (checked against the head copy); nothing may follow it.
    End(Footer),
}

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Require the trailing footer to be byte-identical to the head copy (Xen Orchestra does;
    /// xapi only parses it). Default: true.
    pub require_identical_footers: bool,
    /// Most bytes of the stream that may lie between structures, in total (padding, unused
    /// space before the BAT or between blocks). Offsets come from the peer: without a cap, a
    /// hostile header or BAT entry pointing terabytes ahead would make the decoder read that
    /// far before failing. Default: [`DEFAULT_MAX_SKIPPED_BYTES`].
    pub max_skipped_bytes: u64,
}

/// 64 MiB: xapi and Xen Orchestra streams have a few KiB of padding at most; files read
/// forward-only (qemu-img, vhd-util) have their metadata gaps well under a MiB.
pub const DEFAULT_MAX_SKIPPED_BYTES: u64 = 64 << 20;

impl Default for DecoderOptions {
    fn default() -> Self {
        Self {
            require_identical_footers: true,
            max_skipped_bytes: DEFAULT_MAX_SKIPPED_BYTES,
        }
    }
}

/// Which structure the decoder is collecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Footer,
    Header,
    Bat,
    BlockBitmap,
    BlockData,
    TrailingFooter,
    Done,
    Failed,
}

/// A forward-only, sans-IO decoder: feed it [`Bytes`] in any chunking with
/// [`StreamDecoder::decode`], and it yields [`StreamEvent`]s.
///
/// ```
/// # fn main() -> Result<(), vhd::Error> {
/// # let stream = bytes::Bytes::new();
/// let mut decoder = vhd::StreamDecoder::new();
/// let mut input = stream; // one chunk of the body; call decode again for every chunk
/// while let Some(event) = decoder.decode(&mut input)? {
///     // handle footer, header, BAT, blocks and the trailing footer
/// #   let _ = event;
/// }
/// // at end of input:
/// # let _ = decoder.finish();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StreamDecoder {
    options: DecoderOptions,
    state: State,
    /// Bytes consumed so far.
    position: u64,
    /// A structure split across chunks.
    partial: BytesMut,
    head_footer: Option<(Bytes, Footer)>,
    table_offset: u64,
    used_entries: u32,
    /// Allocated blocks sorted by bitmap offset.
    order: Vec<(u64, BlockIndex)>,
    next_block: usize,
    pending_bitmap: Option<SectorBitmap>,
    /// Where the trailing footer must start.
    trailing_footer_at: u64,
    /// Bytes skipped between structures so far (capped by the options).
    skipped: u64,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    /// A decoder with default options.
    #[must_use]
    pub fn new() -> Self {
        Self::with_options(DecoderOptions::default())
    }

    /// A decoder with explicit options.
    #[must_use]
    pub fn with_options(options: DecoderOptions) -> Self {
        Self {
            options,
            state: State::Footer,
            position: 0,
            partial: BytesMut::new(),
            head_footer: None,
            table_offset: 0,
            used_entries: 0,
            order: Vec::new(),
            next_block: 0,
            pending_bitmap: None,
            trailing_footer_at: 0,
            skipped: 0,
        }
    }

    /// Bytes consumed so far.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The head footer, once decoded.
    #[must_use]
    pub fn footer(&self) -> Option<&Footer> {
        self.head_footer.as_ref().map(|(_, footer)| footer)
    }

    /// True once the trailing footer was decoded.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes from the front of `input` and returns the next event, or `None` when
    /// `input` is exhausted and more data is needed. Call it until it returns `None` for each
    /// chunk. After an error the decoder refuses further input.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<StreamEvent>> {
        let result = self.step(input);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Declares the end of input: fails unless the trailing footer was decoded.
    pub fn finish(&self) -> Result<()> {
        let (structure, needed) = match self.state {
            State::Done => return Ok(()),
            State::Failed => {
                return Err(Error::OutOfOrder {
                    operation: "finish after a decoding error",
                });
            }
            State::Footer => (Structure::Footer, u64_from_usize(FOOTER_SIZE)),
            State::Header => (
                Structure::Header,
                self.header_offset()
                    .saturating_add(u64_from_usize(HEADER_SIZE)),
            ),
            State::Bat => (
                Structure::Bat,
                self.table_offset
                    .saturating_add(Bat::unpadded_len(self.used_entries)),
            ),
            State::BlockBitmap | State::BlockData => (
                Structure::Block,
                self.order
                    .get(self.next_block)
                    .map_or(self.position, |(offset, _)| {
                        offset.saturating_add(crate::stream::STREAM_BLOCK_LEN)
                    }),
            ),
            State::TrailingFooter => (
                Structure::TrailingFooter,
                self.trailing_footer_at
                    .saturating_add(u64_from_usize(FOOTER_SIZE)),
            ),
        };
        Err(Error::Truncated {
            structure,
            needed,
            available: self.position,
        })
    }

    fn header_offset(&self) -> u64 {
        self.head_footer
            .as_ref()
            .and_then(|(_, footer)| footer.data_offset)
            .map_or(512, |offset| offset.0)
    }

    fn step(&mut self, input: &mut Bytes) -> Result<Option<StreamEvent>> {
        match self.state {
            State::Failed => Err(Error::OutOfOrder {
                operation: "decode after a decoding error",
            }),
            State::Done => {
                if input.is_empty() {
                    Ok(None)
                } else {
                    Err(Error::TrailingData {
                        position: self.position,
                    })
                }
            }
            State::Footer => {
                let Some(raw) = self.take(input, 0, FOOTER_SIZE, Structure::Footer)? else {
                    return Ok(None);
                };
                let footer = Footer::parse(&raw)?;
                if !footer.disk_type.is_sparse() {
                    return Err(Error::UnsupportedDiskType {
                        operation: "stream decoding",
                        found: footer.disk_type,
                    });
                }
                tracing::debug!(disk = %footer.unique_id, size = footer.current_size, "VHD stream footer");
                self.head_footer = Some((raw, footer.clone()));
                self.state = State::Header;
                self.check_forward(self.header_offset(), Structure::Header)?;
                Ok(Some(StreamEvent::Footer(footer)))
            }
            State::Header => {
                let offset = self.header_offset();
                let Some(raw) = self.take(input, offset, HEADER_SIZE, Structure::Header)? else {
                    return Ok(None);
                };
                let header = DynamicHeader::parse(&raw)?;
                let expected = u32::try_from(BLOCK_SIZE).unwrap_or(u32::MAX);
                if header.block_size != expected {
                    return Err(Error::UnsupportedBlockSize {
                        found: header.block_size,
                        expected,
                    });
                }
                let footer = self.head_footer.as_ref().map(|(_, footer)| footer).ok_or(
                    Error::OutOfOrder {
                        operation: "header before footer",
                    },
                )?;
                self.used_entries = header.used_table_entries(footer)?;
                self.table_offset = header.table_offset.0;
                self.trailing_footer_at = header
                    .parent_locators
                    .iter()
                    .flatten()
                    .filter(|locator| locator.data_space != 0)
                    .map(|locator| {
                        locator
                            .data_offset
                            .0
                            .saturating_add(locator.data_space_bytes())
                    })
                    .fold(
                        self.table_offset
                            .saturating_add(Bat::padded_len(self.used_entries)),
                        u64::max,
                    );
                self.state = State::Bat;
                self.check_forward(self.table_offset, Structure::Bat)?;
                Ok(Some(StreamEvent::Header(header)))
            }
            State::Bat => {
                let len = usize::try_from(Bat::unpadded_len(self.used_entries))
                    .map_err(|_| Error::Overflow { what: "BAT length" })?;
                let Some(raw) = self.take(input, self.table_offset, len, Structure::Bat)? else {
                    return Ok(None);
                };
                let bat = Bat::parse(&raw, self.used_entries)?;
                self.plan_blocks(&bat)?;
                Ok(Some(StreamEvent::Bat(bat)))
            }
            State::BlockBitmap => {
                let (offset, _) = self.current_block()?;
                let Some(raw) = self.take(input, offset, BITMAP_SIZE, Structure::Bitmap)? else {
                    return Ok(None);
                };
                self.pending_bitmap = Some(SectorBitmap::from_bytes(&raw)?);
                self.state = State::BlockData;
                self.step(input)
            }
            State::BlockData => {
                let (offset, index) = self.current_block()?;
                let data_offset = offset.saturating_add(u64_from_usize(BITMAP_SIZE));
                let Some(data) = self.take(input, data_offset, BLOCK_BYTES, Structure::Block)?
                else {
                    return Ok(None);
                };
                let bitmap = self.pending_bitmap.take().ok_or(Error::OutOfOrder {
                    operation: "block data before its bitmap",
                })?;
                let virtual_size = self.footer().map_or(0, |footer| footer.current_size);
                let in_disk = Block::sectors_in_disk(index, virtual_size);
                let sectors = (!bitmap.is_full_below(in_disk)).then_some(bitmap);
                self.next_block += 1;
                self.state = if self.next_block < self.order.len() {
                    State::BlockBitmap
                } else {
                    State::TrailingFooter
                };
                Ok(Some(StreamEvent::Block(Block {
                    index,
                    data,
                    sectors,
                })))
            }
            State::TrailingFooter => {
                let Some(raw) = self.take(
                    input,
                    self.trailing_footer_at,
                    FOOTER_SIZE,
                    Structure::TrailingFooter,
                )?
                else {
                    return Ok(None);
                };
                let trailing = Footer::parse(&raw).map_err(|error| match error {
                    Error::BadChecksum {
                        found, expected, ..
                    } => Error::BadChecksum {
                        structure: Structure::TrailingFooter,
                        found,
                        expected,
                    },
                    other => other,
                })?;
                if self.options.require_identical_footers
                    && self.head_footer.as_ref().map(|(head, _)| head) != Some(&raw)
                {
                    return Err(Error::FooterMismatch);
                }
                self.state = State::Done;
                if !input.is_empty() {
                    return Err(Error::TrailingData {
                        position: self.position,
                    });
                }
                Ok(Some(StreamEvent::End(trailing)))
            }
        }
    }

    /// Orders allocated blocks by file offset and checks they follow the BAT without overlap.
    fn plan_blocks(&mut self, bat: &Bat) -> Result<()> {
        let bat_end = self
            .table_offset
            .saturating_add(Bat::unpadded_len(self.used_entries));
        let mut order: Vec<(u64, BlockIndex)> = bat
            .allocated()
            .map(|(index, sector)| (sector.0 * 512, index))
            .collect();
        order.sort_unstable();
        let mut previous: Option<(u64, BlockIndex)> = None;
        for (offset, index) in &order {
            if *offset < bat_end {
                return Err(Error::BatEntryOutOfRange {
                    block: *index,
                    sector: offset / 512,
                    reason: "the block would start before the end of the BAT",
                });
            }
            if let Some((previous_offset, previous_index)) = previous {
                let previous_end = previous_offset.saturating_add(crate::stream::STREAM_BLOCK_LEN);
                if *offset < previous_end {
                    return Err(Error::OverlappingBlocks {
                        first: previous_index,
                        first_end: previous_end,
                        second: *index,
                        second_start: *offset,
                    });
                }
            }
            previous = Some((*offset, *index));
        }
        if let Some((offset, _)) = previous {
            let end = offset.saturating_add(crate::stream::STREAM_BLOCK_LEN);
            self.trailing_footer_at = self.trailing_footer_at.max(end);
        }
        tracing::debug!(blocks = order.len(), "VHD stream BAT");
        self.state = if order.is_empty() {
            State::TrailingFooter
        } else {
            State::BlockBitmap
        };
        self.order = order;
        self.next_block = 0;
        Ok(())
    }

    fn current_block(&self) -> Result<(u64, BlockIndex)> {
        self.order
            .get(self.next_block)
            .copied()
            .ok_or(Error::OutOfOrder {
                operation: "block past the BAT's list",
            })
    }

    /// Fails when `target` lies behind what was already consumed, or so far ahead that the
    /// stream's unused bytes would exceed the cap.
    fn check_forward(&self, target: u64, structure: Structure) -> Result<()> {
        let Some(gap) = target.checked_sub(self.position) else {
            return Err(Error::BackwardTarget {
                structure,
                target,
                position: self.position,
            });
        };
        if self.skipped.saturating_add(gap) > self.options.max_skipped_bytes {
            return Err(Error::GapTooLarge {
                structure,
                target,
                position: self.position,
                max: self.options.max_skipped_bytes,
            });
        }
        Ok(())
    }

    /// Skips up to `target`, then collects `len` bytes: zero-copy when `input` holds them all,
    /// otherwise accumulated across calls. `None` means `input` ran out first.
    fn take(
        &mut self,
        input: &mut Bytes,
        target: u64,
        len: usize,
        structure: Structure,
    ) -> Result<Option<Bytes>> {
        if self.partial.is_empty() {
            self.check_forward(target, structure)?;
            let gap = target - self.position;
            let skip = usize::try_from(gap).unwrap_or(usize::MAX).min(input.len());
            input.advance(skip);
            self.position += u64_from_usize(skip);
            self.skipped += u64_from_usize(skip);
            if self.position < target {
                return Ok(None);
            }
            if input.len() >= len {
                self.position += u64_from_usize(len);
                return Ok(Some(input.split_to(len)));
            }
            if input.is_empty() {
                return Ok(None);
            }
            self.partial.reserve(len);
        }
        let wanted = len.saturating_sub(self.partial.len()).min(input.len());
        self.partial
            .extend_from_slice(input.get(..wanted).unwrap_or_default());
        input.advance(wanted);
        self.position += u64_from_usize(wanted);
        if self.partial.len() < len {
            return Ok(None);
        }
        Ok(Some(self.partial.split().freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockSet;
    use crate::layout::{DiskKind, LayoutProfile};
    use crate::stream::{BitmapMode, StreamEncoder, StreamSpec};
    use uuid::Uuid;

    fn small_stream(blocks: &[u32]) -> Vec<u8> {
        let spec = StreamSpec {
            virtual_size: 5 << 20,
            unique_id: Uuid::from_u128(1),
            kind: DiskKind::Dynamic,
            blocks: blocks.iter().copied().map(BlockIndex).collect::<BlockSet>(),
            profile: LayoutProfile::xapi(),
            bitmaps: BitmapMode::Full,
        };
        let blocks: Vec<_> = blocks
            .iter()
            .map(|i| {
                let fill = u8::try_from(*i).unwrap() + 1;
                Ok(Block::full(
                    BlockIndex(*i),
                    Bytes::from(vec![fill; BLOCK_BYTES]),
                ))
            })
            .collect();
        StreamEncoder::new(spec)
            .unwrap()
            .into_pieces(blocks)
            .map(Result::unwrap)
            .flat_map(|piece| piece.to_vec())
            .collect()
    }

    fn decode_in_chunks(stream: &[u8], chunk: usize) -> Result<Vec<StreamEvent>> {
        let mut decoder = StreamDecoder::new();
        let mut events = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut input = Bytes::copy_from_slice(piece);
            while let Some(event) = decoder.decode(&mut input)? {
                events.push(event);
            }
        }
        decoder.finish()?;
        Ok(events)
    }

    #[test]
    fn any_chunking_gives_the_same_events() {
        let stream = small_stream(&[0, 2]);
        let whole = decode_in_chunks(&stream, stream.len()).unwrap();
        assert_eq!(whole.len(), 6);
        for chunk in [1, 511, 512, 4096, 65_537] {
            assert_eq!(
                decode_in_chunks(&stream, chunk).unwrap(),
                whole,
                "chunk {chunk}"
            );
        }
        let StreamEvent::Block(block) = &whole[4] else {
            panic!("expected block 2");
        };
        assert_eq!(block.index, BlockIndex(2));
        assert!(block.sectors.is_none());
        assert!(block.data.iter().all(|byte| *byte == 3));
    }

    #[test]
    fn truncation_and_trailing_data_are_errors() {
        let stream = small_stream(&[1]);
        for cut in [0, 100, 600, 2100, stream.len() - 1] {
            assert!(
                matches!(
                    decode_in_chunks(&stream[..cut], 4096),
                    Err(Error::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut longer = stream.clone();
        longer.push(0);
        assert!(matches!(
            decode_in_chunks(&longer, 4096),
            Err(Error::TrailingData { .. })
        ));
    }

    #[test]
    fn mismatched_trailing_footer_is_rejected() {
        let mut stream = small_stream(&[]);
        let len = stream.len();
        // Change the trailing footer's timestamp and fix its checksum: valid, but different.
        let mut footer = Footer::parse(&stream[len - 512..]).unwrap();
        footer.timestamp = crate::units::VhdTimestamp(1);
        stream[len - 512..].copy_from_slice(&footer.encode());
        assert!(matches!(
            decode_in_chunks(&stream, 1000),
            Err(Error::FooterMismatch)
        ));
    }
}
