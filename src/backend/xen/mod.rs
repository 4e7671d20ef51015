//! The Xen backend: libxenctrl, libxenforeignmemory, libxenstore (and, for
//! PV migration, libxenguest), through `libxenctrl-sys`, which loads the
//! Xen 4.17 libraries at run time.
//!
//! ```text
//!  XenHost::open()            /dev/xen/privcmd?  libraries?  Xen 4.17?
//!    ├─ find_domain("web1")   xenstore /local/domain/<id>/name
//!    └─ XenDomain::attach()   implements backend::Domain:
//!         enable_dirty_log    xc_shadow_control(ENABLE_LOGDIRTY)
//!         harvest_dirty       xc_logdirty_control(CLEAN) → DirtyBitmap
//!         read/write_pages    xenforeignmemory_map (HVM/PVH: gfn = pfn)
//!         pause/resume        xc_domain_(un)pause, own reference only
//!         set_cpu_cap         credit/credit2 cap: get → set → restore
//!         save_state          libxc records TSC_INFO, HVM_CONTEXT, HVM_PARAMS
//! ```
//!
//! Everything here needs a Xen dom0 and root; without them the errors say
//! so ([`XenError`]).

mod domain;
mod error;
mod hcall;
mod host;
mod records;
mod store;

pub use domain::{LogDirtyStats, XenDomain};
pub use error::XenError;
pub use host::{DomainInfo, XenHost};
pub use libxenctrl_sys::{Libraries, LoadError};
pub use store::XenStore;
