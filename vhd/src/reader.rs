//! Random-access reading of fixed, dynamic and differencing files, and of parent chains.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use uuid::Uuid;

use crate::bat::Bat;
use crate::batmap::{BATMAP_HEADER_SIZE, BATMAP_VERSION_1_1, Batmap, BatmapHeader};
use crate::bitmap::{SectorBitmap, bit_is_set, bitmap_bytes_for};
use crate::block::{Block, BlockSet};
use crate::error::{Error, Result, Structure};
use crate::footer::{DiskType, FOOTER_SIZE, Footer};
use crate::header::{DynamicHeader, HEADER_SIZE, LOCATOR_COUNT};
use crate::io::ReadAt;
use crate::units::{
    BITMAP_SIZE, BLOCK_BYTES, BLOCK_SIZE, BlockIndex, ByteOffset, SECTOR_SIZE, u64_from_usize,
};

/// Most layers a chain may have.
pub const MAX_CHAIN_DEPTH: usize = 256;
/// Largest parent locator data this crate reads.
const MAX_LOCATOR_DATA: u32 = 64 * 1024;

/// Metadata of a dynamic or differencing file.
#[derive(Debug, Clone)]
struct Sparse {
    header: DynamicHeader,
    bat: Bat,
    bitmap_bytes: u64,
    /// blktap 0.1 wrote bitmaps LSB-first.
    lsb_first_bitmaps: bool,
    batmap: Option<Batmap>,
}

/// One VHD file opened for random access over a positional source.
#[derive(Debug)]
pub struct VhdFile<R> {
    source: R,
    footer: Footer,
    sparse: Option<Sparse>,
    file_size: u64,
}

impl<R: ReadAt> VhdFile<R> {
    /// Opens a VHD: trailing footer (falling back to the head copy when the trailing one is
    /// damaged), then header, BAT and, for blktap files, the batmap. Every BAT entry is checked
    /// to lie inside the file.
    pub fn open(source: R) -> Result<Self> {
        let file_size = source.size().map_err(Error::io("sizing the VHD file"))?;
        let footer_len = u64_from_usize(FOOTER_SIZE);
        if file_size < footer_len {
            return Err(Error::Truncated {
                structure: Structure::Footer,
                needed: footer_len,
                available: file_size,
            });
        }
        let trailing = read_vec(
            &source,
            file_size - footer_len,
            footer_len,
            "reading the footer",
        )?;
        let footer = match Footer::parse(&trailing) {
            Ok(footer) => footer,
            Err(trailing_error) => {
                let head = read_vec(&source, 0, footer_len, "reading the footer copy")?;
                match Footer::parse(&head) {
                    Ok(footer) if footer.disk_type.is_sparse() => {
                        tracing::warn!(
                            disk = %footer.unique_id,
                            error = %trailing_error,
                            "trailing VHD footer unusable, using the copy at offset 0"
                        );
                        footer
                    }
                    _ => return Err(trailing_error),
                }
            }
        };
        let sparse = match footer.disk_type {
            DiskType::Fixed => {
                if footer.current_size > file_size - footer_len {
                    return Err(Error::Truncated {
                        structure: Structure::Block,
                        needed: footer.current_size.saturating_add(footer_len),
                        available: file_size,
                    });
                }
                None
            }
            DiskType::Dynamic | DiskType::Differencing => {
                Some(open_sparse(&source, &footer, file_size)?)
            }
        };
        tracing::debug!(
            disk = %footer.unique_id,
            disk_type = %footer.disk_type,
            size = footer.current_size,
            "opened VHD"
        );
        Ok(Self {
            source,
            footer,
            sparse,
            file_size,
        })
    }

    /// The footer in use.
    #[must_use]
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header (dynamic and differencing disks).
    #[must_use]
    pub fn header(&self) -> Option<&DynamicHeader> {
        self.sparse.as_ref().map(|sparse| &sparse.header)
    }

    /// The used part of the BAT (dynamic and differencing disks).
    #[must_use]
    pub fn bat(&self) -> Option<&Bat> {
        self.sparse.as_ref().map(|sparse| &sparse.bat)
    }

    /// blktap's batmap, when the file has a valid one.
    #[must_use]
    pub fn batmap(&self) -> Option<&Batmap> {
        self.sparse
            .as_ref()
            .and_then(|sparse| sparse.batmap.as_ref())
    }

    /// Virtual size in bytes.
    #[must_use]
    pub fn virtual_size(&self) -> u64 {
        self.footer.current_size
    }

    /// Fixed, dynamic or differencing.
    #[must_use]
    pub fn disk_type(&self) -> DiskType {
        self.footer.disk_type
    }

    /// The footer uuid.
    #[must_use]
    pub fn unique_id(&self) -> Uuid {
        self.footer.unique_id
    }

    /// The parent uuid a differencing disk names.
    #[must_use]
    pub fn parent_unique_id(&self) -> Option<Uuid> {
        (self.footer.disk_type == DiskType::Differencing)
            .then(|| self.header().map(|header| header.parent_unique_id))
            .flatten()
    }

    /// Length of the underlying source.
    #[must_use]
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The underlying source.
    pub fn source(&self) -> &R {
        &self.source
    }

    /// Gives the source back.
    pub fn into_source(self) -> R {
        self.source
    }

    /// Raw data of parent locator `index` (`None` for an empty entry).
    pub fn read_locator_data(&self, index: usize) -> Result<Option<Vec<u8>>> {
        let Some(locator) = self
            .header()
            .and_then(|header| header.parent_locators.get(index).copied().flatten())
        else {
            return Ok(None);
        };
        if locator.data_length > MAX_LOCATOR_DATA {
            return Err(Error::InvalidField {
                structure: Structure::ParentLocator,
                field: "data_length",
                value: u64::from(locator.data_length),
                reason: "larger than 64 KiB",
            });
        }
        let len = u64::from(locator.data_length);
        check_in_file(
            locator.data_offset.0,
            len,
            self.file_size,
            Structure::ParentLocator,
        )?;
        read_vec(
            &self.source,
            locator.data_offset.0,
            len,
            "reading locator data",
        )
        .map(Some)
    }

    /// Candidate parent paths, in order of preference: the parent unicode name (how Xen
    /// Orchestra resolves chains), then every decodable locator.
    #[must_use]
    pub fn parent_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        if let Some(header) = self.header()
            && !header.parent_unicode_name.is_empty()
        {
            paths.push(header.parent_unicode_name.clone());
        }
        for index in 0..LOCATOR_COUNT {
            let locator = self
                .header()
                .and_then(|header| header.parent_locators.get(index).copied().flatten());
            if let (Some(locator), Ok(Some(data))) = (locator, self.read_locator_data(index))
                && let Some(path) = locator.decode_path(&data)
                && !path.is_empty()
                && !paths.contains(&path)
            {
                paths.push(path);
            }
        }
        paths
    }

    /// The 2 MiB blocks holding data in this file (every block of a fixed disk).
    #[must_use]
    pub fn allocated_blocks(&self) -> BlockSet {
        let size = self.virtual_size();
        match &self.sparse {
            None => (0..u32::try_from(crate::units::blocks_for_size(size)).unwrap_or(u32::MAX))
                .map(BlockIndex)
                .collect(),
            Some(sparse) => {
                let block_size = u64::from(sparse.header.block_size);
                sparse
                    .bat
                    .allocated()
                    .flat_map(|(index, _)| {
                        let start = u64::from(index.0) * block_size;
                        let end = start.saturating_add(block_size).min(size);
                        let first = start / BLOCK_SIZE;
                        let last = end.div_ceil(BLOCK_SIZE);
                        (first..last).filter_map(|block| u32::try_from(block).ok().map(BlockIndex))
                    })
                    .collect()
            }
        }
    }

    /// This file's own copy of a 2 MiB block: its data and bitmap, without looking at parents;
    /// `None` when the block is not allocated here. Needs 2 MiB blocks (fixed disks always
    /// qualify).
    pub fn read_layer_block(&self, index: BlockIndex) -> Result<Option<Block>> {
        let size = self.virtual_size();
        let start = index.byte_offset().0;
        if start >= size {
            return Err(Error::OutOfBounds {
                offset: start,
                len: BLOCK_SIZE,
                size,
            });
        }
        let Some(sparse) = &self.sparse else {
            // Fixed: the block's bytes inside the disk, zero beyond it.
            let mut data = vec![0u8; BLOCK_BYTES];
            let in_disk = (size - start).min(BLOCK_SIZE);
            let target = data
                .get_mut(..usize::try_from(in_disk).unwrap_or(BLOCK_BYTES))
                .unwrap_or_default();
            self.source
                .read_exact_at(target, start)
                .map_err(Error::io("reading a fixed-disk block"))?;
            return Ok(Some(Block::full(index, Bytes::from(data))));
        };
        let expected = u32::try_from(BLOCK_SIZE).unwrap_or(u32::MAX);
        if sparse.header.block_size != expected {
            return Err(Error::UnsupportedBlockSize {
                found: sparse.header.block_size,
                expected,
            });
        }
        let Some(sector) = sparse.bat.get(index) else {
            return Ok(None);
        };
        let base = sector.0 * SECTOR_SIZE;
        let bitmap = self.layer_bitmap(sparse, index, base)?;
        let mut data = vec![0u8; BLOCK_BYTES];
        self.source
            .read_exact_at(&mut data, base + sparse.bitmap_bytes)
            .map_err(Error::io("reading a block"))?;
        Ok(Some(Block::partial(index, Bytes::from(data), bitmap)))
    }

    /// The bitmap of an allocated 2 MiB block, normalised to MSB-first; full when the batmap
    /// says so.
    fn layer_bitmap(&self, sparse: &Sparse, index: BlockIndex, base: u64) -> Result<SectorBitmap> {
        if sparse
            .batmap
            .as_ref()
            .is_some_and(|batmap| batmap.is_full(index))
        {
            return Ok(SectorBitmap::full());
        }
        let raw = read_vec(
            &self.source,
            base,
            u64_from_usize(BITMAP_SIZE),
            "reading a bitmap",
        )?;
        if sparse.lsb_first_bitmaps {
            SectorBitmap::from_lsb_first_bytes(&raw)
        } else {
            SectorBitmap::from_bytes(&raw)
        }
    }

    /// Reads virtual bytes of this disk alone; a differencing disk needs its parents, so use a
    /// [`VhdChain`] for it.
    pub fn read_at(&self, offset: ByteOffset, buf: &mut [u8]) -> Result<()> {
        read_layers(&[self], offset, buf)
    }
}

/// Footer-independent part of [`VhdFile::open`] for dynamic and differencing files.
fn open_sparse<R: ReadAt>(source: &R, footer: &Footer, file_size: u64) -> Result<Sparse> {
    let header_offset = footer.data_offset.map_or(512, |offset| offset.0);
    let header_len = u64_from_usize(HEADER_SIZE);
    check_in_file(header_offset, header_len, file_size, Structure::Header)?;
    let header = DynamicHeader::parse(&read_vec(
        source,
        header_offset,
        header_len,
        "reading the header",
    )?)?;
    let used = header.used_table_entries(footer)?;
    let table_len = Bat::unpadded_len(used);
    check_in_file(header.table_offset.0, table_len, file_size, Structure::Bat)?;
    let bat = Bat::parse(
        &read_vec(source, header.table_offset.0, table_len, "reading the BAT")?,
        used,
    )?;
    let bitmap_bytes = bitmap_bytes_for(header.block_size);
    let block_len = bitmap_bytes + u64::from(header.block_size);
    for (index, sector) in bat.allocated() {
        let start = sector.0 * SECTOR_SIZE;
        if start
            .checked_add(block_len)
            .is_none_or(|end| end > file_size)
        {
            return Err(Error::BatEntryOutOfRange {
                block: index,
                sector: sector.0,
                reason: "the block extends past the end of the file",
            });
        }
    }
    let creator = footer.creator;
    let lsb_first_bitmaps = creator.is_blktap() && creator.version == 0x0000_0001;
    let batmap = if creator.is_blktap() && creator.version >= BATMAP_VERSION_1_1 {
        match read_batmap(source, footer, &header, file_size) {
            Ok(batmap) => Some(batmap),
            Err(error) => {
                tracing::warn!(disk = %footer.unique_id, %error, "ignoring unusable blktap batmap");
                None
            }
        }
    } else {
        None
    };
    Ok(Sparse {
        header,
        bat,
        bitmap_bytes,
        lsb_first_bitmaps,
        batmap,
    })
}

fn read_batmap<R: ReadAt>(
    source: &R,
    footer: &Footer,
    header: &DynamicHeader,
    file_size: u64,
) -> Result<Batmap> {
    let entries = header.max_table_entries.min(crate::bat::MAX_BAT_ENTRIES);
    let at = header
        .table_offset
        .0
        .checked_add(Bat::padded_len(entries))
        .ok_or(Error::Overflow {
            what: "batmap offset",
        })?;
    let header_len = u64_from_usize(BATMAP_HEADER_SIZE);
    check_in_file(at, header_len, file_size, Structure::Batmap)?;
    let batmap_header =
        BatmapHeader::parse(&read_vec(source, at, header_len, "reading the batmap")?)?;
    check_in_file(
        batmap_header.map_offset.0,
        batmap_header.map_len(),
        file_size,
        Structure::Batmap,
    )?;
    let map = read_vec(
        source,
        batmap_header.map_offset.0,
        batmap_header.map_len(),
        "reading the batmap",
    )?;
    Batmap::parse(batmap_header, &map, footer.current_size)
}

/// Fails unless `[offset, offset + len)` lies inside a file of `file_size` bytes.
fn check_in_file(offset: u64, len: u64, file_size: u64, structure: Structure) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        _ => Err(Error::Truncated {
            structure,
            needed: offset.saturating_add(len),
            available: file_size,
        }),
    }
}

/// Reads `len` bytes at `offset` into a new vector (callers bound `len`).
fn read_vec<R: ReadAt + ?Sized>(
    source: &R,
    offset: u64,
    len: u64,
    context: &'static str,
) -> Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| Error::Overflow { what: context })?;
    let mut buf = vec![0u8; len];
    source
        .read_exact_at(&mut buf, offset)
        .map_err(Error::io(context))?;
    Ok(buf)
}

/// Where a sector's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Unresolved,
    Zero,
    Layer(usize),
}

/// Reads virtual bytes through `layers` (leaf first): a sector comes from the first layer
/// whose bitmap marks it (every sector of a fixed layer counts), zeros past the end of the
/// layer reached or when no layer has it.
fn read_layers<R: ReadAt>(
    layers: &[&VhdFile<R>],
    offset: ByteOffset,
    buf: &mut [u8],
) -> Result<()> {
    let Some(top) = layers.first() else {
        return Err(Error::InvalidChain {
            reason: "no layers",
        });
    };
    let size = top.virtual_size();
    let len = u64_from_usize(buf.len());
    let end = offset
        .0
        .checked_add(len)
        .filter(|end| *end <= size)
        .ok_or(Error::OutOfBounds {
            offset: offset.0,
            len,
            size,
        })?;
    // Pieces never cross a block boundary of any layer: block sizes are powers of two, so the
    // smallest one refines all the others.
    let granule = layers
        .iter()
        .filter_map(|layer| layer.sparse.as_ref())
        .map(|sparse| u64::from(sparse.header.block_size))
        .min()
        .unwrap_or(BLOCK_SIZE);
    let mut position = offset.0;
    let mut sources = Vec::new();
    while position < end {
        let piece_end = (position / granule + 1).saturating_mul(granule).min(end);
        let start_in_buf = usize::try_from(position - offset.0).unwrap_or(usize::MAX);
        let end_in_buf = usize::try_from(piece_end - offset.0).unwrap_or(usize::MAX);
        let piece = buf
            .get_mut(start_in_buf..end_in_buf)
            .ok_or(Error::Overflow { what: "read piece" })?;
        read_piece(layers, position, piece, &mut sources)?;
        position = piece_end;
    }
    Ok(())
}

/// Resolves and reads `[position, position + piece.len())`, which lies in one block of every
/// layer.
fn read_piece<R: ReadAt>(
    layers: &[&VhdFile<R>],
    position: u64,
    piece: &mut [u8],
    sources: &mut Vec<Source>,
) -> Result<()> {
    let piece_end = position + u64_from_usize(piece.len());
    let first_sector = position / SECTOR_SIZE;
    let last_sector = (piece_end - 1) / SECTOR_SIZE;
    let count = usize::try_from(last_sector - first_sector + 1).map_err(|_| Error::Overflow {
        what: "sector count",
    })?;
    sources.clear();
    sources.resize(count, Source::Unresolved);
    let mut unresolved = count;
    let mut chain_ended = false;
    for (layer_number, layer) in layers.iter().enumerate() {
        if unresolved == 0 {
            break;
        }
        // Sectors beyond this layer's size read as zeros (a parent smaller than its child).
        let layer_sectors = layer.virtual_size() / SECTOR_SIZE;
        for (sector, source) in (first_sector..).zip(sources.iter_mut()) {
            if *source == Source::Unresolved && sector >= layer_sectors {
                *source = Source::Zero;
                unresolved -= 1;
            }
        }
        match &layer.sparse {
            None => {
                resolve_all(sources, Source::Layer(layer_number));
                unresolved = 0;
            }
            Some(sparse) => {
                let block_size = u64::from(sparse.header.block_size);
                let block = u32::try_from(position / block_size).ok().map(BlockIndex);
                if let Some(sector) = block.and_then(|block| sparse.bat.get(block)) {
                    let block_index = block.unwrap_or(BlockIndex(0));
                    let block_first_sector = u64::from(block_index.0) * (block_size / SECTOR_SIZE);
                    let full = sparse
                        .batmap
                        .as_ref()
                        .is_some_and(|batmap| batmap.is_full(block_index));
                    let bitmap = if full {
                        None
                    } else {
                        Some(read_vec(
                            &layer.source,
                            sector.0 * SECTOR_SIZE,
                            sparse.bitmap_bytes,
                            "reading a bitmap",
                        )?)
                    };
                    for (sector_number, source) in (first_sector..).zip(sources.iter_mut()) {
                        if *source != Source::Unresolved {
                            continue;
                        }
                        let in_block =
                            u32::try_from(sector_number - block_first_sector).unwrap_or(u32::MAX);
                        let present = match &bitmap {
                            None => true,
                            Some(bits) if sparse.lsb_first_bitmaps => bits
                                .get(usize::try_from(in_block >> 3).unwrap_or(usize::MAX))
                                .is_some_and(|byte| byte & (1 << (in_block & 7)) != 0),
                            Some(bits) => bit_is_set(bits, in_block),
                        };
                        if present {
                            *source = Source::Layer(layer_number);
                            unresolved -= 1;
                        }
                    }
                }
                if layer.disk_type() != DiskType::Differencing {
                    resolve_all(sources, Source::Zero);
                    unresolved = 0;
                    chain_ended = true;
                }
            }
        }
        if layer.sparse.is_none() {
            chain_ended = true;
        }
    }
    if unresolved > 0 && !chain_ended {
        let parent = layers
            .last()
            .and_then(|layer| layer.parent_unique_id())
            .unwrap_or_default();
        return Err(Error::MissingParent { parent });
    }
    fill_piece(layers, position, piece, sources)
}

fn resolve_all(sources: &mut [Source], with: Source) {
    for source in sources
        .iter_mut()
        .filter(|source| **source == Source::Unresolved)
    {
        *source = with;
    }
}

/// Copies runs of sectors with the same source into `piece`.
fn fill_piece<R: ReadAt>(
    layers: &[&VhdFile<R>],
    position: u64,
    piece: &mut [u8],
    sources: &[Source],
) -> Result<()> {
    let first_sector = position / SECTOR_SIZE;
    let piece_end = position + u64_from_usize(piece.len());
    let mut run_start = 0usize;
    while run_start < sources.len() {
        let source = sources.get(run_start).copied().unwrap_or(Source::Zero);
        let run_end = sources
            .iter()
            .skip(run_start)
            .position(|other| *other != source)
            .map_or(sources.len(), |length| run_start + length);
        let from = ((first_sector + u64_from_usize(run_start)) * SECTOR_SIZE).max(position);
        let to = ((first_sector + u64_from_usize(run_end)) * SECTOR_SIZE).min(piece_end);
        let target = piece
            .get_mut(
                usize::try_from(from - position).unwrap_or(usize::MAX)
                    ..usize::try_from(to - position).unwrap_or(usize::MAX),
            )
            .ok_or(Error::Overflow { what: "read run" })?;
        match source {
            Source::Zero | Source::Unresolved => target.fill(0),
            Source::Layer(number) => {
                let layer = layers
                    .get(number)
                    .ok_or(Error::Overflow { what: "layer" })?;
                let file_offset = match &layer.sparse {
                    None => from,
                    Some(sparse) => {
                        let block_size = u64::from(sparse.header.block_size);
                        let block =
                            u32::try_from(from / block_size)
                                .map(BlockIndex)
                                .map_err(|_| Error::Overflow {
                                    what: "block index",
                                })?;
                        let sector = sparse.bat.get(block).ok_or(Error::Overflow {
                            what: "resolved block",
                        })?;
                        sector.0 * SECTOR_SIZE + sparse.bitmap_bytes + from % block_size
                    }
                };
                layer
                    .source
                    .read_exact_at(target, file_offset)
                    .map_err(Error::io("reading sector data"))?;
            }
        }
        run_start = run_end;
    }
    Ok(())
}

/// A differencing disk with its ancestors, leaf first, read as one disk.
#[derive(Debug)]
pub struct VhdChain<R> {
    leaf: VhdFile<R>,
    ancestors: Vec<VhdFile<R>>,
}

impl<R: ReadAt> VhdChain<R> {
    /// Builds a chain from `layers`, leaf first: every differencing layer's parent uuid must be
    /// the next layer's footer uuid, the last layer must not be differencing, no disk may
    /// appear twice and the depth is at most [`MAX_CHAIN_DEPTH`].
    pub fn new(layers: Vec<VhdFile<R>>) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::InvalidChain {
                reason: "no layers",
            });
        }
        if layers.len() > MAX_CHAIN_DEPTH {
            return Err(Error::ChainTooDeep {
                max: MAX_CHAIN_DEPTH,
            });
        }
        let mut seen = HashSet::new();
        for (position, layer) in layers.iter().enumerate() {
            if !seen.insert(layer.unique_id()) {
                return Err(Error::ChainLoop {
                    unique_id: layer.unique_id(),
                });
            }
            let parent = layers.get(position + 1);
            match (layer.parent_unique_id(), parent) {
                (Some(expected), Some(parent)) if parent.unique_id() != expected => {
                    return Err(Error::ParentMismatch {
                        expected,
                        found: parent.unique_id(),
                    });
                }
                (Some(expected), None) => {
                    return Err(Error::MissingParent { parent: expected });
                }
                (None, Some(_)) => {
                    return Err(Error::InvalidChain {
                        reason: "a non-differencing disk can only be the last layer",
                    });
                }
                _ => {}
            }
        }
        let mut layers = layers.into_iter();
        let leaf = layers.next().ok_or(Error::InvalidChain {
            reason: "no layers",
        })?;
        Ok(Self {
            leaf,
            ancestors: layers.collect(),
        })
    }

    /// Builds a chain from its leaf, asking `open_parent` for each differencing layer's parent
    /// until a non-differencing disk is reached. Loops and over-deep chains are refused before
    /// `open_parent` is asked again.
    pub fn open_with<F>(leaf: VhdFile<R>, mut open_parent: F) -> Result<Self>
    where
        F: FnMut(&VhdFile<R>) -> Result<VhdFile<R>>,
    {
        let mut seen = HashSet::from([leaf.unique_id()]);
        let mut layers = vec![leaf];
        while let Some(expected) = layers.last().and_then(VhdFile::parent_unique_id) {
            if layers.len() >= MAX_CHAIN_DEPTH {
                return Err(Error::ChainTooDeep {
                    max: MAX_CHAIN_DEPTH,
                });
            }
            let child = layers.last().ok_or(Error::InvalidChain {
                reason: "no layers",
            })?;
            let parent = open_parent(child)?;
            if parent.unique_id() != expected {
                return Err(Error::ParentMismatch {
                    expected,
                    found: parent.unique_id(),
                });
            }
            if !seen.insert(parent.unique_id()) {
                return Err(Error::ChainLoop {
                    unique_id: parent.unique_id(),
                });
            }
            layers.push(parent);
        }
        Self::new(layers)
    }

    /// The layers, leaf first.
    pub fn layers(&self) -> impl ExactSizeIterator<Item = &VhdFile<R>> {
        std::iter::once(&self.leaf)
            .chain(self.ancestors.iter())
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The leaf layer.
    #[must_use]
    pub fn leaf(&self) -> &VhdFile<R> {
        &self.leaf
    }

    /// Gives the layers back, leaf first.
    #[must_use]
    pub fn into_layers(self) -> Vec<VhdFile<R>> {
        let mut layers = vec![self.leaf];
        layers.extend(self.ancestors);
        layers
    }

    /// Virtual size of the leaf.
    #[must_use]
    pub fn virtual_size(&self) -> u64 {
        self.leaf().virtual_size()
    }

    /// Reads virtual bytes of the leaf as the chain defines them.
    pub fn read_at(&self, offset: ByteOffset, buf: &mut [u8]) -> Result<()> {
        let layers: Vec<&VhdFile<R>> = self.layers().collect();
        read_layers(&layers, offset, buf)
    }

    /// 2 MiB blocks allocated in any layer, within the leaf's size: the blocks a coalesced
    /// copy needs.
    #[must_use]
    pub fn allocated_blocks(&self) -> BlockSet {
        let blocks =
            u32::try_from(crate::units::blocks_for_size(self.virtual_size())).unwrap_or(u32::MAX);
        self.layers()
            .flat_map(|layer| layer.allocated_blocks().iter().collect::<Vec<_>>())
            .filter(|index| index.0 < blocks)
            .collect()
    }

    /// The chain's content of a 2 MiB block, whole (zeros past the end of the disk).
    pub fn read_block(&self, index: BlockIndex) -> Result<Block> {
        let start = index.byte_offset().0;
        let size = self.virtual_size();
        if start >= size {
            return Err(Error::OutOfBounds {
                offset: start,
                len: BLOCK_SIZE,
                size,
            });
        }
        let mut data = vec![0u8; BLOCK_BYTES];
        let in_disk = usize::try_from((size - start).min(BLOCK_SIZE)).unwrap_or(BLOCK_BYTES);
        self.read_at(
            ByteOffset(start),
            data.get_mut(..in_disk).unwrap_or_default(),
        )?;
        Ok(Block::full(index, Bytes::from(data)))
    }
}

impl VhdChain<std::fs::File> {
    /// Opens the chain ending in the file at `leaf`, finding each parent as Xen Orchestra
    /// does: the parent unicode name relative to the child's folder, then the locators'
    /// paths; a candidate is accepted only if its footer uuid matches.
    pub fn open_path(leaf: &Path) -> Result<Self> {
        let file = open_file(leaf)?;
        let leaf_file = VhdFile::open(file)?;
        let mut folders: Vec<PathBuf> = vec![folder_of(leaf)];
        Self::open_with(leaf_file, |child| {
            let expected = child.parent_unique_id().unwrap_or_default();
            let folder = folders.last().cloned().unwrap_or_default();
            for candidate in child.parent_paths() {
                let path = folder.join(candidate.trim_start_matches("./"));
                let Ok(file) = open_file(&path) else { continue };
                let Ok(parent) = VhdFile::open(file) else {
                    continue;
                };
                if parent.unique_id() == expected {
                    folders.push(folder_of(&path));
                    return Ok(parent);
                }
            }
            Err(Error::MissingParent { parent: expected })
        })
    }
}

fn open_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(Error::io("opening a VHD file"))
}

fn folder_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}
