//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/nbd_client_*.rs`) and the corpus
//! replay test: each feeds arbitrary bytes, as a hostile peer would send them, to one parser or
//! state machine and must return (`Ok` or a typed error) without panicking or allocating more
//! than the caps allow.

use crate::Error;
use crate::proto::{
    ClientHandshake, CommandType, ExportName, HandshakeConfig, InfoRequest, MetaContextRequest,
    OptionRequestHeader, Outcome, ReplyHeader, ReplyMode, ReplyTracker, Request, Step,
    handshake::OPTION_HEADER_LEN,
};
use crate::units::{ByteRange, ContextId, Cookie};

/// Feeds `server_bytes` to a client handshake (Auto profile, TLS requested and "established" on
/// request, one meta context) as the server's side of the conversation.
pub fn client_handshake(server_bytes: &[u8]) -> Result<Option<Outcome>, Error> {
    let mut config = HandshakeConfig::new(ExportName::new("disk"));
    config.tls = server_bytes.first().is_some_and(|b| b & 1 == 1);
    config.meta_contexts = vec!["base:allocation".into()];
    let mut handshake = ClientHandshake::new(config);
    let mut input = server_bytes.get(1..).unwrap_or_default();
    loop {
        match handshake.next_step()? {
            Step::Send(_) => {}
            Step::StartTls => handshake.tls_established()?,
            Step::Receive(len) => {
                let Some(bytes) = input.get(..len) else {
                    return Ok(None);
                };
                input = input.get(len..).unwrap_or_default();
                handshake.receive(bytes)?;
            }
            Step::Done(outcome) => return Ok(Some(outcome)),
        }
    }
}

/// Feeds `server_bytes` to a reply tracker with a READ, a BLOCK_STATUS and a WRITE in flight;
/// the first byte picks the reply mode. Returns the number of completed requests.
pub fn reply_stream(server_bytes: &[u8]) -> Result<usize, Error> {
    let mode = match server_bytes.first().map(|b| b % 3) {
        Some(0) => ReplyMode::Simple,
        Some(1) => ReplyMode::Structured,
        _ => ReplyMode::Extended,
    };
    let mut tracker = ReplyTracker::new(mode, vec![ContextId(0), ContextId(2)]);
    tracker.register(Cookie(1), CommandType::READ, ByteRange::new(4096, 65536)?)?;
    tracker.register(
        Cookie(2),
        CommandType::BLOCK_STATUS,
        ByteRange::new(0, 1 << 20)?,
    )?;
    tracker.register(Cookie(3), CommandType::WRITE, ByteRange::new(0, 512)?)?;
    let mut input = server_bytes.get(1..).unwrap_or_default();
    let mut take = |len: usize| -> Option<&[u8]> {
        let bytes = input.get(..len)?;
        input = input.get(len..).unwrap_or_default();
        Some(bytes)
    };
    let mut completed = 0usize;
    loop {
        let Some(magic) = take(4) else {
            return Ok(completed);
        };
        let magic: [u8; 4] = magic.try_into().map_err(|_| Error::Closed)?;
        let len = tracker.header_len(magic)?;
        let Some(rest) = take(len.saturating_sub(4)) else {
            return Ok(completed);
        };
        let mut header = magic.to_vec();
        header.extend_from_slice(rest);
        let mut action = tracker.on_header(ReplyHeader::decode(&header)?)?;
        loop {
            action = match action {
                crate::proto::Action::ReadPayload { len } => {
                    let Some(payload) = take(len) else {
                        return Ok(completed);
                    };
                    tracker.on_payload(payload)?
                }
                crate::proto::Action::ReadData { len, .. } => {
                    if take(len).is_none() {
                        return Ok(completed);
                    }
                    tracker.on_data()?
                }
                crate::proto::Action::Continue => break,
                crate::proto::Action::Complete(_) => {
                    completed = completed.saturating_add(1);
                    break;
                }
            }
        }
    }
}

/// Feeds `client_bytes` to the server-side decoders: option request headers and their INFO /
/// META_CONTEXT data, then request headers. Returns the number of messages decoded.
pub fn server_messages(client_bytes: &[u8]) -> Result<usize, Error> {
    let mut decoded = 0usize;
    let mut input = client_bytes;
    while let Some(header) = input.get(..OPTION_HEADER_LEN) {
        let Ok(option) = OptionRequestHeader::decode(header) else {
            break;
        };
        let len = usize::try_from(option.length).unwrap_or(usize::MAX);
        let Some(data) = input.get(OPTION_HEADER_LEN..OPTION_HEADER_LEN.saturating_add(len)) else {
            return Ok(decoded);
        };
        // Either decoder may reject the data; both must do so with a typed error.
        let _ = InfoRequest::decode(data);
        let _ = MetaContextRequest::decode(data);
        decoded = decoded.saturating_add(1);
        input = input
            .get(OPTION_HEADER_LEN.saturating_add(len)..)
            .unwrap_or_default();
    }
    while let Some(magic) = input.get(..4) {
        let magic: [u8; 4] = magic.try_into().map_err(|_| Error::Closed)?;
        let len = Request::header_len(magic)?;
        let Some(bytes) = input.get(..len) else {
            return Ok(decoded);
        };
        Request::decode(bytes)?;
        decoded = decoded.saturating_add(1);
        input = input.get(len..).unwrap_or_default();
    }
    Ok(decoded)
}
