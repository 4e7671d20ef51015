//! Cluster membership, sans-io: who is in the cluster, with which
//! incarnation, in which view, with quorum or not, and when a dead host's
//! resources may be restarted.
//!
//! ```text
//!  heartbeat(now, link, Heartbeat) ─┐                 ┌─▶ Output::Send(Heartbeat)   (every interval)
//!  tick(now) ───────────────────────┤                 ├─▶ Output::Event(Event)      (members, views, quorum,
//!  set_local_health(now, Health) ───┼─▶ Membership ───┤                               fencing, pauses)
//!  fence_result(now, node, inc, ok)─┤                 └─▶ Output::WakeAt(t)         (when to tick next)
//!  leave(now) ──────────────────────┘
//! ```
//!
//! The core is foca-shaped: time is an argument, outputs are data, nothing
//! here reads a clock or touches a socket, so the same code runs under the
//! runtime's threads, in the simulator of `benches/detection.rs`, and in
//! scenario tests that route heartbeats by hand. It never sees a packet:
//! the wire codec (or the Heartbeat 3 adapter) hands it [`Heartbeat`]s.
//!
//! Per peer, a [`PeerMonitor`](crate::detector::PeerMonitor) judges the
//! links. Around it this module keeps incarnations (a higher one is a
//! restart; a lower one is stale and dropped), the view (members alive or
//! suspected, an epoch that grows with each change, a digest carried in
//! heartbeats), quorum (the rules in `quorum.rs`), and fencing: with fencing
//! required, a convicted member's resources may be recovered only after
//! [`Membership::fence_result`] confirmed it, and only while quorate.

#![forbid(unsafe_code)]

mod core;
mod quorum;
pub mod sim;
mod types;

pub use self::core::{
    Fencing, MemberInfo, Membership, MembershipConfig, MembershipStats, NodeSpec,
};
pub use types::{Event, Heartbeat, Incarnation, MemberState, NodeId, Output, Quorum, QuorumReason};

/// A membership configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MembershipError {
    /// No nodes are configured.
    #[error("the cluster has no nodes")]
    NoNodes,
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved (node `{name}`); ids start at 1")]
    ZeroNodeId {
        /// The node's name.
        name: String,
    },
    /// Two nodes share an id or a name.
    #[error("{what} `{value}` is configured twice")]
    Duplicate {
        /// "node id" or "node name".
        what: &'static str,
        /// The repeated value.
        value: String,
    },
    /// The local node is not among the configured nodes.
    #[error("this node ({local}) is not one of the configured nodes")]
    LocalNotConfigured {
        /// The local node id.
        local: NodeId,
    },
    /// No node has a vote.
    #[error("no node has a vote; quorum is impossible")]
    NoVotes,
    /// The heartbeat interval is zero or too long for the packet.
    #[error("the heartbeat interval must be 1..=65535 ms, got {interval_ms} ms")]
    Interval {
        /// The interval, ms.
        interval_ms: u64,
    },
    /// The failure detector settings are invalid.
    #[error("failure detector: {0}")]
    Detector(#[from] crate::detector::DetectorError),
}
