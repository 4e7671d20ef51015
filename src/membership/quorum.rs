//! Quorum by configured votes, and the tie-break of even splits.
//!
//! A partition is quorate with more than half of the configured votes
//! (votequorum's `expected_votes/2 + 1`). With exactly half (a two-node
//! cluster split in two, or 2|2 of four), each side decides alone, from
//! what both sides knew when the tie began:
//!
//! 1. a side that reaches none of its ping nodes loses;
//! 2. otherwise better ping health wins (own health against the last health
//!    the missing nodes advertised);
//! 3. at equal health, the side holding the lowest configured node id wins;
//! 4. a losing side that has fenced every missing node wins after all.
//!
//! Rules 2 and 3 apply only once the whole cluster has been seen since
//! this node started (votequorum's `wait_for_all`): a node starting alone
//! cannot know that its peer is not already running its services.

use crate::detector::Health;

use super::types::{NodeId, Quorum, QuorumReason};

/// One configured node, as the quorum rule sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Voter {
    pub(crate) id: NodeId,
    pub(crate) votes: u32,
    pub(crate) present: bool,
    /// Last advertised health (for missing nodes), or own health.
    pub(crate) health: Option<Health>,
    pub(crate) fenced: bool,
}

/// What the tie-break knows besides the voters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TieContext {
    /// This node's own health now.
    pub(crate) own_health: Health,
    /// This node's own health when the tie began (what the others last saw).
    pub(crate) own_health_at_tie: Health,
    /// The whole cluster has been seen since start.
    pub(crate) seen_full_cluster: bool,
}

/// Decide quorum.
pub(crate) fn decide(voters: &[Voter], tie: TieContext) -> Quorum {
    let expected_votes: u32 = voters.iter().map(|v| v.votes).sum();
    let votes: u32 = voters.iter().filter(|v| v.present).map(|v| v.votes).sum();
    let quorum = |quorate, reason| Quorum {
        quorate,
        votes,
        expected_votes,
        reason,
    };
    let twice = u64::from(votes) * 2;
    if twice > u64::from(expected_votes) {
        return quorum(true, QuorumReason::Majority);
    }
    if twice < u64::from(expected_votes) || expected_votes == 0 {
        return quorum(false, QuorumReason::Minority);
    }
    if !tie.own_health.has_uplink() {
        return quorum(false, QuorumReason::TieLostNoUplink);
    }
    let missing = || voters.iter().filter(|v| !v.present);
    if missing().all(|v| v.fenced) {
        return quorum(true, QuorumReason::TieWonByFencing);
    }
    if !tie.seen_full_cluster {
        return quorum(false, QuorumReason::TieBeforeFullCluster);
    }
    let own = tie.own_health_at_tie;
    let others: Vec<Health> = missing().filter_map(|v| v.health).collect();
    if others.iter().any(|h| h.better_than(&own)) {
        return quorum(false, QuorumReason::TieLostByPing);
    }
    if !others.is_empty() && others.iter().all(|h| own.better_than(h)) {
        return quorum(true, QuorumReason::TieWonByPing);
    }
    let lowest = voters.iter().filter(|v| v.votes > 0).map(|v| v.id).min();
    let holds_lowest = voters.iter().any(|v| v.present && Some(v.id) == lowest);
    if holds_lowest {
        quorum(true, QuorumReason::TieWonByNodeId)
    } else {
        quorum(false, QuorumReason::TieLostByNodeId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(reachable: u8) -> Health {
        Health {
            reachable,
            configured: 2,
        }
    }

    fn voter(id: u16, present: bool, reachable: u8) -> Voter {
        Voter {
            id: NodeId(id),
            votes: 1,
            present,
            health: Some(health(reachable)),
            fenced: false,
        }
    }

    fn ctx(own: u8) -> TieContext {
        TieContext {
            own_health: health(own),
            own_health_at_tie: health(own),
            seen_full_cluster: true,
        }
    }

    #[test]
    fn majority_of_votes_is_quorate() {
        let q = decide(
            &[voter(1, true, 2), voter(2, true, 2), voter(3, false, 2)],
            ctx(2),
        );
        assert!(q.quorate);
        assert_eq!((q.votes, q.expected_votes), (2, 3));
        let q = decide(
            &[voter(1, true, 2), voter(2, false, 2), voter(3, false, 2)],
            ctx(2),
        );
        assert_eq!(q.reason, QuorumReason::Minority);
    }

    #[test]
    fn weighted_votes_count() {
        let mut heavy = voter(3, true, 2);
        heavy.votes = 3;
        let q = decide(&[voter(1, false, 2), voter(2, false, 2), heavy], ctx(2));
        assert!(q.quorate, "3 of 5 votes");
    }

    #[test]
    fn two_node_tie_goes_to_the_side_that_reaches_its_ping_nodes() {
        // Node 2 (not the lowest id) sees node 1 advertise worse health.
        let q = decide(&[voter(1, false, 0), voter(2, true, 2)], ctx(2));
        assert_eq!(q.reason, QuorumReason::TieWonByPing);
        // Node 1 has no uplink at all.
        let q = decide(&[voter(1, true, 0), voter(2, false, 2)], ctx(0));
        assert_eq!(q.reason, QuorumReason::TieLostNoUplink);
        // Node 1 has an uplink but worse than node 2's.
        let q = decide(&[voter(1, true, 1), voter(2, false, 2)], ctx(1));
        assert_eq!(q.reason, QuorumReason::TieLostByPing);
    }

    #[test]
    fn equal_health_tie_goes_to_the_lowest_node_id_exactly_once() {
        let one = decide(&[voter(1, true, 2), voter(2, false, 2)], ctx(2));
        let two = decide(&[voter(1, false, 2), voter(2, true, 2)], ctx(2));
        assert_eq!(one.reason, QuorumReason::TieWonByNodeId);
        assert_eq!(two.reason, QuorumReason::TieLostByNodeId);
    }

    #[test]
    fn fencing_the_other_side_wins_the_tie() {
        let mut gone = voter(1, false, 2);
        gone.fenced = true;
        let q = decide(&[gone, voter(2, true, 2)], ctx(2));
        assert_eq!(q.reason, QuorumReason::TieWonByFencing);
    }

    #[test]
    fn a_starting_node_does_not_break_a_tie_alone() {
        let mut c = ctx(2);
        c.seen_full_cluster = false;
        let q = decide(&[voter(1, true, 2), voter(2, false, 2)], c);
        assert_eq!(q.reason, QuorumReason::TieBeforeFullCluster);
    }

    #[test]
    fn either_side_of_any_split_is_quorate_at_most_once() {
        // All 2^4 presence patterns of a 4-node cluster, all health mixes:
        // the two complementary sides are never both quorate.
        for mask in 0u8..16 {
            for healths in 0u16..81 {
                let h = |i: u8| (healths / 3u16.pow(u32::from(i)) % 3) as u8;
                let side = |present_if: bool| -> Vec<Voter> {
                    (0..4u8)
                        .map(|i| voter(u16::from(i) + 1, (mask >> i & 1 == 1) == present_if, h(i)))
                        .collect()
                };
                let own = |present_if: bool| {
                    (0..4u8)
                        .filter(|i| (mask >> i & 1 == 1) == present_if)
                        .map(h)
                        .max()
                        .unwrap_or(0)
                };
                let a = decide(&side(true), ctx(own(true)));
                let b = decide(&side(false), ctx(own(false)));
                assert!(
                    !(a.quorate && b.quorate),
                    "mask {mask:04b} healths {healths}: {a:?} / {b:?}"
                );
            }
        }
    }
}
