//! Sans-IO client side of the fixed-newstyle handshake (spec §2.21).
//!
//! [`ClientHandshake`] never touches a socket: the caller loops on
//! [`ClientHandshake::next_step`], sending the bytes it is given, reading exactly the number of
//! bytes it asks for and passing them to [`ClientHandshake::receive`], and upgrading the
//! transport to TLS when told to (then calling [`ClientHandshake::tls_established`]).

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::consts::{
    ClientFlags, EXPORT_NAME_PADDING, HandshakeFlags, InfoType, OptionCode, OptionReplyType,
    TransmissionFlags,
};
use super::handshake::{
    BlockSizeConstraints, EXPORT_NAME_REPLY_LEN, ExportEntry, ExportNameReply, GREETING_LEN,
    Greeting, Info, InfoRequest, MetaContextReply, MetaContextRequest, OPTION_REPLY_HEADER_LEN,
    OptionReplyHeader, encode_client_flags, encode_option,
};
use super::transmission::ReplyMode;
use crate::Error;
use crate::error::MessageRedactor;
use crate::units::to_usize;

/// Most replies accepted for one option (LIST entries, INFO items, contexts).
pub const MAX_REPLIES_PER_OPTION: usize = 4096;

/// An export name. Its `Debug` output is redacted: xapi's names embed a session reference.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ExportName(String);

impl ExportName {
    /// Wraps a name (e.g. `disk`, or xapi's `/<uuid>?session_id=OpaqueRef:…`).
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ExportName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExportName(<{} bytes, redacted>)", self.0.len())
    }
}

/// How much of the modern protocol the handshake attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Every peer: try extended headers, structured replies, meta contexts and GO, falling back
    /// to EXPORT_NAME and simple replies when refused.
    #[default]
    Auto,
    /// xapi-nbd: straight to EXPORT_NAME after (optional) STARTTLS, never NO_ZEROES; saves up to
    /// four round trips inside TLS.
    Xapi,
}

/// What the handshake is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Goal {
    /// Open the export and enter transmission.
    #[default]
    Transmission,
    /// List the server's exports (`NBD_OPT_LIST`), then abort.
    ListExports,
    /// List the metadata contexts matching these queries (`NBD_OPT_LIST_META_CONTEXT`;
    /// empty = all), then abort.
    ListMetaContexts(Vec<String>),
}

/// Parameters of one handshake.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Export to open (empty = the server's default export).
    pub export_name: ExportName,
    /// Negotiation profile.
    pub profile: Profile,
    /// Send STARTTLS first and refuse to continue in plaintext.
    pub tls: bool,
    /// Ask for structured replies (Auto profile).
    pub structured_replies: bool,
    /// Ask for extended headers (Auto profile).
    pub extended_headers: bool,
    /// Metadata contexts to select, e.g. `base:allocation`, `qemu:dirty-bitmap:bm0`.
    pub meta_contexts: Vec<String>,
    /// What the handshake is for.
    pub goal: Goal,
}

impl HandshakeConfig {
    /// Defaults for the Auto profile: no TLS, structured replies and extended headers wanted.
    pub fn new(export_name: ExportName) -> Self {
        Self {
            export_name,
            profile: Profile::Auto,
            tls: false,
            structured_replies: true,
            extended_headers: true,
            meta_contexts: Vec::new(),
            goal: Goal::Transmission,
        }
    }
}

/// Result of a handshake that entered transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: TransmissionFlags,
    /// Block size constraints, when the server sent them (GO path only).
    pub block_size: Option<BlockSizeConstraints>,
    /// Negotiated reply mode.
    pub mode: ReplyMode,
    /// Selected metadata contexts with their ids.
    pub contexts: Vec<MetaContextReply>,
    /// True when the export was opened with EXPORT_NAME (GO refused or not attempted).
    pub via_export_name: bool,
    /// True when the session runs inside TLS.
    pub tls: bool,
}

/// What a finished handshake produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Transmission phase entered.
    Transmission(Negotiated),
    /// Export list (the session was aborted).
    Exports(Vec<ExportEntry>),
    /// Metadata context names (the session was aborted).
    MetaContexts(Vec<String>),
}

/// The next thing the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes to the server.
    Send(Bytes),
    /// Read exactly this many bytes and pass them to [`ClientHandshake::receive`].
    Receive(usize),
    /// Run the TLS client handshake on the connection, then call
    /// [`ClientHandshake::tls_established`].
    StartTls,
    /// Finished. For [`Outcome::Exports`] and [`Outcome::MetaContexts`] an ABORT has been sent;
    /// close the connection.
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    ReplyHeader(OptionCode),
    ReplyPayload(OptionReplyHeader),
    ExportInfo,
    Padding(ExportNameReply),
    StartTls,
    Finished,
}

/// The client handshake state machine (see the module docs).
#[derive(Debug)]
pub struct ClientHandshake {
    config: HandshakeConfig,
    state: State,
    outbox: BytesMut,
    failure: Option<Error>,
    outcome: Option<Outcome>,
    no_zeroes: bool,
    tls_active: bool,
    mode: ReplyMode,
    contexts: Vec<MetaContextReply>,
    export: Option<(u64, TransmissionFlags)>,
    block_size: Option<BlockSizeConstraints>,
    replies: usize,
    exports: Vec<ExportEntry>,
    listed_contexts: Vec<String>,
}

impl ClientHandshake {
    /// Starts a handshake; the first step is reading the greeting.
    pub fn new(config: HandshakeConfig) -> Self {
        Self {
            config,
            state: State::Greeting,
            outbox: BytesMut::new(),
            failure: None,
            outcome: None,
            no_zeroes: false,
            tls_active: false,
            mode: ReplyMode::Simple,
            contexts: Vec::new(),
            export: None,
            block_size: None,
            replies: 0,
            exports: Vec::new(),
            listed_contexts: Vec::new(),
        }
    }

    /// The next step. After an `Err` the handshake is over; close the connection.
    pub fn next_step(&mut self) -> Result<Step, Error> {
        if !self.outbox.is_empty() {
            return Ok(Step::Send(self.outbox.split().freeze()));
        }
        if let Some(error) = self.failure.take() {
            self.state = State::Finished;
            return Err(error);
        }
        match self.state {
            State::Greeting => Ok(Step::Receive(GREETING_LEN)),
            State::ReplyHeader(_) => Ok(Step::Receive(OPTION_REPLY_HEADER_LEN)),
            State::ReplyPayload(header) => Ok(Step::Receive(to_usize(
                u64::from(header.length),
                "option reply",
            )?)),
            State::ExportInfo => Ok(Step::Receive(EXPORT_NAME_REPLY_LEN)),
            State::Padding(_) => Ok(Step::Receive(EXPORT_NAME_PADDING)),
            State::StartTls => Ok(Step::StartTls),
            State::Finished => self.outcome.take().map(Step::Done).ok_or(Error::Malformed {
                what: "handshake",
                reason: "already finished",
            }),
        }
    }

    /// The error to report when the server closes the connection in the current state:
    /// after EXPORT_NAME a close is how a server refuses the export.
    pub fn eof_error(&self) -> Error {
        match self.state {
            State::ExportInfo => Error::ExportRefused,
            State::Greeting => Error::UnexpectedEof {
                while_reading: "greeting",
            },
            _ => Error::UnexpectedEof {
                while_reading: "option reply",
            },
        }
    }

    /// Feeds the bytes requested by [`Step::Receive`].
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let result = match self.state {
            State::Greeting => self.on_greeting(bytes),
            State::ReplyHeader(option) => self.on_reply_header(option, bytes),
            State::ReplyPayload(header) => self.on_reply(header, bytes),
            State::ExportInfo => self.on_export_info(bytes),
            State::Padding(reply) => {
                self.finish_transmission(reply.size, reply.flags, true);
                Ok(())
            }
            State::StartTls | State::Finished => Err(Error::Malformed {
                what: "handshake",
                reason: "bytes received while none were expected",
            }),
        };
        if let Err(error) = result {
            self.state = State::Finished;
            self.outbox.clear();
            return Err(error);
        }
        Ok(())
    }

    /// Reports that the TLS handshake succeeded; negotiation restarts inside TLS.
    pub fn tls_established(&mut self) -> Result<(), Error> {
        if self.state != State::StartTls {
            return Err(Error::Malformed {
                what: "handshake",
                reason: "TLS established while not requested",
            });
        }
        // Everything negotiated before STARTTLS is forgotten (spec §2.19).
        self.tls_active = true;
        self.mode = ReplyMode::Simple;
        self.contexts.clear();
        self.after_tls()
    }

    fn send_option(&mut self, option: OptionCode, data: &[u8]) -> Result<(), Error> {
        encode_option(option, data, &mut self.outbox)?;
        self.replies = 0;
        self.state = if option == OptionCode::EXPORT_NAME {
            State::ExportInfo
        } else {
            State::ReplyHeader(option)
        };
        Ok(())
    }

    fn abort_with(&mut self, error: Error) -> Result<(), Error> {
        // A soft disconnect: the server's ACK (if any) is not awaited.
        encode_option(OptionCode::ABORT, &[], &mut self.outbox)?;
        self.failure = Some(error);
        self.state = State::Finished;
        Ok(())
    }

    fn abort_with_outcome(&mut self, outcome: Outcome) -> Result<(), Error> {
        encode_option(OptionCode::ABORT, &[], &mut self.outbox)?;
        self.outcome = Some(outcome);
        self.state = State::Finished;
        Ok(())
    }

    fn on_greeting(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let greeting = Greeting::decode(bytes)?;
        let fixed = greeting.flags.contains(HandshakeFlags::FIXED_NEWSTYLE);
        self.no_zeroes = greeting.flags.contains(HandshakeFlags::NO_ZEROES)
            && self.config.profile == Profile::Auto;
        let mut flags = ClientFlags::EMPTY;
        if fixed {
            flags = flags.with(ClientFlags::FIXED_NEWSTYLE);
        }
        if self.no_zeroes {
            flags = flags.with(ClientFlags::NO_ZEROES);
        }
        if !fixed {
            if self.config.tls {
                return Err(Error::NotFixedNewstyle { needed: "TLS" });
            }
            if self.config.goal != Goal::Transmission {
                return Err(Error::NotFixedNewstyle { needed: "listing" });
            }
        }
        encode_client_flags(flags, &mut self.outbox);
        if !fixed {
            return self.send_export_name();
        }
        if self.config.tls {
            self.send_option(OptionCode::STARTTLS, &[])
        } else {
            self.after_tls()
        }
    }

    fn after_tls(&mut self) -> Result<(), Error> {
        match self.config.profile {
            Profile::Xapi => self.after_modes(),
            Profile::Auto if self.config.extended_headers => {
                self.send_option(OptionCode::EXTENDED_HEADERS, &[])
            }
            Profile::Auto if self.config.structured_replies => {
                self.send_option(OptionCode::STRUCTURED_REPLY, &[])
            }
            Profile::Auto => self.after_modes(),
        }
    }

    fn after_modes(&mut self) -> Result<(), Error> {
        match self.config.goal.clone() {
            Goal::Transmission => {
                if self.config.profile == Profile::Xapi {
                    self.send_export_name()
                } else if self.mode != ReplyMode::Simple && !self.config.meta_contexts.is_empty() {
                    let mut data = BytesMut::new();
                    MetaContextRequest {
                        export_name: self.config.export_name.expose().to_owned(),
                        queries: self.config.meta_contexts.clone(),
                    }
                    .encode(&mut data)?;
                    self.send_option(OptionCode::SET_META_CONTEXT, &data)
                } else {
                    self.send_go()
                }
            }
            Goal::ListExports => self.send_option(OptionCode::LIST, &[]),
            Goal::ListMetaContexts(queries) => {
                let mut data = BytesMut::new();
                MetaContextRequest {
                    export_name: self.config.export_name.expose().to_owned(),
                    queries,
                }
                .encode(&mut data)?;
                self.send_option(OptionCode::LIST_META_CONTEXT, &data)
            }
        }
    }

    fn send_go(&mut self) -> Result<(), Error> {
        let mut data = BytesMut::new();
        InfoRequest {
            export_name: self.config.export_name.expose().to_owned(),
            requests: vec![InfoType::BLOCK_SIZE],
        }
        .encode(&mut data)?;
        self.export = None;
        self.block_size = None;
        self.send_option(OptionCode::GO, &data)
    }

    fn send_export_name(&mut self) -> Result<(), Error> {
        let name = self.config.export_name.expose().as_bytes().to_vec();
        self.send_option(OptionCode::EXPORT_NAME, &name)
    }

    fn on_reply_header(&mut self, option: OptionCode, bytes: &[u8]) -> Result<(), Error> {
        let header = OptionReplyHeader::decode(bytes)?;
        if header.option != option {
            return Err(Error::UnexpectedOptionReply {
                found: header.option,
                expected: option,
            });
        }
        if header.length == 0 {
            self.on_reply(header, &[])
        } else {
            self.state = State::ReplyPayload(header);
            Ok(())
        }
    }

    fn on_reply(&mut self, header: OptionReplyHeader, payload: &[u8]) -> Result<(), Error> {
        let option = header.option;
        self.state = State::ReplyHeader(option);
        if header.reply_type.is_error() {
            return self.on_option_error(header.reply_type, payload);
        }
        self.replies = self.replies.saturating_add(1);
        if self.replies > MAX_REPLIES_PER_OPTION {
            return Err(Error::TooMany {
                what: "replies to one option",
                max: MAX_REPLIES_PER_OPTION,
            });
        }
        let unexpected = Error::UnexpectedOptionReplyType {
            option,
            found: header.reply_type,
        };
        match header.reply_type {
            OptionReplyType::ACK => {
                if !payload.is_empty() {
                    return Err(Error::BadLength {
                        what: "ACK reply",
                        found: u64::from(header.length),
                        expected: 0,
                    });
                }
                self.on_ack(option)
            }
            OptionReplyType::SERVER if option == OptionCode::LIST => {
                self.exports.push(ExportEntry::decode(payload)?);
                Ok(())
            }
            OptionReplyType::INFO if option == OptionCode::GO => {
                match Info::decode(payload)? {
                    Info::Export { size, flags } => self.export = Some((size, flags)),
                    Info::BlockSize(sizes) => self.block_size = Some(sizes.validate()?),
                    Info::Name(_) | Info::Description(_) | Info::Unknown(_) => {}
                }
                Ok(())
            }
            OptionReplyType::META_CONTEXT if option == OptionCode::SET_META_CONTEXT => {
                let context = MetaContextReply::decode(payload)?;
                if self.contexts.iter().any(|c| c.id == context.id) {
                    return Err(Error::Malformed {
                        what: "meta context reply",
                        reason: "context id selected twice",
                    });
                }
                self.contexts.push(context);
                Ok(())
            }
            OptionReplyType::META_CONTEXT if option == OptionCode::LIST_META_CONTEXT => {
                self.listed_contexts
                    .push(MetaContextReply::decode(payload)?.name);
                Ok(())
            }
            _ => Err(unexpected),
        }
    }

    fn on_ack(&mut self, option: OptionCode) -> Result<(), Error> {
        match option {
            OptionCode::STARTTLS => {
                self.state = State::StartTls;
                Ok(())
            }
            OptionCode::EXTENDED_HEADERS => {
                self.mode = ReplyMode::Extended;
                self.after_modes()
            }
            OptionCode::STRUCTURED_REPLY => {
                self.mode = ReplyMode::Structured;
                self.after_modes()
            }
            OptionCode::SET_META_CONTEXT => self.send_go(),
            OptionCode::GO => {
                let (size, flags) = self.export.ok_or(Error::Malformed {
                    what: "GO reply",
                    reason: "ACK without NBD_INFO_EXPORT",
                })?;
                self.finish_transmission(size, flags, false);
                Ok(())
            }
            OptionCode::LIST => {
                let exports = std::mem::take(&mut self.exports);
                self.abort_with_outcome(Outcome::Exports(exports))
            }
            OptionCode::LIST_META_CONTEXT => {
                let names = std::mem::take(&mut self.listed_contexts);
                self.abort_with_outcome(Outcome::MetaContexts(names))
            }
            _ => Err(Error::UnexpectedOptionReplyType {
                option,
                found: OptionReplyType::ACK,
            }),
        }
    }

    fn on_option_error(&mut self, reply: OptionReplyType, payload: &[u8]) -> Result<(), Error> {
        let option = match self.state {
            State::ReplyHeader(option) => option,
            _ => OptionCode::default(),
        };
        let refused = Error::OptionRefused {
            option,
            reply,
            // The server may echo the export name, which can carry a session id.
            message: MessageRedactor::for_export(&self.config.export_name).redact(payload),
        };
        if reply == OptionReplyType::ERR_SHUTDOWN {
            return self.abort_with(Error::ServerShutdown);
        }
        match option {
            // Optional features: carry on without them.
            OptionCode::EXTENDED_HEADERS => {
                if self.config.structured_replies {
                    self.send_option(OptionCode::STRUCTURED_REPLY, &[])
                } else {
                    self.after_modes()
                }
            }
            OptionCode::STRUCTURED_REPLY => {
                self.mode = ReplyMode::Simple;
                self.after_modes()
            }
            OptionCode::SET_META_CONTEXT => {
                self.contexts.clear();
                self.send_go()
            }
            OptionCode::GO
                if reply == OptionReplyType::ERR_UNSUP && self.mode != ReplyMode::Extended =>
            {
                self.send_export_name()
            }
            _ => self.abort_with(refused),
        }
    }

    fn on_export_info(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let reply = ExportNameReply::decode(bytes)?;
        if self.no_zeroes {
            self.finish_transmission(reply.size, reply.flags, true);
        } else {
            self.state = State::Padding(reply);
        }
        Ok(())
    }

    fn finish_transmission(&mut self, size: u64, flags: TransmissionFlags, via_export_name: bool) {
        if !flags.contains(TransmissionFlags::HAS_FLAGS) {
            self.failure = Some(Error::Malformed {
                what: "transmission flags",
                reason: "NBD_FLAG_HAS_FLAGS is not set",
            });
            self.state = State::Finished;
            return;
        }
        self.outcome = Some(Outcome::Transmission(Negotiated {
            size,
            flags,
            block_size: self.block_size,
            mode: self.mode,
            contexts: std::mem::take(&mut self.contexts),
            via_export_name,
            tls: self.tls_active,
        }));
        self.state = State::Finished;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect()
    }

    fn expect_send(hs: &mut ClientHandshake) -> Vec<u8> {
        match hs.next_step().unwrap() {
            Step::Send(bytes) => bytes.to_vec(),
            other => panic!("expected Send, got {other:?}"),
        }
    }

    fn feed(hs: &mut ClientHandshake, wire: &str) {
        let bytes = hex(wire);
        let mut offset = 0;
        while offset < bytes.len() {
            match hs.next_step().unwrap() {
                Step::Receive(n) => {
                    hs.receive(&bytes[offset..offset + n]).unwrap();
                    offset += n;
                }
                other => panic!("expected Receive, got {other:?}"),
            }
        }
    }

    /// Spec §2.4: xapi-style session, TLS, GO refused, EXPORT_NAME with 124 bytes of padding.
    #[test]
    fn xapi_walkthrough_with_go_fallback() {
        let name = "/3f2504e0-4f89-11d3-9a0c-0305e82c3301?session_id=OpaqueRef:x";
        let mut config = HandshakeConfig::new(ExportName::new(name));
        config.tls = true;
        config.extended_headers = false;
        config.structured_replies = false;
        let mut hs = ClientHandshake::new(config);
        feed(&mut hs, "4e42444d41474943 49484156454f5054 0001");
        // Client flags (no NO_ZEROES: not offered) then STARTTLS.
        assert_eq!(
            expect_send(&mut hs),
            hex("00000001 49484156454f5054 00000005 00000000")
        );
        feed(&mut hs, "0003e889045565a9 00000005 00000001 00000000");
        assert_eq!(hs.next_step().unwrap(), Step::StartTls);
        hs.tls_established().unwrap();
        let go = expect_send(&mut hs);
        // Spec §2.4 row 5: GO with the name and one INFO_BLOCK_SIZE request.
        assert_eq!(&go[..12], &hex("49484156454f5054 00000007")[..]);
        assert_eq!(&go[go.len() - 4..], &hex("0001 0003")[..]);
        feed(&mut hs, "0003e889045565a9 00000007 80000001 00000000");
        let export_name = expect_send(&mut hs);
        assert_eq!(&export_name[..12], &hex("49484156454f5054 00000001")[..]);
        assert_eq!(&export_name[16..], name.as_bytes());
        let mut reply = String::from("0000000280000000 0003");
        reply.push_str(&"00".repeat(124));
        feed(&mut hs, &reply);
        let Step::Done(Outcome::Transmission(done)) = hs.next_step().unwrap() else {
            panic!("expected transmission")
        };
        assert_eq!(done.size, 10 << 30);
        assert_eq!(done.mode, ReplyMode::Simple);
        assert!(done.via_export_name && done.tls);
        assert_eq!(done.block_size, None);
    }

    /// Spec §2.5: qemu-nbd with structured replies, a dirty bitmap context and GO.
    #[test]
    fn qemu_walkthrough() {
        let mut config = HandshakeConfig::new(ExportName::new("disk"));
        config.extended_headers = false;
        config.meta_contexts = vec!["qemu:dirty-bitmap:bm0".into()];
        let mut hs = ClientHandshake::new(config);
        feed(&mut hs, "4e42444d41474943 49484156454f5054 0003");
        assert_eq!(
            expect_send(&mut hs),
            hex("00000003 49484156454f5054 00000008 00000000")
        );
        feed(&mut hs, "0003e889045565a9 00000008 00000001 00000000");
        assert_eq!(
            expect_send(&mut hs),
            hex(
                "49484156454f5054 0000000a 00000025 00000004 6469736b 00000001 00000015 71656d753a64697274792d6269746d61703a626d30"
            )
        );
        feed(
            &mut hs,
            "0003e889045565a9 0000000a 00000004 00000019 00000002 71656d753a64697274792d6269746d61703a626d30",
        );
        feed(&mut hs, "0003e889045565a9 0000000a 00000001 00000000");
        assert_eq!(
            expect_send(&mut hs),
            hex("49484156454f5054 00000007 0000000c 00000004 6469736b 0001 0003")
        );
        feed(
            &mut hs,
            "0003e889045565a9 00000007 00000003 0000000e 0003 00000001 00001000 02000000",
        );
        feed(
            &mut hs,
            "0003e889045565a9 00000007 00000003 0000000c 0000 0000000010000000 048f",
        );
        feed(&mut hs, "0003e889045565a9 00000007 00000001 00000000");
        let Step::Done(Outcome::Transmission(done)) = hs.next_step().unwrap() else {
            panic!("expected transmission")
        };
        assert_eq!(done.size, 256 << 20);
        assert_eq!(done.flags, TransmissionFlags(0x048f));
        assert_eq!(done.mode, ReplyMode::Structured);
        assert_eq!(done.contexts[0].id, crate::ContextId(2));
        assert_eq!(done.block_size.unwrap().maximum_payload, 32 << 20);
        assert!(!done.via_export_name);
    }

    #[test]
    fn starttls_refusal_aborts() {
        let mut config = HandshakeConfig::new(ExportName::new(""));
        config.tls = true;
        let mut hs = ClientHandshake::new(config);
        feed(&mut hs, "4e42444d41474943 49484156454f5054 0001");
        expect_send(&mut hs);
        feed(&mut hs, "0003e889045565a9 00000005 80000002 00000000");
        // ABORT goes out, then the error.
        assert_eq!(
            expect_send(&mut hs),
            hex("49484156454f5054 00000002 00000000")
        );
        assert!(matches!(
            hs.next_step(),
            Err(Error::OptionRefused {
                reply: OptionReplyType::ERR_POLICY,
                ..
            })
        ));
    }

    #[test]
    fn option_echo_and_garbage_are_rejected() {
        let mut hs = ClientHandshake::new(HandshakeConfig::new(ExportName::new("")));
        feed(&mut hs, "4e42444d41474943 49484156454f5054 0003");
        expect_send(&mut hs);
        assert_eq!(hs.next_step().unwrap(), Step::Receive(20));
        let err = hs
            .receive(&hex("0003e889045565a9 00000007 00000001 00000000"))
            .unwrap_err();
        assert!(matches!(err, Error::UnexpectedOptionReply { .. }));

        let mut hs = ClientHandshake::new(HandshakeConfig::new(ExportName::new("")));
        assert!(matches!(
            hs.receive(&[0x41; 18]),
            Err(Error::BadMagic {
                what: "greeting",
                ..
            })
        ));
    }

    #[test]
    fn export_name_is_redacted_in_debug() {
        let config = HandshakeConfig::new(ExportName::new("/uuid?session_id=OpaqueRef:secret"));
        assert!(!format!("{config:?}").contains("secret"));
    }
}
