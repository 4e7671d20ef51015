//! The runtime's Heartbeat 3 protocol: the sans-io [`Member`] speaks for
//! this node on the links, and its status arrivals feed the same
//! [`Membership`](crate::membership::Membership) core as perfplus
//! heartbeats do.
//!
//! ```text
//!  datagram ─▶ Member::receive ─┬─▶ Send (acks, repnodes, ...) ─▶ every link
//!                               ├─▶ Arrival {node, link, generation, beat, dt}
//!                               │     ─▶ membership Heartbeat {from, incarnation = generation,
//!                               │          seq = beat, interval = keepalive, deadtime = dt}
//!                               └─▶ Left (shutdone, st=dead) ─▶ Heartbeat {leaving}
//!  tick ─────▶ Member::tick ──────▶ status every keepalive ─▶ every link
//! ```
//!
//! A Heartbeat node advertises neither its keepalive nor its uplink
//! health: its statuses are expected every keepalive of this node's
//! `ha.cf` (a site's nodes share one), and its health is unknown (no ping
//! nodes).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::NodeError;
use crate::config::{Heartbeat3, NodeConfig};
use crate::detector::Health;
use crate::heartbeat::{identity, DropReason, Event, Member, MemberConfig, Now, Output};
use crate::membership::{Heartbeat, Incarnation, NodeId};
use crate::wire::hb3::Framing;
use crate::wire::WireStats;

/// What the protocol asks of the runtime.
#[derive(Debug)]
pub(super) enum Action {
    /// Send these bytes on every link.
    Send(Vec<u8>),
    /// Hand this heartbeat, from `link`, to the membership core.
    Heartbeat { link: usize, heartbeat: Heartbeat },
    /// Tell the application.
    Warning(String),
}

/// This node as a Heartbeat 3 cluster member.
pub(super) struct Hb3 {
    member: Member,
    ids: BTreeMap<String, NodeId>,
    generations: BTreeMap<NodeId, u64>,
    interval_ms: u16,
    warned_auth: bool,
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}

fn now(at_us: u64) -> Now {
    Now {
        monotonic_ms: at_us / 1_000,
        unix_s: unix_s(),
    }
}

impl Hb3 {
    /// Load (and bump) the persisted identity and set up the member; this
    /// start's generation is the node's incarnation.
    pub(super) fn new(
        config: &NodeConfig,
        hb: &Heartbeat3,
    ) -> Result<(Self, Incarnation), NodeError> {
        let id = identity::next_start(&hb.state_dir, unix_s()).map_err(NodeError::Heartbeat)?;
        let member = Member::new(MemberConfig {
            node: config.local_name().unwrap_or_default().to_owned(),
            uuid: id.uuid,
            generation: id.generation,
            nodes: config.nodes.iter().map(|n| n.name.clone()).collect(),
            keepalive_ms: config.interval_ms,
            deadtime_ms: hb.deadtime_ms,
            keys: hb.keys.clone(),
            framing: Framing::Netstring,
        })
        .map_err(NodeError::Heartbeat)?;
        let hb3 = Self {
            member,
            ids: config
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.id))
                .collect(),
            generations: BTreeMap::new(),
            interval_ms: u16::try_from(config.interval_ms).unwrap_or(u16::MAX),
            warned_auth: false,
        };
        Ok((hb3, Incarnation(id.generation)))
    }

    /// Send the first status.
    pub(super) fn start(&mut self, at_us: u64, actions: &mut Vec<Action>) {
        let mut out = Vec::new();
        self.member.start(now(at_us), &mut out);
        self.absorb(out, actions);
    }

    /// A datagram arrived on `link` at `at_us`.
    pub(super) fn receive(
        &mut self,
        link: usize,
        bytes: &[u8],
        at_us: u64,
        actions: &mut Vec<Action>,
    ) {
        let mut out = Vec::new();
        self.member.receive(link, bytes, now(at_us), &mut out);
        self.absorb(out, actions);
    }

    /// Send a status if one is due.
    pub(super) fn tick(&mut self, at_us: u64, actions: &mut Vec<Action>) {
        let mut out = Vec::new();
        self.member.tick(now(at_us), &mut out);
        self.absorb(out, actions);
    }

    /// When [`Hb3::tick`] is due, µs.
    pub(super) fn next_tick_us(&self) -> u64 {
        self.member.next_tick_ms().saturating_mul(1_000)
    }

    /// Tell the cluster this node stops (`shutdone`).
    pub(super) fn leave(&mut self, at_us: u64, actions: &mut Vec<Action>) {
        let mut out = Vec::new();
        self.member.leave(now(at_us), &mut out);
        self.absorb(out, actions);
    }

    /// Packets received, by outcome, in the runtime's terms.
    pub(super) fn stats(&self) -> WireStats {
        let s = self.member.stats();
        WireStats {
            accepted: s.accepted,
            malformed: s.dropped_malformed + s.dropped_missing_field,
            bad_authentication: s.dropped_auth,
            unknown_node: s.dropped_unknown_node,
            replayed: s.dropped_replay,
            ..WireStats::default()
        }
    }

    fn absorb(&mut self, out: Vec<Output>, actions: &mut Vec<Action>) {
        for output in out {
            match output {
                Output::Send(bytes) => actions.push(Action::Send(bytes)),
                Output::Event(event) => self.translate(event, actions),
            }
        }
    }

    fn translate(&mut self, event: Event, actions: &mut Vec<Action>) {
        match event {
            Event::Arrival {
                node,
                link,
                generation,
                beat,
                deadtime_ms,
                ..
            } => {
                let Some(&from) = self.ids.get(&node) else {
                    return;
                };
                self.generations.insert(from, generation);
                let heartbeat = self.heartbeat(from, generation, beat, deadtime_ms, false);
                actions.push(Action::Heartbeat { link, heartbeat });
            }
            Event::Left { node, .. } => {
                let Some(&from) = self.ids.get(&node) else {
                    return;
                };
                // A node that leaves before any status was never a member.
                let Some(&generation) = self.generations.get(&from) else {
                    return;
                };
                let heartbeat = self.heartbeat(from, generation, 0, None, true);
                actions.push(Action::Heartbeat { link: 0, heartbeat });
            }
            Event::Dropped {
                link,
                reason: DropReason::Authentication(e),
            } if !self.warned_auth => {
                self.warned_auth = true;
                actions.push(Action::Warning(format!(
                    "link {link}: a Heartbeat packet failed authentication ({e}); are authkeys the same on every node? (further failures are only counted)"
                )));
            }
            Event::Status { .. } | Event::Restarted { .. } | Event::Dropped { .. } => {}
        }
    }

    fn heartbeat(
        &self,
        from: NodeId,
        generation: u64,
        beat: u64,
        deadtime_ms: Option<u64>,
        leaving: bool,
    ) -> Heartbeat {
        Heartbeat {
            from,
            incarnation: Incarnation(generation),
            seq: beat,
            sent_at_us: 0,
            interval_ms: self.interval_ms,
            view_epoch: 0,
            view_digest: 0,
            health: Health::default(),
            quorate: false,
            leaving,
            deadtime_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::heartbeat::{AuthKeys, HaCf};
    use crate::config::Protocol;
    use crate::wire::hb3::{encode, Message};

    const HA_CF: &str = "keepalive 500ms\ndeadtime 3\nucast eth0 10.0.0.1\nnode nodeA nodeB\n";
    const AUTHKEYS: &str = "auth 1\n1 sha1 testsecret\n";

    fn member(dir: &std::path::Path) -> (Hb3, Incarnation) {
        let cf = HaCf::parse(HA_CF, std::path::Path::new("ha.cf")).unwrap();
        let keys = AuthKeys::parse(AUTHKEYS, std::path::Path::new("authkeys")).unwrap();
        let mut config = NodeConfig::from_heartbeat(&cf, &keys, "nodeb").unwrap();
        let Protocol::Heartbeat3(hb) = &mut config.protocol else {
            panic!("ha.cf speaks Heartbeat 3");
        };
        hb.state_dir = dir.to_path_buf();
        let hb = hb.clone();
        Hb3::new(&config, &hb).unwrap()
    }

    fn from_nodea(body: Message, seq: u64) -> Vec<u8> {
        let keys = AuthKeys::parse(AUTHKEYS, std::path::Path::new("authkeys"))
            .unwrap()
            .keyring();
        let m = body
            .with_str("src", "nodea")
            .with_str("seq", format!("{seq:x}"))
            .with_str("hg", "2a")
            .with_str("ts", "6b0686fb");
        encode(&m, Framing::Netstring, &keys).unwrap()
    }

    #[test]
    fn heartbeat_statuses_and_shutdown_become_membership_heartbeats() {
        let dir = std::env::temp_dir().join(format!("pphb-runtime-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut hb3, incarnation) = member(&dir);
        assert!(incarnation.0 > 0, "the generation is the incarnation");
        let mut actions = Vec::new();
        hb3.start(0, &mut actions);
        assert!(
            matches!(actions.as_slice(), [Action::Send(_)]),
            "{actions:?}"
        );

        let status = Message::new()
            .with_str("t", "status")
            .with_str("st", "active")
            .with_str("dt", "bb8");
        let mut actions = Vec::new();
        hb3.receive(0, &from_nodea(status, 7), 1_000_000, &mut actions);
        let heartbeats: Vec<&Heartbeat> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Heartbeat { link: 0, heartbeat } => Some(heartbeat),
                _ => None,
            })
            .collect();
        assert_eq!(heartbeats.len(), 1, "{actions:?}");
        let hb = heartbeats[0];
        assert_eq!(
            (
                hb.from,
                hb.incarnation,
                hb.seq,
                hb.interval_ms,
                hb.deadtime_ms,
                hb.leaving
            ),
            (NodeId(1), Incarnation(0x2a), 1, 500, Some(3_000), false)
        );

        let bye = Message::new()
            .with_str("t", "shutdone")
            .with_str("st", "dead");
        let mut actions = Vec::new();
        hb3.receive(0, &from_nodea(bye, 8), 2_000_000, &mut actions);
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Heartbeat { heartbeat, .. }
                    if heartbeat.leaving && heartbeat.incarnation == Incarnation(0x2a)
            )),
            "{actions:?}"
        );
        assert_eq!(hb3.stats().accepted, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
