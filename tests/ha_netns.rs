//! HA in network namespaces, for real: three hosts (`ppha-h1..3`), each
//! running one `perfplus node` process, joined through a switch namespace
//! (`ppha-sw`) by two links: the cluster link (10.204.1.0/24, a bridge:
//! heartbeats, control, migrations) and the uplink (10.205.1.0/24, another
//! bridge, where the outside answers pings at 10.205.1.254). Guests are
//! `ocf:heartbeat:Dummy` resources, each host with its own `HA_RSCTMP`, so
//! a guest runs on a host exactly when its state file is in that host's
//! directory. The fence command is a power switch: it SIGKILLs every
//! process in the host's namespace and wipes its `HA_RSCTMP` (its RAM),
//! then reports success.
//!
//! One cluster lives through four scenarios in turn:
//! 1. host 1's switch port on the uplink goes down → its guests are
//!    live-migrated to the healthiest host with room (host 2 is full);
//! 2. host 2's node is SIGKILLed → declared dead, fenced, and its guests
//!    restart on the host with the most room;
//! 3. hosts 1 and 3 are cut apart on the cluster link: each side holds one
//!    vote of three, has no quorum, and does nothing (no fencing, no move);
//!    the link heals and they rejoin;
//! 4. `perfplus standby h3 on` evacuates host 3 by live migration.
//!
//! Placements are asserted through `perfplus status --json` and the Dummy
//! state files, never on how long anything took. Needs root; skips loudly
//! otherwise (and fails under CI=true).

mod support;

#[path = "support/ppha.rs"]
#[allow(dead_code)]
mod ppha;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ppha::{dummy_states, placements, wait_for, PerfplusNode};
use support::netns::{sh, Netns};

/// Upper bound for anything the cluster does on its own (it takes a few
/// seconds; the bound only keeps a broken build from hanging CI).
const WAIT: Duration = Duration::from_secs(40);

const HOSTS: usize = 3;

/// Guests: (name, home host, MiB). Host 2 is exactly full, so host 1's
/// guests can only go to host 3.
const GUESTS: [(&str, usize, u64); 5] = [
    ("a1", 1, 256),
    ("a2", 1, 256),
    ("b1", 2, 256),
    ("b2", 2, 256),
    ("c1", 3, 256),
];

/// Host capacities, MiB.
const CAPACITY: [u64; HOSTS] = [2048, 512, 1024];

struct Lab {
    dir: PathBuf,
    nodes: Vec<PerfplusNode>,
    // Dropped last: kills whatever is left in the namespaces, deletes them.
    _hosts: Vec<Netns>,
    _switch: Netns,
}

impl Lab {
    fn ns(i: usize) -> String {
        format!("ppha-h{i}")
    }

    fn rsctmp(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{i}/rsctmp"))
    }

    /// Guests whose Dummy state file is on host `i`.
    fn guests_on(&self, i: usize) -> Vec<String> {
        dummy_states(&self.rsctmp(i))
    }

    fn node(&self, i: usize) -> &PerfplusNode {
        &self.nodes[i - 1]
    }

    fn logs(&self) -> String {
        let mut all: Vec<String> = self.nodes.iter().map(PerfplusNode::log).collect();
        all.push(format!(
            "--- fence log ---\n{}",
            std::fs::read_to_string(self.dir.join("fenced.log")).unwrap_or_default()
        ));
        for i in 1..=HOSTS {
            all.push(format!("state files on h{i}: {:?}", self.guests_on(i)));
        }
        all.join("\n")
    }

    /// Wait until node `observer` reports every guest running, confirmed,
    /// where `want` says (guest → host id); the logs if it never does.
    fn wait_placements(&self, observer: usize, want: &[(&str, u16)]) {
        let mut want: Vec<(String, Option<u16>)> = want
            .iter()
            .map(|(g, h)| (g.to_string(), Some(*h)))
            .collect();
        want.sort();
        let mut last = None;
        let reached = wait_for(WAIT, || {
            let mut seen = placements(&self.node(observer).status()?);
            seen.sort();
            let done = seen == want;
            last = Some(seen);
            done.then_some(())
        });
        assert!(
            reached.is_some(),
            "node {observer} never saw {want:?}; last: {last:?}\n{}",
            self.logs()
        );
    }

    /// The state files say the same as `want`: each guest on exactly its host.
    fn assert_state_files(&self, want: &[(&str, u16)]) {
        for i in 1..=HOSTS {
            let mut expected: Vec<String> = want
                .iter()
                .filter(|(_, h)| usize::from(*h) == i)
                .map(|(g, _)| g.to_string())
                .collect();
            expected.sort();
            assert_eq!(
                self.guests_on(i),
                expected,
                "Dummy state files on h{i}\n{}",
                self.logs()
            );
        }
    }

    fn fence_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("fenced.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Host `i`'s port on the switch for the cluster link (`c`) or the uplink (`u`).
fn port(link: char, i: usize) -> String {
    format!("phs{link}{i}")
}

fn switch_port(link: char, i: usize, up: bool) {
    sh(
        "ip",
        &[
            "-n",
            "ppha-sw",
            "link",
            "set",
            &port(link, i),
            if up { "up" } else { "down" },
        ],
    );
}

/// Plug host `host` into bridge `bridge` of the switch: `inner` in the host
/// with `addr`, `outer` on the bridge.
fn plug(switch: &Netns, bridge: &str, host: &Netns, inner: &str, outer: &str, addr: &str) {
    sh(
        "ip",
        &[
            "link",
            "add",
            inner,
            "netns",
            &host.name,
            "type",
            "veth",
            "peer",
            "name",
            outer,
            "netns",
            &switch.name,
        ],
    );
    host.ip(&["addr", "add", addr, "dev", inner]);
    host.ip(&["link", "set", inner, "up"]);
    switch.ip(&["link", "set", outer, "master", bridge]);
    switch.ip(&["link", "set", outer, "up"]);
}

fn write_config(dir: &Path, i: usize) -> PathBuf {
    let peers: Vec<String> = (1..=HOSTS)
        .filter(|n| *n != i)
        .map(|n| format!("\"10.204.1.{n}\""))
        .collect();
    let mut text = format!(
        r#"cluster = "ppha"
node = "h{i}"
key = "7070686174657374706570706861ab01"
initial_wait_ms = 4000

[ping]
nodes = ["10.205.1.254"]
interval_ms = 200
dead_ms = 1000

[fencing]
required = true
command = ["{fence}"]

[orchestrator]
uplink_grace_ms = 1000

[[links]]
kind = "unicast"
bind = "10.204.1.{i}"
peers = [{peers}]

"#,
        fence = dir.join("fence.sh").display(),
        peers = peers.join(", "),
    );
    for n in 1..=HOSTS {
        text.push_str(&format!(
            "[[nodes]]\nid = {n}\nname = \"h{n}\"\ncapacity_mib = {cap}\n\
             control = \"10.204.1.{n}:7790\"\nmigration = \"10.204.1.{n}:7791\"\n\n",
            cap = CAPACITY[n - 1]
        ));
    }
    for (name, home, mib) in GUESTS {
        text.push_str(&format!(
            "[[resources]]\nname = \"{name}\"\nmemory_mib = {mib}\nhome = \"h{home}\"\n\
             driver = \"ocf:heartbeat:Dummy\"\n\n"
        ));
    }
    let path = dir.join(format!("h{i}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// The power switch: every process of the host's namespace is killed, its
/// RAM (the Dummy state directory) is gone; the outcome is logged.
fn write_fence_script(dir: &Path) {
    let script = format!(
        r#"#!/bin/sh
# Power switch for the ppha lab: PERFPLUS_FENCE_NODE is h1..h3.
ns="ppha-$PERFPLUS_FENCE_NODE"
for _ in $(seq 100); do
    pids=$(ip netns pids "$ns")
    [ -z "$pids" ] && break
    kill -KILL $pids 2>/dev/null
    sleep 0.05
done
rm -f "{dir}/$PERFPLUS_FENCE_NODE/rsctmp/"*
echo "$PERFPLUS_FENCE_NODE incarnation=$PERFPLUS_FENCE_INCARNATION" >> "{dir}/fenced.log"
exit 0
"#,
        dir = dir.display()
    );
    let path = dir.join("fence.sh");
    std::fs::write(&path, script).expect("write fence script");
    sh("chmod", &["755", path.to_str().expect("utf-8 path")]);
}

fn lab(test: &str) -> Option<Lab> {
    if let Some(why) = support::netns::unavailable() {
        support::skip(test, &why);
        return None;
    }
    if !std::path::Path::new("/usr/lib/ocf/resource.d/heartbeat/Dummy").exists() {
        support::skip(
            test,
            "ocf:heartbeat:Dummy is not installed (apt-get install resource-agents)",
        );
        return None;
    }
    let dir = support::scratch_dir("ppha-netns");
    let switch = Netns::new("ppha-sw");
    for bridge in ["phbc", "phbu"] {
        switch.ip(&["link", "add", bridge, "type", "bridge"]);
        switch.ip(&["link", "set", bridge, "up"]);
    }
    // The outside: a ping node on the uplink bridge.
    switch.ip(&["addr", "add", "10.205.1.254/24", "dev", "phbu"]);
    let mut hosts = Vec::new();
    for i in 1..=HOSTS {
        let host = Netns::new(&Lab::ns(i));
        plug(
            &switch,
            "phbc",
            &host,
            &format!("phc{i}"),
            &port('c', i),
            &format!("10.204.1.{i}/24"),
        );
        plug(
            &switch,
            "phbu",
            &host,
            &format!("phu{i}"),
            &port('u', i),
            &format!("10.205.1.{i}/24"),
        );
        std::fs::create_dir_all(dir.join(format!("h{i}/rsctmp"))).expect("rsctmp");
        hosts.push(host);
    }
    write_fence_script(&dir);
    let configs: Vec<PathBuf> = (1..=HOSTS).map(|i| write_config(&dir, i)).collect();
    let nodes = (1..=HOSTS)
        .map(|i| {
            let rsctmp = format!("HA_RSCTMP={}", dir.join(format!("h{i}/rsctmp")).display());
            PerfplusNode::start(&Lab::ns(i), &configs[i - 1], &["--ocf-env", &rsctmp])
        })
        .collect();
    Some(Lab {
        dir,
        nodes,
        _hosts: hosts,
        _switch: switch,
    })
}

#[test]
fn uplink_loss_migrates_death_fences_and_restarts_no_quorum_does_nothing_standby_evacuates() {
    let Some(mut lab) = lab("ha_netns") else {
        return;
    };

    // Cold start: every guest on its home.
    let home: Vec<(&str, u16)> = GUESTS
        .iter()
        .map(|(g, h, _)| (*g, u16::try_from(*h).expect("small")))
        .collect();
    for observer in 1..=HOSTS {
        lab.wait_placements(observer, &home);
    }
    lab.assert_state_files(&home);

    // 1. Host 1 loses its uplink; the cluster link still works. Host 2 is
    // full, so its guests go to host 3.
    switch_port('u', 1, false);
    let after_uplink = [("a1", 3), ("a2", 3), ("b1", 2), ("b2", 2), ("c1", 3)];
    lab.wait_placements(2, &after_uplink);
    lab.assert_state_files(&after_uplink);
    for guest in ["a1", "a2"] {
        let decided = format!("DECIDED migrate {guest} from node 1 to node 3");
        assert!(
            lab.nodes.iter().any(|n| n
                .lines()
                .iter()
                .any(|l| l.contains(&decided) && l.contains("uplink"))),
            "no uplink decision for {guest}\n{}",
            lab.logs()
        );
    }
    // The uplink comes back; wait until the decider sees host 1 healthy
    // again (no failback: `auto_failback` is off).
    switch_port('u', 1, true);
    let healthy = wait_for(WAIT, || {
        let status = lab.node(1).status()?;
        status
            .hosts
            .iter()
            .all(|h| h.ping_reachable == h.ping_configured)
            .then_some(())
    });
    assert!(
        healthy.is_some(),
        "host 1's uplink never came back\n{}",
        lab.logs()
    );

    // 2. Host 2's node crashes: dead, fenced (the power switch), its guests
    // restarted where there is most room (host 1, equally healthy).
    let fenced_before = lab.fence_log().len();
    lab.nodes[1].kill();
    let after_death = [("a1", 3), ("a2", 3), ("b1", 1), ("b2", 1), ("c1", 3)];
    lab.wait_placements(1, &after_death);
    lab.assert_state_files(&after_death);
    let fenced: Vec<String> = lab.fence_log().into_iter().skip(fenced_before).collect();
    assert!(
        !fenced.is_empty() && fenced.iter().all(|l| l.starts_with("h2 ")),
        "host 2 (only) must have been fenced: {fenced:?}\n{}",
        lab.logs()
    );
    assert!(
        support::netns::pids_in(&Lab::ns(2)).is_empty(),
        "the power switch left processes on host 2"
    );
    for guest in ["b1", "b2"] {
        let decided = format!("DECIDED start {guest} on node 1: node 2 died and was fenced");
        assert!(
            lab.node(1).count(0, &decided) == 1,
            "host 1 (the decider) must decide to restart {guest} once\n{}",
            lab.logs()
        );
    }

    // 3. Hosts 1 and 3 lose each other: one vote of three on each side, no
    // quorum, nothing happens. Wait until each side knows it lost quorum.
    let marks: Vec<usize> = [1, 3].iter().map(|i| lab.node(*i).lines().len()).collect();
    let fenced_before = lab.fence_log().len();
    switch_port('c', 3, false);
    for (k, i) in [1, 3].into_iter().enumerate() {
        let lost = wait_for(WAIT, || {
            (lab.node(i).count(marks[k], "QUORUM quorate=false") > 0).then_some(())
        });
        assert!(lost.is_some(), "host {i} never lost quorum\n{}", lab.logs());
    }
    // Give a wrong decision every chance to happen: longer than the uplink
    // grace, a fence command and a start take here.
    std::thread::sleep(Duration::from_secs(4));
    for (k, i) in [1, 3].into_iter().enumerate() {
        for forbidden in [
            "DECIDER",
            "FENCE_REQUESTED",
            "DECIDED",
            "ACTION_STARTED",
            "COLD_START",
        ] {
            assert_eq!(
                lab.node(i).count(marks[k], forbidden),
                0,
                "host {i} without quorum logged {forbidden}\n{}",
                lab.logs()
            );
        }
    }
    assert_eq!(lab.fence_log().len(), fenced_before, "{}", lab.logs());
    assert!(
        lab.nodes[0].alive() && lab.nodes[2].alive(),
        "{}",
        lab.logs()
    );
    lab.assert_state_files(&after_death);
    // Heal: they rejoin, nobody was fenced, and everything runs where it was.
    switch_port('c', 3, true);
    for (k, i) in [1, 3].into_iter().enumerate() {
        let back = wait_for(WAIT, || {
            (lab.node(i).count(marks[k], "QUORUM quorate=true") > 0).then_some(())
        });
        assert!(
            back.is_some(),
            "host {i} never regained quorum\n{}",
            lab.logs()
        );
    }
    lab.wait_placements(1, &after_death);
    lab.wait_placements(3, &after_death);
    lab.assert_state_files(&after_death);
    assert_eq!(lab.fence_log().len(), fenced_before, "{}", lab.logs());

    // 4. An admin puts host 3 in standby: its guests are live-migrated to
    // the only other live host.
    let out = lab.node(3).cli(&["standby", "h3", "on"]);
    assert!(
        out.status.success(),
        "perfplus standby h3 on: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evacuated = [("a1", 1), ("a2", 1), ("b1", 1), ("b2", 1), ("c1", 1)];
    lab.wait_placements(3, &evacuated);
    lab.wait_placements(1, &evacuated);
    lab.assert_state_files(&evacuated);
    for guest in ["a1", "a2", "c1"] {
        let decided =
            format!("DECIDED migrate {guest} from node 3 to node 1: node 3 is in standby");
        assert!(
            lab.node(1).count(0, &decided) == 1,
            "no standby evacuation of {guest}\n{}",
            lab.logs()
        );
    }
    let status = lab.node(3).status().expect("status");
    assert!(
        status.hosts.iter().any(|h| h.id == 3 && h.standby),
        "host 3 is not shown in standby: {status:?}"
    );
    if std::env::var("PPHA_DUMP").is_ok() {
        eprintln!("{}", lab.logs());
    }
    for node in &mut lab.nodes {
        node.terminate();
    }
}
