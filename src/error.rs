//! The crate's top-level error: one variant per module, each wrapping that
//! module's own error enum, so `?` works across layers and the C ABI can
//! map every failure to a `perfplus_result` in one place
//! (`ffi::error::Failure::from`).

use crate::backend::sim::WorkloadError;
use crate::backend::xen::XenError;
use crate::backend::BackendError;
use crate::medium::MediumError;
use crate::migration::MigrationError;

/// Any perfplus failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend (hypervisor seam) operation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A node configuration could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A cluster node could not start.
    #[error(transparent)]
    Node(#[from] crate::runtime::NodeError),
    /// The redundant authenticated medium failed.
    #[error(transparent)]
    Medium(#[from] MediumError),
    /// Talking to the Xen hypervisor or its libraries failed.
    #[error(transparent)]
    Xen(#[from] XenError),
    /// A migration failed (see the variant for where the guest is).
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// A simulated-guest workload file is invalid.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// An HA node (membership, orchestrator, drivers) could not start.
    #[error(transparent)]
    Ha(#[from] crate::runtime::ha::HaError),
}
