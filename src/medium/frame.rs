//! The medium's frame, authenticated with HMAC-SHA256 under the cluster key.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "PPMD"
//! 4       1     version (1)
//! 5       1     name length n (1..=64)
//! 6       n     sender node name (UTF-8)
//! 6+n     8     incarnation (big endian), grows at each open
//! 14+n    8     sequence number (big endian), from 1 in each incarnation
//! 22+n    4     payload length p (big endian)
//! 26+n    p     payload
//! 26+n+p  32    HMAC-SHA256(key, bytes 0 .. 26+n+p)
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Frame magic.
pub const MAGIC: &[u8; 4] = b"PPMD";
/// Frame version.
pub const VERSION: u8 = 1;
/// Longest node name.
pub const MAX_NAME_BYTES: usize = 64;
/// Largest frame (one UDP datagram over IPv4).
pub const MAX_FRAME_BYTES: usize = 65_507;
/// Fixed bytes around name and payload.
const OVERHEAD: usize = 4 + 1 + 1 + 8 + 8 + 4 + TAG_BYTES;
const TAG_BYTES: usize = 32;
/// Largest payload with the longest name.
pub const MAX_PAYLOAD_BYTES: usize = MAX_FRAME_BYTES - OVERHEAD - MAX_NAME_BYTES;
/// Shortest key accepted (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

/// A decoded, authenticated frame, borrowing the payload from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sender node name.
    pub sender: &'a str,
    /// Sender incarnation.
    pub incarnation: u64,
    /// Sequence number.
    pub seq: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why a datagram is not a frame of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header says, longer than a datagram, or trailing bytes.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// Magic or version not ours.
    #[error("not a perfplus medium frame (magic or version {0} unknown)")]
    Foreign(u8),
    /// The HMAC does not verify: wrong key, or altered.
    #[error("frame failed authentication (wrong key or altered)")]
    Authentication,
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts any key length; keys are checked to be >= 16 bytes when
    // the medium is configured.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

/// Encode one frame. The caller checks `sender` (1..=64 bytes) and the
/// payload size ([`MAX_PAYLOAD_BYTES`]); violations give `None`.
pub fn encode(
    key: &[u8],
    sender: &str,
    incarnation: u64,
    seq: u64,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let name_len = u8::try_from(sender.len())
        .ok()
        .filter(|n| (1..=64).contains(n))?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return None;
    }
    let payload_len = u32::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(OVERHEAD + sender.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(name_len);
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(&incarnation.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(payload);
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    Some(out)
}

/// Decode and authenticate one datagram.
pub fn decode<'a>(key: &[u8], datagram: &'a [u8]) -> Result<Frame<'a>, FrameError> {
    if datagram.len() > MAX_FRAME_BYTES {
        return Err(FrameError::Malformed("longer than a datagram"));
    }
    if datagram.len() < 6 {
        return Err(FrameError::Malformed("shorter than a header"));
    }
    if &datagram[..4] != MAGIC {
        return Err(FrameError::Foreign(0));
    }
    if datagram[4] != VERSION {
        return Err(FrameError::Foreign(datagram[4]));
    }
    let n = usize::from(datagram[5]);
    if n == 0 || n > MAX_NAME_BYTES {
        return Err(FrameError::Malformed("node name length not in 1..=64"));
    }
    let fixed_end = 6 + n + 8 + 8 + 4;
    if datagram.len() < fixed_end + TAG_BYTES {
        return Err(FrameError::Malformed("shorter than its header"));
    }
    let be_u64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&datagram[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&datagram[6 + n + 16..fixed_end]);
    let payload_len = usize::try_from(u32::from_be_bytes(len))
        .map_err(|_| FrameError::Malformed("payload length"))?;
    if datagram.len() != fixed_end + payload_len + TAG_BYTES {
        return Err(FrameError::Malformed(
            "length does not match the payload length field",
        ));
    }
    let signed_end = fixed_end + payload_len;
    let mut m = mac(key);
    m.update(&datagram[..signed_end]);
    m.verify_slice(&datagram[signed_end..])
        .map_err(|_| FrameError::Authentication)?;
    // Authentic from here on; the name is still checked, never trusted blindly.
    let sender = std::str::from_utf8(&datagram[6..6 + n])
        .map_err(|_| FrameError::Malformed("node name is not UTF-8"))?;
    Ok(Frame {
        sender,
        incarnation: be_u64(6 + n),
        seq: be_u64(6 + n + 8),
        payload: &datagram[fixed_end..signed_end],
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef-cluster-key";

    #[test]
    fn frame_round_trips_and_carries_its_header() {
        let f = encode(KEY, "nodea", 7, 42, b"###\nhello").unwrap();
        assert_eq!(&f[..4], b"PPMD");
        assert_eq!(f.len(), OVERHEAD + 5 + 9);
        let d = decode(KEY, &f).unwrap();
        assert_eq!(
            d,
            Frame {
                sender: "nodea",
                incarnation: 7,
                seq: 42,
                payload: b"###\nhello"
            }
        );
    }

    #[test]
    fn wrong_key_and_any_flipped_bit_fail() {
        let f = encode(KEY, "nodea", 1, 1, b"payload").unwrap();
        assert_eq!(
            decode(b"another key of 16+ bytes", &f),
            Err(FrameError::Authentication)
        );
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                assert!(decode(KEY, &g).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_or_extended_frames_are_malformed() {
        let f = encode(KEY, "nodea", 1, 1, b"payload").unwrap();
        for cut in 0..f.len() {
            assert!(decode(KEY, &f[..cut]).is_err());
        }
        let mut longer = f.clone();
        longer.push(0);
        assert!(matches!(
            decode(KEY, &longer),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn encoder_refuses_bad_names_and_payloads() {
        assert!(encode(KEY, "", 1, 1, b"").is_none());
        assert!(encode(KEY, &"n".repeat(65), 1, 1, b"").is_none());
        assert!(encode(KEY, "a", 1, 1, &vec![0; MAX_PAYLOAD_BYTES + 1]).is_none());
        let max = encode(KEY, &"n".repeat(64), 1, 1, &vec![0; MAX_PAYLOAD_BYTES]).unwrap();
        assert_eq!(max.len(), MAX_FRAME_BYTES);
    }

    proptest! {
        #[test]
        fn any_frame_round_trips(
            name in "[a-z0-9.-]{1,64}",
            inc in any::<u64>(), seq in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let f = encode(KEY, &name, inc, seq, &payload).unwrap();
            let d = decode(KEY, &f).unwrap();
            prop_assert_eq!(d.sender, name.as_str());
            prop_assert_eq!((d.incarnation, d.seq), (inc, seq));
            prop_assert_eq!(d.payload, &payload[..]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(KEY, &bytes);
            let mut framed = b"PPMD\x01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode(KEY, &framed);
        }
    }
}
