//! The migration's threads ahead of the guest's: while a migration runs,
//! the sending and receiving threads take a lower nice value, and give it
//! back after.
//!
//! A guest that keeps every core busy (the `kv` service under an unpaced
//! client) otherwise gets the same CPU share per thread as the migration:
//! the sender, one thread among the guest's many, ran at a third of a
//! core, its rounds took 10-18 µs a page instead of 3-5, the dirty set
//! never converged below 500-1,500 pages, and the downtime (3-10 ms) and
//! the bytes followed the scheduler. Xen hosts solve the same problem in
//! the hypervisor: dom0, where libxenguest runs, gets its own vCPUs or a
//! higher credit weight than the guests. At nice -10 a thread weighs about
//! nine nice-0 threads, so the migration keeps about one core against a
//! guest that saturates the host, and the guest still runs beside it.

use super::sys;

/// The nice value migration threads take by default.
pub const MIGRATION_NICE: i32 = -10;

/// The calling thread's nice value, raised for the guard's life.
#[derive(Debug)]
pub struct RaisedPriority {
    previous: Option<i32>,
}

impl RaisedPriority {
    /// Set the calling thread to `nice` if that raises its priority
    /// (`None`: leave it). Best effort: without `CAP_SYS_NICE` (or an
    /// `RLIMIT_NICE` that allows it) the thread keeps its priority, which
    /// [`raised`](Self::raised) tells.
    pub fn raise(nice: Option<i32>) -> Self {
        let previous = match (nice, sys::thread_nice()) {
            (Some(n), Ok(now)) if n < now => sys::set_thread_nice(n).ok().map(|()| now),
            _ => None,
        };
        Self { previous }
    }

    /// Whether the priority was raised.
    pub fn raised(&self) -> bool {
        self.previous.is_some()
    }
}

impl Drop for RaisedPriority {
    fn drop(&mut self) {
        if let Some(n) = self.previous {
            // Lowering one's own priority back is always allowed.
            let _ = sys::set_thread_nice(n);
        }
    }
}

/// Whether this process may raise a thread to `nice` (tried on a thread
/// of its own, so no thread of the caller changes).
pub fn may_raise_priority(nice: i32) -> bool {
    std::thread::spawn(move || RaisedPriority::raise(Some(nice)).raised())
        .join()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priority_comes_back_when_the_guard_goes() {
        // Either way (root or not), the thread ends where it started.
        let before = sys::thread_nice().unwrap();
        {
            let guard = RaisedPriority::raise(Some(before - 1));
            if guard.raised() {
                assert_eq!(sys::thread_nice().unwrap(), before - 1);
            } else {
                assert_eq!(sys::thread_nice().unwrap(), before);
            }
        }
        assert_eq!(sys::thread_nice().unwrap(), before);
        // Not a raise: nothing changes.
        let guard = RaisedPriority::raise(Some(before + 1));
        assert!(!guard.raised());
        assert_eq!(sys::thread_nice().unwrap(), before);
        assert!(!RaisedPriority::raise(None).raised());
    }
}
