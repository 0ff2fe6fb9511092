//! VHD streams in xapi's layout: a push decoder and an encoder whose total length is known up
//! front, plus blocking adapters over `std::io`.

mod decoder;
mod encoder;

pub use decoder::{DEFAULT_MAX_SKIPPED_BYTES, DecoderOptions, StreamDecoder, StreamEvent};
pub use encoder::{BitmapMode, Pieces, STREAM_BLOCK_LEN, StreamEncoder, StreamSpec};

use bytes::{Bytes, BytesMut};

use crate::block::Block;
use crate::error::{Error, Result};

/// Bytes read from a source per call by the blocking and async adapters.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// A [`StreamDecoder`] fed from a blocking [`std::io::Read`].
#[derive(Debug)]
pub struct ReadDecoder<R> {
    reader: R,
    decoder: StreamDecoder,
    pending: Bytes,
    eof: bool,
}

impl<R: std::io::Read> ReadDecoder<R> {
    /// Decodes `reader` with `decoder`.
    pub fn new(reader: R, decoder: StreamDecoder) -> Self {
        Self {
            reader,
            decoder,
            pending: Bytes::new(),
            eof: false,
        }
    }

    /// The next event; `None` after the trailing footer once the source is at end of file.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            if let Some(event) = self.decoder.decode(&mut self.pending)? {
                return Ok(Some(event));
            }
            if self.eof {
                self.decoder.finish()?;
                return Ok(None);
            }
            let mut buffer = BytesMut::zeroed(READ_CHUNK);
            let read = loop {
                match self.reader.read(&mut buffer) {
                    Ok(read) => break read,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(Error::io("reading the VHD stream")(error)),
                }
            };
            if read == 0 {
                self.eof = true;
            }
            buffer.truncate(read);
            self.pending = buffer.freeze();
        }
    }

    /// The decoder (for its footer and position).
    pub fn decoder(&self) -> &StreamDecoder {
        &self.decoder
    }
}

/// Writes a whole stream to a blocking [`std::io::Write`]; returns the bytes written (equal
/// to [`StreamEncoder::total_len`]).
pub fn encode_to_writer<W, I>(encoder: StreamEncoder, blocks: I, mut writer: W) -> Result<u64>
where
    W: std::io::Write,
    I: IntoIterator<Item = Result<Block>>,
{
    let mut written = 0u64;
    for piece in encoder.into_pieces(blocks) {
        let piece = piece?;
        writer
            .write_all(&piece)
            .map_err(Error::io("writing the VHD stream"))?;
        written += crate::units::u64_from_usize(piece.len());
    }
    writer
        .flush()
        .map_err(Error::io("flushing the VHD stream"))?;
    Ok(written)
}
