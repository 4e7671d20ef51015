//! The runtime on loopback: two real nodes in this process, real UDP
//! sockets, real clocks. (Kill, loss, partitions and ping splits run in
//! network namespaces: tests/membership_netns.rs.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perfplus::config::{LinkConfig, NodeConfig};
use perfplus::membership::{Event, Fencing, MemberState, NodeId, NodeSpec};
use perfplus::runtime::{Node, NodeEvent};
use perfplus::wire::ClusterKey;

fn config(local: u16, ports: [u16; 2], secret: &[u8]) -> NodeConfig {
    let mut c = NodeConfig::new("loopback", ClusterKey::derive(secret));
    c.nodes = (1..=2)
        .map(|i| NodeSpec {
            id: NodeId(i),
            name: format!("n{i}"),
            votes: 1,
        })
        .collect();
    c.local = NodeId(local);
    let me = ports[usize::from(local - 1)];
    let peer = ports[usize::from(2 - local)];
    c.links = vec![LinkConfig::Unicast {
        interface: None,
        bind: Some("127.0.0.1".parse().expect("address")),
        port: me,
        peers: vec![SocketAddr::from(([127, 0, 0, 1], peer))],
    }];
    c.fencing = Fencing::Disabled;
    c
}

fn free_ports() -> [u16; 2] {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    [
        a.local_addr().expect("local addr").port(),
        b.local_addr().expect("local addr").port(),
    ]
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state(node: &Node, of: u16) -> MemberState {
    node.members()
        .into_iter()
        .find(|m| m.id == NodeId(of))
        .expect("configured member")
        .state
}

#[test]
fn two_nodes_on_loopback_see_each_other_and_a_clean_stop_is_a_leave() {
    let ports = free_ports();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut one = Node::start(config(1, ports, b"k"), move |e: &NodeEvent| {
        log.lock().unwrap().push(e.clone());
    })
    .unwrap();
    let mut two = Node::start(config(2, ports, b"k"), |_: &NodeEvent| {}).unwrap();
    wait_for("both alive", Duration::from_secs(10), || {
        state(&one, 2) == MemberState::Alive && state(&two, 1) == MemberState::Alive
    });
    assert!(one.quorum().quorate);
    assert!(one.wire_stats().accepted > 0);
    let (bytes, packets) = one.sent();
    assert_eq!(
        bytes,
        packets * 70,
        "every datagram is one 70-byte heartbeat"
    );
    two.stop();
    wait_for("node 2 left", Duration::from_secs(5), || {
        state(&one, 2) == MemberState::Left
    });
    one.stop();
    let events = seen.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        NodeEvent::Membership(Event::MemberUp {
            node: NodeId(2),
            ..
        })
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        NodeEvent::Membership(Event::MemberLeft {
            node: NodeId(2),
            ..
        })
    )));
    assert!(!events
        .iter()
        .any(|e| matches!(e, NodeEvent::Membership(Event::MemberDead { .. }))));
}

#[test]
fn node_with_another_key_is_never_a_member() {
    let ports = free_ports();
    let mut one = Node::start(config(1, ports, b"right"), |_: &NodeEvent| {}).unwrap();
    let mut two = Node::start(config(2, ports, b"wrong"), |_: &NodeEvent| {}).unwrap();
    wait_for("forged packets counted", Duration::from_secs(5), || {
        one.wire_stats().bad_authentication >= 10
    });
    assert_eq!(state(&one, 2), MemberState::Unknown);
    assert_eq!(one.wire_stats().accepted, 0);
    two.stop();
    one.stop();
}

#[test]
fn start_fails_cleanly_when_the_port_is_taken_by_another_socket() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local addr").port();
    // SO_REUSEADDR lets UDP sockets share a port on Linux, so use an address
    // that cannot be bound at all instead.
    let mut c = config(1, [port, port], b"k");
    c.links = vec![LinkConfig::Unicast {
        interface: None,
        bind: Some("192.0.2.1".parse().unwrap()),
        port,
        peers: vec![SocketAddr::from(([127, 0, 0, 1], port))],
    }];
    let err = Node::start(c, |_: &NodeEvent| {}).unwrap_err().to_string();
    assert!(
        err.starts_with("link 0: cannot bind to 192.0.2.1:"),
        "{err}"
    );
}
