//! What this kernel can do, and errors that say what is missing.
//!
//! The arena needs three things, all present since Linux 6.7: the
//! `userfaultfd` syscall, `UFFD_FEATURE_WP_ASYNC` (write faults resolved in
//! the kernel, no fault-handling thread) with `UFFD_FEATURE_WP_UNPOPULATED`
//! (6.4), and the `PAGEMAP_SCAN` ioctl on `/proc/PID/pagemap`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::{sys, ArenaError};

/// The features the arena asks the uffd for.
pub const FEATURES: u64 = sys::UFFD_FEATURE_WP_ASYNC | sys::UFFD_FEATURE_WP_UNPOPULATED;

/// The running kernel's release (`uname -r`), for messages.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// A userfaultfd for this process's memory with the arena's features, or an
/// error naming what this kernel lacks.
pub fn open_userfaultfd() -> Result<OwnedFd, ArenaError> {
    let uffd = sys::userfaultfd().map_err(|e| classify_userfaultfd_error(e, &kernel_release()))?;
    let granted = sys::uffd_api(uffd.as_fd(), FEATURES)
        .map_err(|e| classify_api_error(e, &kernel_release()))?;
    if granted & FEATURES != FEATURES {
        return Err(missing_feature(FEATURES & !granted, &kernel_release()));
    }
    Ok(uffd)
}

/// Check once, cheaply, that tracking works here: a one-page region,
/// armed, written, scanned.
pub fn check_support() -> Result<(), ArenaError> {
    let region = super::TrackedRegion::new(1)?;
    let pagemap = File::open("/proc/self/pagemap").map_err(|source| ArenaError::Os {
        context: "opening /proc/self/pagemap".into(),
        source,
    })?;
    let mut tracker = super::WriteTracker::new(
        region
            .uffd()
            .try_clone_to_owned()
            .map_err(|source| ArenaError::Os {
                context: "duplicating the userfaultfd".into(),
                source,
            })?,
        pagemap.into(),
        region.base_address(),
        region.pages(),
        region.page_size(),
    );
    tracker.arm()?;
    region.memory().store(0, 1);
    let mut dirty = crate::backend::DirtyBitmap::new(1);
    tracker.harvest(&mut dirty)?;
    if dirty.count() != 1 {
        return Err(ArenaError::TrackingBroken {
            detail: format!(
                "a one-page probe reported {} written pages, 1 expected",
                dirty.count()
            ),
        });
    }
    Ok(())
}

/// Errors of `userfaultfd(2)` itself.
pub fn classify_userfaultfd_error(e: io::Error, kernel: &str) -> ArenaError {
    let detail = match e.raw_os_error() {
        Some(libc::ENOSYS) => {
            "the userfaultfd syscall does not exist (kernel built without CONFIG_USERFAULTFD, \
             or a seccomp filter hides it)"
        }
        Some(libc::EPERM) => {
            "userfaultfd was refused (EPERM) even in user-mode-only mode; a seccomp filter or \
             LSM blocks it (containers often do: allow the userfaultfd syscall)"
        }
        Some(libc::EINVAL) => "userfaultfd rejected UFFD_USER_MODE_ONLY (Linux 5.11+ needed)",
        _ => "userfaultfd failed",
    };
    ArenaError::Unsupported {
        detail: format!("{detail}: {e}"),
        kernel: kernel.to_owned(),
    }
}

/// Errors of the `UFFDIO_API` handshake: the kernel refuses unknown features
/// with EINVAL.
pub fn classify_api_error(e: io::Error, kernel: &str) -> ArenaError {
    if e.raw_os_error() == Some(libc::EINVAL) {
        missing_feature(FEATURES, kernel)
    } else {
        ArenaError::Os {
            context: "UFFDIO_API handshake".into(),
            source: e,
        }
    }
}

/// Features asked for and not granted.
pub fn missing_feature(missing: u64, kernel: &str) -> ArenaError {
    let mut names = Vec::new();
    if missing & sys::UFFD_FEATURE_WP_ASYNC != 0 {
        names.push("UFFD_FEATURE_WP_ASYNC (async write-protect, Linux 6.7)");
    }
    if missing & sys::UFFD_FEATURE_WP_UNPOPULATED != 0 {
        names.push("UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4)");
    }
    ArenaError::Unsupported {
        detail: format!("userfaultfd lacks {}", names.join(" and ")),
        kernel: kernel.to_owned(),
    }
}

/// Errors of `PAGEMAP_SCAN`: ENOTTY on kernels before 6.7.
pub fn classify_scan_error(e: io::Error, kernel: &str) -> ArenaError {
    match e.raw_os_error() {
        Some(libc::ENOTTY) => ArenaError::Unsupported {
            detail: "/proc/PID/pagemap has no PAGEMAP_SCAN ioctl (Linux 6.7)".into(),
            kernel: kernel.to_owned(),
        },
        Some(libc::EPERM) => ArenaError::Os {
            context: "PAGEMAP_SCAN refused: the range is not under async userfaultfd \
                      write-protect (was the region registered and armed?)"
                .into(),
            source: e,
        },
        _ => ArenaError::Os {
            context: "PAGEMAP_SCAN".into(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_kernel_errors_name_the_missing_feature_and_version() {
        let e = classify_api_error(io::Error::from_raw_os_error(libc::EINVAL), "6.1.0-18-amd64");
        let msg = e.to_string();
        assert!(msg.contains("UFFD_FEATURE_WP_ASYNC"), "{msg}");
        assert!(msg.contains("6.7"), "{msg}");
        assert!(msg.contains("6.1.0-18-amd64"), "{msg}");

        let e = classify_scan_error(io::Error::from_raw_os_error(libc::ENOTTY), "6.6.9");
        assert!(e.to_string().contains("PAGEMAP_SCAN"), "{e}");

        let e = classify_userfaultfd_error(io::Error::from_raw_os_error(libc::ENOSYS), "6.8");
        assert!(e.to_string().contains("CONFIG_USERFAULTFD"), "{e}");
        let e = classify_userfaultfd_error(io::Error::from_raw_os_error(libc::EPERM), "6.8");
        assert!(e.to_string().contains("seccomp"), "{e}");
    }

    #[test]
    fn this_kernel_supports_tracking_or_says_why_not() {
        match check_support() {
            Ok(()) => {}
            Err(e @ ArenaError::Unsupported { .. }) => {
                eprintln!("\n*** arena tracking unsupported here: {e}\n");
                assert!(!crate::backend::arena::tests_require_tracking(), "{e}");
            }
            Err(e) => panic!("probe failed unexpectedly: {e}"),
        }
    }
}
