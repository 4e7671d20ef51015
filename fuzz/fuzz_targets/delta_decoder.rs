//! Arbitrary deltas applied to a page: never a panic; and any page pair
//! round-trips through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::migration::encode::{apply_delta, encode_delta};

fuzz_target!(|data: &[u8]| {
    let mut page = vec![0x5a_u8; 4096];
    let _ = apply_delta(&mut page, data);

    // Round trip: the input edits a base page.
    let base: Vec<u8> = (0..4096).map(|i| (i * 7 % 251) as u8).collect();
    let mut new = base.clone();
    for pair in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % 4096;
        new[at] ^= pair[2];
    }
    let mut delta = Vec::new();
    if encode_delta(&base, &new, &mut delta) {
        let mut rebuilt = base.clone();
        apply_delta(&mut rebuilt, &delta).expect("an encoded delta decodes");
        assert_eq!(rebuilt, new);
    }
});
