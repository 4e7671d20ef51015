//! A perfplus node in a Heartbeat 3 cluster: the `hanode` example (the
//! membership runtime speaking Heartbeat 3 through `heartbeat::Member`),
//! configured from the site's own `ha.cf` and `authkeys`, next to a real
//! Heartbeat 3.0.6 node, each in its own network namespace joined by a veth
//! pair.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perfplus::wire::hb3::{encode, AuthKey, AuthMethod, Framing, Keyring, Message};
use support::heartbeat::{Node, NodeConfig};
use support::netns::{veth, Netns};

/// `hanode`; `cargo test` builds examples next to the test binaries.
fn hanode() -> PathBuf {
    let path = support::profile_dir().join("examples/hanode");
    assert!(
        path.exists(),
        "{} is missing: cargo test builds it",
        path.display()
    );
    path
}

/// A perfplus node's files: the `ha.cf` and `authkeys` a Heartbeat node of
/// the same cluster would have.
struct SiteFiles {
    ha_cf: PathBuf,
    authkeys: PathBuf,
    state: PathBuf,
}

/// Write `nodeb`'s `ha.cf` (times as `support::heartbeat::NodeConfig::test_node`,
/// one `ucast` to `peer`) and `authkeys` (mode 600) under `dir`.
fn site_files(dir: &Path, interface: &str, peer: &str, authkeys: &str) -> SiteFiles {
    std::fs::create_dir_all(dir).expect("create dir");
    let ha_cf = dir.join("ha.cf");
    std::fs::write(
        &ha_cf,
        format!(
            "# nodeb's ha.cf, as a Heartbeat node of this cluster would have it\n\
             logfile /var/log/ha-log\nuse_logd no\n\
             keepalive 500ms\nwarntime 1500ms\ndeadtime 3000ms\ninitdead 6000ms\n\
             udpport 694\nucast {interface} {peer}\nauto_failback off\ncrm off\n\
             node nodeA nodeB\n"
        ),
    )
    .expect("write ha.cf");
    let keys = dir.join("authkeys");
    std::fs::write(&keys, authkeys).expect("write authkeys");
    support::netns::sh("chmod", &["600", keys.to_str().expect("utf-8 path")]);
    SiteFiles {
        ha_cf,
        authkeys: keys,
        state: dir.join("state"),
    }
}

/// A running `hanode` with its stdout lines collected by a thread.
struct PerfplusNode {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PerfplusNode {
    fn start(ns: &Netns, files: &SiteFiles) -> Self {
        let mut child = ns
            .command(hanode().to_str().expect("utf-8 path"))
            .arg("--ha-cf")
            .arg(&files.ha_cf)
            .arg("--authkeys")
            .arg(&files.authkeys)
            .arg("--state-dir")
            .arg(&files.state)
            .args(["--node", "nodeB", "--stats-every-ms", "250"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hanode");
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

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// The first line after the first `skip` ones that has every word.
    fn wait_for(&self, skip: usize, words: &[&str], timeout: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(l) = self
                .lines()
                .into_iter()
                .skip(skip)
                .find(|l| words.iter().all(|w| l.split_whitespace().any(|x| x == *w)))
            {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines = self.lines();
        panic!(
            "hanode printed no line with {words:?} within {timeout:?}; last lines:\n{}",
            lines[lines.len().saturating_sub(25)..].join("\n")
        );
    }

    /// The last `STATS` line's `key=` value.
    fn stat(&self, key: &str) -> u64 {
        self.lines()
            .iter()
            .rev()
            .find(|l| l.contains(" STATS "))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PerfplusNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A status packet claiming to come from `src`, signed with the wrong key.
fn forged_status(dir: &Path, src: &str) -> PathBuf {
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

/// The `t=` time (µs since the epoch) of a hanode line.
fn time_us(line: &str) -> u128 {
    line.strip_prefix("t=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .expect("a t= timestamp")
}

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros()
}

#[test]
fn perfplus_node_from_ha_cf_and_real_heartbeat_see_each_other_detect_each_others_death_and_drop_forgeries(
) {
    const TEST: &str = "perfplus_node_from_ha_cf_and_real_heartbeat_see_each_other_detect_each_others_death_and_drop_forgeries";
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
    // One authkeys for both, written as admins write them: Heartbeat reads
    // the secret as the first word after the method ("testsecret"), and `#`
    // as a comment only at the start of a line. perfplus must read the same.
    let authkeys = "  # cluster key, copied to every node\n\
                    auth 1\n\
                    1 sha1 testsecret   # rotated 2024; everything after the key is ignored\n";
    let mut config = NodeConfig::test_node(
        "nodeA",
        &["nodeA", "nodeB"],
        &["ucast pphbia 10.203.1.2".to_string()],
    );
    config.authkeys = authkeys.into();
    let mut nodea = Node::start(&ns_a, &dir.join("nodea"), &config);
    let files = site_files(&dir.join("nodeb"), "pphbib", "10.203.1.1", authkeys);
    let mut nodeb = PerfplusNode::start(&ns_b, &files);
    nodeb.wait_for(
        0,
        &["STARTED", "node=2", "name=nodeb"],
        Duration::from_secs(10),
    );
    assert!(
        nodeb
            .lines()
            .iter()
            .any(|l| l.contains("WARNING") && l.contains("the key is ignored` is ignored")),
        "hanode warns about the words Heartbeat ignores: {:#?}",
        nodeb.lines()
    );

    // Heartbeat lists the perfplus node as active; perfplus sees nodea up.
    nodea.wait_for_status("nodeb", "active", Duration::from_secs(30));
    nodeb.wait_for(0, &["MEMBER_UP", "node=1"], Duration::from_secs(30));
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodeb.stat("bad_auth") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(nodeb.stat("bad_auth"), 1, "{:#?}", nodeb.lines());
    // Everything the real node sent was accepted: the forgery is the only drop.
    assert_eq!(nodeb.stat("dropped"), 1, "{:#?}", nodeb.lines());
    assert!(nodeb.stat("accepted") > 5);
    assert!(nodeb
        .lines()
        .iter()
        .any(|l| l.contains("WARNING") && l.contains("failed authentication")));
    assert_eq!(nodea.node_status("nodeb").as_deref(), Some("active"));

    // Killing the perfplus node is detected by Heartbeat.
    nodeb.kill();
    let took = nodea.wait_for_status("nodeb", "dead", Duration::from_secs(20));
    assert!(nodea.log().contains("node nodeb: is dead"));
    eprintln!("Heartbeat declared the killed perfplus node dead after {took:?} (polled)");

    // A restart rejoins with a higher generation, which Heartbeat accepts.
    let nodeb = PerfplusNode::start(&ns_b, &files);
    nodea.wait_for_status("nodeb", "active", Duration::from_secs(20));
    nodeb.wait_for(0, &["MEMBER_UP", "node=1"], Duration::from_secs(20));
    assert!(!nodea.log().contains("attempted replay attack"));

    // Killing the Heartbeat node is detected by perfplus, within the 3 s
    // deadtime nodea advertises (perfplus's detector judges, the advertised
    // deadtime bounds it).
    std::thread::sleep(Duration::from_secs(3));
    let mark = nodeb.lines().len();
    let killed_at = now_us();
    nodea.kill();
    let dead = nodeb.wait_for(mark, &["MEMBER_DEAD", "node=1"], Duration::from_secs(20));
    let after_ms = (time_us(&dead).saturating_sub(killed_at)) / 1_000;
    eprintln!("perfplus declared the killed Heartbeat node dead after {after_ms} ms");
    // Nobody was declared dead before the kill.
    let early_deaths = nodeb.lines()[..mark]
        .iter()
        .filter(|l| l.contains("MEMBER_DEAD"))
        .count();
    assert_eq!(early_deaths, 0, "{:#?}", nodeb.lines());
    drop(nodeb);
    eprintln!("{TEST}: {:?}", started.elapsed());
}

#[test]
fn md5_and_crc_authkeys_interoperate_with_real_heartbeat() {
    const TEST: &str = "md5_and_crc_authkeys_interoperate_with_real_heartbeat";
    if let Some(why) = support::heartbeat::unavailable() {
        return support::skip(TEST, &why);
    }
    let started = Instant::now();
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
    // Index 0 is a valid key index for Heartbeat (MAXAUTH is 16); a second
    // key verifies but does not sign.
    for (method, authkeys) in [
        (
            "md5",
            "auth 0\n0 md5 first-word and the rest is ignored\n5 sha1 other\n",
        ),
        ("crc", "auth 3\n3 crc\n"),
    ] {
        let mut config = NodeConfig::test_node(
            "nodeA",
            &["nodeA", "nodeB"],
            &["ucast pphbma 10.203.4.2".to_string()],
        );
        config.authkeys = authkeys.into();
        let nodea = Node::start(&ns_a, &dir.join(format!("nodea-{method}")), &config);
        let files = site_files(
            &dir.join(format!("nodeb-{method}")),
            "pphbmb",
            "10.203.4.1",
            authkeys,
        );
        let nodeb = PerfplusNode::start(&ns_b, &files);
        nodea.wait_for_status("nodeb", "active", Duration::from_secs(30));
        nodeb.wait_for(0, &["MEMBER_UP", "node=1"], Duration::from_secs(30));
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
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            nodeb.stat("dropped"),
            0,
            "{method}: perfplus refused some of Heartbeat's packets: {:#?}",
            nodeb.lines()
        );
        drop(nodeb);
        drop(nodea);
    }
    eprintln!("{TEST}: {:?}", started.elapsed());
}
