//! A simulated cluster on virtual time: the real [`Membership`] cores,
//! wired by a network model with loss (independent or Gilbert–Elliott
//! bursts), delay and jitter, cuts (two-way or one-way), and nodes that
//! crash, restart with a new incarnation, or pause (SIGSTOP: their timers
//! stop, their packets queue).
//!
//! Deterministic by seed. Used by the scenario tests and by
//! `benches/detection.rs`; the Heartbeat 3 adapter can reuse it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use crate::detector::us_from_f64;

use super::{Event, Heartbeat, Incarnation, Membership, MembershipConfig, NodeId, Output};

/// A small, fast, seedable random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// How a path loses packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Never.
    None,
    /// Each packet independently with this probability.
    Independent(f64),
    /// Gilbert–Elliott: a good and a bad state; `enter_bad` and `leave_bad`
    /// are the per-packet transition probabilities, `loss_bad` the loss in
    /// the bad state (the good state loses nothing).
    GilbertElliott {
        /// P(good → bad) per packet.
        enter_bad: f64,
        /// P(bad → good) per packet.
        leave_bad: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl Loss {
    /// Gilbert–Elliott bursts with average loss `average` and mean burst
    /// length `mean_burst` packets (every packet in the bad state is lost).
    pub fn bursty(average: f64, mean_burst: f64) -> Self {
        let leave_bad = 1.0 / mean_burst.max(1.0);
        // Stationary P(bad) = enter / (enter + leave) = average.
        let enter_bad = average * leave_bad / (1.0 - average).max(1e-9);
        Self::GilbertElliott {
            enter_bad,
            leave_bad,
            loss_bad: 1.0,
        }
    }

    /// The average loss rate.
    pub fn average(&self) -> f64 {
        match *self {
            Self::None => 0.0,
            Self::Independent(p) => p,
            Self::GilbertElliott {
                enter_bad,
                leave_bad,
                loss_bad,
            } => enter_bad / (enter_bad + leave_bad) * loss_bad,
        }
    }
}

/// The state of one lossy path (for Gilbert–Elliott).
#[derive(Debug, Clone, Copy, Default)]
pub struct LossState {
    bad: bool,
}

impl LossState {
    /// Whether the next packet on this path is lost.
    pub fn lose(&mut self, loss: &Loss, rng: &mut Rng) -> bool {
        match *loss {
            Loss::None => false,
            Loss::Independent(p) => rng.chance(p),
            Loss::GilbertElliott {
                enter_bad,
                leave_bad,
                loss_bad,
            } => {
                self.bad = if self.bad {
                    !rng.chance(leave_bad)
                } else {
                    rng.chance(enter_bad)
                };
                self.bad && rng.chance(loss_bad)
            }
        }
    }
}

/// The network between the simulated nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkModel {
    /// Loss on every path (each direction and link apart).
    pub loss: Loss,
    /// One-way delay, µs.
    pub delay_us: u64,
    /// Standard deviation of the delay, µs (normal, cut at 0).
    pub jitter_us: u64,
    /// Standard deviation of how late a node's timers fire, µs (half-normal).
    pub timer_jitter_us: u64,
}

impl Default for NetworkModel {
    fn default() -> Self {
        Self {
            loss: Loss::None,
            delay_us: 100,
            jitter_us: 20,
            timer_jitter_us: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    Wake {
        node: usize,
        token: u64,
    },
    Deliver {
        to: usize,
        link: usize,
        hb: HeartbeatKey,
    },
    Resume {
        node: usize,
    },
}

/// A heartbeat in flight (ordered for the queue; content kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct HeartbeatKey(usize);

#[derive(Debug)]
struct SimNode {
    config: MembershipConfig,
    core: Option<Membership>,
    incarnation: u64,
    wake_token: u64,
    paused: bool,
    /// Deliveries that arrived while paused (the socket buffer).
    backlog: Vec<(usize, Heartbeat)>,
    events: Vec<(u64, Event)>,
    sent: u64,
}

/// A simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    now_us: u64,
    nodes: Vec<SimNode>,
    links: usize,
    network: NetworkModel,
    loss_state: Vec<LossState>,
    cut: HashSet<(usize, usize)>,
    dead_links: HashSet<usize>,
    queue: BinaryHeap<Reverse<(u64, u64, What)>>,
    in_flight: Vec<Option<Heartbeat>>,
    free_slots: Vec<usize>,
    order: u64,
    rng: Rng,
    record_events: bool,
    out: Vec<Output>,
}

impl Cluster {
    /// A cluster of one node per configuration (node `i` is
    /// `configs[i].local`), all started at time 0.
    pub fn new(configs: Vec<MembershipConfig>, network: NetworkModel, seed: u64) -> Self {
        let links = configs.first().map_or(1, |c| c.link_count.max(1));
        let n = configs.len();
        let nodes = configs
            .into_iter()
            .map(|config| SimNode {
                config,
                core: None,
                incarnation: 0,
                wake_token: 0,
                paused: false,
                backlog: Vec::new(),
                events: Vec::new(),
                sent: 0,
            })
            .collect();
        let mut cluster = Self {
            now_us: 0,
            nodes,
            links,
            network,
            loss_state: vec![LossState::default(); n * n * links],
            cut: HashSet::new(),
            dead_links: HashSet::new(),
            queue: BinaryHeap::new(),
            in_flight: Vec::new(),
            free_slots: Vec::new(),
            order: 0,
            rng: Rng::new(seed),
            record_events: true,
            out: Vec::new(),
        };
        for node in 0..n {
            cluster.start(node);
        }
        cluster
    }

    /// `n` nodes with ids 1..=n and default membership settings, tuned by
    /// `tune`.
    pub fn uniform(
        n: usize,
        network: NetworkModel,
        seed: u64,
        tune: impl Fn(&mut MembershipConfig),
    ) -> Self {
        let specs: Vec<_> = (1..=n)
            .map(|i| super::NodeSpec {
                id: NodeId(u16::try_from(i).unwrap_or(u16::MAX)),
                name: format!("node{i}"),
                votes: 1,
            })
            .collect();
        let configs = specs
            .iter()
            .map(|s| {
                let mut c = MembershipConfig::new(specs.clone(), s.id);
                tune(&mut c);
                c
            })
            .collect();
        Self::new(configs, network, seed)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Current virtual time, µs.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Record events (default) or drop them (long soaks).
    pub fn record_events(&mut self, on: bool) {
        self.record_events = on;
    }

    /// Change the network model from now on.
    pub fn set_network(&mut self, network: NetworkModel) {
        self.network = network;
    }

    /// The core of node index `node` (None while crashed).
    pub fn core(&self, node: usize) -> Option<&Membership> {
        self.nodes.get(node)?.core.as_ref()
    }

    /// The events node `node` reported, with their times.
    pub fn events(&self, node: usize) -> &[(u64, Event)] {
        &self.nodes[node].events
    }

    /// Take the recorded events of every node.
    pub fn drain_events(&mut self) -> Vec<(usize, u64, Event)> {
        let mut all = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            all.extend(node.events.drain(..).map(|(t, e)| (i, t, e)));
        }
        all
    }

    /// Heartbeats node `node` has sent (per link counted once).
    pub fn heartbeats_sent(&self, node: usize) -> u64 {
        self.nodes[node].sent
    }

    /// Crash node `node` now: it stops, silently.
    pub fn crash(&mut self, node: usize) {
        self.nodes[node].core = None;
        self.nodes[node].backlog.clear();
        self.nodes[node].paused = false;
        self.nodes[node].wake_token += 1;
    }

    /// Start (or restart) node `node` with a new incarnation.
    pub fn start(&mut self, node: usize) {
        let entry = &mut self.nodes[node];
        entry.incarnation += 1;
        let core = Membership::new(
            entry.config.clone(),
            Incarnation(entry.incarnation),
            self.now_us,
        );
        entry.core = core.ok();
        entry.paused = false;
        entry.wake_token += 1;
        let token = entry.wake_token;
        self.push(self.now_us, What::Wake { node, token });
    }

    /// Pause node `node` for `duration_us` (SIGSTOP then SIGCONT).
    pub fn pause(&mut self, node: usize, duration_us: u64) {
        self.nodes[node].paused = true;
        self.push(self.now_us + duration_us, What::Resume { node });
    }

    /// Node `node`'s ping monitor reports `health`.
    pub fn set_health(&mut self, node: usize, health: crate::detector::Health) {
        let now = self.now_us;
        let mut out = std::mem::take(&mut self.out);
        if let Some(core) = self.nodes[node].core.as_mut() {
            core.set_local_health(now, health, &mut out);
        }
        self.handle(node, &mut out);
        self.out = out;
    }

    /// Node `node`'s fencing device answers for `target`'s `incarnation`.
    pub fn fence_result(
        &mut self,
        node: usize,
        target: NodeId,
        incarnation: Incarnation,
        ok: bool,
    ) {
        let now = self.now_us;
        let mut out = std::mem::take(&mut self.out);
        if let Some(core) = self.nodes[node].core.as_mut() {
            core.fence_result(now, target, incarnation, ok, &mut out);
        }
        self.handle(node, &mut out);
        self.out = out;
    }

    /// Node `node` leaves cleanly: its leave heartbeat goes out three times,
    /// then it stops.
    pub fn leave(&mut self, node: usize) {
        let now = self.now_us;
        let mut sent = Vec::new();
        if let Some(core) = self.nodes[node].core.as_mut() {
            for _ in 0..3 {
                sent.push(core.leave(now));
            }
        }
        for hb in sent {
            self.send(node, hb);
        }
        self.nodes[node].core = None;
        self.nodes[node].wake_token += 1;
    }

    /// Deliver `hb` to node `to` on `link` now, as if it came from the
    /// network (replays, forged or stale heartbeats).
    pub fn inject(&mut self, to: usize, link: usize, hb: Heartbeat) {
        self.deliver(to, link, &hb);
    }

    /// Drop everything from `from` to `to` (one way) until [`heal`](Self::heal).
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.cut.insert((from, to));
    }

    /// Split the cluster: nodes in `side` no longer hear the others and
    /// vice versa.
    pub fn partition(&mut self, side: &[usize]) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                if side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Link `link` carries nothing (a NIC or switch died) until
    /// [`heal`](Self::heal).
    pub fn cut_link(&mut self, link: usize) {
        self.dead_links.insert(link);
    }

    /// Remove every cut.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.dead_links.clear();
    }

    /// Run until `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until_us {
                break;
            }
            let Some(Reverse((at, _, what))) = self.queue.pop() else {
                break;
            };
            self.now_us = at;
            self.step(what);
        }
        self.now_us = self.now_us.max(until_us);
    }

    /// Run for `duration_us` more.
    pub fn run_for(&mut self, duration_us: u64) {
        self.run_until(self.now_us + duration_us);
    }

    /// Run until `pred` holds (checked after each step) or `limit_us`
    /// passes; the time it first held.
    pub fn run_until_true(
        &mut self,
        limit_us: u64,
        mut pred: impl FnMut(&Cluster) -> bool,
    ) -> Option<u64> {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > limit_us {
                break;
            }
            let Some(Reverse((at, _, what))) = self.queue.pop() else {
                break;
            };
            self.now_us = at;
            self.step(what);
            if pred(self) {
                return Some(self.now_us);
            }
        }
        None
    }

    fn push(&mut self, at: u64, what: What) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, what)));
    }

    fn step(&mut self, what: What) {
        match what {
            What::Wake { node, token } => {
                let entry = &self.nodes[node];
                if entry.wake_token != token || entry.paused || entry.core.is_none() {
                    return;
                }
                let now = self.now_us;
                let mut out = std::mem::take(&mut self.out);
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.tick(now, &mut out);
                }
                self.handle(node, &mut out);
                self.out = out;
            }
            What::Deliver { to, link, hb } => {
                let Some(heartbeat) = self.in_flight[hb.0].take() else {
                    return;
                };
                self.free_slots.push(hb.0);
                let entry = &mut self.nodes[to];
                if entry.core.is_none() {
                    return;
                }
                if entry.paused {
                    entry.backlog.push((link, heartbeat));
                    return;
                }
                self.deliver(to, link, &heartbeat);
            }
            What::Resume { node } => {
                if !self.nodes[node].paused {
                    return;
                }
                self.nodes[node].paused = false;
                // Like a real process: the timer fires first, then the
                // socket buffer is drained.
                let token = self.nodes[node].wake_token;
                self.step(What::Wake { node, token });
                let backlog = std::mem::take(&mut self.nodes[node].backlog);
                for (link, hb) in backlog {
                    self.deliver(node, link, &hb);
                }
            }
        }
    }

    fn deliver(&mut self, to: usize, link: usize, hb: &Heartbeat) {
        let now = self.now_us;
        let mut out = std::mem::take(&mut self.out);
        if let Some(core) = self.nodes[to].core.as_mut() {
            core.heartbeat(now, link, hb, &mut out);
        }
        self.handle(to, &mut out);
        self.out = out;
    }

    fn handle(&mut self, node: usize, out: &mut Vec<Output>) {
        for output in out.drain(..) {
            match output {
                Output::Send(hb) => self.send(node, hb),
                Output::Event(event) => {
                    if self.record_events {
                        self.nodes[node].events.push((self.now_us, event));
                    }
                }
                Output::WakeAt(at) => {
                    let late = if self.network.timer_jitter_us == 0 {
                        0
                    } else {
                        us_from_f64(self.rng.normal().abs() * self.network.timer_jitter_us as f64)
                    };
                    self.nodes[node].wake_token += 1;
                    let token = self.nodes[node].wake_token;
                    self.push(at.max(self.now_us) + late, What::Wake { node, token });
                }
            }
        }
    }

    fn send(&mut self, from: usize, hb: Heartbeat) {
        self.nodes[from].sent += 1;
        let n = self.nodes.len();
        for to in 0..n {
            if to == from || self.cut.contains(&(from, to)) {
                continue;
            }
            for link in 0..self.links {
                if self.dead_links.contains(&link) {
                    continue;
                }
                let path = (from * n + to) * self.links + link;
                if self.loss_state[path].lose(&self.network.loss, &mut self.rng) {
                    continue;
                }
                let jitter = self.rng.normal() * self.network.jitter_us as f64;
                let delay = us_from_f64(self.network.delay_us as f64 + jitter);
                let slot = if let Some(slot) = self.free_slots.pop() {
                    self.in_flight[slot] = Some(hb);
                    slot
                } else {
                    self.in_flight.push(Some(hb));
                    self.in_flight.len() - 1
                };
                self.push(
                    self.now_us + delay,
                    What::Deliver {
                        to,
                        link,
                        hb: HeartbeatKey(slot),
                    },
                );
            }
        }
    }
}
