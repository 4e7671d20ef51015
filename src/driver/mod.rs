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
    ) -> Result<(), DriverError>;

    /// On the target, after `migrate_to` returned: confirm it runs here.
    fn migrate_from(
        &mut self,
        resource: &DriverResource,
        source: &PeerHost,
    ) -> Result<(), DriverError>;
}
