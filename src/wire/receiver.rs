//! The receive filter: bytes in, a fresh authentic [`Heartbeat`] out, every
//! drop counted by reason.
//!
//! Replays: a heartbeat is sent once per interval with one sequence number
//! on every link, so each link of each peer keeps its own anti-replay
//! window (the highest sequence seen plus a 64-bit bitmap behind it, as
//! IPsec does). A packet must be new on its link and not older than the
//! newest sequence seen from that peer on any link by more than the
//! window: an attacker can neither replay old heartbeats to keep a dead
//! node alive nor move a recent one to another link to fake that link.
//! A higher incarnation (a restart) resets the windows; a lower one is
//! stale.

use std::collections::HashMap;

use super::heartbeat::{decode, ClusterId, ClusterKey};
use super::WireError;
use crate::membership::{Heartbeat, Incarnation, NodeId};

/// How far behind the newest sequence a packet may be.
const WINDOW: u64 = 64;

/// Packets received, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireStats {
    /// Accepted and handed on.
    pub accepted: u64,
    /// Wrong length, magic or field.
    pub malformed: u64,
    /// A version this node does not speak.
    pub unsupported_version: u64,
    /// The tag did not verify.
    pub bad_authentication: u64,
    /// Authentic, but for another cluster id (node lists differ).
    pub foreign_cluster: u64,
    /// From a node id not in the configuration.
    pub unknown_node: u64,
    /// This node's own packets (multicast or broadcast loopback).
    pub own: u64,
    /// From an older incarnation than the one known.
    pub stale_incarnation: u64,
    /// A sequence number already seen on that link, or too old.
    pub replayed: u64,
}

impl WireStats {
    /// Packets dropped for any reason except being this node's own.
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.unsupported_version
            + self.bad_authentication
            + self.foreign_cluster
            + self.unknown_node
            + self.stale_incarnation
            + self.replayed
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    highest: u64,
    seen: u64,
    any: bool,
}

impl Window {
    /// Accept `seq` if new; record it.
    fn accept(&mut self, seq: u64) -> bool {
        if !self.any || seq > self.highest {
            let shift = if self.any { seq - self.highest } else { WINDOW };
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
            self.any = true;
            return true;
        }
        let behind = self.highest - seq;
        if behind >= WINDOW {
            return false;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[derive(Debug, Clone)]
struct PeerWindows {
    incarnation: Incarnation,
    highest: u64,
    links: Vec<Window>,
}

/// Decodes and filters the heartbeats of one node's links.
#[derive(Debug, Clone)]
pub struct Receiver {
    cluster: ClusterId,
    key: ClusterKey,
    local: NodeId,
    links: usize,
    peers: HashMap<NodeId, PeerWindows>,
    stats: WireStats,
}

impl Receiver {
    /// A filter for node `local` of `cluster`, whose other members are
    /// `peers`, over `links` links.
    pub fn new(
        cluster: ClusterId,
        key: ClusterKey,
        local: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        links: usize,
    ) -> Self {
        let links = links.max(1);
        Self {
            cluster,
            key,
            local,
            links,
            peers: peers
                .into_iter()
                .filter(|p| *p != local)
                .map(|p| {
                    (
                        p,
                        PeerWindows {
                            incarnation: Incarnation(0),
                            highest: 0,
                            links: vec![Window::default(); links],
                        },
                    )
                })
                .collect(),
            stats: WireStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> WireStats {
        self.stats
    }

    /// Bytes arrived on `link`: the heartbeat if it is authentic, for this
    /// cluster, from a known peer, and fresh; otherwise the reason it was
    /// dropped (already counted).
    pub fn accept(&mut self, bytes: &[u8], link: usize) -> Result<Heartbeat, Dropped> {
        let (cluster, hb) = decode(bytes, &self.key).map_err(|e| {
            match e {
                WireError::UnsupportedVersion { .. } => self.stats.unsupported_version += 1,
                WireError::Authentication => self.stats.bad_authentication += 1,
                WireError::Length { .. }
                | WireError::Magic
                | WireError::Flags { .. }
                | WireError::Field { .. } => self.stats.malformed += 1,
            }
            Dropped::Invalid(e)
        })?;
        if cluster != self.cluster {
            self.stats.foreign_cluster += 1;
            return Err(Dropped::ForeignCluster(cluster));
        }
        if hb.from == self.local {
            self.stats.own += 1;
            return Err(Dropped::Own);
        }
        let Some(peer) = self.peers.get_mut(&hb.from) else {
            self.stats.unknown_node += 1;
            return Err(Dropped::UnknownNode(hb.from));
        };
        if hb.incarnation < peer.incarnation {
            self.stats.stale_incarnation += 1;
            return Err(Dropped::StaleIncarnation);
        }
        if hb.incarnation > peer.incarnation {
            peer.incarnation = hb.incarnation;
            peer.highest = 0;
            peer.links = vec![Window::default(); self.links];
        }
        let Some(window) = peer.links.get_mut(link) else {
            self.stats.malformed += 1;
            return Err(Dropped::NoSuchLink(link));
        };
        if hb.seq.saturating_add(WINDOW) < peer.highest || !window.accept(hb.seq) {
            self.stats.replayed += 1;
            return Err(Dropped::Replayed);
        }
        peer.highest = peer.highest.max(hb.seq);
        self.stats.accepted += 1;
        Ok(hb)
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Not a valid authentic packet.
    Invalid(WireError),
    /// For another cluster id.
    ForeignCluster(ClusterId),
    /// This node's own.
    Own,
    /// From a node not configured.
    UnknownNode(NodeId),
    /// From an older incarnation.
    StaleIncarnation,
    /// Already seen, or too old.
    Replayed,
    /// The link index is out of range (a runtime bug).
    NoSuchLink(usize),
}

#[cfg(test)]
mod tests {
    use super::super::heartbeat::encode;
    use super::*;
    use crate::detector::Health;

    const CLUSTER: ClusterId = ClusterId(77);

    fn key() -> ClusterKey {
        ClusterKey::derive(b"k")
    }

    fn receiver() -> Receiver {
        Receiver::new(CLUSTER, key(), NodeId(1), [NodeId(1), NodeId(2)], 2)
    }

    fn packet(from: u16, incarnation: u64, seq: u64) -> [u8; 70] {
        let hb = Heartbeat {
            from: NodeId(from),
            incarnation: Incarnation(incarnation),
            seq,
            sent_at_us: 0,
            interval_ms: 50,
            view_epoch: 1,
            view_digest: 2,
            health: Health::default(),
            quorate: true,
            leaving: false,
            deadtime_ms: None,
        };
        encode(CLUSTER, &hb, &key())
    }

    #[test]
    fn replayed_heartbeat_is_dropped() {
        let mut r = receiver();
        assert!(r.accept(&packet(2, 5, 10), 0).is_ok());
        assert_eq!(r.accept(&packet(2, 5, 10), 0), Err(Dropped::Replayed));
        assert_eq!(r.stats().replayed, 1);
        assert_eq!(r.stats().accepted, 1);
    }

    #[test]
    fn same_heartbeat_is_accepted_once_per_link() {
        let mut r = receiver();
        assert!(r.accept(&packet(2, 5, 10), 0).is_ok());
        assert!(r.accept(&packet(2, 5, 10), 1).is_ok());
        assert!(r.accept(&packet(2, 5, 10), 1).is_err());
    }

    #[test]
    fn reordered_heartbeats_within_the_window_are_accepted_once() {
        let mut r = receiver();
        for seq in [10, 12, 11, 13] {
            assert!(r.accept(&packet(2, 5, seq), 0).is_ok(), "seq {seq}");
        }
        assert!(r.accept(&packet(2, 5, 11), 0).is_err());
    }

    #[test]
    fn old_heartbeat_moved_to_another_link_is_a_replay() {
        let mut r = receiver();
        assert!(r.accept(&packet(2, 5, 1), 0).is_ok());
        assert!(r.accept(&packet(2, 5, 500), 0).is_ok());
        // Link 1 never saw seq 1, but it is far behind the peer's newest.
        assert_eq!(r.accept(&packet(2, 5, 1), 1), Err(Dropped::Replayed));
    }

    #[test]
    fn stale_incarnation_is_dropped_and_a_newer_one_resets() {
        let mut r = receiver();
        assert!(r.accept(&packet(2, 5, 100), 0).is_ok());
        assert!(
            r.accept(&packet(2, 6, 1), 0).is_ok(),
            "restart: seq starts over"
        );
        assert_eq!(
            r.accept(&packet(2, 5, 101), 0),
            Err(Dropped::StaleIncarnation)
        );
        assert_eq!(r.stats().stale_incarnation, 1);
    }

    #[test]
    fn unknown_own_and_foreign_packets_are_counted_apart() {
        let mut r = receiver();
        assert_eq!(
            r.accept(&packet(9, 1, 1), 0),
            Err(Dropped::UnknownNode(NodeId(9)))
        );
        assert_eq!(r.accept(&packet(1, 1, 1), 0), Err(Dropped::Own));
        let mut other = Receiver::new(ClusterId(5), key(), NodeId(1), [NodeId(2)], 1);
        assert_eq!(
            other.accept(&packet(2, 1, 1), 0),
            Err(Dropped::ForeignCluster(CLUSTER))
        );
        let mut forged = packet(2, 1, 1);
        forged[30] ^= 1;
        assert!(matches!(
            r.accept(&forged, 0),
            Err(Dropped::Invalid(WireError::Authentication))
        ));
        let stats = r.stats();
        assert_eq!(
            (stats.unknown_node, stats.own, stats.bad_authentication),
            (1, 1, 1)
        );
        assert_eq!(other.stats().foreign_cluster, 1);
        assert_eq!(stats.dropped(), 2);
    }
}
