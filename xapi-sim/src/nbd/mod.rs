//! An NBD server per host that behaves like xapi-nbd (spec xenapi.md §5.4, nbd-cbt.md §3.2,
//! §6.8), on `nbd-client`'s server-side protocol layer.
//!
//! - At most [`MAX_CONNECTIONS`] connections per host, negotiating ones included: the next one is
//!   accepted and closed before the greeting.
//! - Per connection, the pool's network purposes decide: `nbd` → TLS required, `insecure_nbd` →
//!   plain, both or neither → closed before the greeting.
//! - Fixed newstyle only (greeting flags `0x0001`); options answered as in [`policy`]; the
//!   export name `/<vdi-uuid>?session_id=<ref>` must carry a valid session and an existing
//!   VDI, else the connection closes without a reply; a read-only dom0 VBD is plugged for the
//!   connection's life; the reply is the size, flags `0x0003` and 124 zero bytes.
//! - Transmission: simple replies, one request at a time; READ must be 512-aligned (else
//!   `EINVAL`), its header goes out before the data, which follows in 512 KiB pieces; a READ
//!   past the end closes the connection after the header; WRITE → `EPERM` without draining its
//!   payload; DISC closes; any command flag or other command → `EINVAL`; a bad magic closes.
//! - TLS: [`crate::tls::HostCertificate::nbd_server_config`] (TLS 1.2, ECDHE-RSA-AES-GCM,
//!   secp384r1) with the host certificate `VDI.get_nbd_info` hands out.
//! - Faults: latency target `nbd` (per request) and `nbd:attach` (before the export reply, like
//!   a slow VBD plug); [`crate::FaultRule::CutNbd`] drops the connection abruptly after that many
//!   bytes of READ payload (0: right after a success header).

pub mod policy;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use nbd_client::Cookie;
use nbd_client::proto::handshake::{MAX_OPTION_REQUEST_LEN, OPTION_HEADER_LEN};
use nbd_client::proto::transmission::encode_simple_reply;
use nbd_client::proto::{
    ClientFlags, Errno, ExportNameReply, Greeting, HandshakeFlags, OptionCode, OptionReplyType,
    OptionRequestHeader, TransmissionFlags,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;
use xenapi::{Host, Ref, Vbd};

use self::policy::{OptionAction, RequestAction, TlsMode};
use crate::db::ClassId;
use crate::sim::Sim;
use crate::storage::{ByteOffset, DiskId};

/// Concurrent connections a host accepts (xapi-nbd's limit).
pub const MAX_CONNECTIONS: usize = 16;
/// Largest piece of READ payload written at once (xapi-nbd streams 512 KiB pieces).
const READ_PIECE: u32 = 512 * 1024;
/// Transmission flags of every export: `HAS_FLAGS | READ_ONLY`.
const EXPORT_FLAGS: u16 = 0x0003;

/// A connection slot; the count drops when it does.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes a slot unless the host is full.
fn take_slot(active: &Arc<AtomicUsize>) -> Option<Slot> {
    active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
            (count < MAX_CONNECTIONS).then_some(count + 1)
        })
        .ok()
        .map(|_| Slot(Arc::clone(active)))
}

/// The dom0 VBD of one connection, unplugged when the connection ends.
struct Attachment {
    sim: Arc<Sim>,
    vbd: Ref<Vbd>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.sim.unplug_dom0_vbd(&self.vbd);
    }
}

/// The export a connection serves.
struct Export {
    disk: DiskId,
    size: u64,
    _attachment: Attachment,
}

/// How negotiation ended.
enum Negotiation {
    StartTls,
    Export(Export),
    Close,
}

/// Serves one host's NBD listener until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, sim: Arc<Sim>, host: Ref<Host>, tls: TlsAcceptor) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "NBD accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Some(slot) = take_slot(&active) else {
            tracing::debug!(%peer, "NBD server busy: connection closed before the greeting");
            drop(stream);
            continue;
        };
        let sim = Arc::clone(&sim);
        let host = host.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("nbd", %peer, host = %host.as_str());
        connections.spawn(
            async move {
                let _slot = slot;
                if let Err(error) = connection(stream, &sim, &host, &tls).await {
                    tracing::debug!(%error, "NBD connection ended");
                }
            }
            .instrument(span),
        );
    }
}

/// Reads exactly `buffer.len()` bytes; `Ok(false)` on a clean EOF before the first byte.
async fn read_exact_or_eof<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut [u8],
) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = stream
            .read(buffer.get_mut(filled..).unwrap_or_default())
            .await?;
        if read == 0 {
            if filled == 0 {
                return Ok(false);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += read;
    }
    Ok(true)
}

async fn connection(
    mut stream: TcpStream,
    sim: &Arc<Sim>,
    host: &Ref<Host>,
    tls: &TlsAcceptor,
) -> std::io::Result<()> {
    let _nodelay = stream.set_nodelay(true);
    let mode = sim.read(|db| {
        let purposes: Vec<String> = db
            .all(ClassId::Network)
            .iter()
            .flat_map(|network| db.strings(ClassId::Network, network, "purpose"))
            .collect();
        policy::tls_mode(purposes.iter().map(String::as_str))
    });
    let Some(mode) = mode else {
        tracing::debug!("no single NBD network purpose: connection refused");
        return Ok(());
    };
    let cut_after = sim.faults().on_nbd_connection();
    let mut greeting = BytesMut::new();
    Greeting {
        flags: HandshakeFlags::FIXED_NEWSTYLE,
    }
    .encode(&mut greeting);
    stream.write_all(&greeting).await?;
    let mut flags = [0u8; 4];
    stream.read_exact(&mut flags).await?;
    let flags = ClientFlags(u32::from_be_bytes(flags));
    if mode == TlsMode::Forced && !flags.contains(ClientFlags::FIXED_NEWSTYLE) {
        return Ok(());
    }
    match negotiate(&mut stream, sim, host, mode, false).await? {
        Negotiation::Close => Ok(()),
        Negotiation::Export(export) => transmission(&mut stream, sim, &export, cut_after).await,
        Negotiation::StartTls => {
            let mut stream = tls.accept(stream).await?;
            match negotiate(&mut stream, sim, host, mode, true).await? {
                Negotiation::Export(export) => {
                    transmission(&mut stream, sim, &export, cut_after).await
                }
                Negotiation::Close | Negotiation::StartTls => Ok(()),
            }
        }
    }
}

async fn reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    option: OptionCode,
    reply_type: OptionReplyType,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    nbd_client::proto::handshake::encode_option_reply(option, reply_type, &[], &mut out)
        .map_err(std::io::Error::other)?;
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sim: &Arc<Sim>,
    host: &Ref<Host>,
    mode: TlsMode,
    tls_active: bool,
) -> std::io::Result<Negotiation> {
    loop {
        let mut header = [0u8; OPTION_HEADER_LEN];
        if !read_exact_or_eof(stream, &mut header).await? {
            return Ok(Negotiation::Close);
        }
        let Ok(request) = OptionRequestHeader::decode(&header) else {
            return Ok(Negotiation::Close);
        };
        if request.length > MAX_OPTION_REQUEST_LEN {
            return Ok(Negotiation::Close);
        }
        let mut data = vec![0u8; usize::try_from(request.length).unwrap_or(0)];
        stream.read_exact(&mut data).await?;
        tracing::debug!(option = %request.option, tls_active, "NBD option");
        match policy::option_action(mode, tls_active, request.option) {
            OptionAction::Reply(reply_type) => reply(stream, request.option, reply_type).await?,
            OptionAction::StartTls => {
                reply(stream, request.option, OptionReplyType::ACK).await?;
                return Ok(Negotiation::StartTls);
            }
            OptionAction::AckAndClose => {
                reply(stream, request.option, OptionReplyType::ACK).await?;
                return Ok(Negotiation::Close);
            }
            OptionAction::Close => return Ok(Negotiation::Close),
            OptionAction::ExportName => {
                let Some(export) = open_export(sim, host, &data) else {
                    return Ok(Negotiation::Close);
                };
                let attach_delay = sim.faults().latency("nbd:attach");
                if !attach_delay.is_zero() {
                    tokio::time::sleep(attach_delay).await;
                }
                let mut out = BytesMut::new();
                ExportNameReply {
                    size: export.size,
                    flags: TransmissionFlags(EXPORT_FLAGS),
                }
                .encode(false, &mut out);
                stream.write_all(&out).await?;
                stream.flush().await?;
                return Ok(Negotiation::Export(export));
            }
        }
    }
}

/// Validates the export name and plugs the dom0 VBD; `None` closes the connection.
fn open_export(sim: &Arc<Sim>, host: &Ref<Host>, name: &[u8]) -> Option<Export> {
    let target = policy::parse_export_name(name)?;
    if !sim.session_valid(&target.session) {
        tracing::debug!("NBD export name with an invalid session");
        return None;
    }
    let vdi = sim.lookup_vdi(&target.vdi_uuid).ok()?;
    // xapi-nbd looks the VDI up by uuid only.
    let uuid_matches = sim.read(|db| db.str(ClassId::Vdi, vdi.as_str(), "uuid") == target.vdi_uuid);
    if !uuid_matches {
        return None;
    }
    let disk = sim.read(|db| db.disk_of(vdi.as_str())).ok()?;
    let size = sim.storage().virtual_size(disk).ok()?.get();
    let vbd = sim.plug_dom0_vbd(host, &vdi, true).ok()?;
    Some(Export {
        disk,
        size,
        _attachment: Attachment {
            sim: Arc::clone(sim),
            vbd,
        },
    })
}

async fn transmission<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sim: &Arc<Sim>,
    export: &Export,
    cut_after: Option<u64>,
) -> std::io::Result<()> {
    let mut served: u64 = 0;
    let mut header = [0u8; 28];
    loop {
        if !read_exact_or_eof(stream, &mut header).await? {
            return Ok(());
        }
        let Some((cookie, action)) = policy::request_action(&header) else {
            tracing::debug!("bad NBD request magic: connection closed");
            return Ok(());
        };
        let delay = sim.faults().latency("nbd");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut out = BytesMut::new();
        match action {
            RequestAction::Disconnect => {
                let _shutdown = stream.shutdown().await;
                return Ok(());
            }
            RequestAction::Error(errno) => {
                encode_simple_reply(errno, Cookie(cookie), &mut out);
                stream.write_all(&out).await?;
                stream.flush().await?;
            }
            RequestAction::Read { offset, length } => {
                encode_simple_reply(Errno(0), Cookie(cookie), &mut out);
                stream.write_all(&out).await?;
                let mut position = offset;
                let mut remaining = length;
                while remaining > 0 {
                    let piece = remaining.min(READ_PIECE);
                    let Ok(data) = sim.storage().read(
                        export.disk,
                        ByteOffset::new(position),
                        usize::try_from(piece).unwrap_or(0),
                    ) else {
                        // Past the end or a device error: the header is out, the data never
                        // comes; xapi-nbd drops the connection.
                        tracing::debug!(position, "NBD read failed: connection dropped");
                        return Ok(());
                    };
                    let piece_len = u64::from(piece);
                    if let Some(limit) = cut_after
                        && served.saturating_add(piece_len) > limit
                    {
                        let keep = usize::try_from(limit.saturating_sub(served)).unwrap_or(0);
                        stream
                            .write_all(data.get(..keep).unwrap_or_default())
                            .await?;
                        stream.flush().await?;
                        tracing::debug!(limit, "NBD connection cut by a fault rule");
                        return Ok(());
                    }
                    stream.write_all(&data).await?;
                    served = served.saturating_add(piece_len);
                    position = position.saturating_add(piece_len);
                    remaining -= piece;
                }
                stream.flush().await?;
            }
        }
    }
}

/// Binds a host's NBD listener on `address` (port 0: any) and returns it with its port.
pub(crate) async fn bind(address: std::net::IpAddr) -> std::io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind((address, 0)).await?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_sixteen_and_come_back() {
        let active = Arc::new(AtomicUsize::new(0));
        let slots: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|_| take_slot(&active).unwrap())
            .collect();
        assert!(take_slot(&active).is_none());
        drop(slots);
        assert!(take_slot(&active).is_some());
    }
}
