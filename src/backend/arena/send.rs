//! Sending a guest to another host: the source side of an arena migration,
//! the Perf+ engine over TCP with the handoff around it.
//!
//! ```text
//!  send_guest(guest, to)                                receiver at `to` (see `host`)
//!    guest.lease(id, to)      ─ keeper now settles a stopped guest if we die
//!    connect ──── PPMIGRATE/1 arena <id> <pages> ─────▶ starts an incoming guest
//!    migrate(ArenaDomain)     ════ Perf+ stream ═══════▶ applies, verifies, ACK
//!                             ──── COMMIT ─────────────▶ starts the guest, RESUMED
//!    ok:      end the source (the guest runs there)
//!    aborted: the engine resumed the source; release the lease
//!    hand-over unconfirmed: ask `STATUS <id>` for up to `settle_timeout`;
//!             no answer → leave the stopped guest to its keeper
//! ```
//!
//! [`send_domain`] is the same without a guest process: any [`Domain`]
//! (the tool sends `sim` guests this way); the caller owns its fate.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::handoff::FirstLine;
use super::{query_outcome, ArenaDomain, ArenaError, GuestProcess, Outcome};
use crate::backend::Domain;
use crate::migration::engine::{migrate, EngineConfig, MigrationReport, Progress, ProgressFlow};
use crate::migration::policy::PrecopyPolicy;
use crate::migration::simulation::default_delta_cache_bytes;
use crate::migration::sink::{PerfplusSink, StreamSink};
use crate::migration::transport::{RealClock, TcpTransport, Transport};
use crate::migration::MigrationError;

/// How to send.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// The migration's id (1 to 64 of `[A-Za-z0-9._-]`), unique per
    /// receiver: a receiver refuses an id it has seen.
    pub id: String,
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Longest wait for any read or write of the stream.
    pub io_timeout: Duration,
    /// Bytes of page copies kept for delta encoding (`None`: a quarter of
    /// guest memory, at most 1 GiB).
    pub delta_cache_bytes: Option<usize>,
    /// After an unconfirmed hand-over, how long to ask the receiver how it
    /// ended before leaving the stopped guest to its keeper.
    pub settle_timeout: Duration,
    /// Nice value of the sending thread while it migrates (`None`: leave
    /// it); see [`RaisedPriority`](super::RaisedPriority).
    pub nice: Option<i32>,
}

impl SendConfig {
    /// Defaults for migration `id`: 10 s I/O timeout, 10 s to settle, the
    /// sending thread's priority left as it is.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            engine: EngineConfig {
                switchover_fixed_ms: 2.0,
                ..EngineConfig::default()
            },
            io_timeout: Duration::from_secs(10),
            delta_cache_bytes: None,
            settle_timeout: Duration::from_secs(10),
            nice: None,
        }
    }

    /// A fresh id: `<prefix>-<pid>-<nanoseconds since the epoch>`.
    pub fn unique_id(prefix: &str) -> String {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{prefix}-{}-{ns}", std::process::id())
    }
}

/// A migration that handed the guest over.
#[derive(Debug, Clone, PartialEq)]
pub struct SendReport {
    /// The engine's report (downtime, rounds, bytes, pages by encoding).
    pub migration: MigrationReport,
    /// CPU time of the sending thread during the migration, seconds.
    pub sender_cpu_s: f64,
    /// Dirty-tracking state per guest page on the sending side: the
    /// engine's per-page history and dirty bitmap plus the tracker's scan
    /// buffer.
    pub tracking_bytes_per_page: f64,
}

/// Why a guest could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The receiver could not be reached; nothing was changed.
    #[error("cannot reach the receiver at {addr}: {source}")]
    Connect {
        /// The receiver.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The guest could not be leased or tracked; it runs on unchanged.
    #[error("cannot prepare the guest for migration: {0}")]
    Guest(#[from] ArenaError),
    /// The migration failed (see the variant for where the guest runs).
    #[error(transparent)]
    Migration(Box<MigrationError>),
    /// The receiver verified the stream but the hand-over was not
    /// confirmed, and its outcome could not be learnt in time: the guest
    /// stays stopped here and its keeper settles it once the receiver
    /// answers (it never runs in two places).
    #[error("migration {id}: the hand-over to {to} is unconfirmed ({cause}); the source stays stopped and its keeper will end or continue it when the receiver answers")]
    Undecided {
        /// The migration.
        id: String,
        /// The receiver.
        to: SocketAddr,
        /// What went wrong.
        cause: Box<MigrationError>,
    },
}

impl From<MigrationError> for SendError {
    fn from(e: MigrationError) -> Self {
        Self::Migration(Box::new(e))
    }
}

/// Where the guest is after a failed [`send_guest`].
#[derive(Debug)]
pub enum Fate {
    /// It runs here, as before the migration (given back).
    RunsHere(Box<GuestProcess>),
    /// It runs at the receiver (the hand-over was confirmed by a status
    /// query after the stream broke); the source was ended.
    Moved,
    /// Undecided: stopped here, left to its keeper.
    LeftToKeeper,
    /// It could not be resumed here (its process died or refused).
    Lost,
}

/// A failed [`send_guest`]: why, and where the guest is.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SendFailure {
    /// Why.
    #[source]
    pub error: SendError,
    /// Where the guest is now.
    pub fate: Fate,
}

fn connect(to: SocketAddr, timeout: Duration) -> Result<TcpStream, SendError> {
    let connect = || -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&to, timeout)?;
        // Large socket buffers keep the link busy while the engine reads
        // the next batch.
        let sock = socket2::SockRef::from(&stream);
        let _ = sock.set_send_buffer_size(4 << 20);
        Ok(stream)
    };
    connect().map_err(|source| SendError::Connect { addr: to, source })
}

/// Migrate `source` (any domain) to the receiver at `to` as backend
/// `backend`: the preamble, then the engine over TCP. Returns the engine's
/// result and the sending thread's CPU seconds; the caller settles the
/// source's fate (see [`migrate`]).
pub fn send_domain<D: Domain>(
    source: &mut D,
    backend: &str,
    to: SocketAddr,
    policy: &dyn PrecopyPolicy,
    config: &SendConfig,
    observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
) -> Result<(MigrationReport, f64), SendError> {
    let stream = connect(to, config.io_timeout)?;
    let mut transport =
        TcpTransport::new(stream, config.io_timeout).map_err(MigrationError::from)?;
    let preamble = FirstLine::Migrate {
        backend: backend.to_owned(),
        id: config.id.clone(),
        pages: source.page_count(),
    };
    transport
        .send(&preamble.encode())
        .map_err(MigrationError::from)?;
    let memory = source.page_count() * source.page_size() as u64;
    let mut sink = PerfplusSink::new(
        transport,
        policy.encodings(),
        config
            .delta_cache_bytes
            .unwrap_or_else(|| default_delta_cache_bytes(memory)),
        config.io_timeout,
    );
    let priority = super::RaisedPriority::raise(config.nice);
    let cpu_before = super::sys::thread_cpu_time();
    let result = migrate(
        source,
        policy,
        &mut sink,
        &RealClock::new(),
        &config.engine,
        observer,
    );
    let cpu_s = (super::sys::thread_cpu_time().saturating_sub(cpu_before)).as_secs_f64();
    drop(priority);
    let _ = sink.bytes_on_wire();
    Ok((result?, cpu_s))
}

/// Ask the receiver at `to` how migration `id` ended, for up to `patience`.
fn settle(to: SocketAddr, id: &str, patience: Duration) -> Option<Outcome> {
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(outcome) = query_outcome(
            to,
            id,
            left.clamp(Duration::from_millis(100), Duration::from_secs(5)),
        ) {
            return Some(outcome);
        }
        if Instant::now() + wait > deadline {
            return None;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// Live-migrate a running guest process to the receiver at `to` (a
/// [`ReceiveService`](super::ReceiveService) or `migrate receive`), whose
/// status service is the same address.
///
/// On success the guest runs at the receiver and its process here has been
/// ended. On failure, [`SendFailure::fate`] says where it runs: here
/// (given back, running), there, or undecided (stopped here, settled by its
/// keeper). It never runs in two places.
pub fn send_guest(
    mut guest: GuestProcess,
    to: SocketAddr,
    policy: &dyn PrecopyPolicy,
    config: &SendConfig,
    observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
) -> Result<SendReport, SendFailure> {
    let here = |guest, error| SendFailure {
        error,
        fate: Fate::RunsHere(Box::new(guest)),
    };
    if let Err(e) = guest.lease(&config.id, to) {
        return Err(here(guest, e.into()));
    }
    // The lease is held from here on: it is given back on every path where
    // the guest runs on here.
    let mut source = match ArenaDomain::try_process(guest) {
        Ok(d) => d,
        Err((e, mut guest)) => {
            let _ = guest.release();
            return Err(SendFailure {
                error: e.into(),
                fate: Fate::RunsHere(guest),
            });
        }
    };
    let pages = source.page_count();
    // Once the guest runs at the receiver, its connections here end: its
    // clients reconnect there at once, instead of waiting on a stopped
    // process until the clean-up is done and the kernel has torn it down
    // (on one host, the receiver's guest cannot even bind the address
    // before).
    let pid = source.guest_process().map(|g| g.pid());
    let result = send_domain(&mut source, "arena", to, policy, config, &mut |p| {
        if let (Progress::Resumed { .. }, Some(pid)) = (p, pid) {
            let _ = super::guest::shut_down_inet_sockets(pid);
        }
        observer(p)
    });
    let tracking_bytes_per_page = tracking_bytes_per_page(&source, pages);
    match result {
        Ok((migration, sender_cpu_s)) => {
            if let Some(mut g) = source.into_process() {
                let _ = g.kill();
            }
            Ok(SendReport {
                migration,
                sender_cpu_s,
                tracking_bytes_per_page,
            })
        }
        Err(SendError::Migration(cause))
            if matches!(*cause, MigrationError::HandoverUnconfirmed { .. }) =>
        {
            let outcome = settle(to, &config.id, config.settle_timeout);
            let lost = |error| SendFailure {
                error,
                fate: Fate::Lost,
            };
            match outcome {
                Some(Outcome::Committed) => {
                    if let Some(mut g) = source.into_process() {
                        let _ = g.kill();
                    }
                    Err(SendFailure {
                        error: SendError::Migration(cause),
                        fate: Fate::Moved,
                    })
                }
                Some(Outcome::Aborted) => {
                    // The receiver gave it up for good: run on here.
                    let resumed = source.resume();
                    match (resumed, source.into_process()) {
                        (Ok(()), Some(mut g)) => {
                            let _ = g.release();
                            Err(here(g, SendError::Migration(cause)))
                        }
                        (_, Some(mut g)) => {
                            let _ = g.kill();
                            Err(lost(SendError::Migration(cause)))
                        }
                        (_, None) => Err(lost(SendError::Migration(cause))),
                    }
                }
                None => {
                    // Closing our end of its pipes hands the lease to the keeper.
                    if let Some(g) = source.into_process() {
                        g.detach();
                    }
                    Err(SendFailure {
                        error: SendError::Undecided {
                            id: config.id.clone(),
                            to,
                            cause,
                        },
                        fate: Fate::LeftToKeeper,
                    })
                }
            }
        }
        Err(error) => {
            let resumed = !source.is_paused();
            match source.into_process().map(|mut g| (g.has_exited(), g)) {
                Some((false, mut g)) if resumed => {
                    let _ = g.release();
                    Err(here(g, error))
                }
                Some((_, mut g)) => {
                    let _ = g.kill();
                    Err(SendFailure {
                        error,
                        fate: Fate::Lost,
                    })
                }
                None => Err(SendFailure {
                    error,
                    fate: Fate::Lost,
                }),
            }
        }
    }
}

/// The sender's dirty-tracking state per page: one history byte and one
/// dirty bit per page in the engine, plus the tracker's fixed scan buffer.
fn tracking_bytes_per_page(source: &ArenaDomain, pages: u64) -> f64 {
    let engine = pages as f64 * (1.0 + 1.0 / 8.0);
    (engine + source.tracker_state_bytes() as f64) / pages.max(1) as f64
}
