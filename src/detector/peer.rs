//! The verdict on one peer, from the evidence of all its links.
//!
//! ```text
//!            arrival              all links silent          suspicion outlives
//!  Unknown ──────────▶ Alive ───────────────────▶ Suspected ──────────────────▶ Dead
//!                        ▲  ◀─────────────────────────┘                          │
//!                        │        arrival (Cleared)                              │
//!                        └───────────────────────────────────────────────────────┘
//!                                      arrival (Up again)
//! ```
//!
//! A link is silent once its own detector passed the suspect threshold; the
//! peer is suspected when every link is silent. The suspicion's deadline is
//! fixed when it starts: the latest of every link's conviction time and
//! the last arrival plus the pause tolerance. A heartbeat on any link
//! before the deadline clears the suspicion.
//!
//! A maximum silence (configured, or advertised by the peer as Heartbeat 3
//! nodes advertise their deadtime) bounds every one of these times: however
//! unsure the detector still is, a peer silent that long is convicted.

use super::deadline::Deadline;
use super::phi::{Arrival, PhiAccrual};
use super::{DetectorConfig, Method};

/// Where a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Never heard from.
    Unknown,
    /// Heard from recently enough on some link.
    Alive,
    /// Silent on every link; convicted at `deadline_us` unless heard from.
    Suspected {
        /// When the suspicion started, µs.
        since_us: u64,
        /// When it becomes a conviction, µs.
        deadline_us: u64,
    },
    /// Convicted.
    Dead {
        /// When, µs.
        at_us: u64,
    },
}

/// A change in the verdict on a peer or on one of its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerTransition {
    /// First heard from, or heard from again after a conviction.
    Up,
    /// Every link silent; convicted at `deadline_us` unless heard from.
    Suspected {
        /// When the suspicion becomes a conviction, µs.
        deadline_us: u64,
    },
    /// Heard from again while suspected.
    Cleared,
    /// Convicted.
    Dead,
    /// One link convicts while the peer is alive on another.
    LinkDown {
        /// Index of the link.
        link: usize,
    },
    /// A link that was down carries heartbeats again.
    LinkUp {
        /// Index of the link.
        link: usize,
    },
}

/// The per-link evidence: one detector of the configured method.
#[derive(Debug, Clone)]
enum LinkEvidence {
    Phi(PhiAccrual),
    Deadline(Deadline),
}

impl LinkEvidence {
    fn new(method: &Method, interval_us: u64) -> Self {
        match method {
            Method::Phi(config) => Self::Phi(PhiAccrual::new(*config, interval_us)),
            Method::Deadline { warn_us, dead_us } => {
                Self::Deadline(Deadline::new(*warn_us, *dead_us))
            }
        }
    }

    fn arrival(&mut self, now_us: u64, seq: u64, interval_us: u64) -> bool {
        match self {
            Self::Phi(phi) => phi.arrival(now_us, seq, interval_us) == Arrival::Fresh,
            Self::Deadline(deadline) => deadline.arrival(now_us, seq),
        }
    }

    fn last_arrival_us(&self) -> u64 {
        match self {
            Self::Phi(phi) => phi.last_arrival_us(),
            Self::Deadline(deadline) => deadline.last_arrival_us(),
        }
    }

    fn offsets_us(&self) -> (u64, u64) {
        match self {
            Self::Phi(phi) => (phi.suspect_offset_us(), phi.convict_offset_us()),
            Self::Deadline(d) => (d.suspect_offset_us(), d.convict_offset_us()),
        }
    }

    fn reset_sequence(&mut self) {
        match self {
            Self::Phi(phi) => phi.reset_sequence(),
            Self::Deadline(deadline) => deadline.reset_sequence(),
        }
    }
}

#[derive(Debug, Clone)]
struct Link {
    evidence: LinkEvidence,
    heard: bool,
    down: bool,
}

/// The verdict on one peer. Feed it arrivals and clock checks; it answers
/// with transitions.
#[derive(Debug, Clone)]
pub struct PeerMonitor {
    links: Vec<Link>,
    pause_tolerance_us: u64,
    /// The peer's heartbeat interval: a pause of P shows as a silence of up
    /// to P plus one interval.
    interval_us: u64,
    /// Silence is counted from no earlier than this (end of a local pause).
    evidence_from_us: u64,
    /// Upper bound on the silence before conviction, if any.
    max_silence_us: Option<u64>,
    state: PeerState,
}

impl PeerMonitor {
    /// A monitor for a peer reachable over `link_count` links (at least one),
    /// expected to send every `interval_us`.
    pub fn new(config: &DetectorConfig, link_count: usize, interval_us: u64) -> Self {
        let links = (0..link_count.max(1))
            .map(|_| Link {
                evidence: LinkEvidence::new(&config.method, interval_us),
                heard: false,
                down: false,
            })
            .collect();
        Self {
            links,
            pause_tolerance_us: config.pause_tolerance_us,
            interval_us,
            evidence_from_us: 0,
            max_silence_us: config.max_silence_us,
            state: PeerState::Unknown,
        }
    }

    /// Bound the silence before conviction (the peer's advertised
    /// deadtime); `None` keeps the configured bound, if any.
    pub fn set_max_silence_us(&mut self, max_silence_us: Option<u64>) {
        self.max_silence_us = max_silence_us.or(self.max_silence_us);
        if let PeerState::Suspected { since_us, .. } = self.state {
            self.state = PeerState::Suspected {
                since_us,
                deadline_us: self.dead_at_us(),
            };
        }
    }

    /// The bound on silence in force, µs.
    pub fn max_silence_us(&self) -> Option<u64> {
        self.max_silence_us
    }

    /// The current verdict.
    pub fn state(&self) -> PeerState {
        self.state
    }

    /// Whether link `link` is down (convicts while the peer is alive).
    pub fn link_down(&self, link: usize) -> bool {
        self.links.get(link).is_some_and(|l| l.down)
    }

    /// The phi detector of link `link`, if the method is phi accrual.
    pub fn phi(&self, link: usize) -> Option<&PhiAccrual> {
        match &self.links.get(link)?.evidence {
            LinkEvidence::Phi(phi) => Some(phi),
            LinkEvidence::Deadline(_) => None,
        }
    }

    /// Heartbeat `seq` from the peer arrived on `link` at `now_us`.
    pub fn arrival(
        &mut self,
        now_us: u64,
        link: usize,
        seq: u64,
        interval_us: u64,
    ) -> Option<PeerTransition> {
        let entry = self.links.get_mut(link)?;
        if !entry.evidence.arrival(now_us, seq, interval_us) {
            return None;
        }
        entry.heard = true;
        self.interval_us = interval_us;
        let link_came_back = std::mem::take(&mut entry.down);
        match self.state {
            PeerState::Unknown | PeerState::Dead { .. } => {
                for other in &mut self.links {
                    other.down = false;
                }
                self.state = PeerState::Alive;
                Some(PeerTransition::Up)
            }
            PeerState::Suspected { .. } => {
                self.state = PeerState::Alive;
                Some(PeerTransition::Cleared)
            }
            PeerState::Alive => link_came_back.then_some(PeerTransition::LinkUp { link }),
        }
    }

    /// The peer restarted with a new incarnation: sequence numbers start
    /// over, what was learnt about its links stays.
    pub fn reset_sequence(&mut self) {
        for link in &mut self.links {
            link.evidence.reset_sequence();
        }
    }

    /// The observer was paused until `until_us`: count silence from then on
    /// and take no timing samples from the burst of queued heartbeats.
    pub fn hold_evidence_from(&mut self, until_us: u64) {
        self.evidence_from_us = self.evidence_from_us.max(until_us);
        for link in &mut self.links {
            if let LinkEvidence::Phi(phi) = &mut link.evidence {
                // Queued heartbeats drain within a few intervals.
                phi.hold_timing_until(until_us.saturating_add(500_000));
            }
        }
        if let PeerState::Suspected { since_us, .. } = self.state {
            self.state = PeerState::Suspected {
                since_us,
                deadline_us: self.dead_at_us(),
            };
        }
    }

    /// Apply the passage of time up to `now_us`: at most one transition per
    /// call, so call again until `None`.
    pub fn check(&mut self, now_us: u64) -> Option<PeerTransition> {
        match self.state {
            PeerState::Unknown | PeerState::Dead { .. } => None,
            PeerState::Alive => {
                if now_us >= self.suspect_at_us() {
                    let deadline_us = self.dead_at_us();
                    self.state = PeerState::Suspected {
                        since_us: now_us,
                        deadline_us,
                    };
                    return Some(PeerTransition::Suspected { deadline_us });
                }
                self.check_links(now_us)
            }
            PeerState::Suspected { deadline_us, .. } => {
                if now_us >= deadline_us {
                    self.state = PeerState::Dead { at_us: now_us };
                    Some(PeerTransition::Dead)
                } else {
                    None
                }
            }
        }
    }

    /// The next time at which [`check`](Self::check) may have something to
    /// say, if any.
    pub fn next_check_us(&self) -> Option<u64> {
        match self.state {
            PeerState::Unknown | PeerState::Dead { .. } => None,
            PeerState::Suspected { deadline_us, .. } => Some(deadline_us),
            PeerState::Alive => {
                let links = self
                    .links
                    .iter()
                    .filter(|l| l.heard && !l.down)
                    .map(|l| self.link_times_us(l).1)
                    .min();
                Some(links.map_or(self.suspect_at_us(), |t| t.min(self.suspect_at_us())))
            }
        }
    }

    /// Latest arrival on any link.
    pub fn last_arrival_us(&self) -> u64 {
        self.links
            .iter()
            .filter(|l| l.heard)
            .map(|l| l.evidence.last_arrival_us())
            .max()
            .unwrap_or(0)
    }

    /// (silent at, convicts at) of one link, µs.
    fn link_times_us(&self, link: &Link) -> (u64, u64) {
        if !link.heard {
            // A link that never carried a heartbeat is silent from the start.
            return (self.evidence_from_us, self.evidence_from_us);
        }
        let base = link.evidence.last_arrival_us().max(self.evidence_from_us);
        let (suspect, convict) = link.evidence.offsets_us();
        let cap = self.max_silence_us.unwrap_or(u64::MAX);
        (
            base.saturating_add(suspect.min(cap)),
            base.saturating_add(convict.min(cap)),
        )
    }

    fn suspect_at_us(&self) -> u64 {
        self.links
            .iter()
            .map(|l| self.link_times_us(l).0)
            .max()
            .unwrap_or(0)
    }

    fn dead_at_us(&self) -> u64 {
        let convict = self
            .links
            .iter()
            .map(|l| self.link_times_us(l).1)
            .max()
            .unwrap_or(0);
        let paused = self
            .last_arrival_us()
            .max(self.evidence_from_us)
            .saturating_add(self.pause_tolerance_us)
            .saturating_add(self.interval_us);
        let bound = self.max_silence_us.map_or(u64::MAX, |cap| {
            self.last_arrival_us()
                .max(self.evidence_from_us)
                .saturating_add(cap)
        });
        convict.max(paused).min(bound)
    }

    fn check_links(&mut self, now_us: u64) -> Option<PeerTransition> {
        for index in 0..self.links.len() {
            let link = &self.links[index];
            if link.heard && !link.down && now_us >= self.link_times_us(link).1 {
                self.links[index].down = true;
                return Some(PeerTransition::LinkDown { link: index });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETA: u64 = 50_000;

    fn monitor(links: usize) -> PeerMonitor {
        PeerMonitor::new(&DetectorConfig::default(), links, ETA)
    }

    /// Feed heartbeats 1..=n on the given links, one per interval.
    fn feed(m: &mut PeerMonitor, n: u64, links: &[usize]) -> u64 {
        for seq in 1..=n {
            for &link in links {
                m.arrival(seq * ETA, link, seq, ETA);
            }
            while m.check(seq * ETA).is_some() {}
        }
        n * ETA
    }

    fn run_until_dead(m: &mut PeerMonitor, from: u64) -> (Vec<PeerTransition>, u64) {
        let mut seen = Vec::new();
        let mut now = from;
        while !matches!(m.state(), PeerState::Dead { .. }) {
            now += 1_000;
            while let Some(t) = m.check(now) {
                seen.push(t);
            }
            assert!(now < from + 60_000_000, "never convicted");
        }
        (seen, now - from)
    }

    #[test]
    fn silent_peer_is_suspected_then_convicted() {
        let mut m = monitor(1);
        let last = feed(&mut m, 3_000, &[0]);
        let (seen, after) = run_until_dead(&mut m, last);
        assert!(matches!(seen[0], PeerTransition::Suspected { .. }));
        assert_eq!(seen.last(), Some(&PeerTransition::Dead));
        assert!(
            after <= 400_000,
            "convicted {after} µs after the last heartbeat"
        );
    }

    #[test]
    fn heartbeat_during_suspicion_clears_it() {
        let mut m = monitor(1);
        let last = feed(&mut m, 3_000, &[0]);
        let mut now = last;
        while !matches!(m.state(), PeerState::Suspected { .. }) {
            now += 1_000;
            m.check(now);
        }
        assert_eq!(m.arrival(now, 0, 3_001, ETA), Some(PeerTransition::Cleared));
        assert_eq!(m.state(), PeerState::Alive);
    }

    #[test]
    fn peer_alive_on_one_link_is_not_suspected_and_the_dead_link_is_reported() {
        let mut m = monitor(2);
        feed(&mut m, 3_000, &[0, 1]);
        let mut seen = Vec::new();
        for seq in 3_001..4_000 {
            m.arrival(seq * ETA, 0, seq, ETA);
            while let Some(t) = m.check(seq * ETA + 10) {
                seen.push(t);
            }
        }
        assert_eq!(seen, vec![PeerTransition::LinkDown { link: 1 }]);
        assert_eq!(m.state(), PeerState::Alive);
        assert_eq!(
            m.arrival(4_000 * ETA, 1, 4_000, ETA),
            Some(PeerTransition::LinkUp { link: 1 })
        );
    }

    #[test]
    fn pause_tolerance_is_a_floor_on_the_silence_before_conviction() {
        let config = DetectorConfig {
            pause_tolerance_us: 2_000_000,
            ..DetectorConfig::default()
        };
        let mut m = PeerMonitor::new(&config, 1, ETA);
        let last = feed(&mut m, 3_000, &[0]);
        // A 1.5 s stall: suspected, never convicted.
        for now in (last..last + 1_500_000).step_by(10_000) {
            while let Some(t) = m.check(now) {
                assert_ne!(t, PeerTransition::Dead);
            }
        }
        assert!(matches!(m.state(), PeerState::Suspected { .. }));
        assert_eq!(
            m.arrival(last + 1_500_000, 0, 3_001, ETA),
            Some(PeerTransition::Cleared)
        );
        // A longer one is convicted, once the tolerance has passed.
        let (_, after) = run_until_dead(&mut m, last + 1_500_000);
        assert!(
            (2_000_000..2_100_000).contains(&after.saturating_sub(ETA)),
            "after {after}"
        );
    }

    #[test]
    fn observer_pause_moves_the_deadline_past_fresh_evidence() {
        let mut m = monitor(1);
        let last = feed(&mut m, 3_000, &[0]);
        // The observer was stopped 5 s; nobody may be convicted for it.
        m.hold_evidence_from(last + 5_000_000);
        for now in (last..last + 5_200_000).step_by(10_000) {
            while let Some(t) = m.check(now) {
                assert!(matches!(t, PeerTransition::Suspected { .. }), "{t:?}");
            }
        }
        assert_ne!(
            m.state(),
            PeerState::Dead {
                at_us: last + 5_200_000
            }
        );
        assert!(!matches!(m.state(), PeerState::Dead { .. }));
    }

    #[test]
    fn deadline_method_convicts_at_dead_time() {
        let config = DetectorConfig {
            method: Method::Deadline {
                warn_us: 500_000,
                dead_us: 1_000_000,
            },
            pause_tolerance_us: 0,
            ..DetectorConfig::default()
        };
        let mut m = PeerMonitor::new(&config, 1, ETA);
        let last = feed(&mut m, 10, &[0]);
        let (seen, after) = run_until_dead(&mut m, last);
        assert_eq!(
            seen,
            vec![
                PeerTransition::Suspected {
                    deadline_us: last + 1_000_000
                },
                PeerTransition::Dead
            ]
        );
        assert_eq!(after, 1_000_000);
    }

    #[test]
    fn max_silence_convicts_a_peer_the_detector_is_still_unsure_of() {
        // Ten heartbeats are too few for phi to be bold: alone it would
        // wait long. The peer's advertised 600 ms bound convicts at 600 ms.
        let mut m = monitor(2);
        let last = feed(&mut m, 10, &[0, 1]);
        let mut unbounded = m.clone();
        m.set_max_silence_us(Some(600_000));
        let (seen, after) = run_until_dead(&mut m, last);
        assert_eq!(after, 600_000, "{seen:?}");
        let (_, unsure) = run_until_dead(&mut unbounded, last);
        assert!(unsure > 600_000, "phi alone: {unsure} µs");
        // A bound above what phi needs changes nothing.
        let mut trained = monitor(1);
        let last = feed(&mut trained, 3_000, &[0]);
        trained.set_max_silence_us(Some(60_000_000));
        let (_, after) = run_until_dead(&mut trained, last);
        assert!(after <= 400_000, "{after}");
    }

    #[test]
    fn convicted_peer_heard_again_is_up() {
        let mut m = monitor(1);
        let last = feed(&mut m, 100, &[0]);
        run_until_dead(&mut m, last);
        assert_eq!(
            m.arrival(last + 10_000_000, 0, 500, ETA),
            Some(PeerTransition::Up)
        );
    }
}
