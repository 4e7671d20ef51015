//! [`WriteTracker`]: arms write-protection on a guest region and harvests
//! the pages written since, through `PAGEMAP_SCAN`, into a [`DirtyBitmap`].
//!
//! ```text
//!  arm():      UFFDIO_WRITEPROTECT(range, WP)   every page protected: log empty
//!  guest:      store → fault → kernel marks the PTE written, unprotects it
//!  harvest():  PAGEMAP_SCAN(WRITTEN, WP_MATCHING) → runs of written pages,
//!              re-protected in the same atomic step → DirtyBitmap
//!  disarm():   UFFDIO_WRITEPROTECT(range, 0)    no more faults
//! ```
//!
//! The tracker's own state is a fixed 512-entry scan buffer (12 KiB) and
//! the caller's bitmap (1 bit per page); the per-page "written" bit lives in
//! the page table entry the guest already has.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use super::{probe, sys, ArenaError};
use crate::backend::{DirtyBitmap, PageRange};

/// Regions per `PAGEMAP_SCAN` call. At most 512: a call returning more than
/// 512 regions reports a stale `walk_end` (see the harvest loop).
pub const SCAN_REGIONS: usize = 512;

/// What one harvest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HarvestStats {
    /// Pages reported written.
    pub pages: u64,
    /// Runs of written pages reported.
    pub regions: u64,
    /// `PAGEMAP_SCAN` calls made.
    pub scan_calls: u64,
}

/// Arms and harvests write tracking on `pages` pages at `base` in the
/// address space of the process that owns `uffd` and `pagemap`.
#[derive(Debug)]
pub struct WriteTracker {
    uffd: OwnedFd,
    pagemap: OwnedFd,
    base: u64,
    pages: u64,
    page_size: u64,
    buf: Vec<sys::PageRegion>,
    armed: bool,
}

impl WriteTracker {
    /// A tracker over `[base, base + pages * page_size)`. `uffd` must be the
    /// userfaultfd the region is registered with (the guest's own, or a
    /// duplicate taken with `pidfd_getfd`), `pagemap` an open
    /// `/proc/PID/pagemap` of the same process.
    pub fn new(uffd: OwnedFd, pagemap: OwnedFd, base: u64, pages: u64, page_size: usize) -> Self {
        Self {
            uffd,
            pagemap,
            base,
            pages,
            page_size: page_size as u64,
            buf: vec![sys::PageRegion::default(); SCAN_REGIONS],
            armed: false,
        }
    }

    /// Open `/proc/PID/pagemap` for a tracker of process `pid`.
    pub fn open_pagemap(pid: libc::pid_t) -> Result<OwnedFd, ArenaError> {
        let path = format!("/proc/{pid}/pagemap");
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|source| ArenaError::Os {
                context: format!("opening {path} (reading another process's pagemap needs the same uid or CAP_SYS_PTRACE)"),
                source,
            })
    }

    fn len_bytes(&self) -> u64 {
        self.pages * self.page_size
    }

    /// Bytes of tracking state this tracker keeps itself (the scan buffer).
    pub fn state_bytes(&self) -> usize {
        self.buf.len() * std::mem::size_of::<sys::PageRegion>()
    }

    /// Write-protect the whole region: from now on every write is logged,
    /// and the log starts empty.
    pub fn arm(&mut self) -> Result<(), ArenaError> {
        sys::uffd_writeprotect(self.uffd.as_fd(), self.base, self.len_bytes(), true).map_err(
            |source| ArenaError::Os {
                context: "write-protecting the arena (UFFDIO_WRITEPROTECT)".into(),
                source,
            },
        )?;
        self.armed = true;
        Ok(())
    }

    /// Whether [`arm`](Self::arm) was called without a later
    /// [`disarm`](Self::disarm).
    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// Remove write protection: the guest stops paying a fault per page.
    pub fn disarm(&mut self) -> Result<(), ArenaError> {
        sys::uffd_writeprotect(self.uffd.as_fd(), self.base, self.len_bytes(), false).map_err(
            |source| ArenaError::Os {
                context: "removing the arena's write protection".into(),
                source,
            },
        )?;
        self.armed = false;
        Ok(())
    }

    /// Mark in `dirty` every page written since the last harvest (or
    /// [`arm`](Self::arm)) and re-protect those pages, atomically per page:
    /// a write racing the scan is either reported now or faults again and
    /// is reported next time.
    pub fn harvest(&mut self, dirty: &mut DirtyBitmap) -> Result<HarvestStats, ArenaError> {
        self.scan(dirty, true)
    }

    /// Like [`harvest`](Self::harvest) but without re-protecting: reports the
    /// pages written since the last harvest and leaves the log as it is.
    pub fn peek(&mut self, dirty: &mut DirtyBitmap) -> Result<HarvestStats, ArenaError> {
        self.scan(dirty, false)
    }

    fn scan(
        &mut self,
        dirty: &mut DirtyBitmap,
        reprotect: bool,
    ) -> Result<HarvestStats, ArenaError> {
        if dirty.pages() != self.pages {
            return Err(ArenaError::TrackingBroken {
                detail: format!(
                    "bitmap of {} pages for an arena of {} pages",
                    dirty.pages(),
                    self.pages
                ),
            });
        }
        let end = self.base + self.len_bytes();
        let mut cursor = self.base;
        let mut stats = HarvestStats::default();
        while cursor < end {
            let step = sys::pagemap_scan_written(
                self.pagemap.as_fd(),
                cursor,
                end,
                &mut self.buf,
                reprotect,
            )
            .map_err(|e| probe::classify_scan_error(e, &probe::kernel_release()))?;
            stats.scan_calls += 1;
            let found = &self.buf[..step.regions.min(self.buf.len())];
            for region in found {
                if region.start < self.base || region.end > end || region.start >= region.end {
                    return Err(ArenaError::TrackingBroken {
                        detail: format!(
                            "PAGEMAP_SCAN returned {:#x}..{:#x} outside the arena {:#x}..{end:#x}",
                            region.start, region.end, self.base
                        ),
                    });
                }
                let range = PageRange {
                    start: (region.start - self.base) / self.page_size,
                    end: (region.end - self.base).div_ceil(self.page_size),
                };
                stats.pages += range.len();
                stats.regions += 1;
                dirty.set_range(range);
            }
            if step.walk_end >= end {
                break;
            }
            // The walk_end quirk: a call that finished the range may report a
            // stale walk_end below the regions it returned. A call stopped by
            // a full buffer never does, so this means "done".
            if let Some(last) = found.last() {
                if step.walk_end < last.end {
                    break;
                }
            }
            if step.walk_end <= cursor {
                return Err(ArenaError::TrackingBroken {
                    detail: format!("PAGEMAP_SCAN made no progress at {cursor:#x}"),
                });
            }
            cursor = step.walk_end;
        }
        Ok(stats)
    }
}
