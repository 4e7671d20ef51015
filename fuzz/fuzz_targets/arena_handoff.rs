//! What an arena receiver and a guest keeper read from the network: the
//! connection's first line (migration preamble or status query), the
//! status answer, and the guest state blob that travels in the stream.
//! Never a panic; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfplus::backend::arena::handoff::FirstLine;
use perfplus::backend::arena::workload::GuestSpec;
use perfplus::backend::arena::{parse_status_request, Outcome};

fuzz_target!(|data: &[u8]| {
    if let Some(first) = FirstLine::parse(data) {
        let bytes = first.encode();
        assert_eq!(&bytes[..bytes.len() - 1], data, "first lines are canonical");
    }
    if let Some(id) = parse_status_request(data) {
        assert_eq!(format!("STATUS {id}").as_bytes(), data);
    }
    if let Some(outcome) = Outcome::parse(data) {
        assert_eq!(outcome.as_line().as_bytes(), data);
    }
    if let Ok(spec) = GuestSpec::from_blob(data) {
        assert_eq!(GuestSpec::from_blob(&spec.to_blob()), Ok(spec));
    }
});
