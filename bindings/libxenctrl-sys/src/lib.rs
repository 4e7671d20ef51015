//! Bindings to the Xen 4.17 tool-stack libraries perfplus uses, loaded at
//! run time.
//!
//! - [`types`](generated::types): structs, typedefs and constants from
//!   Debian's `libxen-dev` 4.17 headers (bindgen output, checked in);
//! - one loader struct per library ([`XenCtrl`], [`XenGuest`],
//!   [`XenForeignMemory`], [`XenStore`], [`XenToolLog`]), each holding the
//!   `dlopen`ed library and a function pointer per function perfplus calls;
//! - [`Libraries`]: all five, opened by SONAME, with a [`LoadError`] that
//!   names the Debian package to install when one is missing and the
//!   version found when it is the wrong Xen release.
//!
//! Nothing is linked at build time: perfplus builds on any Linux host, and
//! only talking to Xen needs the libraries. libxenctrl's ABI changes with
//! every Xen release (its SONAME carries the release, `.so.4.17`), so these
//! bindings fit exactly Xen 4.17.
//!
//! The header quirks are handled once, here: include order and
//! `__XEN_TOOLS__` (`wrapper.h`), the undeclared `xc_get_pfn_type_batch`
//! (declared in `wrapper.h`), constant types (bindgen callbacks in
//! `regen/`), and the C macros bindgen cannot translate ([`INVALID_MFN`],
//! [`XC_PAGE_MASK`], [`hypercall_buffer_no_bounce`]).

#[rustfmt::skip]
mod generated;

use std::fmt;
use std::path::{Path, PathBuf};

pub use generated::types::*;
pub use generated::xenctrl::XenCtrl;
pub use generated::xenforeignmemory::XenForeignMemory;
pub use generated::xenguest::XenGuest;
pub use generated::xenstore::XenStore;
pub use generated::xentoollog::XenToolLog;

/// `INVALID_MFN` (`~0UL` in `xenctrl.h`; bindgen would make it `i32 = -1`).
pub const INVALID_MFN: xen_pfn_t = !0;

/// `XC_PAGE_MASK` (`~(XC_PAGE_SIZE-1)` as an unsigned long).
pub const XC_PAGE_MASK: std::os::raw::c_ulong = !(XC_PAGE_SIZE as std::os::raw::c_ulong - 1);

/// A hypercall buffer descriptor as `DECLARE_HYPERCALL_BUFFER` makes it
/// (`HYPERCALL_BUFFER_INIT_NO_BOUNCE`): no memory yet, no bounce buffer.
///
/// `DECLARE_HYPERCALL_BUFFER` and `HYPERCALL_BUFFER` are GNU statement
/// expressions bindgen cannot translate. Fill the descriptor with
/// `xc__hypercall_buffer_alloc_pages(xch, &mut b, n)` (which sets and
/// returns `b.hbuf`), pass `&mut b` where a `xc_hypercall_buffer_t *` is
/// wanted, and release it with `xc__hypercall_buffer_free_pages(xch, &mut b,
/// n)`. libxenctrl follows `param_shadow` only when it is non-NULL.
pub fn hypercall_buffer_no_bounce() -> xc_hypercall_buffer_t {
    xc_hypercall_buffer_t {
        hbuf: std::ptr::null_mut(),
        param_shadow: std::ptr::null_mut(),
        dir: 0,
        // `(void *)-1`: "no user buffer to bounce", the macro's sentinel.
        ubuf: usize::MAX as *mut std::os::raw::c_void,
        sz: 0,
    }
}

/// One of the five libraries: how it is found and who ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibrarySpec {
    /// The file name up to `.so` (`libxenctrl`).
    pub stem: &'static str,
    /// The SONAME these bindings fit (`libxenctrl.so.4.17`).
    pub soname: &'static str,
    /// The Debian (bookworm) package that ships it.
    pub package: &'static str,
}

/// libxenctrl: domains, log-dirty, scheduler, hypercall buffers.
pub const LIBXENCTRL: LibrarySpec = LibrarySpec {
    stem: "libxenctrl",
    soname: "libxenctrl.so.4.17",
    package: "libxenmisc4.17",
};
/// libxenguest: the save/restore loops, `xc_domain_resume`, CPU policies.
pub const LIBXENGUEST: LibrarySpec = LibrarySpec {
    stem: "libxenguest",
    soname: "libxenguest.so.4.17",
    package: "libxenmisc4.17",
};
/// libxenforeignmemory: mapping guest pages into this process.
pub const LIBXENFOREIGNMEMORY: LibrarySpec = LibrarySpec {
    stem: "libxenforeignmemory",
    soname: "libxenforeignmemory.so.1",
    package: "libxenforeignmemory1",
};
/// libxenstore: the xenstore client (suspend requests, domain names).
pub const LIBXENSTORE: LibrarySpec = LibrarySpec {
    stem: "libxenstore",
    soname: "libxenstore.so.4",
    package: "libxenstore4",
};
/// libxentoollog: the loggers libxenctrl reports through.
pub const LIBXENTOOLLOG: LibrarySpec = LibrarySpec {
    stem: "libxentoollog",
    soname: "libxentoollog.so.1",
    package: "libxentoollog1",
};

/// All five, in load order (dependencies first).
pub const ALL_LIBRARIES: [LibrarySpec; 5] = [
    LIBXENTOOLLOG,
    LIBXENCTRL,
    LIBXENFOREIGNMEMORY,
    LIBXENGUEST,
    LIBXENSTORE,
];

/// Where the dynamic loader looks on Debian and on source installs, for
/// telling "missing" from "another Xen release".
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

/// Why the libraries could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The library is not installed (no file with this SONAME), and no
    /// other release of it was found either.
    Missing {
        /// What was looked for.
        library: LibrarySpec,
        /// The loader's message.
        reason: String,
    },
    /// Only other releases of the library are installed (e.g.
    /// `libxenctrl.so.4.18`): these bindings fit Xen 4.17 only.
    WrongVersion {
        /// What was looked for.
        library: LibrarySpec,
        /// The files found instead.
        found: Vec<PathBuf>,
    },
    /// The library loaded but lacks a function these bindings need (a
    /// different build than Debian's 4.17).
    Incomplete {
        /// The library.
        library: LibrarySpec,
        /// The loader's message (names the symbol).
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Missing { library, reason } => write!(
                f,
                "{} is not installed (install the Debian package {}): {reason}",
                library.soname, library.package
            ),
            LoadError::WrongVersion { library, found } => {
                let found: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "{} not found, but {} is: perfplus supports Xen 4.17 only \
                     (install {} from Debian bookworm, or a perfplus built for your Xen)",
                    library.soname,
                    found.join(", "),
                    library.package
                )
            }
            LoadError::Incomplete { library, reason } => write!(
                f,
                "{} lacks a function perfplus needs (not a Xen 4.17 build?): {reason}",
                library.soname
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The five libraries, loaded. Keep it alive as long as any handle made
/// through it (an `Arc` is the usual owner): dropping it unloads them.
pub struct Libraries {
    /// libxenctrl.
    pub ctrl: XenCtrl,
    /// libxenguest.
    pub guest: XenGuest,
    /// libxenforeignmemory.
    pub foreign_memory: XenForeignMemory,
    /// libxenstore.
    pub store: XenStore,
    /// libxentoollog.
    pub toollog: XenToolLog,
}

impl fmt::Debug for Libraries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Libraries").finish_non_exhaustive()
    }
}

impl Libraries {
    /// Load all five by SONAME through the dynamic loader's usual search
    /// (`LD_LIBRARY_PATH`, `ld.so.cache`, the default directories).
    pub fn load() -> Result<Self, LoadError> {
        Self::load_with(None)
    }

    /// Load all five from `dir` only (e.g. a Xen built from source into
    /// `/usr/local/lib`, or a staged tree).
    pub fn load_from_dir(dir: &Path) -> Result<Self, LoadError> {
        Self::load_with(Some(dir))
    }

    fn load_with(dir: Option<&Path>) -> Result<Self, LoadError> {
        // libxentoollog is loaded first only to report it by name if it is
        // missing; libxenctrl pulls it in through DT_NEEDED anyway.
        let toollog = open(dir, LIBXENTOOLLOG, |p| {
            // SAFETY: loading a system library runs its initialisers;
            // libxentoollog's have no preconditions.
            unsafe { XenToolLog::new(p) }
        })?;
        let ctrl = open(dir, LIBXENCTRL, |p| {
            // SAFETY: as above; libxenctrl's initialisers only register
            // its own state.
            unsafe { XenCtrl::new(p) }
        })?;
        let foreign_memory = open(dir, LIBXENFOREIGNMEMORY, |p| {
            // SAFETY: as above.
            unsafe { XenForeignMemory::new(p) }
        })?;
        let guest = open(dir, LIBXENGUEST, |p| {
            // SAFETY: as above.
            unsafe { XenGuest::new(p) }
        })?;
        let store = open(dir, LIBXENSTORE, |p| {
            // SAFETY: as above.
            unsafe { XenStore::new(p) }
        })?;
        Ok(Self {
            ctrl,
            guest,
            foreign_memory,
            store,
            toollog,
        })
    }
}

/// Open one library (by SONAME, or as `dir/SONAME`), telling a missing
/// file from a missing symbol from another release.
fn open<T>(
    dir: Option<&Path>,
    library: LibrarySpec,
    load: impl FnOnce(&std::ffi::OsStr) -> Result<T, libloading::Error>,
) -> Result<T, LoadError> {
    let path = match dir {
        Some(dir) => dir.join(library.soname).into_os_string(),
        None => library.soname.into(),
    };
    match load(&path) {
        Ok(loaded) => Ok(loaded),
        Err(e @ libloading::Error::DlSym { .. }) => Err(LoadError::Incomplete {
            library,
            reason: e.to_string(),
        }),
        Err(e) => {
            let dirs: Vec<&Path> = match dir {
                Some(dir) => vec![dir],
                None => LIBRARY_DIRS.iter().map(Path::new).collect(),
            };
            let found = other_releases(&dirs, library);
            if found.is_empty() {
                Err(LoadError::Missing {
                    library,
                    reason: e.to_string(),
                })
            } else {
                Err(LoadError::WrongVersion { library, found })
            }
        }
    }
}

/// Files `<stem>.so.<something else>` in `dirs`: other releases of the
/// library (not the bare `.so` development link, which says nothing).
fn other_releases(dirs: &[&Path], library: LibrarySpec) -> Vec<PathBuf> {
    let prefix = format!("{}.so.", library.stem);
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && !name.starts_with(library.soname) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("libxenctrl-sys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_library_names_the_debian_package() {
        let dir = scratch("empty");
        let err = Libraries::load_from_dir(&dir).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LoadError::Missing { .. }), "{err:?}");
        assert!(text.contains("libxentoollog.so.1"), "{text}");
        assert!(
            text.contains("install the Debian package libxentoollog1"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn another_xen_release_is_reported_as_the_wrong_version() {
        let dir = scratch("other-release");
        std::fs::write(dir.join("libxentoollog.so.2"), b"").unwrap();
        let err = Libraries::load_from_dir(&dir).unwrap_err();
        let LoadError::WrongVersion { library, found } = &err else {
            panic!("expected WrongVersion, got {err:?}");
        };
        assert_eq!(*library, LIBXENTOOLLOG);
        assert_eq!(found, &vec![dir.join("libxentoollog.so.2")]);
        assert!(err.to_string().contains("perfplus supports Xen 4.17 only"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hypercall_buffer_starts_without_memory_or_bounce() {
        let b = hypercall_buffer_no_bounce();
        assert!(b.hbuf.is_null() && b.param_shadow.is_null());
        assert_eq!(b.ubuf as usize, usize::MAX);
        assert_eq!(std::mem::size_of::<xc_hypercall_buffer_t>(), 40);
    }

    #[test]
    fn hand_written_constants_match_the_c_macros() {
        assert_eq!(INVALID_MFN, u64::MAX);
        assert_eq!(XC_PAGE_MASK, 0xffff_ffff_ffff_f000);
        assert_eq!(XGS_POLICY_ABORT, -1);
        assert_eq!(XEN_DOMCTL_PFINFO_XTAB, 0xf000_0000);
    }
}
