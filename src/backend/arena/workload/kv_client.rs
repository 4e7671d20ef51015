//! A load generator for the key-value service that measures what a user
//! sees ([`Load`]), and a checker that reads the service afterwards
//! ([`check_writes`]).
//!
//! Each connection runs requests back to back (no pipelining): `INCR` on a
//! zipf-skewed key for a write, `GET` for a read. The generator counts, per
//! key, the increments the service acknowledged and those whose fate is
//! unknown (sent, then the connection broke). After a migration the value
//! of each key must therefore lie in `[acked, acked + unknown]` (keys start
//! at 0): below is a lost acknowledged write, above a write applied that was
//! never sent.
//!
//! The service gap is the longest stretch during which no request
//! completed on any connection; a connection that breaks reconnects every
//! few milliseconds until it succeeds or the load stops.

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::super::sys::enter_netns;
use super::kv_protocol::{read_line, Request, Response};
use super::mix;

/// Zipf-distributed ranks `0..n` (rank 0 most frequent), by inverse CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `0..n` with exponent `s` (0: uniform; ~1: web-like skew).
    pub fn new(n: u64, s: f64) -> Self {
        let n = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    /// The rank for a uniform `u` in `[0, 1)`.
    pub fn sample(&self, u: f64) -> u64 {
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1) as u64
    }
}

/// A small seeded generator (xorshift64*), one per connection.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The service.
    pub addr: SocketAddr,
    /// Concurrent connections.
    pub connections: usize,
    /// Keys `0..keys` (the service's `keys`).
    pub keys: u64,
    /// Zipf exponent of the key choice.
    pub zipf_s: f64,
    /// Percent of requests that are writes (`INCR`).
    pub write_pct: u8,
    /// Requests per second per connection (0: as fast as answered).
    pub rate_per_conn: u64,
    /// How long a request may go unanswered before the connection is
    /// declared broken (the write's fate then is unknown).
    pub request_timeout: Duration,
    /// Seed.
    pub seed: u64,
    /// Run the connections in this network namespace (`/run/netns/NAME`),
    /// e.g. on a test host made with `ip netns`.
    pub netns: Option<PathBuf>,
}

impl LoadConfig {
    /// Defaults: 4 connections, zipf 0.99, 50 % writes, unpaced, 2 s timeout.
    pub fn new(addr: SocketAddr, keys: u64) -> Self {
        Self {
            addr,
            connections: 4,
            keys,
            zipf_s: 0.99,
            write_pct: 50,
            rate_per_conn: 0,
            request_timeout: Duration::from_secs(2),
            seed: 7,
            netns: None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    start: Instant,
    /// Nanoseconds since `start` of the latest completion (0: none yet).
    last_done_ns: AtomicU64,
    max_gap_ns: AtomicU64,
    /// When the longest gap began, ns since start.
    max_gap_at_ns: AtomicU64,
    acked: Vec<AtomicU64>,
    unknown: Vec<AtomicU64>,
    reads: AtomicU64,
    writes_acked: AtomicU64,
    writes_unknown: AtomicU64,
    reconnects: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn completed(&self) {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let prev = self.last_done_ns.fetch_max(now, Ordering::AcqRel);
        if prev != 0 && now > prev {
            let gap = now - prev;
            if self.max_gap_ns.fetch_max(gap, Ordering::AcqRel) < gap {
                self.max_gap_at_ns.store(prev, Ordering::Relaxed);
            }
        }
    }
}

/// Load running against a service; [`stop`](Self::stop) ends it.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Seconds the load ran.
    pub duration_s: f64,
    /// Reads answered.
    pub reads: u64,
    /// Writes the service acknowledged.
    pub writes_acknowledged: u64,
    /// Writes sent whose answer never came (connection broke).
    pub writes_unknown: u64,
    /// Longest stretch with no request completing, in ms.
    pub service_gap_ms: f64,
    /// When that stretch began, ms after the load started.
    pub service_gap_at_ms: f64,
    /// Connections re-established.
    pub reconnects: u64,
    /// Error responses received.
    pub errors: u64,
    /// Per key: increments acknowledged.
    pub acked: Vec<u64>,
    /// Per key: increments of unknown fate.
    pub unknown: Vec<u64>,
}

impl Load {
    /// Start `config.connections` connections. They connect lazily and
    /// retry, so the service may come up later.
    pub fn start(config: &LoadConfig) -> io::Result<Self> {
        let keys = usize::try_from(config.keys).map_err(|_| io::Error::other("too many keys"))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            start: Instant::now(),
            last_done_ns: AtomicU64::new(0),
            max_gap_ns: AtomicU64::new(0),
            max_gap_at_ns: AtomicU64::new(0),
            acked: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            unknown: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            reads: AtomicU64::new(0),
            writes_acked: AtomicU64::new(0),
            writes_unknown: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let zipf = Arc::new(Zipf::new(config.keys, config.zipf_s));
        let mut threads = Vec::new();
        for c in 0..config.connections {
            let shared = Arc::clone(&shared);
            let zipf = Arc::clone(&zipf);
            let config = config.clone();
            let seed = mix(config.seed ^ (c as u64 + 1)) | 1;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("kv-load-{c}"))
                    .spawn(move || {
                        if let Some(ns) = &config.netns {
                            if let Err(e) = enter_netns(ns) {
                                eprintln!("kv load: cannot enter {}: {e}", ns.display());
                                shared.errors.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                        connection(&config, &shared, &zipf, Rng(seed));
                    })?,
            );
        }
        Ok(Self { shared, threads })
    }

    /// Writes acknowledged so far.
    pub fn writes_acknowledged(&self) -> u64 {
        self.shared.writes_acked.load(Ordering::Relaxed)
    }

    /// Requests completed so far.
    pub fn completed(&self) -> u64 {
        self.shared.reads.load(Ordering::Relaxed) + self.writes_acknowledged()
    }

    /// Stop and report.
    pub fn stop(self) -> LoadReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let s = &self.shared;
        let load = |v: &Vec<AtomicU64>| v.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        LoadReport {
            duration_s: s.start.elapsed().as_secs_f64(),
            reads: s.reads.load(Ordering::Relaxed),
            writes_acknowledged: s.writes_acked.load(Ordering::Relaxed),
            writes_unknown: s.writes_unknown.load(Ordering::Relaxed),
            service_gap_ms: s.max_gap_ns.load(Ordering::Relaxed) as f64 / 1e6,
            service_gap_at_ms: s.max_gap_at_ns.load(Ordering::Relaxed) as f64 / 1e6,
            reconnects: s.reconnects.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            acked: load(&s.acked),
            unknown: load(&s.unknown),
        }
    }
}

/// A synchronous request/response connection.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_millis(500)))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            out: Vec::with_capacity(64),
            line: Vec::with_capacity(64),
        })
    }

    fn call(&mut self, request: Request) -> io::Result<Response> {
        self.out.clear();
        request.encode(&mut self.out);
        self.writer.write_all(&self.out)?;
        if !read_line(&mut self.reader, &mut self.line)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "service closed",
            ));
        }
        Response::parse(&self.line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

fn connection(config: &LoadConfig, shared: &Shared, zipf: &Zipf, mut rng: Rng) {
    let mut conn: Option<Connection> = None;
    let mut ever_connected = false;
    let pace = (config.rate_per_conn > 0)
        .then(|| Duration::from_secs_f64(1.0 / config.rate_per_conn as f64));
    let mut next_at = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(config.addr, config.request_timeout) {
                Ok(c) => {
                    if ever_connected {
                        shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    conn.insert(c)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            },
        };
        let key = zipf.sample(rng.unit());
        let write = rng.next_u64() % 100 < u64::from(config.write_pct);
        let request = if write {
            Request::Incr(key)
        } else {
            Request::Get(key)
        };
        let index = usize::try_from(key).unwrap_or(0);
        match c.call(request) {
            Ok(Response::Value(_)) if write => {
                shared.acked[index].fetch_add(1, Ordering::Relaxed);
                shared.writes_acked.fetch_add(1, Ordering::Relaxed);
                shared.completed();
            }
            Ok(Response::Value(_) | Response::Missing) => {
                shared.reads.fetch_add(1, Ordering::Relaxed);
                shared.completed();
            }
            Ok(Response::Error(_)) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Err(_) => {
                if write {
                    shared.unknown[index].fetch_add(1, Ordering::Relaxed);
                    shared.writes_unknown.fetch_add(1, Ordering::Relaxed);
                }
                conn = None;
            }
        }
        if let Some(pace) = pace {
            next_at += pace;
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            } else {
                next_at = now;
            }
        }
    }
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteCheck {
    /// Acknowledged increments found in the service.
    pub writes_found: u64,
    /// Acknowledged increments missing.
    pub writes_lost: u64,
    /// Increments present beyond acknowledged + unknown (never sent).
    pub writes_phantom: u64,
    /// Keys whose value was outside `[acked, acked + unknown]`.
    pub bad_keys: u64,
    /// The first few bad keys: (key, value, acked, unknown).
    pub examples: Vec<(u64, u64, u64, u64)>,
}

/// Read every key the load used from the service at `addr` and compare with
/// what the load saw acknowledged. Retries the connection for `timeout`
/// (the service may still be starting).
pub fn check_writes(
    addr: SocketAddr,
    report: &LoadReport,
    timeout: Duration,
) -> io::Result<WriteCheck> {
    check_writes_in(None, addr, report, timeout)
}

/// [`check_writes`] from inside network namespace `netns`.
pub fn check_writes_in(
    netns: Option<&Path>,
    addr: SocketAddr,
    report: &LoadReport,
    timeout: Duration,
) -> io::Result<WriteCheck> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(ns) = netns {
                    enter_netns(ns)?;
                }
                check_writes_here(addr, report, timeout)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the checker panicked")))
    })
}

fn check_writes_here(
    addr: SocketAddr,
    report: &LoadReport,
    timeout: Duration,
) -> io::Result<WriteCheck> {
    let deadline = Instant::now() + timeout;
    let mut conn = loop {
        match Connection::open(addr, Duration::from_secs(5)) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut check = WriteCheck::default();
    for (key, (&acked, &unknown)) in report.acked.iter().zip(&report.unknown).enumerate() {
        let key = key as u64;
        let value = match conn.call(Request::Get(key))? {
            Response::Value(v) => v,
            Response::Missing => 0,
            Response::Error(e) => return Err(io::Error::other(format!("GET {key}: {e}"))),
        };
        check.writes_found += value.min(acked);
        check.writes_lost += acked.saturating_sub(value);
        check.writes_phantom += value.saturating_sub(acked + unknown);
        if value < acked || value > acked + unknown {
            check.bad_keys += 1;
            if check.examples.len() < 8 {
                check.examples.push((key, value, acked, unknown));
            }
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let z = Zipf::new(1000, 0.99);
        let mut rng = Rng(99);
        let mut hist = vec![0_u32; 1000];
        for _ in 0..100_000 {
            let r = z.sample(rng.unit());
            hist[usize::try_from(r).unwrap()] += 1;
        }
        assert!(
            hist[0] > hist[10] && hist[10] > hist[500],
            "{:?}",
            &hist[..12]
        );
        assert!(hist[0] > 10_000, "rank 0 gets ~13 %: {}", hist[0]);
        assert_eq!(z.sample(0.999_999_999), 999);
        assert_eq!(z.sample(0.0), 0);
    }
}
