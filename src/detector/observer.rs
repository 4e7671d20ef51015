//! The observer's own clock: a node that was paused (SIGSTOP, a VM freeze,
//! swap storm) sees every peer silent for the length of its pause, and must
//! not convict anyone for it.
//!
//! The core tells the guard when it expects to be woken next; any input
//! that comes later than that by more than the threshold reveals a local
//! pause. The detector then withholds convictions until there is fresh
//! evidence: silence is counted from the end of the pause (anchors A4: this
//! costs nothing unless a peer died during the pause itself, which then
//! takes one detection time after the pause to convict).

/// A pause of the observer itself, `from_us` to `to_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPause {
    /// When the observer should have run.
    pub from_us: u64,
    /// When it ran.
    pub to_us: u64,
}

impl LocalPause {
    /// Length of the pause, µs.
    pub fn duration_us(&self) -> u64 {
        self.to_us - self.from_us
    }
}

/// Detects the observer's own pauses from late wake-ups.
#[derive(Debug, Clone)]
pub struct ObserverClock {
    threshold_us: u64,
    expected_wake_us: Option<u64>,
}

impl ObserverClock {
    /// A wake-up later than expected by more than `threshold_us` is a pause.
    pub fn new(threshold_us: u64) -> Self {
        Self {
            threshold_us,
            expected_wake_us: None,
        }
    }

    /// The core asked to be woken at `at_us`.
    pub fn expect_wake(&mut self, at_us: u64) {
        self.expected_wake_us = Some(at_us);
    }

    /// The core runs at `now_us`: was it paused before this?
    pub fn observe(&mut self, now_us: u64) -> Option<LocalPause> {
        let expected = self.expected_wake_us?;
        if now_us > expected.saturating_add(self.threshold_us) {
            // Report each pause once.
            self.expected_wake_us = Some(now_us);
            Some(LocalPause {
                from_us: expected,
                to_us: now_us,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_wake_up_is_a_pause_reported_once() {
        let mut clock = ObserverClock::new(100_000);
        assert_eq!(clock.observe(5), None, "nothing expected yet");
        clock.expect_wake(1_000_000);
        assert_eq!(clock.observe(1_050_000), None, "late within the threshold");
        let pause = clock.observe(6_000_000).unwrap();
        assert_eq!(pause.from_us, 1_000_000);
        assert_eq!(pause.duration_us(), 5_000_000);
        assert_eq!(clock.observe(6_000_001), None);
    }
}
