//! Two real Heartbeat 3.0.6 nodes talking only through the perfplus HBcomm
//! plugin (`examples/heartbeat/plugin/perfplus.c`) over two redundant links:
//! they reach `active`, survive a cut link, and fail a haresources resource
//! over when one node is killed.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::heartbeat::{build_plugin, Node, NodeConfig};
use support::netns::{veth, Netns};

/// A v1 resource script: state in the node's own /var/lib/heartbeat.
const DUMMY: &str = r#"#!/bin/sh
STATE=/var/lib/heartbeat/ppdummy-$1.state
case "$2" in
    start) touch "$STATE" ;;
    stop) rm -f "$STATE" ;;
    status) if [ -e "$STATE" ]; then echo running; else echo stopped; fi ;;
esac
exit 0
"#;

fn node_config(name: &str, peers: [&str; 2]) -> NodeConfig {
    let mut c = NodeConfig::test_node(
        name,
        &["nodeA", "nodeB"],
        &[format!(
            "perfplus 7940 /etc/ha.d/perfplus.key {} {}",
            peers[0], peers[1]
        )],
    );
    c.haresources = "nodea PPDummy::res1\n".into();
    c.resource_scripts = vec![("PPDummy".into(), DUMMY.into())];
    c
}

fn write_key(node: &Node) {
    let key = node.dir.join("etc-ha.d/perfplus.key");
    std::fs::write(&key, "perfplus test cluster key, 32 bytes\n").expect("write key");
    support::netns::sh("chmod", &["600", key.to_str().expect("utf-8 path")]);
}

fn wait_for_file(path: &Path, timeout: Duration, node: &Node) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if path.exists() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{} did not appear within {timeout:?}\n--- {} ha-log tail ---\n{}",
        path.display(),
        node.name,
        node.log_tail(40)
    );
}

#[test]
fn heartbeat_over_the_perfplus_plugin_survives_a_cut_link_and_fails_over() {
    const TEST: &str = "heartbeat_over_the_perfplus_plugin_survives_a_cut_link_and_fails_over";
    if let Some(why) = support::heartbeat::plugin_unavailable() {
        return support::skip(TEST, &why);
    }
    let started = Instant::now();
    let plugin = build_plugin();
    let dir = support::scratch_dir("hb3-plugin");
    let ns_a = Netns::new("pphb-plg-a");
    let ns_b = Netns::new("pphb-plg-b");
    veth(
        &ns_a,
        "pphbpa1",
        "10.203.2.1/24",
        &ns_b,
        "pphbpb1",
        "10.203.2.2/24",
    );
    veth(
        &ns_a,
        "pphbpa2",
        "10.203.3.1/24",
        &ns_b,
        "pphbpb2",
        "10.203.3.2/24",
    );

    let mut ca = node_config("nodeA", ["10.203.2.2", "10.203.3.2"]);
    let mut cb = node_config("nodeB", ["10.203.2.1", "10.203.3.1"]);
    for c in [&mut ca, &mut cb] {
        c.plugins = vec![("perfplus.so".into(), plugin.clone())];
    }
    // The key must be in place before Heartbeat parses ha.cf.
    let mut nodea = Node::start_with(&ns_a, &dir.join("nodea"), &ca, write_key);
    let nodeb = Node::start_with(&ns_b, &dir.join("nodeb"), &cb, write_key);

    nodea.wait_for_status("nodeb", "active", Duration::from_secs(30));
    nodeb.wait_for_status("nodea", "active", Duration::from_secs(30));
    nodea.wait_for_log(
        "perfplus: link 0 (10.203.2.2:7940) up",
        1,
        Duration::from_secs(10),
    );
    nodea.wait_for_log(
        "perfplus: link 1 (10.203.3.2:7940) up",
        1,
        Duration::from_secs(10),
    );
    let resource_a = nodea.dir.join("varlib/ppdummy-res1.state");
    wait_for_file(&resource_a, Duration::from_secs(30), &nodea);

    // Cut link 0: the link goes down in the log, the nodes stay up.
    ns_a.ip(&["link", "set", "pphbpa1", "down"]);
    nodea.wait_for_log(
        "perfplus: link 0 (10.203.2.2:7940) down",
        1,
        Duration::from_secs(10),
    );
    nodeb.wait_for_log(
        "perfplus: link 0 (10.203.2.1:7940) down",
        1,
        Duration::from_secs(10),
    );
    // Two deadtimes (2 x 3 s) with one link: nobody is declared dead.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(nodea.node_status("nodeb").as_deref(), Some("active"));
    assert_eq!(nodeb.node_status("nodea").as_deref(), Some("active"));
    for n in [&nodea, &nodeb] {
        assert!(
            !n.log().contains("is dead"),
            "{}:\n{}",
            n.name,
            n.log_tail(30)
        );
    }
    ns_a.ip(&["link", "set", "pphbpa1", "up"]);
    nodea.wait_for_log(
        "perfplus: link 0 (10.203.2.2:7940) up",
        2,
        Duration::from_secs(10),
    );

    // Kill nodeA: nodeB declares it dead and takes its resource over.
    nodea.kill();
    let detected = nodeb.wait_for_status("nodea", "dead", Duration::from_secs(20));
    let resource_b = nodeb.dir.join("varlib/ppdummy-res1.state");
    let took_over = wait_for_file(&resource_b, Duration::from_secs(30), &nodeb);
    eprintln!("nodeB: nodeA dead after {detected:?}, resource taken over {took_over:?} later");
    drop(nodeb);
    eprintln!("{TEST}: {:?}", started.elapsed());
}
