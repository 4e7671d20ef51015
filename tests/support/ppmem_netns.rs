//! A small lab of real `hanode` processes in network namespaces (all named
//! `ppmem-<lab>-…`, addresses in 10.201.<subnet>.0/24), joined by a bridge
//! in a router namespace that also answers pings at 10.201.<subnet>.254.
//! Loss and delay are injected with `super::netem` (nftables and an NFQUEUE
//! delayer: this kernel has no `sch_netem`), as for the Heartbeat bench.
//! Shared by `tests/membership_netns.rs` and `benches/detection.rs`.
//! Namespaces are `super::netns::Netns`: everything the lab creates,
//! processes included, is removed on drop, also after a failure.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netem::{self, Delay, Delayer};
use super::netns::Netns;

pub use super::lab::sh;

/// Why the lab cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    super::lab::unavailable(&["ip", "nft"], "iproute2 nftables")
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

/// The lab.
pub struct Lab {
    tag: String,
    subnet: u8,
    nodes: usize,
    dir: PathBuf,
    binary: PathBuf,
    procs: Vec<Option<Proc>>,
    delayers: Vec<Option<Delayer>>,
    /// A command the nodes run under (e.g. `chrt --rr 1`); empty by default.
    pub launcher: Vec<String>,
    // Dropped last (fields drop in order): processes and delayers first.
    namespaces: Vec<Netns>,
}

impl Lab {
    /// `nodes` namespaces `ppmem-<tag>-<i>` (i from 1) on 10.201.<subnet>.i,
    /// running `binary` (the hanode example) with configs in `dir`.
    pub fn new(
        tag: &str,
        subnet: u8,
        nodes: usize,
        binary: &Path,
        dir: &Path,
    ) -> Result<Lab, String> {
        let mut lab = Lab {
            tag: tag.to_string(),
            subnet,
            nodes,
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            procs: (0..nodes).map(|_| None).collect(),
            delayers: (0..nodes).map(|_| None).collect(),
            launcher: Vec::new(),
            namespaces: Vec::new(),
        };
        let router = lab.router();
        lab.namespaces.push(Netns::new(&router));
        sh(&["ip", "-n", &router, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &router, "link", "set", "br0", "up"])?;
        sh(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("10.201.{subnet}.254/24"),
            "dev",
            "br0",
        ])?;
        for i in 1..=nodes {
            let ns = lab.ns(i);
            let (inner, outer) = lab.veth(i);
            lab.namespaces.push(Netns::new(&ns));
            sh(&[
                "ip", "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer,
                "netns", &router,
            ])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.201.{subnet}.{i}/24"),
                "dev",
                &inner,
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            sh(&["ip", "-n", &router, "link", "set", &outer, "master", "br0"])?;
            sh(&["ip", "-n", &router, "link", "set", &outer, "up"])?;
        }
        Ok(lab)
    }

    /// Namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("ppmem-{}-{i}", self.tag)
    }

    fn router(&self) -> String {
        format!("ppmem-{}-r", self.tag)
    }

    /// (node side, bridge side) interface names of node `i`.
    pub fn veth(&self, i: usize) -> (String, String) {
        (format!("pm{}{i}", self.tag), format!("pb{}{i}", self.tag))
    }

    /// Address of node `i`.
    pub fn address(&self, i: usize) -> String {
        format!("10.201.{}.{i}", self.subnet)
    }

    /// Address of the router (a ping node).
    pub fn router_address(&self) -> String {
        format!("10.201.{}.254", self.subnet)
    }

    /// Write node `i`'s TOML configuration: `top` holds extra top-level
    /// keys, `sections` extra tables (`[detector]`, `[ping]`, `[fencing]`).
    /// Returns its path.
    pub fn write_config(&self, i: usize, top: &str, sections: &str) -> Result<PathBuf, String> {
        let peers: Vec<String> = (1..=self.nodes)
            .filter(|n| *n != i)
            .map(|n| format!("\"{}\"", self.address(n)))
            .collect();
        let links = format!(
            "[[links]]\nkind = \"unicast\"\nbind = \"{}\"\npeers = [{}]\n",
            self.address(i),
            peers.join(", ")
        );
        self.write_config_with_links(i, top, &links, sections)
    }

    /// Like [`write_config`](Self::write_config), with the `[[links]]`
    /// tables given (`{if}` in them becomes node `i`'s interface name).
    pub fn write_config_with_links(
        &self,
        i: usize,
        top: &str,
        links: &str,
        sections: &str,
    ) -> Result<PathBuf, String> {
        let mut text = format!(
            "cluster = \"ppmem-{tag}\"\nnode = \"n{i}\"\nkey = \"000102030405060708090a0b0c0d0e0f\"\ninitial_wait_ms = 5000\n{top}\n",
            tag = self.tag
        );
        for n in 1..=self.nodes {
            text.push_str(&format!("[[nodes]]\nid = {n}\nname = \"n{n}\"\n\n"));
        }
        let links = links.replace("{if}", &self.veth(i).0);
        text.push_str(&format!("{links}\n{sections}\n"));
        let path = self.dir.join(format!("n{i}.toml"));
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Start node `i` with its configuration (written by `write_config`).
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let config = self.dir.join(format!("n{i}.toml"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .args(&self.launcher)
            .arg(&self.binary)
            .arg("--config")
            .arg(&config)
            .args(["--stats-every-ms", "1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().map(|mut l| l.push(line)).ok();
            }
        });
        let stdin = child.stdin.take();
        self.procs[i - 1] = Some(Proc {
            child,
            stdin,
            lines,
        });
        Ok(())
    }

    /// The process id of node `i`.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i - 1].as_ref().map(|p| p.child.id())
    }

    /// SIGKILL node `i` (its lines stay readable).
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.procs[i - 1].as_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Send a signal (`STOP`, `CONT`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) -> Result<(), String> {
        let pid = self.pid(i).ok_or("not running")?;
        sh(&["kill", &format!("-{signal}"), &pid.to_string()])
    }

    /// Stop node `i` cleanly (close its stdin) and wait for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(p) = self.procs[i - 1].as_mut() {
            if let Some(mut stdin) = p.stdin.take() {
                let _ = stdin.write_all(b"stop\n");
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Every line node `i` printed so far.
    pub fn lines(&self, i: usize) -> Vec<String> {
        self.procs[i - 1]
            .as_ref()
            .and_then(|p| p.lines.lock().ok().map(|l| l.clone()))
            .unwrap_or_default()
    }

    /// Wait until node `i` printed a line containing every word of `words`
    /// (after the first `skip` lines); the line.
    pub fn wait_line(
        &self,
        i: usize,
        skip: usize,
        words: &[&str],
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines(i)
                .into_iter()
                .skip(skip)
                .find(|l| words.iter().all(|w| l.split_whitespace().any(|x| x == *w)))
            {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Drop `per_mille`/1000 of the UDP packets node `i` sends, each
    /// independently ([`netem::set_loss`]). 0 removes it.
    pub fn loss(&self, i: usize, per_mille: u32) -> Result<(), String> {
        netem::set_loss(&self.ns(i), per_mille)
    }

    /// Delay every UDP packet node `i` sends ([`netem::Delayer`]); `None`
    /// stops delaying.
    pub fn delay(&mut self, i: usize, delay: Option<Delay>) -> Result<(), String> {
        self.delayers[i - 1] = None;
        if let Some(delay) = delay {
            let queue = u16::try_from(i).unwrap_or(u16::MAX);
            self.delayers[i - 1] = Some(Delayer::start(&self.ns(i), queue, delay, i as u64)?);
        }
        Ok(())
    }

    /// Take node `i`'s interface down (or up).
    pub fn link(&self, i: usize, up: bool) -> Result<(), String> {
        let (inner, _) = self.veth(i);
        sh(&[
            "ip",
            "-n",
            &self.ns(i),
            "link",
            "set",
            &inner,
            if up { "up" } else { "down" },
        ])
    }

    /// Make the router unreachable from node `i` (a blackhole route), or
    /// reachable again: its uplink is gone while its heartbeat link works.
    pub fn lose_uplink(&self, i: usize, lost: bool) -> Result<(), String> {
        let target = format!("{}/32", self.router_address());
        sh(&[
            "ip",
            "-n",
            &self.ns(i),
            "route",
            if lost { "add" } else { "del" },
            "blackhole",
            &target,
        ])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            if let Some(mut p) = self.procs[i - 1].take() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        self.delayers.clear();
        // The namespaces go with `self.namespaces`.
    }
}

/// The `t=` timestamp (µs since the epoch) of a hanode line.
pub fn time_us(line: &str) -> Option<u128> {
    line.strip_prefix("t=")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A `key=value` field of a hanode line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}
