//! The runtime: the one place with threads, sockets and clocks. It drives
//! the sans-io cores ([`Membership`], [`PingMonitor`], the wire
//! [`Receiver`], or for a node of a Heartbeat 3 cluster the
//! [`heartbeat::Member`](crate::heartbeat::Member)) with real time and real
//! packets.
//!
//! ```text
//!  link socket ──▶ receive thread ─┐  (one per link; timestamps arrivals)
//!  ping socket ──▶ ping thread ────┤
//!  fence command ─▶ fence thread ──┼─▶ core thread ──▶ event thread ──▶ your handler
//!  Node::stop / fence_result ──────┘   │  Membership, Receiver, PingMonitor
//!                                      └─▶ sends heartbeats on every link, probes
//! ```
//!
//! The links speak the configured [`Protocol`]: perfplus heartbeats, or
//! Heartbeat 3's packets (`hb3.rs`), whose status arrivals feed the same
//! membership core and detector.
//!
//! Threads talk over crossbeam channels; the only shared state is a
//! snapshot (members, quorum, counters) behind a parking_lot mutex that is
//! never held while the handler runs: handlers run on their own thread and
//! may call back into the [`Node`]. No thread starts before
//! [`Node::start`], and every one is joined by [`Node::stop`] (Heartbeat
//! forks after loading plugins; threads do not survive a fork).

pub mod ha;
mod hb3;
mod links;
mod ping;
mod sched;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver as ChannelReceiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::config::{ConfigError, NodeConfig, Protocol};
use crate::detector::{PingMonitor, Probe};
use crate::membership::{
    Event, Incarnation, MemberInfo, Membership, MembershipError, MembershipStats, NodeId, Output,
    Quorum,
};
use crate::wire::heartbeat::encode;
use crate::wire::{Dropped, Receiver, WireStats};

/// What the node tells its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A membership event.
    Membership(Event),
    /// Something the admin should know that is not an error (configuration
    /// warnings, packets from a differently configured node, send errors).
    Warning(String),
}

/// Receives the node's events, one at a time, on the node's event thread.
pub trait EventHandler: Send + 'static {
    /// One event.
    fn on_event(&mut self, event: &NodeEvent);
}

impl<F: FnMut(&NodeEvent) + Send + 'static> EventHandler for F {
    fn on_event(&mut self, event: &NodeEvent) {
        self(event);
    }
}

/// Why a node could not start (nothing was left running) or failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The membership settings are invalid.
    #[error("membership: {0}")]
    Membership(#[from] MembershipError),
    /// A link's socket could not be set up.
    #[error("link {link}: cannot {what}: {source}")]
    Link {
        /// Link index (configuration order).
        link: usize,
        /// What failed.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Ping probing could not be set up.
    #[error("cannot open ping probes: {0}")]
    Ping(std::io::Error),
    /// The incarnation file could not be read or written.
    #[error("incarnation file {path}: {source}")]
    Incarnation {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The Heartbeat 3 member could not be set up (its persisted identity,
    /// or settings Heartbeat would refuse).
    #[error("Heartbeat 3 member: {0}")]
    Heartbeat(#[from] crate::heartbeat::HeartbeatError),
}

/// A snapshot of the node's state, refreshed by the core thread.
#[derive(Debug, Clone)]
struct Snapshot {
    members: Vec<MemberInfo>,
    quorum: Quorum,
    view_epoch: u64,
    wire: WireStats,
    membership: MembershipStats,
    bytes_sent: u64,
    packets_sent: u64,
}

enum Msg {
    Packet {
        link: usize,
        at_us: u64,
        bytes: Vec<u8>,
    },
    PingReply {
        target: usize,
        seq: u16,
        at_us: u64,
    },
    Fence {
        node: NodeId,
        incarnation: Incarnation,
        ok: bool,
    },
    Stop,
}

/// A running cluster node.
pub struct Node {
    local: NodeId,
    incarnation: Incarnation,
    started: Instant,
    shared: Arc<Mutex<Snapshot>>,
    to_core: Sender<Msg>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("local", &self.local)
            .field("incarnation", &self.incarnation)
            .field("running", &!self.threads.is_empty())
            .finish()
    }
}

/// Monotonic µs since the node started.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now_us(self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Node {
    /// Start a node: open every socket, then start the threads. Events go to
    /// `handler` on the node's event thread. On error nothing is left
    /// running.
    pub fn start(config: NodeConfig, handler: impl EventHandler) -> Result<Node, NodeError> {
        config.validate()?;
        let membership_config = config.membership();
        let clock = Clock(Instant::now());
        let (protocol, incarnation) = match &config.protocol {
            Protocol::Perfplus => {
                let incarnation = next_incarnation(config.incarnation_file.as_deref())?;
                let receiver = Receiver::new(
                    config.cluster_id(),
                    config.key.clone(),
                    config.local,
                    config.nodes.iter().map(|n| n.id),
                    config.links.len(),
                );
                (Wire::Perfplus(receiver), incarnation)
            }
            Protocol::Heartbeat3(hb) => {
                let (member, incarnation) = hb3::Hb3::new(&config, hb)?;
                (Wire::Heartbeat3(Box::new(member)), incarnation)
            }
        };
        let core = Membership::new(membership_config, incarnation, 0)?;
        let links: Vec<links::Link> = config
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| links::open(i, l))
            .collect::<Result<_, _>>()?;
        let prober = if config.ping_nodes.is_empty() {
            None
        } else {
            let timeout = Duration::from_micros(config.ping.interval_us.min(500_000));
            let (prober, _method) =
                ping::Prober::open(config.ping_method, config.ping_nodes.clone(), timeout)
                    .map_err(NodeError::Ping)?;
            Some(prober)
        };
        let shared = Arc::new(Mutex::new(Snapshot {
            members: core.members(),
            quorum: core.quorum(),
            view_epoch: 0,
            wire: WireStats::default(),
            membership: MembershipStats::default(),
            bytes_sent: 0,
            packets_sent: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (to_core, from_all) = crossbeam_channel::unbounded::<Msg>();
        let (to_events, events) = crossbeam_channel::unbounded::<NodeEvent>();
        let (to_prober, probes) = crossbeam_channel::unbounded::<Probe>();

        let mut node = Node {
            local: config.local,
            incarnation,
            started: clock.0,
            shared: shared.clone(),
            to_core: to_core.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for warning in &config.warnings {
            let _ = to_events.send(NodeEvent::Warning(warning.clone()));
        }
        let mut sockets = Vec::new();
        for (index, link) in links.iter().enumerate() {
            let socket = link.socket.try_clone().map_err(|source| NodeError::Link {
                link: index,
                what: "clone the socket".into(),
                source,
            })?;
            sockets.push((index, socket));
        }
        let spawn = |node: &mut Node, name: String, body: Box<dyn FnOnce() + Send>| {
            match std::thread::Builder::new().name(name).spawn(body) {
                Ok(handle) => {
                    node.threads.push(handle);
                    Ok(())
                }
                Err(e) => {
                    node.shutdown();
                    Err(NodeError::Thread(e))
                }
            }
        };
        let mut handler = handler;
        spawn(
            &mut node,
            "perfplus-events".into(),
            Box::new(move || {
                for event in events {
                    handler.on_event(&event);
                }
            }),
        )?;
        let realtime = config.realtime;
        let rt_warned = Arc::new(AtomicBool::new(false));
        for (index, socket) in sockets {
            let to_core = to_core.clone();
            let stop = stop.clone();
            let (rt_warned, rt_events) = (rt_warned.clone(), to_events.clone());
            spawn(
                &mut node,
                format!("perfplus-link{index}"),
                Box::new(move || {
                    sched::maybe_realtime(realtime, &rt_warned, &rt_events);
                    drop(rt_events);
                    receive_loop(index, &socket, clock, &stop, &to_core);
                }),
            )?;
        }
        if let Some(prober) = prober {
            let to_core = to_core.clone();
            let stop = stop.clone();
            let (rt_warned, rt_events) = (rt_warned.clone(), to_events.clone());
            spawn(
                &mut node,
                "perfplus-ping".into(),
                Box::new(move || {
                    sched::maybe_realtime(realtime, &rt_warned, &rt_events);
                    drop(rt_events);
                    ping_loop(prober, &probes, clock, &stop, &to_core);
                }),
            )?;
        }
        let ping = PingMonitor::new(config.ping, config.ping_nodes.len(), 0);
        let mut core_loop = CoreLoop {
            core,
            wire: protocol,
            ping,
            links,
            cluster: config.cluster_id(),
            key: config.key.clone(),
            fence_command: config.fence_command.clone(),
            names: config
                .nodes
                .iter()
                .map(|n| (n.id, n.name.clone()))
                .collect(),
            clock,
            shared,
            to_events,
            to_prober,
            to_core,
            warned_foreign: false,
            send_errors: 0,
            bytes_sent: 0,
            packets_sent: 0,
        };
        spawn(
            &mut node,
            "perfplus-core".into(),
            Box::new(move || {
                sched::maybe_realtime(realtime, &rt_warned, &core_loop.to_events);
                core_loop.run(&from_all);
            }),
        )?;
        Ok(node)
    }

    /// This node's id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Every configured node as this node sees it.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.shared.lock().members.clone()
    }

    /// This partition's quorum.
    pub fn quorum(&self) -> Quorum {
        self.shared.lock().quorum
    }

    /// The view's epoch.
    pub fn view_epoch(&self) -> u64 {
        self.shared.lock().view_epoch
    }

    /// Packets received, by outcome.
    pub fn wire_stats(&self) -> WireStats {
        self.shared.lock().wire
    }

    /// Heartbeats dropped by the membership core, by reason.
    pub fn membership_stats(&self) -> MembershipStats {
        self.shared.lock().membership
    }

    /// UDP payload bytes and datagrams sent so far.
    pub fn sent(&self) -> (u64, u64) {
        let s = self.shared.lock();
        (s.bytes_sent, s.packets_sent)
    }

    /// How long the node has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Report the outcome of a [`Event::FenceRequested`] handled by the
    /// application (when no fence command is configured).
    pub fn fence_result(&self, node: NodeId, incarnation: Incarnation, ok: bool) {
        let _ = self.to_core.send(Msg::Fence {
            node,
            incarnation,
            ok,
        });
    }

    /// Whether the node's threads are running.
    pub fn is_running(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Leave the cluster cleanly (peers mark this node `Left`, no fencing)
    /// and join every thread. The handler has seen its last event when this
    /// returns. Idempotent.
    pub fn stop(&mut self) {
        let _ = self.to_core.send(Msg::Stop);
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The core thread exits on Stop (or when every sender is gone) and
        // drops the event and probe senders, which ends those threads.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

fn receive_loop(
    link: usize,
    socket: &std::net::UdpSocket,
    clock: Clock,
    stop: &AtomicBool,
    to_core: &Sender<Msg>,
) {
    // Room for any UDP datagram: Heartbeat 3 messages can be large.
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((len, _from)) => {
                let at_us = clock.now_us();
                if to_core
                    .send(Msg::Packet {
                        link,
                        at_us,
                        bytes: buf[..len].to_vec(),
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(_) => std::thread::sleep(links::RECV_POLL),
        }
    }
}

fn ping_loop(
    mut prober: ping::Prober,
    probes: &ChannelReceiver<Probe>,
    clock: Clock,
    stop: &AtomicBool,
    to_core: &Sender<Msg>,
) {
    let mut replies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        loop {
            match probes.try_recv() {
                Ok(probe) => {
                    if let Some(reply) = prober.send(probe.target, probe.seq) {
                        replies.push(reply);
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
        prober.poll(&mut replies);
        let at_us = clock.now_us();
        for (target, seq) in replies.drain(..) {
            if to_core.send(Msg::PingReply { target, seq, at_us }).is_err() {
                return;
            }
        }
    }
}

/// What the links speak.
enum Wire {
    /// perfplus heartbeats, through the replay filter.
    Perfplus(Receiver),
    /// Heartbeat 3 packets, through the member.
    Heartbeat3(Box<hb3::Hb3>),
}

struct CoreLoop {
    core: Membership,
    wire: Wire,
    ping: PingMonitor,
    links: Vec<links::Link>,
    cluster: crate::wire::ClusterId,
    key: crate::wire::ClusterKey,
    fence_command: Option<Vec<String>>,
    names: Vec<(NodeId, String)>,
    clock: Clock,
    shared: Arc<Mutex<Snapshot>>,
    to_events: Sender<NodeEvent>,
    to_prober: Sender<Probe>,
    to_core: Sender<Msg>,
    warned_foreign: bool,
    send_errors: u64,
    bytes_sent: u64,
    packets_sent: u64,
}

impl CoreLoop {
    fn run(&mut self, inbox: &ChannelReceiver<Msg>) {
        let mut out = Vec::new();
        let mut probes = Vec::new();
        let mut wake_at = 0_u64;
        // Ping nodes count as reachable until their first dead time passes.
        let health = self.ping.health();
        self.core.set_local_health(0, health, &mut out);
        if let Wire::Heartbeat3(member) = &mut self.wire {
            let mut actions = Vec::new();
            let now = self.clock.now_us();
            member.start(now, &mut actions);
            self.act(actions, now, &mut out);
        }
        loop {
            let now = self.clock.now_us();
            let timeout = Duration::from_micros(wake_at.saturating_sub(now));
            match inbox.recv_timeout(timeout) {
                Ok(Msg::Packet { link, at_us, bytes }) => match &mut self.wire {
                    Wire::Perfplus(receiver) => match receiver.accept(&bytes, link) {
                        Ok(hb) => self.core.heartbeat(at_us, link, &hb, &mut out),
                        Err(Dropped::ForeignCluster(id)) if !self.warned_foreign => {
                            self.warned_foreign = true;
                            let _ = self.to_events.send(NodeEvent::Warning(format!(
                            "authentic heartbeats on link {link} carry cluster id {:#010x}, this node's is {:#010x}: the cluster name or node list differs between nodes",
                            id.0, self.cluster.0
                        )));
                        }
                        Err(_) => {}
                    },
                    Wire::Heartbeat3(member) => {
                        let mut actions = Vec::new();
                        member.receive(link, &bytes, at_us, &mut actions);
                        self.act(actions, at_us, &mut out);
                    }
                },
                Ok(Msg::PingReply { target, seq, at_us }) => {
                    if let Some(health) = self.ping.reply(at_us, target, seq) {
                        self.core.set_local_health(at_us, health, &mut out);
                    }
                }
                Ok(Msg::Fence {
                    node,
                    incarnation,
                    ok,
                }) => {
                    let now = self.clock.now_us();
                    self.core.fence_result(now, node, incarnation, ok, &mut out);
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.leave();
                    self.publish();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = self.clock.now_us();
            if let Wire::Heartbeat3(member) = &mut self.wire {
                if now >= member.next_tick_us() {
                    let mut actions = Vec::new();
                    member.tick(now, &mut actions);
                    self.act(actions, now, &mut out);
                }
            }
            let ticked = now >= wake_at;
            if ticked {
                self.core.tick(now, &mut out);
                probes.clear();
                if let Some(health) = self.ping.tick(now, &mut probes) {
                    self.core.set_local_health(now, health, &mut out);
                }
                for probe in probes.drain(..) {
                    let _ = self.to_prober.send(probe);
                }
            }
            let mut changed = false;
            for output in out.drain(..) {
                match output {
                    Output::Send(hb) => {
                        // A Heartbeat 3 member sends its own statuses.
                        if let Wire::Perfplus(_) = self.wire {
                            let bytes = encode(self.cluster, &hb, &self.key);
                            self.send(&bytes);
                        }
                    }
                    Output::WakeAt(at) => wake_at = at,
                    Output::Event(event) => {
                        changed = true;
                        if let Event::FenceRequested { node, incarnation } = &event {
                            self.fence(*node, *incarnation);
                        }
                        let _ = self.to_events.send(NodeEvent::Membership(event));
                    }
                }
            }
            if let Some(at) = self.ping.next_tick_us() {
                wake_at = wake_at.min(at.max(now + 1));
            }
            let next_status_us = match &self.wire {
                Wire::Heartbeat3(member) => Some(member.next_tick_us()),
                Wire::Perfplus(_) => None,
            };
            if let Some(at) = next_status_us {
                wake_at = wake_at.min(at.max(now + 1));
            }
            if changed || ticked {
                self.publish();
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        for (index, link) in self.links.iter().enumerate() {
            for to in &link.destinations {
                match link.socket.send_to(bytes, *to) {
                    Ok(n) => {
                        self.bytes_sent += n as u64;
                        self.packets_sent += 1;
                    }
                    Err(e) => {
                        self.send_errors += 1;
                        // Report the first error and then every thousandth:
                        // a dead link must not flood the log.
                        if self.send_errors % 1000 == 1 {
                            let _ = self.to_events.send(NodeEvent::Warning(format!(
                                "link {index} ({}): sending to {to} failed: {e} ({} send errors so far)",
                                link.description, self.send_errors
                            )));
                        }
                    }
                }
            }
        }
    }

    fn leave(&mut self) {
        let now = self.clock.now_us();
        match &mut self.wire {
            Wire::Perfplus(_) => {
                for _ in 0..3 {
                    let hb = self.core.leave(now);
                    let bytes = encode(self.cluster, &hb, &self.key);
                    self.send(&bytes);
                }
            }
            Wire::Heartbeat3(member) => {
                let _ = self.core.leave(now);
                let mut actions = Vec::new();
                member.leave(now, &mut actions);
                let mut out = Vec::new();
                self.act(actions, now, &mut out);
            }
        }
    }

    /// Carry out what the Heartbeat 3 member asks; membership outputs go to
    /// `out`.
    fn act(&mut self, actions: Vec<hb3::Action>, at_us: u64, out: &mut Vec<Output>) {
        for action in actions {
            match action {
                hb3::Action::Send(bytes) => self.send(&bytes),
                hb3::Action::Heartbeat { link, heartbeat } => {
                    self.core.heartbeat(at_us, link, &heartbeat, out);
                }
                hb3::Action::Warning(w) => {
                    let _ = self.to_events.send(NodeEvent::Warning(w));
                }
            }
        }
    }

    fn fence(&self, node: NodeId, incarnation: Incarnation) {
        let Some(argv) = self.fence_command.clone() else {
            return;
        };
        let name = self
            .names
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let to_core = self.to_core.clone();
        let to_events = self.to_events.clone();
        // The command may take long (power fencing does); it runs on its own
        // thread and reports back through the core's inbox.
        let spawned = std::thread::Builder::new()
            .name("perfplus-fence".into())
            .spawn(move || {
                let status = std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .env("PERFPLUS_FENCE_NODE", &name)
                    .env("PERFPLUS_FENCE_NODE_ID", node.0.to_string())
                    .env("PERFPLUS_FENCE_INCARNATION", incarnation.0.to_string())
                    .status();
                let ok = matches!(status, Ok(s) if s.success());
                if !ok {
                    let _ = to_events.send(NodeEvent::Warning(format!(
                        "fence command {argv:?} for {name} ({node}) failed: {status:?}"
                    )));
                }
                let _ = to_core.send(Msg::Fence {
                    node,
                    incarnation,
                    ok,
                });
            });
        if spawned.is_err() {
            let _ = self.to_core.send(Msg::Fence {
                node,
                incarnation,
                ok: false,
            });
        }
    }

    fn publish(&self) {
        let members = self.core.members();
        let mut snapshot = self.shared.lock();
        snapshot.members = members;
        snapshot.quorum = self.core.quorum();
        snapshot.view_epoch = self.core.view().0;
        snapshot.wire = match &self.wire {
            Wire::Perfplus(receiver) => receiver.stats(),
            Wire::Heartbeat3(member) => member.stats(),
        };
        snapshot.membership = self.core.stats();
        snapshot.bytes_sent = self.bytes_sent;
        snapshot.packets_sent = self.packets_sent;
    }
}

/// The next incarnation: the wall clock in ms, and above the one persisted
/// in `file` (if any), which is updated.
fn next_incarnation(file: Option<&std::path::Path>) -> Result<Incarnation, NodeError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let Some(path) = file else {
        return Ok(Incarnation(now_ms));
    };
    let io = |source| NodeError::Incarnation {
        path: path.to_path_buf(),
        source,
    };
    let last = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(e)),
    };
    let next = now_ms.max(last.saturating_add(1));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{next}\n")).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(Incarnation(next))
}

/// Where a unicast link's peers are, for tools.
pub fn link_destinations(config: &NodeConfig) -> Vec<Vec<SocketAddr>> {
    config
        .links
        .iter()
        .map(|l| match l {
            crate::config::LinkConfig::Unicast { peers, .. } => peers.clone(),
            crate::config::LinkConfig::Multicast { group, port, .. } => {
                vec![SocketAddr::new((*group).into(), *port)]
            }
            crate::config::LinkConfig::Broadcast { port, .. } => {
                vec![SocketAddr::new(std::net::Ipv4Addr::BROADCAST.into(), *port)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_grows_even_if_the_clock_goes_back() {
        let dir = std::env::temp_dir().join(format!("perfplus-inc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("incarnation");
        std::fs::write(&file, format!("{}\n", u64::MAX / 2)).unwrap();
        let a = next_incarnation(Some(&file)).unwrap();
        let b = next_incarnation(Some(&file)).unwrap();
        assert_eq!(a.0, u64::MAX / 2 + 1);
        assert_eq!(b.0, a.0 + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
