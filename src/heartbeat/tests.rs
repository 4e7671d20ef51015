//! The member on a hand-driven clock, against packets built the way a real
//! Heartbeat node builds them.

use super::*;
use crate::wire::hb3::{decode, encode, AuthKey, AuthMethod, Framing, Keyring, Message};

fn keys() -> Keyring {
    Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "testsecret"))
}

fn config() -> MemberConfig {
    MemberConfig {
        node: "nodeb".into(),
        uuid: [7; 16],
        generation: 0x6b06_943b,
        nodes: vec!["nodea".into(), "nodeb".into()],
        keepalive_ms: 1000,
        deadtime_ms: 6000,
        keys: keys(),
        framing: Framing::Netstring,
    }
}

fn at(ms: u64) -> Now {
    Now {
        monotonic_ms: ms,
        unix_s: 1_800_000_000 + ms / 1000,
    }
}

/// A packet from the real node `nodea`, with its control trailer.
fn from_nodea(body: Message, seq: Option<u64>, generation: u64) -> Vec<u8> {
    let mut m = body
        .with_str("src", "nodea")
        .with_binary("srcuuid", [0xa9; 16]);
    if let Some(seq) = seq {
        m = m.with_str("seq", format!("{seq:x}"));
    }
    let m = m
        .with_str("hg", format!("{generation:x}"))
        .with_str("ts", "6b0686fb")
        .with_str("ttl", "3");
    encode(&m, Framing::Netstring, &keys()).unwrap()
}

fn status(seq: u64) -> Vec<u8> {
    from_nodea(
        Message::new()
            .with_str("t", "status")
            .with_str("st", "active")
            .with_str("dt", "1770")
            .with_str("protocol", "1"),
        Some(seq),
        100,
    )
}

fn sent(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(decode(b, &keys()).unwrap().message),
            Output::Event(_) => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            Output::Send(_) => None,
        })
        .collect()
}

fn started() -> Member {
    let mut m = Member::new(config()).unwrap();
    m.start(at(0), &mut Vec::new());
    m
}

#[test]
fn status_goes_out_every_keepalive_with_hex_seq_and_deadtime() {
    let mut m = Member::new(config()).unwrap();
    let mut out = Vec::new();
    m.start(at(0), &mut out);
    for t in [500, 999, 1000, 1500, 2000, 10_000] {
        m.tick(at(t), &mut out);
    }
    let msgs = sent(&out);
    let seqs: Vec<_> = msgs.iter().map(|m| m.get_str("seq").unwrap()).collect();
    assert_eq!(seqs, ["1", "2", "3", "4"]);
    let first = &msgs[0];
    assert_eq!(first.get_str("t"), Some("status"));
    assert_eq!(first.get_str("st"), Some("active"));
    assert_eq!(first.get_str("dt"), Some("1770"));
    assert_eq!(first.get_str("protocol"), Some("1"));
    assert_eq!(first.get_str("src"), Some("nodeb"));
    assert_eq!(first.get_binary("srcuuid"), Some(&[7u8; 16][..]));
    assert_eq!(first.get_str("hg"), Some("6b06943b"));
    assert_eq!(first.get_str("ttl"), Some("3"));
    assert_eq!(m.next_tick_ms(), 11_000);
}

#[test]
fn reqnodes_is_answered_with_the_whole_node_list() {
    let mut m = started();
    let mut out = Vec::new();
    let req = from_nodea(
        Message::new()
            .with_str("t", "reqnodes")
            .with_str("dest", "nodeb"),
        Some(5),
        100,
    );
    m.receive(0, &req, at(100), &mut out);
    let msgs = sent(&out);
    let ack = msgs
        .iter()
        .find(|m| m.get_str("t") == Some("NS_ackmsg"))
        .unwrap();
    assert_eq!(ack.get_str("dest"), Some("nodea"));
    assert_eq!(ack.get_str("ackseq"), Some("5"));
    assert_eq!(ack.get_binary("destuuid"), Some(&[0xa9u8; 16][..]));
    assert_eq!(ack.get_str("seq"), None, "NS_ messages carry no seq");
    let rep = msgs
        .iter()
        .find(|m| m.get_str("t") == Some("repnodes"))
        .unwrap();
    assert_eq!(rep.get_str("dest"), Some("nodea"));
    assert_eq!(rep.get_str("nodelist"), Some("nodea nodeb "));
    assert_eq!(rep.get_str("delnodelist"), Some(" "));
    assert_eq!(rep.get_str("seq"), Some("2"));
}

#[test]
fn starting_is_answered_with_a_resource_report_holding_nothing() {
    let mut m = started();
    let mut out = Vec::new();
    m.receive(
        0,
        &from_nodea(Message::new().with_str("t", "starting"), Some(3), 100),
        at(100),
        &mut out,
    );
    let msgs = sent(&out);
    let res = msgs
        .iter()
        .find(|m| m.get_str("t") == Some("resource"))
        .unwrap();
    assert_eq!(res.get_str("rsc_hold"), Some("none"));
    assert_eq!(res.get_str("rtype"), Some("full"));
    assert_eq!(res.get_str("isstable"), Some("1"));
}

#[test]
fn query_cstatus_gets_an_answer_naming_the_client_and_request() {
    let mut m = started();
    let mut out = Vec::new();
    let q = Message::new()
        .with_str("t", "query-cstatus")
        .with_str("dest", "nodeb")
        .with_str("cn", "ipfail")
        .with_str("from_id", "cl_status");
    m.receive(0, &from_nodea(q, Some(4), 100), at(100), &mut out);
    let msgs = sent(&out);
    let r = msgs
        .iter()
        .find(|m| m.get_str("t") == Some("respond-cstatus"))
        .unwrap();
    assert_eq!(r.get_str("dest"), Some("nodea"));
    assert_eq!(r.get_str("result"), Some("OK"));
    assert_eq!(r.get_str("cn"), Some("ipfail"));
    assert_eq!(r.get_str("to_id"), Some("cl_status"));
    assert_eq!(r.get_str("cs"), Some("offline"));
}

fn rexmit(first: u64, last: u64) -> Vec<u8> {
    from_nodea(
        Message::new()
            .with_str("t", "NS_rexmit")
            .with_str("dest", "nodeb")
            .with_str("firstseq", first.to_string())
            .with_str("lastseq", last.to_string()),
        None,
        100,
    )
}

#[test]
fn rexmit_resends_the_original_packets_once_per_interval() {
    let mut m = Member::new(config()).unwrap();
    let mut originals = Vec::new();
    m.start(at(0), &mut originals);
    for t in 1..=20 {
        m.tick(at(t * 1000), &mut originals);
    }
    // seq 16 and 17 (decimal in the request: "16", "17").
    let mut out = Vec::new();
    m.receive(0, &rexmit(16, 17), at(20_100), &mut out);
    let resent: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(b.clone()),
            Output::Event(_) => None,
        })
        .collect();
    let expected: Vec<_> = originals
        .iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(b.clone()),
            Output::Event(_) => None,
        })
        .skip(15)
        .take(2)
        .collect();
    assert_eq!(resent, expected, "the very same bytes, same generation");
    let mut again = Vec::new();
    m.receive(0, &rexmit(16, 17), at(20_200), &mut again);
    assert!(sent(&again).is_empty(), "not twice within 240 ms");
    m.receive(0, &rexmit(16, 17), at(20_400), &mut again);
    assert_eq!(sent(&again).len(), 2);
    assert_eq!(m.stats().retransmitted, 4);
}

#[test]
fn rexmit_of_a_packet_no_longer_kept_is_nacked_in_hex() {
    let mut m = Member::new(config()).unwrap();
    let mut out = Vec::new();
    m.start(at(0), &mut out);
    for t in 1..=600 {
        m.tick(at(t * 1000), &mut out);
    }
    let mut out = Vec::new();
    m.receive(0, &rexmit(26, 26), at(700_000), &mut out);
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].get_str("t"), Some("NS_nak_rexmit"));
    assert_eq!(msgs[0].get_str("firstseq"), Some("1a"));
    assert_eq!(msgs[0].get_str("dest"), Some("nodea"));
    assert_eq!(m.stats().nak_sent, 1);
}

#[test]
fn rexmit_request_for_someone_else_is_ignored() {
    let mut m = started();
    let req = from_nodea(
        Message::new()
            .with_str("t", "NS_rexmit")
            .with_str("dest", "nodec")
            .with_str("firstseq", "1")
            .with_str("lastseq", "1"),
        None,
        100,
    );
    let mut out = Vec::new();
    m.receive(0, &req, at(10), &mut out);
    assert!(sent(&out).is_empty());
}

#[test]
fn each_link_reports_its_own_arrival_but_the_packet_is_processed_once() {
    let mut m = started();
    let mut out = Vec::new();
    let req = from_nodea(
        Message::new()
            .with_str("t", "reqnodes")
            .with_str("dest", "nodeb"),
        Some(5),
        100,
    );
    m.receive(0, &status(4), at(99), &mut out);
    m.receive(0, &req, at(100), &mut out);
    m.receive(1, &req, at(101), &mut out);
    m.receive(1, &status(6), at(1100), &mut out);
    m.receive(0, &status(6), at(1101), &mut out);
    let arrivals: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| matches!(e, Event::Arrival { .. }))
        .collect();
    let arrival = |link, at_ms, beat| Event::Arrival {
        node: "nodea".into(),
        link,
        at_ms,
        generation: 100,
        beat,
        deadtime_ms: Some(6000),
    };
    // Only statuses are arrivals; link 0 saw seq 5 (not a status) and
    // counts beat 2 for seq 6; link 1 never saw seq 4, its first is beat 1.
    assert_eq!(
        arrivals,
        [arrival(0, 99, 1), arrival(1, 1100, 1), arrival(0, 1101, 2)]
    );
    assert_eq!(
        sent(&out)
            .iter()
            .filter(|m| m.get_str("t") == Some("repnodes"))
            .count(),
        1
    );
    assert_eq!(m.stats().duplicates, 2);
}

#[test]
fn missing_sequence_numbers_count_as_lost_statuses() {
    let mut m = started();
    let mut out = Vec::new();
    for (seq, t) in [(1, 0), (2, 1000), (5, 4000), (6, 5000)] {
        m.receive(0, &status(seq), at(t), &mut out);
    }
    let beats: Vec<u64> = events(&out)
        .iter()
        .filter_map(|e| match e {
            Event::Arrival { beat, .. } => Some(*beat),
            _ => None,
        })
        .collect();
    assert_eq!(beats, [1, 2, 5, 6]);
}

#[test]
fn replayed_heartbeat_is_no_arrival() {
    let mut m = started();
    let mut out = Vec::new();
    m.receive(0, &status(7), at(100), &mut out);
    m.receive(0, &status(8), at(1100), &mut out);
    let mut replay = Vec::new();
    m.receive(0, &status(7), at(2100), &mut replay);
    m.receive(0, &status(8), at(2100), &mut replay);
    assert!(
        !events(&replay)
            .iter()
            .any(|e| matches!(e, Event::Arrival { .. })),
        "{replay:?}"
    );
    // Far below the window: dropped and counted as a replay.
    let mut far = Vec::new();
    m.receive(0, &status(1000), at(3000), &mut far);
    m.receive(0, &status(3), at(3100), &mut far);
    assert!(matches!(
        events(&far).last(),
        Some(Event::Dropped {
            reason: DropReason::StaleSeq { seq: 3, .. },
            ..
        })
    ));
    assert_eq!(m.stats().dropped_replay, 1);
}

#[test]
fn older_generation_is_dropped_and_newer_one_is_a_restart() {
    let mut m = started();
    let mut out = Vec::new();
    m.receive(0, &status(40), at(100), &mut out);
    let old = from_nodea(
        Message::new()
            .with_str("t", "status")
            .with_str("st", "active"),
        Some(41),
        99,
    );
    let mut dropped = Vec::new();
    m.receive(0, &old, at(200), &mut dropped);
    assert!(matches!(
        events(&dropped)[..],
        [Event::Dropped {
            reason: DropReason::StaleGeneration {
                generation: 99,
                current: 100,
                ..
            },
            ..
        }]
    ));
    let new = from_nodea(
        Message::new()
            .with_str("t", "status")
            .with_str("st", "active"),
        Some(1),
        101,
    );
    let mut restarted = Vec::new();
    m.receive(0, &new, at(300), &mut restarted);
    let ev = events(&restarted);
    assert!(ev.contains(&Event::Restarted {
        node: "nodea".into(),
        generation: 101
    }));
    assert!(
        ev.iter().any(|e| matches!(e, Event::Arrival { .. })),
        "seq 1 counts again"
    );
}

#[test]
fn wrong_key_is_dropped_and_counted() {
    let mut m = started();
    let forged = encode(
        &Message::new()
            .with_str("t", "status")
            .with_str("src", "nodea")
            .with_str("seq", "9")
            .with_str("hg", "64")
            .with_str("ts", "1"),
        Framing::Netstring,
        &Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "wrong")),
    )
    .unwrap();
    let mut out = Vec::new();
    m.receive(0, &forged, at(10), &mut out);
    assert!(matches!(
        events(&out)[..],
        [Event::Dropped {
            link: 0,
            reason: DropReason::Authentication(_)
        }]
    ));
    assert!(sent(&out).is_empty());
    assert_eq!(m.stats().dropped_auth, 1);
}

#[test]
fn unknown_node_and_missing_fields_are_dropped() {
    let mut m = started();
    let stranger = encode(
        &Message::new()
            .with_str("t", "status")
            .with_str("src", "nodez")
            .with_str("seq", "1")
            .with_str("hg", "1")
            .with_str("ts", "1"),
        Framing::Netstring,
        &keys(),
    )
    .unwrap();
    let no_seq = from_nodea(Message::new().with_str("t", "status"), None, 100);
    let mut out = Vec::new();
    m.receive(0, &stranger, at(10), &mut out);
    m.receive(0, &no_seq, at(10), &mut out);
    m.receive(0, b"not heartbeat", at(10), &mut out);
    let s = m.stats();
    assert_eq!(
        (
            s.dropped_unknown_node,
            s.dropped_missing_field,
            s.dropped_malformed
        ),
        (1, 1, 1)
    );
}

#[test]
fn shutdone_and_status_dead_are_reported_as_leaving() {
    let mut m = started();
    let mut out = Vec::new();
    m.receive(0, &status(1), at(10), &mut out);
    let bye = from_nodea(
        Message::new()
            .with_str("t", "shutdone")
            .with_str("st", "dead"),
        Some(2),
        100,
    );
    m.receive(0, &bye, at(20), &mut out);
    let dead = from_nodea(
        Message::new()
            .with_str("t", "status")
            .with_str("st", "dead"),
        Some(3),
        100,
    );
    m.receive(0, &dead, at(30), &mut out);
    let ev = events(&out);
    assert!(ev.contains(&Event::Left {
        node: "nodea".into(),
        reason: LeaveReason::Shutdown
    }));
    assert!(ev.contains(&Event::Left {
        node: "nodea".into(),
        reason: LeaveReason::StatusDead
    }));
}

#[test]
fn leaving_sends_shutdone_with_st_dead() {
    let mut m = started();
    let mut out = Vec::new();
    m.leave(at(10), &mut out);
    let msgs = sent(&out);
    assert_eq!(msgs[0].get_str("t"), Some("shutdone"));
    assert_eq!(msgs[0].get_str("st"), Some("dead"));
    assert_eq!(msgs[0].get_str("seq"), Some("2"));
}

#[test]
fn two_members_see_each_other_through_their_packets() {
    let mut b = started();
    let mut a_config = config();
    a_config.node = "nodea".into();
    a_config.uuid = [1; 16];
    let mut a = Member::new(a_config).unwrap();
    let mut out_a = Vec::new();
    a.start(at(0), &mut out_a);
    let mut out_b = Vec::new();
    for o in &out_a {
        if let Output::Send(p) = o {
            b.receive(0, p, at(1), &mut out_b);
        }
    }
    assert!(events(&out_b).contains(&Event::Status {
        node: "nodea".into(),
        status: "active".into()
    }));
}

#[test]
fn configurations_heartbeat_would_refuse_are_refused() {
    let mut c = config();
    c.node = "NodeB".into();
    assert!(matches!(
        Member::new(c),
        Err(HeartbeatError::NodeNotListed { .. })
    ));
    let mut c = config();
    c.deadtime_ms = 2000;
    assert!(matches!(Member::new(c), Err(HeartbeatError::Timing { .. })));
    let mut c = config();
    c.generation = 0;
    assert!(matches!(
        Member::new(c),
        Err(HeartbeatError::ZeroGeneration)
    ));
}

#[test]
fn acks_go_to_every_message_but_only_every_tenth_status() {
    let mut m = started();
    let mut out = Vec::new();
    for seq in 1..=20 {
        m.receive(0, &status(seq), at(seq * 1000), &mut out);
    }
    let acks: Vec<_> = sent(&out)
        .iter()
        .filter(|m| m.get_str("t") == Some("NS_ackmsg"))
        .map(|m| m.get_str("ackseq").unwrap().to_owned())
        .collect();
    assert_eq!(acks, ["a", "14"]);
}
