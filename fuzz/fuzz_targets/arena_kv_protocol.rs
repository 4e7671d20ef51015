//! The key-value service's line protocol, as bytes from a client or a
//! service: framing and decoding never panic, never buffer past the line
//! limit, and whatever decodes re-encodes to the same line.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use perfplus::backend::arena::workload::kv_protocol::{read_line, Request, Response, MAX_LINE_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut reader = Cursor::new(data);
    let mut line = Vec::new();
    while let Ok(true) = read_line(&mut reader, &mut line) {
        assert!(line.len() <= MAX_LINE_BYTES);
        if let Ok(request) = Request::parse(&line) {
            let mut out = Vec::new();
            request.encode(&mut out);
            assert_eq!(&out[..out.len() - 1], &line[..], "requests are canonical");
        }
        if let Ok(response) = Response::parse(&line) {
            let mut out = Vec::new();
            response.encode(&mut out);
            assert_eq!(Response::parse(&out[..out.len() - 1]), Ok(response));
        }
    }
});
