//! Real-time priority for the threads whose timing is the failure
//! detector's evidence (heartbeat receive, ping probes, the core loop), as
//! Heartbeat (`realtime on`) and Corosync do by default.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;

use super::NodeEvent;

/// The priority: the lowest real-time one, above every normal thread and
/// below the kernel's own real-time work.
const PRIORITY: libc::c_int = 1;

/// Move the calling thread to SCHED_RR at [`PRIORITY`].
pub(crate) fn enter_realtime() -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: sched_setscheduler only reads `param` during the call; pid 0
    // is the calling thread (a task of its own on Linux), so no other
    // thread's scheduling changes.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Put the calling thread at real-time priority if `wanted`; the first
/// thread that cannot says why, once, through `events`.
pub(crate) fn maybe_realtime(wanted: bool, warned: &AtomicBool, events: &Sender<NodeEvent>) {
    if !wanted {
        return;
    }
    if let Err(e) = enter_realtime() {
        if !warned.swap(true, Ordering::SeqCst) {
            let _ = events.send(NodeEvent::Warning(format!(
                "running at normal priority: cannot use real-time scheduling ({e}); a busy host may then look silent to its peers (give CAP_SYS_NICE, or set realtime = false to silence this)"
            )));
        }
    }
}
