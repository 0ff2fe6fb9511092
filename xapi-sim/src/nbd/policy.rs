//! xapi-nbd's decisions, sans-IO (spec xenapi.md §5.4, nbd-cbt.md §3.2): the TLS mode from the
//! pool's network purposes, the answer to each handshake option, the export name, and what to
//! do with each transmission request.

use nbd_client::proto::{CommandType, Errno, OptionCode, OptionReplyType, REQUEST_MAGIC};

/// Whether a connection must upgrade to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Some network has purpose `nbd`: STARTTLS is required (FORCEDTLS).
    Forced,
    /// Only `insecure_nbd`: plain NBD (NOTLS).
    Plain,
}

/// The mode for a connection, from the purposes of every network of the pool; `None` (both or
/// neither purpose) means the connection is closed before the greeting.
pub fn tls_mode<'a>(purposes: impl IntoIterator<Item = &'a str>) -> Option<TlsMode> {
    let (mut secure, mut insecure) = (false, false);
    for purpose in purposes {
        secure |= purpose == "nbd";
        insecure |= purpose == "insecure_nbd";
    }
    match (secure, insecure) {
        (true, false) => Some(TlsMode::Forced),
        (false, true) => Some(TlsMode::Plain),
        _ => None,
    }
}

/// What to do with a handshake option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionAction {
    /// Reply with this type and no payload, then read the next option.
    Reply(OptionReplyType),
    /// Reply `ACK`, then run the TLS handshake on the socket.
    StartTls,
    /// Select the export named by the option data and enter transmission.
    ExportName,
    /// Reply `ACK`, then close.
    AckAndClose,
    /// Close without a reply.
    Close,
}

/// xapi-nbd's answer to `option` in `mode`, before (`tls_active == false`) or after TLS.
pub fn option_action(mode: TlsMode, tls_active: bool, option: OptionCode) -> OptionAction {
    if mode == TlsMode::Forced && !tls_active {
        return match option {
            OptionCode::STARTTLS => OptionAction::StartTls,
            OptionCode::EXPORT_NAME | OptionCode::ABORT => OptionAction::Close,
            _ => OptionAction::Reply(OptionReplyType::ERR_TLS_REQD),
        };
    }
    match option {
        OptionCode::EXPORT_NAME => OptionAction::ExportName,
        OptionCode::ABORT => OptionAction::AckAndClose,
        OptionCode::LIST => OptionAction::Reply(OptionReplyType::ERR_POLICY),
        OptionCode::STARTTLS if tls_active => OptionAction::Reply(OptionReplyType::ERR_INVALID),
        OptionCode::STARTTLS => OptionAction::Reply(OptionReplyType::ERR_POLICY),
        _ => OptionAction::Reply(OptionReplyType::ERR_UNSUP),
    }
}

/// Where an export name points: `/<vdi-uuid>?session_id=<ref>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportTarget {
    /// The VDI uuid (the path without its leading `/`, percent-decoded).
    pub vdi_uuid: String,
    /// The session (a secret: never printed).
    pub session: String,
}

impl std::fmt::Debug for ExportTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ExportTarget")
            .field("vdi_uuid", &self.vdi_uuid)
            .field("session", &"<redacted>")
            .finish()
    }
}

/// Parses an export name as xapi-nbd does (`Uri.of_string`): `None` when it has no
/// `session_id` or no VDI.
pub fn parse_export_name(name: &[u8]) -> Option<ExportTarget> {
    let name = std::str::from_utf8(name).ok()?;
    let (path, query) = name.split_once('?')?;
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    let path = path.strip_prefix('/').unwrap_or(path);
    let vdi_uuid = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?
        .into_owned();
    let session = crate::http::parse_query(query)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == "session_id")
        .map(|(_, value)| value)?;
    (!vdi_uuid.is_empty() && !session.is_empty()).then_some(ExportTarget { vdi_uuid, session })
}

/// What to do with a transmission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAction {
    /// Send a success header, then `length` bytes read at `offset`.
    Read {
        /// Export offset.
        offset: u64,
        /// Bytes to send.
        length: u32,
    },
    /// Send an error reply and read the next request (a WRITE's payload is not drained).
    Error(Errno),
    /// Close the connection (`DISC`).
    Disconnect,
}

/// A decoded request header: its cookie and the action. `None` for a bad magic (close).
///
/// xapi-nbd reads the command flags and type as one u32, so any flag makes the command unknown.
pub fn request_action(header: &[u8; 28]) -> Option<(u64, RequestAction)> {
    let word = |range: std::ops::Range<usize>| -> Option<u64> {
        header
            .get(range)?
            .iter()
            .try_fold(0u64, |value, byte| Some(value << 8 | u64::from(*byte)))
    };
    if u32::try_from(word(0..4)?).ok()? != REQUEST_MAGIC {
        return None;
    }
    let command = u32::try_from(word(4..8)?).ok()?;
    let cookie = word(8..16)?;
    let offset = word(16..24)?;
    let length = u32::try_from(word(24..28)?).ok()?;
    let read = u32::from(CommandType::READ.0);
    let action = match command {
        command if command == read => {
            if offset % 512 != 0 || length % 512 != 0 {
                RequestAction::Error(Errno::EINVAL)
            } else {
                RequestAction::Read { offset, length }
            }
        }
        command if command == u32::from(CommandType::WRITE.0) => RequestAction::Error(Errno::EPERM),
        command if command == u32::from(CommandType::DISC.0) => RequestAction::Disconnect,
        _ => RequestAction::Error(Errno::EINVAL),
    };
    Some((cookie, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(flags: u16, command: u16, offset: u64, length: u32) -> [u8; 28] {
        let mut header = [0u8; 28];
        header[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        header[4..6].copy_from_slice(&flags.to_be_bytes());
        header[6..8].copy_from_slice(&command.to_be_bytes());
        header[8..16].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        header[16..24].copy_from_slice(&offset.to_be_bytes());
        header[24..28].copy_from_slice(&length.to_be_bytes());
        header
    }

    #[test]
    fn the_mode_follows_network_purposes() {
        assert_eq!(tls_mode(["", "nbd"]), Some(TlsMode::Forced));
        assert_eq!(tls_mode(["insecure_nbd"]), Some(TlsMode::Plain));
        assert_eq!(tls_mode(["nbd", "insecure_nbd"]), None);
        assert_eq!(tls_mode([]), None);
    }

    #[test]
    fn options_are_answered_like_xapi_nbd() {
        use OptionAction::*;
        let forced = |option| option_action(TlsMode::Forced, false, option);
        assert_eq!(forced(OptionCode::STARTTLS), StartTls);
        assert_eq!(forced(OptionCode::EXPORT_NAME), Close);
        assert_eq!(forced(OptionCode::ABORT), Close);
        assert_eq!(forced(OptionCode::GO), Reply(OptionReplyType::ERR_TLS_REQD));
        assert_eq!(
            forced(OptionCode::LIST),
            Reply(OptionReplyType::ERR_TLS_REQD)
        );
        let after = |option| option_action(TlsMode::Forced, true, option);
        assert_eq!(after(OptionCode::GO), Reply(OptionReplyType::ERR_UNSUP));
        assert_eq!(after(OptionCode::INFO), Reply(OptionReplyType::ERR_UNSUP));
        assert_eq!(
            after(OptionCode::STRUCTURED_REPLY),
            Reply(OptionReplyType::ERR_UNSUP)
        );
        assert_eq!(after(OptionCode::LIST), Reply(OptionReplyType::ERR_POLICY));
        assert_eq!(
            after(OptionCode::STARTTLS),
            Reply(OptionReplyType::ERR_INVALID)
        );
        assert_eq!(after(OptionCode::ABORT), AckAndClose);
        assert_eq!(after(OptionCode::EXPORT_NAME), ExportName);
        let plain = |option| option_action(TlsMode::Plain, false, option);
        assert_eq!(
            plain(OptionCode::STARTTLS),
            Reply(OptionReplyType::ERR_POLICY)
        );
        assert_eq!(plain(OptionCode(42)), Reply(OptionReplyType::ERR_UNSUP));
    }

    #[test]
    fn export_names_carry_a_vdi_and_a_session() {
        // What VDI.get_nbd_info hands out.
        let target = parse_export_name(
            b"/3f2504e0-4f89-11d3-9a0c-0305e82c3301?session_id=OpaqueRef:5e1c8b0e",
        )
        .unwrap();
        assert_eq!(target.vdi_uuid, "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        assert_eq!(target.session, "OpaqueRef:5e1c8b0e");
        assert!(!format!("{target:?}").contains("5e1c8b0e"));
        assert_eq!(
            parse_export_name(b"/a%2Db?session_id=OpaqueRef%3Ax")
                .unwrap()
                .vdi_uuid,
            "a-b"
        );
        assert_eq!(parse_export_name(b"/uuid"), None);
        assert_eq!(parse_export_name(b"/uuid?other=1"), None);
        assert_eq!(parse_export_name(b"?session_id=x"), None);
        assert_eq!(parse_export_name(&[0xff, b'?']), None);
    }

    #[test]
    fn requests_map_to_xapi_nbd_actions() {
        assert_eq!(
            request_action(&request(0, 0, 4096, 1 << 20)),
            Some((
                0x0102_0304_0506_0708,
                RequestAction::Read {
                    offset: 4096,
                    length: 1 << 20
                }
            ))
        );
        let action = |header: [u8; 28]| request_action(&header).map(|(_, action)| action);
        assert_eq!(
            action(request(0, 0, 100, 512)),
            Some(RequestAction::Error(Errno::EINVAL))
        );
        assert_eq!(
            action(request(0, 0, 512, 100)),
            Some(RequestAction::Error(Errno::EINVAL))
        );
        // NBD_CMD_FLAG_FUA on a READ: the u32 command is unknown.
        assert_eq!(
            action(request(1, 0, 0, 512)),
            Some(RequestAction::Error(Errno::EINVAL))
        );
        assert_eq!(
            action(request(0, 1, 0, 512)),
            Some(RequestAction::Error(Errno::EPERM))
        );
        assert_eq!(action(request(0, 2, 0, 0)), Some(RequestAction::Disconnect));
        assert_eq!(
            action(request(0, 3, 0, 0)),
            Some(RequestAction::Error(Errno::EINVAL))
        );
        assert_eq!(
            action(request(0, 7, 0, 512)),
            Some(RequestAction::Error(Errno::EINVAL))
        );
        let mut bad = request(0, 0, 0, 512);
        bad[0] ^= 0xff;
        assert_eq!(request_action(&bad), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn export_names_round_trip(uuid in "[0-9a-f-]{1,36}", session in "OpaqueRef:[0-9a-f-]{1,36}") {
            let name = format!("/{uuid}?session_id={session}");
            let target = parse_export_name(name.as_bytes()).unwrap();
            prop_assert_eq!(target.vdi_uuid, uuid);
            prop_assert_eq!(target.session, session);
        }

        #[test]
        fn any_header_decodes_without_panic(bytes in proptest::array::uniform28(any::<u8>())) {
            let _action = request_action(&bytes);
        }
    }
}
