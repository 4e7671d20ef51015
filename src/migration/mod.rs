//! Perf+ live migration.
//!
//! Data flow of one migration:
//!
//! ```text
//!  source Domain ──read_pages──▶ engine ──pages──▶ StreamSink ──records──▶ Transport ─▶ Receiver ─▶ target Domain
//!        ▲  harvest_dirty          │  ▲                (encode: zero/raw/delta,            (decode, apply,
//!        │                         ▼  │                 digest, framing)                     verify, ack)
//!        └────────────── Planner (history) ─ RoundStatsTracker ─▶ PrecopyPolicy::decide
//! ```
//!
//! - [`policy`](crate::migration::policy): when to stop ([`policy::PrecopyPolicy`](crate::migration::policy::PrecopyPolicy), Perf+ and the
//!   baselines), from a plain-data [`policy::RoundStats`](crate::migration::policy::RoundStats) snapshot;
//! - [`planner`](crate::migration::planner): per-page dirty history (one byte per page), hot pages;
//! - [`encode`](crate::migration::encode): zero / raw / XOR-delta page encodings;
//! - [`stream`](crate::migration::stream): the versioned record format (drawn in its module doc);
//! - [`sink`](crate::migration::sink): the record *output* side behind a trait, so another stream
//!   format (libxc v3 for Xen PVH) can be written from the same rounds;
//! - [`transport`](crate::migration::transport): the simulated link and TCP, clocks;
//! - [`engine`](crate::migration::engine): the round loop, generic over domain, clock, policy and sink;
//! - [`receiver`](crate::migration::receiver): applies a stream to a domain, verifies, acknowledges.
//!
//! The sans-io parts (policy, planner, encode, stream) forbid `unsafe`, never
//! read a clock and never touch a socket.

#![forbid(unsafe_code)]

pub mod encode;
pub mod engine;
pub mod planner;
pub mod policy;
pub mod receiver;
pub mod sink;
pub mod stream;
pub mod transport;

use std::fmt;

use crate::backend::BackendError;
pub use engine::{migrate, EngineConfig, MigrationReport, Progress, ProgressFlow, Switchover};
pub use policy::{Action, BuiltinPolicy, Decision, PrecopyPolicy, RoundStats, RoundStatsTracker};
pub use receiver::{receive_tcp, Receiver, ReceiverState};
pub use sink::{PerfplusSink, StreamSink};
pub use stream::{StreamDigest, StreamError};
pub use transport::{
    Clock, RealClock, SimFaults, SimLink, TcpTransport, Transport, TransportError,
};

/// Where a migration was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Enabling dirty logging, sending the header.
    Setup,
    /// A live pre-copy round (0 is the full pass).
    Round(u32),
    /// Pausing the guest and sending the remaining pages.
    FinalPass,
    /// Sending the CPU/device state.
    CpuState,
    /// Waiting for the receiver's acknowledgement.
    AwaitAck,
    /// Handing the guest over after the acknowledgement.
    Commit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup => f.write_str("setup"),
            Self::Round(r) => write!(f, "pre-copy round {r}"),
            Self::FinalPass => f.write_str("the final pass (guest paused)"),
            Self::CpuState => f.write_str("sending the CPU state"),
            Self::AwaitAck => f.write_str("waiting for the receiver's acknowledgement"),
            Self::Commit => f.write_str("the hand-over"),
        }
    }
}

/// A migration failure, on either side.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The source gave up before the receiver acknowledged the stream, and
    /// resumed the guest: it runs at the source with its memory intact.
    #[error("migration aborted during {stage}; the guest is running at the source: {cause}")]
    Aborted {
        /// Where.
        stage: Stage,
        /// Why.
        #[source]
        cause: Box<MigrationError>,
    },
    /// The source gave up and could **not** resume the guest.
    #[error("migration aborted during {stage} ({cause}) and resuming the guest at the source failed: {resume}")]
    ResumeFailed {
        /// Where.
        stage: Stage,
        /// Why the migration failed.
        cause: Box<MigrationError>,
        /// Why the resume failed.
        #[source]
        resume: BackendError,
    },
    /// The receiver verified the stream and was told to resume the guest,
    /// but did not confirm. The guest stays paused at the source: check the
    /// receiver before resuming either copy.
    #[error("the receiver verified the stream but did not confirm resuming the guest ({cause}); the guest stays paused at the source: check the receiver before resuming either copy")]
    HandoverUnconfirmed {
        /// What went wrong after the acknowledgement.
        #[source]
        cause: Box<MigrationError>,
    },
    /// A domain operation failed.
    #[error("{what} failed: {source}")]
    Backend {
        /// What was being done.
        what: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The link failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Bytes from the peer do not form a valid stream.
    #[error("invalid migration stream: {0}")]
    Stream(#[from] StreamError),
    /// The receiver refused the stream.
    #[error("the receiver refused the stream: {reason}")]
    Refused {
        /// The receiver's reason.
        reason: String,
    },
    /// The sender gave up (seen by the receiver).
    #[error("the sender aborted the migration: {reason}")]
    SenderAborted {
        /// The sender's reason.
        reason: String,
    },
    /// The policy gave up: pre-copy did not converge.
    #[error("pre-copy did not converge: {reason}")]
    NotConverged {
        /// The policy's reason.
        reason: &'static str,
    },
    /// The progress observer asked to stop.
    #[error("cancelled by the caller")]
    Cancelled,
    /// The receiver's pages do not match what the sender sent.
    #[error("stream digest mismatch: the sender sent {sent:?}, the receiver rebuilt {received:?}")]
    DigestMismatch {
        /// The sender's END record.
        sent: StreamDigest,
        /// What the receiver computed.
        received: StreamDigest,
    },
    /// The stream's guest does not fit the receiving domain.
    #[error("the stream is for {stream_pages} pages of {stream_page_size} bytes, the receiving domain has {domain_pages} of {domain_page_size}")]
    GeometryMismatch {
        /// Pages in the stream header.
        stream_pages: u64,
        /// Page size in the stream header.
        stream_page_size: usize,
        /// Pages in the domain.
        domain_pages: u64,
        /// Page size of the domain.
        domain_page_size: usize,
    },
    /// The peer broke the protocol (e.g. a record out of order, a wrong
    /// acknowledgement, or the stream ended early).
    #[error("protocol violation: {what}")]
    Protocol {
        /// What happened.
        what: String,
    },
}

impl MigrationError {
    /// The migration failed in `stage` because of `cause`, and the source
    /// then tried to resume the guest, with result `resumed`: `Aborted` if
    /// it runs again, `ResumeFailed` if not.
    pub fn after_resume(
        stage: Stage,
        cause: Box<MigrationError>,
        resumed: Result<(), BackendError>,
    ) -> Self {
        match resumed {
            Ok(()) => Self::Aborted { stage, cause },
            Err(resume) => Self::ResumeFailed {
                stage,
                cause,
                resume,
            },
        }
    }

    /// The innermost cause (through `Aborted`, `ResumeFailed`, `HandoverUnconfirmed`).
    pub fn root(&self) -> &MigrationError {
        match self {
            Self::Aborted { cause, .. }
            | Self::ResumeFailed { cause, .. }
            | Self::HandoverUnconfirmed { cause } => cause.root(),
            other => other,
        }
    }
}
pub mod simulation;
