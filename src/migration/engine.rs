//! The pre-copy round loop, generic over the source [`Domain`], the clock,
//! the policy and the stream sink.
//!
//! ```text
//!  enable_dirty_log; sink.begin
//!  loop:
//!      stats = tracker.snapshot(owed cold pages, owed hot pages)
//!      decision = policy.decide(stats)      ──▶ observer(Progress::Decided)
//!      Abort → fail;  StopAndCopy → break
//!      live round: read owed cold pages (all owed pages if the decision
//!      says send_deferred) in batches → sink.send_pages → sink.wait_sent
//!      (the round's link time ends when its bytes left, not when they
//!      entered the socket); wait out min_round_ms
//!      harvest_dirty → planner.observe → tracker.round_done
//!  pause; harvest; sink.final_pass_begins; send every owed page (in
//!  smaller batches, so the receiver applies one while the next is read)
//!  save_state → sink.send_cpu_state
//!  sink.end_and_await_ack            (before this returns Ok: any failure resumes the guest here)
//!  sink.commit_and_await_resumed     (after: the guest belongs to the receiver)
//!  observer(Progress::Resumed); disable_dirty_log (the source's clean-up)
//! ```
//!
//! On any failure before the acknowledgement the engine tells the receiver
//! (ABORT, best effort), lifts any CPU cap, stops dirty logging and resumes
//! the guest, and returns [`MigrationError::Aborted`] with the stage.

use super::planner::Planner;
use super::policy::{Action, Decision, PrecopyPolicy, RoundStats, RoundStatsTracker};
use super::sink::{BatchSent, StreamSink};
use super::stream::StreamHeader;
use super::transport::Clock;
use super::{MigrationError, Stage};
use crate::backend::{CpuShare, DirtyBitmap, Domain};

/// Engine settings that are not the policy's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// Pages read and sent per batch.
    pub batch_pages: usize,
    /// Expected fixed switchover cost (state transfer, resume), ms, for the
    /// downtime prediction.
    pub switchover_fixed_ms: f64,
    /// Expected one-way link latency, ms: in the prediction, and subtracted
    /// from the measured downtime (the RESUMED answer travels while the guest
    /// already runs).
    pub link_latency_ms: f64,
    /// Expected CPU/device state size, bytes, for the prediction.
    pub state_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            batch_pages: 512,
            switchover_fixed_ms: 20.0,
            link_latency_ms: 0.0,
            state_bytes: 16 * 1024,
        }
    }
}

/// What happened, reported to the observer as it happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// Before a round: the snapshot and the policy's decision.
    Decided {
        /// The snapshot (round, dirty pages, rates, predicted downtime).
        stats: RoundStats,
        /// The decision.
        decision: Decision,
    },
    /// A batch of pages went out (live rounds and the final pass alike):
    /// for progress displays. The observer's answer is ignored.
    Sent {
        /// The round (the final pass has the highest number).
        round: u32,
        /// Pages of this round sent so far.
        round_pages_sent: u64,
        /// Pages this round sends in all.
        round_pages: u64,
        /// Bytes on the wire since the start, framing included.
        bytes_on_wire: u64,
    },
    /// The guest is paused; the final pass sends `final_pages`.
    Paused {
        /// Pages in the final pass.
        final_pages: u64,
        /// Since the start, ms.
        elapsed_ms: f64,
    },
    /// The receiver verified the stream.
    Verified {
        /// Since the start, ms.
        elapsed_ms: f64,
    },
    /// The guest runs at the receiver.
    Resumed {
        /// Downtime, ms.
        downtime_ms: f64,
        /// Since the start, ms.
        elapsed_ms: f64,
    },
}

/// The observer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressFlow {
    /// Go on.
    Continue,
    /// Abort the migration (only honoured before the pause).
    Cancel,
}

/// The result of a migration that handed the guest over.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationReport {
    /// The policy's name.
    pub policy: &'static str,
    /// Live rounds sent (the full pass included).
    pub rounds: u32,
    /// From pausing the guest at the source to it running at the receiver, ms.
    pub downtime_ms: f64,
    /// From the start to the hand-over, ms.
    pub total_ms: f64,
    /// Bytes on the wire, framing included.
    pub bytes_on_wire: u64,
    /// Pages sent by encoding (all rounds).
    pub sent: BatchSent,
    /// Pages in the final pass.
    pub final_pages: u64,
    /// Hot pages deferred to the final pass.
    pub deferred_pages: u64,
    /// Why pre-copy stopped.
    pub stop_reason: &'static str,
    /// The receiver verified the stream digest.
    pub verified: bool,
    /// When the guest was paused, ms after the start.
    pub paused_at_ms: f64,
    /// Where the downtime went, stage by stage (`None` where the engine
    /// did not run the switch-over: the Xen PV path has its own).
    pub switchover: Option<Switchover>,
}

/// Where the engine's downtime went, ms on the engine's clock. The stages
/// follow each other; what is not in them (bookkeeping, the observer) is
/// the rest of [`MigrationReport::downtime_ms`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Switchover {
    /// Pausing the guest until the backend confirmed it stopped.
    pub pause_ms: f64,
    /// Harvesting the pages dirtied since the last round.
    pub harvest_ms: f64,
    /// Reading and sending the final pass.
    pub final_pass_ms: f64,
    /// Saving and sending the CPU state.
    pub state_ms: f64,
    /// The end of the stream until the receiver said it verified it (the
    /// stream's tail through the transport, and the receiver's check).
    pub verify_ms: f64,
    /// Permission to go until the receiver said the guest runs there.
    pub resume_ms: f64,
}

struct Run<'a, D, C, S> {
    source: &'a mut D,
    sink: &'a mut S,
    clock: &'a C,
    config: EngineConfig,
    start_ns: u64,
    buf: Vec<u8>,
    sent: BatchSent,
    cap: Option<CpuShare>,
}

impl<D: Domain, C: Clock, S: StreamSink> Run<'_, D, C, S> {
    fn elapsed_ms(&self) -> f64 {
        self.clock.now_ns().saturating_sub(self.start_ns) as f64 / 1e6
    }

    fn backend(what: &'static str) -> impl FnOnce(crate::backend::BackendError) -> MigrationError {
        move |source| MigrationError::Backend { what, source }
    }

    /// Send `pfns` in batches of `batch_pages`; returns (pages, wire bytes).
    fn send(
        &mut self,
        round: u32,
        pfns: &[u64],
        batch_pages: usize,
        planner: &mut Planner,
        observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
    ) -> Result<BatchSent, MigrationError> {
        let size = self.source.page_size();
        let mut round_sent = BatchSent::default();
        for chunk in pfns.chunks(batch_pages.max(1)) {
            self.buf.resize(chunk.len() * size, 0);
            self.source
                .read_pages(chunk, &mut self.buf)
                .map_err(Self::backend("reading guest pages"))?;
            let sent = self.sink.send_pages(round, chunk, &self.buf)?;
            round_sent.add(sent);
            for &pfn in chunk {
                planner.sent(pfn);
            }
            let _ = observer(&Progress::Sent {
                round,
                round_pages_sent: round_sent.pages(),
                round_pages: pfns.len() as u64,
                bytes_on_wire: self.sink.bytes_on_wire(),
            });
        }
        self.sent.add(round_sent);
        Ok(round_sent)
    }

    fn set_cap(&mut self, cap: Option<CpuShare>) {
        if cap != self.cap {
            // A backend without caps just runs unthrottled.
            if self.source.set_cpu_cap(cap).is_ok() {
                self.cap = cap;
            }
        }
    }

    /// Undo everything at the source after a failure before the ack.
    fn fail(&mut self, stage: Stage, cause: MigrationError) -> MigrationError {
        self.sink.abort(&cause.to_string());
        let _ = self.source.set_cpu_cap(None);
        let _ = self.source.disable_dirty_log();
        MigrationError::after_resume(stage, Box::new(cause), self.source.resume())
    }
}

/// Migrate `source` through `sink`, deciding rounds with `policy`, timing
/// with `clock`; `observer` sees every decision and may cancel.
///
/// On success the guest runs at the receiver and the source domain stays
/// paused (the caller destroys it). On failure before the receiver's
/// acknowledgement the guest runs at the source again
/// ([`MigrationError::Aborted`]).
pub fn migrate<D, C, S>(
    source: &mut D,
    policy: &dyn PrecopyPolicy,
    sink: &mut S,
    clock: &C,
    config: &EngineConfig,
    observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
) -> Result<MigrationReport, MigrationError>
where
    D: Domain,
    C: Clock,
    S: StreamSink,
{
    let page_count = source.page_count();
    let page_size = source.page_size();
    let mut run = Run {
        source,
        sink,
        clock,
        config: *config,
        start_ns: clock.now_ns(),
        buf: Vec::new(),
        sent: BatchSent::default(),
        cap: None,
    };
    let mut planner = Planner::new(page_count, policy.hot_rule());
    let mut tracker = RoundStatsTracker::new(
        page_count * page_size as u64,
        page_size,
        config.switchover_fixed_ms,
        2.0 * config.link_latency_ms,
        config.state_bytes,
    );
    let mut dirty = DirtyBitmap::new(page_count);

    let setup = (|| {
        run.source
            .enable_dirty_log()
            .map_err(Run::<D, C, S>::backend("enabling dirty logging"))?;
        run.sink.begin(StreamHeader {
            page_size,
            page_count,
        })
    })();
    if let Err(e) = setup {
        return Err(run.fail(Stage::Setup, e));
    }

    // Pre-copy rounds.
    let mut iteration = 0_u32;
    let stop_reason = loop {
        let stats = tracker.snapshot(run.elapsed_ms(), planner.owed_cold(), planner.owed_hot());
        let decision = policy.decide(&stats);
        run.set_cap(decision.cpu_cap);
        tracker.set_cpu_cap_percent(run.cap.map_or(100, CpuShare::get));
        if observer(&Progress::Decided { stats, decision }) == ProgressFlow::Cancel {
            return Err(run.fail(Stage::Round(iteration), MigrationError::Cancelled));
        }
        match decision.action {
            Action::Abort => {
                return Err(run.fail(
                    Stage::Round(iteration),
                    MigrationError::NotConverged {
                        reason: decision.reason,
                    },
                ))
            }
            Action::StopAndCopy => break decision.reason,
            Action::Continue => {}
        }
        let round_start = run.elapsed_ms();
        let round_start_ns = run.clock.now_ns();
        let round = (|| {
            let pfns = if decision.send_deferred {
                planner.final_pass()
            } else {
                planner.live_round()
            };
            let sent = run.send(
                iteration,
                &pfns,
                run.config.batch_pages,
                &mut planner,
                &mut *observer,
            )?;
            run.sink.wait_sent()?;
            let send_ms = run.elapsed_ms() - round_start;
            if decision.min_round_ms > 0.0 {
                // min_round_ms is a finite, positive policy setting.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let wait_ns = (decision.min_round_ms * 1e6) as u64;
                run.clock
                    .sleep_until(round_start_ns.saturating_add(wait_ns));
            }
            dirty.clear();
            run.source
                .harvest_dirty(&mut dirty)
                .map_err(Run::<D, C, S>::backend("harvesting dirty pages"))?;
            planner.observe(&dirty);
            Ok::<_, MigrationError>((sent, send_ms))
        })();
        let (sent, send_ms) = match round {
            Ok(sent) => sent,
            Err(e) => return Err(run.fail(Stage::Round(iteration), e)),
        };
        tracker.round_done_timed(
            sent.pages(),
            sent.wire_bytes,
            send_ms,
            run.elapsed_ms() - round_start,
            dirty.count(),
        );
        iteration += 1;
    };

    // Stop and copy.
    let paused_ns = run.clock.now_ns();
    let deferred_pages = planner.owed_hot();
    let mut marks = Marks { last_ns: paused_ns };
    let final_pass = (|| {
        run.source
            .pause()
            .map_err(Run::<D, C, S>::backend("pausing the guest"))?;
        let pause_ms = marks.lap(run.clock);
        dirty.clear();
        run.source
            .harvest_dirty(&mut dirty)
            .map_err(Run::<D, C, S>::backend("harvesting dirty pages"))?;
        let harvest_ms = marks.lap(run.clock);
        planner.observe(&dirty);
        let pfns = planner.final_pass();
        run.sink.final_pass_begins();
        if observer(&Progress::Paused {
            final_pages: pfns.len() as u64,
            elapsed_ms: run.elapsed_ms(),
        }) == ProgressFlow::Cancel
        {
            return Err(MigrationError::Cancelled);
        }
        let batch = final_pass_batch_pages(pfns.len(), run.config.batch_pages);
        run.send(iteration, &pfns, batch, &mut planner, &mut *observer)?;
        Ok((pfns.len() as u64, pause_ms, harvest_ms))
    })();
    let (final_pages, pause_ms, harvest_ms) = match final_pass {
        Ok(n) => n,
        Err(e) => return Err(run.fail(Stage::FinalPass, e)),
    };
    let final_pass_ms = marks.lap(run.clock);
    let state = run
        .source
        .save_state()
        .map_err(Run::<D, C, S>::backend("saving the CPU state"))
        .and_then(|blob| run.sink.send_cpu_state(&blob));
    if let Err(e) = state {
        return Err(run.fail(Stage::CpuState, e));
    }
    let state_ms = marks.lap(run.clock);
    if let Err(e) = run.sink.end_and_await_ack() {
        return Err(run.fail(Stage::AwaitAck, e));
    }
    let verify_ms = marks.lap(run.clock);
    let _ = observer(&Progress::Verified {
        elapsed_ms: run.elapsed_ms(),
    });

    // The receiver holds a verified copy: from here on the source must not
    // resume on its own.
    if let Err(e) = run.sink.commit_and_await_resumed() {
        return Err(MigrationError::HandoverUnconfirmed { cause: Box::new(e) });
    }
    let switchover = Switchover {
        pause_ms,
        harvest_ms,
        final_pass_ms,
        state_ms,
        verify_ms,
        resume_ms: marks.lap(run.clock),
    };
    // The guest runs at the receiver from here: the downtime and the
    // migration end now, and the observer hears it before the source's
    // clean-up (disarming write tracking on a large arena takes tens of
    // ms), so it can hand the service over at once (the arena ends the
    // source's client connections then).
    let latency_ns = (config.link_latency_ms * 1e6).max(0.0);
    let downtime_ms =
        ((run.clock.now_ns().saturating_sub(paused_ns)) as f64 - latency_ns).max(0.0) / 1e6;
    let total_ms = run.elapsed_ms();
    let _ = observer(&Progress::Resumed {
        downtime_ms,
        elapsed_ms: total_ms,
    });
    let _ = run.source.disable_dirty_log();
    Ok(MigrationReport {
        policy: policy.name(),
        rounds: iteration,
        downtime_ms,
        total_ms,
        bytes_on_wire: run.sink.bytes_on_wire(),
        sent: run.sent,
        final_pages,
        deferred_pages,
        stop_reason,
        verified: true,
        paused_at_ms: (paused_ns - run.start_ns) as f64 / 1e6,
        switchover: Some(switchover),
    })
}

impl Switchover {
    /// The stages in order, named as their fields (for reports and JSON).
    pub fn stages(&self) -> [(&'static str, f64); 6] {
        [
            ("pause_ms", self.pause_ms),
            ("harvest_ms", self.harvest_ms),
            ("final_pass_ms", self.final_pass_ms),
            ("state_ms", self.state_ms),
            ("verify_ms", self.verify_ms),
            ("resume_ms", self.resume_ms),
        ]
    }
}

impl std::fmt::Display for Switchover {
    /// `pause 0.05, harvest 0.31, ... ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, ms)) in self.stages().iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let name = name.trim_end_matches("_ms").replace('_', " ");
            write!(f, "{sep}{name} {ms:.2}")?;
        }
        f.write_str(" ms")
    }
}

/// The least pages in a final-pass batch: below this, the system calls
/// of a batch (a read, a write, the receiver's wake-up and its own read and
/// write) cost more than the overlap saves.
const FINAL_PASS_MIN_BATCH_PAGES: usize = 32;

/// Batch size for a final pass of `pages`: about an eighth of the pass,
/// between [`FINAL_PASS_MIN_BATCH_PAGES`] and `batch_pages`.
///
/// With the guest paused, the pass's latency is downtime. In one big batch
/// the receiver starts applying only once the sender has read and encoded
/// everything, so their work adds up (a 432-page pass of deltas on loopback:
/// 1.5 ms at the sender, then 1.2 ms at the receiver); in eight, the
/// receiver applies each batch while the sender prepares the next, and only
/// the last batch's apply is left after the sender is done. Live rounds keep
/// big batches: there, throughput counts, not latency.
fn final_pass_batch_pages(pages: usize, batch_pages: usize) -> usize {
    let batch_pages = batch_pages.max(1);
    pages
        .div_ceil(8)
        .max(FINAL_PASS_MIN_BATCH_PAGES)
        .min(batch_pages)
}

/// Lap times on the engine's clock.
struct Marks {
    last_ns: u64,
}

impl Marks {
    /// Milliseconds since the last lap (or the start).
    fn lap<C: Clock>(&mut self, clock: &C) -> f64 {
        let now = clock.now_ns();
        let ms = now.saturating_sub(self.last_ns) as f64 / 1e6;
        self.last_ns = now;
        ms
    }
}
