//! The HA node: a membership [`Node`], the [`Orchestrator`], the resource
//! drivers and the control channel, wired together. This is what
//! `perfplus node` runs on every host.
//!
//! ```text
//!  membership Node ──events──┐
//!  control server ──requests─┼─▶ HA loop ──▶ Orchestrator (sans-io)
//!  workers ───────results────┘     │  │
//!                                  │  └─▶ handler (every event, with its reason)
//!                                  ├─▶ workers: start / migrate_to / migrate_from / monitor
//!                                  └─▶ peer outboxes: Migrate, Start, Adopt, Report, *Done
//! ```
//!
//! Only the decider (lowest live node of a quorate partition) decides; it
//! sends each action to the host that must carry it out (the source of a
//! migration, the target of a start). Hosts report what they run and how
//! each action ended to every host, so every orchestrator keeps the same
//! placements and any of them can take over as decider.
//!
//! Driver operations can take seconds or minutes, so they run on worker
//! threads; the HA loop never blocks on them, on a socket, or on the
//! handler (which runs on its own thread).

pub mod control;
pub mod daemon;
mod status;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver as ChannelReceiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

pub use self::status::{ClusterStatus, HostStatus, ResourceStatusView};
use super::{Node, NodeError, NodeEvent};
use crate::config::{ClusterConfig, NodeConfig};
use crate::driver::{
    DriverError, DriverFactory, DriverResource, PeerHost, ResourceDriver, ResourceStatus,
};
use crate::membership::{Event as MembershipEvent, NodeId, Quorum};
use crate::orchestrator::{
    Action, Event as OrchestratorEvent, Input, Orchestrator, OrchestratorError, Output, Placement,
};
use crate::wire::control::Message;
use crate::wire::ClusterKey;

/// How often each host reports what it runs.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a joining host waits for peers to tell it the cluster's state
/// before it takes a cold start (starts its home resources).
pub const JOIN_WAIT: Duration = Duration::from_secs(3);
/// How long the target may take to confirm an adopted guest.
pub const ADOPT_TIMEOUT: Duration = Duration::from_secs(150);

/// What the HA node tells its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaEvent {
    /// A membership event or warning.
    Node(NodeEvent),
    /// An orchestrator event (decisions with their reasons).
    Orchestrator(OrchestratorEvent),
    /// This host began carrying out an action.
    ActionStarted(Action),
    /// An action this host carried out ended.
    ActionFinished {
        /// The action.
        action: Action,
        /// Whether it succeeded.
        ok: bool,
        /// What happened (error text, or downtime and bytes).
        detail: String,
    },
    /// No peer confirmed this host's home resources running elsewhere: it
    /// starts them (a cold start of the cluster, or of these resources).
    ColdStart,
    /// Something the admin should know.
    Warning(String),
}

/// One line per event, as `perfplus node` logs them.
impl std::fmt::Display for HaEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaEvent::Node(NodeEvent::Membership(e)) => write!(f, "{e}"),
            HaEvent::Node(NodeEvent::Warning(w)) | HaEvent::Warning(w) => write!(f, "WARNING {w}"),
            HaEvent::Orchestrator(e) => write!(f, "{e}"),
            HaEvent::ActionStarted(a) => write!(f, "ACTION_STARTED {a}"),
            HaEvent::ActionFinished { action, ok, detail } => {
                let outcome = if *ok { "ACTION_DONE" } else { "ACTION_FAILED" };
                if detail.is_empty() {
                    write!(f, "{outcome} {action}")
                } else {
                    write!(f, "{outcome} {action}: {detail}")
                }
            }
            HaEvent::ColdStart => f.write_str(
                "COLD_START no peer confirmed this node's home resources running: starting them",
            ),
        }
    }
}

/// Receives the HA node's events on its own thread.
pub trait HaEventHandler: Send + 'static {
    /// One event.
    fn on_event(&mut self, event: &HaEvent);
}

impl<F: FnMut(&HaEvent) + Send + 'static> HaEventHandler for F {
    fn on_event(&mut self, event: &HaEvent) {
        self(event);
    }
}

/// Why the HA node could not start (nothing is left running).
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The membership node failed to start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The orchestrator configuration is invalid.
    #[error("orchestrator: {0}")]
    Orchestrator(#[from] OrchestratorError),
    /// A resource's driver could not be made.
    #[error("resource {resource}: {source}")]
    Driver {
        /// The resource.
        resource: String,
        /// Why.
        #[source]
        source: DriverError,
    },
    /// This node has no control address in the configuration.
    #[error("node {0} has no `control` address in the configuration")]
    NoControlAddress(u16),
    /// The control listener could not be opened.
    #[error("cannot listen for control requests on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// What reaches the HA loop.
enum Inbox {
    Membership(MembershipEvent),
    Control(control::Request),
    Work(Work),
    Standby { host: NodeId, on: bool },
    Stop(Sender<()>),
}

/// A worker's result.
enum Work {
    /// What runs here, checked while `actions` local actions had begun or
    /// ended (a report overtaken by an action is dropped: it may predate
    /// the move).
    Monitored {
        running: Vec<String>,
        actions: u64,
    },
    Migrated {
        resource: String,
        to: NodeId,
        ok: bool,
        detail: String,
        downtime_us: u64,
        bytes: u64,
    },
    Started {
        resource: String,
        ok: bool,
        detail: String,
    },
    Joined(Vec<ClusterStatus>),
    ResourcesStopped,
    /// An admin's stop ended (the next report tells what runs).
    Stopped,
    /// A delegated action could not be handed over; its failure input.
    Undelivered(Input),
}

type SharedDriver = Arc<Mutex<Box<dyn ResourceDriver>>>;

/// A running HA node.
pub struct HaNode {
    node: Node,
    inbox: Sender<Inbox>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    status: Arc<Mutex<ClusterStatus>>,
}

impl std::fmt::Debug for HaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaNode").field("node", &self.node).finish()
    }
}

impl HaNode {
    /// Start the node: membership, the control listener, the HA loop. The
    /// resources configured with this host as home are started once the
    /// node knows whether the cluster already runs (see [`JOIN_WAIT`]).
    pub fn start(
        config: NodeConfig,
        drivers: &dyn DriverFactory,
        handler: impl HaEventHandler,
    ) -> Result<HaNode, HaError> {
        let local = config.local;
        let cluster = config.cluster.clone();
        let key = config.key.subkey("control");
        let names: BTreeMap<NodeId, String> = config
            .nodes
            .iter()
            .map(|n| (n.id, n.name.clone()))
            .collect();
        let votes: BTreeMap<NodeId, u32> = config.nodes.iter().map(|n| (n.id, n.votes)).collect();
        let control_address = cluster
            .host(local)
            .and_then(|h| h.control)
            .ok_or(HaError::NoControlAddress(local.0))?;
        let resources = cluster
            .resources
            .iter()
            .map(|r| (r.spec.clone(), initial_host(&cluster, &r.spec, &names)))
            .collect();
        let orchestrator =
            Orchestrator::new(cluster.orchestrator(local, config.auto_failback), resources)?;
        let mut local_drivers = BTreeMap::new();
        for r in &cluster.resources {
            let driver = drivers.driver(r).map_err(|source| HaError::Driver {
                resource: r.spec.name.clone(),
                source,
            })?;
            local_drivers.insert(r.spec.name.clone(), Arc::new(Mutex::new(driver)));
        }
        let listener = TcpListener::bind(control_address).map_err(|source| HaError::Listen {
            address: control_address,
            source,
        })?;

        let (inbox, from_all) = crossbeam_channel::unbounded::<Inbox>();
        let (to_handler, handler_events) = crossbeam_channel::unbounded::<HaEvent>();
        let node_inbox = inbox.clone();
        let node_events = to_handler.clone();
        let node = Node::start(config, move |event: &NodeEvent| {
            if let NodeEvent::Membership(e) = event {
                let _ = node_inbox.send(Inbox::Membership(e.clone()));
            }
            let _ = node_events.send(HaEvent::Node(event.clone()));
        })?;

        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(ClusterStatus::empty(local)));
        let mut ha = HaNode {
            node,
            inbox: inbox.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
            status: status.clone(),
        };
        let mut handler = handler;
        ha.spawn("perfplus-ha-events", move || {
            for event in handler_events {
                handler.on_event(&event);
            }
        })?;
        {
            let (requests, incoming) = crossbeam_channel::unbounded::<control::Request>();
            let forward = inbox.clone();
            ha.spawn("perfplus-ha-forward", move || {
                for request in incoming {
                    if forward.send(Inbox::Control(request)).is_err() {
                        return;
                    }
                }
            })?;
            let key = key.clone();
            let stop = stop.clone();
            let warn = to_handler.clone();
            ha.spawn("perfplus-control", move || {
                control::serve(&listener, &key, local, &stop, &requests, &|why| {
                    let _ = warn.send(HaEvent::Warning(why));
                });
            })?;
        }
        let peers: BTreeMap<NodeId, Peer> = cluster
            .hosts
            .iter()
            .filter(|h| h.id != local)
            .filter_map(|h| {
                let control = h.control?;
                let name = names.get(&h.id).cloned().unwrap_or_default();
                Some((
                    h.id,
                    Peer::spawn(h.id, name, control, h.migration, key.clone(), local),
                ))
            })
            .collect();
        let cluster_orchestrates = cluster.orchestrates();
        let ha_loop = HaLoop {
            local,
            local_name: names.get(&local).cloned().unwrap_or_default(),
            cluster,
            names,
            orchestrator,
            drivers: local_drivers,
            peers,
            inbox: inbox.clone(),
            to_handler,
            status,
            started: Instant::now(),
            live: Vec::new(),
            quorum: None,
            votes,
            held: Vec::new(),
            joined: false,
            next_report: Instant::now(),
            monitoring: false,
            orchestrate: cluster_orchestrates,
            actions: 0,
        };
        ha.spawn("perfplus-ha", move || ha_loop.run(&from_all))?;
        Ok(ha)
    }

    fn spawn(&mut self, name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), HaError> {
        match std::thread::Builder::new().name(name.into()).spawn(body) {
            Ok(handle) => {
                self.threads.push(handle);
                Ok(())
            }
            Err(e) => {
                self.shutdown();
                Err(HaError::Thread(e))
            }
        }
    }

    /// The cluster as this node sees it.
    pub fn status(&self) -> ClusterStatus {
        self.status.lock().clone()
    }

    /// The membership node underneath.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Put `host` in standby (its guests are evacuated by live migration)
    /// or take it out, cluster-wide.
    pub fn standby(&self, host: NodeId, on: bool) {
        let _ = self.inbox.send(Inbox::Standby { host, on });
    }

    /// Stop the resources running here, leave the cluster cleanly and join
    /// every thread. To keep guests running, put this host in standby
    /// first and wait until it runs nothing. Idempotent.
    pub fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.inbox.send(Inbox::Stop(done)).is_ok() {
            // Stopping resources may take the drivers' stop timeouts.
            let _ = wait.recv_timeout(Duration::from_secs(300));
        }
        self.node.stop();
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self
            .inbox
            .send(Inbox::Stop(crossbeam_channel::bounded(1).0));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for HaNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a resource is believed to run before anyone reported: its home,
/// else its first allowed host, else the lowest node.
fn initial_host(
    cluster: &ClusterConfig,
    spec: &crate::orchestrator::ResourceSpec,
    names: &BTreeMap<NodeId, String>,
) -> NodeId {
    spec.home
        .or_else(|| spec.allowed_hosts.first().copied())
        .or_else(|| cluster.hosts.first().map(|h| h.id))
        .or_else(|| names.keys().next().copied())
        .unwrap_or(NodeId(0))
}

/// How a finished migration is described in events and admin replies.
fn describe_summary(summary: &crate::driver::MigrationSummary) -> String {
    match (summary.downtime_us, summary.bytes) {
        (Some(us), Some(bytes)) => format!(
            "downtime {}.{:03} ms, {bytes} bytes sent",
            us / 1000,
            us % 1000
        ),
        (Some(us), None) => format!("downtime {}.{:03} ms", us / 1000, us % 1000),
        (None, Some(bytes)) => format!("{bytes} bytes sent"),
        (None, None) => "moved (the driver does not measure downtime)".into(),
    }
}

/// A peer's outbox: one thread per peer sends its messages in order, so a
/// dead peer's timeouts delay nobody else.
struct Peer {
    name: String,
    migration: Option<SocketAddr>,
    queue: Sender<Outgoing>,
}

struct Outgoing {
    message: Message,
    /// Where the reply (or the failure) goes, if anyone waits for it.
    reply: Option<Sender<Result<Message, String>>>,
}

impl Peer {
    fn spawn(
        id: NodeId,
        name: String,
        control: SocketAddr,
        migration: Option<SocketAddr>,
        key: ClusterKey,
        local: NodeId,
    ) -> Peer {
        let (queue, outgoing) = crossbeam_channel::unbounded::<Outgoing>();
        let thread_name = format!("perfplus-peer{}", id.0);
        // Detached: it ends when the HA loop drops the queue.
        let _ = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                for out in outgoing {
                    let result = control::exchange(&key, control, local, &out.message)
                        .map_err(|e| e.to_string());
                    if let Some(reply) = out.reply {
                        let _ = reply.send(result);
                    }
                }
            });
        Peer {
            name,
            migration,
            queue,
        }
    }

    fn send(&self, message: Message) {
        let _ = self.queue.send(Outgoing {
            message,
            reply: None,
        });
    }

    fn ask(&self, message: Message) -> ChannelReceiver<Result<Message, String>> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let _ = self.queue.send(Outgoing {
            message,
            reply: Some(reply),
        });
        answer
    }

    fn host(&self) -> PeerHost {
        PeerHost {
            name: self.name.clone(),
            migration_address: self.migration.map(|a| a.to_string()),
        }
    }
}

struct HaLoop {
    local: NodeId,
    local_name: String,
    cluster: ClusterConfig,
    names: BTreeMap<NodeId, String>,
    orchestrator: Orchestrator,
    drivers: BTreeMap<String, SharedDriver>,
    peers: BTreeMap<NodeId, Peer>,
    inbox: Sender<Inbox>,
    to_handler: Sender<HaEvent>,
    status: Arc<Mutex<ClusterStatus>>,
    started: Instant,
    /// The last view membership announced.
    live: Vec<NodeId>,
    /// The last quorum membership announced (`None` before the first).
    quorum: Option<Quorum>,
    /// Each node's votes, to tell whether `quorum` was computed for `live`.
    votes: BTreeMap<NodeId, u32>,
    /// Membership inputs held back until the orchestrator knows the view
    /// and the quorum they belong to (see [`HaLoop::on_membership`]).
    held: Vec<Input>,
    joined: bool,
    next_report: Instant,
    monitoring: bool,
    /// Whether this host takes part in deciding (else it only carries out
    /// requests: Pacemaker or an admin decides).
    orchestrate: bool,
    /// Local actions begun or ended so far (see [`Work::Monitored`]).
    actions: u64,
}

impl HaLoop {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn emit(&self, event: HaEvent) {
        let _ = self.to_handler.send(event);
    }

    fn run(mut self, inbox: &ChannelReceiver<Inbox>) {
        self.join_cluster();
        loop {
            let wake = self
                .orchestrator
                .next_wakeup_ms()
                .map(|t| Duration::from_millis(t.saturating_sub(self.now_ms())))
                .unwrap_or(REPORT_INTERVAL)
                .min(self.next_report.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let outputs = match inbox.recv_timeout(wake) {
                Ok(Inbox::Stop(done)) => {
                    self.stop_local_resources();
                    let _ = done.send(());
                    return;
                }
                Ok(Inbox::Membership(event)) => self.on_membership(event),
                Ok(Inbox::Control(request)) => self.on_control(request),
                Ok(Inbox::Work(work)) => self.on_work(work),
                Ok(Inbox::Standby { host, on }) => {
                    self.broadcast(&Message::Standby { host, on });
                    self.input(Input::Standby { host, on })
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = self.now_ms();
                    self.orchestrator.tick(now)
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.act(outputs);
            if Instant::now() >= self.next_report {
                self.next_report = Instant::now() + REPORT_INTERVAL;
                self.monitor();
            }
            self.publish_status();
        }
    }

    fn input(&mut self, input: Input) -> Vec<Output> {
        let now = self.now_ms();
        self.orchestrator.handle(now, input)
    }

    /// Learn the cluster's state from the peers, on a worker: every answer
    /// within [`JOIN_WAIT`] counts. Placements a peer has confirmed are
    /// adopted; this host then starts the resources whose home it is and
    /// that nobody confirmed running elsewhere (a cold start if nobody
    /// confirmed anything).
    fn join_cluster(&mut self) {
        let answers: Vec<_> = self
            .peers
            .values()
            .map(|p| p.ask(Message::StatusRequest))
            .collect();
        let inbox = self.inbox.clone();
        let _ = std::thread::Builder::new()
            .name("perfplus-join".into())
            .spawn(move || {
                let deadline = Instant::now() + JOIN_WAIT;
                let mut known = Vec::new();
                for answer in answers {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Ok(Ok(Message::Status { json })) = answer.recv_timeout(left) {
                        if let Ok(status) = ClusterStatus::from_json(&json) {
                            known.push(status);
                        }
                    }
                }
                let _ = inbox.send(Inbox::Work(Work::Joined(known)));
            });
    }

    /// Feed membership's news to the orchestrator, one consistent state at
    /// a time. Membership reports one change as several events (a death is
    /// `MEMBER_DEAD`, then the new `VIEW`, then the new `QUORUM`), and the
    /// orchestrator decides after every input: fed one by one, a host that
    /// just lost its peers would decide for a moment with the old quorum
    /// and the new view (the lowest live node of a partition it believes
    /// quorate: itself), and restart guests that still run on the other
    /// side. So the orchestrator is told a view only together with the
    /// quorum membership computed for it (same votes), a death only once
    /// that view no longer holds the dead host, and everything else in
    /// order behind them.
    fn on_membership(&mut self, event: MembershipEvent) -> Vec<Output> {
        if !self.orchestrate {
            // The orchestrator never hears of views, so it never decides;
            // it still tracks what runs where from the hosts' reports.
            return Vec::new();
        }
        match event {
            MembershipEvent::ViewChanged { members, .. } => {
                self.live = members;
                self.release()
            }
            MembershipEvent::QuorumChanged(quorum) => {
                self.quorum = Some(quorum);
                self.release()
            }
            MembershipEvent::HealthChanged { node, health } => {
                self.feed_or_hold(Input::Health { host: node, health })
            }
            MembershipEvent::MemberDead { node, .. } | MembershipEvent::MemberLeft { node, .. } => {
                self.feed_or_hold(Input::HostDead(node))
            }
            MembershipEvent::RecoveryAllowed { node, .. } => {
                self.feed_or_hold(Input::RecoveryAllowed(node))
            }
            _ => Vec::new(),
        }
    }

    /// Whether the last quorum was computed for the last view.
    fn view_settled(&self) -> bool {
        let votes: u32 = self
            .live
            .iter()
            .map(|n| self.votes.get(n).copied().unwrap_or(0))
            .sum();
        self.quorum.is_some_and(|q| q.votes == votes)
    }

    fn feed_or_hold(&mut self, input: Input) -> Vec<Output> {
        let dead_in_view = matches!(&input, Input::HostDead(n) if self.live.contains(n));
        if !self.held.is_empty() || !self.view_settled() || dead_in_view {
            self.held.push(input);
            return Vec::new();
        }
        self.input(input)
    }

    /// If the view and the quorum agree: tell the orchestrator, then feed
    /// what was held, in order. A held death of a host the settled view
    /// holds again is dropped (it came back).
    fn release(&mut self) -> Vec<Output> {
        let Some(quorum) = self.quorum.filter(|_| self.view_settled()) else {
            return Vec::new();
        };
        let mut outputs = self.input(Input::View {
            live: self.live.clone(),
            quorate: quorum.quorate,
        });
        for input in std::mem::take(&mut self.held) {
            if matches!(&input, Input::HostDead(n) if self.live.contains(n)) {
                continue;
            }
            outputs.extend(self.input(input));
        }
        outputs
    }

    fn on_control(&mut self, request: control::Request) -> Vec<Output> {
        let ack = |ok: bool, message: &str| Message::Ack {
            ok,
            message: message.into(),
        };
        let control::Request {
            from,
            message,
            reply,
        } = request;
        let (answer, outputs) = match message {
            Message::Migrate { resource, to } => {
                if !self.drivers.contains_key(&resource) {
                    (
                        ack(false, &format!("unknown resource {resource}")),
                        Vec::new(),
                    )
                } else if !self.peers.contains_key(&to) {
                    (
                        ack(false, &format!("unknown destination node {}", to.0)),
                        Vec::new(),
                    )
                } else if from == NodeId(0) {
                    // An admin waits for the outcome.
                    self.migrate(resource, to, Some(reply));
                    return Vec::new();
                } else {
                    self.migrate(resource, to, None);
                    (ack(true, ""), Vec::new())
                }
            }
            Message::Start { resource } => {
                if !self.drivers.contains_key(&resource) {
                    (
                        ack(false, &format!("unknown resource {resource}")),
                        Vec::new(),
                    )
                } else if from == NodeId(0) {
                    self.start(resource, Some(reply));
                    return Vec::new();
                } else {
                    self.start(resource, None);
                    (ack(true, ""), Vec::new())
                }
            }
            Message::Stop { resource } => {
                if self.drivers.contains_key(&resource) {
                    self.stop_resource(resource, reply);
                    return Vec::new();
                }
                (
                    ack(false, &format!("unknown resource {resource}")),
                    Vec::new(),
                )
            }
            Message::Probe { resource } => {
                if self.drivers.contains_key(&resource) {
                    // Answered by a worker once the driver has looked.
                    self.probe(resource, reply);
                    return Vec::new();
                }
                (
                    ack(false, &format!("unknown resource {resource}")),
                    Vec::new(),
                )
            }
            Message::Adopt { resource, from } => {
                // Answered by the worker once the driver confirms.
                self.adopt(resource, from, reply);
                return Vec::new();
            }
            Message::Report { host, running } => {
                let mut outputs = Vec::new();
                for resource in running {
                    outputs.extend(self.input(Input::Running { resource, host }));
                }
                (ack(true, ""), outputs)
            }
            Message::MigrationDone {
                resource, to, ok, ..
            } => {
                let outputs = self.input(Input::MigrationDone { resource, to, ok });
                (ack(true, ""), outputs)
            }
            Message::StartDone { resource, ok } => {
                let outputs = self.input(Input::StartDone {
                    resource,
                    host: from,
                    ok,
                });
                (ack(true, ""), outputs)
            }
            Message::Standby { host, on } => {
                if from == NodeId(0) {
                    // An admin asked this node: tell every host.
                    self.broadcast(&Message::Standby { host, on });
                }
                (ack(true, ""), self.input(Input::Standby { host, on }))
            }
            Message::StatusRequest => (
                Message::Status {
                    json: self.status.lock().to_json(),
                },
                Vec::new(),
            ),
            Message::Status { .. } | Message::Probed { .. } | Message::Ack { .. } => {
                (ack(false, "not a request"), Vec::new())
            }
        };
        let _ = reply.send(answer);
        outputs
    }

    fn on_work(&mut self, work: Work) -> Vec<Output> {
        match work {
            Work::Monitored { running, actions } => {
                self.monitoring = false;
                if actions != self.actions {
                    return Vec::new();
                }
                let report = Message::Report {
                    host: self.local,
                    running: running.clone(),
                };
                self.broadcast(&report);
                let mut outputs = Vec::new();
                for resource in running {
                    outputs.extend(self.input(Input::Running {
                        resource,
                        host: self.local,
                    }));
                }
                outputs
            }
            Work::Migrated {
                resource,
                to,
                ok,
                detail,
                downtime_us,
                bytes,
            } => {
                self.actions += 1;
                self.emit(HaEvent::ActionFinished {
                    action: Action::Migrate {
                        resource: resource.clone(),
                        from: self.local,
                        to,
                    },
                    ok,
                    detail,
                });
                self.broadcast(&Message::MigrationDone {
                    resource: resource.clone(),
                    to,
                    ok,
                    downtime_us,
                    bytes,
                });
                self.input(Input::MigrationDone { resource, to, ok })
            }
            Work::Started {
                resource,
                ok,
                detail,
            } => {
                self.actions += 1;
                self.emit(HaEvent::ActionFinished {
                    action: Action::Start {
                        resource: resource.clone(),
                        on: self.local,
                    },
                    ok,
                    detail,
                });
                self.broadcast(&Message::StartDone {
                    resource: resource.clone(),
                    ok,
                });
                self.input(Input::StartDone {
                    resource,
                    host: self.local,
                    ok,
                })
            }
            Work::Joined(statuses) => {
                self.joined = true;
                let mut outputs = Vec::new();
                for status in &statuses {
                    for r in status.resources.iter().filter(|r| r.confirmed) {
                        if let (Some(host), "running") = (r.host, r.state.as_str()) {
                            outputs.extend(self.input(Input::Running {
                                resource: r.name.clone(),
                                host: NodeId(host),
                            }));
                        }
                    }
                }
                if !self.orchestrate {
                    return outputs;
                }
                let homes: Vec<String> = self
                    .cluster
                    .resources
                    .iter()
                    .filter(|r| {
                        !self.orchestrator.is_confirmed(&r.spec.name)
                            && self.orchestrator.placement(&r.spec.name)
                                == Some(Placement::Running(self.local))
                    })
                    .map(|r| r.spec.name.clone())
                    .collect();
                if !homes.is_empty() {
                    self.emit(HaEvent::ColdStart);
                }
                for name in homes {
                    self.start_quietly(name);
                }
                outputs
            }
            Work::ResourcesStopped => Vec::new(),
            Work::Stopped => {
                self.actions += 1;
                Vec::new()
            }
            Work::Undelivered(input) => self.input(input),
        }
    }

    /// Carry out the orchestrator's outputs (actions only arrive here on
    /// the decider).
    fn act(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Event(event) => self.emit(HaEvent::Orchestrator(event)),
                Output::Act(action) => self.dispatch(action),
            }
        }
    }

    fn dispatch(&mut self, action: Action) {
        match &action {
            Action::Migrate { resource, from, to } if *from == self.local => {
                self.migrate(resource.clone(), *to, None);
            }
            Action::Start { resource, on } if *on == self.local => {
                self.start(resource.clone(), None);
            }
            Action::Migrate { resource, from, to } => {
                self.delegate(
                    *from,
                    Message::Migrate {
                        resource: resource.clone(),
                        to: *to,
                    },
                    Input::MigrationDone {
                        resource: resource.clone(),
                        to: *to,
                        ok: false,
                    },
                );
            }
            Action::Start { resource, on } => {
                self.delegate(
                    *on,
                    Message::Start {
                        resource: resource.clone(),
                    },
                    Input::StartDone {
                        resource: resource.clone(),
                        host: *on,
                        ok: false,
                    },
                );
            }
        }
    }

    /// Send an action to the host that must carry it out; if it cannot be
    /// told, feed `on_failure` back so the orchestrator tries again.
    fn delegate(&mut self, host: NodeId, message: Message, on_failure: Input) {
        let Some(peer) = self.peers.get(&host) else {
            let outputs = self.input(on_failure);
            self.act(outputs);
            return;
        };
        let answer = peer.ask(message);
        let inbox = self.inbox.clone();
        let to_handler = self.to_handler.clone();
        let _ = std::thread::Builder::new()
            .name("perfplus-delegate".into())
            .spawn(move || {
                let failed = match answer.recv() {
                    Ok(Ok(Message::Ack { ok: true, .. })) => None,
                    Ok(Ok(Message::Ack { message, .. })) => Some(message),
                    Ok(Ok(_)) => Some("unexpected reply".into()),
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("the peer's outbox closed".into()),
                };
                if let Some(why) = failed {
                    let _ = to_handler.send(HaEvent::Warning(format!(
                        "node {} did not take the action: {why}",
                        host.0
                    )));
                    let _ = inbox.send(Inbox::Work(Work::Undelivered(on_failure)));
                }
            });
    }

    fn broadcast(&self, message: &Message) {
        for peer in self.peers.values() {
            peer.send(message.clone());
        }
    }

    fn worker(&mut self, name: &str, body: impl FnOnce() -> Work + Send + 'static) {
        if name != "perfplus-monitor" {
            self.actions += 1;
        }
        let inbox = self.inbox.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = inbox.send(Inbox::Work(body()));
            });
        if let Err(e) = spawned {
            self.emit(HaEvent::Warning(format!(
                "cannot start a worker thread: {e}"
            )));
        }
    }

    fn driver_resource(&self, name: &str) -> Option<(SharedDriver, DriverResource)> {
        let driver = self.drivers.get(name)?.clone();
        let config = self.cluster.resource(name)?;
        Some((
            driver,
            DriverResource {
                name: name.into(),
                params: config.params.clone(),
                memory_mib: Some(config.spec.memory_mib),
            },
        ))
    }

    /// Move `resource` from here to `to` on a worker; `admin` (if an admin
    /// asked) gets the outcome.
    fn migrate(&mut self, resource: String, to: NodeId, admin: Option<Sender<Message>>) {
        let (Some((driver, r)), Some(peer)) =
            (self.driver_resource(&resource), self.peers.get(&to))
        else {
            return;
        };
        let action = Action::Migrate {
            resource: resource.clone(),
            from: self.local,
            to,
        };
        self.emit(HaEvent::ActionStarted(action));
        let target = peer.host();
        let adopt = peer.queue.clone();
        let local = self.local;
        self.worker("perfplus-migrate", move || {
            let moved = driver.lock().migrate_to(&r, &target);
            let (ok, detail, downtime_us, bytes) = match moved {
                Err(e) => (false, e.to_string(), 0, 0),
                Ok(summary) => {
                    // The target confirms the guest runs there.
                    let (reply, answer) = crossbeam_channel::bounded(1);
                    let _ = adopt.send(Outgoing {
                        message: Message::Adopt {
                            resource: r.name.clone(),
                            from: local,
                        },
                        reply: Some(reply),
                    });
                    let confirmed = match answer.recv_timeout(ADOPT_TIMEOUT) {
                        Ok(Ok(Message::Ack { ok: true, .. })) => Ok(()),
                        Ok(Ok(Message::Ack { message, .. })) => Err(message),
                        Ok(Ok(_)) => Err("unexpected reply".into()),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err("no answer".into()),
                    };
                    let downtime_us = summary.downtime_us.unwrap_or(0);
                    let bytes = summary.bytes.unwrap_or(0);
                    match confirmed {
                        Ok(()) => (true, describe_summary(&summary), downtime_us, bytes),
                        Err(why) => (
                            false,
                            format!("moved, but {} did not confirm it runs: {why}", target.name),
                            downtime_us,
                            bytes,
                        ),
                    }
                }
            };
            if let Some(admin) = admin {
                let _ = admin.send(Message::Ack {
                    ok,
                    message: detail.clone(),
                });
            }
            Work::Migrated {
                resource: r.name,
                to,
                ok,
                detail,
                downtime_us,
                bytes,
            }
        });
    }

    fn adopt(&mut self, resource: String, from: NodeId, reply: Sender<Message>) {
        let source = self
            .peers
            .get(&from)
            .map(Peer::host)
            .unwrap_or_else(|| PeerHost {
                name: self.names.get(&from).cloned().unwrap_or_default(),
                migration_address: None,
            });
        let Some((driver, r)) = self.driver_resource(&resource) else {
            let _ = reply.send(Message::Ack {
                ok: false,
                message: format!("unknown resource {resource}"),
            });
            return;
        };
        let _ = std::thread::Builder::new()
            .name("perfplus-adopt".into())
            .spawn(move || {
                let answer = match driver.lock().migrate_from(&r, &source) {
                    Ok(()) => Message::Ack {
                        ok: true,
                        message: String::new(),
                    },
                    Err(e) => Message::Ack {
                        ok: false,
                        message: e.to_string(),
                    },
                };
                let _ = reply.send(answer);
            });
    }

    fn start(&mut self, resource: String, admin: Option<Sender<Message>>) {
        self.emit(HaEvent::ActionStarted(Action::Start {
            resource: resource.clone(),
            on: self.local,
        }));
        self.start_with(resource, admin);
    }

    fn start_quietly(&mut self, resource: String) {
        self.start_with(resource, None);
    }

    fn start_with(&mut self, resource: String, admin: Option<Sender<Message>>) {
        let Some((driver, r)) = self.driver_resource(&resource) else {
            return;
        };
        self.worker("perfplus-start", move || {
            let result = driver.lock().start(&r);
            let detail = result
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            if let Some(admin) = admin {
                let _ = admin.send(Message::Ack {
                    ok: result.is_ok(),
                    message: detail.clone(),
                });
            }
            Work::Started {
                resource: r.name,
                ok: result.is_ok(),
                detail,
            }
        });
    }

    /// Stop `resource` here (an admin or an OCF agent asked) and answer.
    fn stop_resource(&mut self, resource: String, reply: Sender<Message>) {
        let Some((driver, r)) = self.driver_resource(&resource) else {
            return;
        };
        self.worker("perfplus-stop", move || {
            let result = driver.lock().stop(&r);
            let _ = reply.send(Message::Ack {
                ok: result.is_ok(),
                message: result.err().map(|e| e.to_string()).unwrap_or_default(),
            });
            Work::Stopped
        });
    }

    /// Ask `resource`'s driver whether it runs here and answer (waits for
    /// an action in progress on it to end, as an OCF monitor would).
    fn probe(&self, resource: String, reply: Sender<Message>) {
        let Some((driver, r)) = self.driver_resource(&resource) else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("perfplus-probe".into())
            .spawn(move || {
                let answer = match driver.lock().monitor(&r) {
                    Ok(status) => Message::Probed {
                        resource: r.name,
                        running: status == ResourceStatus::Running,
                    },
                    Err(e) => Message::Ack {
                        ok: false,
                        message: e.to_string(),
                    },
                };
                let _ = reply.send(answer);
            });
        if let Err(e) = spawned {
            self.emit(HaEvent::Warning(format!(
                "cannot start a worker thread: {e}"
            )));
        }
    }

    /// Check every resource's driver (skipping busy ones) and report.
    fn monitor(&mut self) {
        if self.monitoring || !self.joined {
            return;
        }
        self.monitoring = true;
        let actions = self.actions;
        let work: Vec<(SharedDriver, DriverResource)> = self
            .drivers
            .keys()
            .filter_map(|name| self.driver_resource(name))
            .collect();
        self.worker("perfplus-monitor", move || {
            let mut running = Vec::new();
            for (driver, r) in work {
                // A driver busy moving or starting its guest is skipped: the
                // action's own result will say where it runs.
                if let Some(mut d) = driver.try_lock() {
                    if matches!(d.monitor(&r), Ok(ResourceStatus::Running)) {
                        running.push(r.name.clone());
                    }
                }
            }
            Work::Monitored { running, actions }
        });
    }

    fn stop_local_resources(&mut self) {
        for name in self.drivers.keys().cloned().collect::<Vec<_>>() {
            if let Some((driver, r)) = self.driver_resource(&name) {
                let mut d = driver.lock();
                if matches!(d.monitor(&r), Ok(ResourceStatus::Running)) {
                    if let Err(e) = d.stop(&r) {
                        self.emit(HaEvent::Warning(format!("stopping {name}: {e}")));
                    }
                }
            }
        }
        let _ = self.inbox.send(Inbox::Work(Work::ResourcesStopped));
    }

    fn publish_status(&self) {
        let status = ClusterStatus::from_orchestrator(
            self.local,
            &self.local_name,
            &self.orchestrator,
            &self.names,
        );
        *self.status.lock() = status;
    }
}
