//! Node configuration: one model, [`NodeConfig`], read from a native TOML
//! file ([`NodeConfig::from_toml_file`]) or from Heartbeat's own `ha.cf` and
//! `authkeys` ([`heartbeat::HaCf`], [`heartbeat::AuthKeys`],
//! [`NodeConfig::from_heartbeat`]), or built in code (the C builders do).
//!
//! Every error names the file, the line when there is one, and what was
//! expected; `authkeys` readable by anyone but its owner is refused, as
//! Heartbeat refuses it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::detector::{DetectorConfig, PingConfig};
use crate::membership::{Fencing, MembershipConfig, NodeId, NodeSpec};
use crate::wire::hb3::Keyring;
use crate::wire::{ClusterId, ClusterKey};

pub mod cluster;
pub mod heartbeat;
mod native;

pub use cluster::{ClusterConfig, DriverKind, HostConfig, ResourceConfig};

/// The default UDP port of perfplus heartbeats.
pub const DEFAULT_PORT: u16 = 7694;

/// One heartbeat link: a socket on which heartbeats go out and come in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkConfig {
    /// UDP unicast to each peer address.
    Unicast {
        /// Bind to this interface (SO_BINDTODEVICE), if given.
        interface: Option<String>,
        /// Bind to this local address (default: any).
        bind: Option<IpAddr>,
        /// UDP port to listen on.
        port: u16,
        /// Peer addresses to send to (this node's own is ignored).
        peers: Vec<SocketAddr>,
    },
    /// UDP multicast to a group.
    Multicast {
        /// Interface to send and join on, if given.
        interface: Option<String>,
        /// Local address of that interface (an alternative to the name).
        interface_address: Option<Ipv4Addr>,
        /// The group.
        group: Ipv4Addr,
        /// The port.
        port: u16,
        /// Multicast TTL.
        ttl: u8,
        /// Whether this node receives its own packets (they are dropped and
        /// counted anyway).
        loopback: bool,
    },
    /// UDP broadcast on an interface.
    Broadcast {
        /// Interface (required: broadcasts need one).
        interface: String,
        /// The port.
        port: u16,
    },
}

/// How ping nodes are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMethod {
    /// ICMP echo if the host allows it (raw socket or ping socket), else
    /// UDP.
    Auto,
    /// ICMP echo only.
    Icmp,
    /// A UDP datagram to a closed port; the ICMP "port unreachable" answer
    /// proves the host is up.
    Udp,
    /// A TCP connection attempt to this port; any answer (SYN-ACK or RST)
    /// proves the host is up.
    Tcp(u16),
}

/// The protocol a node speaks on its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// perfplus heartbeats (`wire::heartbeat`), authenticated with
    /// [`NodeConfig::key`].
    Perfplus,
    /// Heartbeat 3's packets: the node is one node of a Heartbeat cluster
    /// (`heartbeat::Member` speaks for it).
    Heartbeat3(Heartbeat3),
}

/// How a node takes part in a Heartbeat 3 cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat3 {
    /// The `authkeys` keys: every key verifies, the active one signs.
    pub keys: Keyring,
    /// The deadtime this node advertises (`dt`): how long Heartbeat nodes
    /// wait for it (Heartbeat uses the sender's, not its own).
    pub deadtime_ms: u64,
    /// Where the node's UUID and generation persist across restarts
    /// (Heartbeat nodes reject a generation that goes back).
    pub state_dir: PathBuf,
}

/// Everything a node needs to join its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Where this configuration came from (for messages).
    pub source: String,
    /// Cluster name (Heartbeat: `cluster`, default `linux-ha`).
    pub cluster_name: String,
    /// Every node, this one included.
    pub nodes: Vec<NodeSpec>,
    /// This node.
    pub local: NodeId,
    /// Heartbeat links.
    pub links: Vec<LinkConfig>,
    /// The key that authenticates heartbeats.
    pub key: ClusterKey,
    /// Heartbeat interval, ms.
    pub interval_ms: u64,
    /// Failure detection.
    pub detector: DetectorConfig,
    /// Nodes not heard from this long after start are dead, ms.
    pub initial_wait_ms: u64,
    /// Ping nodes.
    pub ping_nodes: Vec<IpAddr>,
    /// Ping timing.
    pub ping: PingConfig,
    /// Ping probe method.
    pub ping_method: PingMethod,
    /// Fencing policy.
    pub fencing: Fencing,
    /// Command that fences a node (argv); run with `PERFPLUS_FENCE_NODE`,
    /// `PERFPLUS_FENCE_NODE_ID` and `PERFPLUS_FENCE_INCARNATION` in its
    /// environment; exit status 0 confirms. Without it, fencing requests go
    /// to the application's event handler.
    pub fence_command: Option<Vec<String>>,
    /// In a tie this node would lose by node id, wait this long before
    /// fencing, ms.
    pub tie_fence_delay_ms: u64,
    /// Move resources back to their preferred node when it returns
    /// (Heartbeat's `auto_failback`; for the orchestrator).
    pub auto_failback: bool,
    /// File keeping the last incarnation, so that it grows even if the
    /// clock goes back (Heartbeat's `hb_generation`).
    pub incarnation_file: Option<PathBuf>,
    /// The protocol on the links.
    pub protocol: Protocol,
    /// Things worth telling the admin that are not errors.
    pub warnings: Vec<String>,
    /// Hosts' capacities and addresses, resources, orchestrator settings
    /// (empty: membership only).
    pub cluster: ClusterConfig,
    /// Run the threads that receive heartbeats, probe ping nodes and judge
    /// peers at real-time priority (SCHED_RR 1), as Heartbeat and Corosync
    /// do by default: a detector starved by a busy host would otherwise
    /// see silence that is not there. Needs CAP_SYS_NICE; without it the
    /// node runs at normal priority and says so.
    pub realtime: bool,
}

impl NodeConfig {
    /// A configuration with defaults: nodes, links and key must be added
    /// (the C builders start here).
    pub fn new(cluster_name: &str, key: ClusterKey) -> Self {
        Self {
            source: "built in code".into(),
            cluster_name: cluster_name.into(),
            nodes: Vec::new(),
            local: NodeId(0),
            links: Vec::new(),
            key,
            interval_ms: 50,
            detector: DetectorConfig::default(),
            initial_wait_ms: 10_000,
            ping_nodes: Vec::new(),
            ping: PingConfig::default(),
            ping_method: PingMethod::Auto,
            fencing: Fencing::Required,
            fence_command: None,
            tie_fence_delay_ms: 5_000,
            auto_failback: false,
            incarnation_file: None,
            protocol: Protocol::Perfplus,
            warnings: Vec::new(),
            cluster: ClusterConfig::default(),
            realtime: true,
        }
    }

    /// Read a native TOML configuration file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        native::parse(&text, path)
    }

    /// Read a native TOML configuration file as the node named `node` (an
    /// admin tool's `--node`), whatever the file's `node` or the host name
    /// say; `None` is [`NodeConfig::from_toml_file`]. One file can then
    /// serve every host, each picked by name.
    pub fn from_toml_file_for(path: &Path, node: Option<&str>) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        native::parse_for(&text, path, node)
    }

    /// Parse native TOML text; `path` is used in messages (and to resolve
    /// relative key files).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        native::parse(text, path)
    }

    /// Build from Heartbeat's files, for the node named `local_name`
    /// (Heartbeat uses `uname -n`; see [`local_hostname`]). The node speaks
    /// Heartbeat 3's protocol ([`Protocol::Heartbeat3`], state in
    /// [`heartbeat::DEFAULT_STATE_DIR`]); set [`NodeConfig::protocol`] to
    /// [`Protocol::Perfplus`] for a cluster of perfplus nodes only.
    pub fn from_heartbeat(
        ha_cf: &heartbeat::HaCf,
        authkeys: &heartbeat::AuthKeys,
        local_name: &str,
    ) -> Result<Self, ConfigError> {
        heartbeat::to_node_config(ha_cf, authkeys, local_name)
    }

    /// The cluster id on the wire: from the name and the node list.
    pub fn cluster_id(&self) -> ClusterId {
        ClusterId::derive(
            &self.cluster_name,
            self.nodes.iter().map(|n| (n.id, n.name.as_str())),
        )
    }

    /// The local node's name.
    pub fn local_name(&self) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.id == self.local)
            .map(|n| n.name.as_str())
    }

    /// The membership core's configuration.
    pub fn membership(&self) -> MembershipConfig {
        MembershipConfig {
            nodes: self.nodes.clone(),
            local: self.local,
            link_count: self.links.len().max(1),
            interval_ms: self.interval_ms,
            detector: self.detector,
            initial_wait_us: self.initial_wait_ms.saturating_mul(1_000),
            fencing: self.fencing,
            tie_fence_delay_us: self.tie_fence_delay_ms.saturating_mul(1_000),
            fence_retry_us: 2_000_000,
        }
    }

    /// Check the whole configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: String| ConfigError::Invalid {
            source_name: self.source.clone(),
            what,
        };
        if self.links.is_empty() {
            return Err(invalid(
                "no heartbeat link is configured (add a unicast, multicast or broadcast link)"
                    .into(),
            ));
        }
        if self.links.len() > 16 {
            return Err(invalid(format!(
                "{} links configured; at most 16 are supported",
                self.links.len()
            )));
        }
        for link in &self.links {
            if let LinkConfig::Multicast { group, .. } = link {
                if !group.is_multicast() {
                    return Err(invalid(format!(
                        "{group} is not a multicast group address (224.0.0.0/4)"
                    )));
                }
            }
            if let LinkConfig::Unicast { peers, .. } = link {
                if peers.is_empty() {
                    return Err(invalid("a unicast link has no peer addresses".into()));
                }
            }
        }
        if let Protocol::Heartbeat3(hb) = &self.protocol {
            if self.interval_ms == 0 || hb.deadtime_ms <= 2 * self.interval_ms {
                return Err(invalid(format!(
                    "the advertised deadtime ({} ms) must be more than twice the keepalive ({} ms), as Heartbeat requires",
                    hb.deadtime_ms, self.interval_ms
                )));
            }
            if let Some(bad) = self.nodes.iter().find(|n| n.name != n.name.to_lowercase()) {
                return Err(invalid(format!(
                    "node name `{}` must be lower case: Heartbeat lower-cases node names",
                    bad.name
                )));
            }
        }
        if self.ping_nodes.len() > 255 {
            return Err(invalid("more than 255 ping nodes".into()));
        }
        if self.ping.interval_us == 0 || self.ping.dead_us < self.ping.interval_us {
            return Err(invalid(
                "ping dead time must be at least the ping interval, and the interval positive"
                    .into(),
            ));
        }
        self.membership()
            .validate()
            .map_err(|e| invalid(e.to_string()))
    }
}

/// The host name, as `uname -n` prints it (Heartbeat's node name).
pub fn local_hostname() -> Result<String, ConfigError> {
    let path = Path::new("/proc/sys/kernel/hostname");
    Ok(read_text(path)?.trim().to_string())
}

/// A configuration that cannot be used. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of a file is wrong.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// `authkeys` can be read by others than its owner.
    #[error("{path} has mode {mode:04o}: it holds the cluster key, so it must not be readable or writable by group or others (chmod 600 {path}; Heartbeat refuses it too)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// `authkeys` is owned by someone other than root or this user.
    #[error("{path} is owned by uid {owner}; it must belong to root or to the user running perfplus (uid {me})")]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's user.
        me: u32,
    },
    /// The configuration is complete but cannot work.
    #[error("{source_name}: {what}")]
    Invalid {
        /// Where it came from.
        source_name: String,
        /// What is wrong.
        what: String,
    },
}

pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}
