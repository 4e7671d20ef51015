//! The migration's threads ahead of the guest's, on request: while a
//! migration runs, the sending and receiving threads take a lower nice
//! value ([`SendConfig::nice`](super::SendConfig::nice),
//! [`ReceiveConfig::nice`](super::ReceiveConfig::nice), `migrate --nice N`),
//! and give it back after. Off by default.
//!
//! A guest that keeps every core busy (the `kv` service under an unpaced
//! client on this 2-core machine) otherwise gets the same CPU share per
//! thread as the migration: the sender, one thread among the guest's
//! many, ran at a third of a core, its late rounds took 10-18 µs a page
//! instead of 3-5, and the dirty set stayed at 500-1,500 pages. Xen hosts
//! settle this in the hypervisor: dom0, where libxenguest runs, gets its
//! own vCPUs or a higher credit weight than the guests. At nice -10 a
//! thread weighs about nine nice-0 threads.
//!
//! Measured (1 GiB, loopback): `migrate demo --workload kv` at nice -10
//! converges to 40-100 pages for either policy, with 1.5-2.3 ms of
//! downtime (3-10 ms without) and a third of the total time. But it moves
//! the balance between the guest and the migration, and the policies were
//! tuned with the migration on equal terms: in the arena bench, with
//! three client connections, Perf+ stopped on kv after 3 rounds once
//! (19 ms), and on the muncher, now slower than the sender, xen-default's
//! five rounds left 137-362 ms of final pass where Perf+ ran into its byte
//! limit (609-862 ms). Until the policy accounts for it, it is a setting
//! for the admin who wants the migration to win, not a default.

use super::sys;

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
