//! What an arena migration adds around the engine's stream, on the same
//! TCP connection: a preamble that tells the receiver how large an incoming
//! guest to start, and a status service that says how a migration ended,
//! for a source whose migration controller died mid-way (see `keeper`).
//!
//! ```text
//!  sender → receiver, first line:   PPMIGRATE/1 <backend> <id> <pages>\n   then the engine's stream
//!  keeper → receiver, first line:   STATUS <id>\n
//!  receiver → keeper:               COMMITTED\n | ABORTED\n
//! ```
//!
//! A receiver records every migration's outcome in [`Outcomes`]. A status
//! query for a migration still in progress waits for its end; a query for
//! an id it never saw records that id as aborted first, so a late stream
//! with that id is refused: once answered, an outcome never changes.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub use super::keeper::Outcome;
use super::keeper::{parse_status_request, valid_migration_id};

/// Longest first line.
pub const MAX_FIRST_LINE: usize = 128;
const MIGRATE_PREFIX: &str = "PPMIGRATE/1 ";

/// The first line of a connection to an arena receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstLine {
    /// A migration of a guest of `pages` pages follows.
    Migrate {
        /// The source's backend (`arena`, `sim`): what kind of domain to
        /// receive into.
        backend: String,
        /// The migration's id.
        id: String,
        /// The arena's size.
        pages: u64,
    },
    /// A keeper asks how migration `id` ended.
    Status {
        /// The migration's id.
        id: String,
    },
}

impl FirstLine {
    /// Encode, newline included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Migrate { backend, id, pages } => {
                format!("{MIGRATE_PREFIX}{backend} {id} {pages}\n")
            }
            Self::Status { id } => format!("STATUS {id}\n"),
        }
        .into_bytes()
    }

    /// Decode a line (without newline).
    pub fn parse(line: &[u8]) -> Option<Self> {
        if line.len() > MAX_FIRST_LINE {
            return None;
        }
        if let Some(id) = parse_status_request(line) {
            return Some(Self::Status { id: id.to_owned() });
        }
        let rest = std::str::from_utf8(line)
            .ok()?
            .strip_prefix(MIGRATE_PREFIX)?;
        let (backend, rest) = rest.split_once(' ')?;
        let (id, pages) = rest.split_once(' ')?;
        let backend_ok =
            (1..=16).contains(&backend.len()) && backend.bytes().all(|b| b.is_ascii_lowercase());
        let canonical = !pages.is_empty()
            && pages.bytes().all(|b| b.is_ascii_digit())
            && !(pages.len() > 1 && pages.starts_with('0'));
        let pages: u64 = pages.parse().ok().filter(|_| canonical)?;
        (backend_ok && valid_migration_id(id) && (2..=1 << 36).contains(&pages)).then(|| {
            Self::Migrate {
                backend: backend.to_owned(),
                id: id.to_owned(),
                pages,
            }
        })
    }

    /// Read the first line from `stream` one byte at a time (so nothing
    /// after it is consumed), within `timeout`.
    pub fn read_from(stream: &mut TcpStream, timeout: Duration) -> io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        let mut line = Vec::with_capacity(64);
        let mut byte = [0_u8];
        loop {
            if stream.read(&mut byte)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before its first line",
                ));
            }
            if byte[0] == b'\n' {
                break;
            }
            if line.len() >= MAX_FIRST_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "first line too long",
                ));
            }
            line.push(byte[0]);
        }
        Self::parse(&line).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "not an arena migration or status line: {:?}",
                    String::from_utf8_lossy(&line)
                ),
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    InProgress,
    Done(Outcome),
}

/// The outcome of every migration a receiver saw.
#[derive(Debug, Default)]
pub struct Outcomes {
    fates: Mutex<HashMap<String, Fate>>,
    changed: Condvar,
}

impl Outcomes {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fate>> {
        self.fates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A migration `id` starts; `false` if the id was seen before (a
    /// replayed or late stream, which must be refused).
    pub fn begin(&self, id: &str) -> bool {
        let mut fates = self.lock();
        if fates.contains_key(id) {
            return false;
        }
        fates.insert(id.to_owned(), Fate::InProgress);
        true
    }

    /// Migration `id` ended.
    pub fn finish(&self, id: &str, outcome: Outcome) {
        self.lock().insert(id.to_owned(), Fate::Done(outcome));
        self.changed.notify_all();
    }

    /// How migration `id` ended, waiting up to `timeout` for one in
    /// progress (`None` if it is still running then). An unknown id is
    /// recorded as aborted.
    pub fn query(&self, id: &str, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut fates = self.lock();
        loop {
            match fates.get(id).copied() {
                None => {
                    fates.insert(id.to_owned(), Fate::Done(Outcome::Aborted));
                    return Some(Outcome::Aborted);
                }
                Some(Fate::Done(outcome)) => return Some(outcome),
                Some(Fate::InProgress) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    fates = self
                        .changed
                        .wait_timeout(fates, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// Answer a status query on `stream` (its first line already read).
    pub fn answer(&self, stream: &mut TcpStream, id: &str, timeout: Duration) -> io::Result<()> {
        use std::io::Write;
        match self.query(id, timeout) {
            Some(outcome) => stream.write_all(format!("{}\n", outcome.as_line()).as_bytes()),
            None => Ok(()), // still running: the keeper asks again
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_lines_round_trip_and_are_strict() {
        for line in [
            FirstLine::Migrate {
                backend: "arena".into(),
                id: "m-1".into(),
                pages: 262_144,
            },
            FirstLine::Status { id: "m-1".into() },
        ] {
            let bytes = line.encode();
            assert_eq!(FirstLine::parse(&bytes[..bytes.len() - 1]), Some(line));
        }
        for bad in [
            &b"PPMIGRATE/1 arena m 1"[..],
            b"PPMIGRATE/1 arena m 010",
            b"PPMIGRATE/1 arena a b 10",
            b"PPMIGRATE/2 arena m 10",
            b"PPMIGRATE/1 arena  10",
            b"PPMIGRATE/1 Arena m 10",
            b"PPMIGRATE/1 m 10",
        ] {
            assert_eq!(
                FirstLine::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_answered_outcome_never_changes() {
        let o = Outcomes::new();
        // Asked before it began: aborted, and the late stream is refused.
        assert_eq!(o.query("late", Duration::ZERO), Some(Outcome::Aborted));
        assert!(!o.begin("late"));
        assert!(o.begin("m"));
        assert_eq!(o.query("m", Duration::from_millis(10)), None);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                o.finish("m", Outcome::Committed);
            });
            assert_eq!(
                o.query("m", Duration::from_secs(5)),
                Some(Outcome::Committed)
            );
        });
    }

    proptest! {
        #[test]
        fn garbage_first_lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FirstLine::parse(&bytes);
        }
    }
}
