//! The perfplus heartbeat decoder and receive filter on arbitrary bytes:
//! never a panic; a packet the filter accepts re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::membership::NodeId;
use perfplus::wire::heartbeat::{decode, encode};
use perfplus::wire::{ClusterId, ClusterKey, Receiver};

fuzz_target!(|data: &[u8]| {
    // Two keys: the fuzzer cannot forge a tag, so also try the empty-secret
    // key over bytes whose tag it may have found in the corpus.
    let key = ClusterKey::derive(b"");
    if let Ok((cluster, hb)) = decode(data, &key) {
        assert_eq!(&encode(cluster, &hb, &key)[..], data);
    }
    let mut receiver = Receiver::new(ClusterId(0), key, NodeId(1), (1..=8).map(NodeId), 2);
    // Feed the input as a stream of 70-byte packets on alternating links.
    for (i, chunk) in data.chunks(70).enumerate() {
        let _ = receiver.accept(chunk, i % 2);
    }
    let stats = receiver.stats();
    assert!(stats.accepted + stats.dropped() + stats.own <= data.len().div_ceil(70) as u64 + 1);
});
