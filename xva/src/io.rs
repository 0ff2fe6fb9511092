//! Thin tokio adapters: read an archive from an `AsyncRead`, write one to an `AsyncWrite`.

use bytes::{BufMut as _, BytesMut};
use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::error::Error;
use crate::model::OvaXml;
use crate::read::{ArchiveReader, Event, ReaderLimits};
use crate::stream::{DiskSource, archive_stream};
use crate::write::WriteOptions;

/// Largest single read: a chunk and its padding fit.
const MAX_READ: usize = 2 << 20;

/// Reads an archive from any `AsyncRead`, forward only.
///
/// For a plain archive it reads exactly as much as each step needs, so every chunk lands in
/// one buffer and is handed out without a copy.
#[derive(Debug)]
pub struct AsyncArchiveReader<R> {
    input: R,
    reader: ArchiveReader,
    input_done: bool,
}

impl<R: AsyncRead + Unpin> AsyncArchiveReader<R> {
    /// A reader with the default limits.
    pub fn new(input: R) -> Self {
        Self::with_limits(input, ReaderLimits::default())
    }

    /// A reader with explicit limits.
    pub fn with_limits(input: R, limits: ReaderLimits) -> Self {
        Self {
            input,
            reader: ArchiveReader::with_limits(limits),
            input_done: false,
        }
    }

    /// The next event; `Ok(None)` after [`Event::End`] or an error.
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(event) = self.reader.next_event()? {
                return Ok(Some(event));
            }
            if self.reader.is_done() || self.input_done {
                return Ok(None);
            }
            let wanted = self.reader.input_hint().clamp(1, MAX_READ);
            let mut buffer = BytesMut::with_capacity(wanted);
            while buffer.len() < wanted {
                let room = wanted.saturating_sub(buffer.len());
                if self.input.read_buf(&mut (&mut buffer).limit(room)).await? == 0 {
                    self.input_done = true;
                    break;
                }
            }
            self.reader.push(buffer.freeze());
            if self.input_done {
                self.reader.finish_input();
            }
        }
    }

    /// Gives the input back (positioned after what was read).
    pub fn into_inner(self) -> R {
        self.input
    }
}

/// Writes the archive for `ova` and `sources` to `out` and returns the bytes written.
#[tracing::instrument(level = "debug", skip_all, fields(disks = sources.len()))]
pub async fn write_archive<W: AsyncWrite + Unpin>(
    ova: &OvaXml,
    sources: Vec<DiskSource>,
    options: WriteOptions,
    out: &mut W,
) -> Result<u64, Error> {
    let frames = archive_stream(ova, sources, options)?;
    futures::pin_mut!(frames);
    let mut written = 0u64;
    while let Some(frame) = frames.next().await {
        let frame = frame?;
        out.write_all(&frame).await?;
        written = written.saturating_add(u64::try_from(frame.len()).unwrap_or(u64::MAX));
    }
    out.flush().await?;
    Ok(written)
}
