//! [`TrackedRegion`]: the guest's RAM, an anonymous mapping registered with
//! a userfaultfd for write-protect tracking, and [`ArenaMemory`], the only
//! way guest code touches it (8-byte atomic words, so concurrent writers,
//! the migration side's kernel copies and a `SIGSTOP` at any instruction
//! never meet a torn or racy access in Rust's memory model).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::sys;
use super::ArenaError;

/// Bytes per arena page: the MMU's base page, which is the unit the
/// tracker reports.
pub fn host_page_size() -> usize {
    // SAFETY: sysconf reads a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// The guest's RAM: `pages` pages of anonymous memory in this process,
/// registered with a userfaultfd (write-protect, async mode) that a
/// [`WriteTracker`](super::WriteTracker) here or in another process arms
/// and harvests. The mapping lives as long as the region.
#[derive(Debug)]
pub struct TrackedRegion {
    base: NonNull<u8>,
    len: usize,
    page_size: usize,
    uffd: OwnedFd,
}

// SAFETY: the region is plain memory owned by this value; all access from
// Rust goes through atomics (`ArenaMemory`), so sharing it across threads
// is sound.
unsafe impl Send for TrackedRegion {}
// SAFETY: as above: no `&`-method gives non-atomic access to the memory.
unsafe impl Sync for TrackedRegion {}

impl TrackedRegion {
    /// Map `pages` pages and register them for write tracking. Fails with a
    /// message naming what is missing on kernels without userfaultfd
    /// write-protect in async mode (Linux 6.7+).
    pub fn new(pages: u64) -> Result<Self, ArenaError> {
        let page_size = host_page_size();
        let len = usize::try_from(pages)
            .ok()
            .and_then(|p| p.checked_mul(page_size))
            .filter(|len| *len > 0)
            .ok_or(ArenaError::BadSize { pages })?;
        let base = sys::map_anonymous(len).map_err(|source| ArenaError::Os {
            context: format!("mapping a {len}-byte arena"),
            source,
        })?;
        // From here on `region` owns the mapping and unmaps it on error.
        let uffd = match super::probe::open_userfaultfd() {
            Ok(fd) => fd,
            Err(e) => {
                sys::unmap(base, len);
                return Err(e);
            }
        };
        let region = Self {
            base,
            len,
            page_size,
            uffd,
        };
        sys::uffd_register_wp(
            region.uffd.as_fd(),
            region.base_address(),
            region.len as u64,
        )
        .map_err(|source| ArenaError::Os {
            context: "registering the arena for userfaultfd write-protect".into(),
            source,
        })?;
        Ok(region)
    }

    /// Fault every page in now (they stay zero), so that filling the
    /// region later, e.g. by an incoming migration, takes no page faults.
    /// Do it before arming write tracking.
    pub fn populate(&self) -> Result<(), ArenaError> {
        sys::populate_write(self.base, self.len).map_err(|source| ArenaError::Os {
            context: "populating the arena".into(),
            source,
        })
    }

    /// [`populate`](Self::populate) for pages `[first, first + count)`
    /// (clipped to the region); safe to run while another process writes
    /// the region (pages already present keep their contents).
    pub fn populate_pages(&self, first: u64, count: u64) -> Result<(), ArenaError> {
        let pages = self.pages();
        let first = first.min(pages);
        let count = count.min(pages - first);
        if count == 0 {
            return Ok(());
        }
        let size = self.page_size as u64;
        let offset = usize::try_from(first * size).unwrap_or(usize::MAX);
        let len = usize::try_from(count * size).unwrap_or(0);
        // `offset` is inside the mapping: first < pages.
        let base = self.base.as_ptr().wrapping_add(offset);
        let base = std::ptr::NonNull::new(base).unwrap_or(self.base);
        sys::populate_write(base, len).map_err(|source| ArenaError::Os {
            context: "populating the arena".into(),
            source,
        })
    }

    /// Address of the first byte, in this process.
    pub fn base_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Bytes per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Pages in the region.
    pub fn pages(&self) -> u64 {
        (self.len / self.page_size) as u64
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    /// The userfaultfd the region is registered with. Keep it open: closing
    /// the last descriptor unregisters the region.
    pub fn uffd(&self) -> BorrowedFd<'_> {
        self.uffd.as_fd()
    }

    /// Atomic word access to the memory.
    pub fn memory(&self) -> ArenaMemory<'_> {
        let words = self.len / 8;
        // SAFETY: the mapping is `len` bytes, page aligned (so 8-aligned),
        // readable and writable, and lives as long as `self`. AtomicU64 has
        // the size and alignment of u64 and may alias memory that other
        // atomics or the kernel access concurrently.
        let slice = unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU64>().cast_const(), words)
        };
        ArenaMemory {
            words: slice,
            words_per_page: self.page_size / 8,
        }
    }
}

impl Drop for TrackedRegion {
    fn drop(&mut self) {
        sys::unmap(self.base, self.len);
    }
}

/// A view of arena memory as 8-byte atomic words. Every store is a single
/// aligned word store: whatever instant the guest is stopped at, each word
/// holds either its old or its new value, never a mix (the property the
/// workloads' crash-consistent layouts rely on).
#[derive(Debug, Clone, Copy)]
pub struct ArenaMemory<'a> {
    words: &'a [AtomicU64],
    words_per_page: usize,
}

impl<'a> ArenaMemory<'a> {
    /// A view of `words` (for tests and for memory that is not a region).
    pub fn from_words(words: &'a [AtomicU64], page_size: usize) -> Self {
        Self {
            words,
            words_per_page: page_size / 8,
        }
    }

    /// Number of words.
    pub fn len_words(&self) -> usize {
        self.words.len()
    }

    /// Words per page.
    pub fn words_per_page(&self) -> usize {
        self.words_per_page
    }

    /// The word at `index` (panics beyond the end: a workload bug).
    pub fn word(&self, index: usize) -> &'a AtomicU64 {
        &self.words[index]
    }

    /// Load word `index`.
    pub fn load(&self, index: usize) -> u64 {
        self.words[index].load(Ordering::Acquire)
    }

    /// Store `value` in word `index`.
    pub fn store(&self, index: usize, value: u64) {
        self.words[index].store(value, Ordering::Release);
    }

    /// Overwrite page `page` with words from `fill(word_in_page)`.
    pub fn fill_page(&self, page: usize, mut fill: impl FnMut(usize) -> u64) {
        let first = page * self.words_per_page;
        for (i, w) in self.words[first..first + self.words_per_page]
            .iter()
            .enumerate()
        {
            w.store(fill(i), Ordering::Relaxed);
        }
    }
}
