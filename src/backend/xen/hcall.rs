//! [`HypercallBuffer`]: hypercall-safe memory (locked, never moved by the
//! kernel) from libxenctrl's allocator, freed on drop.

use std::ptr::NonNull;

use libxenctrl_sys as sys;

use super::host::XenHost;
use super::XenError;

/// `pages` pages of hypercall-safe memory and the descriptor libxenctrl
/// calls take (`xc_hypercall_buffer_t *`).
pub(super) struct HypercallBuffer {
    host: XenHost,
    desc: Box<sys::xc_hypercall_buffer_t>,
    pages: usize,
    bytes: usize,
}

impl HypercallBuffer {
    /// At least `bytes` bytes, rounded up to whole pages, zeroed.
    pub(super) fn new(host: &XenHost, bytes: usize) -> Result<Self, XenError> {
        let pages = bytes.div_ceil(sys::XC_PAGE_SIZE).max(1);
        let nr_pages = i32::try_from(pages).map_err(|_| XenError::Unexpected {
            call: "xc__hypercall_buffer_alloc_pages",
            domid: None,
            what: format!("a request for {pages} pages"),
        })?;
        // Boxed: libxenctrl may keep pointers to the descriptor between
        // calls (param_shadow), so it must not move.
        let mut desc = Box::new(sys::hypercall_buffer_no_bounce());
        // SAFETY: `desc` is a NO_BOUNCE descriptor without memory; the
        // call fills `hbuf` with `pages` pages or returns NULL.
        let mem = unsafe {
            host.libs()
                .ctrl
                .xc__hypercall_buffer_alloc_pages(host.xch(), &mut *desc, nr_pages)
        };
        let mem = NonNull::new(mem)
            .ok_or_else(|| XenError::last_os_error("xc__hypercall_buffer_alloc_pages", None))?;
        let bytes = pages * sys::XC_PAGE_SIZE;
        // SAFETY: the allocation is `bytes` writable bytes.
        unsafe { std::ptr::write_bytes(mem.as_ptr().cast::<u8>(), 0, bytes) };
        Ok(Self {
            host: host.clone(),
            desc,
            pages,
            bytes,
        })
    }

    /// The descriptor to pass to libxenctrl.
    pub(super) fn descriptor(&mut self) -> *mut sys::xc_hypercall_buffer_t {
        &mut *self.desc
    }

    /// The memory as 64-bit words (Xen's bitmap layout).
    pub(super) fn words(&self) -> &[u64] {
        // SAFETY: `hbuf` is a page-aligned allocation of `bytes` bytes owned
        // by this buffer; no hypercall writes it while we hold `&self`
        // (hypercalls take `&mut self` through `descriptor`).
        unsafe { std::slice::from_raw_parts(self.desc.hbuf.cast::<u64>(), self.bytes / 8) }
    }

    /// Zero the memory.
    pub(super) fn clear(&mut self) {
        // SAFETY: as in `words`, with exclusive access.
        unsafe { std::ptr::write_bytes(self.desc.hbuf.cast::<u8>(), 0, self.bytes) };
    }
}

impl Drop for HypercallBuffer {
    fn drop(&mut self) {
        let pages = i32::try_from(self.pages).unwrap_or(i32::MAX);
        // SAFETY: the descriptor holds the allocation made in `new` with
        // this page count; it is freed exactly once.
        unsafe {
            self.host.libs().ctrl.xc__hypercall_buffer_free_pages(
                self.host.xch(),
                &mut *self.desc,
                pages,
            );
        }
    }
}
