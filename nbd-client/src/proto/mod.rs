//! The sans-IO protocol layer: wire formats and state machines, no sockets.
//!
//! Both halves are public so that servers (the `xapi-sim` NBD server, test doubles) reuse the
//! same encoders and decoders as the client:
//!
//! | Module | Client uses | Server uses |
//! | --- | --- | --- |
//! | [`consts`] | magics, codes, flags, error numbers | same |
//! | [`handshake`] | decode greeting / option replies / INFO / META_CONTEXT | encode them; decode option requests |
//! | [`negotiate`] | [`ClientHandshake`] state machine | — |
//! | [`transmission`] | encode requests; decode reply headers and chunk payloads | decode requests; encode replies |
//! | [`replies`] | [`ReplyTracker`] reply-stream framing | — |

pub mod consts;
pub mod handshake;
pub mod negotiate;
pub mod replies;
pub mod transmission;

pub use consts::*;
pub use handshake::{
    BlockSizeConstraints, ExportEntry, ExportNameReply, Greeting, Info, InfoRequest,
    MetaContextReply, MetaContextRequest, OptionReplyHeader, OptionRequestHeader,
};
pub use negotiate::{
    ClientHandshake, ExportName, Goal, HandshakeConfig, Negotiated, Outcome, Profile, Step,
};
pub use replies::{Action, CommandFailure, Completion, Reply, ReplyTracker};
pub use transmission::{
    BlockStatusChunk, ChunkHeader, ErrorChunk, Extent, ReplyHeader, ReplyMode, Request,
};
