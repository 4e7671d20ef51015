//! The vocabulary of membership: node ids, incarnations, heartbeats as the
//! core sees them (independent of any packet format), events.

use std::fmt;

use crate::detector::Health;

/// A node's id, unique in its cluster (1..=65535; 0 is reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// A node's incarnation: grows each time the node starts, so that a
/// restarted node is told apart from its previous life and old packets are
/// recognised as stale. Incarnation 0 means "never seen".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "incarnation {}", self.0)
    }
}

/// A heartbeat, as the membership core sees it: what a peer said about
/// itself. The wire codec (or the Heartbeat 3 adapter) builds it from a
/// verified packet; the core never sees bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender.
    pub from: NodeId,
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// Sender's heartbeat sequence number (one per interval, the same on
    /// every link).
    pub seq: u64,
    /// Sender's monotonic clock when it sent this, µs.
    pub sent_at_us: u64,
    /// Sender's heartbeat interval, ms.
    pub interval_ms: u16,
    /// Sender's view epoch.
    pub view_epoch: u64,
    /// Digest of the sender's view (members and incarnations).
    pub view_digest: u64,
    /// Sender's uplink health.
    pub health: Health,
    /// Whether the sender has quorum.
    pub quorate: bool,
    /// The sender is leaving the cluster cleanly (it stopped its resources).
    pub leaving: bool,
    /// The longest silence after which the sender asks to be declared dead,
    /// ms (a Heartbeat 3 node's advertised deadtime, `dt`; perfplus packets
    /// carry none). The detector still judges; this only bounds it.
    pub deadtime_ms: Option<u64>,
}

/// Where a member stands, as seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Not heard from yet.
    Unknown,
    /// Alive.
    Alive,
    /// Silent on every link, not yet convicted.
    Suspected,
    /// Convicted (or never seen within the initial wait).
    Dead,
    /// Left the cluster cleanly.
    Left,
}

impl MemberState {
    /// Whether the member counts in the view (alive or merely suspected).
    pub fn in_view(self) -> bool {
        matches!(self, Self::Alive | Self::Suspected)
    }
}

/// Why this partition has quorum or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuorumReason {
    /// More than half of the configured votes are present.
    Majority,
    /// Exactly half, and this side's ping nodes answer better.
    TieWonByPing,
    /// Exactly half, equal health, and this side holds the lowest node id.
    TieWonByNodeId,
    /// Exactly half, and every missing node has been fenced.
    TieWonByFencing,
    /// Less than half of the votes.
    Minority,
    /// Exactly half, and this host reaches none of its ping nodes.
    TieLostNoUplink,
    /// Exactly half, and the other side's ping nodes answered better.
    TieLostByPing,
    /// Exactly half, equal health, the other side holds the lowest node id
    /// (fencing it would win the tie).
    TieLostByNodeId,
    /// Exactly half, but the whole cluster has not been seen since start
    /// (a starting node never breaks a tie alone; fencing still can).
    TieBeforeFullCluster,
}

/// The quorum of this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quorum {
    /// Whether this partition may act (restart resources, fence).
    pub quorate: bool,
    /// Votes present in the view.
    pub votes: u32,
    /// Votes configured.
    pub expected_votes: u32,
    /// Why.
    pub reason: QuorumReason,
}

/// Something the application should know. Events come in the order things
/// happened; every one is also reflected in [`Membership::members`](super::Membership::members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member is heard from: for the first time, or again after a
    /// conviction (`rejoined`: a partition healed or the conviction was
    /// wrong; its incarnation did not change).
    MemberUp {
        /// Who.
        node: NodeId,
        /// Its incarnation.
        incarnation: Incarnation,
        /// Heard again after being convicted with the same incarnation.
        rejoined: bool,
    },
    /// Every link to a member is silent; it is convicted at `deadline_us`
    /// unless heard from.
    MemberSuspected {
        /// Who.
        node: NodeId,
        /// When the suspicion becomes a conviction, µs.
        deadline_us: u64,
    },
    /// A suspected member was heard from again.
    MemberCleared {
        /// Who.
        node: NodeId,
    },
    /// A member is convicted: dead, or cut off from this partition. Its
    /// resources may be restarted only after [`Event::RecoveryAllowed`].
    MemberDead {
        /// Who.
        node: NodeId,
        /// The incarnation that died (0: never seen since this node started).
        incarnation: Incarnation,
    },
    /// A member left cleanly (it stopped its resources first).
    MemberLeft {
        /// Who.
        node: NodeId,
        /// The incarnation that left.
        incarnation: Incarnation,
    },
    /// A member restarted: its previous incarnation is gone.
    MemberRestarted {
        /// Who.
        node: NodeId,
        /// The incarnation that is gone.
        previous: Incarnation,
        /// The new one.
        incarnation: Incarnation,
    },
    /// One link to a member is down while another still carries heartbeats.
    LinkDown {
        /// Whose link.
        node: NodeId,
        /// Link index (configuration order).
        link: usize,
    },
    /// A link that was down carries heartbeats again.
    LinkUp {
        /// Whose link.
        node: NodeId,
        /// Link index.
        link: usize,
    },
    /// A host's uplink health changed (this node's own, or a member's as it
    /// reported it).
    HealthChanged {
        /// Whose health.
        node: NodeId,
        /// The new health.
        health: Health,
    },
    /// The set of members in this node's view changed.
    ViewChanged {
        /// The view's epoch (grows by one per change).
        epoch: u64,
        /// The digest of the view, as carried in heartbeats.
        digest: u64,
        /// The members in the view, this node included, by id.
        members: Vec<NodeId>,
    },
    /// This partition gained or lost quorum (or kept it for another reason).
    QuorumChanged(Quorum),
    /// This node was itself paused for `duration_us`: nobody is accused for
    /// that time; silence counts from now on.
    LocalPause {
        /// How long, µs.
        duration_us: u64,
    },
    /// Fence this member's incarnation (power it off, cut its storage),
    /// then report with [`Membership::fence_result`](super::Membership::fence_result).
    FenceRequested {
        /// Who.
        node: NodeId,
        /// Which incarnation.
        incarnation: Incarnation,
    },
    /// Fencing a member failed; it will be retried.
    FenceFailed {
        /// Who.
        node: NodeId,
        /// Which incarnation.
        incarnation: Incarnation,
    },
    /// The member's resources may now be restarted elsewhere: it is dead or
    /// gone, fenced if fencing is required, and this partition is quorate.
    RecoveryAllowed {
        /// Who.
        node: NodeId,
        /// The incarnation whose resources may be recovered.
        incarnation: Incarnation,
    },
}

/// One line per event, `KIND key=value ...`, as daemons log them
/// (`MEMBER_UP node=2 incarnation=1764000000000 rejoined=false`).
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self {
            Self::MemberUp {
                node,
                incarnation,
                rejoined,
            } => format!(
                "MEMBER_UP node={} incarnation={} rejoined={rejoined}",
                node.0, incarnation.0
            ),
            Self::MemberSuspected { node, deadline_us } => {
                format!("MEMBER_SUSPECTED node={} deadline_us={deadline_us}", node.0)
            }
            Self::MemberCleared { node } => format!("MEMBER_CLEARED node={}", node.0),
            Self::MemberDead { node, incarnation } => {
                format!("MEMBER_DEAD node={} incarnation={}", node.0, incarnation.0)
            }
            Self::MemberLeft { node, incarnation } => {
                format!("MEMBER_LEFT node={} incarnation={}", node.0, incarnation.0)
            }
            Self::MemberRestarted {
                node,
                previous,
                incarnation,
            } => format!(
                "MEMBER_RESTARTED node={} previous={} incarnation={}",
                node.0, previous.0, incarnation.0
            ),
            Self::LinkDown { node, link } => format!("LINK_DOWN node={} link={link}", node.0),
            Self::LinkUp { node, link } => format!("LINK_UP node={} link={link}", node.0),
            Self::HealthChanged { node, health } => format!(
                "HEALTH node={} ping_reachable={} ping_configured={}",
                node.0, health.reachable, health.configured
            ),
            Self::ViewChanged { epoch, members, .. } => format!(
                "VIEW epoch={epoch} members={}",
                members
                    .iter()
                    .map(|m| m.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Self::QuorumChanged(q) => format!(
                "QUORUM quorate={} votes={} expected={} reason={:?}",
                q.quorate, q.votes, q.expected_votes, q.reason
            ),
            Self::LocalPause { duration_us } => format!("LOCAL_PAUSE duration_us={duration_us}"),
            Self::FenceRequested { node, incarnation } => {
                format!(
                    "FENCE_REQUESTED node={} incarnation={}",
                    node.0, incarnation.0
                )
            }
            Self::FenceFailed { node, incarnation } => {
                format!("FENCE_FAILED node={} incarnation={}", node.0, incarnation.0)
            }
            Self::RecoveryAllowed { node, incarnation } => {
                format!(
                    "RECOVERY_ALLOWED node={} incarnation={}",
                    node.0, incarnation.0
                )
            }
        };
        f.write_str(&line)
    }
}

/// What the core asks its runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this heartbeat on every link.
    Send(Heartbeat),
    /// Tell the application.
    Event(Event),
    /// Call [`Membership::tick`](super::Membership::tick) at this time, µs
    /// (replaces any earlier request).
    WakeAt(u64),
}
