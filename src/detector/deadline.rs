//! The plain deadline detector: a link is silent `warn_us` after its last
//! heartbeat and convicted `dead_us` after it, whatever the network does.
//! This is Heartbeat's `warntime` / `deadtime`, kept for sites that want
//! exactly that behaviour and as the baseline the benchmark compares with.

/// A deadline detector for one link.
#[derive(Debug, Clone)]
pub struct Deadline {
    warn_us: u64,
    dead_us: u64,
    last_seq: Option<u64>,
    last_arrival_us: u64,
}

impl Deadline {
    /// Silent after `warn_us`, convicted after `dead_us` (≥ `warn_us`).
    pub fn new(warn_us: u64, dead_us: u64) -> Self {
        Self {
            warn_us: warn_us.min(dead_us),
            dead_us,
            last_seq: None,
            last_arrival_us: 0,
        }
    }

    /// Record heartbeat `seq` arriving at `now_us`; false if it is older than
    /// one already seen.
    pub fn arrival(&mut self, now_us: u64, seq: u64) -> bool {
        if self.last_seq.is_some_and(|last| seq <= last) {
            return false;
        }
        self.last_seq = Some(seq);
        self.last_arrival_us = now_us;
        true
    }

    /// Forget the sequence number (the sender restarted).
    pub fn reset_sequence(&mut self) {
        self.last_seq = None;
    }

    /// When the last fresh heartbeat arrived, µs.
    pub fn last_arrival_us(&self) -> u64 {
        self.last_arrival_us
    }

    /// Silence after which the link counts as silent, µs.
    pub fn suspect_offset_us(&self) -> u64 {
        self.warn_us
    }

    /// Silence after which the link convicts, µs.
    pub fn convict_offset_us(&self) -> u64 {
        self.dead_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_offsets_are_the_configured_times() {
        let mut d = Deadline::new(3_000_000, 6_000_000);
        assert!(d.arrival(10, 1));
        assert!(!d.arrival(20, 1));
        assert_eq!(d.last_arrival_us(), 10);
        assert_eq!(d.suspect_offset_us(), 3_000_000);
        assert_eq!(d.convict_offset_us(), 6_000_000);
    }

    #[test]
    fn warn_time_never_exceeds_dead_time() {
        assert_eq!(Deadline::new(9, 5).suspect_offset_us(), 5);
    }
}
