//! A small NBD server over any byte stream, serving an in-memory export.
//!
//! Built only from the protocol layer's server-side encoders and decoders, it is the reference
//! peer of the crate's own tests, doctests and benches, and an example for servers such as the
//! `xapi-sim` one. Two profiles:
//! - [`ServerProfile::Modern`]: GO/INFO with block sizes, LIST, STRUCTURED_REPLY,
//!   SET_META_CONTEXT `base:allocation`, pipelined-friendly replies.
//! - [`ServerProfile::XapiLike`]: xapi-nbd's behaviour (spec §3.2): FORCEDTLS when TLS is
//!   configured, EXPORT_NAME only (everything else `ERR_UNSUP`), 124 padding bytes, simple
//!   replies, READ only and 512-aligned, any command flag → EINVAL, one request at a time.
//!
//! Requests are served one at a time, in order, like xapi-nbd; pipelined requests wait in the
//! socket.

use std::sync::{Arc, PoisonError, RwLock};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::Error;
use crate::proto::handshake::{
    MAX_OPTION_REQUEST_LEN, OPTION_HEADER_LEN, decode_client_flags, encode_option_reply,
};
use crate::proto::transmission::{
    EXTENDED_REQUEST_LEN, REQUEST_LEN, encode_chunk_header, encode_simple_reply,
};
use crate::proto::{
    BASE_ALLOCATION, BlockSizeConstraints, BlockStatusChunk, ChunkHeader, ChunkType, ClientFlags,
    CommandFlags, CommandType, Errno, ExportEntry, ExportNameReply, Extent, Greeting,
    HandshakeFlags, Info, InfoRequest, MetaContextReply, MetaContextRequest, OptionCode,
    OptionReplyType, OptionRequestHeader, ReplyFlags, Request, TransmissionFlags,
};
use crate::transport::{BoxStream, ByteStream};
use crate::units::{ContextId, to_u64, to_usize};

/// Largest READ/WRITE the server accepts (advertised in `NBD_INFO_BLOCK_SIZE`).
pub const SERVER_MAX_PAYLOAD: u32 = 32 * 1024 * 1024;

/// Which server family to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProfile {
    /// A modern server (qemu-nbd / nbdkit-like, without extended headers).
    Modern,
    /// xapi-nbd (see the module docs).
    XapiLike,
}

/// Server settings.
#[derive(Clone)]
pub struct ServerConfig {
    /// The only export name accepted.
    pub export_name: String,
    /// Behaviour profile.
    pub profile: ServerProfile,
    /// TLS acceptor; with `XapiLike` this also means FORCEDTLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Refuse writes.
    pub read_only: bool,
    /// Close the connection (without replying) when this many requests have been received,
    /// to exercise client reconnects.
    pub drop_after_requests: Option<usize>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("profile", &self.profile)
            .field("tls", &self.tls.is_some())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A plaintext, writable, modern server for `export_name`.
    pub fn modern(export_name: impl Into<String>) -> Self {
        Self {
            export_name: export_name.into(),
            profile: ServerProfile::Modern,
            tls: None,
            read_only: false,
            drop_after_requests: None,
        }
    }

    /// A read-only xapi-like server; pass an acceptor for FORCEDTLS.
    pub fn xapi_like(
        export_name: impl Into<String>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        Self {
            export_name: export_name.into(),
            profile: ServerProfile::XapiLike,
            tls,
            read_only: true,
            drop_after_requests: None,
        }
    }
}

/// An export held in memory, shared by every connection.
#[derive(Debug, Default)]
pub struct MemoryExport {
    data: RwLock<Vec<u8>>,
}

impl MemoryExport {
    /// An export with this content.
    pub fn new(data: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            data: RwLock::new(data),
        })
    }

    /// Export size.
    pub fn size(&self) -> u64 {
        to_u64(
            self.data
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        )
    }

    /// A copy of the content.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

enum OptionOutcome {
    Continue,
    StartTls,
    Transmission,
    Close,
}

struct Session {
    tls_active: bool,
    structured: bool,
    no_zeroes: bool,
    allocation_context: Option<ContextId>,
}

/// Serves one client connection until it disconnects. Protocol errors from the client end the
/// connection with an `Err`.
pub async fn serve<S: ByteStream>(
    stream: S,
    export: Arc<MemoryExport>,
    config: Arc<ServerConfig>,
) -> Result<(), Error> {
    let mut stream: BoxStream = Box::new(stream);
    let xapi = config.profile == ServerProfile::XapiLike;
    let offered = if xapi {
        HandshakeFlags::FIXED_NEWSTYLE
    } else {
        HandshakeFlags::FIXED_NEWSTYLE | HandshakeFlags::NO_ZEROES
    };
    let mut out = BytesMut::new();
    Greeting { flags: offered }.encode(&mut out);
    write(&mut stream, &mut out).await?;
    let mut flags = [0u8; 4];
    stream
        .read_exact(&mut flags)
        .await
        .map_err(Error::io("reading client flags"))?;
    let client_flags = decode_client_flags(&flags)?;
    if xapi && config.tls.is_some() && !client_flags.contains(ClientFlags::FIXED_NEWSTYLE) {
        return Ok(());
    }
    let mut session = Session {
        tls_active: false,
        structured: false,
        // xapi-nbd never honours NO_ZEROES.
        no_zeroes: !xapi && client_flags.contains(ClientFlags::NO_ZEROES),
        allocation_context: None,
    };
    loop {
        let mut header = [0u8; OPTION_HEADER_LEN];
        stream
            .read_exact(&mut header)
            .await
            .map_err(Error::io("reading an option"))?;
        let header = OptionRequestHeader::decode(&header)?;
        if header.length > MAX_OPTION_REQUEST_LEN {
            return Err(Error::OversizePayload {
                what: "option request",
                found: u64::from(header.length),
                max: u64::from(MAX_OPTION_REQUEST_LEN),
            });
        }
        let mut data = vec![0u8; to_usize(u64::from(header.length), "option data")?];
        stream
            .read_exact(&mut data)
            .await
            .map_err(Error::io("reading option data"))?;
        let outcome = if xapi {
            xapi_option(
                &config,
                &export,
                &mut session,
                header.option,
                &data,
                &mut out,
            )?
        } else {
            modern_option(
                &config,
                &export,
                &mut session,
                header.option,
                &data,
                &mut out,
            )?
        };
        write(&mut stream, &mut out).await?;
        match outcome {
            OptionOutcome::Continue => {}
            OptionOutcome::Close => return Ok(()),
            OptionOutcome::Transmission => break,
            OptionOutcome::StartTls => {
                let acceptor = config.tls.clone().ok_or(Error::Config {
                    reason: "STARTTLS accepted without an acceptor".into(),
                })?;
                let secured = acceptor
                    .accept(stream)
                    .await
                    .map_err(|source| Error::Tls { source })?;
                stream = Box::new(secured);
                session.tls_active = true;
                session.structured = false;
                session.allocation_context = None;
            }
        }
    }
    transmission(stream, export, &config, &session).await
}

async fn write(stream: &mut BoxStream, out: &mut BytesMut) -> Result<(), Error> {
    if !out.is_empty() {
        stream
            .write_all(out)
            .await
            .map_err(Error::io("writing a reply"))?;
        stream.flush().await.map_err(Error::io("writing a reply"))?;
        out.clear();
    }
    Ok(())
}

fn reply(option: OptionCode, reply_type: OptionReplyType, out: &mut BytesMut) -> Result<(), Error> {
    encode_option_reply(option, reply_type, &[], out)
}

fn transmission_flags(config: &ServerConfig) -> TransmissionFlags {
    match config.profile {
        ServerProfile::XapiLike => TransmissionFlags::HAS_FLAGS | TransmissionFlags::READ_ONLY,
        ServerProfile::Modern => {
            let base = TransmissionFlags::HAS_FLAGS
                | TransmissionFlags::SEND_FLUSH
                | TransmissionFlags::SEND_TRIM
                | TransmissionFlags::SEND_WRITE_ZEROES
                | TransmissionFlags::CAN_MULTI_CONN;
            if config.read_only {
                base | TransmissionFlags::READ_ONLY
            } else {
                base
            }
        }
    }
}

fn xapi_option(
    config: &ServerConfig,
    export: &MemoryExport,
    session: &mut Session,
    option: OptionCode,
    data: &[u8],
    out: &mut BytesMut,
) -> Result<OptionOutcome, Error> {
    let forced_tls = config.tls.is_some();
    if forced_tls && !session.tls_active {
        return Ok(match option {
            OptionCode::STARTTLS => {
                reply(option, OptionReplyType::ACK, out)?;
                OptionOutcome::StartTls
            }
            OptionCode::EXPORT_NAME | OptionCode::ABORT => OptionOutcome::Close,
            _ => {
                reply(option, OptionReplyType::ERR_TLS_REQD, out)?;
                OptionOutcome::Continue
            }
        });
    }
    Ok(match option {
        OptionCode::EXPORT_NAME => {
            if data != config.export_name.as_bytes() {
                // xapi-nbd cannot report errors here: it closes the connection.
                return Ok(OptionOutcome::Close);
            }
            ExportNameReply {
                size: export.size(),
                flags: transmission_flags(config),
            }
            .encode(false, out);
            OptionOutcome::Transmission
        }
        OptionCode::ABORT => {
            reply(option, OptionReplyType::ACK, out)?;
            OptionOutcome::Close
        }
        OptionCode::LIST => {
            reply(option, OptionReplyType::ERR_POLICY, out)?;
            OptionOutcome::Continue
        }
        OptionCode::STARTTLS => {
            let refusal = if forced_tls {
                OptionReplyType::ERR_INVALID
            } else {
                OptionReplyType::ERR_POLICY
            };
            reply(option, refusal, out)?;
            OptionOutcome::Continue
        }
        _ => {
            reply(option, OptionReplyType::ERR_UNSUP, out)?;
            OptionOutcome::Continue
        }
    })
}

fn modern_option(
    config: &ServerConfig,
    export: &MemoryExport,
    session: &mut Session,
    option: OptionCode,
    data: &[u8],
    out: &mut BytesMut,
) -> Result<OptionOutcome, Error> {
    let name_matches = |name: &str| name == config.export_name || name.is_empty();
    Ok(match option {
        OptionCode::STARTTLS if config.tls.is_some() && !session.tls_active => {
            reply(option, OptionReplyType::ACK, out)?;
            OptionOutcome::StartTls
        }
        OptionCode::STARTTLS => {
            reply(option, OptionReplyType::ERR_INVALID, out)?;
            OptionOutcome::Continue
        }
        _ if config.tls.is_some() && !session.tls_active && option != OptionCode::ABORT => {
            if option == OptionCode::EXPORT_NAME {
                return Ok(OptionOutcome::Close);
            }
            reply(option, OptionReplyType::ERR_TLS_REQD, out)?;
            OptionOutcome::Continue
        }
        OptionCode::ABORT => {
            reply(option, OptionReplyType::ACK, out)?;
            OptionOutcome::Close
        }
        OptionCode::STRUCTURED_REPLY => {
            session.structured = true;
            reply(option, OptionReplyType::ACK, out)?;
            OptionOutcome::Continue
        }
        OptionCode::LIST => {
            let mut payload = BytesMut::new();
            ExportEntry {
                name: config.export_name.clone(),
                description: String::new(),
            }
            .encode(&mut payload)?;
            encode_option_reply(option, OptionReplyType::SERVER, &payload, out)?;
            reply(option, OptionReplyType::ACK, out)?;
            OptionOutcome::Continue
        }
        OptionCode::SET_META_CONTEXT | OptionCode::LIST_META_CONTEXT => {
            let request = MetaContextRequest::decode(data)?;
            if !session.structured || !name_matches(&request.export_name) {
                reply(option, OptionReplyType::ERR_INVALID, out)?;
                return Ok(OptionOutcome::Continue);
            }
            let wanted = request.queries.is_empty() && option == OptionCode::LIST_META_CONTEXT
                || request
                    .queries
                    .iter()
                    .any(|q| q == BASE_ALLOCATION || q == "base:");
            if option == OptionCode::SET_META_CONTEXT {
                session.allocation_context = None;
            }
            if wanted {
                let id = ContextId(0);
                if option == OptionCode::SET_META_CONTEXT {
                    session.allocation_context = Some(id);
                }
                let mut payload = BytesMut::new();
                MetaContextReply {
                    id,
                    name: BASE_ALLOCATION.into(),
                }
                .encode(&mut payload);
                encode_option_reply(option, OptionReplyType::META_CONTEXT, &payload, out)?;
            }
            reply(option, OptionReplyType::ACK, out)?;
            OptionOutcome::Continue
        }
        OptionCode::INFO | OptionCode::GO => {
            let request = InfoRequest::decode(data)?;
            if !name_matches(&request.export_name) {
                reply(option, OptionReplyType::ERR_UNKNOWN, out)?;
                return Ok(OptionOutcome::Continue);
            }
            for info in [
                Info::Export {
                    size: export.size(),
                    flags: transmission_flags(config),
                },
                Info::BlockSize(BlockSizeConstraints {
                    minimum: 1,
                    preferred: 4096,
                    maximum_payload: SERVER_MAX_PAYLOAD,
                }),
            ] {
                let mut payload = BytesMut::new();
                info.encode(&mut payload);
                encode_option_reply(option, OptionReplyType::INFO, &payload, out)?;
            }
            reply(option, OptionReplyType::ACK, out)?;
            if option == OptionCode::GO {
                OptionOutcome::Transmission
            } else {
                OptionOutcome::Continue
            }
        }
        OptionCode::EXPORT_NAME => {
            if !name_matches(&String::from_utf8_lossy(data)) {
                return Ok(OptionOutcome::Close);
            }
            ExportNameReply {
                size: export.size(),
                flags: transmission_flags(config),
            }
            .encode(session.no_zeroes, out);
            OptionOutcome::Transmission
        }
        _ => {
            reply(option, OptionReplyType::ERR_UNSUP, out)?;
            OptionOutcome::Continue
        }
    })
}

async fn transmission(
    mut stream: BoxStream,
    export: Arc<MemoryExport>,
    config: &ServerConfig,
    session: &Session,
) -> Result<(), Error> {
    let xapi = config.profile == ServerProfile::XapiLike;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut header = [0u8; EXTENDED_REQUEST_LEN];
    let mut served = 0usize;
    loop {
        let Some(magic) = header.get_mut(..4) else {
            return Ok(());
        };
        match stream.read_exact(magic).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Error::io("reading a request")(e)),
        }
        let magic = [header[0], header[1], header[2], header[3]];
        let len = Request::header_len(magic)?;
        if len != REQUEST_LEN {
            // Extended headers were never negotiated.
            return Err(Error::BadMagic {
                what: "request",
                found: u64::from(u32::from_be_bytes(magic)),
                expected: u64::from(crate::proto::REQUEST_MAGIC),
            });
        }
        let rest = header.get_mut(4..len).ok_or(Error::Closed)?;
        stream
            .read_exact(rest)
            .await
            .map_err(Error::io("reading a request"))?;
        let request = Request::decode(header.get(..len).unwrap_or_default())?;
        served = served.saturating_add(1);
        if config
            .drop_after_requests
            .is_some_and(|limit| served > limit)
        {
            debug!("dropping the connection on purpose");
            return Ok(());
        }
        if request.command == CommandType::DISC {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        let errno = if xapi {
            xapi_request(&mut stream, &export, &request, &mut out).await?
        } else {
            modern_request(&mut stream, &export, config, session, &request, &mut out).await?
        };
        if let Some(errno) = errno {
            if session.structured {
                error_chunk(&request, errno, &mut out)?;
            } else {
                encode_simple_reply(errno, request.cookie, &mut out);
            }
        }
        write(&mut stream, &mut out).await?;
    }
}

fn error_chunk(request: &Request, errno: Errno, out: &mut BytesMut) -> Result<(), Error> {
    let mut payload = BytesMut::new();
    crate::proto::ErrorChunk {
        errno,
        message: String::new(),
        offset: None,
    }
    .encode(&mut payload);
    encode_chunk_header(
        &ChunkHeader {
            flags: ReplyFlags::DONE,
            chunk_type: ChunkType::ERROR,
            cookie: request.cookie,
            offset: None,
            length: to_u64(payload.len()),
        },
        out,
    )?;
    out.extend_from_slice(&payload);
    Ok(())
}

fn in_bounds(export: &MemoryExport, request: &Request) -> Option<(usize, usize)> {
    let end = request.offset.checked_add(request.length)?;
    if end > export.size() {
        return None;
    }
    Some((
        usize::try_from(request.offset).ok()?,
        usize::try_from(end).ok()?,
    ))
}

/// xapi-nbd request handling; `Some(errno)` = reply with that error.
async fn xapi_request(
    stream: &mut BoxStream,
    export: &MemoryExport,
    request: &Request,
    out: &mut BytesMut,
) -> Result<Option<Errno>, Error> {
    // Flags and type are parsed as one u32: any flag makes the command unknown.
    if request.flags != CommandFlags::EMPTY {
        return Ok(Some(Errno::EINVAL));
    }
    match request.command {
        CommandType::READ => {
            if !request.offset.is_multiple_of(512) || !request.length.is_multiple_of(512) {
                return Ok(Some(Errno::EINVAL));
            }
            let Some((start, end)) = in_bounds(export, request) else {
                // xapi-nbd sends the success header, then the read fails and it drops the
                // connection.
                encode_simple_reply(Errno(0), request.cookie, out);
                write(stream, out).await?;
                return Err(Error::InvalidRange {
                    offset: request.offset,
                    length: request.length,
                    export_size: export.size(),
                });
            };
            encode_simple_reply(Errno(0), request.cookie, out);
            copy_out(export, start, end, out);
            Ok(None)
        }
        // xapi-nbd does not consume a WRITE payload: the stream desynchronizes.
        CommandType::WRITE => Ok(Some(Errno::EPERM)),
        _ => Ok(Some(Errno::EINVAL)),
    }
}

fn copy_out(export: &MemoryExport, start: usize, end: usize, out: &mut BytesMut) {
    let data = export.data.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(slice) = data.get(start..end) {
        out.extend_from_slice(slice);
    }
}

async fn modern_request(
    stream: &mut BoxStream,
    export: &MemoryExport,
    config: &ServerConfig,
    session: &Session,
    request: &Request,
    out: &mut BytesMut,
) -> Result<Option<Errno>, Error> {
    let bounds = in_bounds(export, request);
    match request.command {
        CommandType::WRITE => {
            if request.length > u64::from(SERVER_MAX_PAYLOAD) {
                return Err(Error::OversizePayload {
                    what: "WRITE payload",
                    found: request.length,
                    max: u64::from(SERVER_MAX_PAYLOAD),
                });
            }
            let mut payload = vec![0u8; to_usize(request.length, "WRITE payload")?];
            stream
                .read_exact(&mut payload)
                .await
                .map_err(Error::io("reading WRITE data"))?;
            if config.read_only {
                return Ok(Some(Errno::EPERM));
            }
            let Some((start, end)) = bounds else {
                return Ok(Some(Errno::ENOSPC));
            };
            let mut data = export.data.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = data.get_mut(start..end) {
                slot.copy_from_slice(&payload);
            }
        }
        CommandType::READ => {
            let Some((start, end)) = bounds else {
                return Ok(Some(Errno::EINVAL));
            };
            if request.length == 0 || request.length > u64::from(SERVER_MAX_PAYLOAD) {
                return Ok(Some(Errno::EINVAL));
            }
            if session.structured {
                encode_chunk_header(
                    &ChunkHeader {
                        flags: ReplyFlags::DONE,
                        chunk_type: ChunkType::OFFSET_DATA,
                        cookie: request.cookie,
                        offset: None,
                        length: request.length.saturating_add(8),
                    },
                    out,
                )?;
                out.extend_from_slice(&request.offset.to_be_bytes());
            } else {
                encode_simple_reply(Errno(0), request.cookie, out);
            }
            copy_out(export, start, end, out);
            return Ok(None);
        }
        CommandType::TRIM | CommandType::WRITE_ZEROES => {
            if config.read_only {
                return Ok(Some(Errno::EPERM));
            }
            let Some((start, end)) = bounds else {
                return Ok(Some(Errno::ENOSPC));
            };
            let mut data = export.data.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = data.get_mut(start..end) {
                slot.fill(0);
            }
        }
        CommandType::FLUSH => {}
        CommandType::BLOCK_STATUS => {
            let (Some(context), Some(_)) = (session.allocation_context, bounds) else {
                return Ok(Some(Errno::EINVAL));
            };
            if request.length == 0 {
                return Ok(Some(Errno::EINVAL));
            }
            // Everything is reported as allocated data, in one extent clipped to the request.
            let mut payload = BytesMut::new();
            BlockStatusChunk {
                context,
                extents: vec![Extent {
                    length: request.length.min(u64::from(u32::MAX)),
                    flags: 0,
                }],
            }
            .encode(false, &mut payload)?;
            encode_chunk_header(
                &ChunkHeader {
                    flags: ReplyFlags::DONE,
                    chunk_type: ChunkType::BLOCK_STATUS,
                    cookie: request.cookie,
                    offset: None,
                    length: to_u64(payload.len()),
                },
                out,
            )?;
            out.extend_from_slice(&payload);
            return Ok(None);
        }
        _ => return Ok(Some(Errno::EINVAL)),
    }
    // Success without data.
    if session.structured {
        encode_chunk_header(
            &ChunkHeader {
                flags: ReplyFlags::DONE,
                chunk_type: ChunkType::NONE,
                cookie: request.cookie,
                offset: None,
                length: 0,
            },
            out,
        )?;
    } else {
        encode_simple_reply(Errno(0), request.cookie, out);
    }
    Ok(None)
}
