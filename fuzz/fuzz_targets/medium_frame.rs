//! Datagrams reaching the redundant medium: `frame::decode` must never
//! panic, and the dedup filter must take whatever an accepted frame holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::medium::dedup::Dedup;
use perfplus::medium::frame;

const KEY: &[u8] = b"fuzzing key, sixteen bytes or more";

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode(KEY, data);
    // Valid frames with fuzzed header values and payload reach the rest.
    if data.len() >= 17 {
        let (inc, rest) = data.split_at(8);
        let (seq, payload) = rest.split_at(8);
        let inc = u64::from_be_bytes(inc.try_into().unwrap());
        let seq = u64::from_be_bytes(seq.try_into().unwrap());
        if let Some(bytes) = frame::encode(KEY, "node", inc, seq, payload) {
            let f = frame::decode(KEY, &bytes).expect("own frame decodes");
            assert_eq!(f.payload, payload);
            let mut d = Dedup::new();
            let _ = d.check(f.sender, f.incarnation, f.seq);
        }
    }
});
