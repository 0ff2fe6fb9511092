//! Creating dynamic and differencing files and writing blocks into them (new or existing).

use uuid::Uuid;

use crate::bat::Bat;
use crate::bitmap::SectorBitmap;
use crate::block::Block;
use crate::error::{Error, Result, Structure};
use crate::footer::{DiskType, FOOTER_SIZE, Footer};
use crate::header::{DynamicHeader, HEADER_SIZE};
use crate::io::WriteAt;
use crate::layout::{DiskKind, LayoutProfile, Metadata};
use crate::reader::VhdFile;
use crate::units::{BITMAP_SIZE, BLOCK_BYTES, BLOCK_SIZE, SECTOR_BYTES, u64_from_usize};

/// Zeros written where a new block has no data.
static ZEROS: [u8; BLOCK_BYTES] = [0; BLOCK_BYTES];

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Virtual size in bytes (a multiple of 512, at most [`crate::MAX_VIRTUAL_SIZE`]).
    pub virtual_size: u64,
    /// Footer uuid of the new disk.
    pub unique_id: Uuid,
    /// Dynamic, or differencing with its parent's identity.
    pub kind: DiskKind,
    /// Layout habits; [`LayoutProfile::native`] for files we store.
    pub profile: LayoutProfile,
}

/// Writes 2 MiB blocks into a dynamic or differencing file. New blocks are appended; the BAT
/// entry and the trailing footer are updated with each allocation, so the file is a valid VHD
/// after every call.
#[derive(Debug)]
pub struct VhdWriter<F> {
    file: F,
    footer: Footer,
    header: DynamicHeader,
    bat: Bat,
    /// End of the last structure: where the next block goes.
    data_end: u64,
}

impl<F: WriteAt> VhdWriter<F> {
    /// Creates a new, empty disk in `file` (which should be empty).
    pub fn create(mut file: F, options: &CreateOptions) -> Result<Self> {
        let meta = Metadata::plan(
            options.virtual_size,
            options.unique_id,
            &options.kind,
            &options.profile,
        )?;
        let bat = Bat::unallocated(meta.header.max_table_entries)?;
        let head = meta.encode_head(&bat)?;
        file.write_all_at(&head, 0)
            .map_err(Error::io("writing VHD metadata"))?;
        let mut writer = Self {
            file,
            footer: meta.footer,
            header: meta.header,
            bat,
            data_end: meta.first_block_offset,
        };
        writer.write_trailing_footer()?;
        tracing::debug!(disk = %options.unique_id, size = options.virtual_size, "created VHD");
        Ok(writer)
    }

    /// Opens an existing dynamic or differencing file with 2 MiB blocks for writing.
    pub fn open(file: F) -> Result<Self> {
        let (footer, header, bat, data_end) = {
            let existing = VhdFile::open(&file)?;
            let (Some(header), Some(bat)) = (existing.header(), existing.bat()) else {
                return Err(Error::UnsupportedDiskType {
                    operation: "writing",
                    found: existing.disk_type(),
                });
            };
            let expected = u32::try_from(BLOCK_SIZE).unwrap_or(u32::MAX);
            if header.block_size != expected {
                return Err(Error::UnsupportedBlockSize {
                    found: header.block_size,
                    expected,
                });
            }
            let creator = existing.footer().creator;
            if creator.is_blktap() && creator.version == 1 {
                return Err(Error::InvalidField {
                    structure: Structure::Footer,
                    field: "creator_version",
                    value: u64::from(creator.version),
                    reason: "blktap 0.1 files (little-endian bitmaps) are read-only here",
                });
            }
            let data_end = metadata_end(&existing, header, bat)?;
            (
                existing.footer().clone(),
                header.clone(),
                bat.clone(),
                data_end,
            )
        };
        Ok(Self {
            file,
            footer,
            header,
            bat,
            data_end,
        })
    }

    /// The footer written at both ends.
    #[must_use]
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header.
    #[must_use]
    pub fn header(&self) -> &DynamicHeader {
        &self.header
    }

    /// The BAT as written so far.
    #[must_use]
    pub fn bat(&self) -> &Bat {
        &self.bat
    }

    /// Writes the present sectors of `block`. A new block is appended: in a dynamic disk with
    /// every bitmap bit set and zeros where `block` has no data; in a differencing disk with
    /// `block`'s bitmap. An allocated block gets the present sectors overwritten and their bits
    /// set (the union with its bitmap).
    pub fn write_block(&mut self, block: &Block) -> Result<()> {
        block.check_shape()?;
        if block.index.0 >= self.bat.len() {
            return Err(Error::UnexpectedBlock {
                index: block.index,
                reason: "beyond the end of the disk",
            });
        }
        match self.bat.get(block.index) {
            None => self.allocate(block),
            Some(sector) => self.overlay(block, sector.0 * 512),
        }
    }

    fn allocate(&mut self, block: &Block) -> Result<()> {
        let start = self.data_end.next_multiple_of(512);
        let sector = u32::try_from(start / 512)
            .ok()
            .filter(|sector| *sector != crate::bat::BAT_UNALLOCATED)
            .ok_or(Error::BatEntryOutOfRange {
                block: block.index,
                sector: start / 512,
                reason: "the file is too large for 32-bit BAT sectors",
            })?;
        let bitmap = match (&block.sectors, self.footer.disk_type) {
            (Some(sectors), DiskType::Differencing) => sectors.clone(),
            _ => SectorBitmap::full(),
        };
        let data_start = start + u64_from_usize(BITMAP_SIZE);
        self.write(bitmap.as_bytes(), start, "writing a bitmap")?;
        match &block.sectors {
            None => self.write(&block.data, data_start, "writing a block")?,
            Some(sectors) => {
                // Present runs from the block, zeros in between (so readers that ignore
                // bitmaps, like qemu, see the same content).
                let mut next = 0u32;
                let runs: Vec<_> = sectors.runs().collect();
                for run in runs.iter().cloned().chain(std::iter::once(
                    crate::units::SECTORS_PER_BLOCK..crate::units::SECTORS_PER_BLOCK,
                )) {
                    let (gap_start, gap_end) = (sector_bytes(next), sector_bytes(run.start));
                    if gap_start < gap_end {
                        let zeros = ZEROS.get(..gap_end - gap_start).unwrap_or_default();
                        self.write(
                            zeros,
                            data_start + u64_from_usize(gap_start),
                            "zero-filling a block",
                        )?;
                    }
                    let (from, to) = (sector_bytes(run.start), sector_bytes(run.end));
                    if from < to {
                        let data = block.data.get(from..to).unwrap_or_default();
                        self.write(data, data_start + u64_from_usize(from), "writing a block")?;
                    }
                    next = run.end;
                }
            }
        }
        self.bat.set(block.index, Some(sector))?;
        let entry_offset = self.header.table_offset.0 + u64::from(block.index.0) * 4;
        self.write(&sector.to_be_bytes(), entry_offset, "updating the BAT")?;
        self.data_end = data_start + BLOCK_SIZE;
        self.write_trailing_footer()
    }

    fn overlay(&mut self, block: &Block, start: u64) -> Result<()> {
        let data_start = start + u64_from_usize(BITMAP_SIZE);
        let mut raw = vec![0u8; BITMAP_SIZE];
        self.file
            .read_exact_at(&mut raw, start)
            .map_err(Error::io("reading a bitmap"))?;
        let old = SectorBitmap::from_bytes(&raw)?;
        let mut merged = old.clone();
        match &block.sectors {
            None => {
                self.write(&block.data, data_start, "writing a block")?;
                merged = SectorBitmap::full();
            }
            Some(sectors) => {
                for run in sectors.runs() {
                    let (from, to) = (sector_bytes(run.start), sector_bytes(run.end));
                    let data = block.data.get(from..to).unwrap_or_default();
                    self.write(data, data_start + u64_from_usize(from), "writing sectors")?;
                }
                merged.union_with(sectors);
            }
        }
        if merged != old {
            self.write(merged.as_bytes(), start, "updating a bitmap")?;
        }
        Ok(())
    }

    /// Points a differencing disk at another parent: rewrites the header's parent uuid,
    /// timestamp and unicode name (UTF-16) and drops the parent locators (their data space
    /// stays unused). This is how a stored xapi delta, whose parent uuid is opaque, is linked
    /// to the stored copy of its base.
    pub fn set_parent(&mut self, parent: &crate::layout::ParentIdentity) -> Result<()> {
        if self.footer.disk_type != DiskType::Differencing {
            return Err(Error::UnsupportedDiskType {
                operation: "setting a parent",
                found: self.footer.disk_type,
            });
        }
        let mut header = self.header.clone();
        header.parent_unique_id = parent.unique_id;
        header.parent_timestamp = parent.timestamp;
        header.parent_unicode_name.clone_from(&parent.path);
        header.parent_locators = [None; crate::header::LOCATOR_COUNT];
        let encoded = header.encode()?;
        let at = self.footer.data_offset.map_or(512, |offset| offset.0);
        self.write(&encoded, at, "rewriting the header")?;
        self.header = header;
        Ok(())
    }

    /// Flushes the sink.
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(Error::io("flushing the VHD file"))
    }

    /// Flushes and gives the sink back.
    pub fn finish(mut self) -> Result<F> {
        self.flush()?;
        Ok(self.file)
    }

    fn write_trailing_footer(&mut self) -> Result<()> {
        let footer = self.footer.encode();
        let at = self.data_end.next_multiple_of(512);
        self.write(&footer, at, "writing the trailing footer")
    }

    fn write(&mut self, bytes: &[u8], offset: u64, context: &'static str) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(Error::io(context))
    }
}

/// Byte offset of a sector within a block.
fn sector_bytes(sector: u32) -> usize {
    usize::try_from(sector)
        .unwrap_or(usize::MAX)
        .saturating_mul(SECTOR_BYTES)
}

/// End of every structure of an existing file except the trailing footer: the footer copy,
/// header, BAT, locator data, batmap and blocks.
fn metadata_end<R: crate::io::ReadAt>(
    existing: &VhdFile<R>,
    header: &DynamicHeader,
    bat: &Bat,
) -> Result<u64> {
    let footer_len = u64_from_usize(FOOTER_SIZE);
    let header_end = existing
        .footer()
        .data_offset
        .map_or(512, |offset| offset.0)
        .saturating_add(u64_from_usize(HEADER_SIZE));
    let bat_end = header.table_offset.0.saturating_add(Bat::padded_len(
        header.max_table_entries.min(crate::bat::MAX_BAT_ENTRIES),
    ));
    let locators_end = header
        .parent_locators
        .iter()
        .flatten()
        .map(|locator| {
            locator
                .data_offset
                .0
                .saturating_add(locator.data_space_bytes())
        })
        .max()
        .unwrap_or(0);
    let batmap_end = existing.batmap().map_or(0, |batmap| {
        batmap
            .header()
            .map_offset
            .0
            .saturating_add(batmap.header().map_len())
    });
    let blocks_end = bat
        .allocated()
        .map(|(_, sector)| sector.0 * 512 + u64_from_usize(BITMAP_SIZE) + BLOCK_SIZE)
        .max()
        .unwrap_or(0);
    let end = [
        footer_len,
        header_end,
        bat_end,
        locators_end,
        batmap_end,
        blocks_end,
    ]
    .into_iter()
    .max()
    .unwrap_or(footer_len);
    // New blocks replace the old trailing footer and nothing else: bytes between the last
    // known structure and that footer belong to something we cannot see.
    Ok(end.max(existing.file_size().saturating_sub(footer_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::VhdFile;
    use crate::units::{BlockIndex, ByteOffset, VhdTimestamp};
    use bytes::Bytes;

    fn options(kind: DiskKind) -> CreateOptions {
        CreateOptions {
            virtual_size: 6 << 20,
            unique_id: Uuid::from_u128(10),
            kind,
            profile: LayoutProfile::native(VhdTimestamp(1)),
        }
    }

    #[test]
    fn dynamic_partial_blocks_are_zero_filled_and_fully_marked() {
        let mut writer = VhdWriter::create(Vec::new(), &options(DiskKind::Dynamic)).unwrap();
        let mut sectors = SectorBitmap::empty();
        sectors.insert_range(1..2).unwrap();
        let data = Bytes::from(vec![0x5A; BLOCK_BYTES]);
        writer
            .write_block(&Block::partial(BlockIndex(1), data, sectors))
            .unwrap();
        let file = writer.finish().unwrap();
        assert_eq!(file.len(), 2048 + 512 + BLOCK_BYTES + 512);
        assert_eq!(&file[2048..2560], &[0xFF; 512][..]);
        let vhd = VhdFile::open(file).unwrap();
        let mut buf = vec![0u8; 1536];
        vhd.read_at(ByteOffset(BLOCK_SIZE), &mut buf).unwrap();
        assert!(buf[..512].iter().all(|b| *b == 0));
        assert!(buf[512..1024].iter().all(|b| *b == 0x5A));
        assert!(buf[1024..].iter().all(|b| *b == 0));
    }

    #[test]
    fn overlays_merge_bitmaps_and_reopen_appends() {
        let kind = DiskKind::Differencing(crate::layout::ParentIdentity {
            unique_id: Uuid::from_u128(3),
            timestamp: VhdTimestamp(0),
            path: "p.vhd".to_owned(),
        });
        let mut writer = VhdWriter::create(Vec::new(), &options(kind)).unwrap();
        let mut first = SectorBitmap::empty();
        first.insert(0).unwrap();
        writer
            .write_block(&Block::partial(
                BlockIndex(0),
                Bytes::from(vec![1; BLOCK_BYTES]),
                first,
            ))
            .unwrap();
        let mut writer = VhdWriter::open(writer.finish().unwrap()).unwrap();
        let mut second = SectorBitmap::empty();
        second.insert(5).unwrap();
        writer
            .write_block(&Block::partial(
                BlockIndex(0),
                Bytes::from(vec![2; BLOCK_BYTES]),
                second,
            ))
            .unwrap();
        writer
            .write_block(&Block::full(
                BlockIndex(2),
                Bytes::from(vec![3; BLOCK_BYTES]),
            ))
            .unwrap();
        assert!(matches!(
            writer.write_block(&Block::full(
                BlockIndex(3),
                Bytes::from(vec![3; BLOCK_BYTES])
            )),
            Err(Error::UnexpectedBlock { .. })
        ));
        let vhd = VhdFile::open(writer.finish().unwrap()).unwrap();
        let block = vhd.read_layer_block(BlockIndex(0)).unwrap().unwrap();
        let sectors = block.sectors.unwrap();
        assert_eq!(sectors.runs().collect::<Vec<_>>(), vec![0..1, 5..6]);
        assert_eq!(block.data[0], 1);
        assert_eq!(block.data[5 * 512], 2);
        assert!(
            vhd.read_layer_block(BlockIndex(2))
                .unwrap()
                .unwrap()
                .sectors
                .is_none()
        );
    }
}
