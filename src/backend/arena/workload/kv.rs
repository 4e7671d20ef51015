//! The key-value service: an open-addressing hash table in the arena,
//! served over TCP with the line protocol of [`kv_protocol`](super::kv_protocol).
//!
//! A slot is 64 bytes (8 words): `key + 1` (0: empty, `BUSY`: being
//! inserted), the value, and six filler words derived from the key (an
//! object's body, and a check that the slot is intact). Inserting claims an
//! empty slot with a compare-and-swap to `BUSY`, writes filler and value,
//! then publishes the key; updating a value is one atomic store or add. So
//! at every instant each slot is empty, busy (an unacknowledged insert,
//! cleared by [`recover`]) or whole.
//!
//! A write is acknowledged only after it is in the arena (and, with a
//! write-ahead log, synced there first); see [`Table::apply`].

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::kv_protocol::{read_line, Request, Response, MAX_LINE_BYTES};
use super::wal::WriteLog;
use super::{header, mix, ArenaMemory, GuestSpec};

/// Words per slot.
pub const SLOT_WORDS: usize = 8;
/// A slot being inserted.
const BUSY: u64 = u64::MAX;
/// Most concurrent connections; more are closed at once.
pub const MAX_CONNECTIONS: u64 = 256;
/// Header register: writes applied (a hot word, like a kernel's counters).
const WRITES: usize = header::REGISTERS;
/// Header register: inserts in progress. An adopter finds half-inserted
/// slots only when it is not zero, so it scans the table only then.
const INSERTING: usize = header::REGISTERS + 1;

/// Slots for `keys` keys: a power of two at least twice the key count.
pub fn slots_for(keys: u64) -> u64 {
    (keys.saturating_mul(2)).next_power_of_two().max(64)
}

/// Pages the table for `keys` keys needs, with pages of `words_per_page`.
pub fn table_pages_for(keys: u64, words_per_page: usize) -> u64 {
    (slots_for(keys) * SLOT_WORDS as u64).div_ceil(words_per_page as u64)
}

/// Pages the table for `keys` keys needs on this host.
pub fn table_pages(keys: u64) -> u64 {
    table_pages_for(keys, super::super::host_page_size() / 8)
}

fn filler(key: u64, i: usize) -> u64 {
    mix(key.rotate_left(7) ^ i as u64) | 1
}

/// The table in an arena.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    mem: ArenaMemory<'a>,
    first_word: usize,
    mask: u64,
}

/// Where a key lives, or why it could not be placed.
enum Probe {
    Found(usize),
    Absent,
}

impl<'a> Table<'a> {
    /// The table at pages `[first, end)`.
    pub fn new(mem: ArenaMemory<'a>, first: u64, end: u64) -> Self {
        let wpp = mem.words_per_page() as u64;
        let slots = (end - first) * wpp / SLOT_WORDS as u64;
        Self {
            mem,
            first_word: usize::try_from(first * wpp).unwrap_or(usize::MAX),
            // The largest power of two that fits (exactly `slots` when the
            // table was sized by `table_pages_for`).
            mask: (1_u64 << (63 - slots.max(1).leading_zeros())) - 1,
        }
    }

    fn slot(&self, index: u64) -> usize {
        self.first_word + usize::try_from(index & self.mask).unwrap_or(0) * SLOT_WORDS
    }

    /// The slot's tag once no insert is in progress there.
    fn published_tag(&self, slot: usize) -> u64 {
        loop {
            match self.mem.load(slot) {
                BUSY => std::thread::yield_now(), // another thread is inserting
                tag => return tag,
            }
        }
    }

    fn find(&self, key: u64) -> Probe {
        let tag = key + 1;
        let mut index = mix(key);
        for _ in 0..=self.mask {
            let slot = self.slot(index);
            match self.published_tag(slot) {
                0 => return Probe::Absent,
                t if t == tag => return Probe::Found(slot),
                _ => index += 1,
            }
        }
        Probe::Absent
    }

    /// Insert `key` with `value` unless present; returns its slot, `None`
    /// when the table is full.
    fn insert(&self, key: u64, value: u64) -> Option<usize> {
        let tag = key + 1;
        let mut index = mix(key);
        let mut probes = 0;
        while probes <= self.mask {
            let slot = self.slot(index);
            match self.published_tag(slot) {
                0 => {
                    let word = self.mem.word(slot);
                    let inserting = self.mem.word(INSERTING);
                    inserting.fetch_add(1, Ordering::AcqRel);
                    if word
                        .compare_exchange(0, BUSY, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        inserting.fetch_sub(1, Ordering::AcqRel);
                        continue; // someone claimed it first: look at it again
                    }
                    for i in 2..SLOT_WORDS {
                        self.mem.store(slot + i, filler(key, i));
                    }
                    self.mem.store(slot + 1, value);
                    word.store(tag, Ordering::Release);
                    inserting.fetch_sub(1, Ordering::AcqRel);
                    return Some(slot);
                }
                t if t == tag => return Some(slot),
                _ => {
                    index += 1;
                    probes += 1;
                }
            }
        }
        None
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<u64> {
        match self.find(key) {
            Probe::Found(slot) => Some(self.mem.load(slot + 1)),
            Probe::Absent => None,
        }
    }

    /// Apply a request to the table; `None` for a full table. Writes return
    /// the key's new value.
    pub fn apply(&self, request: Request) -> Response {
        let result = match request {
            Request::Get(key) => return self.get(key).map_or(Response::Missing, Response::Value),
            Request::Set(key, value) => self.insert(key, value).map(|slot| {
                self.mem.store(slot + 1, value);
                value
            }),
            Request::Incr(key) => match self.find(key) {
                Probe::Found(slot) => Some(
                    self.mem
                        .word(slot + 1)
                        .fetch_add(1, Ordering::AcqRel)
                        .wrapping_add(1),
                ),
                Probe::Absent => self.insert(key, 0).map(|slot| {
                    self.mem
                        .word(slot + 1)
                        .fetch_add(1, Ordering::AcqRel)
                        .wrapping_add(1)
                }),
            },
        };
        match result {
            Some(value) => {
                self.mem.word(WRITES).fetch_add(1, Ordering::Relaxed);
                Response::Value(value)
            }
            None => Response::Error("table full".into()),
        }
    }
}

pub(super) fn init(mem: ArenaMemory<'_>, spec: &GuestSpec, first: u64, end: u64) {
    let table = Table::new(mem, first, end);
    for key in 0..spec.keys {
        let _ = table.insert(key, 0);
    }
}

/// Clear slots a stop left half-inserted (their writes were never
/// acknowledged).
pub(super) fn recover(mem: ArenaMemory<'_>, first: u64, end: u64) {
    if mem.load(INSERTING) == 0 {
        return; // no insert was under way: no slot is half-inserted
    }
    let table = Table::new(mem, first, end);
    for index in 0..=table.mask {
        let slot = table.slot(index);
        if mem.load(slot) == BUSY {
            mem.store(slot, 0);
        }
    }
    mem.store(INSERTING, 0);
}

pub(super) fn verify(mem: ArenaMemory<'_>, first: u64, end: u64) -> Result<String, String> {
    let table = Table::new(mem, first, end);
    let mut keys = 0_u64;
    for index in 0..=table.mask {
        let slot = table.slot(index);
        let tag = mem.load(slot);
        if tag == 0 {
            continue;
        }
        if tag == BUSY {
            return Err(format!("slot {index} is mid-insert"));
        }
        let key = tag - 1;
        for i in 2..SLOT_WORDS {
            if mem.load(slot + i) != filler(key, i) {
                return Err(format!(
                    "slot {index} (key {key}) has a damaged body at word {i}"
                ));
            }
        }
        match table.find(key) {
            Probe::Found(s) if s == slot => {}
            _ => {
                return Err(format!(
                    "key {key} in slot {index} is unreachable or duplicated"
                ))
            }
        }
        keys += 1;
    }
    Ok(format!("keys={keys} writes={}", mem.load(WRITES)))
}

/// How long a guest waits for its service address to become free (a
/// migration source that has not exited yet may still hold it) or to
/// arrive on this host.
pub const BIND_PATIENCE: Duration = Duration::from_secs(30);

/// Bind `addr`, retrying while it is in use or not (yet) on this host,
/// for up to [`BIND_PATIENCE`].
fn bind_retrying(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + BIND_PATIENCE;
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serve the table on `spec.listen`: one thread accepting, one per
/// connection.
pub(super) fn serve(
    mem: ArenaMemory<'static>,
    spec: &GuestSpec,
    first: u64,
    end: u64,
    stop: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let listen = spec
        .listen
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "kv needs listen=ADDR"))?;
    let table = Table::new(mem, first, end);
    let log = match &spec.wal_dir {
        Some(dir) => {
            let log = WriteLog::open(dir)?;
            let replayed = log.replay(|key, value| {
                table.apply(Request::Set(key, value));
            })?;
            if replayed > 0 {
                eprintln!(
                    "kv: replayed {replayed} logged writes from {}",
                    dir.display()
                );
            }
            Some(Arc::new(log))
        }
        None => None,
    };
    // A fixed address still held by a migration source (on this host) or
    // not yet moved here is bound in the background, so an adopting guest
    // reports "running" at once and the source can be ended; port 0 must
    // be bound now to learn the port.
    let bound = match TcpListener::bind(listen) {
        Ok(l) => Some(l),
        Err(e)
            if listen.port() != 0
                && matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    let addr = match &bound {
        Some(l) => l.local_addr()?,
        None => listen,
    };
    let connections = Arc::new(AtomicU64::new(0));
    let acceptor = std::thread::Builder::new()
        .name("kv-accept".into())
        .spawn(move || {
            let listener = match bound.map_or_else(|| bind_retrying(listen), Ok) {
                Ok(l) => l,
                Err(e) => {
                    // The guest cannot serve: end it (its controller sees it exit).
                    eprintln!("kv: cannot listen on {listen}: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = listener.set_nonblocking(true) {
                eprintln!("kv: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if connections.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                            continue; // dropping the stream closes it
                        }
                        connections.fetch_add(1, Ordering::Relaxed);
                        let log = log.clone();
                        let live = Arc::clone(&connections);
                        let spawned =
                            std::thread::Builder::new()
                                .name("kv-conn".into())
                                .spawn(move || {
                                    let _ = serve_connection(stream, table, log.as_deref());
                                    live.fetch_sub(1, Ordering::Relaxed);
                                });
                        if spawned.is_err() {
                            connections.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;
    Ok((addr, vec![acceptor]))
}

fn serve_connection(stream: TcpStream, table: Table<'_>, log: Option<&WriteLog>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = io::BufWriter::new(stream);
    let mut line = Vec::with_capacity(MAX_LINE_BYTES);
    let mut out = Vec::with_capacity(64);
    loop {
        if !read_line(&mut reader, &mut line)? {
            return Ok(());
        }
        out.clear();
        let response = match Request::parse(&line) {
            Ok(request) => match (request, log) {
                (Request::Get(_), _) | (_, None) => table.apply(request),
                (write, Some(log)) => log.apply_logged(write.key(), || table.apply(write))?,
            },
            Err(e) => Response::Error(e.to_string()),
        };
        response.encode(&mut out);
        writer.write_all(&out)?;
        // Flush when no further request is already buffered (pipelining).
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
        if let Response::Error(_) = response {
            if Request::parse(&line).is_err() {
                writer.flush()?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(pages: usize) -> Vec<AtomicU64> {
        (0..pages * 512).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn concurrent_increments_and_inserts_are_all_counted() {
        let words = memory(1 + 16);
        let mem = ArenaMemory::from_words(&words, 4096);
        let table = Table::new(mem, 1, 17); // 1024 slots
        std::thread::scope(|s| {
            for t in 0..4_u64 {
                s.spawn(move || {
                    for i in 0..2000_u64 {
                        // 100 shared keys, and 50 new keys per thread
                        table.apply(Request::Incr(i % 100));
                        if i % 40 == 0 {
                            table.apply(Request::Set(1000 + t * 100 + i / 40, i));
                        }
                    }
                });
            }
        });
        for k in 0..100 {
            assert_eq!(table.get(k), Some(80), "key {k}");
        }
        assert_eq!(table.get(1000 + 3 * 100 + 49), Some(49 * 40));
        let summary = verify(mem, 1, 17).unwrap();
        assert!(summary.starts_with("keys=300 "), "{summary}");
    }

    #[test]
    fn a_half_inserted_key_is_cleared_on_adoption_and_a_full_table_refuses() {
        let words = memory(2);
        let mem = ArenaMemory::from_words(&words, 4096);
        let table = Table::new(mem, 1, 2); // 64 slots
        for k in 0..64 {
            assert_eq!(table.apply(Request::Set(k, k)), Response::Value(k));
        }
        assert!(matches!(
            table.apply(Request::Incr(500)),
            Response::Error(_)
        ));

        // A stop mid-insert leaves a claimed, unpublished slot; adoption clears it.
        let words = memory(2);
        let mem = ArenaMemory::from_words(&words, 4096);
        let table = Table::new(mem, 1, 2);
        for k in 0..10 {
            table.apply(Request::Incr(k));
        }
        let empty = (0..64)
            .map(|i| table.slot(i))
            .find(|&s| mem.load(s) == 0)
            .unwrap();
        // (as an insert stopped between its claim and its publication)
        mem.store(INSERTING, 1);
        mem.store(empty, BUSY);
        mem.store(empty + 1, 99);
        assert!(verify(mem, 1, 2).is_err());
        recover(mem, 1, 2);
        assert_eq!(verify(mem, 1, 2).unwrap(), "keys=10 writes=10");
    }
}
