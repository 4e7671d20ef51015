//! Real `hanode` processes in network namespaces (`ppmem-*`, 10.201.0.0/16),
//! real UDP, real clocks, random loss (nftables: this kernel has no
//! `sch_netem`), SIGKILL and SIGSTOP. Needs root, iproute2 and nftables;
//! skips loudly otherwise (and fails under CI=true).
//!
//! Assertions are on outcomes (who convicted whom, who is quorate), never
//! on how long things took.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::ppmem_netns::{self, unavailable, Lab};

const WAIT: Duration = Duration::from_secs(15);

fn hanode() -> PathBuf {
    // `cargo test` builds the examples next to the test binaries.
    support::profile_dir().join("examples/hanode")
}

/// A lab, or None (skipped loudly).
fn lab(test: &str, tag: &str, subnet: u8, nodes: usize) -> Option<Lab> {
    if let Some(why) = unavailable() {
        support::skip(test, &why);
        return None;
    }
    let binary = hanode();
    assert!(
        binary.exists(),
        "{} is missing: cargo test builds it",
        binary.display()
    );
    let dir = support::scratch_dir(&format!("ppmem-{tag}"));
    Some(Lab::new(tag, subnet, nodes, &binary, &dir).expect("set up the namespaces"))
}

/// Start every node and wait until each sees all the others.
fn start_all(lab: &mut Lab, nodes: usize, top: &str, sections: &str) {
    for i in 1..=nodes {
        lab.write_config(i, top, sections).expect("config");
        lab.start(i).expect("start");
    }
    for i in 1..=nodes {
        for j in (1..=nodes).filter(|j| *j != i) {
            let up = format!("node={j}");
            assert!(
                lab.wait_line(i, 0, &["MEMBER_UP", &up], WAIT).is_some(),
                "node {i} never saw node {j}: {:#?}",
                lab.lines(i)
            );
        }
    }
}

fn convictions_of(lab: &Lab, observer: usize, target: usize, skip: usize) -> usize {
    let node = format!("node={target}");
    lab.lines(observer)
        .iter()
        .skip(skip)
        .filter(|l| l.contains("MEMBER_DEAD") && l.split_whitespace().any(|w| w == node))
        .count()
}

fn last_quorum(lab: &Lab, node: usize) -> String {
    lab.lines(node)
        .into_iter()
        .rev()
        .find(|l| l.contains("QUORUM"))
        .unwrap_or_default()
}

#[test]
fn kill_9_is_detected_by_both_peers_and_the_survivors_keep_quorum() {
    let Some(mut lab) = lab("kill_9_is_detected", "k", 11, 3) else {
        return;
    };
    start_all(&mut lab, 3, "", "");
    lab.kill(3);
    for observer in [1, 2] {
        assert!(
            lab.wait_line(observer, 0, &["MEMBER_DEAD", "node=3"], WAIT)
                .is_some(),
            "node {observer} did not convict the killed node: {:#?}",
            lab.lines(observer)
        );
        assert!(last_quorum(&lab, observer).contains("quorate=true"));
    }
    assert_eq!(
        convictions_of(&lab, 1, 2, 0) + convictions_of(&lab, 2, 1, 0),
        0
    );
}

#[test]
fn five_percent_loss_convicts_nobody() {
    let Some(mut lab) = lab("five_percent_loss", "l", 12, 3) else {
        return;
    };
    start_all(&mut lab, 3, "", "");
    std::thread::sleep(Duration::from_secs(10));
    for i in 1..=3 {
        lab.loss(i, 50).expect("5 % loss");
    }
    std::thread::sleep(Duration::from_secs(30));
    for observer in 1..=3 {
        for target in (1..=3).filter(|t| *t != observer) {
            assert_eq!(
                convictions_of(&lab, observer, target, 0),
                0,
                "node {observer} convicted node {target} under 5 % loss: {:#?}",
                lab.lines(observer)
            );
        }
    }
    // The loss was real: every node saw gaps, and heartbeats still flowed.
    let stats = lab
        .lines(1)
        .into_iter()
        .rev()
        .find(|l| l.contains("STATS"))
        .unwrap_or_default();
    let accepted: u64 = ppmem_netns::field(&stats, "accepted")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(accepted > 1_000, "{stats}");
}

#[test]
fn partition_leaves_only_the_majority_side_quorate() {
    let Some(mut lab) = lab("partition_majority", "p", 13, 3) else {
        return;
    };
    start_all(&mut lab, 3, "", "");
    let marks: Vec<usize> = (1..=3).map(|i| lab.lines(i).len()).collect();
    lab.link(3, false).expect("cut node 3 off");
    assert!(
        lab.wait_line(
            3,
            marks[2],
            &["QUORUM", "quorate=false", "reason=Minority"],
            WAIT
        )
        .is_some(),
        "the cut-off node keeps quorum: {:#?}",
        lab.lines(3)
    );
    for observer in [1, 2] {
        assert!(lab
            .wait_line(
                observer,
                marks[observer - 1],
                &["MEMBER_DEAD", "node=3"],
                WAIT
            )
            .is_some());
        assert!(
            last_quorum(&lab, observer).contains("quorate=true"),
            "node {observer}: {}",
            last_quorum(&lab, observer)
        );
    }
    lab.link(3, true).expect("heal");
    assert!(lab
        .wait_line(3, marks[2], &["QUORUM", "quorate=true"], WAIT)
        .is_some());
}

#[test]
fn two_node_split_goes_to_the_node_that_reaches_its_ping_node() {
    let Some(mut lab) = lab("two_node_ping_split", "s", 14, 2) else {
        return;
    };
    let ping = format!(
        "[ping]\nnodes = [\"{}\"]\ninterval_ms = 100\ndead_ms = 600\n",
        lab.router_address()
    );
    start_all(&mut lab, 2, "", &ping);
    for i in 1..=2 {
        for j in 1..=2 {
            let node = format!("node={j}");
            assert!(
                lab.wait_line(i, 0, &["HEALTH", &node, "ping_reachable=1"], WAIT)
                    .is_some(),
                "node {i} never saw node {j} reach the ping node: {:#?}",
                lab.lines(i)
            );
        }
    }
    // Node 1 (the lowest id, which would win a tie of equals) loses its
    // uplink; node 2 hears about it in node 1's heartbeats; then the link
    // between them fails as well.
    lab.lose_uplink(1, true).expect("blackhole the router");
    assert!(lab
        .wait_line(2, 0, &["HEALTH", "node=1", "ping_reachable=0"], WAIT)
        .is_some());
    let marks = [lab.lines(1).len(), lab.lines(2).len()];
    lab.link(1, false).expect("cut the link");
    assert!(
        lab.wait_line(
            2,
            marks[1],
            &["QUORUM", "quorate=true", "reason=TieWonByPing"],
            WAIT
        )
        .is_some(),
        "node 2: {:#?}",
        lab.lines(2)
    );
    assert!(
        lab.wait_line(
            1,
            marks[0],
            &["QUORUM", "quorate=false", "reason=TieLostNoUplink"],
            WAIT
        )
        .is_some(),
        "node 1: {:#?}",
        lab.lines(1)
    );
}

#[test]
fn sigstop_below_the_pause_tolerance_is_ridden_out_above_it_convicted_and_a_stopped_observer_accuses_nobody(
) {
    let Some(mut lab) = lab("sigstop_pauses", "z", 15, 3) else {
        return;
    };
    start_all(&mut lab, 3, "", "[detector]\npause_tolerance_ms = 2000\n");
    // Node 3 stopped for 1.2 s < 2 s: suspected perhaps, never convicted.
    lab.signal(3, "STOP").expect("stop");
    std::thread::sleep(Duration::from_millis(1_200));
    lab.signal(3, "CONT").expect("cont");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        convictions_of(&lab, 1, 3, 0) + convictions_of(&lab, 2, 3, 0),
        0
    );

    // Node 3 stopped for 4 s > 2 s: convicted by both, back when it resumes.
    let marks = [lab.lines(1).len(), lab.lines(2).len()];
    lab.signal(3, "STOP").expect("stop");
    std::thread::sleep(Duration::from_secs(4));
    lab.signal(3, "CONT").expect("cont");
    for observer in [1, 2] {
        assert!(lab
            .wait_line(
                observer,
                marks[observer - 1],
                &["MEMBER_DEAD", "node=3"],
                WAIT
            )
            .is_some());
        assert!(lab
            .wait_line(
                observer,
                marks[observer - 1],
                &["MEMBER_UP", "node=3", "rejoined=true"],
                WAIT
            )
            .is_some());
    }

    // Node 1, an observer, stopped 5 s: it notices and convicts nobody.
    std::thread::sleep(Duration::from_secs(1));
    let mark = lab.lines(1).len();
    lab.signal(1, "STOP").expect("stop");
    std::thread::sleep(Duration::from_secs(5));
    lab.signal(1, "CONT").expect("cont");
    assert!(
        lab.wait_line(1, mark, &["LOCAL_PAUSE"], WAIT).is_some(),
        "{:#?}",
        lab.lines(1)
    );
    std::thread::sleep(Duration::from_secs(3));
    let accused: Vec<String> = lab
        .lines(1)
        .into_iter()
        .skip(mark)
        .filter(|l| l.contains("MEMBER_DEAD"))
        .collect();
    assert!(
        accused.is_empty(),
        "the paused observer accused: {accused:#?}"
    );
}

#[test]
fn multicast_and_broadcast_links_each_carry_heartbeats_and_one_dying_is_a_link_down() {
    let Some(mut lab) = lab("multicast_broadcast", "m", 16, 3) else {
        return;
    };
    let links = "[[links]]\nkind = \"multicast\"\ngroup = \"239.255.201.1\"\ninterface = \"{if}\"\nport = 7695\n\n\
                 [[links]]\nkind = \"broadcast\"\ninterface = \"{if}\"\nport = 7696\n";
    for i in 1..=3 {
        lab.write_config_with_links(i, "", links, "")
            .expect("config");
        lab.start(i).expect("start");
    }
    for i in 1..=3 {
        for j in (1..=3).filter(|j| *j != i) {
            let node = format!("node={j}");
            assert!(
                lab.wait_line(i, 0, &["MEMBER_UP", &node], WAIT).is_some(),
                "node {i} never saw node {j}: {:#?}",
                lab.lines(i)
            );
        }
    }
    // Drop the multicast link alone (nftables on the group): the peers stay
    // alive on broadcast and report link 0 down.
    let mark = lab.lines(1).len();
    for i in 2..=3 {
        let ns = lab.ns(i);
        ppmem_netns::sh(&[
            "ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "ppmem",
        ])
        .expect("nft");
        ppmem_netns::sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add chain inet ppmem out { type filter hook output priority 0 ; }",
        ])
        .expect("nft");
        ppmem_netns::sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add rule inet ppmem out ip daddr 239.255.201.1 drop",
        ])
        .expect("nft");
    }
    for j in [2, 3] {
        let node = format!("node={j}");
        assert!(
            lab.wait_line(1, mark, &["LINK_DOWN", &node, "link=0"], WAIT)
                .is_some(),
            "{:#?}",
            lab.lines(1)
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        convictions_of(&lab, 1, 2, 0) + convictions_of(&lab, 1, 3, 0),
        0
    );
    // A kill is still found.
    lab.kill(3);
    assert!(lab
        .wait_line(1, mark, &["MEMBER_DEAD", "node=3"], WAIT)
        .is_some());
}
