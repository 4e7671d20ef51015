//! [`XenHost`]: an open connection to the hypervisor (libxenctrl and its
//! foreign-memory handle) and the domain lookups built on it.
//!
//! Opening checks, in order, what an admin must fix: a hypervisor
//! (`/dev/xen/privcmd`), the 4.17 libraries, the hypervisor's version.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::Arc;

use libxenctrl_sys as sys;

use super::store::XenStore;
use super::XenError;

/// The privileged command devices libxencall tries, in its order.
const PRIVCMD_PATHS: [&str; 2] = ["/dev/xen/privcmd", "/proc/xen/privcmd"];

/// One domain as the hypervisor lists it (`xc_domaininfo_t`, the fields
/// perfplus uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain id.
    pub domid: u32,
    /// HVM container (HVM or PVH); false for PV.
    pub hvm: bool,
    /// Paused by some controller (the toolstack, perfplus, a debugger).
    pub paused: bool,
    /// Shut down (for a migration: suspended), see `shutdown_reason`.
    pub shutdown: bool,
    /// `SHUTDOWN_*` reason, meaningful when `shutdown`.
    pub shutdown_reason: u32,
    /// Being destroyed.
    pub dying: bool,
    /// Pages allocated to the domain.
    pub tot_pages: u64,
    /// Online vCPUs.
    pub online_vcpus: u32,
}

impl DomainInfo {
    fn from_raw(raw: &sys::xc_domaininfo_t) -> Self {
        let flags = raw.flags;
        Self {
            domid: u32::from(raw.domain),
            hvm: flags & sys::XEN_DOMINF_hvm_guest != 0,
            paused: flags & sys::XEN_DOMINF_paused != 0,
            shutdown: flags & sys::XEN_DOMINF_shutdown != 0,
            shutdown_reason: (flags >> sys::XEN_DOMINF_shutdownshift)
                & sys::XEN_DOMINF_shutdownmask,
            dying: flags & sys::XEN_DOMINF_dying != 0,
            tot_pages: raw.tot_pages,
            online_vcpus: raw.nr_online_vcpus,
        }
    }

    /// Whether the domain has shut down for suspend (what libxenguest
    /// requires before its final pass).
    pub fn is_suspended(&self) -> bool {
        self.shutdown && self.shutdown_reason == sys::SHUTDOWN_suspend.unsigned_abs()
    }
}

/// The open libxenctrl interface. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct XenHost {
    pub(super) inner: Arc<HostInner>,
}

pub(super) struct HostInner {
    pub(super) libs: Arc<sys::Libraries>,
    pub(super) xch: NonNull<sys::xc_interface>,
    /// Owned by `xch` (`xc_interface_fmem_handle`), closed with it.
    pub(super) fmem: NonNull<sys::xenforeignmemory_handle>,
}

impl std::fmt::Debug for HostInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostInner")
            .field("xch", &self.xch)
            .finish_non_exhaustive()
    }
}

// SAFETY: an xc_interface opened without XC_OPENFLAG_NON_REENTRANT may be
// used from several threads at once (xenctrl.h: only the non-reentrant
// flavour needs the caller's mutual exclusion); the foreign-memory handle
// is likewise reentrant. The pointers are never handed out mutably.
unsafe impl Send for HostInner {}
// SAFETY: as above.
unsafe impl Sync for HostInner {}

impl Drop for HostInner {
    fn drop(&mut self) {
        // SAFETY: `xch` came from xc_interface_open and is closed exactly
        // once, here; every user holds an Arc to this inner, so none is left.
        unsafe {
            self.libs.ctrl.xc_interface_close(self.xch.as_ptr());
        }
    }
}

impl XenHost {
    /// Connect to the local hypervisor with the system's Xen 4.17 libraries.
    pub fn open() -> Result<Self, XenError> {
        check_privcmd()?;
        let libs = Arc::new(sys::Libraries::load()?);
        Self::open_with(libs)
    }

    /// Connect with libraries already loaded (e.g. from a given directory).
    pub fn open_with(libs: Arc<sys::Libraries>) -> Result<Self, XenError> {
        check_privcmd()?;
        // SAFETY: NULL loggers ask libxenctrl for its default (stderr)
        // logger; flags 0 is a normal, reentrant interface.
        let xch = unsafe {
            libs.ctrl
                .xc_interface_open(std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        let xch =
            NonNull::new(xch).ok_or_else(|| XenError::last_os_error("xc_interface_open", None))?;
        // SAFETY: `xch` is open; the returned handle lives as long as it.
        let fmem = unsafe { libs.ctrl.xc_interface_fmem_handle(xch.as_ptr()) };
        let Some(fmem) = NonNull::new(fmem) else {
            // SAFETY: `xch` is open and not used after this.
            unsafe { libs.ctrl.xc_interface_close(xch.as_ptr()) };
            return Err(XenError::Unexpected {
                call: "xc_interface_fmem_handle",
                domid: None,
                what: "no foreign-memory handle".into(),
            });
        };
        let host = Self {
            inner: Arc::new(HostInner { libs, xch, fmem }),
        };
        let (major, minor) = host.version()?;
        if (major, minor) != (4, 17) {
            return Err(XenError::HypervisorVersion { major, minor });
        }
        Ok(host)
    }

    pub(super) fn libs(&self) -> &sys::Libraries {
        &self.inner.libs
    }

    pub(super) fn xch(&self) -> *mut sys::xc_interface {
        self.inner.xch.as_ptr()
    }

    /// The hypervisor's (major, minor) version.
    pub fn version(&self) -> Result<(u32, u32), XenError> {
        // SAFETY: XENVER_version takes no argument buffer.
        let v = unsafe {
            self.libs()
                .ctrl
                .xc_version(self.xch(), sys::XENVER_version, std::ptr::null_mut())
        };
        let v = u32::try_from(v).map_err(|_| XenError::last_os_error("xc_version", None))?;
        Ok((v >> 16, v & 0xffff))
    }

    /// The domain `domid`, or `None` if there is none.
    pub fn domain_info(&self, domid: u32) -> Result<Option<DomainInfo>, XenError> {
        let mut raw = sys::xc_domaininfo_t::default();
        // SAFETY: room for exactly one entry.
        let n = unsafe {
            self.libs()
                .ctrl
                .xc_domain_getinfolist(self.xch(), domid, 1, &mut raw)
        };
        if n < 0 {
            return Err(XenError::last_os_error(
                "xc_domain_getinfolist",
                Some(domid),
            ));
        }
        // The call lists from `domid` upwards: it may return the next domain.
        Ok((n == 1 && u32::from(raw.domain) == domid).then(|| DomainInfo::from_raw(&raw)))
    }

    /// Every domain, in id order.
    pub fn domains(&self) -> Result<Vec<DomainInfo>, XenError> {
        let mut all = Vec::new();
        let mut next = 0_u32;
        loop {
            let mut batch = vec![sys::xc_domaininfo_t::default(); 64];
            // SAFETY: `batch` has room for 64 entries.
            let n = unsafe {
                self.libs()
                    .ctrl
                    .xc_domain_getinfolist(self.xch(), next, 64, batch.as_mut_ptr())
            };
            let n = usize::try_from(n)
                .map_err(|_| XenError::last_os_error("xc_domain_getinfolist", None))?;
            all.extend(batch[..n.min(64)].iter().map(DomainInfo::from_raw));
            match all.last() {
                Some(last) if n == 64 => next = last.domid + 1,
                _ => return Ok(all),
            }
        }
    }

    /// The domain named `name` in xenstore (`/local/domain/<id>/name`), or
    /// given as a number, its id.
    pub fn find_domain(&self, name: &str) -> Result<DomainInfo, XenError> {
        if let Ok(domid) = name.parse::<u32>() {
            return self
                .domain_info(domid)?
                .ok_or_else(|| XenError::NoSuchDomain(name.to_string()));
        }
        let store = XenStore::open(self.inner.libs.clone())?;
        for info in self.domains()? {
            if info.dying {
                continue;
            }
            if store
                .read(&format!("/local/domain/{}/name", info.domid))?
                .as_deref()
                == Some(name)
            {
                return Ok(info);
            }
        }
        Err(XenError::NoSuchDomain(name.to_string()))
    }

    /// The scheduler of the domain's cpupool (`XEN_SCHEDULER_*`).
    pub(super) fn sched_id(&self) -> Result<c_int, XenError> {
        let mut id: c_int = 0;
        // SAFETY: `id` is a valid out-parameter.
        if unsafe { self.libs().ctrl.xc_sched_id(self.xch(), &mut id) } != 0 {
            return Err(XenError::last_os_error("xc_sched_id", None));
        }
        Ok(id)
    }
}

/// Fail clearly when there is no privileged command interface, before
/// libxencall tries and logs its own error.
fn check_privcmd() -> Result<(), XenError> {
    let mut first_error = None;
    for path in PRIVCMD_PATHS {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert((path, e));
            }
        }
    }
    match first_error {
        Some((path, source)) => Err(XenError::PrivcmdUnavailable { path, source }),
        None => Err(XenError::NoHypervisor {
            path: PRIVCMD_PATHS[0],
        }),
    }
}
