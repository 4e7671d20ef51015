//! The kernel interfaces the arena needs and Debian's 6.1 headers (and the
//! `libc` crate) lack: userfaultfd write-protect in async mode and the
//! `PAGEMAP_SCAN` ioctl (both Linux 6.7+), plus thin wrappers over the
//! syscalls that touch another process (`pidfd_open`, `pidfd_getfd`,
//! `process_vm_readv`/`writev`).
//!
//! Everything unsafe about these interfaces is here, each call with its
//! `// SAFETY:` note; the rest of the arena uses the safe functions below.
//! The structs mirror `include/uapi/linux/userfaultfd.h` and
//! `include/uapi/linux/fs.h` of Linux 6.7; their sizes are asserted at
//! compile time and the ioctl numbers are computed with the kernel's
//! `_IOWR`/`_IOR` encoding (checked against gcc on the 6.1 headers for the
//! ones that exist there). x86-64 and aarch64 share all of them.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `UFFD_API`: the only userfaultfd API version.
pub const UFFD_API: u64 = 0xAA;
/// `userfaultfd(2)` flag: handle only user-mode faults (allowed without
/// privileges even when `vm.unprivileged_userfaultfd = 0`).
pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
/// Feature: write-protect unpopulated pages too (Linux 6.4+).
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// Feature: resolve write-protect faults in the kernel (Linux 6.7+).
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_REGISTER` mode: write-protect tracking.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_WRITEPROTECT` mode: protect (absent: unprotect).
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `PAGEMAP_SCAN` flag: re-protect the pages reported as written.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PAGEMAP_SCAN` flag: fail unless the range is under async uffd-wp.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// `PAGEMAP_SCAN` category: written since last write-protected.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioApi {
    /// `UFFD_API`.
    pub api: u64,
    /// Features asked for; on return, those granted.
    pub features: u64,
    /// Out: the ioctls available.
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRange {
    /// Start address (page aligned).
    pub start: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioRegister {
    /// The range to register.
    pub range: UffdioRange,
    /// `UFFDIO_REGISTER_MODE_*`.
    pub mode: u64,
    /// Out: the ioctls available on the range.
    pub ioctls: u64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioWriteprotect {
    /// The range to (un)protect.
    pub range: UffdioRange,
    /// `UFFDIO_WRITEPROTECT_MODE_*`.
    pub mode: u64,
}

/// `struct page_region`: one run of pages in the same categories.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageRegion {
    /// First byte address.
    pub start: u64,
    /// One past the last byte address.
    pub end: u64,
    /// `PAGE_IS_*` bits of the run (masked by `return_mask`).
    pub categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PmScanArg {
    /// `size_of::<PmScanArg>()`.
    pub size: u64,
    /// `PM_SCAN_*`.
    pub flags: u64,
    /// First address to scan.
    pub start: u64,
    /// One past the last address to scan.
    pub end: u64,
    /// Out: where the walk stopped.
    pub walk_end: u64,
    /// Output array of `PageRegion`.
    pub vec: u64,
    /// Entries in `vec`.
    pub vec_len: u64,
    /// Stop after this many pages (0: no limit).
    pub max_pages: u64,
    /// Categories whose sense is inverted before matching.
    pub category_inverted: u64,
    /// Categories that must all be set.
    pub category_mask: u64,
    /// Categories of which at least one must be set.
    pub category_anyof_mask: u64,
    /// Categories reported in `PageRegion::categories`.
    pub return_mask: u64,
}

const _: () = assert!(size_of::<UffdioApi>() == 24);
const _: () = assert!(size_of::<UffdioRange>() == 16);
const _: () = assert!(size_of::<UffdioRegister>() == 32);
const _: () = assert!(size_of::<UffdioWriteprotect>() == 24);
const _: () = assert!(size_of::<PageRegion>() == 24);
const _: () = assert!(size_of::<PmScanArg>() == 96);

/// The kernel's `_IOC(dir, type, nr, size)` (asm-generic/ioctl.h).
const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `UFFDIO_API` = `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
pub const UFFDIO_API: u64 = ioc(IOC_READ | IOC_WRITE, 0xAA, 0x3F, size_of::<UffdioApi>());
/// `UFFDIO_REGISTER` = `_IOWR(0xAA, 0x00, struct uffdio_register)`.
pub const UFFDIO_REGISTER: u64 = ioc(
    IOC_READ | IOC_WRITE,
    0xAA,
    0x00,
    size_of::<UffdioRegister>(),
);
/// `UFFDIO_UNREGISTER` = `_IOR(0xAA, 0x01, struct uffdio_range)`.
pub const UFFDIO_UNREGISTER: u64 = ioc(IOC_READ, 0xAA, 0x01, size_of::<UffdioRange>());
/// `UFFDIO_WRITEPROTECT` = `_IOWR(0xAA, 0x06, struct uffdio_writeprotect)`.
pub const UFFDIO_WRITEPROTECT: u64 = ioc(
    IOC_READ | IOC_WRITE,
    0xAA,
    0x06,
    size_of::<UffdioWriteprotect>(),
);
/// `PAGEMAP_SCAN` = `_IOWR('f', 16, struct pm_scan_arg)`.
pub const PAGEMAP_SCAN: u64 = ioc(IOC_READ | IOC_WRITE, 0x66, 16, size_of::<PmScanArg>());

const _: () = assert!(UFFDIO_API == 0xC018_AA3F);
const _: () = assert!(UFFDIO_REGISTER == 0xC020_AA00);
const _: () = assert!(UFFDIO_UNREGISTER == 0x8010_AA01);
const _: () = assert!(UFFDIO_WRITEPROTECT == 0xC018_AA06);
const _: () = assert!(PAGEMAP_SCAN == 0xC060_6610);

/// A syscall return value: `-1` means `errno`.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `ioctl(fd, request, arg)` where `arg` points to the request's struct.
///
/// # Safety
/// `request` must be an ioctl whose argument is a `T` (by the kernel's
/// definition), and every pointer inside `*arg` must be valid for what the
/// kernel does with it.
unsafe fn ioctl_with<T>(fd: BorrowedFd<'_>, request: u64, arg: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees `request` takes a `*mut T` and that the
    // pointers it contains are valid; `arg` is a live, exclusive reference.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(arg)) };
    check(libc::c_long::from(ret))
}

/// `userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)`: a uffd bound
/// to the calling process's memory.
pub fn userfaultfd() -> io::Result<OwnedFd> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
    // SAFETY: userfaultfd takes one int and returns a new fd or -1; no memory
    // is passed.
    let fd = check(unsafe { libc::syscall(libc::SYS_userfaultfd, flags) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `UFFDIO_API` handshake asking for `features`; returns those granted.
pub fn uffd_api(uffd: BorrowedFd<'_>, features: u64) -> io::Result<u64> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API takes a `struct uffdio_api`, which holds no pointer.
    unsafe { ioctl_with(uffd, UFFDIO_API, &mut api) }?;
    Ok(api.features)
}

/// `UFFDIO_REGISTER` of `[start, start + len)` of the uffd's process for
/// write-protect tracking. The addresses belong to the process that created
/// the uffd, not necessarily to this one; no memory of ours is touched.
pub fn uffd_register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut reg = UffdioRegister {
        range: UffdioRange { start, len },
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER takes a `struct uffdio_register`, which holds
    // no pointer; the range is interpreted in the uffd owner's address space
    // and changes only how writes there are tracked, never their content.
    unsafe { ioctl_with(uffd, UFFDIO_REGISTER, &mut reg) }?;
    Ok(())
}

/// `UFFDIO_WRITEPROTECT` of `[start, start + len)`: protect (`true`, arm
/// tracking: every page reads as not written) or unprotect (`false`).
pub fn uffd_writeprotect(
    uffd: BorrowedFd<'_>,
    start: u64,
    len: u64,
    protect: bool,
) -> io::Result<()> {
    let mut wp = UffdioWriteprotect {
        range: UffdioRange { start, len },
        mode: if protect {
            UFFDIO_WRITEPROTECT_MODE_WP
        } else {
            0
        },
    };
    // SAFETY: UFFDIO_WRITEPROTECT takes a `struct uffdio_writeprotect`, no
    // pointer. In async mode a protected page faults on write and the kernel
    // resolves the fault itself, so protecting memory (ours included) never
    // blocks or changes what a write stores.
    unsafe { ioctl_with(uffd, UFFDIO_WRITEPROTECT, &mut wp) }?;
    Ok(())
}

/// What one `PAGEMAP_SCAN` call found.
#[derive(Debug, Clone, Copy)]
pub struct ScanStep {
    /// Entries of the output slice filled.
    pub regions: usize,
    /// Where the kernel's walk stopped.
    pub walk_end: u64,
}

/// One `PAGEMAP_SCAN` call over `[start, end)` reporting written pages into
/// `out` and, with `reprotect`, write-protecting them again in the same
/// atomic step. `pagemap` is an open `/proc/PID/pagemap` (of the process
/// whose addresses these are).
pub fn pagemap_scan_written(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    out: &mut [PageRegion],
    reprotect: bool,
) -> io::Result<ScanStep> {
    let mut arg = PmScanArg {
        size: size_of::<PmScanArg>() as u64,
        flags: if reprotect {
            PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC
        } else {
            PM_SCAN_CHECK_WPASYNC
        },
        start,
        end,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
        ..PmScanArg::default()
    };
    // SAFETY: PAGEMAP_SCAN takes a `struct pm_scan_arg`; its only pointer,
    // `vec`, points to `out`, which is valid for `vec_len` writable entries
    // of the kernel's `struct page_region` layout (asserted above) and
    // outlives the call. The scanned range is in the pagemap's process and
    // is only inspected and write-protected, never written.
    let filled = unsafe { ioctl_with(pagemap, PAGEMAP_SCAN, &mut arg) }?;
    Ok(ScanStep {
        regions: usize::try_from(filled).map_err(|_| io::Error::other("negative region count"))?,
        walk_end: arg.walk_end,
    })
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: a fresh fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_getfd(pidfd, targetfd, 0)`: a duplicate of another process's fd.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target_fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two fds and flags, returns a new fd or -1.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: a fresh fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: a signal that cannot reach a
/// recycled pid.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a NULL siginfo and no flags reads no
    // memory of ours.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Most iovecs one `process_vm_*` call takes (`UIO_MAXIOV`).
pub const MAX_IOV: usize = 1024;

/// A span of another process's memory: `(address, bytes)`.
pub type RemoteSpan = (u64, usize);

/// Remote spans as iovecs (their addresses are never dereferenced here).
fn remote_iovecs(remote: &[RemoteSpan]) -> io::Result<Vec<libc::iovec>> {
    remote
        .iter()
        .map(|&(addr, len)| {
            let addr = usize::try_from(addr)
                .map_err(|_| io::Error::other("address beyond this address space"))?;
            Ok(libc::iovec {
                iov_base: std::ptr::without_provenance_mut(addr),
                iov_len: len,
            })
        })
        .collect()
}

/// `process_vm_readv(pid, [buf], remote)`: copy the remote spans, in order,
/// into `buf` (whose length must be their total). At most [`MAX_IOV`]
/// spans. Returns the bytes copied (short on a partial failure).
pub fn process_vm_read(
    pid: libc::pid_t,
    buf: &mut [u8],
    remote: &[RemoteSpan],
) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = remote_iovecs(remote)?;
    let count =
        libc::c_ulong::try_from(remote.len()).map_err(|_| io::Error::other("too many spans"))?;
    // SAFETY: the local iovec describes `buf`, valid and exclusively
    // borrowed for its whole length; the remote iovecs are addresses in the
    // other process, which the kernel checks (EFAULT) and never dereferences
    // in ours.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), count, 0) };
    let n = check(n as libc::c_long)?;
    usize::try_from(n).map_err(|_| io::Error::other("negative byte count"))
}

/// `process_vm_writev(pid, [data], remote)`: copy `data` into the remote
/// spans, in order. At most [`MAX_IOV`] spans. Returns the bytes copied.
pub fn process_vm_write(pid: libc::pid_t, data: &[u8], remote: &[RemoteSpan]) -> io::Result<usize> {
    process_vm_write_gather(pid, &[data], remote)
}

/// `process_vm_writev(pid, pages, remote)`: copy the local `pages`, in
/// order, into the remote spans (the totals should be equal), without first
/// gathering them into one buffer. At most [`MAX_IOV`] of each. Returns the
/// bytes copied.
pub fn process_vm_write_gather(
    pid: libc::pid_t,
    pages: &[&[u8]],
    remote: &[RemoteSpan],
) -> io::Result<usize> {
    if pages.len() > MAX_IOV || remote.len() > MAX_IOV {
        return Err(io::Error::other("more than IOV_MAX pieces in one write"));
    }
    let local: Vec<libc::iovec> = pages
        .iter()
        .map(|page| libc::iovec {
            iov_base: page.as_ptr().cast_mut().cast(),
            iov_len: page.len(),
        })
        .collect();
    let remote = remote_iovecs(remote)?;
    let (Ok(local_count), Ok(remote_count)) = (
        libc::c_ulong::try_from(local.len()),
        libc::c_ulong::try_from(remote.len()),
    ) else {
        return Err(io::Error::other("too many pieces"));
    };
    // SAFETY: each local iovec describes one of the borrowed `pages`, which
    // the kernel only reads (the `*mut` is the iovec type's, not a write)
    // and which outlive the call; the remote iovecs are checked by the
    // kernel in the other process.
    let n = unsafe {
        libc::process_vm_writev(
            pid,
            local.as_ptr(),
            local_count,
            remote.as_ptr(),
            remote_count,
            0,
        )
    };
    let n = check(n as libc::c_long)?;
    usize::try_from(n).map_err(|_| io::Error::other("negative byte count"))
}

/// `mmap` of `len` bytes of private anonymous memory, readable and
/// writable, not reserved against overcommit (a 64 GiB arena costs only
/// what the guest touches).
pub fn map_anonymous(len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: an anonymous mapping at an address of the kernel's choice
    // aliases nothing that exists; the result is checked for MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// Fault in every page of `[base, base + len)` for writing, in one call
/// (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14+), so later writes (a
/// migration filling an incoming arena) take no page faults.
pub fn populate_write(base: std::ptr::NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the range is a mapping this process owns (made by
    // `map_anonymous`); MADV_POPULATE_WRITE only faults its pages in, which
    // leaves their contents (zero) unchanged.
    check(libc::c_long::from(unsafe {
        libc::madvise(base.as_ptr().cast(), len, libc::MADV_POPULATE_WRITE)
    }))?;
    Ok(())
}

/// `munmap` of a mapping made by [`map_anonymous`].
pub fn unmap(base: std::ptr::NonNull<u8>, len: usize) {
    // SAFETY: `base`/`len` describe a mapping from `map_anonymous` that its
    // owner is giving up; no reference into it outlives this call.
    let _ = unsafe { libc::munmap(base.as_ptr().cast(), len) };
}

/// Which side of a [`fork_keeper`] this is.
#[derive(Debug)]
pub enum Forked {
    /// The parent (the keeper), with the child's pid and the write end of
    /// the pipe that is the child's stdin.
    Keeper {
        /// The child's pid.
        child: libc::pid_t,
        /// Writes to the child's stdin.
        child_stdin: OwnedFd,
    },
    /// The child: its stdin is the pipe, and it dies with the keeper.
    Child,
}

/// Fork into a keeper (parent) and a child whose stdin is a new pipe from
/// the keeper and which gets `SIGKILL` when the keeper dies.
///
/// Must be called while the process has a single thread (at the start of
/// `main`): after `fork` only async-signal-safe work is sound in the child
/// of a multi-threaded process, and the child here goes on to run Rust code.
pub fn fork_keeper() -> io::Result<Forked> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the 2-element array we pass.
    check(libc::c_long::from(unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
    }))?;
    // SAFETY: fds[0] was just created by pipe2 and is owned by nobody else.
    let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above, for fds[1].
    let write_end = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    // SAFETY: getpid has no preconditions.
    let keeper = unsafe { libc::getpid() };
    // SAFETY: the caller guarantees a single-threaded process, so the child
    // is a complete copy with no lock held by a vanished thread.
    let pid = check(libc::c_long::from(unsafe { libc::fork() }))?;
    if pid > 0 {
        drop(read_end);
        return Ok(Forked::Keeper {
            child: libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?,
            child_stdin: write_end,
        });
    }
    drop(write_end);
    // SAFETY: dup2 onto fd 0 replaces our stdin with the pipe; `read_end`
    // stays valid for the call and is closed (by drop) afterwards.
    check(libc::c_long::from(unsafe {
        libc::dup2(read_end.as_raw_fd(), 0)
    }))?;
    drop(read_end);
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    check(libc::c_long::from(unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)
    }))?;
    // SAFETY: getppid has no preconditions. If the keeper died before the
    // prctl, the death signal will never come: leave now.
    if unsafe { libc::getppid() } != keeper {
        std::process::exit(1);
    }
    Ok(Forked::Child)
}

/// `waitpid(pid, 0)`: the exit code (128 + signal when killed).
pub fn wait_child(pid: libc::pid_t) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes the status into the int we pass.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// `kill(pid, signal)`.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes a pid and a signal number; no memory is passed.
    check(libc::c_long::from(unsafe { libc::kill(pid, signal) }))?;
    Ok(())
}

/// Move the calling thread (only it) into the network namespace at `path`
/// (e.g. `/run/netns/NAME`). Its sockets from then on live there.
pub fn enter_netns(path: &std::path::Path) -> io::Result<()> {
    let ns = std::fs::File::open(path)?;
    // SAFETY: setns takes an fd we own for the call and a namespace type; it
    // changes only the calling thread's network namespace.
    check(libc::c_long::from(unsafe {
        libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET)
    }))?;
    Ok(())
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer, which
    // points to a live local.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if ret != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The calling thread's nice value (Linux keeps one per thread), from
/// `/proc/thread-self/stat` (`getpriority` returns -1 both for nice -1 and
/// for an error).
pub fn thread_nice() -> io::Result<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    // Fields after the command name (which may hold spaces and parens):
    // state is field 3, nice field 19.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(16))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("no nice value in /proc/thread-self/stat"))
}

/// Set the calling thread's nice value (a lower value needs
/// `CAP_SYS_NICE` or a matching `RLIMIT_NICE`).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers; with PRIO_PROCESS and 0 it
    // changes only the calling thread on Linux.
    check(libc::c_long::from(unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice)
    }))?;
    Ok(())
}
