//! Two "hosts" and a client network for arena migrations between hosts:
//! network namespaces named `ppmig-<tag>-{a,b,c}-<pid>`, addresses in
//! 10.202.0.0/16. Shared by `tests/arena_netns.rs` and `benches/arena.rs`.
//!
//! ```text
//!   host a (source)                          host b (destination)
//!   lo 10.202.1.1/32 (the service)           (takes 10.202.1.1/32 over)
//!   mig0 10.202.0.1/24 ═══ veth, tbf 1 Gbit/s ═══ mig0 10.202.0.2/24
//!   up0 10.202.2.2/24                         up0 10.202.3.2/24
//!          ╲                                   ╱
//!           ca 10.202.2.1/24   c   cb 10.202.3.1/24
//!           clients; route 10.202.1.1/32 via the host that owns it
//! ```
//!
//! The migration link is shaped with `tbf` to 1 Gbit/s each way. The
//! issue also asks for 0.2 ms of delay, which needs `sch_netem`: this
//! kernel has no `sch_netem`, so the link has no added delay (veth latency
//! is a few microseconds).
//!
//! Moving the service address: the destination adds 10.202.1.1/32 to its
//! loopback and points the client network's route at itself (what a
//! gratuitous ARP does on a shared LAN); [`Hosts::take_over_command`] is
//! that step as a shell command for `migrate receive --on-start`.
//! Everything is removed on drop (processes killed first), also after a
//! failure; leftovers of a crashed earlier run are removed at creation.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The service address.
pub const SERVICE_IP: &str = "10.202.1.1";
/// The migration link addresses.
pub const A_MIG: &str = "10.202.0.1";
/// Host b on the migration link.
pub const B_MIG: &str = "10.202.0.2";
/// Host a on the client network.
pub const A_UP: &str = "10.202.2.2";
/// Host b on the client network.
pub const B_UP: &str = "10.202.3.2";

// Tests that also have `support` load lab.rs twice; it is a pure helper.
#[allow(clippy::duplicate_mod)]
#[path = "lab.rs"]
mod lab;
pub use lab::sh;

/// Why the lab cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    lab::unavailable(&["ip", "tc"], "iproute2")
}

/// PIDs of the processes in namespace `ns`.
pub fn pids_in(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_all_in(ns: &str) {
    for _ in 0..50 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The three namespaces; see the module documentation.
#[derive(Debug)]
pub struct Hosts {
    /// Source host.
    pub a: String,
    /// Destination host.
    pub b: String,
    /// Client network.
    pub c: String,
}

impl Hosts {
    /// Create the lab for `tag` (a short word naming the test).
    pub fn create(tag: &str) -> Result<Self, String> {
        Self::remove_stale(tag);
        let pid = std::process::id();
        let hosts = Self {
            a: format!("ppmig-{tag}-a-{pid}"),
            b: format!("ppmig-{tag}-b-{pid}"),
            c: format!("ppmig-{tag}-c-{pid}"),
        };
        for ns in [&hosts.a, &hosts.b, &hosts.c] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let (a, b, c) = (&hosts.a, &hosts.b, &hosts.c);
        let pair = |x: &str, x_if: &str, x_ip: &str, y: &str, y_if: &str, y_ip: &str| {
            sh(&[
                "ip", "-n", x, "link", "add", x_if, "type", "veth", "peer", "name", y_if, "netns",
                y,
            ])?;
            for (ns, dev, ip) in [(x, x_if, x_ip), (y, y_if, y_ip)] {
                sh(&["ip", "-n", ns, "addr", "add", ip, "dev", dev])?;
                sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            }
            Ok::<(), String>(())
        };
        pair(a, "mig0", "10.202.0.1/24", b, "mig0", "10.202.0.2/24")?;
        pair(c, "ca", "10.202.2.1/24", a, "up0", "10.202.2.2/24")?;
        pair(c, "cb", "10.202.3.1/24", b, "up0", "10.202.3.2/24")?;
        for ns in [a, b] {
            // 1 Gbit/s each way; no added delay (no sch_netem on this kernel).
            sh(&[
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "mig0", "root", "tbf",
                "rate", "1gbit", "burst", "256kb", "latency", "10ms",
            ])?;
        }
        let service = format!("{SERVICE_IP}/32");
        sh(&["ip", "-n", a, "addr", "add", &service, "dev", "lo"])?;
        sh(&["ip", "-n", c, "route", "add", &service, "via", A_UP])?;
        Ok(hosts)
    }

    /// Namespaces of an earlier run of `tag` whose process is gone.
    fn remove_stale(tag: &str) {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        let prefix = format!("ppmig-{tag}-");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let owner = rest.rsplit('-').next().unwrap_or("");
            if !std::path::Path::new(&format!("/proc/{owner}")).exists() {
                Self::remove(name);
            }
        }
    }

    fn remove(ns: &str) {
        kill_all_in(ns);
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }

    /// `/run/netns/NAME` of a namespace.
    pub fn path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{ns}"))
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// The shell command host b runs before an adopted guest starts: take
    /// the service address over (see the module documentation).
    pub fn take_over_command(&self) -> String {
        format!(
            "ip addr add $PERFPLUS_SERVICE_IP/32 dev lo && ip -n {} route replace $PERFPLUS_SERVICE_IP/32 via {B_UP}",
            self.c
        )
    }

    /// Take the service address over to host b (what
    /// [`take_over_command`](Self::take_over_command) does), from this
    /// process.
    pub fn take_over_to_b(&self) -> Result<(), String> {
        let service = format!("{SERVICE_IP}/32");
        sh(&["ip", "-n", &self.b, "addr", "add", &service, "dev", "lo"])?;
        sh(&[
            "ip", "-n", &self.c, "route", "replace", &service, "via", B_UP,
        ])
    }

    /// Cut (`false`) or restore (`true`) the migration link.
    pub fn set_link(&self, up: bool) -> Result<(), String> {
        sh(&[
            "ip",
            "-n",
            &self.a,
            "link",
            "set",
            "mig0",
            if up { "up" } else { "down" },
        ])
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b, &self.c] {
            Self::remove(ns);
        }
    }
}
