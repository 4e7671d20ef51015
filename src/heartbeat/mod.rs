//! Taking part in a Heartbeat 3 cluster: a perfplus node as a member that
//! real Heartbeat 3.0.x nodes list as `active`.
//!
//! - [`Member`] is the sans-io protocol core: it takes time as an argument
//!   and packets as bytes, and returns what to send and what it learned
//!   ([`Output`]). It sends a `status` every keepalive, answers what a member
//!   must answer (`NS_ackmsg`, `reqnodes`, `starting`, `NS_rexmit`,
//!   `query-cstatus`), tracks each peer's generation and sequence numbers and
//!   drops replays. It judges no liveness: it reports every fresh status
//!   per peer and link ([`Event::Arrival`], with a status count that reads
//!   missing sequence numbers as lost statuses) for a failure detector to
//!   judge; the runtime (`runtime/hb3.rs`) feeds them to the membership
//!   core, bounded by the deadtime each peer advertises.
//! - [`identity`] persists what Heartbeat relies on across restarts: the
//!   node's UUID, and a generation that only ever grows.
//!
//! The message sequence a real node expects (verified against Heartbeat
//! 3.0.6, `shared/notes/heartbeat-wire.md`):
//!
//! ```text
//!   perfplus (nodeb)                       Heartbeat (nodea)
//!   status seq=1 hg=G st=active dt=..  ->  "Link nodeb:eth0 up", node active
//!                                      <-  reqnodes dest=nodeb seq=s
//!   NS_ackmsg ackseq=s; repnodes       ->  "Comm_now_up()"
//!                                      <-  starting seq=s+1
//!   NS_ackmsg; resource rsc_hold=none  ->  "Initial resource acquisition complete"
//!   status every keepalive             ->  ...
//!                                      <-  NS_rexmit firstseq=4 lastseq=5 (decimal)
//!   the original packets, or NS_nak_rexmit firstseq=<hex>
//!   shutdone st=dead                   ->  "Received shutdown notice"
//! ```

#![forbid(unsafe_code)]

pub mod identity;
mod member;
#[cfg(test)]
mod tests;

pub use member::{DropReason, Event, LeaveReason, Member, MemberConfig, MemberStats, Now, Output};

/// Why a Heartbeat member could not be set up, or its state not persisted.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The node name is not a lower-case name in the node list.
    #[error("node name {node:?} must be lower case and listed among the cluster nodes {nodes:?}")]
    NodeNotListed {
        /// Our node name.
        node: String,
        /// The configured node list.
        nodes: Vec<String>,
    },
    /// A timing setting Heartbeat would refuse.
    #[error("deadtime {deadtime_ms} ms must be more than twice keepalive {keepalive_ms} ms (and keepalive > 0)")]
    Timing {
        /// Keepalive.
        keepalive_ms: u64,
        /// Deadtime.
        deadtime_ms: u64,
    },
    /// The generation is 0, which Heartbeat treats as "no generation".
    #[error("generation must be at least 1")]
    ZeroGeneration,
    /// Reading or writing the persisted identity failed; nothing was changed
    /// if this happened while reading.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A persisted identity file holds something other than what perfplus writes.
    #[error("{path} is corrupt: {why}; remove it only if this node's old identity may be lost")]
    CorruptIdentity {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: &'static str,
    },
}
