//! The sans-IO streaming writer: `ova.xml` and disk extents in, archive frames out.
//!
//! Layout (spec §12.2, §14, §15.3): `ova.xml` first; then, per streamed VDI in sorted-id order,
//! `<id>/%08d` chunks of 1 MiB numbered by offset, each followed by its `.xxhash` or `.checksum`
//! companion; all-zero chunks left out except the first and the last (xapi's importer needs
//! both); the last chunk exactly as long as the disk's remainder; two zero blocks at the end.
//! If the first chunk of the archive is shorter than 1 MiB (the first disk is smaller than a
//! chunk), every chunk of the later disks is written, because importers size gaps by the
//! archive's first chunk.
//!
//! Extents are pushed as `Bytes`: a chunk an extent covers entirely is handed on as a slice of
//! it (no copy); chunks pieced together from smaller extents are assembled once.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::checksum::ChecksumKind;
use crate::compress::{Compression, Compressor};
use crate::error::{Error, ExtentProblem, excerpt};
use crate::model::{DiskInfo, OvaXml};
use crate::read::OVA_XML;
use crate::tar::{self, BLOCK_SIZE};
use crate::units::{ByteOffset, CHUNK_SIZE, ChunkIndex};

/// Zero bytes for padding entries to whole blocks and for the end-of-archive marker.
static ZEROS: [u8; 2 * BLOCK_SIZE] = [0; 2 * BLOCK_SIZE];

/// How the writer shapes the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// The checksum after each chunk: XXH64 (default) or SHA-1 for xapi < 1.170.
    pub checksum: ChecksumKind,
    /// Whole-archive compression.
    pub compression: Compression,
    /// Leave out all-zero chunks other than the first and the last (default true).
    pub skip_zero_chunks: bool,
    /// Modification time of `ova.xml` in Unix seconds (xapi writes the export time; chunks 0).
    pub mtime: u64,
    /// Check `ova.xml` with [`OvaXml::check_importable`] first (default true).
    pub check_model: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            checksum: ChecksumKind::Xxhash,
            compression: Compression::None,
            skip_zero_chunks: true,
            mtime: 0,
            check_model: true,
        }
    }
}

/// A chunk being assembled: pieces copied into a zero-filled chunk buffer.
struct Pending {
    index: u64,
    buffer: BytesMut,
}

/// Progress through the current disk.
struct DiskState {
    info: DiskInfo,
    /// Number of the last chunk (`None` for an empty disk).
    last_chunk: Option<u64>,
    /// Next chunk number not yet written or skipped.
    next_chunk: u64,
    /// End of the last extent pushed.
    extent_end: u64,
    /// Write every chunk, zero or not.
    write_every_chunk: bool,
    pending: Option<Pending>,
}

/// The streaming XVA writer.
///
/// ```
/// use bytes::Bytes;
/// use xva::{ArchiveWriter, ByteOffset, WriteOptions};
/// use xva::model::{OvaXml, Version, records::{Sr, Vdi, Vm}};
///
/// let mut ova = OvaXml::new(Version::new("host", "2024-01-01"));
/// let vm = ova.add(&Vm::new("vm", 1 << 30, 1));
/// let sr = ova.add(&Sr::new("sr"));
/// ova.attach_disk(&vm, &Vdi::new("disk", sr, 3 << 20), 0, true)?;
///
/// let mut writer = ArchiveWriter::new(&ova, WriteOptions::default())?;
/// let mut archive = Vec::new();
/// while let Some(_disk) = writer.begin_disk()? {
///     writer.push_extent(ByteOffset::new(4096), Bytes::from(vec![7u8; 512]))?;
///     writer.end_disk()?;
///     while let Some(frame) = writer.pop_output() { archive.extend_from_slice(&frame); }
/// }
/// writer.finish()?;
/// while let Some(frame) = writer.pop_output() { archive.extend_from_slice(&frame); }
/// // ova.xml, chunks 0 and 2 with their checksums (chunk 1 is all zero), two end blocks.
/// assert_eq!(&archive[..7], b"ova.xml");
/// # Ok::<(), xva::Error>(())
/// ```
pub struct ArchiveWriter {
    options: WriteOptions,
    disks: Vec<DiskInfo>,
    next_disk: usize,
    current: Option<DiskState>,
    /// Disks after the first non-empty one are written in full when its first chunk is short.
    first_chunk_short: Option<bool>,
    compressor: Compressor,
    output: VecDeque<Bytes>,
    finished: bool,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("options", &self.options)
            .field("disks", &self.disks)
            .field("next_disk", &self.next_disk)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ArchiveWriter {
    /// Starts an archive for `ova` and queues the `ova.xml` entry.
    pub fn new(ova: &OvaXml, options: WriteOptions) -> Result<Self, Error> {
        if options.check_model {
            ova.check_importable()?;
        }
        let disks = ova.streamed_disks()?;
        let mut writer = Self {
            options,
            disks,
            next_disk: 0,
            current: None,
            first_chunk_short: None,
            compressor: Compressor::new(options.compression)?,
            output: VecDeque::new(),
            finished: false,
        };
        let xml = Bytes::from(ova.to_xml().into_bytes());
        writer.emit_entry(OVA_XML, xml, options.mtime)?;
        Ok(writer)
    }

    /// The disks to write, in the order [`ArchiveWriter::begin_disk`] asks for them.
    pub fn disks(&self) -> &[DiskInfo] {
        &self.disks
    }

    /// Starts the next disk and returns it, or `None` when every disk has been written.
    pub fn begin_disk(&mut self) -> Result<Option<DiskInfo>, Error> {
        if self.current.is_some() || self.finished {
            return Err(Error::WriterState(
                "begin_disk while a disk is open or after finish",
            ));
        }
        let Some(info) = self.disks.get(self.next_disk).cloned() else {
            return Ok(None);
        };
        self.next_disk = self.next_disk.saturating_add(1);
        let chunks = ChunkIndex::count_for(info.virtual_size);
        let write_every_chunk = self.first_chunk_short == Some(true);
        if self.first_chunk_short.is_none() && chunks > 0 {
            self.first_chunk_short = Some(info.virtual_size < CHUNK_SIZE);
        }
        tracing::debug!(disk = %info.id, virtual_size = info.virtual_size, "writing disk");
        self.current = Some(DiskState {
            last_chunk: chunks.checked_sub(1),
            info: info.clone(),
            next_chunk: 0,
            extent_end: 0,
            write_every_chunk,
            pending: None,
        });
        Ok(Some(info))
    }

    /// Adds data of the current disk at `offset`. Extents come in increasing offset order
    /// without overlap and lie within the disk; bytes no extent covers are zero.
    pub fn push_extent(&mut self, offset: ByteOffset, data: Bytes) -> Result<(), Error> {
        let Some(mut disk) = self.current.take() else {
            return Err(Error::WriterState("push_extent without begin_disk"));
        };
        let result = self.push_into(&mut disk, offset.get(), data);
        self.current = Some(disk);
        result
    }

    fn push_into(&mut self, disk: &mut DiskState, offset: u64, data: Bytes) -> Result<(), Error> {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let bad = |problem| Error::BadExtent {
            disk: excerpt(disk.info.id.as_str()),
            offset,
            len,
            problem,
        };
        if offset < disk.extent_end {
            return Err(bad(ExtentProblem::Overlap {
                previous_end: disk.extent_end,
            }));
        }
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= disk.info.virtual_size);
        let Some(end) = end else {
            return Err(bad(ExtentProblem::BeyondDisk {
                virtual_size: disk.info.virtual_size,
            }));
        };
        if data.is_empty() {
            return Ok(());
        }
        disk.extent_end = end;
        let mut position = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = position / CHUNK_SIZE;
            let chunk_start = index.saturating_mul(CHUNK_SIZE);
            let chunk_len = chunk_length(disk.info.virtual_size, index);
            let within = position.saturating_sub(chunk_start);
            let room = usize::try_from(chunk_len.saturating_sub(within)).unwrap_or(usize::MAX);
            let piece = rest.split_to(room.min(rest.len()));
            let piece_len = u64::try_from(piece.len()).unwrap_or(u64::MAX);
            // A new chunk closes the one being assembled and accounts for the holes between.
            if disk
                .pending
                .as_ref()
                .is_some_and(|pending| pending.index != index)
            {
                self.flush_pending(disk)?;
            }
            self.skip_holes(disk, index)?;
            if disk.pending.is_none() && within == 0 && piece_len == chunk_len {
                // The extent covers the whole chunk: hand its bytes on as they are.
                self.emit_chunk(disk, index, piece)?;
            } else {
                let length = usize::try_from(chunk_len).unwrap_or(usize::MAX);
                let buffer = &mut disk
                    .pending
                    .get_or_insert_with(|| Pending {
                        index,
                        buffer: BytesMut::zeroed(length),
                    })
                    .buffer;
                let from = usize::try_from(within).unwrap_or(usize::MAX);
                let target = from
                    .checked_add(piece.len())
                    .and_then(|to| buffer.get_mut(from..to))
                    .ok_or(Error::WriterState("extent piece outside its chunk"))?;
                target.copy_from_slice(&piece);
            }
            position = position.saturating_add(piece_len);
        }
        Ok(())
    }

    /// Writes or skips the chunks before `index` that no extent touched.
    fn skip_holes(&mut self, disk: &mut DiskState, index: u64) -> Result<(), Error> {
        while disk.next_chunk < index {
            let hole = disk.next_chunk;
            if hole == 0 || Some(hole) == disk.last_chunk || disk.write_every_chunk {
                let length = usize::try_from(chunk_length(disk.info.virtual_size, hole))
                    .unwrap_or(usize::MAX);
                self.emit_chunk(disk, hole, Bytes::from(vec![0u8; length]))?;
            } else {
                disk.next_chunk = hole.saturating_add(1);
            }
        }
        Ok(())
    }

    fn flush_pending(&mut self, disk: &mut DiskState) -> Result<(), Error> {
        if let Some(Pending { index, buffer }) = disk.pending.take() {
            self.emit_chunk(disk, index, buffer.freeze())?;
        }
        Ok(())
    }

    /// Writes chunk `index` with its companion, unless it is an all-zero chunk we may skip.
    fn emit_chunk(&mut self, disk: &mut DiskState, index: u64, data: Bytes) -> Result<(), Error> {
        disk.next_chunk = index.saturating_add(1);
        let first_or_last = index == 0 || Some(index) == disk.last_chunk;
        if self.options.skip_zero_chunks
            && !first_or_last
            && !disk.write_every_chunk
            && is_all_zero(&data)
        {
            tracing::trace!(disk = %disk.info.id, chunk = index, "all-zero chunk left out");
            return Ok(());
        }
        let name = format!("{}/{index:08}", disk.info.id);
        let digest = self.options.checksum.digest(&data);
        self.emit_entry(&name, data, 0)?;
        let companion = format!("{name}{}", self.options.checksum.extension());
        self.emit_entry(&companion, Bytes::from(digest.into_bytes()), 0)
    }

    /// Queues one tar entry: header, data (moved), padding.
    fn emit_entry(&mut self, name: &str, data: Bytes, mtime: u64) -> Result<(), Error> {
        let size = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let header = tar::encode_header(name, size, mtime)?;
        let padding = tar::padding(size);
        if data.len() <= BLOCK_SIZE {
            // Small entries (checksums): one frame for header, data and padding.
            let mut frame = BytesMut::with_capacity(BLOCK_SIZE.saturating_mul(2));
            frame.extend_from_slice(&header);
            frame.extend_from_slice(&data);
            frame.extend_from_slice(ZEROS.get(..padding).unwrap_or_default());
            return self.emit(frame.freeze());
        }
        self.emit(Bytes::copy_from_slice(&header))?;
        self.emit(data)?;
        if padding > 0 {
            self.emit(Bytes::from_static(ZEROS.get(..padding).unwrap_or_default()))?;
        }
        Ok(())
    }

    fn emit(&mut self, frame: Bytes) -> Result<(), Error> {
        self.compressor.push(frame, &mut self.output)
    }

    /// Ends the current disk: writes the last chunk (zeros if nothing covered it).
    pub fn end_disk(&mut self) -> Result<(), Error> {
        let Some(mut disk) = self.current.take() else {
            return Err(Error::WriterState("end_disk without begin_disk"));
        };
        self.flush_pending(&mut disk)?;
        if let Some(last) = disk.last_chunk {
            self.skip_holes(&mut disk, last.saturating_add(1))?;
        }
        tracing::debug!(disk = %disk.info.id, "disk written");
        Ok(())
    }

    /// Ends the archive (two zero blocks) and the compressed stream. Every disk must have been
    /// written.
    pub fn finish(&mut self) -> Result<(), Error> {
        if self.current.is_some() || self.next_disk < self.disks.len() || self.finished {
            return Err(Error::WriterState(
                "finish before every disk was written, or twice",
            ));
        }
        self.emit(Bytes::from_static(&ZEROS))?;
        self.compressor.finish(&mut self.output)?;
        self.finished = true;
        Ok(())
    }

    /// The next frame of the archive, if any is ready.
    pub fn pop_output(&mut self) -> Option<Bytes> {
        self.output.pop_front()
    }

    /// True once [`ArchiveWriter::finish`] has run.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Length of chunk `index` of a disk of `virtual_size` bytes.
fn chunk_length(virtual_size: u64, index: u64) -> u64 {
    let start = index.saturating_mul(CHUNK_SIZE);
    virtual_size.saturating_sub(start).min(CHUNK_SIZE)
}

/// True when every byte is zero; stops at the first 4 KiB block holding data.
pub(crate) fn is_all_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, byte| acc | byte) == 0)
}

/// Writes a whole archive of in-memory disks: for small archives and tests. `disks` holds, for
/// each streamed disk in [`ArchiveWriter::disks`] order, its extents in offset order.
pub fn write_all(
    ova: &OvaXml,
    disks: Vec<Vec<(ByteOffset, Bytes)>>,
    options: WriteOptions,
) -> Result<Bytes, Error> {
    let mut writer = ArchiveWriter::new(ova, options)?;
    let mut archive = BytesMut::new();
    let mut extents_per_disk = disks.into_iter();
    while writer.begin_disk()?.is_some() {
        for (offset, data) in extents_per_disk.next().unwrap_or_default() {
            writer.push_extent(offset, data)?;
        }
        writer.end_disk()?;
        while let Some(frame) = writer.pop_output() {
            archive.extend_from_slice(&frame);
        }
    }
    writer.finish()?;
    while let Some(frame) = writer.pop_output() {
        archive.extend_from_slice(&frame);
    }
    Ok(archive.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[0; 10_000]));
        let mut data = vec![0u8; 10_000];
        data[9_999] = 1;
        assert!(!is_all_zero(&data));
        assert!(is_all_zero(&[]));
    }

    #[test]
    fn chunk_lengths() {
        assert_eq!(chunk_length(3 * CHUNK_SIZE + 5, 3), 5);
        assert_eq!(chunk_length(3 * CHUNK_SIZE, 2), CHUNK_SIZE);
        assert_eq!(chunk_length(100, 0), 100);
    }
}
