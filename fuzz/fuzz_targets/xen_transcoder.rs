//! The Xen stream transcoder (`perfplus::backend::xen::transcode`), three
//! ways, chosen by the first byte:
//!
//! 0. arbitrary bytes into the decoder: never a panic, bounded memory;
//! 1. arbitrary chunk payloads, framed with valid check words after a valid
//!    HELLO, so the fuzzer gets past the integrity check into the PAGES
//!    parser: never a panic, and never a rebuilt stream without an error
//!    unless the rebuild matched the sender's digest;
//! 2. arbitrary bytes as a libxc stream into the encoder, then the decoder:
//!    the rebuilt stream must be byte-identical, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::backend::xen::transcode::{
    Decoder, DecoderLimits, Encoder, EncoderSettings,
};
use perfplus::migration::encode::EncodingSet;
use xxhash_rust::xxh3::xxh3_64;

const LIMITS: DecoderLimits = DecoderLimits {
    max_page_count: 1 << 16,
    max_delta_cache_bytes: 1 << 20,
};

fn settings(chunked: bool) -> EncoderSettings {
    EncoderSettings {
        chunked,
        encodings: EncodingSet::ALL,
        page_count: 1 << 12,
        delta_cache_bytes: 16 * 4096,
    }
}

fn decode(wire: &[u8], split: usize) -> (Vec<u8>, bool) {
    let mut d = Decoder::new(LIMITS);
    let mut out = Vec::new();
    let split = split.min(wire.len());
    d.push(&wire[..split]);
    let mut ok = d.decode(&mut out).is_ok();
    if ok {
        d.push(&wire[split..]);
        ok = d.decode(&mut out).is_ok() && d.finish().is_ok();
    }
    (out, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let split = data.first().map_or(0, |b| usize::from(*b) * 17);
    match mode % 3 {
        0 => {
            let _ = decode(data, split);
        }
        1 => {
            let mut wire = Vec::new();
            Encoder::new(settings(true)).hello(&mut wire);
            let mut rest = data;
            while rest.len() >= 3 {
                let kind = rest[0] % 5;
                let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
                let body = &rest[3..3 + len.min(rest.len() - 3)];
                rest = &rest[3 + body.len()..];
                let start = wire.len();
                wire.extend_from_slice(&[kind, 0, 0, 0]);
                wire.extend_from_slice(&(body.len() as u32).to_le_bytes());
                wire.extend_from_slice(body);
                let check = xxh3_64(&wire[start..]);
                wire.extend_from_slice(&check.to_le_bytes());
            }
            let _ = decode(&wire, split);
        }
        _ => {
            let mut encoder = Encoder::new(settings(true));
            let mut wire = Vec::new();
            encoder.hello(&mut wire);
            let cut = split.min(data.len());
            encoder.set_round(0);
            encoder.push_libxc(&data[..cut], &mut wire);
            encoder.set_round(1);
            encoder.push_libxc(&data[cut..], &mut wire);
            encoder.end(&mut wire);
            let (rebuilt, ok) = decode(&wire, split / 3);
            assert!(ok, "the decoder refused the encoder's own output");
            assert_eq!(rebuilt, data, "the rebuilt stream differs");
        }
    }
});
