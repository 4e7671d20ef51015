//! The cluster's state as one HA node sees it: what `perfplus status`
//! prints, what the control channel's `Status` reply carries (JSON), and
//! what a joining node adopts placements from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::membership::NodeId;
use crate::orchestrator::{Orchestrator, Placement};

/// The cluster's state as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: u16,
    /// Its name.
    pub node_name: String,
    /// Whether its partition has quorum.
    pub quorate: bool,
    /// Whether it is the decider.
    pub decider: bool,
    /// Every host.
    pub hosts: Vec<HostStatus>,
    /// Every resource.
    pub resources: Vec<ResourceStatusView>,
}

/// One host in a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostStatus {
    /// Node id.
    pub id: u16,
    /// Node name.
    pub name: String,
    /// In the view.
    pub live: bool,
    /// Ping nodes it reaches.
    pub ping_reachable: u8,
    /// Ping nodes configured.
    pub ping_configured: u8,
    /// In standby.
    pub standby: bool,
    /// Dead, its guests waiting for fencing.
    pub awaiting_recovery: bool,
    /// Guest memory placed on it, MiB.
    pub used_mib: u64,
}

/// One resource in a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceStatusView {
    /// Its name.
    pub name: String,
    /// `running`, `migrating`, `starting` or `lost`.
    pub state: String,
    /// Where it runs (the source while migrating; `None` when lost).
    pub host: Option<u16>,
    /// The destination of a migration in flight.
    pub to: Option<u16>,
    /// Whether a host confirmed it (else it is the configured home, assumed
    /// at a cold start).
    pub confirmed: bool,
}

impl ClusterStatus {
    /// Nothing known yet.
    pub fn empty(node: NodeId) -> Self {
        Self {
            node: node.0,
            node_name: String::new(),
            quorate: false,
            decider: false,
            hosts: Vec::new(),
            resources: Vec::new(),
        }
    }

    /// The state held by `orchestrator`.
    pub fn from_orchestrator(
        node: NodeId,
        node_name: &str,
        orchestrator: &Orchestrator,
        names: &BTreeMap<NodeId, String>,
    ) -> Self {
        let hosts = orchestrator
            .hosts()
            .map(|h| HostStatus {
                id: h.id.0,
                name: names.get(&h.id).cloned().unwrap_or_default(),
                live: h.live,
                ping_reachable: h.health.reachable,
                ping_configured: h.health.configured,
                standby: h.standby,
                awaiting_recovery: h.awaiting_recovery,
                used_mib: h.used_mib,
            })
            .collect();
        let resources = orchestrator
            .placements()
            .map(|(name, placement)| {
                let (state, host, to) = match placement {
                    Placement::Running(h) => ("running", Some(h.0), None),
                    Placement::Migrating { from, to } => ("migrating", Some(from.0), Some(to.0)),
                    Placement::Starting(h) => ("starting", Some(h.0), None),
                    Placement::Lost(_) => ("lost", None, None),
                };
                ResourceStatusView {
                    name: name.into(),
                    state: state.into(),
                    host,
                    to,
                    confirmed: orchestrator.is_confirmed(name),
                }
            })
            .collect();
        Self {
            node: node.0,
            node_name: node_name.into(),
            quorate: orchestrator.quorate(),
            decider: orchestrator.is_decider(),
            hosts,
            resources,
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// From JSON (a peer's `Status` reply).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "node {} ({}): {}{}\n\nhost  name              live  uplink  standby  used MiB\n",
            self.node,
            self.node_name,
            if self.quorate { "quorate" } else { "NO QUORUM" },
            if self.decider { ", decider" } else { "" },
        );
        for h in &self.hosts {
            out.push_str(&format!(
                "{:<5} {:<17} {:<5} {:>2}/{:<4} {:<8} {:>8}{}\n",
                h.id,
                h.name,
                if h.live { "yes" } else { "no" },
                h.ping_reachable,
                h.ping_configured,
                if h.standby { "yes" } else { "no" },
                h.used_mib,
                if h.awaiting_recovery {
                    "  (dead, awaiting fencing)"
                } else {
                    ""
                },
            ));
        }
        out.push_str("\nresource          state       host\n");
        for r in &self.resources {
            let host = match (r.host, r.to) {
                (Some(h), Some(t)) => format!("{h} -> {t}"),
                (Some(h), None) => h.to_string(),
                _ => "-".into(),
            };
            out.push_str(&format!("{:<17} {:<11} {}\n", r.name, r.state, host));
        }
        out
    }
}
