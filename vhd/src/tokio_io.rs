//! Async adapters (feature `tokio`): an [`AsyncRead`] source for the stream decoder and an
//! [`AsyncWrite`] sink for the encoder.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::block::Block;
use crate::error::{Error, Result};
use crate::stream::{READ_CHUNK, StreamDecoder, StreamEncoder, StreamEvent};

/// A [`StreamDecoder`] fed from an [`AsyncRead`] (an HTTP body, a socket, a file).
#[derive(Debug)]
pub struct AsyncReadDecoder<R> {
    reader: R,
    decoder: StreamDecoder,
    pending: Bytes,
    eof: bool,
}

impl<R: AsyncRead + Unpin> AsyncReadDecoder<R> {
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
    pub async fn next_event(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            if let Some(event) = self.decoder.decode(&mut self.pending)? {
                return Ok(Some(event));
            }
            if self.eof {
                self.decoder.finish()?;
                return Ok(None);
            }
            let mut buffer = BytesMut::with_capacity(READ_CHUNK);
            let read = self
                .reader
                .read_buf(&mut buffer)
                .await
                .map_err(Error::io("reading the VHD stream"))?;
            self.eof = read == 0;
            self.pending = buffer.freeze();
        }
    }

    /// The decoder (for its footer and position).
    pub fn decoder(&self) -> &StreamDecoder {
        &self.decoder
    }
}

/// A [`StreamEncoder`] writing into an [`AsyncWrite`].
#[derive(Debug)]
pub struct AsyncWriteEncoder<W> {
    writer: W,
    encoder: StreamEncoder,
    written: u64,
    started: bool,
}

impl<W: AsyncWrite + Unpin> AsyncWriteEncoder<W> {
    /// Encodes into `writer`.
    pub fn new(writer: W, encoder: StreamEncoder) -> Self {
        Self {
            writer,
            encoder,
            written: 0,
            started: false,
        }
    }

    /// Exact length of the stream (for `Content-Length`).
    pub fn total_len(&self) -> u64 {
        self.encoder.total_len()
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the next announced block (writing the head first if needed).
    pub async fn write_block(&mut self, block: Block) -> Result<()> {
        self.start().await?;
        let pieces = self.encoder.encode_block(block)?;
        for piece in pieces {
            self.put(&piece).await?;
        }
        Ok(())
    }

    /// Writes the trailing footer, flushes and gives the writer back.
    pub async fn finish(mut self) -> Result<W> {
        self.start().await?;
        let tail = self.encoder.tail()?;
        self.put(&tail).await?;
        self.writer
            .flush()
            .await
            .map_err(Error::io("flushing the VHD stream"))?;
        Ok(self.writer)
    }

    async fn start(&mut self) -> Result<()> {
        if !self.started {
            let head = self.encoder.head()?;
            self.put(&head).await?;
            self.started = true;
        }
        Ok(())
    }

    async fn put(&mut self, piece: &[u8]) -> Result<()> {
        self.writer
            .write_all(piece)
            .await
            .map_err(Error::io("writing the VHD stream"))?;
        self.written += crate::units::u64_from_usize(piece.len());
        Ok(())
    }
}
