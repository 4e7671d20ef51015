//! The perfplus heartbeat packet, version 1: 70 bytes, big-endian,
//! authenticated with HMAC-SHA256 (truncated to 128 bits, as RFC 4868 does
//! for IPsec) under the cluster key.
//!
//! ```text
//!   0                   1                   2                   3
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!  +-------------------------------+---------------+---------------+
//!  |        magic "PP" (0x5050)    |  version (1)  |     flags     |  0
//!  +-------------------------------+---------------+---------------+
//!  |                          cluster id                           |  4
//!  +-------------------------------+-------------------------------+
//!  |            node id            |          interval (ms)        |  8
//!  +-------------------------------+-------------------------------+
//!  |                     incarnation (64 bits)                     | 12
//!  +                                                               +
//!  |                                                               |
//!  +---------------------------------------------------------------+
//!  |                      sequence (64 bits)                       | 20
//!  +                                                               +
//!  |                                                               |
//!  +---------------------------------------------------------------+
//!  |              send time, sender's monotonic µs (64)            | 28
//!  +                                                               +
//!  |                                                               |
//!  +---------------------------------------------------------------+
//!  |                      view epoch (64 bits)                     | 36
//!  +                                                               +
//!  |                                                               |
//!  +---------------------------------------------------------------+
//!  |                     view digest (64 bits)                     | 44
//!  +                                                               +
//!  |                                                               |
//!  +---------------+---------------+-------------------------------+
//!  | ping reachable| ping configured|  HMAC-SHA256-128 tag (16 B)  | 52
//!  +---------------+---------------+                               +
//!  |                 over bytes 0..54 ...                          |
//!  +                               +-------------------------------+
//!  |                               |                                 70
//!  +-------------------------------+
//! ```
//!
//! - flags: bit 0 the sender is quorate, bit 1 the sender is leaving
//!   cleanly; every other bit must be 0 in version 1.
//! - cluster id: 32 bits naming the cluster and its node list (see
//!   [`ClusterId::derive`]); nodes configured differently do not mix.
//! - node id 0 is reserved; interval 0 is invalid; reachable ≤ configured.
//!
//! A receiver checks, in order: the exact length (70), the magic, the
//! version (another version is [`WireError::UnsupportedVersion`], so a newer
//! peer is told apart from garbage), the tag (constant-time), then the
//! fields. Nothing is parsed before it is authenticated. At 20 heartbeats
//! per second a node sends 70 B × 20 = 1.4 KB/s of payload per link
//! (1.96 KB/s with IPv4 and UDP headers) when the link is multicast or
//! broadcast, and that much per peer when it is unicast.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::WireError;
use crate::detector::Health;
use crate::membership::{Heartbeat, Incarnation, NodeId};

/// The magic bytes.
pub const MAGIC: [u8; 2] = *b"PP";
/// The version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of a version-1 packet.
pub const PACKET_LEN: usize = 70;
/// Length of the truncated HMAC tag.
pub const TAG_LEN: usize = 16;
/// Bytes covered by the tag.
const SIGNED_LEN: usize = PACKET_LEN - TAG_LEN;

const FLAG_QUORATE: u8 = 1 << 0;
const FLAG_LEAVING: u8 = 1 << 1;
const KNOWN_FLAGS: u8 = FLAG_QUORATE | FLAG_LEAVING;

type HmacSha256 = Hmac<Sha256>;

/// The key that authenticates heartbeats, shared by every node of a
/// cluster. Its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<secret>)")
    }
}

impl ClusterKey {
    /// Derive the key from a shared secret of any length (a key file, the
    /// secret of a Heartbeat `authkeys` line). Domain-separated, so the same
    /// secret used elsewhere yields an unrelated key.
    pub fn derive(secret: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"perfplus heartbeat key v1\0");
        hash.update(secret);
        Self(hash.finalize().into())
    }

    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// A key for another purpose (the control channel, say), derived from
    /// this one: one secret configures both, and neither ever authenticates
    /// the other's messages.
    pub fn subkey(&self, purpose: &str) -> ClusterKey {
        let mut mac = self.mac();
        mac.update(b"perfplus subkey v1\0");
        mac.update(purpose.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// HMAC-SHA256 over the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC-SHA256 of `parts` (constant time).
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }
}

/// A cluster's id on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u32);

impl ClusterId {
    /// The id of cluster `name` with these nodes (id, name): nodes whose
    /// configurations disagree on the node list get different ids, and their
    /// packets are dropped (and counted) instead of being misread.
    pub fn derive<'a>(name: &str, nodes: impl IntoIterator<Item = (NodeId, &'a str)>) -> Self {
        let mut nodes: Vec<(NodeId, &str)> = nodes.into_iter().collect();
        nodes.sort();
        let mut hash = Sha256::new();
        hash.update(b"perfplus cluster id v1\0");
        hash.update(name.as_bytes());
        for (id, node) in nodes {
            hash.update([0]);
            hash.update(id.0.to_be_bytes());
            hash.update(node.as_bytes());
        }
        let digest = hash.finalize();
        Self(u32::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3],
        ]))
    }
}

/// Encode and sign a heartbeat.
pub fn encode(cluster: ClusterId, hb: &Heartbeat, key: &ClusterKey) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] =
        (if hb.quorate { FLAG_QUORATE } else { 0 }) | (if hb.leaving { FLAG_LEAVING } else { 0 });
    out[4..8].copy_from_slice(&cluster.0.to_be_bytes());
    out[8..10].copy_from_slice(&hb.from.0.to_be_bytes());
    out[10..12].copy_from_slice(&hb.interval_ms.to_be_bytes());
    out[12..20].copy_from_slice(&hb.incarnation.0.to_be_bytes());
    out[20..28].copy_from_slice(&hb.seq.to_be_bytes());
    out[28..36].copy_from_slice(&hb.sent_at_us.to_be_bytes());
    out[36..44].copy_from_slice(&hb.view_epoch.to_be_bytes());
    out[44..52].copy_from_slice(&hb.view_digest.to_be_bytes());
    out[52] = hb.health.reachable;
    out[53] = hb.health.configured;
    let mut mac = key.mac();
    mac.update(&out[..SIGNED_LEN]);
    let tag = mac.finalize().into_bytes();
    out[SIGNED_LEN..].copy_from_slice(&tag[..TAG_LEN]);
    out
}

/// Decode and verify a packet: the cluster id it claims and the heartbeat.
/// Strict: anything but a well-formed, authentic version-1 packet is an
/// error.
pub fn decode(bytes: &[u8], key: &ClusterKey) -> Result<(ClusterId, Heartbeat), WireError> {
    if bytes.len() < 3 {
        return Err(WireError::Length { len: bytes.len() });
    }
    if bytes[0..2] != MAGIC {
        return Err(WireError::Magic);
    }
    if bytes[2] != VERSION {
        return Err(WireError::UnsupportedVersion { version: bytes[2] });
    }
    let bytes: &[u8; PACKET_LEN] = bytes
        .try_into()
        .map_err(|_| WireError::Length { len: bytes.len() })?;
    let mut mac = key.mac();
    mac.update(&bytes[..SIGNED_LEN]);
    mac.verify_truncated_left(&bytes[SIGNED_LEN..])
        .map_err(|_| WireError::Authentication)?;

    let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let flags = bytes[3];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(WireError::Flags { flags });
    }
    let cluster = ClusterId(u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
    let from = NodeId(u16_at(8));
    if from.0 == 0 {
        return Err(WireError::Field {
            field: "node id",
            why: "0 is reserved",
        });
    }
    let interval_ms = u16_at(10);
    if interval_ms == 0 {
        return Err(WireError::Field {
            field: "interval",
            why: "must be at least 1 ms",
        });
    }
    let health = Health {
        reachable: bytes[52],
        configured: bytes[53],
    };
    if health.reachable > health.configured {
        return Err(WireError::Field {
            field: "health",
            why: "more ping nodes reachable than configured",
        });
    }
    Ok((
        cluster,
        Heartbeat {
            from,
            incarnation: Incarnation(u64_at(12)),
            seq: u64_at(20),
            sent_at_us: u64_at(28),
            interval_ms,
            view_epoch: u64_at(36),
            view_digest: u64_at(44),
            health,
            quorate: flags & FLAG_QUORATE != 0,
            leaving: flags & FLAG_LEAVING != 0,
            deadtime_ms: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> ClusterKey {
        ClusterKey::derive(b"testsecret")
    }

    fn sample() -> Heartbeat {
        Heartbeat {
            from: NodeId(3),
            incarnation: Incarnation(1_700_000_000_123),
            seq: 42,
            sent_at_us: 9_000_001,
            interval_ms: 50,
            view_epoch: 7,
            view_digest: 0xdead_beef_0bad_cafe,
            health: Health {
                reachable: 1,
                configured: 2,
            },
            quorate: true,
            leaving: false,
            deadtime_ms: None,
        }
    }

    #[test]
    fn packet_round_trips_and_is_70_bytes() {
        let bytes = encode(ClusterId(9), &sample(), &key());
        assert_eq!(bytes.len(), PACKET_LEN);
        assert_eq!(&bytes[..4], b"PP\x01\x01");
        assert_eq!(decode(&bytes, &key()).unwrap(), (ClusterId(9), sample()));
    }

    #[test]
    fn wrong_key_is_an_authentication_failure() {
        let bytes = encode(ClusterId(9), &sample(), &key());
        assert_eq!(
            decode(&bytes, &ClusterKey::derive(b"other")),
            Err(WireError::Authentication)
        );
    }

    #[test]
    fn newer_version_is_told_apart_from_garbage() {
        let mut bytes = encode(ClusterId(9), &sample(), &key()).to_vec();
        bytes[2] = 2;
        bytes.extend_from_slice(&[0; 10]);
        assert_eq!(
            decode(&bytes, &key()),
            Err(WireError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(decode(b"Xx", &key()), Err(WireError::Length { len: 2 }));
        assert_eq!(decode(b"XXX", &key()), Err(WireError::Magic));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = encode(ClusterId(9), &sample(), &key());
        for bit in 0..PACKET_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped, &key()).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn authentic_but_invalid_fields_are_refused() {
        let mut hb = sample();
        hb.health.reachable = 5;
        assert!(matches!(
            decode(&encode(ClusterId(1), &hb, &key()), &key()),
            Err(WireError::Field {
                field: "health",
                ..
            })
        ));
        let mut hb = sample();
        hb.from = NodeId(0);
        assert!(matches!(
            decode(&encode(ClusterId(1), &hb, &key()), &key()),
            Err(WireError::Field {
                field: "node id",
                ..
            })
        ));
    }

    #[test]
    fn cluster_id_depends_on_the_node_list_not_its_order() {
        let a = ClusterId::derive("ha", [(NodeId(1), "alpha"), (NodeId(2), "beta")]);
        let b = ClusterId::derive("ha", [(NodeId(2), "beta"), (NodeId(1), "alpha")]);
        let c = ClusterId::derive("ha", [(NodeId(1), "beta"), (NodeId(2), "alpha")]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn key_debug_does_not_leak_the_secret() {
        assert_eq!(format!("{:?}", key()), "ClusterKey(<secret>)");
    }

    fn heartbeat_strategy() -> impl Strategy<Value = Heartbeat> {
        (
            1..=u16::MAX,
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            1..=u16::MAX,
            any::<(u64, u64)>(),
            (0..=u8::MAX).prop_flat_map(|c| (0..=c, Just(c))),
            any::<(bool, bool)>(),
        )
            .prop_map(
                |(from, inc, seq, sent, interval, (epoch, digest), (reach, conf), (q, l))| {
                    Heartbeat {
                        from: NodeId(from),
                        incarnation: Incarnation(inc),
                        seq,
                        sent_at_us: sent,
                        interval_ms: interval,
                        view_epoch: epoch,
                        view_digest: digest,
                        health: Health {
                            reachable: reach,
                            configured: conf,
                        },
                        quorate: q,
                        leaving: l,
                        deadtime_ms: None,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_heartbeat_round_trips(hb in heartbeat_strategy(), cluster in any::<u32>()) {
            let bytes = encode(ClusterId(cluster), &hb, &key());
            prop_assert_eq!(decode(&bytes, &key()), Ok((ClusterId(cluster), hb)));
        }

        #[test]
        fn garbage_never_panics_and_is_never_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(decode(&bytes, &key()).is_err());
        }

        #[test]
        fn truncated_or_extended_packets_are_refused(hb in heartbeat_strategy(), cut in 0..PACKET_LEN, extra in 1..8usize) {
            let bytes = encode(ClusterId(1), &hb, &key());
            prop_assert!(decode(&bytes[..cut], &key()).is_err());
            let mut longer = bytes.to_vec();
            longer.extend(std::iter::repeat_n(0u8, extra));
            prop_assert!(decode(&longer, &key()).is_err());
        }
    }
}
