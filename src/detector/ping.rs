//! Ping-node health: can this host reach the outside world?
//!
//! Ping nodes (a gateway, a switch, an outside host) are probed every
//! `interval_us`; a node is reachable while its last reply is younger than
//! `dead_us` (Heartbeat's `deadping`). The host's [`Health`] is the count of
//! reachable ping nodes, carried in every heartbeat, so each host knows how
//! well its peers are connected: a host that cannot reach its ping nodes
//! while a peer can is the one that should move its VMs away.
//!
//! Sans-io: [`PingMonitor::tick`] says which probes to send, the runtime
//! sends them (ICMP echo, or a UDP/TCP probe) and reports replies.

/// The connectivity of one host: how many of its ping nodes it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Health {
    /// Ping nodes that answer.
    pub reachable: u8,
    /// Ping nodes configured.
    pub configured: u8,
}

impl Health {
    /// Whether every configured ping node answers (true without ping nodes).
    pub fn is_full(&self) -> bool {
        self.reachable >= self.configured
    }

    /// Whether at least one ping node answers, or none is configured: the
    /// host has an uplink.
    pub fn has_uplink(&self) -> bool {
        self.configured == 0 || self.reachable > 0
    }

    /// Compare two hosts' health: more reachable ping nodes is better (hosts
    /// of one cluster share the ping-node list).
    pub fn better_than(&self, other: &Health) -> bool {
        self.reachable > other.reachable
    }
}

/// Ping-probe timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingConfig {
    /// Probe each ping node this often, µs.
    pub interval_us: u64,
    /// A ping node is unreachable when no reply came for this long, µs.
    pub dead_us: u64,
}

impl Default for PingConfig {
    fn default() -> Self {
        Self {
            interval_us: 200_000,
            dead_us: 1_000_000,
        }
    }
}

/// A probe to send: ping node `target`, probe number `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Index of the ping node.
    pub target: usize,
    /// Probe number, echoed by the reply.
    pub seq: u16,
}

#[derive(Debug, Clone)]
struct Target {
    last_reply_us: Option<u64>,
    reachable: bool,
    next_seq: u16,
    /// Sequence numbers of the last few probes (replies to others are stale).
    outstanding: [Option<(u16, u64)>; 8],
    rtt_us: Option<u64>,
}

/// Tracks the reachability of the ping nodes.
#[derive(Debug, Clone)]
pub struct PingMonitor {
    config: PingConfig,
    targets: Vec<Target>,
    next_probe_us: u64,
    started_us: u64,
}

impl PingMonitor {
    /// Monitor `count` ping nodes (at most 255) from `now_us`. Until the first
    /// `dead_us` has passed, an unanswered node counts as reachable, so a
    /// starting host does not report itself cut off.
    pub fn new(config: PingConfig, count: usize, now_us: u64) -> Self {
        let targets = (0..count.min(255))
            .map(|_| Target {
                last_reply_us: None,
                reachable: true,
                next_seq: 0,
                outstanding: [None; 8],
                rtt_us: None,
            })
            .collect();
        Self {
            config,
            targets,
            next_probe_us: now_us,
            started_us: now_us,
        }
    }

    /// The host's current health.
    pub fn health(&self) -> Health {
        Health {
            reachable: u8::try_from(self.targets.iter().filter(|t| t.reachable).count())
                .unwrap_or(u8::MAX),
            configured: u8::try_from(self.targets.len()).unwrap_or(u8::MAX),
        }
    }

    /// Whether ping node `target` answers.
    pub fn reachable(&self, target: usize) -> bool {
        self.targets.get(target).is_some_and(|t| t.reachable)
    }

    /// The last round-trip time to ping node `target`, µs.
    pub fn rtt_us(&self, target: usize) -> Option<u64> {
        self.targets.get(target)?.rtt_us
    }

    /// When to call [`tick`](Self::tick) next.
    pub fn next_tick_us(&self) -> Option<u64> {
        (!self.targets.is_empty()).then_some(self.next_probe_us)
    }

    /// Advance to `now_us`: the probes to send now (appended to `probes`),
    /// and whether the health changed.
    pub fn tick(&mut self, now_us: u64, probes: &mut Vec<Probe>) -> Option<Health> {
        let before = self.health();
        let grace_over = now_us >= self.started_us.saturating_add(self.config.dead_us);
        for target in &mut self.targets {
            let fresh = target
                .last_reply_us
                .is_some_and(|t| now_us < t.saturating_add(self.config.dead_us));
            target.reachable = fresh || (!grace_over && target.last_reply_us.is_none());
        }
        if now_us >= self.next_probe_us {
            for (index, target) in self.targets.iter_mut().enumerate() {
                let seq = target.next_seq;
                target.next_seq = seq.wrapping_add(1);
                target.outstanding[usize::from(seq) % 8] = Some((seq, now_us));
                probes.push(Probe { target: index, seq });
            }
            self.next_probe_us = now_us.saturating_add(self.config.interval_us);
        }
        let after = self.health();
        (after != before).then_some(after)
    }

    /// A reply to probe `seq` of ping node `target` arrived at `now_us`;
    /// returns the new health if it changed. Replies to unknown probes are
    /// ignored.
    pub fn reply(&mut self, now_us: u64, target: usize, seq: u16) -> Option<Health> {
        let before = self.health();
        let entry = self.targets.get_mut(target)?;
        let slot = &mut entry.outstanding[usize::from(seq) % 8];
        let (probe_seq, sent_us) = (*slot)?;
        if probe_seq != seq {
            return None;
        }
        *slot = None;
        entry.rtt_us = Some(now_us.saturating_sub(sent_us));
        entry.last_reply_us = Some(now_us);
        entry.reachable = true;
        let after = self.health();
        (after != before).then_some(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_all(m: &mut PingMonitor, now: u64, probes: &[Probe]) {
        for p in probes {
            m.reply(now + 300, p.target, p.seq);
        }
    }

    #[test]
    fn unanswered_ping_node_becomes_unreachable_after_dead_time() {
        let mut m = PingMonitor::new(PingConfig::default(), 2, 0);
        let mut probes = Vec::new();
        let mut changes = Vec::new();
        for step in 0..30_u64 {
            let now = step * 100_000;
            probes.clear();
            if let Some(h) = m.tick(now, &mut probes) {
                changes.push((now, h));
            }
            // Only ping node 0 answers.
            for p in probes.iter().filter(|p| p.target == 0) {
                m.reply(now + 300, p.target, p.seq);
            }
        }
        assert_eq!(
            changes,
            vec![(
                1_000_000,
                Health {
                    reachable: 1,
                    configured: 2
                }
            )]
        );
        assert!(m.reachable(0));
        assert!(!m.reachable(1));
        assert_eq!(m.rtt_us(0), Some(300));
    }

    #[test]
    fn reply_brings_a_node_back() {
        let mut m = PingMonitor::new(PingConfig::default(), 1, 0);
        let mut probes = Vec::new();
        m.tick(0, &mut probes);
        m.tick(2_000_000, &mut probes);
        assert!(!m.health().has_uplink());
        let last = *probes.last().unwrap();
        assert_eq!(
            m.reply(2_000_100, last.target, last.seq),
            Some(Health {
                reachable: 1,
                configured: 1
            })
        );
        assert_eq!(
            m.reply(2_000_200, last.target, last.seq),
            None,
            "answered once"
        );
    }

    #[test]
    fn reply_to_a_probe_never_sent_is_ignored() {
        let mut m = PingMonitor::new(PingConfig::default(), 1, 0);
        let mut probes = Vec::new();
        m.tick(0, &mut probes);
        m.tick(2_000_000, &mut probes);
        assert_eq!(m.reply(2_000_100, 0, 77), None);
        assert_eq!(m.reply(2_000_100, 5, 0), None);
        assert!(!m.reachable(0));
        answer_all(&mut m, 2_000_000, &probes);
        assert!(m.reachable(0));
    }

    #[test]
    fn no_ping_nodes_means_full_health() {
        let m = PingMonitor::new(PingConfig::default(), 0, 0);
        assert!(m.health().is_full());
        assert!(m.health().has_uplink());
        assert_eq!(m.next_tick_us(), None);
    }
}
