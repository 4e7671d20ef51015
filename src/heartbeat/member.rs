//! The sans-io Heartbeat member: packets and time in, packets and events out.

use std::collections::{BTreeMap, VecDeque};

use super::HeartbeatError;
use crate::wire::hb3::{
    self, field, number::hex, Decoded, Framing, Hb3Error, Keyring, Message, MAX_PACKET_BYTES,
};

/// Messages Heartbeat keeps for retransmission (`MAXMSGHIST`).
const HISTORY_LEN: usize = 500;
/// A packet is resent at most once per this many ms (`max_rexmit_delay` - 10).
const REXMIT_MIN_INTERVAL_MS: u64 = 240;
/// Most packets resent for one request (Heartbeat's `MAX_REXMIT_BATCH`).
const REXMIT_BATCH: u64 = 50;
/// Sequence numbers remembered below a peer's highest, for duplicate
/// suppression across links and reordering.
const SEEN_WINDOW: u64 = 128;

/// The time of an input: a monotonic clock for timers, and the wall clock
/// that Heartbeat's `ts` field carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (any origin).
    pub monotonic_ms: u64,
    /// Seconds since the Unix epoch (`time(2)`).
    pub unix_s: u64,
}

/// How a member is set up.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// This node's name as in `ha.cf`, lower case.
    pub node: String,
    /// This node's persisted UUID (never shared with another node).
    pub uuid: [u8; 16],
    /// This start's generation: persisted, larger than at any earlier start.
    pub generation: u64,
    /// Every node of `ha.cf`'s `node` lines, lower case, this one included.
    pub nodes: Vec<String>,
    /// Status interval (`keepalive`).
    pub keepalive_ms: u64,
    /// The deadtime advertised in `dt`: how long Heartbeat waits for us.
    pub deadtime_ms: u64,
    /// The `authkeys` keys.
    pub keys: Keyring,
    /// Framing of what we send (Heartbeat itself uses netstring over UDP).
    pub framing: Framing,
}

/// What the member asks its runtime to do, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes on every link.
    Send(Vec<u8>),
    /// Something happened.
    Event(Event),
}

/// Why a peer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// It sent `shutdone` (a clean Heartbeat stop).
    Shutdown,
    /// It sent a status with `st=dead`.
    StatusDead,
}

/// Why a packet was dropped (each counted in [`MemberStats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Not a well-formed Heartbeat packet.
    Malformed(Hb3Error),
    /// Failed authentication: wrong key, unknown key index, or altered.
    Authentication(Hb3Error),
    /// A required field (`t`, `src`, `ts`, `hg`, or `seq`) is missing or bad.
    MissingField(&'static str),
    /// From a node that is not in the node list.
    UnknownNode(String),
    /// A generation older than the one already seen from that node.
    StaleGeneration {
        /// The node.
        node: String,
        /// The generation in the packet.
        generation: u64,
        /// The newest generation seen.
        current: u64,
    },
    /// A sequence number too old to tell from a replay.
    StaleSeq {
        /// The node.
        node: String,
        /// The sequence number.
        seq: u64,
    },
}

/// What the member learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A fresh, authenticated `status` from `node` on `link`: the input of
    /// a failure detector. Only statuses count, as in Heartbeat, which
    /// refreshes a node's liveness from its statuses alone.
    Arrival {
        /// The sender.
        node: String,
        /// The link it came on.
        link: usize,
        /// When.
        at_ms: u64,
        /// The sender's generation (a new one is a restart).
        generation: u64,
        /// The index of this status among the sender's statuses on this
        /// link in this generation: Heartbeat numbers every message it
        /// sends, statuses and others alike, so this counts the statuses,
        /// and each sequence number that never arrived as one lost status.
        /// A detector can read gaps in it as loss and expect one beat per
        /// keepalive.
        beat: u64,
        /// The deadtime the sender advertises (`dt`), if it does.
        deadtime_ms: Option<u64>,
    },
    /// The node's advertised status changed (`init`, `up`, `active`, `dead`).
    Status {
        /// The node.
        node: String,
        /// Its new status.
        status: String,
    },
    /// The node came back with a new generation (it restarted).
    Restarted {
        /// The node.
        node: String,
        /// The new generation.
        generation: u64,
    },
    /// The node said it is leaving.
    Left {
        /// The node.
        node: String,
        /// How it said so.
        reason: LeaveReason,
    },
    /// A packet was dropped.
    Dropped {
        /// The link it came on.
        link: usize,
        /// Why.
        reason: DropReason,
    },
}

/// Counters since the member started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberStats {
    /// Packets sent (each counted once, whatever the number of links).
    pub sent: u64,
    /// Packets accepted (fresh or duplicate).
    pub accepted: u64,
    /// Copies of an already processed packet (the same packet on another link).
    pub duplicates: u64,
    /// Dropped: malformed.
    pub dropped_malformed: u64,
    /// Dropped: failed authentication.
    pub dropped_auth: u64,
    /// Dropped: missing required field.
    pub dropped_missing_field: u64,
    /// Dropped: unknown sender.
    pub dropped_unknown_node: u64,
    /// Dropped: replay (old generation or old sequence number).
    pub dropped_replay: u64,
    /// Packets resent on a retransmit request.
    pub retransmitted: u64,
    /// Sequence numbers refused (NAK) on a retransmit request.
    pub nak_sent: u64,
    /// Acknowledgements sent.
    pub acks_sent: u64,
}

/// What we know of one peer.
#[derive(Debug, Clone, Default)]
struct PeerState {
    uuid: Option<Vec<u8>>,
    generation: u64,
    /// Highest seq processed in `generation`, and a bitmap of the
    /// [`SEEN_WINDOW`] seqs up to it (bit 0 = `max_seq`).
    max_seq: u64,
    seen: u128,
    /// Per link: what arrived on it, for per-link arrivals.
    links: BTreeMap<usize, LinkStream>,
    status: Option<String>,
}

/// The messages of one peer on one link.
#[derive(Debug, Clone, Copy, Default)]
struct LinkStream {
    /// Highest seq seen on the link (0: none yet).
    max_seq: u64,
    /// Statuses counted so far, lost ones included ([`Event::Arrival`]).
    beat: u64,
}

impl LinkStream {
    /// Account for `seq` arriving (newer than `max_seq`); the status beat
    /// if it is a status.
    fn advance(&mut self, seq: u64, status: bool) -> Option<u64> {
        // Sequence numbers skipped on this link never arrived here (lost,
        // or late): count them as lost statuses, the cautious reading.
        let missing = if self.max_seq == 0 {
            0
        } else {
            seq - self.max_seq - 1
        };
        self.max_seq = seq;
        self.beat += missing;
        if status {
            self.beat += 1;
            Some(self.beat)
        } else {
            None
        }
    }
}

/// One sent packet kept for retransmission.
#[derive(Debug, Clone)]
struct Sent {
    seq: u64,
    bytes: Vec<u8>,
    last_resent_ms: Option<u64>,
}

/// A perfplus node taking part in a Heartbeat 3 cluster (sans-io).
///
/// Drive it with [`Member::start`] once, [`Member::tick`] whenever
/// [`Member::next_tick_ms`] has passed, [`Member::receive`] for every
/// datagram, and [`Member::leave`] to stop. Every call appends to `out`.
#[derive(Debug)]
pub struct Member {
    config: MemberConfig,
    ttl: String,
    next_seq: u64,
    next_status_ms: u64,
    history: VecDeque<Sent>,
    peers: BTreeMap<String, PeerState>,
    stats: MemberStats,
}

impl Member {
    /// A member, checked against what Heartbeat would refuse.
    pub fn new(config: MemberConfig) -> Result<Self, HeartbeatError> {
        let listed = config.nodes.contains(&config.node);
        let lower = |n: &String| !n.is_empty() && *n == n.to_lowercase();
        if !listed || !config.nodes.iter().all(lower) {
            return Err(HeartbeatError::NodeNotListed {
                node: config.node.clone(),
                nodes: config.nodes.clone(),
            });
        }
        if config.keepalive_ms == 0 || config.deadtime_ms <= 2 * config.keepalive_ms {
            return Err(HeartbeatError::Timing {
                keepalive_ms: config.keepalive_ms,
                deadtime_ms: config.deadtime_ms,
            });
        }
        if config.generation == 0 {
            return Err(HeartbeatError::ZeroGeneration);
        }
        // Heartbeat's `ttl` is the node count plus `hopfudge` (1).
        let ttl = (config.nodes.len() + 1).to_string();
        Ok(Self {
            config,
            ttl,
            next_seq: 1,
            next_status_ms: 0,
            history: VecDeque::new(),
            peers: BTreeMap::new(),
            stats: MemberStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MemberConfig {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> MemberStats {
        self.stats
    }

    /// Send the first status now.
    pub fn start(&mut self, now: Now, out: &mut Vec<Output>) {
        self.next_status_ms = now.monotonic_ms;
        self.tick(now, out);
    }

    /// When [`Member::tick`] must be called next (monotonic ms).
    pub fn next_tick_ms(&self) -> u64 {
        self.next_status_ms
    }

    /// Send a status if one is due.
    pub fn tick(&mut self, now: Now, out: &mut Vec<Output>) {
        if now.monotonic_ms < self.next_status_ms {
            return;
        }
        let status = Message::new()
            .with_str(field::TYPE, "status")
            .with_str(field::STATUS, "active")
            .with_str(field::DEADTIME, hex(self.config.deadtime_ms))
            .with_str(field::PROTOCOL, "1");
        self.send_sequenced(status, now, out);
        // Catch up without a burst after a stall: the next one is due a
        // keepalive from now.
        self.next_status_ms = now.monotonic_ms + self.config.keepalive_ms;
    }

    /// Tell the cluster we stop (`shutdone`, `st=dead`). A later start must
    /// use a higher generation.
    pub fn leave(&mut self, now: Now, out: &mut Vec<Output>) {
        let bye = Message::new()
            .with_str(field::TYPE, "shutdone")
            .with_str(field::STATUS, "dead");
        self.send_sequenced(bye, now, out);
    }

    /// Handle one datagram that arrived on `link`.
    pub fn receive(&mut self, link: usize, packet: &[u8], now: Now, out: &mut Vec<Output>) {
        let drop = |stats: &mut MemberStats, out: &mut Vec<Output>, reason: DropReason| {
            let counter = match &reason {
                DropReason::Malformed(_) => &mut stats.dropped_malformed,
                DropReason::Authentication(_) => &mut stats.dropped_auth,
                DropReason::MissingField(_) => &mut stats.dropped_missing_field,
                DropReason::UnknownNode(_) => &mut stats.dropped_unknown_node,
                DropReason::StaleGeneration { .. } | DropReason::StaleSeq { .. } => {
                    &mut stats.dropped_replay
                }
            };
            *counter += 1;
            out.push(Output::Event(Event::Dropped { link, reason }));
        };
        let message = match hb3::decode(packet, &self.config.keys) {
            Ok(Decoded { message, .. }) => message,
            Err(
                e @ (Hb3Error::MissingAuth { .. }
                | Hb3Error::MalformedAuth { .. }
                | Hb3Error::UnknownKeyIndex { .. }
                | Hb3Error::AuthenticationFailed { .. }),
            ) => return drop(&mut self.stats, out, DropReason::Authentication(e)),
            Err(e) => return drop(&mut self.stats, out, DropReason::Malformed(e)),
        };
        let (Some(kind), Some(src), Some(_ts)) = (
            message.get_str(field::TYPE),
            message.get_str(field::SOURCE),
            message.get_hex(field::TIMESTAMP),
        ) else {
            return drop(&mut self.stats, out, DropReason::MissingField("t/src/ts"));
        };
        let (kind, src) = (kind.to_owned(), src.to_owned());
        if src == self.config.node {
            // Our own packet looped back (broadcast media): not news.
            return;
        }
        if !self.config.nodes.contains(&src) {
            return drop(&mut self.stats, out, DropReason::UnknownNode(src));
        }
        let Some(generation) = message.get_hex(field::GENERATION) else {
            return drop(&mut self.stats, out, DropReason::MissingField("hg"));
        };
        let sequenced = !kind.starts_with("NS_");
        let seq = message.get_hex(field::SEQ);
        if sequenced && seq.is_none() {
            return drop(&mut self.stats, out, DropReason::MissingField("seq"));
        }

        let peer = self.peers.entry(src.clone()).or_default();
        if generation < peer.generation {
            let reason = DropReason::StaleGeneration {
                node: src,
                generation,
                current: peer.generation,
            };
            return drop(&mut self.stats, out, reason);
        }
        if generation > peer.generation {
            let restarted = peer.generation != 0;
            *peer = PeerState {
                uuid: peer.uuid.take(),
                status: peer.status.take(),
                generation,
                ..PeerState::default()
            };
            if restarted {
                out.push(Output::Event(Event::Restarted {
                    node: src.clone(),
                    generation,
                }));
            }
        }
        if let Some(uuid) = message.get_binary(field::SOURCE_UUID) {
            peer.uuid = Some(uuid.to_vec());
        }

        // Sequenced packets: replay/duplicate check, then a per-link arrival.
        if let Some(seq) = seq.filter(|_| sequenced) {
            let seen = mark_seen(peer, seq);
            if let Seen::Stale = seen {
                let reason = DropReason::StaleSeq { node: src, seq };
                return drop(&mut self.stats, out, reason);
            }
            let stream = peer.links.entry(link).or_default();
            if seq > stream.max_seq {
                if let Some(beat) = stream.advance(seq, kind == "status") {
                    out.push(Output::Event(Event::Arrival {
                        node: src.clone(),
                        link,
                        at_ms: now.monotonic_ms,
                        generation,
                        beat,
                        deadtime_ms: message.get_hex(field::DEADTIME),
                    }));
                }
            }
            self.stats.accepted += 1;
            if let Seen::Duplicate = seen {
                self.stats.duplicates += 1;
                return;
            }
            if kind != "status" || seq % 10 == 0 {
                // Heartbeat waits for acks (flow control); one per message
                // that is not a status, and every tenth status, like
                // Heartbeat's own ACK_MSG_DIV, keeps its window open.
                self.send_ack(&src, seq, now, out);
            }
        } else {
            self.stats.accepted += 1;
        }

        let to_us = match message.get_str(field::DEST) {
            Some(dest) => dest == self.config.node,
            None => true,
        };
        if !to_us {
            return;
        }
        self.react(&kind, &src, &message, now, out);
    }

    /// Answer what needs an answer, and report status changes.
    fn react(&mut self, kind: &str, src: &str, message: &Message, now: Now, out: &mut Vec<Output>) {
        match kind {
            "status" => {
                if let Some(st) = message.get_str(field::STATUS) {
                    self.note_status(src, st, out);
                }
            }
            "shutdone" => {
                out.push(Output::Event(Event::Left {
                    node: src.to_owned(),
                    reason: LeaveReason::Shutdown,
                }));
            }
            "reqnodes" => {
                let mut list: String = self.config.nodes.iter().map(|n| format!("{n} ")).collect();
                if list.is_empty() {
                    list.push(' ');
                }
                let reply = Message::new()
                    .with_str(field::TYPE, "repnodes")
                    .with_str(field::DEST, src)
                    .with_str("nodelist", list)
                    .with_str("delnodelist", " ");
                self.send_sequenced(self.with_dest_uuid(reply, src), now, out);
            }
            "starting" => {
                // We hold no v1 resources; say so, so the node's resource
                // acquisition completes.
                let reply = Message::new()
                    .with_str(field::TYPE, "resource")
                    .with_str("rsc_hold", "none")
                    .with_str("rtype", "full")
                    .with_str("isstable", "1");
                self.send_sequenced(reply, now, out);
            }
            "query-cstatus" => {
                let (Some(client), Some(from_id)) =
                    (message.get_str("cn"), message.get_str("from_id"))
                else {
                    return;
                };
                // No Heartbeat API client runs on a perfplus node.
                let reply = Message::new()
                    .with_str(field::TYPE, "respond-cstatus")
                    .with_str(field::DEST, src)
                    .with_str("result", "OK")
                    .with_str("cn", client)
                    .with_str("to_id", from_id)
                    .with_str("cs", "offline");
                self.send_sequenced(self.with_dest_uuid(reply, src), now, out);
            }
            "NS_rexmit" => {
                let (Some(first), Some(last)) = (
                    message.get_decimal(field::FIRST_SEQ),
                    message.get_decimal(field::LAST_SEQ),
                ) else {
                    return;
                };
                self.retransmit(src, first, last, now, out);
            }
            _ => {}
        }
    }

    fn note_status(&mut self, src: &str, st: &str, out: &mut Vec<Output>) {
        let Some(peer) = self.peers.get_mut(src) else {
            return;
        };
        if peer.status.as_deref() == Some(st) {
            return;
        }
        peer.status = Some(st.to_owned());
        out.push(Output::Event(Event::Status {
            node: src.to_owned(),
            status: st.to_owned(),
        }));
        if st == "dead" {
            out.push(Output::Event(Event::Left {
                node: src.to_owned(),
                reason: LeaveReason::StatusDead,
            }));
        }
    }

    /// Resend `first..=last` from this generation's history, or NAK what is
    /// gone; never what was resent within [`REXMIT_MIN_INTERVAL_MS`].
    fn retransmit(&mut self, src: &str, first: u64, last: u64, now: Now, out: &mut Vec<Output>) {
        if first == 0 || first > last {
            return;
        }
        let highest = self.next_seq - 1;
        let lowest = self.history.front().map_or(self.next_seq, |s| s.seq);
        for seq in first
            ..=last
                .min(highest)
                .min(first.saturating_add(REXMIT_BATCH - 1))
        {
            let found = self.history.iter_mut().find(|s| s.seq == seq);
            match found {
                Some(sent) => {
                    let recent = sent.last_resent_ms.is_some_and(|t| {
                        now.monotonic_ms.saturating_sub(t) < REXMIT_MIN_INTERVAL_MS
                    });
                    if !recent {
                        sent.last_resent_ms = Some(now.monotonic_ms);
                        out.push(Output::Send(sent.bytes.clone()));
                        self.stats.retransmitted += 1;
                    }
                }
                None if seq < lowest => {
                    let nak = Message::new()
                        .with_str(field::TYPE, "NS_nak_rexmit")
                        .with_str(field::FIRST_SEQ, hex(seq))
                        .with_str(field::DEST, src)
                        .with_str("comment", "seqno too low");
                    self.send_unsequenced(nak, now, out);
                    self.stats.nak_sent += 1;
                }
                None => {}
            }
        }
    }

    fn with_dest_uuid(&self, message: Message, dest: &str) -> Message {
        match self.peers.get(dest).and_then(|p| p.uuid.clone()) {
            Some(uuid) => message.with_binary(field::DEST_UUID, uuid),
            None => message,
        }
    }

    fn send_ack(&mut self, dest: &str, seq: u64, now: Now, out: &mut Vec<Output>) {
        let ack = Message::new()
            .with_str(field::TYPE, "NS_ackmsg")
            .with_str(field::DEST, dest)
            .with_str(field::ACK_SEQ, hex(seq));
        let ack = self.with_dest_uuid(ack, dest);
        self.send_unsequenced(ack, now, out);
        self.stats.acks_sent += 1;
    }

    /// The trailer Heartbeat's `add_control_msg_fields` writes.
    fn control_fields(&self, message: Message, seq: Option<u64>, now: Now) -> Message {
        let mut m = message
            .with_str(field::SOURCE, self.config.node.as_str())
            .with_binary(field::SOURCE_UUID, self.config.uuid);
        if let Some(seq) = seq {
            m = m.with_str(field::SEQ, hex(seq));
        }
        m.with_str(field::GENERATION, hex(self.config.generation))
            // `ts` must be non-zero for Heartbeat.
            .with_str(field::TIMESTAMP, hex(now.unix_s.max(1)))
            .with_str(field::TTL, self.ttl.as_str())
    }

    fn send_sequenced(&mut self, message: Message, now: Now, out: &mut Vec<Output>) {
        let seq = self.next_seq;
        let message = self.control_fields(message, Some(seq), now);
        let Some(bytes) = self.encode(&message) else {
            return;
        };
        self.next_seq += 1;
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(Sent {
            seq,
            bytes: bytes.clone(),
            last_resent_ms: None,
        });
        self.stats.sent += 1;
        out.push(Output::Send(bytes));
    }

    fn send_unsequenced(&mut self, message: Message, now: Now, out: &mut Vec<Output>) {
        let message = self.control_fields(message, None, now);
        if let Some(bytes) = self.encode(&message) {
            self.stats.sent += 1;
            out.push(Output::Send(bytes));
        }
    }

    /// Our own messages are small and well formed; a failure here would be a
    /// bug in this module, so it is reported as a dropped packet, not a panic.
    fn encode(&mut self, message: &Message) -> Option<Vec<u8>> {
        match hb3::encode(message, self.config.framing, &self.config.keys) {
            Ok(bytes) if bytes.len() <= MAX_PACKET_BYTES => Some(bytes),
            _ => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }
}

enum Seen {
    Fresh,
    Duplicate,
    Stale,
}

/// Record `seq` in the peer's window.
fn mark_seen(peer: &mut PeerState, seq: u64) -> Seen {
    if seq > peer.max_seq {
        let shift = seq - peer.max_seq;
        peer.seen = if shift >= SEEN_WINDOW {
            0
        } else {
            peer.seen << shift
        };
        peer.seen |= 1;
        peer.max_seq = seq;
        return Seen::Fresh;
    }
    let back = peer.max_seq - seq;
    if back >= SEEN_WINDOW {
        return Seen::Stale;
    }
    let bit = 1u128 << back;
    if peer.seen & bit != 0 {
        Seen::Duplicate
    } else {
        peer.seen |= bit;
        Seen::Fresh
    }
}
