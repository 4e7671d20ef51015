//! The hypervisor seam: everything the migration engine needs from a guest,
//! behind one trait, [`Domain`].
//!
//! A migration drives a source `Domain` through pre-copy rounds and a
//! receiving `Domain` through the stream:
//!
//! ```text
//!  source                                   destination
//!  enable_dirty_log()
//!  round 0: read_pages(all) ──────────────▶ write_pages()
//!  round n: harvest_dirty() → read_pages() ▶ read_pages() (delta base), write_pages()
//!  pause(); harvest_dirty(); read_pages()  ▶ write_pages()
//!  save_state() ──────────────────────────▶ restore_state()
//!  (ack) disable_dirty_log()                resume()
//!  on any failure before the ack: disable_dirty_log(); resume()
//! ```
//!
//! Backends: `sim` (a simulated guest on virtual time), `arena` (real
//! memory written by real code, tracked by the MMU), `xen` (libxenctrl and
//! libxenforeignmemory). Each passes the same conformance suite.

/// cbindgen:ignore
#[cfg(target_os = "linux")]
pub mod arena;
/// cbindgen:ignore
pub mod conformance;
mod dirty;
/// cbindgen:ignore
pub mod sim;
pub mod xen;

pub use dirty::{DirtyBitmap, PageRange, Ranges};

/// A guest frame number: the index of a page in the guest's physical
/// address space (a gfn on Xen, a page offset in the arena).
pub type Pfn = u64;

/// A cap on the guest's CPU time, in percent of what it may use unthrottled
/// (1..=100). Xen turns it into a scheduler cap, `arena` into a duty cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuShare(u8);

impl CpuShare {
    /// A share of `percent` (1..=100); `None` outside that range.
    pub fn percent(percent: u8) -> Option<Self> {
        (1..=100).contains(&percent).then_some(Self(percent))
    }

    /// The share in percent.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// What a backend could not do. Unless a variant says otherwise, the guest's
/// state did not change.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot do this at all (e.g. a CPU cap without a scheduler).
    #[error("{backend} backend does not support {what}")]
    Unsupported {
        /// Backend name (`sim`, `arena`, `xen`).
        backend: &'static str,
        /// The operation.
        what: &'static str,
    },
    /// A page number at or beyond the end of guest memory.
    #[error("page {pfn} is outside guest memory ({page_count} pages)")]
    PfnOutOfRange {
        /// The page asked for.
        pfn: Pfn,
        /// Pages the guest has.
        page_count: u64,
    },
    /// A page buffer whose length is not `pages * page_size`.
    #[error("page buffer holds {got} bytes, {expected} expected")]
    BufferSize {
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// `harvest_dirty` or `disable_dirty_log` without `enable_dirty_log`.
    #[error("dirty logging is not enabled")]
    DirtyLogDisabled,
    /// The guest is gone (its process exited, its domain was destroyed).
    #[error("the guest is gone: {reason}")]
    Gone {
        /// What was seen.
        reason: String,
    },
    /// A CPU/device state blob this backend cannot restore.
    #[error("invalid guest state blob: {reason}")]
    InvalidState {
        /// Why it was refused.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A hypervisor call failed.
    #[error("{call} failed for domain {domid}: {reason}")]
    Hypervisor {
        /// The library call, e.g. `xc_logdirty_control`.
        call: &'static str,
        /// The domain.
        domid: u32,
        /// errno text or what the hypervisor said.
        reason: String,
    },
}

/// Checks that `pages` holds one page of `page_size` bytes for each of `pfns`
/// (for [`Domain::write_page_list`]).
pub fn check_page_list(
    page_size: usize,
    pfns: &[Pfn],
    pages: &[&[u8]],
) -> Result<(), BackendError> {
    if pages.len() != pfns.len() || pages.iter().any(|p| p.len() != page_size) {
        return Err(BackendError::BufferSize {
            expected: pfns.len() * page_size,
            got: pages.iter().map(|p| p.len()).sum(),
        });
    }
    Ok(())
}

/// A guest whose memory perfplus can move: the hypervisor seam.
///
/// Contract (checked by the conformance suite):
///
/// - Geometry is fixed for the domain's lifetime: [`page_count`] pages of
///   [`page_size`] bytes, numbered `0..page_count`.
/// - [`read_pages`]/[`write_pages`] take a batch of page numbers (any order,
///   no duplicates needed) and a buffer of exactly `pfns.len() * page_size`
///   bytes, page `i` of the batch at offset `i * page_size`. A page read
///   while the guest runs may be torn; it is then also dirty.
/// - Dirty logging: after [`enable_dirty_log`], [`harvest_dirty`] marks in
///   the caller's bitmap every page the guest wrote since the previous
///   harvest (or since enabling), and resets the log: *a write is never
///   missed*. Marking a page that was not written is allowed but costs
///   bandwidth; backends whose log is exact say so in
///   [`dirty_log_is_exact`].
/// - [`pause`] stops the guest (no writes until [`resume`]); both are
///   idempotent. A harvest after `pause` returns everything still unsent.
/// - [`save_state`] (paused) returns the CPU/device state;
///   [`restore_state`] loads such a blob into a receiving domain.
///
/// [`page_count`]: Domain::page_count
/// [`page_size`]: Domain::page_size
/// [`read_pages`]: Domain::read_pages
/// [`write_pages`]: Domain::write_pages
/// [`enable_dirty_log`]: Domain::enable_dirty_log
/// [`harvest_dirty`]: Domain::harvest_dirty
/// [`dirty_log_is_exact`]: Domain::dirty_log_is_exact
/// [`pause`]: Domain::pause
/// [`resume`]: Domain::resume
/// [`save_state`]: Domain::save_state
/// [`restore_state`]: Domain::restore_state
pub trait Domain {
    /// Bytes per page (4096 on x86).
    fn page_size(&self) -> usize;

    /// Pages in the guest's physical address space.
    fn page_count(&self) -> u64;

    /// Copy the pages `pfns` into `buf`.
    fn read_pages(&mut self, pfns: &[Pfn], buf: &mut [u8]) -> Result<(), BackendError>;

    /// Overwrite the pages `pfns` with the contents of `data`.
    fn write_pages(&mut self, pfns: &[Pfn], data: &[u8]) -> Result<(), BackendError>;

    /// Overwrite page `pfns[i]` with `pages[i]` (each one page long). The
    /// pages may lie anywhere, e.g. in a received record: a backend that
    /// can gather writes them from there; the default copies them into one
    /// buffer for [`write_pages`](Domain::write_pages).
    fn write_page_list(&mut self, pfns: &[Pfn], pages: &[&[u8]]) -> Result<(), BackendError> {
        check_page_list(self.page_size(), pfns, pages)?;
        let data = pages.concat();
        self.write_pages(pfns, &data)
    }

    /// Start logging writes; the log starts empty.
    fn enable_dirty_log(&mut self) -> Result<(), BackendError>;

    /// Mark in `dirty` the pages written since the last harvest, and reset
    /// the log. Bits already set in `dirty` stay set.
    fn harvest_dirty(&mut self, dirty: &mut DirtyBitmap) -> Result<(), BackendError>;

    /// Stop logging writes.
    fn disable_dirty_log(&mut self) -> Result<(), BackendError>;

    /// Whether [`harvest_dirty`](Domain::harvest_dirty) reports only pages
    /// that were really written.
    fn dirty_log_is_exact(&self) -> bool {
        false
    }

    /// Stop the guest's vCPUs (idempotent).
    fn pause(&mut self) -> Result<(), BackendError>;

    /// Let the guest run again (idempotent); also drops any CPU cap.
    fn resume(&mut self) -> Result<(), BackendError>;

    /// Whether the guest is paused.
    fn is_paused(&self) -> bool;

    /// Cap the guest's CPU (`Some`) or lift the cap (`None`), to help
    /// pre-copy converge.
    fn set_cpu_cap(&mut self, cap: Option<CpuShare>) -> Result<(), BackendError> {
        let _ = cap;
        Err(BackendError::Unsupported {
            backend: self.backend_name(),
            what: "CPU caps",
        })
    }

    /// The guest's CPU/device state, taken while paused.
    fn save_state(&mut self) -> Result<Vec<u8>, BackendError>;

    /// Load a state blob from [`save_state`](Domain::save_state) into this
    /// (receiving) domain.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), BackendError>;

    /// Short backend name for messages (`sim`, `arena`, `xen`).
    fn backend_name(&self) -> &'static str;
}
