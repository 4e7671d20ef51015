//! Failure detection, sans-io: is a peer alive, is one of its links down,
//! was this observer itself paused, can this host reach its ping nodes.
//!
//! Data flows one way: the caller reports each heartbeat's arrival
//! (peer, link, sequence number, local time) and checks the clock; the
//! detectors answer with transitions. Nothing here reads a clock, sleeps or
//! touches a socket, and nothing depends on a packet format, so Heartbeat 3
//! peers (or anything else that numbers its heartbeats) are judged the same
//! way as perfplus's own.
//!
//! - [`PhiAccrual`]: per link, φ accrual over a loss chain and a timing
//!   model (see its module docs for why loss and timing are modelled apart).
//! - [`Deadline`]: per link, Heartbeat's fixed `deadtime`.
//! - [`PeerMonitor`]: per peer, the verdict from all links: suspected when
//!   every link is silent, dead when the suspicion outlives its deadline,
//!   never before the [pause tolerance](DetectorConfig::pause_tolerance_us)
//!   and never after a [maximum silence](DetectorConfig::max_silence_us)
//!   (a Heartbeat peer's advertised deadtime).
//! - [`ObserverClock`]: notices that this node itself was paused, so that
//!   it accuses nobody for that time.
//! - [`PingMonitor`]: the host's uplink [`Health`] from its ping nodes.
//!
//! # Defaults and why
//!
//! With heartbeats every 50 ms, a clean link convicts about 7 intervals
//! (≈ 350 ms) after the last heartbeat, a 5 % lossy link about 12 (≈ 600 ms),
//! and bursty loss later still: each heartbeat that should have arrived adds
//! −log₁₀ of its loss probability to φ, and conviction needs φ ≥ 12 (a false
//! conviction chance of about 10⁻¹² per heartbeat slot, which over 3000
//! member-hours of a 16-node cluster is ≈ 0.003). This is anchors A4's
//! `k_min` computed online. The pause tolerance (250 ms, plus one interval of
//! slack) is at the clean detection time, so by default it barely delays a
//! conviction; raise it to
//! ride out longer stalls at the cost of detection time (they are the same
//! thing, anchors A4).

#![forbid(unsafe_code)]

mod deadline;
mod observer;
mod peer;
mod phi;
mod ping;
mod stats;

pub use deadline::Deadline;
pub use observer::{LocalPause, ObserverClock};
pub use peer::{PeerMonitor, PeerState, PeerTransition};
pub use phi::{Arrival, PhiAccrual, PhiConfig};
pub use ping::{Health, PingConfig, PingMonitor, Probe};
pub use stats::us_from_f64;

/// How each link's evidence is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Phi accrual with a loss model (the default).
    Phi(PhiConfig),
    /// Fixed times after the last heartbeat (Heartbeat's `warntime` and
    /// `deadtime`).
    Deadline {
        /// Silence after which a link is silent (a warning), µs.
        warn_us: u64,
        /// Silence after which a link convicts, µs.
        dead_us: u64,
    },
}

/// Failure-detector settings, shared by every peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// How links are judged.
    pub method: Method,
    /// A peer stopped for less than this is never convicted, µs: the
    /// longest stall (SIGSTOP, VM freeze) a live host may have. Conviction
    /// needs a silence of at least this plus one heartbeat interval.
    pub pause_tolerance_us: u64,
    /// This node counts as paused when it runs later than asked by more
    /// than this, µs.
    pub observer_pause_threshold_us: u64,
    /// An upper bound on the silence before conviction, µs, whatever the
    /// method says (Heartbeat's `deadtime`): the method judges, this only
    /// bounds it. A peer that advertises its own bound (a Heartbeat 3 node's
    /// `dt`) is held to that one instead.
    pub max_silence_us: Option<u64>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            method: Method::Phi(PhiConfig::default()),
            pause_tolerance_us: 250_000,
            observer_pause_threshold_us: 100_000,
            max_silence_us: None,
        }
    }
}

/// A detector setting that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectorError {
    /// A phi threshold is not a positive number, or suspicion comes after
    /// conviction.
    #[error("phi thresholds must satisfy 0 < suspect_phi ({suspect}) <= convict_phi ({convict})")]
    PhiThresholds {
        /// The suspect threshold.
        suspect: f64,
        /// The conviction threshold.
        convict: f64,
    },
    /// The loss floor is outside (0, 0.5].
    #[error("min_loss must be in (0, 0.5], got {0}")]
    MinLoss(f64),
    /// The statistics window is too short to learn anything.
    #[error("the phi window must hold at least 16 arrivals, got {0}")]
    Window(u32),
    /// The upper bound on silence is zero.
    #[error("the maximum silence before conviction must be positive")]
    MaxSilence,
    /// The deadline detector's dead time is zero or shorter than its warn time.
    #[error("deadline detector: dead time ({dead_us} µs) must be positive and at least the warn time ({warn_us} µs)")]
    DeadlineTimes {
        /// Warn time, µs.
        warn_us: u64,
        /// Dead time, µs.
        dead_us: u64,
    },
}

impl DetectorConfig {
    /// Check that the settings can work.
    pub fn validate(&self) -> Result<(), DetectorError> {
        if self.max_silence_us == Some(0) {
            return Err(DetectorError::MaxSilence);
        }
        match self.method {
            Method::Phi(phi) => {
                let ordered = phi.suspect_phi > 0.0 && phi.suspect_phi <= phi.convict_phi;
                if !ordered || !phi.convict_phi.is_finite() {
                    return Err(DetectorError::PhiThresholds {
                        suspect: phi.suspect_phi,
                        convict: phi.convict_phi,
                    });
                }
                if !(phi.min_loss > 0.0 && phi.min_loss <= 0.5) {
                    return Err(DetectorError::MinLoss(phi.min_loss));
                }
                if phi.window < 16 {
                    return Err(DetectorError::Window(phi.window));
                }
            }
            Method::Deadline { warn_us, dead_us } => {
                if dead_us == 0 || warn_us > dead_us {
                    return Err(DetectorError::DeadlineTimes { warn_us, dead_us });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        DetectorConfig::default().validate().unwrap();
    }

    #[test]
    fn inverted_thresholds_are_refused() {
        let config = DetectorConfig {
            method: Method::Phi(PhiConfig {
                suspect_phi: 9.0,
                convict_phi: 3.0,
                ..PhiConfig::default()
            }),
            ..DetectorConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(DetectorError::PhiThresholds { .. })
        ));
    }
}
