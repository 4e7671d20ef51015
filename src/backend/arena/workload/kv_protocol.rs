//! The key-value service's wire protocol: one request per line, one
//! response line per request, ASCII, keys and values unsigned 64-bit
//! decimal numbers.
//!
//! ```text
//!  request                 response
//!  GET <key>\n             VALUE <value>\n  |  NONE\n
//!  SET <key> <value>\n     VALUE <value>\n
//!  INCR <key>\n            VALUE <new value>\n
//!  (anything else)         ERR <reason>\n   and the server closes
//! ```
//!
//! Lines are at most [`MAX_LINE_BYTES`] bytes; decoding is strict (one
//! space between fields, no leading zeros, no sign, no trailing bytes).
//! Sans-io: the codec works on byte slices; [`read_line`] frames a stream.

use std::io::{self, BufRead};

/// Longest line, newline excluded.
pub const MAX_LINE_BYTES: usize = 64;

/// A client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Read a key.
    Get(u64),
    /// Set a key.
    Set(u64, u64),
    /// Add one to a key (absent keys count as 0).
    Incr(u64),
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The key's (new) value.
    Value(u64),
    /// `GET` of an absent key.
    Missing,
    /// The request was refused.
    Error(String),
}

/// A line that is not a valid request or response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// Unknown command word.
    #[error("unknown command")]
    UnknownCommand,
    /// Wrong number of fields for the command.
    #[error("wrong number of arguments")]
    Arity,
    /// A field that is not a canonical u64.
    #[error("not a number: {0:?}")]
    BadNumber(String),
    /// An error text that is not printable ASCII.
    #[error("unprintable error text")]
    BadText,
}

fn number(field: &[u8]) -> Result<u64, ProtocolError> {
    let bad = || ProtocolError::BadNumber(String::from_utf8_lossy(field).into_owned());
    if field.is_empty() || field.len() > 20 || !field.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if field.len() > 1 && field[0] == b'0' {
        return Err(bad());
    }
    std::str::from_utf8(field)
        .map_err(|_| bad())?
        .parse()
        .map_err(|_| bad())
}

fn fields(line: &[u8]) -> Result<Vec<&[u8]>, ProtocolError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(ProtocolError::TooLong);
    }
    Ok(line.split(|&b| b == b' ').collect())
}

impl Request {
    /// Decode one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Self, ProtocolError> {
        let f = fields(line)?;
        match f.as_slice() {
            [b"GET", k] => Ok(Self::Get(number(k)?)),
            [b"SET", k, v] => Ok(Self::Set(number(k)?, number(v)?)),
            [b"INCR", k] => Ok(Self::Incr(number(k)?)),
            [b"GET" | b"SET" | b"INCR", ..] => Err(ProtocolError::Arity),
            _ => Err(ProtocolError::UnknownCommand),
        }
    }

    /// Append the line, newline included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self {
            Self::Get(k) => format!("GET {k}\n"),
            Self::Set(k, v) => format!("SET {k} {v}\n"),
            Self::Incr(k) => format!("INCR {k}\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }

    /// The key the request is about.
    pub fn key(&self) -> u64 {
        match *self {
            Self::Get(k) | Self::Set(k, _) | Self::Incr(k) => k,
        }
    }

    /// Whether the request changes the table.
    pub fn is_write(&self) -> bool {
        !matches!(self, Self::Get(_))
    }
}

impl Response {
    /// Decode one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Self, ProtocolError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(ProtocolError::TooLong);
        }
        if let Some(text) = line.strip_prefix(b"ERR ") {
            if text.is_empty() || !text.iter().all(|b| (0x20..0x7f).contains(b)) {
                return Err(ProtocolError::BadText);
            }
            return Ok(Self::Error(String::from_utf8_lossy(text).into_owned()));
        }
        match fields(line)?.as_slice() {
            [b"VALUE", v] => Ok(Self::Value(number(v)?)),
            [b"NONE"] => Ok(Self::Missing),
            [b"VALUE", ..] | [b"NONE", ..] => Err(ProtocolError::Arity),
            _ => Err(ProtocolError::UnknownCommand),
        }
    }

    /// Append the line, newline included. Error texts are cut to fit a line
    /// and made printable.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Value(v) => out.extend_from_slice(format!("VALUE {v}\n").as_bytes()),
            Self::Missing => out.extend_from_slice(b"NONE\n"),
            Self::Error(text) => {
                out.extend_from_slice(b"ERR ");
                let clean: Vec<u8> = text
                    .bytes()
                    .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' })
                    .take(MAX_LINE_BYTES - 4)
                    .collect();
                if clean.is_empty() {
                    out.push(b'?');
                }
                out.extend_from_slice(&clean);
                out.push(b'\n');
            }
        }
    }
}

/// Read one line into `line` (newline stripped). `Ok(false)` at a clean end
/// of stream; an error for a line over [`MAX_LINE_BYTES`] or a stream that
/// ends mid-line. Never buffers more than the limit.
pub fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return if line.is_empty() {
                Ok(false)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended mid-line",
                ))
            };
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if line.len() + chunk.len() > MAX_LINE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ProtocolError::TooLong,
            ));
        }
        line.extend_from_slice(chunk);
        let used = found.unwrap_or(chunk.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line_of(encoded: &[u8]) -> &[u8] {
        encoded.strip_suffix(b"\n").expect("newline")
    }

    #[test]
    fn non_canonical_numbers_and_extra_fields_are_refused() {
        for bad in [
            &b"GET 01"[..],
            b"GET -1",
            b"GET +1",
            b"GET 18446744073709551616",
            b"GET  1",
            b"GET 1 ",
            b"SET 1",
            b"INCR",
            b"get 1",
            b"",
        ] {
            assert!(
                Request::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            Request::parse(b"GET 18446744073709551615"),
            Ok(Request::Get(u64::MAX))
        );
    }

    #[test]
    fn overlong_lines_are_refused_without_buffering_them() {
        let mut input = io::Cursor::new(vec![b'1'; 10_000]);
        let mut line = Vec::new();
        let err = read_line(&mut input, &mut line).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(line.len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn lines_split_across_reads_are_reassembled() {
        let data = b"GET 1\nINCR 22\n".to_vec();
        let mut reader = io::BufReader::with_capacity(3, io::Cursor::new(data));
        let mut line = Vec::new();
        assert!(read_line(&mut reader, &mut line).unwrap());
        assert_eq!(line, b"GET 1");
        assert!(read_line(&mut reader, &mut line).unwrap());
        assert_eq!(line, b"INCR 22");
        assert!(!read_line(&mut reader, &mut line).unwrap());
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<u64>().prop_map(Request::Get),
            (any::<u64>(), any::<u64>()).prop_map(|(k, v)| Request::Set(k, v)),
            any::<u64>().prop_map(Request::Incr),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        prop_oneof![
            any::<u64>().prop_map(Response::Value),
            Just(Response::Missing),
            "[ -~]{1,60}".prop_map(Response::Error),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(r in request()) {
            let mut out = Vec::new();
            r.encode(&mut out);
            prop_assert_eq!(Request::parse(line_of(&out)), Ok(r));
        }

        #[test]
        fn responses_round_trip(r in response()) {
            let mut out = Vec::new();
            r.encode(&mut out);
            prop_assert_eq!(Response::parse(line_of(&out)), Ok(r));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::parse(&bytes);
            let _ = Response::parse(&bytes);
            let mut reader = io::Cursor::new(bytes);
            let mut line = Vec::new();
            while let Ok(true) = read_line(&mut reader, &mut line) {
                let _ = Request::parse(&line);
            }
        }
    }
}
