//! Pausing, resuming and throttling a guest.
//!
//! A [`Stopper`] stops and continues the guest's code: [`ProcessStopper`]
//! with `SIGSTOP`/`SIGCONT` (waiting until every thread really is stopped),
//! [`Gate`] cooperatively for guest threads in this process (writers pass
//! the gate around each batch of stores). [`RunControl`] puts the
//! migration's two reasons to stop on top of one stopper: an explicit
//! pause, which wins, and a CPU cap, a duty cycle run by a background
//! thread (of every [`DUTY_PERIOD`], the guest runs `cap`% and is stopped
//! for the rest; small caps keep a [`DUTY_MIN_RUN`] run phase and stretch
//! the period).

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sys;
use crate::backend::CpuShare;

/// One duty cycle of the CPU cap (stretched for small caps, see
/// [`DUTY_MIN_RUN`]).
pub const DUTY_PERIOD: Duration = Duration::from_millis(20);

/// The shortest run phase of a duty cycle: the throttle thread's own
/// wake-up latency (a millisecond or more on a loaded host) adds to every
/// run phase, so a cap whose run phase is shorter than this stretches the
/// period instead (1 %: run 2 ms, stop 198 ms), as QEMU's vCPU throttle
/// keeps a fixed run timeslice and lengthens the sleep.
pub const DUTY_MIN_RUN: Duration = Duration::from_millis(2);

/// The (run, stop) phases of one duty cycle at `cap`.
pub fn duty_phases(cap: CpuShare) -> (Duration, Duration) {
    let percent = u32::from(cap.get());
    let run = DUTY_PERIOD * percent / 100;
    if run >= DUTY_MIN_RUN || percent >= 100 {
        return (run, DUTY_PERIOD.saturating_sub(run));
    }
    let period = DUTY_MIN_RUN * 100 / percent.max(1);
    (DUTY_MIN_RUN, period.saturating_sub(DUTY_MIN_RUN))
}

/// How long [`ProcessStopper::stop`] waits for every thread to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops and continues a guest's code.
pub trait Stopper: Send + Sync + 'static {
    /// Stop the guest; on return it executes nothing until [`cont`](Self::cont).
    fn stop(&self) -> io::Result<()>;
    /// Let the guest run again.
    fn cont(&self) -> io::Result<()>;
}

/// `SIGSTOP`/`SIGCONT` through a pidfd (no pid-reuse race).
#[derive(Debug)]
pub struct ProcessStopper {
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

impl ProcessStopper {
    /// A stopper for process `pid`.
    pub fn new(pid: libc::pid_t) -> io::Result<Self> {
        Ok(Self {
            pid,
            pidfd: sys::pidfd_open(pid)?,
        })
    }

    /// The process's threads, by id.
    fn thread_ids(&self) -> io::Result<Vec<libc::pid_t>> {
        let mut ids = Vec::new();
        for task in fs::read_dir(format!("/proc/{}/task", self.pid))? {
            if let Some(id) = task?.file_name().to_str().and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Whether thread `tid` is in the stopped state (`T`); a thread that
    /// exited meanwhile stopped too, in a way.
    fn thread_stopped(&self, tid: libc::pid_t) -> io::Result<bool> {
        let stat = match fs::read_to_string(format!("/proc/{}/task/{tid}/stat", self.pid)) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        };
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        match state {
            Some('T' | 't') => Ok(true),
            Some('Z' | 'X') => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the guest process exited",
            )),
            _ => Ok(false),
        }
    }
}

/// How long [`ProcessStopper::stop`] checks again at once (yielding the
/// CPU in between) before it naps: threads take tens of microseconds to
/// stop, and a nap of 20 us takes 200 us or more on a loaded host, all of it
/// downtime when the stop is the migration's pause.
const STOP_SPIN: Duration = Duration::from_micros(500);

impl Stopper for ProcessStopper {
    fn stop(&self) -> io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGSTOP)?;
        // SIGSTOP is asynchronous: a thread on another CPU may still run for
        // a moment. The guest is stopped only when every thread says so.
        // A stopped thread stays stopped until our SIGCONT, so each thread
        // is read until it is seen stopped, then no more; a thread started
        // meanwhile joins the group stop, and a last listing finds it.
        let start = Instant::now();
        let mut nap = Duration::from_micros(20);
        let mut seen_stopped: Vec<libc::pid_t> = Vec::new();
        let mut pending = self.thread_ids()?;
        loop {
            let mut still = Vec::with_capacity(pending.len());
            for tid in pending {
                if self.thread_stopped(tid)? {
                    seen_stopped.push(tid);
                } else {
                    still.push(tid);
                }
            }
            pending = still;
            if pending.is_empty() {
                pending = self.thread_ids()?;
                pending.retain(|tid| !seen_stopped.contains(tid));
                if pending.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let waited = start.elapsed();
            if waited > STOP_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "process {} did not stop within {STOP_TIMEOUT:?} of SIGSTOP",
                        self.pid
                    ),
                ));
            }
            if waited < STOP_SPIN {
                std::thread::yield_now();
            } else {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(1));
            }
        }
    }

    fn cont(&self) -> io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGCONT)
    }
}

/// A cooperative stop for guest threads in this process: each writer holds
/// a [`GatePass`] while it stores; [`Stopper::stop`] closes the gate and
/// waits for the passes out.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    inside: usize,
}

/// Permission to run guest code until dropped.
#[derive(Debug)]
pub struct GatePass<'a> {
    gate: &'a Gate,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wait until the gate is open and enter it.
    pub fn enter(&self) -> GatePass<'_> {
        let mut state = self.lock();
        while state.closed {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.inside += 1;
        GatePass { gate: self }
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.inside -= 1;
        if state.inside == 0 {
            self.gate.changed.notify_all();
        }
    }
}

impl Stopper for Gate {
    fn stop(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.closed = true;
        while state.inside > 0 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }

    fn cont(&self) -> io::Result<()> {
        self.lock().closed = false;
        self.changed.notify_all();
        Ok(())
    }
}

impl<T: Stopper> Stopper for Arc<T> {
    fn stop(&self) -> io::Result<()> {
        (**self).stop()
    }
    fn cont(&self) -> io::Result<()> {
        (**self).cont()
    }
}

#[derive(Debug, Default)]
struct RunState {
    /// Paused by the migration (wins over the cap).
    paused: bool,
    /// The duty cycle, if any.
    cap: Option<CpuShare>,
    /// Whether the stopper currently holds the guest stopped.
    stopped: bool,
    /// The throttle thread should exit.
    shutdown: bool,
    /// Bumped on every change, so the throttle thread notices.
    generation: u64,
    /// The last error the throttle thread met (reported by the next call).
    throttle_error: Option<String>,
}

struct Shared {
    state: Mutex<RunState>,
    changed: Condvar,
    stopper: Box<dyn Stopper>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Pause, resume and CPU cap of one guest, on one [`Stopper`].
pub struct RunControl {
    shared: Arc<Shared>,
    throttle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("state", &*self.shared.lock())
            .finish_non_exhaustive()
    }
}

impl RunControl {
    /// Control a running guest through `stopper`.
    pub fn new(stopper: impl Stopper) -> Self {
        Self::with_state(stopper, false)
    }

    /// Control a guest that has not started yet (an incoming guest): it
    /// counts as paused until [`resume`](Self::resume).
    pub fn new_paused(stopper: impl Stopper) -> Self {
        Self::with_state(stopper, true)
    }

    fn with_state(stopper: impl Stopper, paused: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(RunState {
                    paused,
                    ..RunState::default()
                }),
                changed: Condvar::new(),
                stopper: Box::new(stopper),
            }),
            throttle: None,
        }
    }

    /// Stop the guest (idempotent).
    pub fn pause(&mut self) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        take_throttle_error(&mut state)?;
        state.paused = true;
        state.generation += 1;
        if !state.stopped {
            shared.stopper.stop()?;
            state.stopped = true;
        }
        shared.changed.notify_all();
        Ok(())
    }

    /// Let the guest run at full speed again (idempotent); drops the cap.
    pub fn resume(&mut self) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        state.paused = false;
        state.cap = None;
        state.generation += 1;
        if state.stopped {
            shared.stopper.cont()?;
            state.stopped = false;
        }
        shared.changed.notify_all();
        take_throttle_error(&mut state)
    }

    /// Whether the guest is paused (not merely throttled).
    pub fn is_paused(&self) -> bool {
        self.shared.lock().paused
    }

    /// Count a guest whose start failed as paused again (not yet started;
    /// nothing is signalled).
    pub fn mark_not_started(&mut self) {
        let mut state = self.shared.lock();
        state.paused = true;
        state.generation += 1;
    }

    /// Throttle the guest to `cap` of its CPU time, or lift the cap. While
    /// paused, the cap is recorded and takes effect on no resume (resume
    /// drops it).
    pub fn set_cpu_cap(&mut self, cap: Option<CpuShare>) -> io::Result<()> {
        {
            let mut state = self.shared.lock();
            take_throttle_error(&mut state)?;
            state.cap = cap.filter(|c| c.get() < 100);
            state.generation += 1;
            self.shared.changed.notify_all();
        }
        if self.throttle.is_none() && cap.is_some() {
            let shared = Arc::clone(&self.shared);
            self.throttle = Some(
                std::thread::Builder::new()
                    .name("arena-throttle".into())
                    .spawn(move || duty_cycle(&shared))?,
            );
        }
        Ok(())
    }

    /// The cap in force.
    pub fn cpu_cap(&self) -> Option<CpuShare> {
        self.shared.lock().cap
    }
}

fn take_throttle_error(state: &mut RunState) -> io::Result<()> {
    match state.throttle_error.take() {
        Some(e) => Err(io::Error::other(format!("CPU throttling failed: {e}"))),
        None => Ok(()),
    }
}

/// The throttle thread: alternate run and stop phases while a cap is set
/// and the guest is not paused.
fn duty_cycle(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            break;
        }
        let cap = match (state.paused, state.cap) {
            (false, Some(cap)) => cap,
            (paused, _) => {
                if !paused && state.stopped {
                    match shared.stopper.cont() {
                        Ok(()) => state.stopped = false,
                        Err(e) => state.throttle_error = Some(e.to_string()),
                    }
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
        };
        let generation = state.generation;
        let (run, stop) = duty_phases(cap);
        let phases = [(false, run), (true, stop)];
        for (stop, length) in phases {
            if state.generation != generation || state.shutdown {
                break;
            }
            let result = if stop && !state.stopped {
                shared.stopper.stop().map(|()| state.stopped = true)
            } else if !stop && state.stopped {
                shared.stopper.cont().map(|()| state.stopped = false)
            } else {
                Ok(())
            };
            if let Err(e) = result {
                state.throttle_error = Some(e.to_string());
                state.cap = None;
                break;
            }
            let until = Instant::now() + length;
            while state.generation == generation && !state.shutdown {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
        }
    }
}

impl Drop for RunControl {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.shutdown = true;
            self.shared.changed.notify_all();
        }
        if let Some(t) = self.throttle.take() {
            let _ = t.join();
        }
        // A guest left stopped by the throttle (not by an explicit pause)
        // runs again: dropping the control must not freeze it.
        let mut state = self.shared.lock();
        if state.stopped && !state.paused && self.shared.stopper.cont().is_ok() {
            state.stopped = false;
        }
    }
}

#[cfg(test)]
mod duty_tests {
    use super::*;

    #[test]
    fn small_caps_stretch_the_period_and_keep_the_share() {
        for percent in 1..=100_u8 {
            let (run, stop) = duty_phases(CpuShare::percent(percent).expect("1..=100"));
            let share = run.as_secs_f64() / (run + stop).as_secs_f64();
            assert!(
                (share - f64::from(percent) / 100.0).abs() < 0.005,
                "{percent}: {share}"
            );
            assert!(
                run >= DUTY_MIN_RUN || percent == 100,
                "{percent}: run {run:?}"
            );
        }
        assert_eq!(
            duty_phases(CpuShare::percent(1).expect("1 %")),
            (DUTY_MIN_RUN, Duration::from_millis(198))
        );
    }
}
