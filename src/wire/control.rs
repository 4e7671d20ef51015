//! The control channel between perfplus HA nodes (and from admin tools):
//! the decider tells a host to migrate or start a guest, hosts report what
//! they run and how an action ended, an admin puts a host in standby, asks
//! for the cluster's state or (as a resource agent's `monitor` does) whether a
//! guest runs on one host now.
//!
//! One exchange is one TCP connection, authenticated by a challenge, so a
//! captured message cannot be replayed and no clocks need to agree:
//!
//! ```text
//!  client                                   server
//!    ── connect ──────────────────────────────▶
//!    ◀──────────────────────────── nonce (16 random bytes)
//!    ── request frame, tag over (nonce, "req", frame) ▶
//!    ◀────── reply frame, tag over (nonce, "rep", frame)
//!    ── close ─────────────────────────────────
//! ```
//!
//! A frame (all integers big-endian):
//!
//! ```text
//!   0       4     5      6        8            12                 12+len   12+len+32
//!   +-------+-----+------+--------+------------+------------------+--------+
//!   | PPCT  | ver | kind | from   | body len   | body             | tag    |
//!   | magic | =1  |  u8  | u16    | u32 ≤ 64 K | (per kind)       | 32 B   |
//!   +-------+-----+------+--------+------------+------------------+--------+
//! ```
//!
//! `from` is the sending node's id (0 for an admin tool: a host answers an
//! admin's `Start`, `Stop` and `Migrate` when they are done, a node's at
//! once). Bodies are built
//! from `u8`/`u16`/`u64` and strings (`u16` length + UTF-8, at most
//! [`MAX_NAME`] bytes for names); every body must be consumed exactly. The
//! tag is HMAC-SHA256 under the control key, a [`ClusterKey::subkey`] of
//! the cluster key, so heartbeat and control messages never authenticate
//! each other.

use super::ClusterKey;
use crate::membership::NodeId;

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"PPCT";
/// The version this code speaks.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 12;
/// Bytes of the tag.
pub const TAG_LEN: usize = 32;
/// Bytes of the server's challenge.
pub const NONCE_LEN: usize = 16;
/// Largest body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest resource name accepted, bytes.
pub const MAX_NAME: usize = 255;
/// Most resources one report may list.
pub const MAX_RESOURCES: usize = 1024;

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Decider → source host: live-migrate this guest to `to`.
    Migrate {
        /// The resource.
        resource: String,
        /// The destination host.
        to: NodeId,
    },
    /// Decider → host: start this guest here (its host died and was fenced).
    Start {
        /// The resource.
        resource: String,
    },
    /// Admin → host: stop this guest here.
    Stop {
        /// The resource.
        resource: String,
    },
    /// Source → destination, after moving a guest: confirm it runs there
    /// (the driver's `migrate_from`).
    Adopt {
        /// The resource.
        resource: String,
        /// The source host.
        from: NodeId,
    },
    /// Host → every host: the resources it runs now.
    Report {
        /// The reporting host.
        host: NodeId,
        /// What it runs.
        running: Vec<String>,
    },
    /// Host → every host: a migration it ran ended.
    MigrationDone {
        /// The resource.
        resource: String,
        /// Its destination.
        to: NodeId,
        /// Whether it runs there now (else it still runs at the source).
        ok: bool,
        /// Guest downtime, µs (0 if it failed).
        downtime_us: u64,
        /// Bytes sent.
        bytes: u64,
    },
    /// Host → every host: a start it ran ended.
    StartDone {
        /// The resource.
        resource: String,
        /// Whether it runs now.
        ok: bool,
    },
    /// Admin (or the node it asked) → every host: standby on or off.
    Standby {
        /// The host.
        host: NodeId,
        /// On or off.
        on: bool,
    },
    /// Admin → host: what is the cluster's state?
    StatusRequest,
    /// Reply: the state, as JSON text.
    Status {
        /// JSON document (see the runtime's status format).
        json: String,
    },
    /// Admin or resource agent → host: does this guest run here, now? The
    /// host asks the guest's driver (not the cluster's last reports), so
    /// an OCF `monitor` right after a `start` or `stop` sees its outcome.
    Probe {
        /// The resource.
        resource: String,
    },
    /// Reply to [`Message::Probe`] (a driver failure is an `Ack` with
    /// `ok: false` instead).
    Probed {
        /// The resource.
        resource: String,
        /// Whether it runs on the host that answered.
        running: bool,
    },
    /// Reply: done, or refused with a reason.
    Ack {
        /// Whether the request was taken.
        ok: bool,
        /// Why not (empty when ok).
        message: String,
    },
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Migrate { .. } => 1,
            Message::Start { .. } => 2,
            Message::Report { .. } => 3,
            Message::MigrationDone { .. } => 4,
            Message::StartDone { .. } => 5,
            Message::Standby { .. } => 6,
            Message::StatusRequest => 7,
            Message::Status { .. } => 8,
            Message::Ack { .. } => 9,
            Message::Adopt { .. } => 10,
            Message::Stop { .. } => 11,
            Message::Probe { .. } => 12,
            Message::Probed { .. } => 13,
        }
    }
}

/// Which side of the exchange a frame comes from; part of what the tag
/// covers, so a reply can never be replayed as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Request,
    /// Server to client.
    Reply,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::Request => b"req",
            Direction::Reply => b"rep",
        }
    }
}

/// Why bytes were not accepted as a control frame. Nothing was acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Fewer bytes than the header says.
    #[error("control frame truncated: {have} of {need} bytes")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not a perfplus control frame.
    #[error("not a perfplus control frame (bad magic)")]
    Magic,
    /// Another protocol version.
    #[error("control protocol version {0} is not supported (this node speaks version 1)")]
    Version(u8),
    /// The body is larger than allowed.
    #[error("control frame body of {0} bytes is over the 64 KiB limit")]
    TooLarge(usize),
    /// The tag does not verify: another cluster key, a replay, or tampering.
    #[error("control frame failed authentication (different cluster key, replayed, or tampered)")]
    Authentication,
    /// An unknown message kind.
    #[error("unknown control message kind {0}")]
    Kind(u8),
    /// The body does not parse as its kind says.
    #[error("control message body is malformed: {0}")]
    Body(&'static str),
    /// Bytes after the frame.
    #[error("{0} unexpected bytes after the control frame")]
    Trailing(usize),
}

/// Encode `message` from node `from` for the exchange with `nonce`.
pub fn encode(
    key: &ClusterKey,
    nonce: &[u8; NONCE_LEN],
    direction: Direction,
    from: NodeId,
    message: &Message,
) -> Vec<u8> {
    let mut body = Vec::new();
    match message {
        Message::Migrate { resource, to } => {
            put_str(&mut body, resource);
            body.extend_from_slice(&to.0.to_be_bytes());
        }
        Message::Start { resource } | Message::Stop { resource } | Message::Probe { resource } => {
            put_str(&mut body, resource);
        }
        Message::Probed { resource, running } => {
            put_str(&mut body, resource);
            body.push(u8::from(*running));
        }
        Message::Adopt { resource, from } => {
            put_str(&mut body, resource);
            body.extend_from_slice(&from.0.to_be_bytes());
        }
        Message::Report { host, running } => {
            body.extend_from_slice(&host.0.to_be_bytes());
            let count = u16::try_from(running.len().min(MAX_RESOURCES)).unwrap_or(u16::MAX);
            body.extend_from_slice(&count.to_be_bytes());
            for name in running.iter().take(MAX_RESOURCES) {
                put_str(&mut body, name);
            }
        }
        Message::MigrationDone {
            resource,
            to,
            ok,
            downtime_us,
            bytes,
        } => {
            put_str(&mut body, resource);
            body.extend_from_slice(&to.0.to_be_bytes());
            body.push(u8::from(*ok));
            body.extend_from_slice(&downtime_us.to_be_bytes());
            body.extend_from_slice(&bytes.to_be_bytes());
        }
        Message::StartDone { resource, ok } => {
            put_str(&mut body, resource);
            body.push(u8::from(*ok));
        }
        Message::Standby { host, on } => {
            body.extend_from_slice(&host.0.to_be_bytes());
            body.push(u8::from(*on));
        }
        Message::StatusRequest => {}
        Message::Status { json } => put_long_str(&mut body, json),
        Message::Ack { ok, message } => {
            body.push(u8::from(*ok));
            put_long_str(&mut body, message);
        }
    }
    body.truncate(MAX_BODY);
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    frame.extend_from_slice(&MAGIC);
    frame.push(VERSION);
    frame.push(message.kind());
    frame.extend_from_slice(&from.0.to_be_bytes());
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    let tag = key.sign(&[nonce, direction.label(), &frame]);
    frame.extend_from_slice(&tag);
    frame
}

/// How many bytes the frame starting with `header` occupies in all, once
/// the header is complete; checks magic, version and size first, so a
/// reader never waits for (or allocates) more than a valid frame.
pub fn frame_len(header: &[u8; HEADER_LEN]) -> Result<usize, ControlError> {
    if header[..4] != MAGIC {
        return Err(ControlError::Magic);
    }
    if header[4] != VERSION {
        return Err(ControlError::Version(header[4]));
    }
    let body = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let body = usize::try_from(body).map_err(|_| ControlError::TooLarge(usize::MAX))?;
    if body > MAX_BODY {
        return Err(ControlError::TooLarge(body));
    }
    Ok(HEADER_LEN + body + TAG_LEN)
}

/// Decode one whole frame (exactly `frame_len` bytes) of the exchange with
/// `nonce`; the tag is checked before the body is parsed.
pub fn decode(
    key: &ClusterKey,
    nonce: &[u8; NONCE_LEN],
    direction: Direction,
    bytes: &[u8],
) -> Result<(NodeId, Message), ControlError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(ControlError::Truncated {
            have: bytes.len(),
            need: HEADER_LEN,
        })?;
    let need = frame_len(header)?;
    if bytes.len() < need {
        return Err(ControlError::Truncated {
            have: bytes.len(),
            need,
        });
    }
    if bytes.len() > need {
        return Err(ControlError::Trailing(bytes.len() - need));
    }
    let (frame, tag) = bytes.split_at(need - TAG_LEN);
    if !key.verify(&[nonce, direction.label(), frame], tag) {
        return Err(ControlError::Authentication);
    }
    let kind = header[5];
    let from = NodeId(u16::from_be_bytes([header[6], header[7]]));
    let mut body = Reader(&frame[HEADER_LEN..]);
    let message = match kind {
        1 => Message::Migrate {
            resource: body.name()?,
            to: NodeId(body.u16()?),
        },
        2 => Message::Start {
            resource: body.name()?,
        },
        3 => {
            let host = NodeId(body.u16()?);
            let count = usize::from(body.u16()?);
            if count > MAX_RESOURCES {
                return Err(ControlError::Body("report lists too many resources"));
            }
            let running = (0..count).map(|_| body.name()).collect::<Result<_, _>>()?;
            Message::Report { host, running }
        }
        4 => Message::MigrationDone {
            resource: body.name()?,
            to: NodeId(body.u16()?),
            ok: body.flag()?,
            downtime_us: body.u64()?,
            bytes: body.u64()?,
        },
        5 => Message::StartDone {
            resource: body.name()?,
            ok: body.flag()?,
        },
        6 => Message::Standby {
            host: NodeId(body.u16()?),
            on: body.flag()?,
        },
        7 => Message::StatusRequest,
        8 => Message::Status {
            json: body.long_str()?,
        },
        9 => Message::Ack {
            ok: body.flag()?,
            message: body.long_str()?,
        },
        11 => Message::Stop {
            resource: body.name()?,
        },
        10 => Message::Adopt {
            resource: body.name()?,
            from: NodeId(body.u16()?),
        },
        12 => Message::Probe {
            resource: body.name()?,
        },
        13 => Message::Probed {
            resource: body.name()?,
            running: body.flag()?,
        },
        other => return Err(ControlError::Kind(other)),
    };
    if !body.0.is_empty() {
        return Err(ControlError::Body("bytes left over after the message"));
    }
    Ok((from, message))
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = truncated(text, MAX_NAME);
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_long_str(out: &mut Vec<u8>, text: &str) {
    let bytes = truncated(text, MAX_BODY - 8);
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncated(text: &str, max: usize) -> &[u8] {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text.as_bytes()[..cut]
}

/// A cursor over a body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ControlError> {
        if self.0.len() < n {
            return Err(ControlError::Body("body ends inside a field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, ControlError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, ControlError> {
        let mut word = [0; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(word))
    }

    fn flag(&mut self) -> Result<bool, ControlError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ControlError::Body("a flag is neither 0 nor 1")),
        }
    }

    fn name(&mut self) -> Result<String, ControlError> {
        let len = usize::from(self.u16()?);
        if len == 0 || len > MAX_NAME {
            return Err(ControlError::Body(
                "a name is empty or longer than 255 bytes",
            ));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ControlError::Body("a name is not UTF-8"))
    }

    fn long_str(&mut self) -> Result<String, ControlError> {
        let b = self.take(4)?;
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let len = usize::try_from(len).map_err(|_| ControlError::Body("text too long"))?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ControlError::Body("text is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::derive(b"lab secret").subkey("control")
    }

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    fn any_name() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,40}"
    }

    fn any_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any_name(), 1_u16..).prop_map(|(resource, to)| Message::Migrate {
                resource,
                to: NodeId(to)
            }),
            any_name().prop_map(|resource| Message::Start { resource }),
            any_name().prop_map(|resource| Message::Stop { resource }),
            any_name().prop_map(|resource| Message::Probe { resource }),
            (any_name(), any::<bool>())
                .prop_map(|(resource, running)| Message::Probed { resource, running }),
            (any_name(), any::<u16>()).prop_map(|(resource, from)| Message::Adopt {
                resource,
                from: NodeId(from)
            }),
            (1_u16.., proptest::collection::vec(any_name(), 0..20)).prop_map(|(host, running)| {
                Message::Report {
                    host: NodeId(host),
                    running,
                }
            }),
            (
                any_name(),
                1_u16..,
                any::<bool>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(resource, to, ok, downtime_us, bytes)| {
                    Message::MigrationDone {
                        resource,
                        to: NodeId(to),
                        ok,
                        downtime_us,
                        bytes,
                    }
                }),
            (any_name(), any::<bool>())
                .prop_map(|(resource, ok)| Message::StartDone { resource, ok }),
            (1_u16.., any::<bool>()).prop_map(|(host, on)| Message::Standby {
                host: NodeId(host),
                on
            }),
            Just(Message::StatusRequest),
            ".{0,200}".prop_map(|json| Message::Status { json }),
            (any::<bool>(), ".{0,100}").prop_map(|(ok, message)| Message::Ack { ok, message }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(message in any_message(), from in any::<u16>()) {
            let frame = encode(&key(), &NONCE, Direction::Request, NodeId(from), &message);
            let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
            prop_assert_eq!(frame_len(&header).unwrap(), frame.len());
            let decoded = decode(&key(), &NONCE, Direction::Request, &frame).unwrap();
            prop_assert_eq!(decoded, (NodeId(from), message));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&key(), &NONCE, Direction::Request, &bytes);
        }

        #[test]
        fn any_flipped_bit_is_refused(message in any_message(), bit in any::<usize>()) {
            let mut frame = encode(&key(), &NONCE, Direction::Request, NodeId(1), &message);
            let bit = bit % (frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&key(), &NONCE, Direction::Request, &frame).is_err());
        }
    }

    #[test]
    fn a_frame_is_bound_to_its_exchange_and_direction() {
        let message = Message::Migrate {
            resource: "web".into(),
            to: NodeId(2),
        };
        let frame = encode(&key(), &NONCE, Direction::Request, NodeId(1), &message);
        let other_nonce = [8; NONCE_LEN];
        assert_eq!(
            decode(&key(), &other_nonce, Direction::Request, &frame),
            Err(ControlError::Authentication),
            "replayed into another connection"
        );
        assert_eq!(
            decode(&key(), &NONCE, Direction::Reply, &frame),
            Err(ControlError::Authentication),
            "a request passed off as a reply"
        );
        let wrong_key = ClusterKey::derive(b"other secret").subkey("control");
        assert_eq!(
            decode(&wrong_key, &NONCE, Direction::Request, &frame),
            Err(ControlError::Authentication)
        );
        let heartbeat_key = ClusterKey::derive(b"lab secret");
        assert_eq!(
            decode(&heartbeat_key, &NONCE, Direction::Request, &frame),
            Err(ControlError::Authentication),
            "the heartbeat key does not sign control frames"
        );
    }

    #[test]
    fn oversized_and_foreign_frames_are_refused_from_the_header() {
        let mut header = [0_u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = VERSION;
        header[8..12].copy_from_slice(&(1_u32 << 20).to_be_bytes());
        assert_eq!(frame_len(&header), Err(ControlError::TooLarge(1 << 20)));
        header[4] = 2;
        assert_eq!(frame_len(&header), Err(ControlError::Version(2)));
        header[0] = b'X';
        assert_eq!(frame_len(&header), Err(ControlError::Magic));
    }

    #[test]
    fn names_must_be_non_empty_utf8_and_short() {
        // Build a valid-tagged frame whose body holds an empty name.
        let mut frame = Vec::new();
        frame.extend_from_slice(&MAGIC);
        frame.push(VERSION);
        frame.push(2);
        frame.extend_from_slice(&1_u16.to_be_bytes());
        frame.extend_from_slice(&2_u32.to_be_bytes());
        frame.extend_from_slice(&0_u16.to_be_bytes());
        let tag = key().sign(&[&NONCE, b"req", &frame]);
        frame.extend_from_slice(&tag);
        assert_eq!(
            decode(&key(), &NONCE, Direction::Request, &frame),
            Err(ControlError::Body(
                "a name is empty or longer than 255 bytes"
            ))
        );
    }
}
