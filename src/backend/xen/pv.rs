//! PV guests: libxenguest's own save loop (`xc_domain_save`), which reads
//! the guest's P2M and rewrites its page tables (about 1,100 lines of C
//! that perfplus does not duplicate), with Perf+ plugged into it.
//!
//! ```text
//!  this thread                                     pump thread (scoped)
//!  xc_domain_save(pipe, LIVE, callbacks) ──pipe──▶ read ─▶ Encoder ─▶ transport
//!    precopy_policy(stats) ─▶ Perf+ decides            (PAGE_DATA zero/delta-
//!       (RoundStatsTracker fed from Xen's dirty         encoded for a perfplus
//!        count, the clock, the pump's byte count)       receiver; counted)
//!    suspend() ─▶ xenstore "suspend", wait for SHUTDOWN_suspend
//!  close(pipe) ─ join pump
//! ```
//!
//! libxenguest calls the policy twice per round: "call A" before sending,
//! with the dirty count Xen reported for the round to come, and "call B"
//! after it, before harvesting, with the count unknown (-1). Perf+ decides
//! at A, where [`RoundStatsTracker`] can complete the previous round's
//! numbers (pages, wire bytes, duration, pages dirtied meanwhile); at B it
//! only stretches the round to the policy's `min_round_ms` by sleeping (the
//! engine waits at the same point). A stop decided at A still sends that
//! round live (libxenguest's loop), then suspends for the final pass.
//! Hot-page deferral does not apply: libxenguest chooses the pages.
//!
//! Every callback is `extern "C"`, runs inside `catch_unwind` (a panic
//! aborts the migration, it never unwinds into C) and only touches the
//! callback state handed to `xc_domain_save`, on this thread. If the
//! transport fails, the pump keeps draining the pipe (so libxenguest never
//! sees a broken pipe mid-write) and the next callback aborts the save;
//! the guest is then resumed at the source.

use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libxenctrl_sys as sys;

use super::channel::{pipe_queued_bytes, pipe_reader_gone, ChannelWriter};
use super::session::{
    await_ready, hand_over, xen_failure, HandoverError, Mark, Session, Timeline, XlLink,
};
use super::transcode::Encoder;
use super::xl::{libxl_empty_record, LIBXL_REC_END};
use super::XenDomain;
use crate::backend::{CpuShare, Domain};
use crate::migration::engine::MigrationReport;
use crate::migration::sink::BatchSent;
use crate::migration::{
    Action, Clock, MigrationError, PrecopyPolicy, Progress, ProgressFlow, RealClock,
    RoundStatsTracker, Stage, TransportError,
};

/// What the pump thread and the callbacks share.
#[derive(Debug, Default)]
struct Shared {
    /// Wire bytes sent so far.
    bytes_sent: AtomicU64,
    /// Data pages through the encoder so far.
    data_pages: AtomicU64,
    /// The round the pages now coming belong to.
    round: AtomicU32,
    /// The transport failed: abort at the next callback.
    failed: AtomicBool,
    /// Why (set once).
    failure: Mutex<Option<TransportError>>,
    /// The pipe from libxenguest (its read end) and the one to the
    /// transport command (its write end), to see what is queued in them.
    pipe_fds: Mutex<Option<(RawFd, RawFd)>>,
    /// Bytes the pump has read from libxenguest and not yet sent.
    in_hand: AtomicU64,
}

/// The callbacks' state, passed to `xc_domain_save` as its `data`.
struct Callbacks<'a> {
    domain: &'a mut XenDomain,
    policy: &'a dyn PrecopyPolicy,
    observer: &'a mut dyn FnMut(&Progress) -> ProgressFlow,
    tracker: RoundStatsTracker,
    clock: RealClock,
    shared: &'a Shared,
    suspend_timeout: std::time::Duration,
    round_start_ns: u64,
    round_start_ms: f64,
    bytes_at_round_start: u64,
    round_pages: u64,
    min_round_ms: f64,
    rounds: u32,
    stop_reason: &'static str,
    cap: Option<CpuShare>,
    paused_at_ns: Option<u64>,
    data_pages_at_pause: u64,
    /// Why a callback made the save fail, and where.
    failure: Option<(Stage, MigrationError)>,
    /// The switch-over's moments.
    timeline: Arc<Timeline>,
}

impl Callbacks<'_> {
    fn elapsed_ms(&self) -> f64 {
        self.clock.now_ns() as f64 / 1e6
    }

    fn transport_failed(&mut self, stage: Stage) -> bool {
        if !self.shared.failed.load(Ordering::Acquire) {
            return false;
        }
        if self.failure.is_none() {
            let e = self
                .shared
                .failure
                .lock()
                .ok()
                .and_then(|mut f| f.take())
                .map_or(
                    MigrationError::Protocol {
                        what: "the transport failed".into(),
                    },
                    MigrationError::Transport,
                );
            self.failure = Some((stage, e));
        }
        true
    }

    /// libxenguest's `precopy_policy`.
    fn decide(&mut self, stats: sys::precopy_stats) -> c_int {
        let stage = Stage::Round(stats.iteration);
        if self.transport_failed(stage) {
            return sys::XGS_POLICY_ABORT;
        }
        let Ok(dirty) = u64::try_from(stats.dirty_count) else {
            // Call B: the round was sent; stretch it as the policy asked.
            if self.min_round_ms > 0.0 {
                // A finite, positive policy setting.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let wait_ns = (self.min_round_ms * 1e6) as u64;
                self.clock
                    .sleep_until(self.round_start_ns.saturating_add(wait_ns));
            }
            return sys::XGS_POLICY_CONTINUE_PRECOPY;
        };
        let now_ms = self.elapsed_ms();
        let bytes = self.shared.bytes_sent.load(Ordering::Acquire);
        if stats.iteration > 0 {
            self.tracker.round_done(
                self.round_pages,
                bytes.saturating_sub(self.bytes_at_round_start),
                now_ms - self.round_start_ms,
                dirty,
            );
        }
        let snapshot = self.tracker.snapshot(now_ms, dirty, 0);
        let decision = self.policy.decide(&snapshot);
        if decision.cpu_cap != self.cap && self.domain.set_cpu_cap(decision.cpu_cap).is_ok() {
            self.cap = decision.cpu_cap;
        }
        self.tracker
            .set_cpu_cap_percent(self.cap.map_or(100, CpuShare::get));
        if (self.observer)(&Progress::Decided {
            stats: snapshot,
            decision,
        }) == ProgressFlow::Cancel
        {
            self.failure = Some((stage, MigrationError::Cancelled));
            return sys::XGS_POLICY_ABORT;
        }
        if decision.action == Action::Abort {
            self.failure = Some((
                stage,
                MigrationError::NotConverged {
                    reason: decision.reason,
                },
            ));
            return sys::XGS_POLICY_ABORT;
        }
        if dirty > 0 {
            self.rounds += 1;
            self.round_pages = dirty;
            self.round_start_ns = self.clock.now_ns();
            self.round_start_ms = now_ms;
            self.bytes_at_round_start = bytes;
            self.shared.round.store(stats.iteration, Ordering::Release);
        }
        if decision.action == Action::StopAndCopy {
            self.stop_reason = decision.reason;
            self.min_round_ms = 0.0;
            sys::XGS_POLICY_STOP_AND_COPY
        } else {
            self.min_round_ms = decision.min_round_ms;
            sys::XGS_POLICY_CONTINUE_PRECOPY
        }
    }

    /// libxenguest's `suspend`: non-zero once the guest has suspended.
    fn suspend(&mut self) -> c_int {
        if self.transport_failed(Stage::FinalPass) {
            return 0;
        }
        // The final pass is the round after the last live one.
        self.shared.round.store(self.rounds, Ordering::Release);
        // libxenguest has written the last live round into the pipe; let
        // it reach the receiver while the guest still runs.
        if let Ok(Some((from_xc, to_wire))) = self.shared.pipe_fds.lock().map(|f| *f) {
            let shared = self.shared;
            // Nothing drains once the transport failed: stop looking.
            self.timeline.drain_before_stop(|| {
                if shared.failed.load(Ordering::Acquire) || pipe_reader_gone(to_wire) {
                    return 0;
                }
                pipe_queued_bytes(from_xc)
                    + shared.in_hand.load(Ordering::Acquire)
                    + pipe_queued_bytes(to_wire)
            });
            if self.transport_failed(Stage::FinalPass) {
                return 0;
            }
        }
        self.data_pages_at_pause = self.shared.data_pages.load(Ordering::Acquire);
        self.paused_at_ns = Some(self.clock.now_ns());
        self.timeline.mark(Mark::StopRequested);
        if let Err(e) = self.domain.suspend(self.suspend_timeout) {
            let domid = self.domain.domid();
            self.failure = Some((
                Stage::FinalPass,
                xen_failure("suspending the guest", domid, e),
            ));
            return 0;
        }
        self.timeline.mark(Mark::Stopped);
        // Pause events cannot cancel (the engine's rule too); the count of
        // the final pass is not known before libxenguest harvests it.
        let elapsed_ms = self.elapsed_ms();
        let _ = (self.observer)(&Progress::Paused {
            final_pages: 0,
            elapsed_ms,
        });
        1
    }
}

/// Recover the callback state from libxenguest's `data` pointer.
///
/// # Safety
/// `data` must be the `&mut Callbacks` given to `xc_domain_save`, which
/// calls back only on the thread that called it, during that call, one
/// callback at a time: this is then the only live reference.
unsafe fn callbacks<'a>(data: *mut c_void) -> &'a mut Callbacks<'a> {
    // SAFETY: as the function's contract says.
    unsafe { &mut *data.cast::<Callbacks<'a>>() }
}

unsafe extern "C" fn precopy_policy_cb(stats: sys::precopy_stats, data: *mut c_void) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `data` is what `save` passed to xc_domain_save.
        unsafe { callbacks(data) }.decide(stats)
    }));
    outcome.unwrap_or_else(|_| {
        // SAFETY: as above; the panicking borrow has ended.
        let cb = unsafe { callbacks(data) };
        cb.failure = Some((
            Stage::Round(stats.iteration),
            MigrationError::Protocol {
                what: "the pre-copy policy panicked (a perfplus bug)".into(),
            },
        ));
        sys::XGS_POLICY_ABORT
    })
}

unsafe extern "C" fn suspend_cb(data: *mut c_void) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `data` is what `save` passed to xc_domain_save.
        unsafe { callbacks(data) }.suspend()
    }));
    outcome.unwrap_or_else(|_| {
        // SAFETY: as above; the panicking borrow has ended.
        let cb = unsafe { callbacks(data) };
        cb.failure = Some((
            Stage::FinalPass,
            MigrationError::Protocol {
                what: "the suspend callback panicked (a perfplus bug)".into(),
            },
        ));
        0
    })
}

/// Read libxenguest's stream from the pipe, transcode it, send it. After a
/// transport failure, keep draining (so libxenguest's writes never fail
/// half-way) until libxenguest closes its end.
fn pump(pipe: OwnedFd, writer: &mut ChannelWriter, encoder: &mut Encoder, shared: &Shared) {
    let mut buf = vec![0_u8; 1 << 20];
    let mut out = Vec::new();
    loop {
        // SAFETY: `buf` is writable for its length; `pipe` is our open
        // read end.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            fail(
                shared,
                TransportError::Io {
                    what: "reading libxenguest's stream",
                    source: std::io::Error::last_os_error(),
                },
            );
            return;
        }
        if n == 0 {
            return;
        }
        if shared.failed.load(Ordering::Acquire) {
            continue;
        }
        shared
            .in_hand
            .store(n.unsigned_abs() as u64, Ordering::Release);
        encoder.set_round(shared.round.load(Ordering::Acquire));
        out.clear();
        encoder.push_libxc(&buf[..n.unsigned_abs()], &mut out);
        let sent = writer.send(&out);
        shared.in_hand.store(0, Ordering::Release);
        if let Err(e) = sent {
            fail(shared, e);
            continue;
        }
        shared
            .bytes_sent
            .store(writer.bytes_sent(), Ordering::Release);
        shared
            .data_pages
            .store(encoder.stats().data_pages, Ordering::Release);
    }
}

fn fail(shared: &Shared, e: TransportError) {
    if let Ok(mut f) = shared.failure.lock() {
        f.get_or_insert(e);
    }
    shared.failed.store(true, Ordering::Release);
}

/// A pipe with room for 1 MiB (libxenguest writes 4 MiB batches).
fn pipe() -> Result<(OwnedFd, OwnedFd), MigrationError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(MigrationError::Transport(TransportError::Io {
            what: "creating the pipe to libxenguest",
            source: std::io::Error::last_os_error(),
        }));
    }
    // SAFETY: pipe2 returned a fresh descriptor that nothing else owns.
    let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write_end = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    // SAFETY: fcntl on our own descriptor; resizing is best effort.
    unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((read_end, write_end))
}

/// Run `xc_domain_save` into `link` with `cb` as its callbacks; the error
/// and its stage if the save failed.
fn save(
    link: &mut XlLink,
    cb: &mut Callbacks<'_>,
    shared: &Shared,
    live: bool,
) -> Result<(), (Stage, MigrationError)> {
    let flags = if live { sys::XCFLAGS_LIVE } else { 0 };
    let host = cb.domain.host().clone();
    let domid = cb.domain.domid();
    let (read_end, write_end) = pipe().map_err(|e| (Stage::Setup, e))?;
    let XlLink {
        channel, encoder, ..
    } = link;
    let (writer, _) = channel.split().map_err(|e| (Stage::Setup, e.into()))?;
    if let Ok(mut fds) = shared.pipe_fds.lock() {
        *fds = Some((read_end.as_raw_fd(), writer.raw_fd()));
    }
    let rc = std::thread::scope(|scope| {
        let pumping = scope.spawn(|| pump(read_end, writer, encoder, shared));
        let mut callbacks = sys::save_callbacks {
            suspend: Some(suspend_cb),
            precopy_policy: Some(precopy_policy_cb),
            postcopy: None,
            checkpoint: None,
            wait_checkpoint: None,
            switch_qemu_logdirty: None,
            data: std::ptr::from_mut(cb).cast::<c_void>(),
        };
        // SAFETY: `write_end` is open for the whole call; `callbacks` and
        // the state behind `data` outlive it and are touched only by the
        // callbacks, on this thread, during the call.
        let rc = unsafe {
            host.libs().guest.xc_domain_save(
                host.xch(),
                write_end.as_raw_fd(),
                domid,
                flags,
                &mut callbacks,
                sys::XC_STREAM_PLAIN,
                -1,
            )
        };
        let errno = std::io::Error::last_os_error();
        if cb.paused_at_ns.is_some() {
            cb.timeline.mark(Mark::PagesSent);
        }
        // libxenguest is done writing: the pump sees the end of the pipe.
        drop(write_end);
        let _ = pumping.join();
        if cb.paused_at_ns.is_some() {
            cb.timeline.mark(Mark::StateSent);
        }
        (rc, errno)
    });
    let (rc, errno) = rc;
    // A callback's reason first, then the transport's, then libxenguest's.
    if let Some(failure) = cb.failure.take() {
        return Err(failure);
    }
    let stage = if cb.paused_at_ns.is_some() {
        Stage::FinalPass
    } else {
        Stage::Round(cb.rounds)
    };
    if cb.transport_failed(stage) {
        return Err(cb.failure.take().unwrap_or((
            stage,
            MigrationError::Protocol {
                what: "the transport failed".into(),
            },
        )));
    }
    if rc != 0 {
        return Err((
            stage,
            MigrationError::Backend {
                what: "saving the guest (xc_domain_save; libxenguest logged why above)",
                source: crate::backend::BackendError::Hypervisor {
                    call: "xc_domain_save",
                    domid,
                    reason: errno.to_string(),
                },
            },
        ));
    }
    Ok(())
}

/// Migrate the PV guest `domain` over `link` (its preamble already sent).
pub(crate) fn migrate(
    session: &Session<'_>,
    domain: &mut XenDomain,
    link: &mut XlLink,
    policy: &dyn PrecopyPolicy,
    observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
) -> Result<MigrationReport, MigrationError> {
    let shared = Shared::default();
    let clock = RealClock::new();
    let page_count = domain.page_count();
    let mut cb = Callbacks {
        domain,
        policy,
        observer,
        tracker: RoundStatsTracker::new(
            page_count * 4096,
            4096,
            session.options.engine.switchover_fixed_ms,
            2.0 * session.options.engine.link_latency_ms,
            session.options.engine.state_bytes,
        ),
        clock,
        shared: &shared,
        suspend_timeout: session.options.suspend_timeout,
        round_start_ns: 0,
        round_start_ms: 0.0,
        bytes_at_round_start: link.bytes_on_wire(),
        round_pages: 0,
        min_round_ms: 0.0,
        rounds: 0,
        stop_reason: "",
        cap: None,
        paused_at_ns: None,
        data_pages_at_pause: 0,
        failure: None,
        timeline: link.timeline.clone(),
    };
    // A policy that would stop before the first round (stop-and-copy)
    // gets a non-live save: suspend first, then every page once. Asked on
    // a copy of the tracker, whose first snapshot the loop takes again.
    let first = policy.decide(&cb.tracker.clone().snapshot(0.0, page_count, 0));
    let live = first.action != Action::StopAndCopy;
    if !live {
        cb.stop_reason = first.reason;
    }
    let saved = save(link, &mut cb, &shared, live);
    let _ = cb.domain.set_cpu_cap(None);
    let resume = |cb: &mut Callbacks<'_>, stage: Stage, cause: MigrationError| {
        MigrationError::after_resume(stage, Box::new(cause), cb.domain.resume())
    };
    if let Err((stage, cause)) = saved {
        return Err(resume(&mut cb, stage, cause));
    }
    let tail = link
        .send_literal(&libxl_empty_record(LIBXL_REC_END))
        .and_then(|()| await_ready(link));
    if let Err(e) = tail {
        return Err(resume(&mut cb, Stage::AwaitAck, e));
    }
    let elapsed_ms = cb.elapsed_ms();
    let _ = (cb.observer)(&Progress::Verified { elapsed_ms });
    match hand_over(link, session.store, session.domid, session.name) {
        Ok(()) => {}
        Err(HandoverError::Unconfirmed(e)) => {
            cb.domain.mark_migrated();
            return Err(MigrationError::HandoverUnconfirmed { cause: Box::new(e) });
        }
        Err(e) => return Err(resume(&mut cb, Stage::Commit, e.into_inner())),
    }
    cb.domain.mark_migrated();
    let now_ns = cb.clock.now_ns();
    let paused_at_ns = cb.paused_at_ns.unwrap_or(now_ns);
    let downtime_ms = now_ns.saturating_sub(paused_at_ns) as f64 / 1e6;
    let total_ms = now_ns as f64 / 1e6;
    let _ = (cb.observer)(&Progress::Resumed {
        downtime_ms,
        elapsed_ms: total_ms,
    });
    let stats = link.encoder.stats();
    Ok(MigrationReport {
        policy: policy.name(),
        rounds: cb.rounds,
        downtime_ms,
        total_ms,
        bytes_on_wire: link.bytes_on_wire(),
        sent: BatchSent {
            wire_bytes: stats.wire_bytes,
            zero_pages: stats.zero_pages,
            raw_pages: stats.raw_pages,
            delta_pages: stats.delta_pages,
        },
        final_pages: stats.data_pages.saturating_sub(cb.data_pages_at_pause),
        deferred_pages: 0,
        stop_reason: cb.stop_reason,
        verified: true,
        paused_at_ms: paused_at_ns as f64 / 1e6,
        // libxenguest runs this switch-over: its breakdown is the Xen
        // report's `SwitchoverBreakdown`.
        switchover: None,
    })
}
