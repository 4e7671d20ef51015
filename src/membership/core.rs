//! The membership state machine (see the module docs of
//! [`membership`](super)).

use crate::detector::{DetectorConfig, Health, ObserverClock, PeerMonitor, PeerTransition};

use super::quorum::{self, TieContext, Voter};
use super::types::{
    Event, Heartbeat, Incarnation, MemberState, NodeId, Output, Quorum, QuorumReason,
};
use super::MembershipError;

/// One configured node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Its id (1..=65535), the same on every node.
    pub id: NodeId,
    /// Its name (Heartbeat: `uname -n`).
    pub name: String,
    /// Its votes for quorum (usually 1).
    pub votes: u32,
}

/// Whether a convicted node must be fenced before its resources move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// No fencing: resources may be recovered as soon as the node is
    /// convicted and this partition is quorate. Safe only where a convicted
    /// node is sure to have stopped (it self-fences, or storage refuses it).
    Disabled,
    /// Every convicted node is fenced, and fencing must confirm
    /// ([`Membership::fence_result`]) before its resources move.
    Required,
}

/// Membership settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipConfig {
    /// Every node of the cluster, this one included.
    pub nodes: Vec<NodeSpec>,
    /// This node.
    pub local: NodeId,
    /// Number of links heartbeats travel on.
    pub link_count: usize,
    /// Heartbeat interval, ms.
    pub interval_ms: u64,
    /// Failure detection.
    pub detector: DetectorConfig,
    /// Nodes not heard from this long after start are declared dead, µs
    /// (Heartbeat's `initdead`).
    pub initial_wait_us: u64,
    /// Fencing policy.
    pub fencing: Fencing,
    /// In a tie this node would lose by node id, wait this long before
    /// fencing the other side (the winner fences first), µs.
    pub tie_fence_delay_us: u64,
    /// Retry a failed fence after this long, µs.
    pub fence_retry_us: u64,
}

impl MembershipConfig {
    /// Defaults around the given nodes: 50 ms heartbeats on one link, the
    /// default detector, 10 s initial wait, fencing required.
    pub fn new(nodes: Vec<NodeSpec>, local: NodeId) -> Self {
        Self {
            nodes,
            local,
            link_count: 1,
            interval_ms: 50,
            detector: DetectorConfig::default(),
            initial_wait_us: 10_000_000,
            fencing: Fencing::Required,
            tie_fence_delay_us: 5_000_000,
            fence_retry_us: 2_000_000,
        }
    }

    /// Check that the configuration can work.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.nodes.is_empty() {
            return Err(MembershipError::NoNodes);
        }
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for node in &self.nodes {
            if node.id.0 == 0 {
                return Err(MembershipError::ZeroNodeId {
                    name: node.name.clone(),
                });
            }
            if !ids.insert(node.id) {
                return Err(MembershipError::Duplicate {
                    what: "node id",
                    value: node.id.0.to_string(),
                });
            }
            if !names.insert(node.name.as_str()) {
                return Err(MembershipError::Duplicate {
                    what: "node name",
                    value: node.name.clone(),
                });
            }
        }
        if !ids.contains(&self.local) {
            return Err(MembershipError::LocalNotConfigured { local: self.local });
        }
        if self.nodes.iter().all(|n| n.votes == 0) {
            return Err(MembershipError::NoVotes);
        }
        if self.interval_ms == 0 || self.interval_ms > u64::from(u16::MAX) {
            return Err(MembershipError::Interval {
                interval_ms: self.interval_ms,
            });
        }
        self.detector.validate()?;
        Ok(())
    }
}

/// A member as this node sees it (a snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its votes.
    pub votes: u32,
    /// Its incarnation (0: never seen).
    pub incarnation: Incarnation,
    /// Its state.
    pub state: MemberState,
    /// Its last advertised health (this node's own for itself).
    pub health: Option<Health>,
    /// Whether this is the local node.
    pub local: bool,
    /// Links currently down (heartbeats flow on another).
    pub links_down: Vec<usize>,
}

/// Heartbeats the core dropped, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MembershipStats {
    /// From an older incarnation than the one known.
    pub stale_incarnation: u64,
    /// From a node not in the configuration.
    pub unknown_node: u64,
    /// This node's own heartbeats, looped back (multicast, broadcast).
    pub own_echo: u64,
    /// From a member that left, same incarnation.
    pub after_leave: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// Nothing to fence.
    NotNeeded,
    /// Fence this incarnation; requested or not yet.
    Pending {
        incarnation: Incarnation,
        requested: bool,
        not_before_us: u64,
    },
    /// Fenced.
    Confirmed { incarnation: Incarnation },
}

#[derive(Debug, Clone)]
struct Peer {
    spec: NodeSpec,
    monitor: PeerMonitor,
    incarnation: Incarnation,
    state: MemberState,
    health: Option<Health>,
    fence: Fence,
    /// The incarnation whose death was reported (for `rejoined`).
    dead_incarnation: Option<Incarnation>,
    recovery_announced: bool,
}

/// The membership state machine of one node.
#[derive(Debug, Clone)]
pub struct Membership {
    config: MembershipConfig,
    local_spec: NodeSpec,
    incarnation: Incarnation,
    interval_us: u64,
    seq: u64,
    next_send_us: u64,
    started_us: u64,
    peers: Vec<Peer>,
    local_health: Health,
    view_epoch: u64,
    view_members: Vec<NodeId>,
    view_digest: u64,
    quorum: Quorum,
    tie_health: Option<Health>,
    tie_since_us: Option<u64>,
    seen_full_cluster: bool,
    initial_wait_done: bool,
    announced: bool,
    leaving: bool,
    clock: ObserverClock,
    stats: MembershipStats,
}

impl Membership {
    /// The core of node `config.local` in its `incarnation`, started at
    /// `now_us`. Nothing is sent until the first [`tick`](Self::tick).
    pub fn new(
        config: MembershipConfig,
        incarnation: Incarnation,
        now_us: u64,
    ) -> Result<Self, MembershipError> {
        config.validate()?;
        let interval_us = config.interval_ms * 1_000;
        let mut specs = config.nodes.clone();
        specs.sort_by_key(|n| n.id);
        let local_spec = specs.iter().find(|n| n.id == config.local).cloned().ok_or(
            MembershipError::LocalNotConfigured {
                local: config.local,
            },
        )?;
        let peers = specs
            .into_iter()
            .filter(|n| n.id != config.local)
            .map(|spec| Peer {
                spec,
                monitor: PeerMonitor::new(&config.detector, config.link_count, interval_us),
                incarnation: Incarnation(0),
                state: MemberState::Unknown,
                health: None,
                fence: Fence::NotNeeded,
                dead_incarnation: None,
                recovery_announced: false,
            })
            .collect();
        let clock = ObserverClock::new(config.detector.observer_pause_threshold_us);
        let mut core = Self {
            local_spec,
            incarnation,
            interval_us,
            seq: 0,
            next_send_us: now_us,
            started_us: now_us,
            peers,
            local_health: Health::default(),
            view_epoch: 0,
            view_members: Vec::new(),
            view_digest: 0,
            quorum: Quorum {
                quorate: false,
                votes: 0,
                expected_votes: 0,
                reason: QuorumReason::Minority,
            },
            tie_health: None,
            tie_since_us: None,
            seen_full_cluster: false,
            initial_wait_done: false,
            announced: false,
            leaving: false,
            clock,
            stats: MembershipStats::default(),
            config,
        };
        core.seen_full_cluster = core.peers.is_empty();
        core.view_members = vec![core.local_spec.id];
        core.view_digest = core.digest();
        core.quorum = core.decide_quorum(now_us);
        Ok(core)
    }

    /// This node's id.
    pub fn local(&self) -> NodeId {
        self.local_spec.id
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The current quorum.
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    /// The view: its epoch and members (ids, this node included).
    pub fn view(&self) -> (u64, &[NodeId]) {
        (self.view_epoch, &self.view_members)
    }

    /// Heartbeats dropped, by reason.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    /// This node's own uplink health.
    pub fn local_health(&self) -> Health {
        self.local_health
    }

    /// Every configured node as seen from here, by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut all: Vec<MemberInfo> = self
            .peers
            .iter()
            .map(|p| MemberInfo {
                id: p.spec.id,
                name: p.spec.name.clone(),
                votes: p.spec.votes,
                incarnation: p.incarnation,
                state: p.state,
                health: p.health,
                local: false,
                links_down: (0..self.config.link_count)
                    .filter(|l| p.state == MemberState::Alive && p.monitor.link_down(*l))
                    .collect(),
            })
            .collect();
        all.push(MemberInfo {
            id: self.local_spec.id,
            name: self.local_spec.name.clone(),
            votes: self.local_spec.votes,
            incarnation: self.incarnation,
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            health: Some(self.local_health),
            local: true,
            links_down: Vec::new(),
        });
        all.sort_by_key(|m| m.id);
        all
    }

    /// The detector of a peer (for inspection and benchmarks).
    pub fn peer_monitor(&self, node: NodeId) -> Option<&PeerMonitor> {
        self.peer_index(node).map(|i| &self.peers[i].monitor)
    }

    /// Time passes: send the heartbeat when due, judge the peers.
    pub fn tick(&mut self, now_us: u64, out: &mut Vec<Output>) {
        self.observe_clock(now_us, out);
        if !self.announced {
            self.announced = true;
            out.push(Output::Event(Event::ViewChanged {
                epoch: self.view_epoch,
                digest: self.view_digest,
                members: self.view_members.clone(),
            }));
            out.push(Output::Event(Event::QuorumChanged(self.quorum)));
        }
        if now_us >= self.next_send_us && !self.leaving {
            out.push(Output::Send(self.next_heartbeat(now_us)));
            self.next_send_us = self.next_send_us.saturating_add(self.interval_us);
            if self.next_send_us <= now_us {
                // Fell behind (a pause): do not burst, resume the rhythm.
                self.next_send_us = now_us.saturating_add(self.interval_us);
            }
        }
        let mut changed = false;
        if !self.initial_wait_done
            && now_us >= self.started_us.saturating_add(self.config.initial_wait_us)
        {
            self.initial_wait_done = true;
            for index in 0..self.peers.len() {
                if self.peers[index].state == MemberState::Unknown {
                    self.peers[index].state = MemberState::Dead;
                    self.declare_dead(index, now_us, out);
                    changed = true;
                }
            }
        }
        for index in 0..self.peers.len() {
            while let Some(transition) = self.peers[index].monitor.check(now_us) {
                changed |= self.apply(index, transition, now_us, out);
            }
        }
        self.settle(changed, now_us, out);
    }

    /// A verified heartbeat arrived on `link` at `now_us`.
    pub fn heartbeat(&mut self, now_us: u64, link: usize, hb: &Heartbeat, out: &mut Vec<Output>) {
        self.observe_clock(now_us, out);
        if hb.from == self.local_spec.id {
            self.stats.own_echo += 1;
            return;
        }
        let Some(index) = self.peer_index(hb.from) else {
            self.stats.unknown_node += 1;
            return;
        };
        let mut changed = false;
        let peer = &mut self.peers[index];
        if hb.incarnation < peer.incarnation {
            self.stats.stale_incarnation += 1;
            return;
        }
        if hb.incarnation > peer.incarnation {
            let previous = peer.incarnation;
            peer.incarnation = hb.incarnation;
            peer.monitor.reset_sequence();
            if previous.0 != 0 {
                out.push(Output::Event(Event::MemberRestarted {
                    node: hb.from,
                    previous,
                    incarnation: hb.incarnation,
                }));
                changed = true; // the view digest covers incarnations
            }
            if peer.state == MemberState::Left {
                peer.state = MemberState::Unknown;
            }
        } else if peer.state == MemberState::Left {
            self.stats.after_leave += 1;
            return;
        }
        if hb.leaving {
            let was_in_view = peer.state.in_view();
            peer.state = MemberState::Left;
            peer.fence = Fence::NotNeeded;
            peer.recovery_announced = false;
            out.push(Output::Event(Event::MemberLeft {
                node: hb.from,
                incarnation: hb.incarnation,
            }));
            self.settle(changed || was_in_view, now_us, out);
            return;
        }
        if peer.health != Some(hb.health) {
            peer.health = Some(hb.health);
            out.push(Output::Event(Event::HealthChanged {
                node: hb.from,
                health: hb.health,
            }));
            changed = true;
        }
        let interval_us = u64::from(hb.interval_ms.max(1)) * 1_000;
        peer.monitor
            .set_max_silence_us(hb.deadtime_ms.map(|ms| ms.saturating_mul(1_000)));
        if let Some(transition) = peer.monitor.arrival(now_us, link, hb.seq, interval_us) {
            changed |= self.apply(index, transition, now_us, out);
        }
        self.settle(changed, now_us, out);
    }

    /// This node's uplink health changed (from the ping monitor).
    pub fn set_local_health(&mut self, now_us: u64, health: Health, out: &mut Vec<Output>) {
        self.observe_clock(now_us, out);
        if health != self.local_health {
            self.local_health = health;
            out.push(Output::Event(Event::HealthChanged {
                node: self.local_spec.id,
                health,
            }));
            self.settle(true, now_us, out);
        }
    }

    /// The outcome of a [`Event::FenceRequested`]: `confirmed` if the node's
    /// `incarnation` is known to be off.
    pub fn fence_result(
        &mut self,
        now_us: u64,
        node: NodeId,
        incarnation: Incarnation,
        confirmed: bool,
        out: &mut Vec<Output>,
    ) {
        self.observe_clock(now_us, out);
        let Some(index) = self.peer_index(node) else {
            return;
        };
        let retry = self.config.fence_retry_us;
        let peer = &mut self.peers[index];
        let Fence::Pending {
            incarnation: pending,
            requested: true,
            ..
        } = peer.fence
        else {
            return;
        };
        if pending != incarnation {
            return;
        }
        if confirmed {
            peer.fence = Fence::Confirmed { incarnation };
        } else {
            peer.fence = Fence::Pending {
                incarnation,
                requested: false,
                not_before_us: now_us.saturating_add(retry),
            };
            out.push(Output::Event(Event::FenceFailed { node, incarnation }));
        }
        self.settle(true, now_us, out);
    }

    /// Leave the cluster cleanly: the heartbeat to send (call a few times
    /// so that one gets through); peers mark this node `Left` without
    /// fencing it. Stop heartbeating afterwards.
    pub fn leave(&mut self, now_us: u64) -> Heartbeat {
        self.leaving = true;
        self.next_heartbeat(now_us)
    }

    fn next_heartbeat(&mut self, now_us: u64) -> Heartbeat {
        self.seq += 1;
        Heartbeat {
            from: self.local_spec.id,
            incarnation: self.incarnation,
            seq: self.seq,
            sent_at_us: now_us,
            interval_ms: u16::try_from(self.config.interval_ms).unwrap_or(u16::MAX),
            view_epoch: self.view_epoch,
            view_digest: self.view_digest,
            health: self.local_health,
            quorate: self.quorum.quorate,
            leaving: self.leaving,
            deadtime_ms: None,
        }
    }

    fn peer_index(&self, node: NodeId) -> Option<usize> {
        self.peers.binary_search_by_key(&node, |p| p.spec.id).ok()
    }

    fn observe_clock(&mut self, now_us: u64, out: &mut Vec<Output>) {
        if let Some(pause) = self.clock.observe(now_us) {
            for peer in &mut self.peers {
                peer.monitor.hold_evidence_from(now_us);
            }
            out.push(Output::Event(Event::LocalPause {
                duration_us: pause.duration_us(),
            }));
        }
    }

    /// Apply a detector transition; true if the view may have changed.
    fn apply(
        &mut self,
        index: usize,
        transition: PeerTransition,
        now_us: u64,
        out: &mut Vec<Output>,
    ) -> bool {
        let peer = &mut self.peers[index];
        let node = peer.spec.id;
        if peer.state == MemberState::Left {
            return false;
        }
        match transition {
            PeerTransition::Up => {
                let rejoined = peer.dead_incarnation == Some(peer.incarnation);
                peer.state = MemberState::Alive;
                peer.recovery_announced = false;
                if let Fence::Pending {
                    requested: false, ..
                } = peer.fence
                {
                    // Heard again before anyone fenced it: nothing to fence.
                    peer.fence = Fence::NotNeeded;
                }
                out.push(Output::Event(Event::MemberUp {
                    node,
                    incarnation: peer.incarnation,
                    rejoined,
                }));
                true
            }
            PeerTransition::Suspected { deadline_us } => {
                peer.state = MemberState::Suspected;
                out.push(Output::Event(Event::MemberSuspected { node, deadline_us }));
                false
            }
            PeerTransition::Cleared => {
                peer.state = MemberState::Alive;
                out.push(Output::Event(Event::MemberCleared { node }));
                false
            }
            PeerTransition::Dead => {
                peer.state = MemberState::Dead;
                self.declare_dead(index, now_us, out);
                true
            }
            PeerTransition::LinkDown { link } => {
                out.push(Output::Event(Event::LinkDown { node, link }));
                false
            }
            PeerTransition::LinkUp { link } => {
                out.push(Output::Event(Event::LinkUp { node, link }));
                false
            }
        }
    }

    fn declare_dead(&mut self, index: usize, now_us: u64, out: &mut Vec<Output>) {
        let fencing = self.config.fencing;
        let peer = &mut self.peers[index];
        peer.dead_incarnation = Some(peer.incarnation);
        peer.recovery_announced = false;
        peer.fence = match fencing {
            Fencing::Disabled => Fence::NotNeeded,
            Fencing::Required => Fence::Pending {
                incarnation: peer.incarnation,
                requested: false,
                not_before_us: now_us,
            },
        };
        out.push(Output::Event(Event::MemberDead {
            node: peer.spec.id,
            incarnation: peer.incarnation,
        }));
    }

    /// After any change: view, quorum, fencing, recovery, next wake-up.
    fn settle(&mut self, changed: bool, now_us: u64, out: &mut Vec<Output>) {
        if changed {
            let members: Vec<NodeId> = std::iter::once(self.local_spec.id)
                .chain(
                    self.peers
                        .iter()
                        .filter(|p| p.state.in_view())
                        .map(|p| p.spec.id),
                )
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let digest = {
                let before = std::mem::replace(&mut self.view_members, members);
                let digest = self.digest();
                if before == self.view_members && digest == self.view_digest {
                    None
                } else {
                    Some(digest)
                }
            };
            if let Some(digest) = digest {
                self.view_epoch += 1;
                self.view_digest = digest;
                if self.view_members.len() == self.peers.len() + 1 {
                    self.seen_full_cluster = true;
                }
                if self.announced {
                    out.push(Output::Event(Event::ViewChanged {
                        epoch: self.view_epoch,
                        digest,
                        members: self.view_members.clone(),
                    }));
                }
            }
        }
        let quorum = self.decide_quorum(now_us);
        if quorum != self.quorum {
            self.quorum = quorum;
            if self.announced {
                out.push(Output::Event(Event::QuorumChanged(quorum)));
            }
        }
        self.fence_and_recover(now_us, out);
        out.push(Output::WakeAt(self.next_wake_us(now_us)));
    }

    fn decide_quorum(&mut self, now_us: u64) -> Quorum {
        let voters: Vec<Voter> = std::iter::once(Voter {
            id: self.local_spec.id,
            votes: self.local_spec.votes,
            present: !self.leaving,
            health: Some(self.local_health),
            fenced: false,
        })
        .chain(self.peers.iter().map(|p| Voter {
            id: p.spec.id,
            votes: p.spec.votes,
            present: p.state.in_view(),
            health: p.health,
            fenced: p.state == MemberState::Left
                || matches!(p.fence, Fence::Confirmed { incarnation } if incarnation == p.incarnation),
        }))
        .collect();
        let expected: u64 = voters.iter().map(|v| u64::from(v.votes)).sum();
        let present: u64 = voters
            .iter()
            .filter(|v| v.present)
            .map(|v| u64::from(v.votes))
            .sum();
        if present * 2 == expected {
            if self.tie_health.is_none() {
                self.tie_health = Some(self.local_health);
                self.tie_since_us = Some(now_us);
            }
        } else {
            self.tie_health = None;
            self.tie_since_us = None;
        }
        quorum::decide(
            &voters,
            TieContext {
                own_health: self.local_health,
                own_health_at_tie: self.tie_health.unwrap_or(self.local_health),
                seen_full_cluster: self.seen_full_cluster,
            },
        )
    }

    /// May this node fence now? When quorate; or in a tie it lost only by
    /// node id (or for want of the full cluster), after the tie delay, so
    /// that the winner fences first.
    fn may_fence(&self, now_us: u64) -> bool {
        if self.quorum.quorate {
            return true;
        }
        matches!(
            self.quorum.reason,
            QuorumReason::TieLostByNodeId | QuorumReason::TieBeforeFullCluster
        ) && self
            .tie_since_us
            .is_some_and(|t| now_us >= t.saturating_add(self.config.tie_fence_delay_us))
    }

    fn fence_and_recover(&mut self, now_us: u64, out: &mut Vec<Output>) {
        let may_fence = self.may_fence(now_us);
        let quorate = self.quorum.quorate;
        for peer in &mut self.peers {
            if peer.state != MemberState::Dead && peer.state != MemberState::Left {
                continue;
            }
            if let Fence::Pending {
                incarnation,
                requested: false,
                not_before_us,
            } = peer.fence
            {
                if may_fence && now_us >= not_before_us {
                    peer.fence = Fence::Pending {
                        incarnation,
                        requested: true,
                        not_before_us,
                    };
                    out.push(Output::Event(Event::FenceRequested {
                        node: peer.spec.id,
                        incarnation,
                    }));
                }
            }
            let cleared = match peer.fence {
                Fence::NotNeeded => true,
                Fence::Confirmed { incarnation } => incarnation == peer.incarnation,
                Fence::Pending { .. } => false,
            };
            if quorate && cleared && !peer.recovery_announced {
                peer.recovery_announced = true;
                out.push(Output::Event(Event::RecoveryAllowed {
                    node: peer.spec.id,
                    incarnation: peer.incarnation,
                }));
            }
        }
    }

    fn next_wake_us(&mut self, now_us: u64) -> u64 {
        let mut wake = self.next_send_us;
        if self.leaving {
            wake = now_us.saturating_add(self.interval_us);
        }
        if !self.initial_wait_done {
            wake = wake.min(self.started_us.saturating_add(self.config.initial_wait_us));
        }
        for peer in &self.peers {
            if let Some(t) = peer.monitor.next_check_us() {
                wake = wake.min(t);
            }
            if let Fence::Pending {
                requested: false,
                not_before_us,
                ..
            } = peer.fence
            {
                wake = wake.min(not_before_us.max(now_us + 1));
            }
        }
        if let Some(since) = self.tie_since_us {
            let at = since.saturating_add(self.config.tie_fence_delay_us);
            if at > now_us {
                wake = wake.min(at);
            }
        }
        let wake = wake.max(now_us.saturating_add(1));
        self.clock.expect_wake(wake);
        wake
    }

    /// FNV-1a over the view's (id, incarnation) pairs, this node included.
    fn digest(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for id in &self.view_members {
            let incarnation = if *id == self.local_spec.id {
                self.incarnation
            } else {
                self.peer_index(*id)
                    .map_or(Incarnation(0), |i| self.peers[i].incarnation)
            };
            eat(&id.0.to_le_bytes());
            eat(&incarnation.0.to_le_bytes());
        }
        hash
    }
}
