//! Membership scenarios on simulated time and network: the real cores,
//! routed by `perfplus::membership::sim`. Times asserted here are virtual,
//! so they are exact and reproducible.

use perfplus::detector::{DetectorConfig, Health};
use perfplus::membership::sim::{Cluster, Loss, NetworkModel};
use perfplus::membership::{Event, Fencing, Incarnation, MemberState, NodeId, QuorumReason};

const SECOND: u64 = 1_000_000;
const MS: u64 = 1_000;
/// Long enough for the detectors to learn their links.
const WARM_UP: u64 = 120 * SECOND;

fn id(index: usize) -> NodeId {
    NodeId(u16::try_from(index + 1).expect("small index"))
}

fn cluster(n: usize, network: NetworkModel, seed: u64) -> Cluster {
    Cluster::uniform(n, network, seed, |c| c.fencing = Fencing::Disabled)
}

/// When node `observer` convicted node `target`, if it did.
fn conviction(c: &Cluster, observer: usize, target: usize) -> Option<u64> {
    c.events(observer).iter().find_map(|(t, e)| match e {
        Event::MemberDead { node, .. } if *node == id(target) => Some(*t),
        _ => None,
    })
}

fn convictions(c: &Cluster) -> Vec<(usize, NodeId, u64)> {
    let mut all = Vec::new();
    for observer in 0..c.len() {
        for (t, e) in c.events(observer) {
            if let Event::MemberDead { node, .. } = e {
                all.push((observer, *node, *t));
            }
        }
    }
    all
}

fn state_of(c: &Cluster, observer: usize, target: usize) -> MemberState {
    c.core(observer)
        .expect("observer running")
        .members()
        .into_iter()
        .find(|m| m.id == id(target))
        .expect("configured member")
        .state
}

#[test]
fn crashed_node_is_convicted_by_every_peer_within_400_ms() {
    let mut c = cluster(5, NetworkModel::default(), 1);
    c.run_until(WARM_UP);
    assert!(convictions(&c).is_empty(), "{:?}", convictions(&c));
    let crash = c.now_us();
    c.crash(3);
    c.run_for(2 * SECOND);
    for observer in [0, 1, 2, 4] {
        let at = conviction(&c, observer, 3).expect("convicted");
        let took = at - crash;
        assert!(took <= 400 * MS, "observer {observer}: {took} µs");
        assert_eq!(state_of(&c, observer, 3), MemberState::Dead);
    }
}

#[test]
fn five_percent_loss_convicts_nobody_yet_a_crash_is_still_found() {
    let network = NetworkModel {
        loss: Loss::Independent(0.05),
        jitter_us: 5 * MS,
        delay_us: 10 * MS,
        ..NetworkModel::default()
    };
    let mut c = cluster(4, network, 2);
    c.record_events(true);
    c.run_until(WARM_UP + 600 * SECOND);
    assert!(convictions(&c).is_empty(), "{:?}", convictions(&c));
    let crash = c.now_us();
    c.crash(0);
    c.run_for(3 * SECOND);
    for observer in 1..4 {
        let took = conviction(&c, observer, 0).expect("convicted") - crash;
        assert!(took <= 800 * MS, "observer {observer}: {took} µs");
    }
}

#[test]
fn partition_leaves_only_the_majority_side_quorate() {
    let mut c = cluster(5, NetworkModel::default(), 3);
    c.run_until(WARM_UP);
    c.partition(&[0, 1]);
    c.run_for(2 * SECOND);
    for node in [0, 1] {
        let q = c.core(node).unwrap().quorum();
        assert!(!q.quorate, "minority node {node}: {q:?}");
        assert_eq!(q.reason, QuorumReason::Minority);
    }
    for node in [2, 3, 4] {
        assert!(
            c.core(node).unwrap().quorum().quorate,
            "majority node {node}"
        );
    }
    c.heal();
    c.run_for(2 * SECOND);
    for node in 0..5 {
        let core = c.core(node).unwrap();
        assert!(core.quorum().quorate);
        assert_eq!(core.view().1.len(), 5, "node {node} sees everyone again");
    }
    let rejoined = c
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, Event::MemberUp { node, rejoined: true, .. } if *node == id(4)));
    assert!(rejoined, "the heal is reported as a rejoin");
}

#[test]
fn even_split_is_won_by_exactly_one_side() {
    let mut c = cluster(4, NetworkModel::default(), 4);
    c.run_until(WARM_UP);
    c.partition(&[2, 3]);
    c.run_for(2 * SECOND);
    let quorate: Vec<bool> = (0..4)
        .map(|n| c.core(n).unwrap().quorum().quorate)
        .collect();
    assert_eq!(
        quorate,
        vec![true, true, false, false],
        "node 1's side holds the lowest id"
    );
    assert_eq!(
        c.core(2).unwrap().quorum().reason,
        QuorumReason::TieLostByNodeId
    );
}

#[test]
fn one_way_partition_convicts_only_on_the_deaf_side() {
    let mut c = cluster(3, NetworkModel::default(), 5);
    c.run_until(WARM_UP);
    c.cut_one_way(0, 1); // node 1 no longer hears node 0
    c.run_for(3 * SECOND);
    assert!(conviction(&c, 1, 0).is_some(), "node 2 convicts node 1");
    assert_eq!(
        state_of(&c, 0, 1),
        MemberState::Alive,
        "node 1 still hears node 2"
    );
    assert_eq!(state_of(&c, 2, 0), MemberState::Alive);
    assert_eq!(state_of(&c, 2, 1), MemberState::Alive);
    assert_eq!(convictions(&c).len(), 1, "{:?}", convictions(&c));
}

#[test]
fn node_paused_shorter_than_the_tolerance_is_not_convicted_longer_is() {
    let tolerant = |c: &mut perfplus::membership::MembershipConfig| {
        c.fencing = Fencing::Disabled;
        c.detector = DetectorConfig {
            pause_tolerance_us: 2 * SECOND,
            ..DetectorConfig::default()
        };
    };
    let mut c = Cluster::uniform(3, NetworkModel::default(), 6, tolerant);
    c.run_until(WARM_UP);
    c.pause(2, 1_800 * MS);
    c.run_for(4 * SECOND);
    assert!(
        convictions(&c).is_empty(),
        "1.8 s < 2 s: {:?}",
        convictions(&c)
    );
    let suspected = c
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, Event::MemberSuspected { .. }));
    assert!(suspected, "a 1.8 s silence is suspicious, not fatal");

    let start = c.now_us();
    c.pause(2, 3 * SECOND);
    c.run_for(5 * SECOND);
    let at = conviction(&c, 0, 2).expect("3 s > 2 s: convicted");
    // Silence counts from the last heartbeat, up to one interval before the stop.
    assert!(
        at - start >= 2 * SECOND - 50 * MS && at - start < 3 * SECOND,
        "{}",
        at - start
    );
    // It woke up and is a member again.
    assert_eq!(state_of(&c, 0, 2), MemberState::Alive);
}

#[test]
fn observer_paused_five_seconds_convicts_nobody() {
    let mut c = cluster(4, NetworkModel::default(), 7);
    c.run_until(WARM_UP);
    c.pause(0, 5 * SECOND);
    c.run_for(8 * SECOND);
    let by_observer: Vec<_> = convictions(&c)
        .into_iter()
        .filter(|(o, _, _)| *o == 0)
        .collect();
    assert!(by_observer.is_empty(), "{by_observer:?}");
    let noticed = c
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, Event::LocalPause { duration_us } if *duration_us >= 4 * SECOND));
    assert!(noticed, "the observer reports its own pause");
    // The others rightly convicted the paused node (5 s is far beyond the
    // default tolerance), and it rejoined when it woke up.
    assert!(conviction(&c, 1, 0).is_some());
    assert_eq!(state_of(&c, 1, 0), MemberState::Alive);
}

#[test]
fn restarted_node_is_seen_with_its_new_incarnation() {
    let mut c = cluster(3, NetworkModel::default(), 8);
    c.run_until(WARM_UP);
    let before = c.core(1).unwrap().incarnation();
    c.crash(1);
    c.run_for(SECOND);
    c.start(1);
    c.run_for(SECOND);
    let after = c.core(1).unwrap().incarnation();
    assert!(after > before);
    let restarted = c.events(0).iter().any(|(_, e)| {
        matches!(e, Event::MemberRestarted { node, previous, incarnation }
            if *node == id(1) && *previous == before && *incarnation == after)
    });
    assert!(restarted);
    assert_eq!(state_of(&c, 0, 1), MemberState::Alive);
}

#[test]
fn heartbeat_from_an_older_incarnation_is_dropped() {
    let mut c = cluster(2, NetworkModel::default(), 9);
    c.run_until(10 * SECOND);
    c.crash(1);
    c.start(1);
    c.run_for(SECOND);
    let mut stale = perfplus::membership::Heartbeat {
        from: id(1),
        incarnation: Incarnation(1),
        seq: 1_000_000,
        sent_at_us: 0,
        interval_ms: 50,
        view_epoch: 1,
        view_digest: 0,
        health: Health::default(),
        quorate: true,
        leaving: true,
        deadtime_ms: None,
    };
    c.inject(0, 0, stale);
    assert_eq!(c.core(0).unwrap().stats().stale_incarnation, 1);
    assert_eq!(
        state_of(&c, 0, 1),
        MemberState::Alive,
        "a stale leave is ignored"
    );
    stale.from = NodeId(99);
    c.inject(0, 0, stale);
    assert_eq!(c.core(0).unwrap().stats().unknown_node, 1);
}

#[test]
fn replayed_heartbeat_does_not_keep_a_dead_node_alive() {
    let mut c = cluster(3, NetworkModel::default(), 10);
    c.run_until(WARM_UP);
    let incarnation = c.core(2).unwrap().incarnation();
    c.crash(2);
    let crash = c.now_us();
    // An attacker replays one of node 3's recent heartbeats every 40 ms.
    let old = perfplus::membership::Heartbeat {
        from: id(2),
        incarnation,
        seq: 10,
        sent_at_us: 0,
        interval_ms: 50,
        view_epoch: 1,
        view_digest: 0,
        health: Health::default(),
        quorate: true,
        leaving: false,
        deadtime_ms: None,
    };
    while c.now_us() < crash + 2 * SECOND {
        c.inject(0, 0, old);
        c.run_for(40 * MS);
    }
    assert!(
        conviction(&c, 0, 2).is_some(),
        "replays are not evidence of life"
    );
}

#[test]
fn fencing_must_confirm_before_recovery() {
    let mut c = Cluster::uniform(3, NetworkModel::default(), 11, |_| {});
    c.run_until(WARM_UP);
    let victim = c.core(2).unwrap().incarnation();
    c.crash(2);
    c.run_for(2 * SECOND);
    let has = |c: &Cluster, f: &dyn Fn(&Event) -> bool| c.events(0).iter().any(|(_, e)| f(e));
    assert!(has(
        &c,
        &|e| matches!(e, Event::FenceRequested { node, incarnation }
        if *node == id(2) && *incarnation == victim)
    ));
    assert!(
        !has(&c, &|e| matches!(e, Event::RecoveryAllowed { .. })),
        "not before fencing"
    );
    c.fence_result(0, id(2), victim, false);
    assert!(has(&c, &|e| matches!(e, Event::FenceFailed { .. })));
    c.run_for(3 * SECOND);
    let requests = c
        .events(0)
        .iter()
        .filter(|(_, e)| matches!(e, Event::FenceRequested { .. }))
        .count();
    assert_eq!(requests, 2, "a failed fence is retried");
    c.fence_result(0, id(2), victim, true);
    assert!(has(
        &c,
        &|e| matches!(e, Event::RecoveryAllowed { node, incarnation }
        if *node == id(2) && *incarnation == victim)
    ));
}

#[test]
fn two_node_split_goes_to_the_node_that_reaches_its_ping_nodes() {
    let full = Health {
        reachable: 1,
        configured: 1,
    };
    let none = Health {
        reachable: 0,
        configured: 1,
    };
    let mut c = Cluster::uniform(2, NetworkModel::default(), 12, |_| {});
    c.set_health(0, full);
    c.set_health(1, full);
    c.run_until(WARM_UP);
    // Node 1 (the lowest id) loses its uplink; node 2 learns it from the
    // heartbeats; then the link between them goes too.
    c.set_health(0, none);
    c.run_for(SECOND);
    c.partition(&[0]);
    c.run_for(2 * SECOND);
    let one = c.core(0).unwrap().quorum();
    let two = c.core(1).unwrap().quorum();
    assert_eq!(one.reason, QuorumReason::TieLostNoUplink);
    assert!(!one.quorate);
    assert_eq!(two.reason, QuorumReason::TieWonByPing);
    assert!(two.quorate);
}

#[test]
fn two_node_split_with_equal_health_is_won_by_fencing_not_by_both() {
    let full = Health {
        reachable: 1,
        configured: 1,
    };
    let mut c = Cluster::uniform(2, NetworkModel::default(), 13, |_| {});
    c.set_health(0, full);
    c.set_health(1, full);
    c.run_until(WARM_UP);
    c.partition(&[0]);
    c.run_for(2 * SECOND);
    assert!(c.core(0).unwrap().quorum().quorate);
    assert!(!c.core(1).unwrap().quorum().quorate);
    let incarnation = c.core(1).unwrap().incarnation();
    // The winner fences the loser at once.
    let fence = c
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, Event::FenceRequested { node, .. } if *node == id(1)));
    assert!(fence);
    // The loser waits the tie delay before it even tries.
    let early = c
        .events(1)
        .iter()
        .any(|(_, e)| matches!(e, Event::FenceRequested { .. }));
    assert!(!early);
    c.fence_result(0, id(1), incarnation, true);
    c.crash(1);
    let recovered = c
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, Event::RecoveryAllowed { .. }));
    assert!(recovered);
}

#[test]
fn clean_leave_needs_no_fencing() {
    let mut c = Cluster::uniform(3, NetworkModel::default(), 14, |_| {});
    c.run_until(10 * SECOND);
    c.leave(2);
    c.run_for(SECOND);
    let events: Vec<_> = c.events(0).iter().map(|(_, e)| e.clone()).collect();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::MemberLeft { node, .. } if *node == id(2))));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::RecoveryAllowed { node, .. } if *node == id(2))));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::FenceRequested { .. })));
    assert!(!events.iter().any(|e| matches!(e, Event::MemberDead { .. })));
}

#[test]
fn node_never_seen_within_the_initial_wait_is_declared_dead() {
    let mut c = cluster(3, NetworkModel::default(), 15);
    c.crash(2);
    c.run_until(11 * SECOND);
    let dead = c.events(0).iter().any(|(_, e)| {
        matches!(e, Event::MemberDead { node, incarnation } if *node == id(2) && incarnation.0 == 0)
    });
    assert!(dead);
}

#[test]
fn second_link_keeps_a_peer_alive_and_reports_the_dead_link() {
    let mut c = Cluster::uniform(2, NetworkModel::default(), 16, |c| {
        c.fencing = Fencing::Disabled;
        c.link_count = 2;
    });
    c.run_until(WARM_UP);
    c.cut_link(1);
    c.run_for(5 * SECOND);
    assert!(convictions(&c).is_empty(), "{:?}", convictions(&c));
    let down = c
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, Event::LinkDown { node, link: 1 } if *node == id(1)));
    assert!(down, "link 1 is reported down");
    assert_eq!(c.core(0).unwrap().members()[1].links_down, vec![1]);
    c.heal();
    c.run_for(SECOND);
    assert!(c
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, Event::LinkUp { link: 1, .. })));
    // Heavy loss on both links: the two paths together still carry enough.
    c.set_network(NetworkModel {
        loss: Loss::Independent(0.3),
        ..NetworkModel::default()
    });
    c.run_for(120 * SECOND);
    assert!(convictions(&c).is_empty(), "{:?}", convictions(&c));
}
