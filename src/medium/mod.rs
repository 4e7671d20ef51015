//! A redundant authenticated medium: one logical datagram channel carried
//! over several UDP links at once, for programs that bring their own
//! protocol (the Heartbeat HBcomm plugin in `examples/heartbeat/plugin/`).
//!
//! Every payload is sent on every link as one frame ([`frame`]) holding the
//! sender's node name, incarnation and sequence number, authenticated with
//! HMAC-SHA256. The receiver delivers each payload once ([`dedup`]): the
//! first authentic copy wins, later copies from the other links are counted
//! as duplicates, and replays (an older incarnation, or a sequence number
//! below the window) are dropped. Each link's health is the time since its
//! last authentic frame ([`health`]).
//!
//! ```text
//!  send(payload) --frame(seq n)--> link 0 (10.0.1.2:7940) --\
//!                            \--> link 1 (10.0.2.2:7940) ---+--> recv(): verify,
//!                                                                 dedup, deliver once
//! ```
//!
//! [`frame`], [`dedup`] and [`health`] are sans-io; [`UdpMedium`] puts them on
//! a blocking UDP socket and starts no thread, so it survives `fork()`: a
//! process that opens it may fork, and one child send while another receives
//! (Heartbeat's write and read children).

#![forbid(unsafe_code)]

pub mod dedup;
pub mod frame;
pub mod health;
mod udp;

pub use udp::{MediumConfig, MediumStats, UdpMedium};

/// Why the medium could not be set up, or a frame not sent or received.
#[derive(Debug, thiserror::Error)]
pub enum MediumError {
    /// The configuration is incomplete or invalid; nothing was opened.
    #[error("invalid medium configuration: {0}")]
    Config(String),
    /// The key file could not be read or is not private.
    #[error("key file {path}: {why}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The UDP socket could not be created or bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The local address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The payload does not fit in one frame.
    #[error("payload of {len} bytes exceeds the {max}-byte limit of one frame")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame could not be sent on any link (the payload is lost; the
    /// protocol above retransmits).
    #[error("frame not sent on any of {links} link(s): {source}")]
    SendFailed {
        /// Number of links.
        links: usize,
        /// The error of the last link tried.
        #[source]
        source: std::io::Error,
    },
    /// A signal interrupted the wait; nothing was received or lost.
    #[error("interrupted by a signal while waiting for a frame")]
    Interrupted,
    /// Receiving failed for a reason other than a timeout.
    #[error("receive failed: {0}")]
    Receive(#[source] std::io::Error),
    /// A payload arrived but is larger than the caller's buffer; it was
    /// dropped.
    #[error("received payload of {len} bytes does not fit the {capacity}-byte buffer; dropped")]
    BufferTooSmall {
        /// Payload length.
        len: usize,
        /// Buffer capacity.
        capacity: usize,
    },
}
