//! Drivers: the mechanics of starting, stopping, watching and moving a
//! resource (a guest) on one host. The orchestrator decides; a driver does.
//!
//! A live migration spans two hosts, so it is three calls on two drivers:
//!
//! ```text
//!   target host                      source host
//!   prepare_migration_in(r) ───┐
//!                              └──▶ migrate_to(r, target)   (moves the guest)
//!   migrate_from(r, source)  ◀──┘   (confirms it runs here)
//! ```
//!
//! Drivers: [`ocf`] runs any OCF resource agent (so perfplus can drive
//! `ocf:heartbeat:Dummy`, or `ocf:heartbeat:Xen` on a Xen host).

pub mod arena;
pub mod ocf;

use std::collections::BTreeMap;
use std::time::Duration;

/// A resource as a driver sees it: a name and driver-specific parameters
/// (for OCF, the `OCF_RESKEY_*` parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverResource {
    /// The resource (instance) name.
    pub name: String,
    /// Parameters, by name.
    pub params: BTreeMap<String, String>,
    /// Guest memory, MiB, if the cluster configuration says.
    pub memory_mib: Option<u64>,
}

/// What `monitor` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceStatus {
    /// Running and healthy.
    Running,
    /// Cleanly stopped.
    Stopped,
}

/// A peer host, as a driver needs to name it (OCF passes node names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHost {
    /// The node name (`uname -n` of that host, as the cluster knows it).
    pub name: String,
    /// Where its migration receiver listens, for drivers that move memory
    /// themselves (`host:port`).
    pub migration_address: Option<String>,
}

/// What a live migration cost, as far as the driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrationSummary {
    /// How long the guest was paused, µs (`None`: the driver cannot tell,
    /// e.g. an OCF agent).
    pub downtime_us: Option<u64>,
    /// Bytes sent, if known.
    pub bytes: Option<u64>,
}

/// Makes the driver for each resource a host runs.
pub trait DriverFactory: Send + Sync {
    /// The driver for `resource` on this host.
    fn driver(
        &self,
        resource: &crate::config::ResourceConfig,
    ) -> Result<Box<dyn ResourceDriver>, DriverError>;
}

/// The drivers perfplus ships: OCF agents (and perfplus's own guests, once
/// their driver is configured).
#[derive(Debug, Clone)]
pub struct StandardDrivers {
    /// This node's name (OCF's `CRM_meta_on_node`).
    pub local_node: String,
    /// Where OCF agents live.
    pub ocf_root: std::path::PathBuf,
    /// How long an OCF action may take.
    pub ocf_timeout: Duration,
    /// Extra environment for every OCF agent (e.g. `HA_RSCTMP`).
    pub ocf_env: Vec<(String, String)>,
    /// This host's arena guests and receiver, if it runs any.
    pub arena: Option<std::sync::Arc<arena::ArenaHost>>,
}

impl StandardDrivers {
    /// Defaults for the node named `local_node`: agents under
    /// `/usr/lib/ocf`, 120 s per action.
    pub fn new(local_node: &str) -> Self {
        Self {
            local_node: local_node.into(),
            ocf_root: ocf::DEFAULT_OCF_ROOT.into(),
            ocf_timeout: Duration::from_secs(120),
            ocf_env: Vec::new(),
            arena: None,
        }
    }
}

impl StandardDrivers {
    /// The drivers for `config`'s local node, named `local_node`: OCF
    /// agents, and, if any resource uses the arena driver, this host's
    /// arena guests with their receiver on the node's `migration` address
    /// (`settings` adjusts the arena settings: hooks, policy).
    pub fn for_node(
        config: &crate::config::NodeConfig,
        local_node: &str,
        guest_program: crate::backend::arena::GuestCommand,
        settings: impl FnOnce(&mut arena::ArenaSettings),
    ) -> Result<Self, DriverError> {
        let mut drivers = Self::new(local_node);
        let uses_arena = config
            .cluster
            .resources
            .iter()
            .any(|r| r.driver == crate::config::DriverKind::Arena);
        if uses_arena {
            let receive = config.cluster.host(config.local).and_then(|h| h.migration);
            let mut arena_settings = arena::ArenaSettings::new(guest_program, receive);
            settings(&mut arena_settings);
            drivers.arena = Some(arena::ArenaHost::start(arena_settings)?);
        }
        Ok(drivers)
    }
}

impl DriverFactory for StandardDrivers {
    fn driver(
        &self,
        resource: &crate::config::ResourceConfig,
    ) -> Result<Box<dyn ResourceDriver>, DriverError> {
        match &resource.driver {
            crate::config::DriverKind::Ocf { provider, agent } => {
                let mut driver = ocf::OcfDriver::new(
                    &self.ocf_root,
                    provider,
                    agent,
                    &self.local_node,
                    self.ocf_timeout,
                );
                for (key, value) in &self.ocf_env {
                    driver = driver.with_env(key, value);
                }
                Ok(Box::new(driver))
            }
            crate::config::DriverKind::Arena => match &self.arena {
                Some(host) => Ok(Box::new(host.driver())),
                None => Err(DriverError::Unsupported(format!(
                    "resource {}: this host runs no arena guests (start its arena host first)",
                    resource.spec.name
                ))),
            },
        }
    }
}

/// A driver operation that failed. The resource's state is what the
/// variant says; a failed `stop` means the resource may still run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The agent or program that drives the resource is not installed.
    #[error("{what} is not installed: {detail}")]
    NotInstalled {
        /// The agent or program.
        what: String,
        /// What was looked for.
        detail: String,
    },
    /// The resource's parameters are wrong (OCF: `OCF_ERR_CONFIGURED`/`ARGS`).
    #[error("resource {resource} is misconfigured: {reason}")]
    Misconfigured {
        /// The resource.
        resource: String,
        /// The agent's reason.
        reason: String,
    },
    /// The operation ran and failed.
    #[error("{action} of {resource} failed (exit {exit_code}): {reason}")]
    Failed {
        /// The action (`start`, `stop`, `monitor`, `migrate_to`, ...).
        action: String,
        /// The resource.
        resource: String,
        /// The agent's exit code.
        exit_code: i32,
        /// The agent's exit reason, or the end of its stderr.
        reason: String,
    },
    /// The operation did not finish in time and was killed.
    #[error("{action} of {resource} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The action.
        action: String,
        /// The resource.
        resource: String,
        /// The time it had.
        timeout: Duration,
    },
    /// The driver cannot do this (e.g. an agent without live migration).
    #[error("{0}")]
    Unsupported(String),
    /// Running the agent failed at the OS level.
    #[error("cannot run {what}: {source}")]
    Io {
        /// What was run.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The mechanics of one kind of resource on the local host.
pub trait ResourceDriver: Send {
    /// Start the resource here; success if it already runs.
    fn start(&mut self, resource: &DriverResource) -> Result<(), DriverError>;

    /// Stop the resource here; success if it is already stopped.
    fn stop(&mut self, resource: &DriverResource) -> Result<(), DriverError>;

    /// Whether the resource runs here; `Err` if it failed.
    fn monitor(&mut self, resource: &DriverResource) -> Result<ResourceStatus, DriverError>;

    /// On the target, before the source starts sending (e.g. listen).
    fn prepare_migration_in(
        &mut self,
        resource: &DriverResource,
        source: &PeerHost,
    ) -> Result<(), DriverError> {
        let _ = (resource, source);
        Ok(())
    }

    /// On the source: move the running resource to `target`. On failure the
    /// resource still runs here.
    fn migrate_to(
        &mut self,
        resource: &DriverResource,
        target: &PeerHost,
    ) -> Result<MigrationSummary, DriverError>;

    /// On the target, after `migrate_to` returned: confirm it runs here.
    fn migrate_from(
        &mut self,
        resource: &DriverResource,
        source: &PeerHost,
    ) -> Result<(), DriverError>;
}
