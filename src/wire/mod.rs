//! Packet codecs for bytes that come from the network: strict and bounded.
//!
//! - [`heartbeat`]: the perfplus heartbeat packet (drawn in its module
//!   docs), HMAC-SHA256 authenticated.
//! - [`hb3`]: the Heartbeat 3 wire codec.
//! - [`control`]: the control channel between perfplus HA nodes (migrate,
//!   start, report, standby, status), challenge-authenticated.
//! - [`Receiver`]: what stands between a socket and the membership core:
//!   decodes, then drops and counts packets from other clusters, unknown
//!   nodes, this node itself, stale incarnations and replays.
//!
//! Every decoder here is strict and bounded, round-trip and garbage tested
//! with proptest, and fuzzed (`fuzz/fuzz_targets/heartbeat.rs`).

#![forbid(unsafe_code)]

pub mod control;
pub mod hb3;
pub mod heartbeat;
mod receiver;

pub use heartbeat::{ClusterId, ClusterKey};
pub use receiver::{Dropped, Receiver, WireStats};

/// Why bytes were not accepted as a packet. Nothing changed in the
/// receiver's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The packet is not the length its version requires.
    #[error("packet of {len} bytes has the wrong length (a version 1 heartbeat is 70 bytes)")]
    Length {
        /// Bytes received.
        len: usize,
    },
    /// The magic bytes are wrong: not a perfplus packet.
    #[error("not a perfplus packet (bad magic)")]
    Magic,
    /// A perfplus packet of a version this code does not speak.
    #[error("perfplus packet version {version} is not supported (this node speaks version 1)")]
    UnsupportedVersion {
        /// The version in the packet.
        version: u8,
    },
    /// The tag does not verify: a different cluster key, or tampering.
    #[error("packet failed authentication (different cluster key, or tampered)")]
    Authentication,
    /// Flag bits this version does not define are set.
    #[error("packet sets unknown flags {flags:#04x}")]
    Flags {
        /// The flags byte.
        flags: u8,
    },
    /// An authenticated packet carries an impossible value.
    #[error("packet field `{field}` is invalid: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}
