//! The control-channel decoder on arbitrary bytes: refused or decoded,
//! never a panic. The fuzzer cannot forge tags, so the input is also signed
//! with the right key (after its length field is made consistent), which
//! drives every body parser; what decodes must re-encode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::wire::control::{decode, encode, frame_len, Direction, HEADER_LEN, NONCE_LEN};
use perfplus::wire::ClusterKey;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::derive(b"fuzz").subkey("control");
    let nonce = [0x5a; NONCE_LEN];
    let _ = decode(&key, &nonce, Direction::Request, data);

    if data.len() < HEADER_LEN {
        return;
    }
    let mut frame = data.to_vec();
    let body = u32::try_from(frame.len() - HEADER_LEN).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(b"PPCT");
    frame[4] = 1;
    frame[8..12].copy_from_slice(&body.to_be_bytes());
    let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
    if frame_len(&header).is_err() {
        return;
    }
    let tag = key.sign(&[&nonce, b"req", &frame]);
    frame.extend_from_slice(&tag);
    if let Ok((from, message)) = decode(&key, &nonce, Direction::Request, &frame) {
        assert_eq!(encode(&key, &nonce, Direction::Request, from, &message), frame);
    }
});
