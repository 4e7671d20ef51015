//! The Xen backend: libxenctrl, libxenforeignmemory, libxenstore and
//! libxenguest, through `libxenctrl-sys`, which loads the Xen 4.17
//! libraries at run time.
//!
//! ```text
//!  XenHost::open()            /dev/xen/privcmd?  libraries?  Xen 4.17?
//!    ├─ find_domain("web1")   xenstore /local/domain/<id>/name
//!    ├─ XenDomain::attach()   implements backend::Domain:
//!    │    enable_dirty_log    xc_shadow_control(ENABLE_LOGDIRTY)
//!    │    harvest_dirty       xc_logdirty_control(CLEAN) → DirtyBitmap
//!    │    read_pages          xenforeignmemory_map (HVM/PVH: gfn = pfn; holes read as zeros)
//!    │    pause/resume        xc_domain_(un)pause, own reference only; or, for a
//!    │                        migration, suspend through xenstore / xc_domain_resume
//!    │    set_cpu_cap         credit/credit2 cap: get → set → restore
//!    │    save_state          libxc records TSC_INFO, HVM_CONTEXT, HVM_PARAMS
//!    └─ migrate_domain()      live migration to a host running `xl migrate-receive`:
//!         PV:  pv.rs          xc_domain_save, Perf+ as its precopy_policy
//!         PVH: pvh.rs         Perf+'s own rounds, a libxc v3 stream (HVM type)
//!         migrate.rs          xl's handshake (xl.rs) over a transport command
//!                             (channel.rs), the stream transcoded (transcode.rs)
//!                             for `perfplus migrate-receive` (receive.rs)
//! ```
//!
//! Everything that talks to Xen needs a dom0 and root; without them the
//! errors say so ([`XenError`]). The stream formats (`records.rs`, `xl.rs`,
//! `transcode.rs`) are sans-io and tested without Xen.

mod channel;
mod domain;
mod error;
mod hcall;
mod host;
mod migrate;
mod pv;
mod pvh;
mod receive;
mod records;
mod session;
mod store;
mod toolstack;
pub mod transcode;
pub mod xl;

pub use channel::CommandChannel;
pub use domain::{LogDirtyStats, StopMethod, XenDomain};
pub use error::XenError;
pub use host::{DomainInfo, XenHost};
pub use libxenctrl_sys::{Libraries, LoadError};
pub use migrate::{migrate_domain, GuestType, XenMigrationReport};
pub use pvh::GfnMap;
pub use receive::{receive, ReceiveError, ReceiveOptions, ReceiveReport};
pub use session::{
    transport_command, SwitchoverBreakdown, XenMigrationOptions, PERFPLUS_RECEIVER, XL_RECEIVER,
};
pub use store::XenStore;
pub use toolstack::Toolstack;
