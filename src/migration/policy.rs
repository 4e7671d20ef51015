//! When to stop pre-copy: the [`PrecopyPolicy`] trait, Perf+, and the
//! baselines it is measured against.
//!
//! A policy is a pure function of a plain-data [`RoundStats`] snapshot,
//! asked before every round ("the next round would send `dirty_pages`;
//! continue?"), exactly like libxenguest's `precopy_policy` callback. The
//! snapshot's derived numbers (bandwidth, predicted downtime, best earlier
//! prediction) come from a [`RoundStatsTracker`], which the engine feeds
//! after each round and which a libxenguest `precopy_policy` callback can
//! feed from Xen's `precopy_stats {iteration, total_written, dirty_count}`
//! plus its own clock and byte counter. So the same policy code decides in
//! both places.
//!
//! Besides the stop rule, a policy names the page encodings it allows and
//! whether it defers hot pages: the baselines are defined by those too.

#![forbid(unsafe_code)]

use super::encode::EncodingSet;
use super::planner::HotRule;
use super::stream::{FRAME_BYTES, MAX_BATCH_PAGES, PAGE_ENTRY_BYTES};
use crate::backend::CpuShare;

/// What a policy sees before each round. Plain data, passed by value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundStats {
    /// Rounds already sent (0 before the first, full pass).
    pub iteration: u32,
    /// Time since the migration started, ms.
    pub elapsed_ms: f64,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// Bytes per page.
    pub page_size: usize,
    /// Pages sent so far.
    pub pages_sent_total: u64,
    /// Bytes on the wire so far.
    pub bytes_sent_total: u64,
    /// Duration of the last round, ms (0 before the first).
    pub last_round_ms: f64,
    /// Pages the next live round would send (dirty and not deferred).
    pub dirty_pages: u64,
    /// Hot pages held back for the final pass.
    pub deferred_pages: u64,
    /// Distinct pages dirtied per second during the last round (0 before).
    pub dirty_rate_pages_per_s: f64,
    /// Measured link bandwidth, bytes per second (0 if not measured yet).
    pub bandwidth_bytes_per_s: f64,
    /// Expected wire bytes per resent page (raw size until measured).
    pub wire_bytes_per_page: f64,
    /// Expected fixed switchover cost (CPU state, resume), ms.
    pub switchover_fixed_ms: f64,
    /// Round-trip time of the link, ms.
    pub round_trip_ms: f64,
    /// Predicted downtime if the guest were paused now, ms (infinite until
    /// the bandwidth is known).
    pub predicted_downtime_ms: f64,
    /// The part of the prediction that more rounds cannot remove: fixed
    /// cost, round trips, and the deferred pages expected to be written
    /// again during the next round ([`predicted_hot_ms`](Self::predicted_hot_ms)), ms.
    pub predicted_floor_ms: f64,
    /// The deferred pages' part of the floor, ms: sending those of them
    /// expected to be written again during the next round. A page was
    /// found hot over the last round; when the next round is shorter, only
    /// the same share of the deferred pages is expected to be written
    /// again in it (at least that share, for a page written at a steady
    /// rate), and a live round sends the others once they turn out clean.
    pub predicted_hot_ms: f64,
    /// Lowest prediction of any earlier round, priced at the current
    /// rates: that round's owed pages (dirty and deferred) at today's cost
    /// per page (infinite if none, or until the bandwidth is known). Each
    /// earlier prediction was made with what was known then: the first
    /// one prices pages at their raw bytes over the full pass's bandwidth,
    /// before any resent page was timed, and on a fast link can be a
    /// fraction of what the same pages cost once measured. Compared as
    /// made, it would stand as a "best" no later round can beat, and the
    /// dirty set would look stalled while it shrinks.
    pub best_earlier_prediction_ms: f64,
    /// Decisions since that lowest prediction (0 if this one is lower).
    pub decisions_since_best: u32,
    /// Time since that lowest prediction, ms.
    pub ms_since_best: f64,
    /// Duration of the first, full pass, ms (0 before it ended).
    pub first_round_ms: f64,
    /// The CPU cap in force (100 = none).
    pub cpu_cap_percent: u8,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send another live round.
    Continue,
    /// Pause the guest and send the rest.
    StopAndCopy,
    /// Give up; the guest keeps running at the source.
    Abort,
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Continue, stop or abort.
    pub action: Action,
    /// The CPU cap wanted from now on (`None`: no cap).
    pub cpu_cap: Option<CpuShare>,
    /// Make the next round last at least this long (wait before harvesting),
    /// ms; 0 for no wait. Lets a policy watch a stalled guest cheaply.
    pub min_round_ms: f64,
    /// Why, for logs and reports.
    pub reason: &'static str,
    /// Send the deferred (hot) pages in the next live round too, instead
    /// of keeping them for the final pass: for when the hot set is too big
    /// to fit the downtime.
    pub send_deferred: bool,
}

impl Decision {
    fn new(action: Action, reason: &'static str) -> Self {
        Self {
            action,
            cpu_cap: None,
            min_round_ms: 0.0,
            send_deferred: false,
            reason,
        }
    }
}

/// A pre-copy stop rule with its encodings and deferral.
pub trait PrecopyPolicy {
    /// Decide from the snapshot; must not depend on anything else.
    fn decide(&self, stats: &RoundStats) -> Decision;

    /// Encodings this policy sends with.
    fn encodings(&self) -> EncodingSet;

    /// Hot-page deferral, if any.
    fn hot_rule(&self) -> Option<HotRule> {
        None
    }

    /// Its name (`perfplus`, `xen-default`, ...).
    fn name(&self) -> &'static str;
}

/// Wire bytes of a raw page including its share of record framing.
pub fn raw_wire_bytes_per_page(page_size: usize) -> f64 {
    (page_size + PAGE_ENTRY_BYTES) as f64 + (FRAME_BYTES + 8) as f64 / MAX_BATCH_PAGES as f64
}

/// Builds [`RoundStats`] from what the engine (or a libxenguest callback)
/// measures. Sans-io: time is passed in.
#[derive(Debug, Clone)]
pub struct RoundStatsTracker {
    memory_bytes: u64,
    page_size: usize,
    switchover_fixed_ms: f64,
    round_trip_ms: f64,
    state_bytes: u64,
    iteration: u32,
    pages_sent_total: u64,
    bytes_sent_total: u64,
    send_time_ms: f64,
    last_round_ms: f64,
    last_round_pages: u64,
    last_send_ms: f64,
    dirty_rate_pages_per_s: f64,
    resend_pages: u64,
    resend_bytes: u64,
    resend_send_ms: f64,
    /// The fewest pages owed (dirty and deferred) at any earlier decision.
    best_owed_pages: Option<u64>,
    best_at_ms: f64,
    decisions_since_best: u32,
    first_round_ms: f64,
    cpu_cap_percent: u8,
}

impl RoundStatsTracker {
    /// A tracker for a guest of `memory_bytes` in pages of `page_size`,
    /// with an expected fixed switchover cost, link round trip, and
    /// CPU-state size.
    pub fn new(
        memory_bytes: u64,
        page_size: usize,
        switchover_fixed_ms: f64,
        round_trip_ms: f64,
        state_bytes: u64,
    ) -> Self {
        Self {
            memory_bytes,
            page_size,
            switchover_fixed_ms,
            round_trip_ms,
            state_bytes,
            iteration: 0,
            pages_sent_total: 0,
            bytes_sent_total: 0,
            send_time_ms: 0.0,
            last_round_ms: 0.0,
            last_round_pages: 0,
            last_send_ms: 0.0,
            dirty_rate_pages_per_s: 0.0,
            resend_pages: 0,
            resend_bytes: 0,
            resend_send_ms: 0.0,
            best_owed_pages: None,
            best_at_ms: 0.0,
            decisions_since_best: 0,
            first_round_ms: 0.0,
            cpu_cap_percent: 100,
        }
    }

    /// Record a finished round: pages and wire bytes sent, how long it
    /// took, and how many pages the guest dirtied meanwhile.
    pub fn round_done(&mut self, pages: u64, bytes: u64, duration_ms: f64, dirtied_pages: u64) {
        self.round_done_timed(pages, bytes, duration_ms, duration_ms, dirtied_pages);
    }

    /// [`round_done`](Self::round_done) for a round whose link time
    /// (`send_ms`: from its first write until its bytes left) is shorter
    /// than the round (`round_ms`: until the harvest, e.g. with a wait
    /// before it). The bandwidth counts link time only; the dirty rate the
    /// whole round.
    pub fn round_done_timed(
        &mut self,
        pages: u64,
        bytes: u64,
        send_ms: f64,
        round_ms: f64,
        dirtied_pages: u64,
    ) {
        let duration_ms = round_ms;
        if duration_ms > 0.0 {
            self.dirty_rate_pages_per_s = dirtied_pages as f64 * 1000.0 / duration_ms;
        }
        let send_ms = send_ms.clamp(0.0, duration_ms.max(0.0));
        if self.iteration > 0 {
            self.resend_pages += pages;
            self.resend_bytes += bytes;
            self.resend_send_ms += send_ms;
        } else {
            self.first_round_ms = duration_ms;
        }
        self.iteration += 1;
        self.pages_sent_total += pages;
        self.bytes_sent_total += bytes;
        self.send_time_ms += send_ms;
        self.last_round_ms = duration_ms;
        self.last_round_pages = pages;
        self.last_send_ms = send_ms;
    }

    /// Record the CPU cap now in force (100 = none).
    pub fn set_cpu_cap_percent(&mut self, percent: u8) {
        self.cpu_cap_percent = percent;
    }

    /// Measured bandwidth in bytes/s (0 until a round took time).
    pub fn bandwidth_bytes_per_s(&self) -> f64 {
        if self.send_time_ms > 0.0 {
            self.bytes_sent_total as f64 * 1000.0 / self.send_time_ms
        } else {
            0.0
        }
    }

    /// Time to send one resent page, ms: its wire bytes at the measured
    /// bandwidth, or what resent pages took each in the live rounds, if
    /// longer. Bytes alone undercount an encoded page on a fast link,
    /// where the pass over it (reading it, making and applying a delta)
    /// costs more than its hundred bytes on the wire: on loopback a page
    /// of a few changed words is ~0.1 us of wire and ~5 us of work.
    fn ms_per_resent_page(&self, wire_bytes_per_page: f64, bw: f64) -> f64 {
        let wire_ms = wire_bytes_per_page * 1000.0 / bw;
        if self.resend_pages > 0 {
            wire_ms.max(self.resend_send_ms / self.resend_pages as f64)
        } else {
            wire_ms
        }
    }

    /// The share of the pages found hot over the last round expected to be
    /// written again during the next one, which sends `cold_ms` worth of
    /// pages at `page_ms` a page: the next round's length over the last
    /// one's, at most 1.
    ///
    /// A round lasts its transfer plus what else it spends (the harvest,
    /// waits), taken from the last round. Rounds shrink by orders of
    /// magnitude (the full pass takes seconds, late rounds milliseconds),
    /// so a page written in each of two long rounds may be written once a
    /// second, and a few-millisecond round most likely leaves it clean:
    /// then more rounds do lower the downtime, and stopping now would pay
    /// for the whole deferred set. For a page written at a steady rate, the
    /// chance of a write in a shorter round is at least this share of the
    /// chance in the longer one.
    fn share_written_again(&self, cold_ms: f64, page_ms: f64) -> f64 {
        if self.last_round_ms <= 0.0 {
            return 1.0;
        }
        // The last round's pages at the overall rate, but never more than
        // its own link time.
        let last_transfer_ms = if self.last_send_ms > 0.0 {
            (self.last_round_pages as f64 * page_ms).min(self.last_send_ms)
        } else {
            0.0
        };
        let overhead_ms = (self.last_round_ms - last_transfer_ms).max(0.0);
        ((cold_ms + overhead_ms) / self.last_round_ms).clamp(0.0, 1.0)
    }

    /// The snapshot for the next decision, given the pages the next round
    /// would send and the deferred ones. Also remembers its prediction as
    /// an earlier one for the next snapshot.
    pub fn snapshot(
        &mut self,
        elapsed_ms: f64,
        dirty_pages: u64,
        deferred_pages: u64,
    ) -> RoundStats {
        let raw = raw_wire_bytes_per_page(self.page_size);
        let wire_bytes_per_page = if self.resend_pages > 0 {
            // Never trust a sample below a zero page's framing.
            (self.resend_bytes as f64 / self.resend_pages as f64).max(PAGE_ENTRY_BYTES as f64)
        } else {
            raw
        };
        let bw = self.bandwidth_bytes_per_s();
        let fixed = self.switchover_fixed_ms + 1.5 * self.round_trip_ms;
        let owed = dirty_pages + deferred_pages;
        let (predicted, floor, hot, best) = if bw > 0.0 {
            let ms = |bytes: f64| bytes * 1000.0 / bw;
            let state = ms(self.state_bytes as f64);
            let page_ms = self.ms_per_resent_page(wire_bytes_per_page, bw);
            let deferred = deferred_pages as f64 * page_ms;
            let cold = dirty_pages as f64 * page_ms;
            let hot = deferred * self.share_written_again(cold, page_ms);
            let best = self
                .best_owed_pages
                .map_or(f64::INFINITY, |n| fixed + state + n as f64 * page_ms);
            (
                fixed + state + deferred + cold,
                fixed + state + hot,
                hot,
                best,
            )
        } else {
            (f64::INFINITY, fixed, 0.0, f64::INFINITY)
        };
        let stats = RoundStats {
            iteration: self.iteration,
            elapsed_ms,
            memory_bytes: self.memory_bytes,
            page_size: self.page_size,
            pages_sent_total: self.pages_sent_total,
            bytes_sent_total: self.bytes_sent_total,
            last_round_ms: self.last_round_ms,
            dirty_pages,
            deferred_pages,
            dirty_rate_pages_per_s: self.dirty_rate_pages_per_s,
            bandwidth_bytes_per_s: bw,
            wire_bytes_per_page,
            switchover_fixed_ms: self.switchover_fixed_ms,
            round_trip_ms: self.round_trip_ms,
            predicted_downtime_ms: predicted,
            predicted_floor_ms: floor,
            predicted_hot_ms: hot,
            best_earlier_prediction_ms: best,
            decisions_since_best: 0,
            ms_since_best: 0.0,
            first_round_ms: self.first_round_ms,
            cpu_cap_percent: self.cpu_cap_percent,
        };
        let mut stats = stats;
        // At one price per page, the lowest prediction is the fewest pages.
        if self.best_owed_pages.is_none_or(|n| owed < n) {
            self.best_owed_pages = Some(owed);
            self.best_at_ms = elapsed_ms;
            self.decisions_since_best = 0;
        } else {
            self.decisions_since_best += 1;
            stats.decisions_since_best = self.decisions_since_best;
            stats.ms_since_best = elapsed_ms - self.best_at_ms;
        }
        stats
    }
}

/// Perf+: hot-page deferral, zero and delta encoding, and a stop rule from
/// the downtime prediction.
///
/// Stop rule, checked before each round after the full pass:
/// 1. stop when more rounds cannot lower the prediction noticeably: the
///    part that rounds can remove is at most `negligible_fraction` of the
///    prediction (or under `negligible_ms`). Rounds remove the dirty cold pages, and
///    those deferred hot pages that the next round will most likely leave
///    clean: hotness found over long rounds says little about a short one
///    ([`RoundStats::predicted_hot_ms`]);
/// 2. stop when two rounds in a row did not improve the prediction by at
///    least `min_improvement` over the best earlier one (the dirty set
///    stopped shrinking: more rounds only burn bandwidth) — unless the
///    prediction is over the target: then keep *watching* for up to `patience` (the
///    full pass's duration, at least `min_patience_ms`): live rounds then
///    carry only the cold pages (the hot ones stay deferred) and last at
///    least `watch_round_ms`, so waiting costs little bandwidth (even a
///    hot set too big for the target stays deferred then), and a guest
///    whose burst ends (a batch job, a phase change) is caught at its next
///    quiet moment instead of being paused in the middle of the burst;
/// 3. stop after `max_rounds` or when `max_bytes_factor` × memory was sent
///    (twice that while a throttled guest still converges).
///
/// Hot pages wait for the final pass only while they fit the target: a hot
/// set whose transfer alone takes longer than `downtime_target_ms` (a guest
/// rewriting most of its memory every round) goes out in the live rounds
/// too ([`Decision::send_deferred`]), so the final pass owes only what the
/// last round saw written.
///
/// Throttling (`throttle`), checked first while the prediction is over the
/// target: as soon as the guest dirties more than half what the link moves,
/// or pre-copy stalled, cap its CPU further, by the measured rates (aim at a
/// dirty rate of a quarter of the link, at least halving the share; 2 % at
/// once when a round dirtied most of memory), down to 1 %, like QEMU's
/// auto-converge.
///
/// The downtime target is not a reason to stop early on its own: while the
/// cold set still shrinks geometrically, each extra round costs a shrinking
/// number of bytes and takes its share off the downtime, so Perf+ keeps
/// going down to the floor (fixed cost + the deferred pages that stay hot). The target is
/// the line above which throttling, when enabled, steps in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerfPlus {
    /// The downtime target, ms (default 100).
    pub downtime_target_ms: f64,
    /// Prediction share below which further rounds are not worth it.
    pub negligible_fraction: f64,
    /// What more rounds must take off the prediction at least to be worth
    /// it, whatever the share, ms (default 0.1: a few pages' work).
    pub negligible_ms: f64,
    /// Minimum relative improvement per round to keep going.
    pub min_improvement: f64,
    /// Hard cap on live rounds.
    pub max_rounds: u32,
    /// Hard cap on bytes sent, as a multiple of guest memory.
    pub max_bytes_factor: f64,
    /// Hot-page rule.
    pub hot: HotRule,
    /// Cap the guest's CPU when it outruns the link or pre-copy stalls
    /// above the target (off by default).
    pub throttle: bool,
    /// Least time to watch a stalled guest above the target, ms.
    pub min_patience_ms: f64,
    /// Round length while watching, ms.
    pub watch_round_ms: f64,
}

impl Default for PerfPlus {
    fn default() -> Self {
        Self {
            downtime_target_ms: 100.0,
            negligible_fraction: 0.05,
            negligible_ms: 0.1,
            min_improvement: 0.10,
            max_rounds: 60,
            max_bytes_factor: 3.0,
            hot: HotRule::default(),
            throttle: false,
            min_patience_ms: 5000.0,
            watch_round_ms: 1000.0,
        }
    }
}

impl PerfPlus {
    /// The next CPU cap when throttling: the guest dirties `dirty_bytes`
    /// per second at `cap` percent while the link moves `bw` bytes per
    /// second. Aims at a dirty rate of a quarter of the link (each round
    /// then shrinks the dirty set fourfold), assuming the dirty rate
    /// scales with the CPU share, and at least halves the share each
    /// time, since a guest paced by outside demand catches up after a
    /// stop and only slows down once the share caps it (QEMU's
    /// auto-converge steps the same way, by measured rates, up to 99 %).
    /// When the guest dirtied most of its memory in the round
    /// (`saturated`), the measured rate is only a floor of the real one
    /// (a page written twice counts once), so the step is the steepest.
    fn throttled_cap(cap: u8, dirty_bytes: f64, bw: f64, saturated: bool) -> u8 {
        let factor = if saturated {
            0.02
        } else if dirty_bytes > 0.0 {
            (0.25 * bw / dirty_bytes).clamp(0.05, 0.5)
        } else {
            0.5
        };
        // In 1..=100, and finite.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let next = (f64::from(cap) * factor).floor().clamp(1.0, 100.0) as u8;
        next.min(cap.saturating_sub(1)).max(1)
    }
}

impl PrecopyPolicy for PerfPlus {
    fn decide(&self, s: &RoundStats) -> Decision {
        use Action::{Continue, StopAndCopy};
        if s.iteration == 0 {
            return Decision::new(Continue, "first full pass");
        }
        let cap = CpuShare::percent(s.cpu_cap_percent).filter(|c| c.get() < 100);
        // Deferring hot pages to the final pass only pays while they fit
        // the downtime: a hot set that alone overshoots the target (a
        // guest rewriting most of its memory every round) goes out in the
        // live rounds too, so the final pass owes only what was dirtied
        // during the last round.
        let deferred_ms = if s.bandwidth_bytes_per_s > 0.0 {
            s.deferred_pages as f64 * s.wire_bytes_per_page * 1000.0 / s.bandwidth_bytes_per_s
        } else {
            0.0
        };
        let send_deferred = s.deferred_pages > 0 && deferred_ms > self.downtime_target_ms;
        let floor_ms = if send_deferred {
            s.predicted_floor_ms - s.predicted_hot_ms
        } else {
            s.predicted_floor_ms
        };
        let with_cap = |action, reason| Decision {
            action,
            cpu_cap: cap,
            min_round_ms: 0.0,
            reason,
            send_deferred,
        };
        if s.dirty_pages == 0 && s.deferred_pages == 0 {
            return with_cap(StopAndCopy, "nothing left to send");
        }
        let removable = s.predicted_downtime_ms - floor_ms;
        let negligible = removable
            <= (self.negligible_fraction * s.predicted_downtime_ms).max(self.negligible_ms);
        let improving = s.iteration < 2
            || s.predicted_downtime_ms
                < (1.0 - self.min_improvement) * s.best_earlier_prediction_ms
            || s.decisions_since_best < 2;
        if s.iteration >= self.max_rounds {
            return with_cap(StopAndCopy, "round limit");
        }
        // The byte limit bounds what a pre-copy that does not converge
        // costs; a throttled guest whose dirty set still shrinks round by
        // round is converging, and gets up to twice the limit to finish.
        let bytes_factor = s.bytes_sent_total as f64 / s.memory_bytes.max(1) as f64;
        let converging_throttled = cap.is_some() && improving && !negligible;
        if bytes_factor >= 2.0 * self.max_bytes_factor
            || (bytes_factor >= self.max_bytes_factor && !converging_throttled)
        {
            return with_cap(StopAndCopy, "byte limit");
        }
        let above_target = s.predicted_downtime_ms > self.downtime_target_ms;
        // Throttle as soon as the guest dirties memory faster than half
        // the link moves it (the dirty set cannot shrink fast enough to
        // converge), not only once pre-copy has stalled: every round spent
        // unthrottled is a round of bytes resent for nothing.
        let dirty_bytes = s.dirty_rate_pages_per_s * s.wire_bytes_per_page;
        let outrun = dirty_bytes > 0.5 * s.bandwidth_bytes_per_s;
        let stalled = negligible || !improving;
        if self.throttle && above_target && s.cpu_cap_percent > 1 && (outrun || stalled) {
            let pages = s.memory_bytes / s.page_size.max(1) as u64;
            let saturated = 2 * (s.dirty_pages + s.deferred_pages) >= pages;
            let next = Self::throttled_cap(
                s.cpu_cap_percent,
                dirty_bytes,
                s.bandwidth_bytes_per_s,
                saturated,
            );
            return Decision {
                action: Continue,
                cpu_cap: CpuShare::percent(next),
                min_round_ms: 0.0,
                reason: "the guest outruns the link: throttling it",
                send_deferred,
            };
        }
        if !stalled {
            return with_cap(Continue, "the dirty set is still shrinking");
        }
        if above_target {
            let patience = s.first_round_ms.max(self.min_patience_ms);
            if s.ms_since_best < patience {
                // A watching round lasts a second or more, so it sees
                // written again nearly every page found hot over shorter
                // rounds: sending those live then only burns bandwidth (a
                // guest rewriting all its memory would be sent whole every
                // second, up to the byte limit) and the final pass would
                // owe them anyway. They stay deferred; those the guest
                // stops writing turn cold and go in the next round.
                return Decision {
                    action: Continue,
                    cpu_cap: cap,
                    min_round_ms: self.watch_round_ms.max(patience / 20.0),
                    reason: "stalled above the target: watching for a quieter moment",
                    send_deferred: false,
                };
            }
        }
        if negligible {
            with_cap(StopAndCopy, "more rounds cannot lower the downtime")
        } else {
            with_cap(StopAndCopy, "the dirty set stopped shrinking")
        }
    }

    fn encodings(&self) -> EncodingSet {
        EncodingSet::ALL
    }

    fn hot_rule(&self) -> Option<HotRule> {
        Some(self.hot)
    }

    fn name(&self) -> &'static str {
        "perfplus"
    }
}

/// libxenguest's default (`simple_precopy_policy`, Xen 4.10 to 4.20): stop
/// after 5 live rounds or when under 50 pages are dirty; every page raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenDefault {
    /// `SPP_MAX_ITERATIONS` (5).
    pub max_iterations: u32,
    /// `SPP_TARGET_DIRTY_COUNT` (50).
    pub target_dirty_count: u64,
}

impl Default for XenDefault {
    fn default() -> Self {
        Self {
            max_iterations: 5,
            target_dirty_count: 50,
        }
    }
}

impl PrecopyPolicy for XenDefault {
    fn decide(&self, s: &RoundStats) -> Decision {
        let dirty = s.dirty_pages + s.deferred_pages;
        if s.iteration >= self.max_iterations {
            Decision::new(Action::StopAndCopy, "5 rounds done")
        } else if s.iteration > 0 && dirty < self.target_dirty_count {
            Decision::new(Action::StopAndCopy, "under 50 dirty pages")
        } else {
            Decision::new(Action::Continue, "under 5 rounds")
        }
    }

    fn encodings(&self) -> EncodingSet {
        EncodingSet::RAW_ONLY
    }

    fn name(&self) -> &'static str {
        "xen-default"
    }
}

/// QEMU's default: switch over when the remaining dirty bytes would take
/// under `downtime_limit_ms` at the measured bandwidth; no round limit;
/// zero pages elided; given up (as a management layer would) after
/// `give_up_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QemuDefault {
    /// `downtime-limit` (300 ms).
    pub downtime_limit_ms: f64,
    /// When the caller gives up (30 minutes).
    pub give_up_after_ms: f64,
}

impl Default for QemuDefault {
    fn default() -> Self {
        Self {
            downtime_limit_ms: 300.0,
            give_up_after_ms: 30.0 * 60.0 * 1000.0,
        }
    }
}

impl PrecopyPolicy for QemuDefault {
    fn decide(&self, s: &RoundStats) -> Decision {
        if s.iteration == 0 {
            return Decision::new(Action::Continue, "first full pass");
        }
        // QEMU counts pending dirty pages at their page size.
        let pending = (s.dirty_pages + s.deferred_pages) as f64 * s.page_size as f64;
        if pending <= s.bandwidth_bytes_per_s * self.downtime_limit_ms / 1000.0 {
            Decision::new(
                Action::StopAndCopy,
                "pending bytes fit in the downtime limit",
            )
        } else if s.elapsed_ms >= self.give_up_after_ms {
            Decision::new(Action::Abort, "did not converge within 30 minutes")
        } else {
            Decision::new(Action::Continue, "pending bytes over the downtime limit")
        }
    }

    fn encodings(&self) -> EncodingSet {
        EncodingSet::ZERO_ELISION
    }

    fn name(&self) -> &'static str {
        "qemu-default"
    }
}

/// Non-live migration: pause, copy everything, resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopAndCopy;

impl PrecopyPolicy for StopAndCopy {
    fn decide(&self, _: &RoundStats) -> Decision {
        Decision::new(Action::StopAndCopy, "non-live")
    }

    fn encodings(&self) -> EncodingSet {
        EncodingSet::RAW_ONLY
    }

    fn name(&self) -> &'static str {
        "stop-and-copy"
    }
}

/// One of the built-in policies, by value, so that it can be tuned after
/// being chosen by name (what the C ABI and the command line configure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BuiltinPolicy {
    /// [`PerfPlus`].
    PerfPlus(PerfPlus),
    /// [`XenDefault`].
    XenDefault(XenDefault),
    /// [`QemuDefault`].
    QemuDefault(QemuDefault),
    /// [`StopAndCopy`].
    StopAndCopy(StopAndCopy),
}

impl BuiltinPolicy {
    /// The built-in policy called `name` (one of [`POLICY_NAMES`]), with
    /// its defaults.
    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "perfplus" => Self::PerfPlus(PerfPlus::default()),
            "xen-default" => Self::XenDefault(XenDefault::default()),
            "qemu-default" => Self::QemuDefault(QemuDefault::default()),
            "stop-and-copy" => Self::StopAndCopy(StopAndCopy),
            _ => return None,
        })
    }

    /// Set the downtime the policy aims at, ms: Perf+'s target (above it,
    /// throttling steps in when enabled) or QEMU's `downtime-limit`.
    /// Returns `false`, changing nothing, for a policy without one
    /// (`xen-default` counts rounds and pages; `stop-and-copy` never
    /// iterates).
    pub fn set_downtime_target_ms(&mut self, ms: f64) -> bool {
        match self {
            Self::PerfPlus(p) => p.downtime_target_ms = ms,
            Self::QemuDefault(q) => q.downtime_limit_ms = ms,
            Self::XenDefault(_) | Self::StopAndCopy(_) => return false,
        }
        true
    }

    /// The downtime target or limit, ms, if the policy has one.
    pub fn downtime_target_ms(&self) -> Option<f64> {
        match self {
            Self::PerfPlus(p) => Some(p.downtime_target_ms),
            Self::QemuDefault(q) => Some(q.downtime_limit_ms),
            Self::XenDefault(_) | Self::StopAndCopy(_) => None,
        }
    }

    fn policy(&self) -> &dyn PrecopyPolicy {
        match self {
            Self::PerfPlus(p) => p,
            Self::XenDefault(p) => p,
            Self::QemuDefault(p) => p,
            Self::StopAndCopy(p) => p,
        }
    }
}

impl PrecopyPolicy for BuiltinPolicy {
    fn decide(&self, stats: &RoundStats) -> Decision {
        self.policy().decide(stats)
    }

    fn encodings(&self) -> EncodingSet {
        self.policy().encodings()
    }

    fn hot_rule(&self) -> Option<HotRule> {
        self.policy().hot_rule()
    }

    fn name(&self) -> &'static str {
        self.policy().name()
    }
}

/// The built-in policies by name: `perfplus`, `xen-default`,
/// `qemu-default`, `stop-and-copy`.
pub fn by_name(name: &str) -> Option<Box<dyn PrecopyPolicy + Send>> {
    BuiltinPolicy::by_name(name).map(|p| Box::new(p) as Box<dyn PrecopyPolicy + Send>)
}

/// Names accepted by [`by_name`].
pub const POLICY_NAMES: [&str; 4] = ["perfplus", "xen-default", "qemu-default", "stop-and-copy"];

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(iteration: u32, dirty: u64, predicted: f64, best: f64) -> RoundStats {
        RoundStats {
            iteration,
            elapsed_ms: 1000.0,
            memory_bytes: 1 << 30,
            page_size: 4096,
            pages_sent_total: 0,
            bytes_sent_total: 1 << 30,
            last_round_ms: 100.0,
            dirty_pages: dirty,
            deferred_pages: 0,
            dirty_rate_pages_per_s: 0.0,
            bandwidth_bytes_per_s: 1e9,
            wire_bytes_per_page: 4104.0,
            switchover_fixed_ms: 20.0,
            round_trip_ms: 0.4,
            predicted_downtime_ms: predicted,
            predicted_floor_ms: 20.6,
            predicted_hot_ms: 0.0,
            best_earlier_prediction_ms: best,
            decisions_since_best: 3,
            ms_since_best: 60_000.0,
            first_round_ms: 10_000.0,
            cpu_cap_percent: 100,
        }
    }

    #[test]
    fn xen_default_stops_after_five_rounds_or_fifty_pages() {
        let x = XenDefault::default();
        assert_eq!(x.decide(&stats(0, 1000, 1e9, 1e9)).action, Action::Continue);
        assert_eq!(x.decide(&stats(4, 1000, 1e9, 1e9)).action, Action::Continue);
        assert_eq!(
            x.decide(&stats(5, 1000, 1e9, 1e9)).action,
            Action::StopAndCopy
        );
        assert_eq!(
            x.decide(&stats(2, 49, 1e9, 1e9)).action,
            Action::StopAndCopy
        );
    }

    #[test]
    fn qemu_default_stops_under_its_limit_and_gives_up_at_thirty_minutes() {
        let q = QemuDefault::default();
        // 1e9 B/s * 0.3 s = 300 MB = 73242 pages
        assert_eq!(
            q.decide(&stats(3, 73_000, 0.0, 0.0)).action,
            Action::StopAndCopy
        );
        assert_eq!(
            q.decide(&stats(3, 80_000, 0.0, 0.0)).action,
            Action::Continue
        );
        let mut late = stats(900, 80_000, 0.0, 0.0);
        late.elapsed_ms = 30.0 * 60_000.0;
        assert_eq!(q.decide(&late).action, Action::Abort);
    }

    #[test]
    fn perfplus_keeps_going_while_the_dirty_set_shrinks() {
        let p = PerfPlus::default();
        assert_eq!(
            p.decide(&stats(0, 1 << 20, f64::INFINITY, f64::INFINITY))
                .action,
            Action::Continue
        );
        assert_eq!(
            p.decide(&stats(3, 5000, 60.0, 90.0)).action,
            Action::Continue
        );
        // Improvement under 10 %: stop.
        assert_eq!(
            p.decide(&stats(3, 5000, 85.0, 90.0)).action,
            Action::StopAndCopy
        );
        // Nothing left worth a round.
        assert_eq!(
            p.decide(&stats(3, 10, 21.0, 90.0)).action,
            Action::StopAndCopy
        );
    }

    #[test]
    fn perfplus_throttles_only_when_asked() {
        let p = PerfPlus {
            throttle: true,
            ..PerfPlus::default()
        };
        let d = p.decide(&stats(4, 500_000, 2000.0, 2000.0));
        assert_eq!(d.action, Action::Continue);
        // Most of memory dirtied in one round: the measured rate is only a
        // floor, so the steepest step.
        assert_eq!(d.cpu_cap.map(CpuShare::get), Some(2));
        let d = PerfPlus::default().decide(&stats(4, 500_000, 2000.0, 2000.0));
        assert_eq!((d.action, d.cpu_cap), (Action::StopAndCopy, None));
    }

    #[test]
    fn perfplus_throttles_a_guest_that_outruns_the_link_by_the_measured_rates() {
        let p = PerfPlus {
            throttle: true,
            ..PerfPlus::default()
        };
        // Still improving, but dirtying twice what the link moves: aim at a
        // quarter of the link, 1/8 of the rate.
        let mut s = stats(2, 20_000, 900.0, 2000.0);
        s.decisions_since_best = 0;
        s.dirty_rate_pages_per_s = 2e9 / s.wire_bytes_per_page;
        let d = p.decide(&s);
        assert_eq!(d.action, Action::Continue);
        assert_eq!(d.cpu_cap.map(CpuShare::get), Some(12));
        // Close to the link: at least halve.
        s.cpu_cap_percent = 12;
        s.dirty_rate_pages_per_s = 0.6e9 / s.wire_bytes_per_page;
        assert_eq!(p.decide(&s).cpu_cap.map(CpuShare::get), Some(5));
        // Under half the link and shrinking: no more throttling.
        s.dirty_rate_pages_per_s = 0.3e9 / s.wire_bytes_per_page;
        let d = p.decide(&s);
        assert_eq!(
            (d.action, d.cpu_cap.map(CpuShare::get)),
            (Action::Continue, Some(12))
        );
        // At 1 % there is no lower step.
        s.cpu_cap_percent = 1;
        s.dirty_rate_pages_per_s = 2e9 / s.wire_bytes_per_page;
        assert_eq!(p.decide(&s).cpu_cap.map(CpuShare::get), Some(1));
    }

    #[test]
    fn perfplus_sends_a_hot_set_too_big_for_the_target_in_the_live_rounds() {
        let p = PerfPlus::default();
        // 1000 hot pages take ~4 ms at 1 GB/s: deferred to the final pass.
        let mut s = stats(3, 10_000, 500.0, 2000.0);
        s.decisions_since_best = 0;
        s.deferred_pages = 1000;
        assert!(!p.decide(&s).send_deferred);
        // 100 000 hot pages take ~410 ms, over the 100 ms target: sent live.
        s.deferred_pages = 100_000;
        s.predicted_floor_ms = 430.0;
        s.predicted_downtime_ms = 470.0;
        let d = p.decide(&s);
        assert_eq!(d.action, Action::Continue);
        assert!(d.send_deferred);
    }

    #[test]
    fn perfplus_watches_a_stalled_guest_for_a_while_before_stopping() {
        let p = PerfPlus::default();
        let mut s = stats(4, 500_000, 2000.0, 2000.0);
        s.ms_since_best = 3000.0;
        let d = p.decide(&s);
        assert_eq!(d.action, Action::Continue);
        assert!(d.min_round_ms > 0.0);
        s.ms_since_best = 11_000.0;
        assert_eq!(p.decide(&s).action, Action::StopAndCopy);
        // A hot set too big for the target goes out in live rounds, but
        // not in watching ones: a round of a second would find it all
        // written again.
        s.ms_since_best = 3000.0;
        s.deferred_pages = 200_000;
        s.decisions_since_best = 0;
        let d = p.decide(&s);
        assert!(
            (d.action, d.send_deferred) == (Action::Continue, true),
            "{d:?}"
        );
        s.decisions_since_best = 3;
        let d = p.decide(&s);
        assert_eq!(
            d.reason,
            "stalled above the target: watching for a quieter moment"
        );
        assert!(!d.send_deferred, "{d:?}");
        // Under the target there is nothing to wait for.
        let s = stats(4, 5000, 60.0, 60.0);
        assert_eq!(p.decide(&s).action, Action::StopAndCopy);
    }

    #[test]
    fn builtin_policies_are_found_by_name_and_take_a_target_only_if_they_have_one() {
        for name in POLICY_NAMES {
            assert_eq!(BuiltinPolicy::by_name(name).unwrap().name(), name);
        }
        assert!(BuiltinPolicy::by_name("perf+").is_none());
        let mut p = BuiltinPolicy::by_name("perfplus").unwrap();
        assert!(p.set_downtime_target_ms(40.0));
        assert_eq!(p.downtime_target_ms(), Some(40.0));
        let mut q = BuiltinPolicy::by_name("qemu-default").unwrap();
        assert!(q.set_downtime_target_ms(500.0));
        // 1e9 B/s * 0.5 s covers 80 000 pages: QEMU now stops.
        assert_eq!(
            q.decide(&stats(3, 80_000, 0.0, 0.0)).action,
            Action::StopAndCopy
        );
        let mut x = BuiltinPolicy::by_name("xen-default").unwrap();
        assert!(!x.set_downtime_target_ms(40.0));
        assert_eq!(x, BuiltinPolicy::XenDefault(XenDefault::default()));
    }

    #[test]
    fn the_tracker_predicts_from_measured_bandwidth() {
        let mut t = RoundStatsTracker::new(1 << 30, 4096, 20.0, 0.0, 0);
        let s = t.snapshot(0.0, 262_144, 0);
        assert!(s.predicted_downtime_ms.is_infinite());
        // 1 GB in 1 s: 1 GB/s.
        t.round_done(262_144, 1_000_000_000, 1000.0, 5000);
        let s = t.snapshot(1000.0, 1000, 500);
        assert!((s.bandwidth_bytes_per_s - 1e9).abs() < 1.0);
        let per_page = raw_wire_bytes_per_page(4096);
        let expected = 20.0 + 1500.0 * per_page / 1e6;
        assert!((s.predicted_downtime_ms - expected).abs() < 1e-6);
        // The next round (1000 pages, ~4 ms) is 1/250 of the last one: that
        // share of the 500 deferred pages is expected to be written again.
        let hot = 500.0 * per_page / 1e6 * (1000.0 * per_page / 1e6) / 1000.0;
        assert!((s.predicted_hot_ms - hot).abs() < 1e-9);
        assert!((s.predicted_floor_ms - (20.0 + hot)).abs() < 1e-6);
        let s2 = t.snapshot(1000.0, 10, 0);
        assert!((s2.best_earlier_prediction_ms - expected).abs() < 1e-6);
    }

    /// The tracker after a full pass and `rounds` live rounds of
    /// (pages sent, round ms) at 1 GB/s of raw pages.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small, positive
    fn tracker_after(rounds: &[(u64, f64)]) -> RoundStatsTracker {
        let per_page = raw_wire_bytes_per_page(4096);
        let mut t = RoundStatsTracker::new(1 << 30, 4096, 2.0, 0.0, 0);
        t.round_done(262_144, (262_144.0 * per_page) as u64, 1076.0, 20_000);
        for &(pages, ms) in rounds {
            let bytes = pages as f64 * per_page;
            t.round_done_timed(pages, bytes as u64, bytes / 1e6, ms, 1000);
        }
        t
    }

    #[test]
    fn a_resent_page_costs_what_resent_pages_took_when_that_is_more_than_its_bytes() {
        // A full pass at 1 GB/s, then rounds of 1000 deltas of 100 bytes
        // that took 5 ms each (reading, encoding and applying them): 5 us a
        // page, though their bytes take 0.1 us.
        let mut t = RoundStatsTracker::new(1 << 30, 4096, 2.0, 0.0, 0);
        t.round_done(262_144, 1_076_000_000, 1076.0, 1000);
        t.round_done(1000, 100_000, 5.0, 1000);
        t.round_done(1000, 100_000, 5.0, 1000);
        let s = t.snapshot(2000.0, 60, 0);
        assert!(
            (s.predicted_downtime_ms - (2.0 + 60.0 * 0.005)).abs() < 1e-3,
            "{s:?}"
        );
        // 60 such pages are 0.3 ms of downtime: worth a round.
        let mut p = PerfPlus::default();
        let mut s = s;
        s.best_earlier_prediction_ms = 10.0;
        assert_eq!(p.decide(&s).action, Action::Continue);
        // Under the absolute threshold they are not.
        p.negligible_ms = 0.5;
        assert_eq!(p.decide(&s).action, Action::StopAndCopy);
    }

    #[test]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small, positive
    fn an_early_prediction_at_raw_cost_does_not_make_a_shrinking_set_look_stalled() {
        // A migration like `migrate demo --workload kv` on a busy 2-core
        // machine: the full pass ran at 1 GB/s, so the first prediction
        // prices 19,600 dirty pages at their raw bytes (~4 us each); the
        // live rounds then take 15 us a page (reading, encoding, waiting
        // for a CPU). The owed set shrinks 19,600 -> 8,500 -> 6,300 ->
        // 4,950, yet the first live round's prediction is above the first
        // one as made.
        let per_page = raw_wire_bytes_per_page(4096);
        let mut t = RoundStatsTracker::new(1 << 30, 4096, 0.5, 0.0, 0);
        let p = PerfPlus::default();
        t.round_done(262_144, (262_144.0 * per_page) as u64, 1076.0, 19_600);
        let first = t.snapshot(1100.0, 19_600, 0);
        assert!(first.predicted_downtime_ms < 90.0, "{first:?}");
        assert_eq!(p.decide(&first).action, Action::Continue);
        let mut elapsed = 1100.0;
        let mut owed = 19_600_u64;
        for (round, (next, deferred)) in [(6_500_u64, 2_000_u64), (4_800, 1_500), (3_600, 1_350)]
            .into_iter()
            .enumerate()
        {
            // The round resent the owed pages at 15 us each.
            let ms = owed as f64 * 0.015;
            let bytes = owed * 1_000;
            t.round_done(owed, bytes, ms, next + deferred);
            elapsed += ms;
            let s = t.snapshot(elapsed, next, deferred);
            assert!(
                round > 0 || s.predicted_downtime_ms > first.predicted_downtime_ms,
                "{s:?}"
            );
            assert!(
                s.best_earlier_prediction_ms > s.predicted_downtime_ms,
                "{s:?}"
            );
            assert_eq!(s.decisions_since_best, 0, "{s:?}");
            let d = p.decide(&s);
            assert_eq!(d.action, Action::Continue, "{d:?}");
            owed = next + deferred;
        }
        // Once the set stops shrinking, the rule sees it.
        let mut s = first;
        for _ in 0..2 {
            let ms = owed as f64 * 0.015;
            t.round_done(owed, owed * 1_000, ms, owed);
            elapsed += ms;
            s = t.snapshot(elapsed, 3_600, 1_350);
        }
        assert_eq!(s.decisions_since_best, 2, "{s:?}");
        assert!(
            (s.best_earlier_prediction_ms - s.predicted_downtime_ms).abs() < 1e-9,
            "{s:?}"
        );
        let d = p.decide(&s);
        assert_eq!(
            (d.action, d.reason),
            (Action::StopAndCopy, "the dirty set stopped shrinking")
        );
    }

    #[test]
    fn pages_found_hot_in_long_rounds_are_no_floor_for_a_short_one() {
        // Two long rounds (a second, then 200 ms) found 7000 pages hot; the
        // next round sends 400 cold pages (~2 ms, plus the 1 ms the last
        // round spent beyond its transfer).
        let mut t = tracker_after(&[(30_000, 1000.0), (48_500, 200.0)]);
        let s = t.snapshot(3000.0, 400, 7000);
        let deferred_ms = 7000.0 * s.wire_bytes_per_page / 1e6;
        assert!(s.predicted_hot_ms < 0.02 * deferred_ms, "{s:?}");
        // Stopping now would pay ~29 ms for pages a 3 ms round most likely
        // leaves clean: Perf+ goes on, and they go in the next live round.
        let d = PerfPlus::default().decide(&s);
        assert_eq!(d.action, Action::Continue, "{d:?}");
    }

    #[test]
    fn pages_found_hot_in_rounds_like_the_next_are_a_floor() {
        // Rounds of a few pages that take 3 ms (the harvest, waits): the
        // 300 deferred pages were hot over a round as long as the next,
        // and stay in the floor; the cold rest is negligible, so Perf+
        // stops.
        let mut t = tracker_after(&[(20, 3.0), (20, 3.0), (20, 3.0)]);
        let s = t.snapshot(3000.0, 10, 300);
        let deferred_ms = 300.0 * s.wire_bytes_per_page / 1e6;
        assert!(s.predicted_hot_ms > 0.95 * deferred_ms, "{s:?}");
        let d = PerfPlus::default().decide(&s);
        assert_eq!(
            (d.action, d.reason),
            (Action::StopAndCopy, "more rounds cannot lower the downtime")
        );
    }
}
