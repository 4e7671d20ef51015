//! A small xenstore client over libxenstore: the reads and writes a
//! toolstack needs around a migration (domain names, `control/shutdown`,
//! the rename of a migrated domain in one transaction, and telling
//! xenstored that a suspended domain runs again).

use std::ffi::{c_char, c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use libxenctrl_sys as sys;

use super::XenError;

/// No transaction (`XBT_NULL`).
const XBT_NULL: sys::xs_transaction_t = 0;

/// An open xenstore connection.
pub struct XenStore {
    libs: Arc<sys::Libraries>,
    xsh: NonNull<sys::xs_handle>,
}

impl std::fmt::Debug for XenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenStore")
            .field("xsh", &self.xsh)
            .finish_non_exhaustive()
    }
}

impl Drop for XenStore {
    fn drop(&mut self) {
        // SAFETY: `xsh` came from xs_open and is closed exactly once.
        unsafe { self.libs.store.xs_close(self.xsh.as_ptr()) }
    }
}

fn c_path(path: &str) -> Result<CString, XenError> {
    CString::new(path).map_err(|_| XenError::Unexpected {
        call: "xenstore",
        domid: None,
        what: format!("a path with a NUL byte: {path:?}"),
    })
}

impl XenStore {
    /// Connect to xenstored (socket or kernel device, as libxenstore picks).
    pub fn open(libs: Arc<sys::Libraries>) -> Result<Self, XenError> {
        // SAFETY: flags 0: a read-write connection.
        let xsh = unsafe { libs.store.xs_open(0) };
        let xsh = NonNull::new(xsh).ok_or_else(|| XenError::last_os_error("xs_open", None))?;
        Ok(Self { libs, xsh })
    }

    /// The value at `path`, `None` if it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<String>, XenError> {
        self.read_in(XBT_NULL, path)
    }

    fn read_in(&self, t: sys::xs_transaction_t, path: &str) -> Result<Option<String>, XenError> {
        let c = c_path(path)?;
        let mut len: u32 = 0;
        // SAFETY: `c` is NUL-terminated, `len` a valid out-parameter.
        let value = unsafe {
            self.libs
                .store
                .xs_read(self.xsh.as_ptr(), t, c.as_ptr(), &mut len)
        };
        if value.is_null() {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None);
            }
            return Err(XenError::Call {
                call: "xs_read",
                domid: None,
                source: e,
            });
        }
        // SAFETY: xs_read returned a malloc'd buffer of `len` bytes (plus a
        // NUL); it stays valid until freed below.
        let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len as usize) };
        let text = String::from_utf8_lossy(bytes).into_owned();
        // SAFETY: freed exactly once, after its last use.
        unsafe { libc::free(value) };
        Ok(Some(text))
    }

    /// Write `value` at `path`.
    pub fn write(&self, path: &str, value: &str) -> Result<(), XenError> {
        self.write_in(XBT_NULL, path, value)
    }

    fn write_in(&self, t: sys::xs_transaction_t, path: &str, value: &str) -> Result<(), XenError> {
        let c = c_path(path)?;
        let len = u32::try_from(value.len()).map_err(|_| XenError::Unexpected {
            call: "xs_write",
            domid: None,
            what: "a value over 4 GiB".into(),
        })?;
        // SAFETY: `c` is NUL-terminated; `value` is `len` readable bytes.
        let ok = unsafe {
            self.libs.store.xs_write(
                self.xsh.as_ptr(),
                t,
                c.as_ptr(),
                value.as_ptr().cast::<c_void>(),
                len,
            )
        };
        if ok {
            Ok(())
        } else {
            Err(XenError::last_os_error("xs_write", None))
        }
    }

    /// The children of `path` (empty if it does not exist).
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XenError> {
        let c = c_path(path)?;
        let mut num: u32 = 0;
        // SAFETY: `c` is NUL-terminated, `num` a valid out-parameter.
        let list = unsafe {
            self.libs
                .store
                .xs_directory(self.xsh.as_ptr(), XBT_NULL, c.as_ptr(), &mut num)
        };
        if list.is_null() {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(Vec::new());
            }
            return Err(XenError::Call {
                call: "xs_directory",
                domid: None,
                source: e,
            });
        }
        // SAFETY: xs_directory returned one malloc'd block holding `num`
        // pointers to NUL-terminated strings (inside the same block).
        let entries = unsafe { std::slice::from_raw_parts(list, num as usize) };
        let names = entries
            .iter()
            .map(|&p: &*mut c_char| {
                // SAFETY: each entry points to a NUL-terminated string in the block.
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // SAFETY: the block is freed exactly once, as a whole, after its last use.
        unsafe { libc::free(list.cast::<c_void>()) };
        Ok(names)
    }

    /// Run `body` in a xenstore transaction, again from the start when
    /// another writer raced it (`EAGAIN` at commit), at most 16 times.
    fn transaction<T>(
        &self,
        mut body: impl FnMut(sys::xs_transaction_t) -> Result<T, XenError>,
    ) -> Result<T, XenError> {
        for _ in 0..16 {
            // SAFETY: an open handle; a 0 answer is a failure (errno set).
            let t = unsafe { self.libs.store.xs_transaction_start(self.xsh.as_ptr()) };
            if t == XBT_NULL {
                return Err(XenError::last_os_error("xs_transaction_start", None));
            }
            let result = body(t);
            let abort = result.is_err();
            // SAFETY: `t` is the transaction started above, ended once.
            let ok = unsafe {
                self.libs
                    .store
                    .xs_transaction_end(self.xsh.as_ptr(), t, abort)
            };
            if abort {
                return result;
            }
            if ok {
                return result;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(XenError::Call {
                    call: "xs_transaction_end",
                    domid: None,
                    source: e,
                });
            }
        }
        Err(XenError::Unexpected {
            call: "xs_transaction_end",
            domid: None,
            what: "16 conflicts in a row with other xenstore writers".into(),
        })
    }

    /// Withdraw a suspend request the guest has not taken yet: if
    /// `control/shutdown` still says "suspend", empty it, atomically (as
    /// libxl does), so the guest cannot take it half-way. True if withdrawn,
    /// false if the guest had taken it.
    pub(crate) fn withdraw_suspend_request(&self, domid: u32) -> Result<bool, XenError> {
        let path = format!("/local/domain/{domid}/control/shutdown");
        self.transaction(|t| {
            if self.read_in(t, &path)?.as_deref() != Some("suspend") {
                return Ok(false);
            }
            self.write_in(t, &path, "")?;
            Ok(true)
        })
    }

    /// Rename domain `domid` from `old` to `new` as libxl does: the name
    /// under `/local/domain/<id>/name` and `/vm/<uuid>/name`, in one
    /// transaction, refusing a name another domain has.
    pub fn rename_domain(&self, domid: u32, old: &str, new: &str) -> Result<(), XenError> {
        for other in self.directory("/local/domain")? {
            let Ok(other_id) = other.parse::<u32>() else {
                continue;
            };
            if other_id != domid
                && self
                    .read(&format!("/local/domain/{other_id}/name"))?
                    .as_deref()
                    == Some(new)
            {
                return Err(XenError::Unexpected {
                    call: "rename",
                    domid: Some(domid),
                    what: format!("domain {other_id} is already named {new:?}"),
                });
            }
        }
        let name_path = format!("/local/domain/{domid}/name");
        let vm = self.read(&format!("/local/domain/{domid}/vm"))?;
        self.transaction(|t| {
            let current = self.read_in(t, &name_path)?;
            if current.as_deref() != Some(old) {
                return Err(XenError::Unexpected {
                    call: "rename",
                    domid: Some(domid),
                    what: format!("the domain is named {current:?}, not {old:?}"),
                });
            }
            self.write_in(t, &name_path, new)?;
            if let Some(vm) = &vm {
                self.write_in(t, &format!("{vm}/name"), new)?;
            }
            Ok(())
        })
    }

    /// Tell xenstored that a domain which shut down for suspend runs again
    /// (`XS_RESUME`), so it reports the domain's next shutdown.
    pub fn resume_domain(&self, domid: u32) -> Result<(), XenError> {
        // SAFETY: an open handle and a plain domain id.
        if unsafe { self.libs.store.xs_resume_domain(self.xsh.as_ptr(), domid) } {
            Ok(())
        } else {
            Err(XenError::last_os_error("xs_resume_domain", Some(domid)))
        }
    }
}
