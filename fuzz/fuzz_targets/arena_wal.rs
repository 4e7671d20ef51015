//! The key-value service's write-ahead log as read back from shared
//! storage: never a panic; the records decoded are a prefix of the file
//! (a torn tail dropped) and re-encode to exactly those bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::backend::arena::workload::wal::{decode, encode, RECORD_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = decode(data) {
        let bytes: Vec<u8> = records.iter().flat_map(|&(k, v)| encode(k, v)).collect();
        assert_eq!(&data[..bytes.len()], &bytes[..]);
        assert!(data.len() - bytes.len() <= RECORD_BYTES);
    }
});
