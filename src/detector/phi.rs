//! The phi-accrual detector of one link to one peer, with a loss model that
//! knows what a sequence number says.
//!
//! φ(t) = −log₁₀ P(no heartbeat by t | the peer is alive) (Hayashibara et
//! al., 2004). The classic detector fits a normal distribution to
//! inter-arrival times, which misreads loss: a 5 % lossy link has a
//! heavy-tailed inter-arrival distribution that no normal fits, so the
//! classic φ either convicts live peers or is slow everywhere. Heartbeats
//! carry sequence numbers, so this detector models the two causes of
//! silence separately:
//!
//! - **loss**, as a two-state Markov chain (Gilbert–Elliott): `p_first`, the
//!   chance that a heartbeat is lost after one arrived, and `p_next`, the
//!   chance that it is lost after one was lost. Independent loss has
//!   `p_next = p_first`; bursty loss has `p_next ≫ p_first`. Both are
//!   counted from sequence gaps over a sliding window (exponential
//!   forgetting) and used at an upper credible bound, so that a quiet
//!   window never makes the detector bold;
//! - **timing**, as a normal distribution of arrival-time residuals (arrival
//!   gap minus gap × interval), with a floor on the deviation.
//!
//! After the last arrival at `a`, heartbeat `k` is expected at
//! `a + k·η + μ`. It has not arrived by `a + u` if it was lost, or if it
//! was sent but is still late: `p + (1 − p)·Q((u − k·η − μ)/σ)`. φ is the
//! sum of −log₁₀ of these factors along the loss chain, so each heartbeat
//! that should have arrived adds the evidence its loss rate justifies, and
//! no more: this is the bound of anchors A4 (`k_min = ⌈log(r·η)/log p⌉`)
//! computed online.
//!
//! Crossing times (when φ will reach a threshold) are solved in closed form
//! from the plateaus between expected arrivals, so a tick costs one
//! comparison: these are the detector's timers.

use super::stats::{normal_tail, normal_tail_inverse, us_from_f64};

/// Tuning of [`PhiAccrual`]. The defaults meet the detection goals of
/// anchors A6 at a 50 ms interval; see the module docs of
/// [`detector`](super) for the reasoning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// φ at which a link counts as silent (the peer is suspected when every
    /// link is silent).
    pub suspect_phi: f64,
    /// φ that convicts: a false conviction per heartbeat slot is about
    /// 10^−convict_phi.
    pub convict_phi: f64,
    /// Floor on the standard deviation of arrival-time residuals, µs.
    pub min_std_deviation_us: u64,
    /// How many arrivals the statistics remember (exponential forgetting).
    pub window: u32,
    /// Lower bound on the estimated loss rate: no link is trusted more.
    pub min_loss: f64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        Self {
            suspect_phi: 6.0,
            convict_phi: 12.0,
            min_std_deviation_us: 5_000,
            window: 2_000,
            min_loss: 1e-4,
        }
    }
}

/// What an arrival meant to the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A newer heartbeat: the evidence restarts from this arrival.
    Fresh,
    /// An older or repeated sequence number (reordered or duplicated): ignored.
    Old,
}

/// Sequence gaps beyond this are a restart of the sender's counter, not loss.
const MAX_GAP: u64 = 10_000;
/// Recompute the crossing times at least every this many arrivals.
const RECOMPUTE_EVERY: u32 = 32;
/// Strength (in pseudo-observations) of the prior that loss after a loss is
/// as likely as loss after an arrival.
const BURST_PRIOR: f64 = 10.0;
/// Credible-bound width, in standard deviations, for the loss estimates.
const CREDIBLE_Z: f64 = 2.0;
/// Highest loss probability the model uses (a link that loses everything
/// still accrues φ, slowly).
const MAX_LOSS: f64 = 0.9;
/// Prior pseudo-samples for the timing statistics.
const TIMING_PRIOR: f64 = 4.0;

/// The phi-accrual detector of one link to one peer.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: PhiConfig,
    interval_us: u64,
    last_seq: Option<u64>,
    last_arrival_us: u64,
    // Loss-chain transition counts, exponentially forgotten.
    arrived_arrived: f64,
    arrived_lost: f64,
    lost_lost: f64,
    lost_arrived: f64,
    // Arrival-time residuals (µs): exponentially weighted mean and variance.
    residual_mean_us: f64,
    residual_var_us2: f64,
    timing_samples: f64,
    // Timing samples are not taken before this time (after a local pause
    // the queued heartbeats arrive all at once and say nothing about timing).
    timing_hold_until_us: u64,
    // Cached crossing offsets (µs after the last arrival).
    suspect_offset_us: u64,
    convict_offset_us: u64,
    arrivals_since_recompute: u32,
}

impl PhiAccrual {
    /// A detector for a link whose peer sends every `interval_us`.
    pub fn new(config: PhiConfig, interval_us: u64) -> Self {
        let interval_us = interval_us.max(1);
        let prior_sd = (interval_us as f64 / 4.0).max(config.min_std_deviation_us as f64);
        let mut phi = Self {
            config,
            interval_us,
            last_seq: None,
            last_arrival_us: 0,
            arrived_arrived: 0.0,
            arrived_lost: 0.0,
            lost_lost: 0.0,
            lost_arrived: 0.0,
            residual_mean_us: 0.0,
            residual_var_us2: prior_sd * prior_sd,
            timing_samples: 0.0,
            timing_hold_until_us: 0,
            suspect_offset_us: 0,
            convict_offset_us: 0,
            arrivals_since_recompute: 0,
        };
        phi.recompute();
        phi
    }

    /// Record heartbeat `seq` arriving at `now_us`; `interval_us` is the
    /// sender's interval (from the packet or the configuration).
    pub fn arrival(&mut self, now_us: u64, seq: u64, interval_us: u64) -> Arrival {
        let interval_us = interval_us.max(1);
        let mut lost = false;
        if let Some(last) = self.last_seq {
            if seq <= last {
                return Arrival::Old;
            }
            let gap = seq - last;
            if gap <= MAX_GAP && interval_us == self.interval_us {
                lost = gap > 1;
                self.count_gap(gap);
                if now_us >= self.timing_hold_until_us {
                    self.sample_timing(now_us.saturating_sub(self.last_arrival_us), gap);
                }
            }
        }
        self.interval_us = interval_us;
        self.last_seq = Some(seq);
        self.last_arrival_us = now_us;
        self.arrivals_since_recompute += 1;
        if lost || self.arrivals_since_recompute >= RECOMPUTE_EVERY || self.arrivals_seen() < 64.0 {
            self.recompute();
        }
        Arrival::Fresh
    }

    /// Forget the sequence number (the sender restarted with a new
    /// incarnation) but keep what was learnt about the link.
    pub fn reset_sequence(&mut self) {
        self.last_seq = None;
    }

    /// Take no timing samples before `until_us` (the observer was paused;
    /// heartbeats queued meanwhile arrive in a burst).
    pub fn hold_timing_until(&mut self, until_us: u64) {
        self.timing_hold_until_us = self.timing_hold_until_us.max(until_us);
    }

    /// When the last fresh heartbeat arrived, µs.
    pub fn last_arrival_us(&self) -> u64 {
        self.last_arrival_us
    }

    /// Whether any heartbeat has arrived.
    pub fn has_arrivals(&self) -> bool {
        self.last_seq.is_some() || self.arrivals_seen() > 0.0
    }

    /// µs after the last arrival at which φ reaches `suspect_phi`.
    pub fn suspect_offset_us(&self) -> u64 {
        self.suspect_offset_us
    }

    /// µs after the last arrival at which φ reaches `convict_phi`.
    pub fn convict_offset_us(&self) -> u64 {
        self.convict_offset_us
    }

    /// The current loss model: (`p_first`, `p_next`), at their upper
    /// credible bounds.
    pub fn loss_model(&self) -> (f64, f64) {
        let arrived = self.arrived_arrived + self.arrived_lost;
        let p_first = upper_bound(self.arrived_lost + 0.5, arrived + 1.0)
            .clamp(self.config.min_loss, MAX_LOSS);
        let lost = self.lost_lost + self.lost_arrived;
        let p_next = upper_bound(self.lost_lost + BURST_PRIOR * p_first, lost + BURST_PRIOR)
            .clamp(p_first, MAX_LOSS);
        (p_first, p_next)
    }

    /// The timing model: (mean residual, standard deviation), µs.
    pub fn timing_model_us(&self) -> (f64, f64) {
        let sd = self
            .residual_var_us2
            .sqrt()
            .max(self.config.min_std_deviation_us as f64);
        (self.residual_mean_us, sd)
    }

    /// φ `silence_us` after the last arrival, computed exactly over the
    /// loss chain (for display and tests; ticks use the crossing offsets).
    pub fn phi_after(&self, silence_us: u64) -> f64 {
        let (p_first, p_next) = self.loss_model();
        let (mean, sd) = self.timing_model_us();
        let eta = self.interval_us as f64;
        let u = silence_us as f64;
        // Probability that every heartbeat so far is unseen, split by whether
        // the latest one was lost (l) or sent but not yet arrived (r).
        let mut l = 0.0_f64;
        let mut r = 1.0_f64; // the last arrival: "arrived"
        for k in 1..=100_000_u32 {
            let z = (u - f64::from(k) * eta - mean) / sd;
            let not_yet = normal_tail(z); // P(arrival time > u) for a sent heartbeat
            let new_l = l * p_next + r * p_first;
            let new_r = (l * (1.0 - p_next) + r * (1.0 - p_first)) * not_yet;
            l = new_l;
            r = new_r;
            if z < -8.0 {
                // This and every later heartbeat is certainly not due yet.
                break;
            }
        }
        -(l + r).max(1e-300).log10()
    }

    fn arrivals_seen(&self) -> f64 {
        self.arrived_arrived + self.arrived_lost
    }

    fn count_gap(&mut self, gap: u64) {
        let keep = 1.0 - 1.0 / f64::from(self.config.window.max(2));
        self.arrived_arrived *= keep;
        self.arrived_lost *= keep;
        self.lost_lost *= keep;
        self.lost_arrived *= keep;
        if gap == 1 {
            self.arrived_arrived += 1.0;
        } else {
            self.arrived_lost += 1.0;
            self.lost_lost += (gap - 2) as f64;
            self.lost_arrived += 1.0;
        }
    }

    fn sample_timing(&mut self, elapsed_us: u64, gap: u64) {
        let eta = self.interval_us as f64;
        let residual = (elapsed_us as f64 - gap as f64 * eta).clamp(-eta, eta);
        let weight =
            1.0 / (self.timing_samples + TIMING_PRIOR + 1.0).min(f64::from(self.config.window));
        let delta = residual - self.residual_mean_us;
        self.residual_mean_us += weight * delta;
        self.residual_var_us2 = (1.0 - weight) * (self.residual_var_us2 + weight * delta * delta);
        self.timing_samples += 1.0;
    }

    /// Solve the crossing offsets for both thresholds.
    fn recompute(&mut self) {
        self.arrivals_since_recompute = 0;
        self.suspect_offset_us = self.crossing_offset_us(self.config.suspect_phi);
        self.convict_offset_us = self.crossing_offset_us(self.config.convict_phi);
    }

    /// µs after the last arrival at which φ reaches `threshold`: find the
    /// heartbeat `k` whose loss takes the plateau over the threshold, then
    /// solve its timing factor for the remainder.
    fn crossing_offset_us(&self, threshold: f64) -> u64 {
        let (p_first, p_next) = self.loss_model();
        let (mean, sd) = self.timing_model_us();
        let first = -p_first.log10();
        let next = -p_next.log10();
        // Plateau after k lost heartbeats: first + (k − 1)·next.
        let (k, before, p) = if first >= threshold {
            (1.0, 0.0, p_first)
        } else {
            let more = ((threshold - first) / next).ceil().max(1.0);
            (1.0 + more, first + (more - 1.0) * next, p_next)
        };
        // Factor of heartbeat k: p + (1 − p)·P(late) = 10^−(threshold − before).
        let factor = 10f64.powf(-(threshold - before));
        let late = ((factor - p) / (1.0 - p)).clamp(0.0, 1.0);
        // P(late) = Q(z) with z = (u − k·η − μ)/σ.
        let z = normal_tail_inverse(late);
        us_from_f64(k * self.interval_us as f64 + mean + z * sd)
    }
}

/// Upper credible bound of a proportion `hits / trials`.
fn upper_bound(hits: f64, trials: f64) -> f64 {
    let p = (hits / trials).clamp(0.0, 1.0);
    p + CREDIBLE_Z * (p * (1.0 - p) / trials).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETA: u64 = 50_000;

    /// A detector fed `n` heartbeats, every `loss_every`-th lost (0: none).
    fn trained(n: u64, loss_every: u64) -> PhiAccrual {
        let mut phi = PhiAccrual::new(PhiConfig::default(), ETA);
        for seq in 1..=n {
            if loss_every != 0 && seq % loss_every == 0 {
                continue;
            }
            phi.arrival(seq * ETA, seq, ETA);
        }
        phi
    }

    #[test]
    fn clean_link_convicts_after_a_handful_of_silent_intervals() {
        let phi = trained(4_000, 0);
        let offset = phi.convict_offset_us();
        assert!(
            (5 * ETA..=8 * ETA).contains(&offset),
            "convicts {offset} µs after the last arrival"
        );
        assert!(phi.suspect_offset_us() < offset);
    }

    #[test]
    fn lossy_link_needs_more_silence_than_a_clean_one() {
        let clean = trained(4_000, 0);
        let lossy = trained(4_000, 20); // 5 % loss
        assert!(lossy.convict_offset_us() > clean.convict_offset_us() + 2 * ETA);
        let (p_first, p_next) = lossy.loss_model();
        assert!((0.05..0.1).contains(&p_first), "p_first {p_first}");
        assert!(p_next >= p_first);
    }

    #[test]
    fn bursty_loss_is_learnt_as_bursts() {
        let mut phi = PhiAccrual::new(PhiConfig::default(), ETA);
        let mut seq = 0;
        for i in 0..4_000 {
            // A burst of 3 losses every 60 heartbeats: 5 % loss in bursts.
            seq += if i % 57 == 0 { 4 } else { 1 };
            phi.arrival(seq * ETA, seq, ETA);
        }
        let (p_first, p_next) = phi.loss_model();
        assert!(p_next > 0.4, "p_next {p_next}");
        assert!(p_first < 0.05, "p_first {p_first}");
        assert!(phi.convict_offset_us() > 20 * ETA);
    }

    #[test]
    fn closed_form_crossing_agrees_with_the_exact_phi() {
        for loss_every in [0, 100, 20, 10] {
            let phi = trained(4_000, loss_every);
            for threshold in [phi.config.suspect_phi, phi.config.convict_phi] {
                let offset = phi.crossing_offset_us(threshold);
                let at = phi.phi_after(offset);
                assert!(
                    (at - threshold).abs() < 0.25,
                    "loss 1/{loss_every}: φ({offset}) = {at}, threshold {threshold}"
                );
                assert!(phi.phi_after(offset.saturating_sub(ETA)) < threshold);
            }
        }
    }

    #[test]
    fn phi_grows_with_silence() {
        let phi = trained(2_000, 0);
        let mut last = -1.0;
        for u in (0..20).map(|k| k * ETA / 2) {
            let value = phi.phi_after(u);
            assert!(value >= last - 1e-9, "φ({u}) = {value} < {last}");
            last = value;
        }
        assert!(phi.phi_after(0) < 0.01);
    }

    #[test]
    fn reordered_and_repeated_heartbeats_are_ignored() {
        let mut phi = trained(100, 0);
        let last = phi.last_arrival_us();
        assert_eq!(phi.arrival(last + 10, 100, ETA), Arrival::Old);
        assert_eq!(phi.arrival(last + 10, 50, ETA), Arrival::Old);
        assert_eq!(phi.last_arrival_us(), last);
        assert_eq!(phi.arrival(last + ETA, 101, ETA), Arrival::Fresh);
    }

    #[test]
    fn new_link_is_cautious() {
        let young = trained(20, 0);
        let old = trained(4_000, 0);
        assert!(young.convict_offset_us() > 2 * old.convict_offset_us());
    }

    #[test]
    fn a_sender_stall_does_not_wreck_the_timing_model() {
        let mut phi = trained(4_000, 0);
        let (_, sd_before) = phi.timing_model_us();
        // The sender stalls 1.5 s, then resumes with the next sequence number.
        phi.arrival(4_000 * ETA + 1_500_000, 4_001, ETA);
        let (_, sd_after) = phi.timing_model_us();
        assert!(
            sd_after < sd_before * 1.2 + 2_000.0,
            "{sd_before} → {sd_after}"
        );
    }
}
