//! The HA part of a node's configuration: what each host can hold and
//! where its control and migration services listen, the resources (guests)
//! the cluster keeps running, and the orchestrator's tunables. Read from
//! the native TOML file; a configuration without `[[resources]]` runs
//! membership only.
//!
//! ```toml
//! [[nodes]]
//! id = 1
//! name = "alpha"
//! capacity_mib = 8192            # guest memory this host can hold
//! control = "10.204.0.1:7790"    # control channel (needed with resources)
//! migration = "10.204.0.1:7791"  # where incoming live migrations arrive
//!
//! [orchestrator]                 # all optional
//! enabled = true                 # false: carry out requests only (Pacemaker decides)
//! uplink_grace_ms = 1000
//! min_move_interval_ms = 60000
//! migration_retry_ms = 5000
//! max_migrations_per_host = 1
//!
//! [[resources]]
//! name = "web"
//! memory_mib = 512
//! home = "alpha"                 # where it starts; failback target
//! allowed = ["alpha", "beta"]    # optional pinning
//! sticky = false
//! driver = "arena"               # or "ocf:heartbeat:Xen" (any OCF agent)
//! params = { workload = "kv", listen = "10.206.0.1:7000" }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::membership::{NodeId, NodeSpec};
use crate::orchestrator::{HostSpec, OrchestratorConfig, ResourceSpec};

/// A host's HA settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The node.
    pub id: NodeId,
    /// Guest memory it can hold, MiB.
    pub capacity_mib: u64,
    /// Its control-channel address.
    pub control: Option<SocketAddr>,
    /// Its migration receiver's address.
    pub migration: Option<SocketAddr>,
}

/// How a resource is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverKind {
    /// A perfplus arena guest (real memory, live-migrated by Perf+).
    Arena,
    /// An OCF resource agent `ocf:<provider>:<agent>`.
    Ocf {
        /// The provider (`heartbeat`, ...).
        provider: String,
        /// The agent (`Xen`, `Dummy`, ...).
        agent: String,
    },
}

impl std::str::FromStr for DriverKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "arena" {
            return Ok(DriverKind::Arena);
        }
        match text.split(':').collect::<Vec<_>>()[..] {
            ["ocf", provider, agent] if !provider.is_empty() && !agent.is_empty() => {
                Ok(DriverKind::Ocf {
                    provider: provider.into(),
                    agent: agent.into(),
                })
            }
            _ => Err(format!(
                "driver `{text}`: expected \"arena\" or \"ocf:<provider>:<agent>\""
            )),
        }
    }
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverKind::Arena => f.write_str("arena"),
            DriverKind::Ocf { provider, agent } => write!(f, "ocf:{provider}:{agent}"),
        }
    }
}

/// A resource the cluster keeps running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    /// The orchestrator's view of it.
    pub spec: ResourceSpec,
    /// Its driver.
    pub driver: DriverKind,
    /// Driver parameters (OCF: `OCF_RESKEY_*`).
    pub params: BTreeMap<String, String>,
}

/// The HA section of a node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterConfig {
    /// Per-host settings, one per node.
    pub hosts: Vec<HostConfig>,
    /// The resources.
    pub resources: Vec<ResourceConfig>,
    /// Orchestrator tunables (the defaults of [`OrchestratorConfig::new`]
    /// unless set).
    pub tunables: Tunables,
}

/// Orchestrator settings from the file; `None` keeps the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunables {
    /// `false`: this host only carries out requests (from an admin tool or
    /// an OCF agent driven by Pacemaker) and never decides on its own.
    pub enabled: Option<bool>,
    /// See [`OrchestratorConfig::uplink_grace_ms`].
    pub uplink_grace_ms: Option<u64>,
    /// See [`OrchestratorConfig::min_move_interval_ms`].
    pub min_move_interval_ms: Option<u64>,
    /// See [`OrchestratorConfig::migration_retry_ms`].
    pub migration_retry_ms: Option<u64>,
    /// See [`OrchestratorConfig::max_migrations_per_host`].
    pub max_migrations_per_host: Option<usize>,
}

impl ClusterConfig {
    /// The orchestrator configuration for `local`.
    pub fn orchestrator(&self, local: NodeId, auto_failback: bool) -> OrchestratorConfig {
        let hosts = self
            .hosts
            .iter()
            .map(|h| HostSpec {
                id: h.id,
                capacity_mib: h.capacity_mib,
            })
            .collect();
        let mut config = OrchestratorConfig::new(local, hosts);
        let t = self.tunables;
        config.auto_failback = auto_failback;
        config.uplink_grace_ms = t.uplink_grace_ms.unwrap_or(config.uplink_grace_ms);
        config.min_move_interval_ms = t
            .min_move_interval_ms
            .unwrap_or(config.min_move_interval_ms);
        config.migration_retry_ms = t.migration_retry_ms.unwrap_or(config.migration_retry_ms);
        config.max_migrations_per_host = t
            .max_migrations_per_host
            .unwrap_or(config.max_migrations_per_host);
        config
    }

    /// Whether perfplus decides placements (`[orchestrator] enabled`,
    /// default true), or only carries out requests.
    pub fn orchestrates(&self) -> bool {
        self.tunables.enabled.unwrap_or(true)
    }

    /// The host settings of `id`.
    pub fn host(&self, id: NodeId) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Option<&ResourceConfig> {
        self.resources.iter().find(|r| r.spec.name == name)
    }
}

/// `[[nodes]]` keys this section adds (read by the native parser).
#[derive(Debug, Clone, Default)]
pub(super) struct HostKeys {
    pub(super) capacity_mib: Option<u64>,
    pub(super) control: Option<SocketAddr>,
    pub(super) migration: Option<SocketAddr>,
}

/// A `[[resources]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResourceFile {
    name: String,
    memory_mib: u64,
    home: Option<String>,
    allowed: Option<Vec<String>>,
    sticky: Option<bool>,
    driver: String,
    params: Option<BTreeMap<String, toml::Value>>,
}

/// Default capacity when a node does not say: large enough not to limit.
const UNLIMITED_MIB: u64 = u64::MAX / 4;

/// Build the cluster section from the parsed file; `invalid` makes an
/// error naming the file.
pub(super) fn build(
    nodes: &[NodeSpec],
    host_keys: &[HostKeys],
    resources: Vec<ResourceFile>,
    tunables: Option<Tunables>,
    invalid: &dyn Fn(String) -> super::ConfigError,
) -> Result<ClusterConfig, super::ConfigError> {
    let hosts: Vec<HostConfig> = nodes
        .iter()
        .zip(host_keys)
        .map(|(n, k)| HostConfig {
            id: n.id,
            capacity_mib: k.capacity_mib.unwrap_or(UNLIMITED_MIB),
            control: k.control,
            migration: k.migration,
        })
        .collect();
    let by_name = |what: &str, name: &str| -> Result<NodeId, super::ConfigError> {
        nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.id)
            .ok_or_else(|| invalid(format!("{what}: `{name}` is not among [[nodes]]")))
    };
    let mut out = Vec::new();
    for r in resources {
        let at = |what: String| invalid(format!("[[resources]] `{}`: {what}", r.name));
        if r.name.is_empty() || r.name.len() > 255 || r.name.contains(char::is_whitespace) {
            return Err(at("a name must be 1-255 bytes without spaces".into()));
        }
        if out.iter().any(|o: &ResourceConfig| o.spec.name == r.name) {
            return Err(at("configured twice".into()));
        }
        let driver: DriverKind = r.driver.parse().map_err(at)?;
        let home = r
            .home
            .as_deref()
            .map(|h| by_name(&format!("[[resources]] `{}` home", r.name), h))
            .transpose()?;
        let allowed_hosts = r
            .allowed
            .iter()
            .flatten()
            .map(|h| by_name(&format!("[[resources]] `{}` allowed", r.name), h))
            .collect::<Result<Vec<_>, _>>()?;
        let mut params = BTreeMap::new();
        for (key, value) in r.params.unwrap_or_default() {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(at(format!(
                        "parameter `{key}` = {other}: expected a string, integer or boolean"
                    )))
                }
            };
            params.insert(key, text);
        }
        out.push(ResourceConfig {
            spec: ResourceSpec {
                name: r.name.clone(),
                memory_mib: r.memory_mib,
                home,
                allowed_hosts,
                sticky: r.sticky.unwrap_or(false),
            },
            driver,
            params,
        });
    }
    if !out.is_empty() {
        if let Some(h) = hosts.iter().find(|h| h.control.is_none()) {
            return Err(invalid(format!(
                "[[nodes]] id {}: `control = \"address:port\"` is needed when [[resources]] are configured",
                h.id.0
            )));
        }
    }
    Ok(ClusterConfig {
        hosts,
        resources: out,
        tunables: tunables.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ConfigError, NodeConfig};

    const BASE: &str = r#"
cluster = "lab"
node = "alpha"
key = "00112233445566778899aabbccddeeff"

[[nodes]]
id = 1
name = "alpha"
capacity_mib = 4096
control = "10.204.0.1:7790"
migration = "10.204.0.1:7791"

[[nodes]]
id = 2
name = "beta"
control = "10.204.0.2:7790"

[[links]]
kind = "unicast"
peers = ["10.204.0.2"]
"#;

    fn parse(extra: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::from_toml_str(
            &format!("{BASE}{extra}"),
            Path::new("/etc/perfplus/node.toml"),
        )
    }

    #[test]
    fn resources_hosts_and_tunables_are_read() {
        let config = parse(
            r#"
[orchestrator]
min_move_interval_ms = 30000

[[resources]]
name = "web"
memory_mib = 512
home = "beta"
allowed = ["alpha", "beta"]
driver = "arena"
params = { workload = "kv", pages = 4096, wal = true }

[[resources]]
name = "vm1"
memory_mib = 1024
driver = "ocf:heartbeat:Xen"
params = { xmfile = "/etc/xen/vm1.cfg" }
"#,
        )
        .unwrap();
        let cluster = &config.cluster;
        assert_eq!(cluster.host(NodeId(1)).unwrap().capacity_mib, 4096);
        assert_eq!(
            cluster.host(NodeId(1)).unwrap().migration,
            Some("10.204.0.1:7791".parse().unwrap())
        );
        let web = cluster.resource("web").unwrap();
        assert_eq!(web.spec.home, Some(NodeId(2)));
        assert_eq!(web.spec.allowed_hosts, vec![NodeId(1), NodeId(2)]);
        assert_eq!(web.params["pages"], "4096");
        assert_eq!(web.params["wal"], "true");
        assert_eq!(
            cluster.resource("vm1").unwrap().driver,
            DriverKind::Ocf {
                provider: "heartbeat".into(),
                agent: "Xen".into()
            }
        );
        let orch = cluster.orchestrator(NodeId(1), false);
        assert_eq!(orch.min_move_interval_ms, 30_000);
        assert_eq!(orch.uplink_grace_ms, 1_000);
    }

    #[test]
    fn mistakes_name_the_resource_and_what_was_expected() {
        let unknown_home = parse(
            r#"
[[resources]]
name = "web"
memory_mib = 1
home = "gamma"
driver = "arena"
"#,
        )
        .unwrap_err();
        assert_eq!(
            unknown_home.to_string(),
            "/etc/perfplus/node.toml: [[resources]] `web` home: `gamma` is not among [[nodes]]"
        );
        let bad_driver = parse(
            r#"
[[resources]]
name = "web"
memory_mib = 1
driver = "xen"
"#,
        )
        .unwrap_err();
        assert!(
            bad_driver
                .to_string()
                .contains("expected \"arena\" or \"ocf:<provider>:<agent>\""),
            "{bad_driver}"
        );
        let typo = parse("\n[orchestrator]\nmin_move_intervall_ms = 1\n").unwrap_err();
        assert!(
            typo.to_string()
                .contains("unknown field `min_move_intervall_ms`"),
            "{typo}"
        );
    }

    #[test]
    fn resources_need_every_control_address() {
        let text = BASE.replace("control = \"10.204.0.2:7790\"\n", "");
        let err = NodeConfig::from_toml_str(
            &format!("{text}\n[[resources]]\nname = \"web\"\nmemory_mib = 1\ndriver = \"arena\"\n"),
            Path::new("node.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("[[nodes]] id 2: `control"),
            "{err}"
        );
    }

    #[test]
    fn driver_kinds_parse_and_print() {
        assert_eq!("arena".parse::<DriverKind>(), Ok(DriverKind::Arena));
        let ocf: DriverKind = "ocf:heartbeat:Xen".parse().unwrap();
        assert_eq!(ocf.to_string(), "ocf:heartbeat:Xen");
        assert!("ocf:heartbeat".parse::<DriverKind>().is_err());
        assert!("xen".parse::<DriverKind>().is_err());
    }
}
