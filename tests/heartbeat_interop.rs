//! A perfplus node (the `hb3_member` example, on the sans-io
//! `heartbeat::Member` core) in a cluster with a real Heartbeat 3.0.6 node,
//! each in its own network namespace joined by a veth pair.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perfplus::wire::hb3::{encode, AuthKey, AuthMethod, Framing, Keyring, Message};
use support::heartbeat::{Node, NodeConfig};
use support::netns::{veth, Netns};

/// The example binary; `cargo test` builds examples next to the test binaries.
fn member_binary() -> PathBuf {
    let path = support::profile_dir().join("examples/hb3_member");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "hb3_member"])
            .status()
            .expect("cargo build --example hb3_member");
        assert!(status.success());
    }
    path
}

/// The member process with its stdout lines collected by a thread.
struct MemberProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl MemberProcess {
    fn spawn(ns: &Netns, args: &[&str]) -> Self {
        let mut child = ns
            .command(member_binary().to_str().expect("utf-8 path"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hb3_member");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines lock").push(line);
            }
        });
        Self { child, lines }
    }

    fn wait_for_line(&self, what: &str, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(l) = self
                .lines
                .lock()
                .expect("lines lock")
                .iter()
                .find(|l| pred(l))
            {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let lines = self.lines.lock().expect("lines lock");
        panic!(
            "hb3_member printed no {what} within {timeout:?}; last lines:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MemberProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A status packet claiming to come from `src`, signed with the wrong key.
fn forged_status(dir: &std::path::Path, src: &str) -> PathBuf {
    let m = Message::new()
        .with_str("t", "status")
        .with_str("st", "active")
        .with_str("src", src)
        .with_str("seq", "ffff")
        .with_str("hg", "ffffffff")
        .with_str("ts", "1");
    let wrong = Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "not the cluster key"));
    let path = dir.join(format!("forged-{src}.bin"));
    let packet = encode(&m, Framing::Netstring, &wrong).expect("encode");
    std::fs::write(&path, packet).expect("write forged packet");
    path
}

#[test]
fn perfplus_member_joins_real_heartbeat_drops_forgeries_and_its_death_is_detected() {
    const TEST: &str =
        "perfplus_member_joins_real_heartbeat_drops_forgeries_and_its_death_is_detected";
    if let Some(why) = support::heartbeat::unavailable() {
        return support::skip(TEST, &why);
    }
    let started = Instant::now();
    let dir = support::scratch_dir("hb3-interop");
    let ns_a = Netns::new("pphb-int-a");
    let ns_b = Netns::new("pphb-int-b");
    veth(
        &ns_a,
        "pphbia",
        "10.203.1.1/24",
        &ns_b,
        "pphbib",
        "10.203.1.2/24",
    );

    let config = NodeConfig::test_node(
        "nodeA",
        &["nodeA", "nodeB"],
        &["ucast pphbia 10.203.1.2".to_string()],
    );
    let nodea = Node::start(&ns_a, &dir.join("nodea"), &config);
    let state = dir.join("member-state");
    let mut member = MemberProcess::spawn(
        &ns_b,
        &[
            "--node",
            "nodeb",
            "--nodes",
            "nodea,nodeb",
            "--key",
            "1:sha1:testsecret",
            "--state-dir",
            state.to_str().unwrap(),
            "--bind",
            "0.0.0.0:694",
            "--peer",
            "10.203.1.1:694",
            "--keepalive-ms",
            "500",
            "--deadtime-ms",
            "3000",
        ],
    );

    // Both see each other as active.
    nodea.wait_for_status("nodeb", "active", Duration::from_secs(30));
    member.wait_for_line(
        "nodea active",
        |l| l == "status nodea active",
        Duration::from_secs(30),
    );
    nodea.wait_for_log(
        "Initial resource acquisition complete",
        1,
        Duration::from_secs(20),
    );

    // A packet with the wrong key is dropped and counted by both sides.
    ns_b.send_udp(&forged_status(&dir, "nodeb"), "10.203.1.1", 694);
    nodea.wait_for_log(
        "netstring authentication failed",
        1,
        Duration::from_secs(10),
    );
    ns_a.send_udp(&forged_status(&dir, "nodea"), "10.203.1.2", 694);
    let line = member.wait_for_line(
        "a dropped forged packet",
        |l| l.starts_with("dropped authentication"),
        Duration::from_secs(10),
    );
    assert!(line.contains("total=1"), "{line}");
    assert_eq!(nodea.node_status("nodeb").as_deref(), Some("active"));
    // Everything the real node sent decoded and verified: the only drop is
    // the forgery.
    let drops: Vec<String> = member
        .lines
        .lock()
        .expect("lines lock")
        .iter()
        .filter(|l| l.starts_with("dropped"))
        .cloned()
        .collect();
    assert_eq!(drops.len(), 1, "{drops:?}");

    // Killing the perfplus node is detected by Heartbeat.
    member.kill();
    let took = nodea.wait_for_status("nodeb", "dead", Duration::from_secs(20));
    assert!(nodea.log().contains("node nodeb: is dead"));
    eprintln!("heartbeat declared the killed perfplus node dead after {took:?}");

    // And a restart rejoins with a higher generation, which Heartbeat accepts.
    let member = MemberProcess::spawn(
        &ns_b,
        &[
            "--node",
            "nodeb",
            "--nodes",
            "nodea,nodeb",
            "--key",
            "1:sha1:testsecret",
            "--state-dir",
            state.to_str().unwrap(),
            "--bind",
            "0.0.0.0:694",
            "--peer",
            "10.203.1.1:694",
            "--keepalive-ms",
            "500",
            "--deadtime-ms",
            "3000",
        ],
    );
    nodea.wait_for_status("nodeb", "active", Duration::from_secs(20));
    assert!(!nodea.log().contains("attempted replay attack"));
    drop(member);
    drop(nodea);
    eprintln!("{TEST}: {:?}", started.elapsed());
}

/// The member's arguments for node `nodeb` talking to `peer` with `key`.
fn member_args(state: &std::path::Path, peer: &str, key: &str) -> Vec<String> {
    [
        "--node",
        "nodeb",
        "--nodes",
        "nodea,nodeb",
        "--key",
        key,
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--bind",
        "0.0.0.0:694",
        "--peer",
        peer,
        "--keepalive-ms",
        "500",
        "--deadtime-ms",
        "3000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn md5_and_crc_authkeys_interoperate_with_real_heartbeat() {
    const TEST: &str = "md5_and_crc_authkeys_interoperate_with_real_heartbeat";
    if let Some(why) = support::heartbeat::unavailable() {
        return support::skip(TEST, &why);
    }
    let dir = support::scratch_dir("hb3-interop-methods");
    let ns_a = Netns::new("pphb-mth-a");
    let ns_b = Netns::new("pphb-mth-b");
    veth(
        &ns_a,
        "pphbma",
        "10.203.4.1/24",
        &ns_b,
        "pphbmb",
        "10.203.4.2/24",
    );
    // Heartbeat reads a key line with sscanf("%d%s%s"): the secret is the
    // first word after the method, whatever follows ("# ..." included).
    for (authkeys, key) in [
        (
            "auth 2\n2 md5 first-word and the rest is ignored\n",
            "2:md5:first-word",
        ),
        ("auth 3\n3 crc\n", "3:crc:"),
    ] {
        let mut config = NodeConfig::test_node(
            "nodeA",
            &["nodeA", "nodeB"],
            &["ucast pphbma 10.203.4.2".to_string()],
        );
        config.authkeys = authkeys.into();
        let method = key.split(':').nth(1).unwrap_or("?");
        let nodea = Node::start(&ns_a, &dir.join(format!("nodea-{method}")), &config);
        let args = member_args(&dir.join(format!("state-{method}")), "10.203.4.1:694", key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let member = MemberProcess::spawn(&ns_b, &args);
        nodea.wait_for_status("nodeb", "active", Duration::from_secs(30));
        member.wait_for_line(
            "nodea active",
            |l| l == "status nodea active",
            Duration::from_secs(30),
        );
        nodea.wait_for_log(
            "Initial resource acquisition complete",
            1,
            Duration::from_secs(20),
        );
        let log = nodea.log();
        assert!(
            !log.contains("authentication failed") && !log.contains("Invalid authentication"),
            "{method}: Heartbeat refused some of our packets:\n{}",
            nodea.log_tail(30)
        );
        let drops = member
            .lines
            .lock()
            .expect("lines lock")
            .iter()
            .filter(|l| l.starts_with("dropped"))
            .count();
        assert_eq!(
            drops, 0,
            "{method}: the member refused some of Heartbeat's packets"
        );
        drop(member);
        drop(nodea);
    }
}
