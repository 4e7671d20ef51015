//! The native TOML configuration file.
//!
//! ```toml
//! cluster = "lab"
//! node = "alpha"                # this node (default: the host name)
//! key_file = "/etc/perfplus/key"  # or key = "<hex>", or authkeys = "/etc/ha.d/authkeys"
//! interval_ms = 50
//! initial_wait_ms = 10000
//! auto_failback = false
//! incarnation_file = "/var/lib/perfplus/incarnation"
//! realtime = true               # SCHED_RR for heartbeat threads (needs CAP_SYS_NICE)
//!
//! [detector]                    # all optional
//! method = "phi"                # or "deadline" (with warn_ms, dead_ms)
//! suspect_phi = 6.0
//! convict_phi = 12.0
//! min_std_deviation_ms = 5
//! pause_tolerance_ms = 250
//! observer_pause_ms = 100
//!
//! [[nodes]]
//! id = 1
//! name = "alpha"
//! votes = 1                     # optional
//!
//! [[links]]
//! kind = "unicast"              # or "multicast", "broadcast"
//! bind = "10.201.1.1"           # unicast: optional local address
//! interface = "eth0"            # optional for unicast and multicast
//! port = 7694                   # optional
//! peers = ["10.201.1.2"]        # unicast: peer addresses (port optional)
//! # multicast: group = "239.255.42.1", ttl = 1, loopback = false,
//! #            interface_address = "10.201.1.1"
//!
//! [ping]
//! nodes = ["10.201.0.254"]
//! interval_ms = 200
//! dead_ms = 1000
//! method = "auto"               # "icmp", "udp", or "tcp:22"
//!
//! [fencing]
//! required = true
//! command = ["/usr/local/sbin/fence-node"]
//! tie_delay_ms = 5000
//! ```
//!
//! The HA keys (`capacity_mib`, `control` and `migration` on `[[nodes]]`,
//! `[orchestrator]`, `[[resources]]`) are described in
//! [`super::cluster`].
//!
//! Unknown keys are errors (a typo must not silently fall back to a
//! default).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cluster::{HostKeys, ResourceFile, Tunables};
use super::heartbeat::AuthKeys;
use super::{local_hostname, ConfigError, LinkConfig, NodeConfig, PingMethod, DEFAULT_PORT};
use crate::detector::{Method, PhiConfig};
use crate::membership::{Fencing, NodeId, NodeSpec};
use crate::wire::ClusterKey;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    cluster: String,
    node: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    authkeys: Option<PathBuf>,
    interval_ms: Option<u64>,
    initial_wait_ms: Option<u64>,
    auto_failback: Option<bool>,
    incarnation_file: Option<PathBuf>,
    port: Option<u16>,
    detector: Option<Detector>,
    nodes: Vec<Node>,
    links: Vec<Link>,
    ping: Option<Ping>,
    fencing: Option<FencingFile>,
    orchestrator: Option<Tunables>,
    resources: Option<Vec<ResourceFile>>,
    realtime: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Detector {
    method: Option<String>,
    suspect_phi: Option<f64>,
    convict_phi: Option<f64>,
    min_std_deviation_ms: Option<f64>,
    min_loss: Option<f64>,
    window: Option<u32>,
    pause_tolerance_ms: Option<u64>,
    observer_pause_ms: Option<u64>,
    warn_ms: Option<u64>,
    dead_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Node {
    id: u16,
    name: String,
    votes: Option<u32>,
    capacity_mib: Option<u64>,
    control: Option<SocketAddr>,
    migration: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    kind: String,
    interface: Option<String>,
    bind: Option<IpAddr>,
    port: Option<u16>,
    peers: Option<Vec<String>>,
    group: Option<Ipv4Addr>,
    interface_address: Option<Ipv4Addr>,
    ttl: Option<u8>,
    loopback: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ping {
    nodes: Vec<IpAddr>,
    interval_ms: Option<u64>,
    dead_ms: Option<u64>,
    method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FencingFile {
    required: Option<bool>,
    command: Option<Vec<String>>,
    tie_delay_ms: Option<u64>,
}

pub(super) fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
    parse_for(text, path, None)
}

/// As [`parse`], for the node named `node` if given (over the file's
/// `node` and the host name).
pub(super) fn parse_for(
    text: &str,
    path: &Path,
    node: Option<&str>,
) -> Result<NodeConfig, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |span| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        });
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            message: e.message().trim().to_string(),
        }
    })?;
    let invalid = |what: String| ConfigError::Invalid {
        source_name: path.display().to_string(),
        what,
    };
    let relative = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            path.parent().unwrap_or(Path::new(".")).join(p)
        }
    };

    let key = match (&file.key, &file.key_file, &file.authkeys) {
        (Some(hex), None, None) => {
            ClusterKey::derive(&decode_hex(hex).map_err(|e| invalid(format!("`key`: {e}")))?)
        }
        (None, Some(key_file), None) => {
            let key_path = relative(key_file);
            let bytes = std::fs::read(&key_path).map_err(|source| ConfigError::Read {
                path: key_path.clone(),
                source,
            })?;
            if bytes.len() < 16 {
                return Err(invalid(format!("key file {} holds {} bytes; use at least 16 random bytes (e.g. head -c 32 /dev/urandom)", key_path.display(), bytes.len())));
            }
            ClusterKey::derive(&bytes)
        }
        (None, None, Some(authkeys)) => AuthKeys::read(&relative(authkeys))?.cluster_key(),
        _ => {
            return Err(invalid(
                "give exactly one of `key`, `key_file` or `authkeys`".into(),
            ))
        }
    };

    let nodes: Vec<NodeSpec> = file
        .nodes
        .iter()
        .map(|n| NodeSpec {
            id: NodeId(n.id),
            name: n.name.clone(),
            votes: n.votes.unwrap_or(1),
        })
        .collect();
    let local_name = match node.map(str::to_string).or(file.node) {
        Some(name) => name,
        None => local_hostname()?,
    };
    let local = nodes
        .iter()
        .find(|n| n.name == local_name)
        .map(|n| n.id)
        .ok_or_else(|| {
            invalid(format!(
                "this node `{local_name}` is not among [[nodes]] ({})",
                nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;

    let default_port = file.port.unwrap_or(DEFAULT_PORT);
    let mut links = Vec::new();
    for (i, link) in file.links.iter().enumerate() {
        let port = link.port.unwrap_or(default_port);
        let at = |what: &str| invalid(format!("[[links]] #{}: {what}", i + 1));
        links.push(match link.kind.as_str() {
            "unicast" => {
                let peers = link
                    .peers
                    .as_ref()
                    .ok_or_else(|| at("a unicast link needs `peers`"))?
                    .iter()
                    .map(|p| {
                        p.parse::<SocketAddr>()
                            .or_else(|_| p.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, port)))
                            .map_err(|_| {
                                at(&format!("peer `{p}` is not an IP address or address:port"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                LinkConfig::Unicast {
                    interface: link.interface.clone(),
                    bind: link.bind,
                    port,
                    peers,
                }
            }
            "multicast" => LinkConfig::Multicast {
                interface: link.interface.clone(),
                interface_address: link.interface_address,
                group: link
                    .group
                    .ok_or_else(|| at("a multicast link needs `group`"))?,
                port,
                ttl: link.ttl.unwrap_or(1),
                loopback: link.loopback.unwrap_or(false),
            },
            "broadcast" => LinkConfig::Broadcast {
                interface: link
                    .interface
                    .clone()
                    .ok_or_else(|| at("a broadcast link needs `interface`"))?,
                port,
            },
            other => {
                return Err(at(&format!(
                    "unknown kind `{other}`: expected unicast, multicast or broadcast"
                )))
            }
        });
    }

    let host_keys: Vec<HostKeys> = file
        .nodes
        .iter()
        .map(|n| HostKeys {
            capacity_mib: n.capacity_mib,
            control: n.control,
            migration: n.migration,
        })
        .collect();
    let cluster = super::cluster::build(
        &nodes,
        &host_keys,
        file.resources.unwrap_or_default(),
        file.orchestrator,
        &invalid,
    )?;

    let mut config = NodeConfig::new(&file.cluster, key);
    config.cluster = cluster;
    config.source = path.display().to_string();
    config.nodes = nodes;
    config.local = local;
    config.links = links;
    config.interval_ms = file.interval_ms.unwrap_or(config.interval_ms);
    config.initial_wait_ms = file.initial_wait_ms.unwrap_or(config.initial_wait_ms);
    config.auto_failback = file.auto_failback.unwrap_or(false);
    config.incarnation_file = file.incarnation_file.as_deref().map(relative);
    config.realtime = file.realtime.unwrap_or(true);

    if let Some(d) = file.detector {
        let phi_defaults = PhiConfig::default();
        config.detector.method = match d.method.as_deref().unwrap_or("phi") {
            "phi" => Method::Phi(PhiConfig {
                suspect_phi: d.suspect_phi.unwrap_or(phi_defaults.suspect_phi),
                convict_phi: d.convict_phi.unwrap_or(phi_defaults.convict_phi),
                min_std_deviation_us: d
                    .min_std_deviation_ms
                    .map_or(phi_defaults.min_std_deviation_us, |ms| {
                        crate::detector::us_from_f64(ms * 1_000.0)
                    }),
                window: d.window.unwrap_or(phi_defaults.window),
                min_loss: d.min_loss.unwrap_or(phi_defaults.min_loss),
            }),
            "deadline" => {
                let dead_ms = d.dead_ms.ok_or_else(|| {
                    invalid("[detector] method \"deadline\" needs `dead_ms`".into())
                })?;
                Method::Deadline {
                    warn_us: d.warn_ms.unwrap_or(dead_ms / 2) * 1_000,
                    dead_us: dead_ms * 1_000,
                }
            }
            other => {
                return Err(invalid(format!(
                    "[detector] method `{other}`: expected \"phi\" or \"deadline\""
                )))
            }
        };
        if let Some(ms) = d.pause_tolerance_ms {
            config.detector.pause_tolerance_us = ms * 1_000;
        }
        if let Some(ms) = d.observer_pause_ms {
            config.detector.observer_pause_threshold_us = ms * 1_000;
        }
    }
    if let Some(p) = file.ping {
        config.ping_nodes = p.nodes;
        if let Some(ms) = p.interval_ms {
            config.ping.interval_us = ms * 1_000;
        }
        if let Some(ms) = p.dead_ms {
            config.ping.dead_us = ms * 1_000;
        }
        config.ping_method = match p.method.as_deref().unwrap_or("auto") {
            "auto" => PingMethod::Auto,
            "icmp" => PingMethod::Icmp,
            "udp" => PingMethod::Udp,
            other => match other.strip_prefix("tcp:").and_then(|p| p.parse::<u16>().ok()) {
                Some(port) if port != 0 => PingMethod::Tcp(port),
                _ => return Err(invalid(format!("[ping] method `{other}`: expected \"auto\", \"icmp\", \"udp\" or \"tcp:<port>\""))),
            },
        };
    }
    if let Some(f) = file.fencing {
        config.fencing = if f.required.unwrap_or(true) {
            Fencing::Required
        } else {
            Fencing::Disabled
        };
        config.fence_command = f.command.filter(|c| !c.is_empty());
        if let Some(ms) = f.tie_delay_ms {
            config.tie_fence_delay_ms = ms;
        }
    }
    config.validate()?;
    Ok(config)
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if text.len() < 32 || text.len() % 2 != 0 {
        return Err("expected at least 32 hex digits (16 bytes), an even count".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| format!("`{}` is not a hex byte", &text[i..i + 2]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::DetectorConfig;

    const SAMPLE: &str = r#"
cluster = "lab"
node = "beta"
key = "00112233445566778899aabbccddeeff"
interval_ms = 50

[detector]
pause_tolerance_ms = 2000

[[nodes]]
id = 1
name = "alpha"

[[nodes]]
id = 2
name = "beta"
votes = 2

[[links]]
kind = "unicast"
bind = "10.201.1.2"
peers = ["10.201.1.1", "10.201.1.3:9000"]

[[links]]
kind = "multicast"
group = "239.255.42.1"
interface_address = "10.201.2.2"

[ping]
nodes = ["10.201.0.254"]
method = "tcp:22"

[fencing]
command = ["/bin/true"]
"#;

    #[test]
    fn native_file_is_read_into_the_model() {
        let c = parse(SAMPLE, Path::new("/etc/perfplus/node.toml")).unwrap();
        assert_eq!(c.local, NodeId(2));
        assert_eq!(c.nodes[1].votes, 2);
        assert_eq!(c.links.len(), 2);
        match &c.links[0] {
            LinkConfig::Unicast { peers, port, .. } => {
                assert_eq!(*port, DEFAULT_PORT);
                assert_eq!(peers[0], "10.201.1.1:7694".parse().unwrap());
                assert_eq!(peers[1], "10.201.1.3:9000".parse().unwrap());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.detector.pause_tolerance_us, 2_000_000);
        assert_eq!(c.detector.method, DetectorConfig::default().method);
        assert_eq!(c.ping_method, PingMethod::Tcp(22));
        assert_eq!(c.fencing, Fencing::Required);
        assert_eq!(c.fence_command, Some(vec!["/bin/true".to_string()]));
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let text = SAMPLE.replace("interval_ms = 50", "interval_ms = \"fast\"");
        let err = parse(&text, Path::new("node.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("node.toml:5: "), "{err}");
        assert!(err.contains("expected u64"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = SAMPLE.replace("interval_ms = 50", "interval_msec = 50");
        let err = parse(&text, Path::new("node.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("node.toml:5: unknown field `interval_msec`"),
            "{err}"
        );
    }

    #[test]
    fn a_node_named_by_the_caller_wins_over_the_file_and_the_host_name() {
        // One file for every host: no `node`, and the host name unknown.
        let text = SAMPLE.replace("node = \"beta\"", "");
        let c = parse_for(&text, Path::new("node.toml"), Some("alpha")).unwrap();
        assert_eq!(c.local, NodeId(1));
        let c = parse_for(SAMPLE, Path::new("node.toml"), Some("alpha")).unwrap();
        assert_eq!(c.local, NodeId(1), "over the file's `node = \"beta\"`");
        let err = parse_for(SAMPLE, Path::new("node.toml"), Some("gamma"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "node.toml: this node `gamma` is not among [[nodes]] (alpha, beta)"
        );
    }

    #[test]
    fn semantic_errors_name_the_file_and_the_fix() {
        let text = SAMPLE.replace("node = \"beta\"", "node = \"gamma\"");
        let err = parse(&text, Path::new("node.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "node.toml: this node `gamma` is not among [[nodes]] (alpha, beta)"
        );
        let text = SAMPLE.replace("239.255.42.1", "10.0.0.1");
        let err = parse(&text, Path::new("node.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.1 is not a multicast group"), "{err}");
        let text = SAMPLE.replace(
            "key = \"00112233445566778899aabbccddeeff\"",
            "key = \"0011\"",
        );
        let err = parse(&text, Path::new("node.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`key`: expected at least 32 hex digits"),
            "{err}"
        );
    }
}
