//! [`ArenaDomain`]: the [`Domain`] over an arena, in this process
//! ([`LocalGuest`]) or in a guest process ([`GuestProcess`]).
//!
//! Pages are copied by the kernel (`process_vm_readv`/`writev`, also for
//! this process's own memory), so a page read while guest threads store
//! into it is at worst torn, never a data race in Rust's sense; a torn page
//! was written, so the next harvest reports it again.

use std::os::fd::AsFd;
use std::sync::Arc;

use super::guest::GuestProcess;
use super::run::{ProcessStopper, RunControl};
use super::sys::{self, RemoteSpan};
use super::tracker::{HarvestStats, WriteTracker};
use super::{ArenaError, LocalGuest};
use crate::backend::{BackendError, CpuShare, DirtyBitmap, Domain, Pfn};

/// Who runs the guest.
#[derive(Debug)]
enum Body {
    Local(Arc<LocalGuest>),
    Process(Box<GuestProcess>),
}

/// A [`Domain`] whose memory is an arena.
#[derive(Debug)]
pub struct ArenaDomain {
    body: Body,
    pid: libc::pid_t,
    base: u64,
    pages: u64,
    page_size: usize,
    tracker: WriteTracker,
    run: RunControl,
    /// A state blob given to `restore_state`, handed to an incoming guest
    /// process when it starts.
    restored: Option<Vec<u8>>,
    last_harvest: HarvestStats,
}

fn os(context: &str) -> impl FnOnce(std::io::Error) -> ArenaError + '_ {
    move |source| ArenaError::Os {
        context: context.to_owned(),
        source,
    }
}

impl ArenaDomain {
    /// A domain over an in-process guest.
    pub fn local(guest: Arc<LocalGuest>) -> Result<Self, ArenaError> {
        let region = guest.region();
        let uffd = region
            .uffd()
            .try_clone_to_owned()
            .map_err(os("duplicating the arena's userfaultfd"))?;
        let tracker = WriteTracker::new(
            uffd,
            WriteTracker::open_pagemap(std::process::id().try_into().unwrap_or(0))?,
            region.base_address(),
            region.pages(),
            region.page_size(),
        );
        Ok(Self {
            pid: libc::pid_t::try_from(std::process::id()).unwrap_or(0),
            base: region.base_address(),
            pages: region.pages(),
            page_size: region.page_size(),
            tracker,
            run: RunControl::new(guest.gate()),
            body: Body::Local(guest),
            restored: None,
            last_harvest: HarvestStats::default(),
        })
    }

    /// A domain over a guest process: a running one (the migration source)
    /// or an incoming one (the destination, paused until its first
    /// `resume`, which starts it from the received memory and state).
    pub fn process(guest: GuestProcess) -> Result<Self, ArenaError> {
        Self::try_process(guest).map_err(|(e, _)| e)
    }

    /// [`process`](Self::process), giving the guest back untouched when
    /// it cannot be controlled (no pidfd, no access to its userfaultfd).
    pub fn try_process(guest: GuestProcess) -> Result<Self, (ArenaError, Box<GuestProcess>)> {
        let layout = guest.layout();
        let pid = guest.pid();
        let parts = (|| {
            let stopper = ProcessStopper::new(pid).map_err(os("opening a pidfd for the guest"))?;
            let pidfd = sys::pidfd_open(pid).map_err(os("opening a pidfd for the guest"))?;
            let uffd = sys::pidfd_getfd(pidfd.as_fd(), layout.uffd_fd).map_err(os(
                "taking the guest's userfaultfd (pidfd_getfd needs the same uid or CAP_SYS_PTRACE)",
            ))?;
            let tracker = WriteTracker::new(
                uffd,
                WriteTracker::open_pagemap(pid)?,
                layout.base,
                layout.pages,
                layout.page_size,
            );
            Ok::<_, ArenaError>((stopper, tracker))
        })();
        let (stopper, tracker) = match parts {
            Ok(p) => p,
            Err(e) => return Err((e, Box::new(guest))),
        };
        let run = if guest.is_started() {
            RunControl::new(stopper)
        } else {
            RunControl::new_paused(stopper)
        };
        Ok(Self {
            pid,
            base: layout.base,
            pages: layout.pages,
            page_size: layout.page_size,
            tracker,
            run,
            body: Body::Process(Box::new(guest)),
            restored: None,
            last_harvest: HarvestStats::default(),
        })
    }

    /// The guest process, given back (e.g. to kill the source after a
    /// migration, or to keep running it after a failed one). Write tracking
    /// is disarmed first; a paused guest stays paused.
    pub fn into_process(self) -> Option<GuestProcess> {
        let Self {
            body, mut tracker, ..
        } = self;
        if tracker.is_armed() {
            let _ = tracker.disarm();
        }
        match body {
            Body::Process(p) => Some(*p),
            Body::Local(_) => None,
        }
    }

    /// The guest process, if the guest is one.
    pub fn guest_process(&mut self) -> Option<&mut GuestProcess> {
        match &mut self.body {
            Body::Process(p) => Some(p),
            Body::Local(_) => None,
        }
    }

    /// What the last harvest found.
    pub fn last_harvest(&self) -> HarvestStats {
        self.last_harvest
    }

    /// Bytes of dirty-tracking state kept in user space besides the
    /// caller's bitmap (the scan buffer); per-page state is the PTE's bit.
    pub fn tracker_state_bytes(&self) -> usize {
        self.tracker.state_bytes()
    }

    fn check_batch(&self, pfns: &[Pfn], buf_len: usize) -> Result<(), BackendError> {
        let expected = pfns.len() * self.page_size;
        if buf_len != expected {
            return Err(BackendError::BufferSize {
                expected,
                got: buf_len,
            });
        }
        if let Some(&pfn) = pfns.iter().find(|&&p| p >= self.pages) {
            return Err(BackendError::PfnOutOfRange {
                pfn,
                page_count: self.pages,
            });
        }
        Ok(())
    }

    /// Calls `copy(spans, byte_range_of_buffer)` for runs of at most
    /// `MAX_IOV` coalesced spans, in batch order.
    fn for_each_span_batch(
        &self,
        pfns: &[Pfn],
        mut copy: impl FnMut(&[RemoteSpan], std::ops::Range<usize>) -> std::io::Result<usize>,
    ) -> Result<(), BackendError> {
        let page = self.page_size;
        let mut spans: Vec<RemoteSpan> = Vec::with_capacity(sys::MAX_IOV.min(pfns.len()));
        let mut batch_start = 0_usize;
        let mut batch_bytes = 0_usize;
        let mut flush = |spans: &mut Vec<RemoteSpan>, start: usize, bytes: usize| {
            if spans.is_empty() {
                return Ok(());
            }
            let done = copy(spans, start..start + bytes).map_err(|e| self.io_error(e))?;
            spans.clear();
            if done != bytes {
                return Err(BackendError::Gone {
                    reason: format!(
                        "guest process {}: copied {done} of {bytes} bytes of its memory",
                        self.pid
                    ),
                });
            }
            Ok(())
        };
        let mut prev: Option<Pfn> = None;
        for &pfn in pfns {
            let addr = self.base + pfn * page as u64;
            match (prev, spans.last_mut()) {
                (Some(p), Some(last)) if p + 1 == pfn => last.1 += page,
                _ => {
                    if spans.len() == sys::MAX_IOV {
                        flush(&mut spans, batch_start, batch_bytes)?;
                        batch_start += batch_bytes;
                        batch_bytes = 0;
                    }
                    spans.push((addr, page));
                }
            }
            batch_bytes += page;
            prev = Some(pfn);
        }
        flush(&mut spans, batch_start, batch_bytes)
    }

    fn io_error(&self, e: std::io::Error) -> BackendError {
        match e.raw_os_error() {
            Some(libc::ESRCH) => BackendError::Gone {
                reason: format!("guest process {} exited", self.pid),
            },
            _ => BackendError::Io {
                context: format!("copying memory of guest process {}", self.pid),
                source: e,
            },
        }
    }
}

impl Domain for ArenaDomain {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn page_count(&self) -> u64 {
        self.pages
    }

    fn read_pages(&mut self, pfns: &[Pfn], buf: &mut [u8]) -> Result<(), BackendError> {
        self.check_batch(pfns, buf.len())?;
        let pid = self.pid;
        self.for_each_span_batch(pfns, |spans, range| {
            sys::process_vm_read(pid, &mut buf[range], spans)
        })
    }

    fn write_pages(&mut self, pfns: &[Pfn], data: &[u8]) -> Result<(), BackendError> {
        self.check_batch(pfns, data.len())?;
        let pid = self.pid;
        self.for_each_span_batch(pfns, |spans, range| {
            sys::process_vm_write(pid, &data[range], spans)
        })
    }

    fn write_page_list(&mut self, pfns: &[Pfn], pages: &[&[u8]]) -> Result<(), BackendError> {
        let size = self.page_size;
        crate::backend::check_page_list(size, pfns, pages)?;
        self.check_batch(pfns, pfns.len() * size)?;
        let pid = self.pid;
        // At most MAX_IOV pages per call, so the local side fits too.
        for (pfns, pages) in pfns.chunks(sys::MAX_IOV).zip(pages.chunks(sys::MAX_IOV)) {
            self.for_each_span_batch(pfns, |spans, range| {
                let pages = &pages[range.start / size..range.end / size];
                sys::process_vm_write_gather(pid, pages, spans)
            })?;
        }
        Ok(())
    }

    fn enable_dirty_log(&mut self) -> Result<(), BackendError> {
        Ok(self.tracker.arm()?)
    }

    fn harvest_dirty(&mut self, dirty: &mut DirtyBitmap) -> Result<(), BackendError> {
        if !self.tracker.is_armed() {
            return Err(BackendError::DirtyLogDisabled);
        }
        self.last_harvest = self.tracker.harvest(dirty)?;
        Ok(())
    }

    fn disable_dirty_log(&mut self) -> Result<(), BackendError> {
        if !self.tracker.is_armed() {
            return Err(BackendError::DirtyLogDisabled);
        }
        Ok(self.tracker.disarm()?)
    }

    fn dirty_log_is_exact(&self) -> bool {
        true
    }

    fn pause(&mut self) -> Result<(), BackendError> {
        self.run.pause().map_err(|e| self.io_error(e))
    }

    fn resume(&mut self) -> Result<(), BackendError> {
        if let Body::Process(guest) = &mut self.body {
            if !guest.is_started() {
                let state = self
                    .restored
                    .clone()
                    .ok_or_else(|| BackendError::InvalidState {
                        reason: "an incoming guest cannot start before restore_state".into(),
                    })?;
                // Undo any SIGSTOP a pause sent the waiting process, so it
                // can read its start command.
                let pid = self.pid;
                self.run.resume().map_err(|e| BackendError::Io {
                    context: format!("continuing incoming guest process {pid}"),
                    source: e,
                })?;
                if let Err(e) = guest.start(&state) {
                    self.run.mark_not_started();
                    return Err(e.into());
                }
                self.restored = None;
                return Ok(());
            }
        }
        self.run.resume().map_err(|e| self.io_error(e))
    }

    fn is_paused(&self) -> bool {
        self.run.is_paused()
    }

    fn set_cpu_cap(&mut self, cap: Option<CpuShare>) -> Result<(), BackendError> {
        self.run.set_cpu_cap(cap).map_err(|e| self.io_error(e))
    }

    fn save_state(&mut self) -> Result<Vec<u8>, BackendError> {
        match &mut self.body {
            Body::Local(guest) => Ok(guest.state_blob()),
            Body::Process(guest) => Ok(guest.state_blob()),
        }
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BackendError> {
        match &mut self.body {
            Body::Local(guest) => guest
                .restore_blob(state)
                .map_err(|reason| BackendError::InvalidState { reason })?,
            Body::Process(guest) => {
                guest.check_state_blob(state)?;
                self.restored = Some(state.to_vec());
            }
        }
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "arena"
    }
}
