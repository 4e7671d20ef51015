//! Heartbeat's number formats: `%lx` hex for `seq`, `hg`, `ts`, `dt`,
//! `ackseq` and the NAK's `firstseq`; `%d` decimal for the retransmit
//! request's bounds and `protocol`.

/// Parse 1 to 16 hex digits (either case, as `strtoul` accepts), no prefix,
/// sign or spaces.
pub fn parse_hex(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Parse 1 to 20 decimal digits, no sign or spaces, without overflow.
pub fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Format as Heartbeat's `%lx`: lower-case hex, no leading zeros.
pub fn hex(value: u64) -> String {
    format!("{value:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_numbers_round_trip_in_heartbeat_format() {
        assert_eq!(hex(0x14a), "14a");
        assert_eq!(parse_hex("14a"), Some(0x14a));
        assert_eq!(parse_hex("6B0686FA"), Some(0x6b06_86fa));
        assert_eq!(parse_hex(&hex(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn ten_in_hex_is_sixteen_not_ten() {
        // The trap the notes warn about: seq "10" is 16.
        assert_eq!(parse_hex("10"), Some(16));
        assert_eq!(parse_decimal("10"), Some(10));
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for bad in ["", "0x1f", "+1", "-1", " 1", "1 ", "g", "12345678901234567"] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
        for bad in ["", "1a", "+1", "-1", "99999999999999999999"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}
