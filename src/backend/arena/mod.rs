//! `arena`: real memory written by real code, with dirty pages tracked by
//! the MMU. The guest's RAM is an anonymous region ([`TrackedRegion`]) in a
//! workload process (or in this process); its writes are logged through
//! userfaultfd write-protect in async mode and harvested with the
//! `PAGEMAP_SCAN` ioctl ([`WriteTracker`]); [`ArenaDomain`] puts a
//! [`Domain`](crate::backend::Domain) on top, reading and writing pages
//! with `process_vm_readv`/`writev`, pausing with `SIGSTOP`/`SIGCONT` (or
//! a cooperative [`Gate`] for in-process guests) and throttling with a duty
//! cycle ([`RunControl`]).
//!
//! ```text
//!  workload process                         migration side (any process)
//!  ┌──────────────────────────────┐
//!  │ TrackedRegion (mmap)         │  pidfd_getfd(uffd) ─▶ WriteTracker
//!  │   registered with its uffd ──┼───────────────────▶   arm / disarm
//!  │ workload threads store ─▶    │  /proc/PID/pagemap ─▶   harvest (PAGEMAP_SCAN)
//!  │   fault → kernel logs page   │  process_vm_readv  ─▶ read_pages
//!  └──────────────────────────────┘  SIGSTOP / SIGCONT ─▶ pause / resume / cap
//! ```
//!
//! Guest processes ([`GuestProcess`], the `perfplus-arena-guest` program)
//! run a [`workload`] whose whole state lives in the arena, so a new
//! process that adopts a received arena resumes it exactly. Each guest
//! program is two processes: a keeper and the workload; the keeper settles
//! a guest left stopped by a migration controller that died (see
//! [`handoff`]).
//!
//! Starting a guest, moving it to another host's receiver, restarting it
//! from its write-ahead log (what an orchestrator does):
//!
//! ```no_run
//! use perfplus::backend::arena::workload::{GuestSpec, WorkloadKind};
//! use perfplus::backend::arena::{
//!     send_guest, Arrival, Fate, GuestCommand, GuestProcess, ReceiveConfig, ReceiveService,
//!     SendConfig,
//! };
//! use perfplus::migration::engine::ProgressFlow;
//! use perfplus::migration::policy::PerfPlus;
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let program = GuestCommand::new("perfplus-arena-guest", &[]);
//!
//! // Every host runs one receiver: it adopts each incoming guest into its
//! // own process and answers source keepers' status queries.
//! let mut config = ReceiveConfig::new(program.clone());
//! config.take_over = Some(Arc::new(|spec: &GuestSpec| {
//!     // e.g. add spec.listen's address to this host and announce it
//!     Ok(())
//! }));
//! let (receiver, arrivals) = ReceiveService::bind("10.202.0.2:7100".parse()?, config)?.spawn()?;
//!
//! // Start a guest (on the source host); returns once it serves.
//! let mut spec = GuestSpec::new(WorkloadKind::Kv, 262_144); // 1 GiB
//! spec.listen = Some("10.202.1.1:7000".parse()?);
//! spec.wal_dir = Some("/srv/shared/kv1".into()); // optional: survive host death
//! let guest = GuestProcess::spawn(&program, &spec)?;
//!
//! // Move it: on success it runs at the receiver, and its process here is gone.
//! let config = SendConfig::new(SendConfig::unique_id("kv1"));
//! match send_guest(guest, receiver.addr(), &PerfPlus::default(), &config, &mut |_| {
//!     ProgressFlow::Continue
//! }) {
//!     Ok(report) => println!("moved, downtime {:.1} ms", report.migration.downtime_ms),
//!     Err(failure) => match failure.fate {
//!         Fate::RunsHere(guest) => drop(guest), // still serving here (dropping ends it)
//!         Fate::Moved | Fate::LeftToKeeper | Fate::Lost => {}
//!     },
//! }
//! // On the receiving host: the adopted guest, running.
//! if let Ok(Arrival::Adopted { guest, .. }) = arrivals.recv() {
//!     guest.detach(); // let it outlive this handle
//! }
//!
//! // Restart after a host died: the same spec, fresh memory; the key-value
//! // service replays its write-ahead log from the shared directory.
//! let restarted = GuestProcess::spawn(&program, &spec)?;
//! # drop(restarted);
//! # Ok(()) }
//! ```
//!
//! A migration never leaves a guest running in two places: the receiver
//! starts it only on the sender's COMMIT after verifying the stream, and
//! records the outcome ([`handoff::Outcomes`]); a source stopped for the
//! final pass whose sender dies is settled by its keeper from that
//! record (see [`Outcome`] and the guest program's keeper).
//!
//! Needs Linux 6.7 or newer; [`check_support`] says what is missing
//! elsewhere. `sys` holds the hand-written kernel definitions and every
//! unsafe system call.

mod domain;
mod guest;
pub mod handoff;
mod host;
mod keeper;
mod local;
mod priority;
mod probe;
mod region;
mod run;
mod send;
mod sys;
mod tracker;
pub mod workload;

pub use domain::ArenaDomain;
pub use guest::{
    guest_main, GuestCommand, GuestLayout, GuestProcess, StartFn, StartHook, START_TIMEOUT,
};
pub use host::{Arrival, ReceiveConfig, ReceiveHandle, ReceiveService, TakeOver};
pub use keeper::{parse_status_request, query_outcome, valid_migration_id, Outcome};
pub use local::LocalGuest;
pub use priority::{may_raise_priority, RaisedPriority};
pub use probe::{check_support, kernel_release};
pub use region::{host_page_size, ArenaMemory, TrackedRegion};
pub use run::{
    duty_phases, Gate, GatePass, ProcessStopper, RunControl, Stopper, DUTY_MIN_RUN, DUTY_PERIOD,
};
pub use send::{send_domain, send_guest, Fate, SendConfig, SendError, SendFailure, SendReport};
pub use sys::{enter_netns, thread_cpu_time};
pub use tracker::{HarvestStats, WriteTracker, SCAN_REGIONS};

use crate::backend::BackendError;

/// What the arena could not do.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// This kernel lacks something dirty tracking needs; nothing was changed.
    #[error("arena dirty tracking is unavailable on this kernel ({kernel}): {detail}; the arena backend needs Linux 6.7 or newer with userfaultfd enabled")]
    Unsupported {
        /// What is missing, and how to get it.
        detail: String,
        /// `uname -r`.
        kernel: String,
    },
    /// An arena of zero pages, or one too large for this address space.
    #[error("an arena of {pages} pages cannot be mapped")]
    BadSize {
        /// Pages asked for.
        pages: u64,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Os {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The tracker saw something the kernel should never report.
    #[error("dirty tracking is inconsistent: {detail}")]
    TrackingBroken {
        /// What was seen.
        detail: String,
    },
    /// The guest process is gone or misbehaved.
    #[error("guest process {pid}: {reason}")]
    Guest {
        /// The guest's pid.
        pid: i32,
        /// What happened.
        reason: String,
    },
}

impl From<ArenaError> for BackendError {
    fn from(e: ArenaError) -> Self {
        match e {
            ArenaError::Os { context, source } => BackendError::Io { context, source },
            ArenaError::Guest { pid, reason } => BackendError::Gone {
                reason: format!("guest process {pid}: {reason}"),
            },
            other @ ArenaError::Unsupported { .. } => BackendError::Io {
                context: other.to_string(),
                source: std::io::ErrorKind::Unsupported.into(),
            },
            other => BackendError::Io {
                context: other.to_string(),
                source: std::io::Error::other("arena"),
            },
        }
    }
}

/// In tests: whether a kernel without tracking is a failure (CI) rather
/// than a loud skip.
#[cfg(test)]
fn tests_require_tracking() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
