//! Thin async adapters over `futures` streams (no runtime needed): disks as streams of
//! extents in, archive frames out; archive frames in, [`Event`]s out.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};

use crate::error::{BoxError, DiskMismatchProblem, Error, excerpt};
use crate::model::{ExportId, OvaXml};
use crate::read::{ArchiveReader, Event, ReaderLimits};
use crate::units::ByteOffset;
use crate::write::{ArchiveWriter, WriteOptions};

/// Allocated data of a disk: `data.len()` bytes at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Where the data starts on the disk.
    pub offset: ByteOffset,
    /// The bytes (moved into the archive when they cover whole chunks).
    pub data: Bytes,
}

/// A stream of extents in increasing offset order, without overlap; bytes outside every extent
/// are zero. A VHD chain, an NBD export or a simulated disk adapts to this.
pub type ExtentStream = Pin<Box<dyn Stream<Item = Result<Extent, BoxError>> + Send>>;

/// One disk to write: the VDI it belongs to, its size and its data.
pub struct DiskSource {
    /// The VDI's export id in `ova.xml`.
    pub id: ExportId,
    /// The disk's virtual size; must equal the VDI's `virtual_size`.
    pub virtual_size: u64,
    /// The disk's allocated data.
    pub extents: ExtentStream,
}

impl fmt::Debug for DiskSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskSource")
            .field("id", &self.id)
            .field("virtual_size", &self.virtual_size)
            .finish_non_exhaustive()
    }
}

impl DiskSource {
    /// A disk whose extents come from `extents`.
    pub fn new<S, E>(id: ExportId, virtual_size: u64, extents: S) -> Self
    where
        S: Stream<Item = Result<Extent, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self {
            id,
            virtual_size,
            extents: Box::pin(extents.map(|item| item.map_err(Into::into))),
        }
    }

    /// A disk held in memory as a list of extents.
    pub fn from_extents(id: ExportId, virtual_size: u64, extents: Vec<Extent>) -> Self {
        Self::new(
            id,
            virtual_size,
            futures::stream::iter(extents.into_iter().map(Ok::<_, BoxError>)),
        )
    }
}

/// Puts `sources` in the writer's disk order, checking them against `ova.xml`.
fn order_sources(
    writer: &ArchiveWriter,
    sources: Vec<DiskSource>,
) -> Result<VecDeque<DiskSource>, Error> {
    let mut pool: Vec<Option<DiskSource>> = sources.into_iter().map(Some).collect();
    let mut ordered = VecDeque::new();
    for disk in writer.disks() {
        let mut matching = pool
            .iter_mut()
            .filter(|slot| slot.as_ref().is_some_and(|source| source.id == disk.id));
        let source = matching
            .next()
            .and_then(Option::take)
            .ok_or_else(|| Error::DiskMismatch {
                disk: excerpt(disk.id.as_str()),
                problem: DiskMismatchProblem::NoSource,
            })?;
        if matching.next().is_some() {
            return Err(Error::DiskMismatch {
                disk: excerpt(disk.id.as_str()),
                problem: DiskMismatchProblem::DuplicateSource,
            });
        }
        if source.virtual_size != disk.virtual_size {
            return Err(Error::DiskMismatch {
                disk: excerpt(disk.id.as_str()),
                problem: DiskMismatchProblem::Size {
                    model: disk.virtual_size,
                    source: source.virtual_size,
                },
            });
        }
        ordered.push_back(source);
    }
    if let Some(extra) = pool.into_iter().flatten().next() {
        return Err(Error::DiskMismatch {
            disk: excerpt(extra.id.as_str()),
            problem: DiskMismatchProblem::NotStreamed,
        });
    }
    Ok(ordered)
}

struct WriteState {
    writer: ArchiveWriter,
    sources: VecDeque<DiskSource>,
    current: Option<DiskSource>,
    stopped: bool,
}

impl WriteState {
    /// Moves one step forward; `false` once the archive is complete.
    async fn step(&mut self) -> Result<bool, Error> {
        if let Some(source) = self.current.as_mut() {
            match source.extents.next().await {
                Some(Ok(extent)) => self.writer.push_extent(extent.offset, extent.data)?,
                Some(Err(cause)) => {
                    return Err(Error::Source {
                        disk: excerpt(source.id.as_str()),
                        source: cause,
                    });
                }
                None => {
                    self.writer.end_disk()?;
                    self.current = None;
                }
            }
            return Ok(true);
        }
        if self.writer.is_finished() {
            return Ok(false);
        }
        match self.writer.begin_disk()? {
            Some(_) => self.current = self.sources.pop_front(),
            None => self.writer.finish()?,
        }
        Ok(true)
    }
}

/// The archive for `ova` and its disks as a stream of frames (an HTTP body, a file), pulling
/// each disk's extents only as fast as the frames are consumed. `sources` may come in any
/// order; they must match [`OvaXml::streamed_disks`] one for one.
pub fn archive_stream(
    ova: &OvaXml,
    sources: Vec<DiskSource>,
    options: WriteOptions,
) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static, Error> {
    let writer = ArchiveWriter::new(ova, options)?;
    let sources = order_sources(&writer, sources)?;
    let state = WriteState {
        writer,
        sources,
        current: None,
        stopped: false,
    };
    Ok(futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.stopped {
                return None;
            }
            if let Some(frame) = state.writer.pop_output() {
                return Some((Ok(frame), state));
            }
            match state.step().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => {
                    state.stopped = true;
                    return Some((Err(error), state));
                }
            }
        }
    }))
}

struct ReadState<S> {
    reader: ArchiveReader,
    input: S,
    input_done: bool,
    stopped: bool,
}

/// Reads an archive arriving as a stream of byte frames (an HTTP body) and yields its events;
/// the stream ends after [`Event::End`] or the first error.
pub fn read_stream<S, E>(input: S, limits: ReaderLimits) -> impl Stream<Item = Result<Event, Error>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    let state = ReadState {
        reader: ArchiveReader::with_limits(limits),
        input,
        input_done: false,
        stopped: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.stopped {
                return None;
            }
            match state.reader.next_event() {
                Ok(Some(event)) => return Some((Ok(event), state)),
                Err(error) => {
                    state.stopped = true;
                    return Some((Err(error), state));
                }
                Ok(None) if state.reader.is_done() || state.input_done => return None,
                Ok(None) => {}
            }
            match state.input.next().await {
                Some(Ok(frame)) => state.reader.push(frame),
                Some(Err(cause)) => {
                    state.stopped = true;
                    return Some((Err(Error::Input(cause.into())), state));
                }
                None => {
                    state.reader.finish_input();
                    state.input_done = true;
                }
            }
        }
    })
}
