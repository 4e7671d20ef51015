//! Per-link health: a link is up while authentic frames keep arriving on it.

/// One link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkHealth {
    last_heard_ms: Option<u64>,
    timeout_ms: u64,
}

impl LinkHealth {
    /// A link never heard from, down until its first frame.
    pub fn new(timeout_ms: u64) -> Self {
        Self {
            last_heard_ms: None,
            timeout_ms,
        }
    }

    /// An authentic frame arrived at `now_ms`.
    pub fn heard(&mut self, now_ms: u64) {
        self.last_heard_ms = Some(now_ms);
    }

    /// Whether the link is up at `now_ms`.
    pub fn is_up(&self, now_ms: u64) -> bool {
        self.last_heard_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < self.timeout_ms)
    }

    /// Milliseconds since the last frame, if any arrived.
    pub fn silent_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.last_heard_ms.map(|t| now_ms.saturating_sub(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_is_up_until_silent_for_the_timeout() {
        let mut l = LinkHealth::new(1000);
        assert!(!l.is_up(0));
        l.heard(100);
        assert!(l.is_up(1099));
        assert!(!l.is_up(1100));
        assert_eq!(l.silent_for_ms(1100), Some(1000));
    }
}
