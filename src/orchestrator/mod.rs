//! The orchestrator: who runs which resource (guest) where, and what to do
//! when a host loses its uplink, dies, or is put in standby. Sans-io: it
//! takes [`Input`]s stamped with the time and returns [`Output`]s; it never
//! reads a clock, sleeps or touches a socket.
//!
//! ```text
//!  membership view, health, deaths ──┐
//!  recovery allowed (after fencing)  │      ┌─▶ Action::Migrate / Start
//!  resource reports, action results ─┼─▶ Orchestrator ─┤
//!  admin: standby on/off             │      └─▶ Event (every decision, with its reason)
//!  tick(now) ────────────────────────┘
//! ```
//!
//! Every host runs one; only the *decider* acts: the lowest live host id in
//! a quorate partition (deterministic, so two hosts never decide at once in
//! one partition, and a partition without quorum decides nothing). The
//! others keep the same state so that any of them can take over.
//!
//! Decisions:
//! - **uplink lost**: a live host whose ping health stays below the best
//!   peer's for `uplink_grace_ms` while the cluster link still works has
//!   its resources live-migrated, one at a time, to the healthiest host with
//!   room;
//! - **host dead**: its resources are restarted on the best live hosts
//!   only once membership allows recovery (the host is fenced, or left
//!   cleanly, and this partition is quorate): a host that is only cut off
//!   may still be running them. Fencing itself belongs to membership
//!   ([`crate::membership`]), which owns the quorum and fencing rules;
//! - **standby**: the host is evacuated by live migration;
//! - **failback** (only with `auto_failback`): a resource returns to its
//!   home host when that host is back and at least as healthy.
//!
//! Automatic live migrations (uplink, failback) move a resource at most once
//! per `min_move_interval_ms`, so a flapping link cannot bounce guests back
//! and forth. Recovery after a death and an admin's standby are not delayed
//! by it: the first restores a service that is down, the second is an order.
//! A failed attempt is not a move (the guest stayed put), but it is retried
//! only after `migration_retry_ms`, so a broken destination cannot keep the
//! link busy.

mod placement;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

pub use crate::detector::Health;
/// A host is a cluster node: the orchestrator names hosts by node id.
pub use crate::membership::NodeId as HostId;

/// A host the orchestrator may place resources on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Its id.
    pub id: HostId,
    /// Guest memory it can hold, in MiB.
    pub capacity_mib: u64,
}

/// A resource (a guest domain) under the orchestrator's care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    /// Unique name (the domain name).
    pub name: String,
    /// Guest memory, in MiB.
    pub memory_mib: u64,
    /// Where it belongs; failback returns it there.
    pub home: Option<HostId>,
    /// If not empty, the only hosts it may run on (pinning).
    pub allowed_hosts: Vec<HostId>,
    /// A sticky resource never fails back, even with `auto_failback`.
    pub sticky: bool,
}

/// Tunables; the defaults suit a small Xen cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorConfig {
    /// The host this instance runs on.
    pub local: HostId,
    /// Every configured host.
    pub hosts: Vec<HostSpec>,
    /// How long a host's health must stay below the best peer's before its
    /// resources move (filters a single lost ping).
    pub uplink_grace_ms: u64,
    /// Automatic live migrations move one resource at most once per this.
    pub min_move_interval_ms: u64,
    /// Move resources back to their home host when it recovers.
    pub auto_failback: bool,
    /// Live migrations out of one host at a time (they share its link).
    pub max_migrations_per_host: usize,
    /// How long a resource waits after a failed migration or start before
    /// the next attempt.
    pub migration_retry_ms: u64,
}

impl OrchestratorConfig {
    /// Defaults for `local` among `hosts`.
    pub fn new(local: HostId, hosts: Vec<HostSpec>) -> Self {
        Self {
            local,
            hosts,
            uplink_grace_ms: 1_000,
            min_move_interval_ms: 60_000,
            auto_failback: false,
            max_migrations_per_host: 1,
            migration_retry_ms: 5_000,
        }
    }
}

/// What the orchestrator is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The local view of the cluster: which hosts are live, and whether this
    /// partition has quorum.
    View {
        /// Live hosts, including the local one.
        live: Vec<HostId>,
        /// Whether this partition holds quorum.
        quorate: bool,
    },
    /// A host's ping-node health.
    Health {
        /// The host.
        host: HostId,
        /// Its health.
        health: Health,
    },
    /// Membership declared a host dead (or cut off from this partition).
    HostDead(HostId),
    /// Membership allows recovering a dead host's resources: it is fenced
    /// (or left cleanly) and this partition is quorate.
    RecoveryAllowed(HostId),
    /// An admin put a host in standby (`true`) or took it out (`false`).
    Standby {
        /// The host.
        host: HostId,
        /// Standby on or off.
        on: bool,
    },
    /// A host reports that it runs a resource (after a start, a migration,
    /// or on joining).
    Running {
        /// The resource.
        resource: String,
        /// Where it runs.
        host: HostId,
    },
    /// A migration ended (whoever asked for it: the decider or an admin);
    /// on failure the guest still runs at the source.
    MigrationDone {
        /// The resource.
        resource: String,
        /// Its destination.
        to: HostId,
        /// Whether it now runs at the destination.
        ok: bool,
    },
    /// A start ended (a restart after a death, or an admin's start).
    StartDone {
        /// The resource.
        resource: String,
        /// Where it was started.
        host: HostId,
        /// Whether it now runs.
        ok: bool,
    },
}

/// What the orchestrator asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Live-migrate a resource.
    Migrate {
        /// The resource.
        resource: String,
        /// Where it runs now.
        from: HostId,
        /// Where it should go.
        to: HostId,
    },
    /// Start a resource (its last host died and was fenced).
    Start {
        /// The resource.
        resource: String,
        /// Where.
        on: HostId,
    },
}

/// Why a decision was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The source host's uplink health fell below a peer's.
    UplinkLost {
        /// The host with the failing uplink.
        host: HostId,
        /// Its health.
        health: Health,
        /// The best health among its peers.
        best_peer_health: Health,
    },
    /// The host died and membership allowed recovery (it was fenced).
    HostFenced(HostId),
    /// The host is in standby.
    Standby(HostId),
    /// The resource returns to its home host.
    Failback(HostId),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::UplinkLost {
                host,
                health,
                best_peer_health,
            } => write!(
                f,
                "{host} lost its uplink (reaches {} of {} ping nodes; a peer reaches {})",
                health.reachable, health.configured, best_peer_health.reachable
            ),
            Reason::HostFenced(h) => write!(f, "{h} died and was fenced"),
            Reason::Standby(h) => write!(f, "{h} is in standby"),
            Reason::Failback(h) => write!(f, "its home {h} is back"),
        }
    }
}

/// What happened, for logs and user callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An action was decided, with its reason.
    Decided {
        /// The action.
        action: Action,
        /// Why.
        reason: Reason,
    },
    /// A resource needs to move but no host may take it now.
    NoRoom {
        /// The resource.
        resource: String,
        /// Why it needs to move.
        reason: Reason,
    },
    /// A resource waits: it moved too recently (anti-flapping).
    Deferred {
        /// The resource.
        resource: String,
        /// When it may move again.
        until_ms: u64,
        /// Why it needs to move.
        reason: Reason,
    },
    /// Resources of a dead host wait until membership allows recovery
    /// (fencing confirmed).
    AwaitingRecovery(HostId),
    /// This partition lost quorum: the orchestrator decides nothing.
    QuorumLost,
    /// This partition has quorum again.
    QuorumRegained,
    /// This host became the decider of its partition.
    BecameDecider,
    /// A migration failed; the guest still runs at the source.
    MigrationFailed {
        /// The resource.
        resource: String,
        /// Where it still runs.
        host: HostId,
    },
    /// A restart failed.
    StartFailed {
        /// The resource.
        resource: String,
        /// Where it was to start.
        host: HostId,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Migrate { resource, from, to } => {
                write!(
                    f,
                    "migrate {resource} from node {} to node {}",
                    from.0, to.0
                )
            }
            Action::Start { resource, on } => write!(f, "start {resource} on node {}", on.0),
        }
    }
}

/// One line per event, `KIND ...: reason`, as daemons log them.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Decided { action, reason } => write!(f, "DECIDED {action}: {reason}"),
            Event::NoRoom { resource, reason } => {
                write!(
                    f,
                    "NO_ROOM {resource} must move ({reason}) but no host may take it"
                )
            }
            Event::Deferred {
                resource,
                until_ms,
                reason,
            } => write!(
                f,
                "DEFERRED {resource} ({reason}): it moved recently; not before t={until_ms} ms"
            ),
            Event::AwaitingRecovery(h) => {
                write!(
                    f,
                    "AWAITING_RECOVERY node={}: its guests wait for fencing",
                    h.0
                )
            }
            Event::QuorumLost => f.write_str("QUORUM_LOST: deciding nothing"),
            Event::QuorumRegained => f.write_str("QUORUM_REGAINED"),
            Event::BecameDecider => f.write_str("DECIDER: this node decides for its partition"),
            Event::MigrationFailed { resource, host } => write!(
                f,
                "MIGRATION_FAILED {resource}: it still runs on node {}",
                host.0
            ),
            Event::StartFailed { resource, host } => {
                write!(f, "START_FAILED {resource} on node {}", host.0)
            }
        }
    }
}

/// An orchestrator output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Do this (only the decider emits actions).
    Act(Action),
    /// Tell the user.
    Event(Event),
}

/// Invalid orchestrator configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrchestratorError {
    /// Two hosts share an id.
    #[error("{0} is configured twice")]
    DuplicateHost(HostId),
    /// Two resources share a name.
    #[error("resource {0:?} is configured twice")]
    DuplicateResource(String),
    /// A resource names a host that is not configured.
    #[error("resource {resource:?} names {host}, which is not a configured host")]
    UnknownHost {
        /// The resource.
        resource: String,
        /// The host.
        host: HostId,
    },
    /// The local host is not among the configured hosts.
    #[error("the local {0} is not a configured host")]
    LocalNotConfigured(HostId),
}

/// A host as the orchestrator sees it (for status displays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostView {
    /// The host.
    pub id: HostId,
    /// In the view.
    pub live: bool,
    /// Its ping health.
    pub health: Health,
    /// In standby.
    pub standby: bool,
    /// Dead, its resources waiting for recovery to be allowed.
    pub awaiting_recovery: bool,
    /// Guest memory placed on it, MiB.
    pub used_mib: u64,
    /// Guest memory it can hold, MiB.
    pub capacity_mib: u64,
}

/// Where a resource is, as far as the cluster knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Running on a host.
    Running(HostId),
    /// Being live-migrated (it runs at `from` until the move completes).
    Migrating {
        /// Source.
        from: HostId,
        /// Destination.
        to: HostId,
    },
    /// Being started on a host.
    Starting(HostId),
    /// Its host died: not running anywhere known until fencing confirms.
    Lost(HostId),
}

impl Placement {
    /// Hosts whose memory this placement occupies.
    fn hosts(self) -> impl Iterator<Item = HostId> {
        let (a, b) = match self {
            Placement::Running(h) | Placement::Starting(h) => (Some(h), None),
            Placement::Migrating { from, to } => (Some(from), Some(to)),
            Placement::Lost(_) => (None, None),
        };
        a.into_iter().chain(b)
    }
}

#[derive(Debug, Clone)]
struct HostState {
    spec: HostSpec,
    live: bool,
    health: Health,
    /// Since when the health has been below the best peer's.
    degraded_since_ms: Option<u64>,
    standby: bool,
    recovery: Recovery,
}

/// A host's death, as far as recovering its resources goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Not dead.
    None,
    /// Dead; waiting for membership to allow recovery.
    Awaiting,
    /// Dead and fenced: its resources may restart elsewhere.
    Allowed,
}

#[derive(Debug, Clone)]
struct ResourceState {
    spec: ResourceSpec,
    placement: Placement,
    /// When it last completed a move (migration or restart).
    last_move_ms: Option<u64>,
    /// After a failed attempt: not before this time.
    retry_at_ms: Option<u64>,
    /// Whether a host has reported where it runs (else the placement is
    /// the configured assumption of a cold start).
    confirmed: bool,
    /// The deferral last announced (so it is announced once).
    deferred_until_ms: Option<u64>,
}

/// The orchestrator of one host; see the module documentation.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    config: OrchestratorConfig,
    hosts: BTreeMap<HostId, HostState>,
    resources: BTreeMap<String, ResourceState>,
    quorate: bool,
    was_decider: bool,
    now_ms: u64,
}

impl Orchestrator {
    /// An orchestrator for `resources`, each with the host it runs on now.
    /// All hosts start live with full health until the first view says
    /// otherwise; nothing is decided before a quorate view.
    pub fn new(
        config: OrchestratorConfig,
        resources: Vec<(ResourceSpec, HostId)>,
    ) -> Result<Self, OrchestratorError> {
        let mut hosts = BTreeMap::new();
        for spec in &config.hosts {
            let state = HostState {
                spec: spec.clone(),
                live: true,
                health: Health::default(),
                degraded_since_ms: None,
                standby: false,
                recovery: Recovery::None,
            };
            if hosts.insert(spec.id, state).is_some() {
                return Err(OrchestratorError::DuplicateHost(spec.id));
            }
        }
        if !hosts.contains_key(&config.local) {
            return Err(OrchestratorError::LocalNotConfigured(config.local));
        }
        let mut states = BTreeMap::new();
        for (spec, host) in resources {
            let named = spec
                .home
                .into_iter()
                .chain(spec.allowed_hosts.iter().copied());
            for h in named.chain([host]) {
                if !hosts.contains_key(&h) {
                    return Err(OrchestratorError::UnknownHost {
                        resource: spec.name.clone(),
                        host: h,
                    });
                }
            }
            let name = spec.name.clone();
            let state = ResourceState {
                spec,
                placement: Placement::Running(host),
                last_move_ms: None,
                retry_at_ms: None,
                confirmed: false,
                deferred_until_ms: None,
            };
            if states.insert(name.clone(), state).is_some() {
                return Err(OrchestratorError::DuplicateResource(name));
            }
        }
        Ok(Self {
            config,
            hosts,
            resources: states,
            quorate: false,
            was_decider: false,
            now_ms: 0,
        })
    }

    /// Where each resource is.
    pub fn placements(&self) -> impl Iterator<Item = (&str, Placement)> + '_ {
        self.resources
            .iter()
            .map(|(name, r)| (name.as_str(), r.placement))
    }

    /// Where one resource is.
    pub fn placement(&self, resource: &str) -> Option<Placement> {
        self.resources.get(resource).map(|r| r.placement)
    }

    /// Whether a host has confirmed where the resource runs (a report or
    /// an action's result), rather than the cold-start assumption.
    pub fn is_confirmed(&self, resource: &str) -> bool {
        self.resources.get(resource).is_some_and(|r| r.confirmed)
    }

    /// Every host as this orchestrator sees it.
    pub fn hosts(&self) -> impl Iterator<Item = HostView> + '_ {
        self.hosts.values().map(|h| HostView {
            id: h.spec.id,
            live: h.live,
            health: h.health,
            standby: h.standby,
            awaiting_recovery: h.recovery == Recovery::Awaiting,
            used_mib: self.used_mib(h.spec.id),
            capacity_mib: h.spec.capacity_mib,
        })
    }

    /// Whether this partition has quorum, as last told.
    pub fn quorate(&self) -> bool {
        self.quorate
    }

    /// Whether this host decides for its partition now.
    pub fn is_decider(&self) -> bool {
        self.quorate && self.decider() == Some(self.config.local)
    }

    /// The lowest live host id.
    fn decider(&self) -> Option<HostId> {
        self.hosts.values().find(|h| h.live).map(|h| h.spec.id)
    }

    /// The earliest time at which [`tick`](Self::tick) may decide something
    /// new (a grace period, an anti-flapping delay or a retry pause ends).
    pub fn next_wakeup_ms(&self) -> Option<u64> {
        let grace = self
            .hosts
            .values()
            .filter_map(|h| h.degraded_since_ms.map(|t| t + self.config.uplink_grace_ms));
        let moves = self.resources.values().flat_map(|r| {
            let next_move = r.last_move_ms.map(|t| t + self.config.min_move_interval_ms);
            next_move.into_iter().chain(r.retry_at_ms)
        });
        grace.chain(moves).filter(|t| *t > self.now_ms).min()
    }

    /// Feed one input at time `now_ms` (monotonic, milliseconds).
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        match input {
            Input::View { live, quorate } => self.on_view(&live, quorate, &mut out),
            Input::Health { host, health } => {
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.health = health;
                }
            }
            Input::HostDead(host) => self.on_dead(host, &mut out),
            Input::RecoveryAllowed(host) => {
                if let Some(h) = self.hosts.get_mut(&host) {
                    if !h.live {
                        h.recovery = Recovery::Allowed;
                    }
                }
            }
            Input::Standby { host, on } => {
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.standby = on;
                }
            }
            Input::Running { resource, host } => {
                if let Some(r) = self.resources.get_mut(&resource) {
                    // A move in flight ends with its own Done input; until
                    // then both ends may report the guest (one paused).
                    if !matches!(
                        r.placement,
                        Placement::Migrating { .. } | Placement::Starting(_)
                    ) {
                        r.placement = Placement::Running(host);
                        r.confirmed = true;
                    }
                }
            }
            Input::MigrationDone { resource, to, ok } => {
                if let Some(r) = self.resources.get_mut(&resource) {
                    if ok {
                        r.placement = Placement::Running(to);
                        r.confirmed = true;
                        r.last_move_ms = Some(self.now_ms);
                    } else if let Placement::Migrating { from, .. } = r.placement {
                        r.placement = Placement::Running(from);
                        r.confirmed = true;
                        r.retry_at_ms = Some(self.now_ms + self.config.migration_retry_ms);
                        out.push(Output::Event(Event::MigrationFailed {
                            resource,
                            host: from,
                        }));
                    }
                }
            }
            Input::StartDone { resource, host, ok } => {
                if let Some(r) = self.resources.get_mut(&resource) {
                    if ok {
                        // A start is not a move between hosts: it does not
                        // hold back the next migration (anti-flapping).
                        r.placement = Placement::Running(host);
                        r.confirmed = true;
                    } else if r.placement == Placement::Starting(host) {
                        // Try again, elsewhere if another host is better.
                        r.placement = Placement::Lost(host);
                        r.retry_at_ms = Some(self.now_ms + self.config.migration_retry_ms);
                        out.push(Output::Event(Event::StartFailed { resource, host }));
                    }
                }
            }
        }
        self.decide(&mut out);
        out
    }

    /// Re-evaluate at time `now_ms` (call at [`next_wakeup_ms`](Self::next_wakeup_ms)).
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        self.decide(&mut out);
        out
    }

    fn on_view(&mut self, live: &[HostId], quorate: bool, out: &mut Vec<Output>) {
        for h in self.hosts.values_mut() {
            let now_live = live.contains(&h.spec.id);
            if now_live && !h.live {
                // Back (a fenced host rebooted, or a partition healed before
                // fencing): it runs nothing we placed elsewhere.
                h.recovery = Recovery::None;
                h.degraded_since_ms = None;
            }
            h.live = now_live;
        }
        if quorate != self.quorate {
            out.push(Output::Event(if quorate {
                Event::QuorumRegained
            } else {
                Event::QuorumLost
            }));
        }
        self.quorate = quorate;
    }

    fn on_dead(&mut self, host: HostId, out: &mut Vec<Output>) {
        let Some(h) = self.hosts.get_mut(&host) else {
            return;
        };
        h.live = false;
        h.degraded_since_ms = None;
        if h.recovery != Recovery::None {
            return;
        }
        h.recovery = Recovery::Awaiting;
        let mut lost_any = false;
        for r in self.resources.values_mut() {
            r.placement = match r.placement {
                Placement::Running(on) | Placement::Starting(on) if on == host => {
                    lost_any = true;
                    Placement::Lost(on)
                }
                // The guest was still at the dead source.
                Placement::Migrating { from, .. } if from == host => {
                    lost_any = true;
                    Placement::Lost(from)
                }
                // The destination died: the guest still runs at the source.
                Placement::Migrating { from, to } if to == host => Placement::Running(from),
                other => other,
            };
        }
        if lost_any {
            out.push(Output::Event(Event::AwaitingRecovery(host)));
        }
    }

    /// The decision pass: run after every input and tick.
    fn decide(&mut self, out: &mut Vec<Output>) {
        let decider = self.is_decider();
        if decider && !self.was_decider {
            out.push(Output::Event(Event::BecameDecider));
        }
        self.was_decider = decider;
        self.track_uplinks();
        if !decider {
            return;
        }
        self.restart_lost(out);
        self.evacuate(out);
    }

    /// Start or stop each host's "health below the best peer's" clock.
    fn track_uplinks(&mut self) {
        let now = self.now_ms;
        let live: Vec<(HostId, u8)> = self
            .hosts
            .values()
            .filter(|h| h.live)
            .map(|h| (h.spec.id, h.health.reachable))
            .collect();
        for h in self.hosts.values_mut() {
            let best_peer = live
                .iter()
                .filter(|(id, _)| *id != h.spec.id)
                .map(|(_, health)| *health)
                .max();
            let degraded = h.live && best_peer.is_some_and(|best| h.health.reachable < best);
            h.degraded_since_ms = match (degraded, h.degraded_since_ms) {
                (true, None) => Some(now),
                (true, since) => since,
                (false, _) => None,
            };
        }
    }

    fn best_peer_health(&self, host: HostId) -> Health {
        self.hosts
            .values()
            .filter(|h| h.live && h.spec.id != host)
            .map(|h| h.health)
            .max_by_key(|health| health.reachable)
            .unwrap_or_default()
    }

    /// Restart the resources of fenced hosts.
    fn restart_lost(&mut self, out: &mut Vec<Output>) {
        let lost: Vec<(String, HostId)> = self
            .resources
            .iter()
            .filter(|(_, r)| r.retry_at_ms.is_none_or(|t| self.now_ms >= t))
            .filter_map(|(name, r)| match r.placement {
                Placement::Lost(h) => Some((name.clone(), h)),
                _ => None,
            })
            .collect();
        for (name, dead) in lost {
            let recovery = self.hosts.get(&dead).map(|h| h.recovery);
            if recovery != Some(Recovery::Allowed) {
                continue;
            }
            let reason = Reason::HostFenced(dead);
            match placement::choose_target(self, &name, placement::Wanted::default()) {
                Some(target) => {
                    if let Some(r) = self.resources.get_mut(&name) {
                        r.placement = Placement::Starting(target);
                    }
                    let action = Action::Start {
                        resource: name,
                        on: target,
                    };
                    out.push(Output::Act(action.clone()));
                    out.push(Output::Event(Event::Decided { action, reason }));
                }
                None => out.push(Output::Event(Event::NoRoom {
                    resource: name,
                    reason,
                })),
            }
        }
    }

    /// Live migrations: standby evacuation, uplink loss, failback.
    fn evacuate(&mut self, out: &mut Vec<Output>) {
        let names: Vec<String> = self.resources.keys().cloned().collect();
        for name in names {
            let Some(Placement::Running(host)) = self.placement(&name) else {
                continue;
            };
            let Some(reason) = self.reason_to_move(&name, host) else {
                continue;
            };
            if self.migrations_from(host) >= self.config.max_migrations_per_host {
                continue;
            }
            let retry_at = self.resources.get(&name).and_then(|r| r.retry_at_ms);
            if retry_at.is_some_and(|t| self.now_ms < t) {
                continue;
            }
            let automatic = !matches!(reason, Reason::Standby(_));
            if automatic {
                if let Some(until_ms) = self.move_allowed_at(&name) {
                    if let Some(r) = self.resources.get_mut(&name) {
                        if r.deferred_until_ms != Some(until_ms) {
                            r.deferred_until_ms = Some(until_ms);
                            out.push(Output::Event(Event::Deferred {
                                resource: name,
                                until_ms,
                                reason,
                            }));
                        }
                    }
                    continue;
                }
            }
            let only = match reason {
                Reason::Failback(home) => Some(home),
                _ => None,
            };
            let min_health = match reason {
                Reason::UplinkLost { health, .. } => Some(health),
                _ => None,
            };
            let wanted = placement::Wanted {
                only,
                exclude: Some(host),
                min_health,
            };
            match placement::choose_target(self, &name, wanted) {
                Some(to) => {
                    if let Some(r) = self.resources.get_mut(&name) {
                        r.placement = Placement::Migrating { from: host, to };
                    }
                    let action = Action::Migrate {
                        resource: name,
                        from: host,
                        to,
                    };
                    out.push(Output::Act(action.clone()));
                    out.push(Output::Event(Event::Decided { action, reason }));
                }
                None => {
                    // Failback with no room at home is simply not a move.
                    if !matches!(reason, Reason::Failback(_)) {
                        out.push(Output::Event(Event::NoRoom {
                            resource: name,
                            reason,
                        }));
                    }
                }
            }
        }
    }

    /// Why the resource running on `host` should move, if it should.
    fn reason_to_move(&self, name: &str, host: HostId) -> Option<Reason> {
        let h = self.hosts.get(&host)?;
        if h.standby {
            return Some(Reason::Standby(host));
        }
        if let Some(since) = h.degraded_since_ms {
            if self.now_ms >= since + self.config.uplink_grace_ms {
                return Some(Reason::UplinkLost {
                    host,
                    health: h.health,
                    best_peer_health: self.best_peer_health(host),
                });
            }
        }
        let r = self.resources.get(name)?;
        let home = r.spec.home?;
        if !self.config.auto_failback || r.spec.sticky || home == host {
            return None;
        }
        let home_state = self.hosts.get(&home)?;
        let home_ok = home_state.live
            && !home_state.standby
            && home_state.recovery == Recovery::None
            && home_state.degraded_since_ms.is_none()
            && !h.health.better_than(&home_state.health);
        home_ok.then_some(Reason::Failback(home))
    }

    /// `None` if the resource may move now, else the time it may.
    fn move_allowed_at(&self, name: &str) -> Option<u64> {
        let last = self.resources.get(name)?.last_move_ms?;
        let allowed = last + self.config.min_move_interval_ms;
        (self.now_ms < allowed).then_some(allowed)
    }

    fn migrations_from(&self, host: HostId) -> usize {
        self.resources
            .values()
            .filter(|r| matches!(r.placement, Placement::Migrating { from, .. } if from == host))
            .count()
    }

    /// Memory in MiB that placements hold on `host` (incoming moves included).
    fn used_mib(&self, host: HostId) -> u64 {
        self.resources
            .values()
            .filter(|r| r.placement.hosts().any(|h| h == host))
            .map(|r| r.spec.memory_mib)
            .sum()
    }
}
