//! The demo's cluster on this machine: hosts, their links, the ping node,
//! and the "outside" where clients live.
//!
//! As root, real network namespaces:
//!
//! ```text
//!   ppdemo-h1            ppdemo-sw (the switch and the outside)           ppdemo-h2 ...
//!   cl0 10.204.0.1 ── c1 ┐ br-cl 10.204.0.254 (cluster link: heartbeats,
//!                        │       migrations; the demo asks for status here)
//!   up0 10.205.0.11 ─ u1 ┤ br-up 10.205.0.254 (uplink: ping node, clients)
//!                        └ route 10.206.0.0/24 on-link: guests' service
//!                          addresses, which move with the guests (ip addr
//!                          + gratuitous ARP)
//! ```
//!
//! Cutting host 1's uplink is its switch port going down (`u1`); killing
//! host 2 is SIGKILL to everything in its namespace; fencing it (the power
//! switch) also takes its links down.
//!
//! Without root, loopback: every host on 127.0.0.1 with its own ports; host
//! i's ping node is 127.0.0.(10+i), probed by UDP, which answers (ICMP port
//! unreachable) until the demo cuts the uplink by binding a socket on the
//! probe port that swallows the probes; a guest keeps its service address
//! (one machine).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where the demo's cluster lives.
pub enum Lab {
    /// Network namespaces (root).
    Netns {
        /// Hosts.
        hosts: usize,
        /// Whether `arping` exists (else the switch's ARP entry is updated
        /// by the demo, standing in for the gratuitous ARP).
        arping: bool,
    },
    /// Loopback (no root).
    Loopback {
        /// Hosts.
        hosts: usize,
        /// Sockets swallowing the ping probes of cut uplinks.
        black_holes: Vec<UdpSocket>,
    },
}

/// The port perfplus's UDP ping probes go to (a closed port answers with
/// ICMP port unreachable: the host is up; a socket bound there swallows
/// them: the host looks unreachable).
const UDP_PROBE_PORT: u16 = 33_434;

/// The switch namespace.
pub const SWITCH: &str = "ppdemo-sw";

/// The namespace of host `i` (1-based).
pub fn host_ns(i: usize) -> String {
    format!("ppdemo-h{i}")
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e} (apt-get install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// PIDs of the processes in namespace `name`.
pub fn pids_in(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL every process in namespace `name` until none is left.
pub fn kill_all_in(name: &str) {
    for _ in 0..50 {
        let pids = pids_in(name);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Lab {
    /// Namespaces as root, loopback otherwise (or when asked).
    pub fn new(hosts: usize, loopback: bool) -> Result<Lab, String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if loopback || !root || !have("ip") {
            return Ok(Lab::Loopback {
                hosts,
                black_holes: Vec::new(),
            });
        }
        let lab = Lab::Netns {
            hosts,
            arping: have("arping"),
        };
        lab.teardown();
        lab.build()?;
        Ok(lab)
    }

    /// Whether hosts live in network namespaces.
    pub fn is_netns(&self) -> bool {
        matches!(self, Lab::Netns { .. })
    }

    /// A one-line description.
    pub fn describe(&self) -> String {
        match self {
            Lab::Netns { hosts, arping } => format!(
                "{hosts} hosts in network namespaces (ppdemo-h1..), a switch with cluster and uplink bridges{}",
                if *arping { "" } else { "; no arping: the demo refreshes the switch's ARP entry when a guest moves" }
            ),
            Lab::Loopback { hosts, .. } => format!(
                "{hosts} hosts on loopback (not root: no namespaces; the uplink cut swallows the host's ping probes)"
            ),
        }
    }

    fn build(&self) -> Result<(), String> {
        let Lab::Netns { hosts, .. } = self else {
            return Ok(());
        };
        ip(&["netns", "add", SWITCH])?;
        ip(&["-n", SWITCH, "link", "set", "lo", "up"])?;
        for bridge in ["br-cl", "br-up"] {
            ip(&["-n", SWITCH, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", SWITCH, "link", "set", bridge, "up"])?;
        }
        ip(&[
            "-n",
            SWITCH,
            "addr",
            "add",
            "10.205.0.254/24",
            "dev",
            "br-up",
        ])?;
        // The admin's seat: status queries come from here.
        ip(&[
            "-n",
            SWITCH,
            "addr",
            "add",
            "10.204.0.254/24",
            "dev",
            "br-cl",
        ])?;
        ip(&[
            "-n",
            SWITCH,
            "route",
            "add",
            "10.206.0.0/24",
            "dev",
            "br-up",
            "scope",
            "link",
        ])?;
        for i in 1..=*hosts {
            let ns = host_ns(i);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            for (inner, outer, bridge, addr) in [
                ("cl0", format!("c{i}"), "br-cl", format!("10.204.0.{i}/24")),
                (
                    "up0",
                    format!("u{i}"),
                    "br-up",
                    format!("10.205.0.{}/24", 10 + i),
                ),
            ] {
                ip(&[
                    "link", "add", inner, "netns", &ns, "type", "veth", "peer", "name", &outer,
                    "netns", SWITCH,
                ])?;
                ip(&["-n", &ns, "addr", "add", &addr, "dev", inner])?;
                ip(&["-n", &ns, "link", "set", inner, "up"])?;
                ip(&["-n", SWITCH, "link", "set", &outer, "master", bridge])?;
                ip(&["-n", SWITCH, "link", "set", &outer, "up"])?;
            }
            ip(&["-n", &ns, "route", "add", "default", "via", "10.205.0.254"])?;
        }
        Ok(())
    }

    /// Remove every namespace (killing what runs inside).
    pub fn teardown(&self) {
        if let Lab::Netns { hosts, .. } = self {
            for i in 1..=*hosts + 8 {
                let ns = host_ns(i);
                if std::path::Path::new("/run/netns").join(&ns).exists() {
                    kill_all_in(&ns);
                    let _ = ip(&["netns", "del", &ns]);
                }
            }
            if std::path::Path::new("/run/netns").join(SWITCH).exists() {
                kill_all_in(SWITCH);
                let _ = ip(&["netns", "del", SWITCH]);
            }
        }
    }

    /// Host `i`'s cluster address.
    pub fn cluster_ip(&self, i: usize) -> String {
        match self {
            Lab::Netns { .. } => format!("10.204.0.{i}"),
            Lab::Loopback { .. } => "127.0.0.1".into(),
        }
    }

    /// Host `i`'s heartbeat, control and migration ports.
    pub fn ports(&self, i: usize) -> (u16, u16, u16) {
        match self {
            Lab::Netns { .. } => (7694, 7790, 7791),
            Lab::Loopback { .. } => {
                let i = u16::try_from(i).unwrap_or(0);
                (17600 + i, 17620 + i, 17640 + i)
            }
        }
    }

    /// The ping node of host `i` and how to probe it.
    pub fn ping(&self, i: usize) -> (String, String) {
        match self {
            Lab::Netns { .. } => ("10.205.0.254".into(), "icmp".into()),
            // Its own loopback address, probed on perfplus's UDP probe port.
            Lab::Loopback { .. } => (format!("127.0.0.{}", 10 + i), "udp".into()),
        }
    }

    /// The service address of guest number `g` (1-based).
    pub fn service(&self, g: usize) -> SocketAddr {
        match self {
            Lab::Netns { .. } => {
                SocketAddr::from(([10, 206, 0, u8::try_from(g).unwrap_or(0)], 7000))
            }
            Lab::Loopback { .. } => {
                let port = 17700 + u16::try_from(g).unwrap_or(0);
                SocketAddr::from(([127, 0, 0, 1], port))
            }
        }
    }

    /// The interface guests' service addresses move to, if any.
    pub fn service_interface(&self) -> Option<&'static str> {
        self.is_netns().then_some("up0")
    }

    /// The clients' network namespace, if any.
    pub fn client_netns(&self) -> Option<PathBuf> {
        self.is_netns()
            .then(|| PathBuf::from("/run/netns").join(SWITCH))
    }

    /// A command running `program` as host `i`.
    pub fn host_command(&self, i: usize, program: &std::path::Path) -> Command {
        match self {
            Lab::Netns { .. } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &host_ns(i)]).arg(program);
                c
            }
            Lab::Loopback { .. } => Command::new(program),
        }
    }

    /// Cut host `i`'s uplink.
    pub fn cut_uplink(&mut self, i: usize) -> Result<(), String> {
        match self {
            Lab::Netns { .. } => ip(&["-n", SWITCH, "link", "set", &format!("u{i}"), "down"]),
            Lab::Loopback { black_holes, .. } => {
                let (ping, _) = Lab::Loopback {
                    hosts: 0,
                    black_holes: Vec::new(),
                }
                .ping(i);
                let target = format!("{ping}:{UDP_PROBE_PORT}");
                let socket = UdpSocket::bind(&target).map_err(|e| {
                    format!("cannot cut host {i}'s uplink (bind udp {target}): {e}")
                })?;
                black_holes.push(socket);
                Ok(())
            }
        }
    }

    /// Point the switch's ARP entry for a guest's address at the host that
    /// now serves it (only when `arping` is missing).
    pub fn refresh_neighbour(&self, service: SocketAddr, host: usize) {
        if let Lab::Netns { arping: false, .. } = self {
            let mac = Command::new("ip")
                .args(["-n", &host_ns(host), "-br", "link", "show", "up0"])
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .nth(2)
                        .map(str::to_string)
                });
            if let Some(mac) = mac {
                let _ = ip(&[
                    "-n",
                    SWITCH,
                    "neigh",
                    "replace",
                    &service.ip().to_string(),
                    "lladdr",
                    &mac,
                    "dev",
                    "br-up",
                ]);
            }
        }
    }
}

/// Power host `i` off (the fence, in namespaces): kill what runs there and
/// take its links down.
pub fn power_off(i: usize) {
    let ns = host_ns(i);
    kill_all_in(&ns);
    for link in ["cl0", "up0"] {
        let _ = ip(&["-n", &ns, "link", "set", link, "down"]);
    }
}
