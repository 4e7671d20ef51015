//! The codec against a packet captured from a real Heartbeat 3.0.6 node, and
//! property tests: round trips, and garbage never panics.

use proptest::prelude::*;

use super::*;

const CAPTURED_UUID: [u8; 16] = [
    0xa9, 0x79, 0xde, 0xf6, 0xab, 0x09, 0x4e, 0xf0, 0x81, 0x9b, 0x48, 0x66, 0x1a, 0x54, 0xb0, 0x23,
];

fn captured_keys() -> Keyring {
    Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "testsecret"))
}

fn captured_status() -> Message {
    Message::new()
        .with_str("t", "status")
        .with_str("st", "active")
        .with_str("dt", "1f40")
        .with_str("protocol", "1")
        .with_str("src", "nodea")
        .with_binary("srcuuid", CAPTURED_UUID)
        .with_str("seq", "8")
        .with_str("hg", "6b0686fa")
        .with_str("ts", "6b0686fb")
        .with_str("ld", "0.15 0.13 0.05 3/100 7802")
        .with_str("ttl", "3")
}

/// The 310-byte status packet nodeA sent (heartbeat-ocf notes, section 4).
fn captured_packet() -> Vec<u8> {
    let mut p = b"###\n11:(0)t=status,12:(0)st=active,10:(0)dt=1f40,13:(0)protocol=1,12:(0)src=nodea,27:(1)srcuuid=".to_vec();
    p.extend_from_slice(&CAPTURED_UUID);
    p.extend_from_slice(
        b",8:(0)seq=8,14:(0)hg=6b0686fa,14:(0)ts=6b0686fb,31:(0)ld=0.15 0.13 0.05 3/100 7802,\
          8:(0)ttl=3,50:(0)auth=1 b8caaa5ad1dad4cc08726ad19ed13013b0b56b49,%%%\n\
          42:1 a2bad64ca5837bd8684b6cf827a59da59d2e6cf4,",
    );
    p
}

#[test]
fn encoder_reproduces_the_captured_heartbeat_packet_byte_for_byte() {
    let packet = captured_packet();
    assert_eq!(packet.len(), 310);
    let encoded = encode(&captured_status(), Framing::Netstring, &captured_keys()).unwrap();
    assert_eq!(encoded, packet);
}

#[test]
fn captured_packet_decodes_and_both_hmacs_recompute() {
    let decoded = decode(&captured_packet(), &captured_keys()).unwrap();
    assert_eq!(decoded.framing, Framing::Netstring);
    assert_eq!(decoded.key_index, 1);
    assert_eq!(decoded.message, captured_status());
    assert_eq!(decoded.message.get_hex(field::SEQ), Some(8));
    assert_eq!(decoded.message.get_hex(field::DEADTIME), Some(8000));
    assert_eq!(
        decoded.message.get_binary(field::SOURCE_UUID),
        Some(&CAPTURED_UUID[..])
    );
    // Inner HMAC: over the classic form, as the notes give it.
    let classic = classic_form(&decoded.message).unwrap();
    assert_eq!(
        classic,
        b"t=status\nst=active\ndt=1f40\nprotocol=1\nsrc=nodea\n(1)srcuuid=qXne9qsJTvCBm0hmGlSwIw==\n\
          seq=8\nhg=6b0686fa\nts=6b0686fb\nld=0.15 0.13 0.05 3/100 7802\nttl=3\n"
    );
    assert_eq!(
        captured_keys().sign(&classic),
        "1 b8caaa5ad1dad4cc08726ad19ed13013b0b56b49"
    );
    // Outer HMAC: over "###\n" .. "%%%\n".
    let packet = captured_packet();
    let body_end = packet.windows(4).position(|w| w == b"%%%\n").unwrap() + 4;
    assert_eq!(
        captured_keys().sign(&packet[..body_end]),
        "1 a2bad64ca5837bd8684b6cf827a59da59d2e6cf4"
    );
}

#[test]
fn captured_packet_under_a_wrong_key_fails_authentication() {
    let wrong = Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "not the secret"));
    assert_eq!(
        decode(&captured_packet(), &wrong),
        Err(Hb3Error::AuthenticationFailed { index: 1 })
    );
}

#[test]
fn flipping_any_byte_of_the_captured_packet_is_detected() {
    let packet = captured_packet();
    for i in 0..packet.len() {
        let mut bad = packet.clone();
        bad[i] ^= 0x01;
        assert!(
            decode(&bad, &captured_keys()).is_err(),
            "flip at byte {i} went unnoticed"
        );
    }
}

#[test]
fn classic_framing_round_trips_and_is_authenticated_by_its_auth_line() {
    let keys = captured_keys();
    let packet = encode(&captured_status(), Framing::Classic, &keys).unwrap();
    assert!(packet.starts_with(b">>>\nt=status\n"));
    assert!(packet.ends_with(b"auth=1 b8caaa5ad1dad4cc08726ad19ed13013b0b56b49\n<<<\n"));
    let decoded = decode(&packet, &keys).unwrap();
    assert_eq!(decoded.framing, Framing::Classic);
    assert_eq!(decoded.message, captured_status());
    let without_auth: Vec<u8> = String::from_utf8_lossy(&packet)
        .lines()
        .filter(|l| !l.starts_with("auth="))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    assert!(matches!(
        decode(&without_auth, &keys),
        Err(Hb3Error::MissingAuth { .. })
    ));
}

#[test]
fn netstring_packet_without_the_outer_hmac_is_refused() {
    let packet = captured_packet();
    let body_end = packet.windows(4).position(|w| w == b"%%%\n").unwrap() + 4;
    assert!(matches!(
        decode(&packet[..body_end], &captured_keys()),
        Err(Hb3Error::MissingAuth { .. })
    ));
}

#[test]
fn trailing_bytes_after_the_outer_hmac_are_refused() {
    let mut packet = captured_packet();
    packet.push(b'\n');
    assert!(matches!(
        decode(&packet, &captured_keys()),
        Err(Hb3Error::Malformed { .. })
    ));
}

#[test]
fn wrong_netstring_length_names_the_offset() {
    let packet = captured_packet();
    let mut bad = packet.clone();
    bad[4] = b'9'; // "11:(0)t=status," claims 91 bytes
                   // The field starts at 4, its payload at 7; 91 bytes on, no ','.
    let err = decode(&bad, &captured_keys()).unwrap_err();
    assert!(
        matches!(err, Hb3Error::Malformed { offset: 98, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "malformed packet at byte 98: ',' at the end of the netstring"
    );
}

#[test]
fn struct_fields_travel_opaque_without_inner_auth() {
    let keys = captured_keys();
    let mut m = Message::new().with_str("t", "hbapi-clstat");
    m.push(
        "nested",
        Value::Other {
            kind: 2,
            bytes: b"###\n5:(0)a=b,%%%\n".to_vec(),
        },
    );
    let packet = encode(&m, Framing::Netstring, &keys).unwrap();
    assert!(!packet.windows(7).any(|w| w == b"(0)auth"));
    assert_eq!(decode(&packet, &keys).unwrap().message, m);
    assert!(matches!(
        encode(&m, Framing::Classic, &keys),
        Err(Hb3Error::UnsupportedFieldType { kind: 2, .. })
    ));
}

#[test]
fn encoder_refuses_what_the_decoder_would_refuse() {
    let keys = captured_keys();
    let cases = [
        Message::new().with_str("a=b", "x"),
        Message::new().with_str("", "x"),
        Message::new().with_str("t", "two\nlines"),
        Message::new().with_str("t", "x").with_str("t", "y"),
        Message::new().with_str("auth", "1 00"),
    ];
    for m in cases {
        assert!(encode(&m, Framing::Netstring, &keys).is_err(), "{m:?}");
    }
}

#[test]
fn duplicate_fields_are_refused_on_decode() {
    let keys = captured_keys();
    // A packet that repeats `t` is ambiguous (Heartbeat reads the first);
    // it is refused before its authentication is even checked.
    let twice = Message::new().with_str("t", "status").with_str("x", "1");
    let text = String::from_utf8(encode(&twice, Framing::Classic, &keys).unwrap()).unwrap();
    let forged = text.replace("x=1", "t=other");
    assert!(matches!(
        decode(forged.as_bytes(), &keys),
        Err(Hb3Error::DuplicateField { .. })
    ));
}

#[test]
fn oversized_packets_and_unknown_framing_are_refused() {
    let keys = captured_keys();
    let big = vec![b'#'; MAX_PACKET_BYTES + 1];
    assert!(matches!(
        decode(&big, &keys),
        Err(Hb3Error::TooLarge { .. })
    ));
    assert_eq!(decode(b"hello", &keys), Err(Hb3Error::UnknownFraming));
    assert_eq!(decode(b"", &keys), Err(Hb3Error::UnknownFraming));
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,10}"
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec(
            any::<u8>().prop_filter("c string", |c| *c != 0 && *c != b'\n'),
            0..40
        )
        .prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    proptest::collection::btree_map(arb_name(), arb_value(), 0..20).prop_map(|fields| {
        let mut m = Message::new();
        for (name, value) in fields {
            if name != "auth" {
                m.push(&name, value);
            }
        }
        m
    })
}

fn arb_keys() -> impl Strategy<Value = Keyring> {
    (
        0u8..=15,
        prop_oneof![
            Just(AuthMethod::Sha1),
            Just(AuthMethod::Md5),
            Just(AuthMethod::Crc)
        ],
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(i, m, s)| Keyring::single(AuthKey::new(i, m, s)))
}

proptest! {
    #[test]
    fn every_message_round_trips_through_both_framings(m in arb_message(), keys in arb_keys()) {
        for framing in [Framing::Netstring, Framing::Classic] {
            let packet = encode(&m, framing, &keys).unwrap();
            let decoded = decode(&packet, &keys).unwrap();
            prop_assert_eq!(&decoded.message, &m);
            prop_assert_eq!(decoded.framing, framing);
            prop_assert_eq!(decoded.key_index, keys.signing_key().index);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes, &captured_keys());
    }

    #[test]
    fn garbage_after_a_valid_prefix_never_panics(
        cut in 0usize..310,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut packet = captured_packet();
        packet.truncate(cut);
        packet.extend_from_slice(&tail);
        let _ = decode(&packet, &captured_keys());
    }

    #[test]
    fn a_corrupted_valid_packet_is_refused_or_unchanged(
        m in arb_message(), at in any::<prop::sample::Index>(), flip in 1u8..=255,
    ) {
        let keys = captured_keys();
        let mut packet = encode(&m, Framing::Netstring, &keys).unwrap();
        let i = at.index(packet.len());
        packet[i] ^= flip;
        // HMAC-SHA1: any change must fail authentication (or framing).
        prop_assert!(decode(&packet, &keys).is_err());
    }
}
