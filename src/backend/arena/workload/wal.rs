//! [`WriteLog`]: the key-value service's optional write-ahead log, in a
//! directory standing in for shared storage (a SAN or DRBD volume both
//! hosts see). Each write is applied and appended under one lock (so the
//! log's order is the table's), and synced before it is acknowledged; a
//! guest restarted elsewhere after its host died replays the log and has
//! every acknowledged write.
//!
//! File `kv.wal`, a sequence of 24-byte records:
//!
//! ```text
//!  0        8          16          24
//!  | key u64 | value u64 | check u64 |   little endian
//! ```
//!
//! `check` is a keyed mix of key and value. A torn last record (the host
//! died mid-append) is dropped on replay and cut off; a bad record before
//! the end is corruption and an error (nothing is replayed).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::kv_protocol::Response;
use super::mix;

/// Bytes per record.
pub const RECORD_BYTES: usize = 24;
const CHECK_KEY: u64 = 0x5750_4c4f_475f_7631; // "WPLOG_v1"

fn check(key: u64, value: u64) -> u64 {
    mix(CHECK_KEY ^ key ^ value.rotate_left(29))
}

/// An append-only log of the values writes produced.
#[derive(Debug)]
pub struct WriteLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl WriteLog {
    /// Open (creating) `dir/kv.wal`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("kv.wal");
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Call `apply(key, value)` for every record in order; cut a torn tail.
    /// Returns the records replayed.
    pub fn replay(&self, mut apply: impl FnMut(u64, u64)) -> io::Result<u64> {
        let mut data = Vec::new();
        File::open(&self.path)?.read_to_end(&mut data)?;
        let records = decode(&data).map_err(|offset| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: corrupt record at byte {offset}; refusing to replay a damaged log",
                    self.path.display()
                ),
            )
        })?;
        let whole = records.len() * RECORD_BYTES;
        for &(key, value) in &records {
            apply(key, value);
        }
        if whole != data.len() {
            let file = self
                .file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        Ok(records.len() as u64)
    }

    /// Run the write `apply` and log the value it produced for `key`, then
    /// sync; only then may the caller acknowledge the write.
    pub fn apply_logged(&self, key: u64, apply: impl FnOnce() -> Response) -> io::Result<Response> {
        let file = {
            let mut file = self
                .file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let response = apply();
            if let Response::Value(value) = response {
                file.write_all(&encode(key, value))?;
            } else {
                return Ok(response);
            }
            (file.try_clone()?, response)
        };
        // Sync outside the lock: concurrent writers share the disk flush.
        file.0.sync_data()?;
        Ok(file.1)
    }
}

/// One record's bytes.
pub fn encode(key: u64, value: u64) -> [u8; RECORD_BYTES] {
    let mut out = [0; RECORD_BYTES];
    out[..8].copy_from_slice(&key.to_le_bytes());
    out[8..16].copy_from_slice(&value.to_le_bytes());
    out[16..].copy_from_slice(&check(key, value).to_le_bytes());
    out
}

/// Decode a log: the records, ignoring one torn (short or bad) final
/// record; `Err(offset)` for a bad record before the end.
pub fn decode(data: &[u8]) -> Result<Vec<(u64, u64)>, usize> {
    let mut records = Vec::with_capacity(data.len() / RECORD_BYTES);
    let mut chunks = data.chunks(RECORD_BYTES).enumerate().peekable();
    while let Some((i, chunk)) = chunks.next() {
        let last = chunks.peek().is_none();
        let word = |at: usize| {
            chunk
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        match (word(0), word(8), word(16)) {
            (Some(k), Some(v), Some(c)) if c == check(k, v) => records.push((k, v)),
            _ if last => break,
            _ => return Err(i * RECORD_BYTES),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_torn_tail_is_dropped_and_a_bad_middle_record_refused() {
        let mut log = Vec::new();
        log.extend_from_slice(&encode(1, 10));
        log.extend_from_slice(&encode(2, 20));
        log.extend_from_slice(&encode(3, 30)[..7]);
        assert_eq!(decode(&log), Ok(vec![(1, 10), (2, 20)]));
        log[3] ^= 1;
        assert_eq!(decode(&log), Err(0));
    }

    proptest! {
        #[test]
        fn records_round_trip(recs in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..50)) {
            let data: Vec<u8> = recs.iter().flat_map(|&(k, v)| encode(k, v)).collect();
            prop_assert_eq!(decode(&data), Ok(recs));
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&data);
        }
    }
}
