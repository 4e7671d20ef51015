//! Heartbeat 3 packets from the network: `decode` must never panic, and
//! whatever it accepts must re-encode (size limits aside) to a packet that
//! decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::wire::hb3::{decode, encode, AuthKey, AuthMethod, Hb3Error, Keyring};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the method, so CRC (forgeable) packets reach the
    // deeper parts of the decoder too.
    let (method, packet) = match data.split_first() {
        Some((0, rest)) => (AuthMethod::Crc, rest),
        Some((1, rest)) => (AuthMethod::Md5, rest),
        Some((_, rest)) => (AuthMethod::Sha1, rest),
        None => return,
    };
    let keys = Keyring::single(AuthKey::new(1, method, "testsecret"));
    if let Ok(decoded) = decode(packet, &keys) {
        let again = match encode(&decoded.message, decoded.framing, &keys) {
            Ok(again) => again,
            // Re-encoding adds an inner `auth` the packet may have lacked.
            Err(Hb3Error::TooLarge { .. } | Hb3Error::TooManyFields { .. }) => return,
            Err(e) => panic!("an accepted message does not re-encode: {e}"),
        };
        let twice = decode(&again, &keys).expect("a re-encoded message decodes");
        assert_eq!(twice.message, decoded.message);
    }
});
