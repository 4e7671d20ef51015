//! The receiving host: one listener that takes incoming guests, each
//! adopted into its own guest process, and answers keepers' status queries
//! from the outcome registry ([`Outcomes`]). A long-running per-host
//! service (`migrate receive`), or a thread of a test or benchmark.
//!
//! ```text
//!  ReceiveService::bind(addr) ─ spawn() ─▶ accept loop (one thread)
//!    connection ─ first line (handoff) ─▶ one thread per connection
//!      STATUS <id>                     ─▶ outcome (waits while in progress)
//!      PPMIGRATE/1 arena <id> <pages>  ─▶ Outcomes::begin(id) (refused if seen)
//!         spawn_incoming(pages) → ArenaDomain → receive_tcp
//!         COMMIT: start hook(spec) → guest starts → RESUMED
//!         → Outcomes::finish(id, COMMITTED | ABORTED) → Arrival
//!      PPMIGRATE/1 sim <id> <pages>    ─▶ into a blank simulated guest
//! ```
//!
//! The outcome of a migration is final once recorded, and recorded only
//! after its stream ended: `COMMITTED` exactly when the guest was started
//! here, `ABORTED` otherwise (the incoming guest process is ended first).
//! Adopted guests are handed to the owner of the service as
//! [`Arrival::Adopted`]; a started guest process outlives the service
//! (its keeper serves on when our end of its pipes closes), an incoming
//! one that never started ends with it.
//!
//! The registry lives in memory: a receiver restarted after a crash
//! answers `ABORTED` for ids it no longer knows, so a source keeper whose
//! migration committed just before the crash would continue its copy. The
//! window is from the guest's start to the RESUMED reply reaching the
//! sender (one round trip); an orchestrator that restarts receivers must
//! persist the registry to close it.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::handoff::{FirstLine, Outcomes};
use super::workload::GuestSpec;
use super::{ArenaDomain, GuestCommand, GuestProcess, Outcome, StartHook};
use crate::backend::sim::{SimDomain, VirtualClock};
use crate::migration::receiver::{receive_tcp, ReceiverState, ReceiverStats};
use crate::migration::stream::Record;

/// What to run just before an adopted guest starts, given its spec: take
/// over its service address on this host, for example. Shared by every
/// incoming guest; an error keeps that guest from starting (the migration
/// aborts and the source runs on).
pub type TakeOver = Arc<dyn Fn(&GuestSpec) -> io::Result<()> + Send + Sync>;

/// How the receiving host runs.
#[derive(Clone)]
pub struct ReceiveConfig {
    /// The guest program that adopts incoming arenas.
    pub guest_command: GuestCommand,
    /// Longest wait for any read or write of a stream.
    pub io_timeout: Duration,
    /// Run before each adopted guest starts.
    pub take_over: Option<TakeOver>,
    /// Largest incoming guest accepted, pages.
    pub max_pages: u64,
    /// Whether `sim` guests are accepted (received into memory, then dropped).
    pub accept_sim: bool,
    /// Nice value of the thread receiving a stream while it runs (`None`:
    /// leave it); see [`RaisedPriority`](super::RaisedPriority).
    pub nice: Option<i32>,
}

impl std::fmt::Debug for ReceiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveConfig")
            .field("guest_command", &self.guest_command)
            .field("io_timeout", &self.io_timeout)
            .field("take_over", &self.take_over.is_some())
            .field("max_pages", &self.max_pages)
            .field("accept_sim", &self.accept_sim)
            .field("nice", &self.nice)
            .finish()
    }
}

impl ReceiveConfig {
    /// Adopt guests with `guest_command`; 10 s I/O timeout, guests up to
    /// 64 GiB, `sim` accepted, no take-over hook, receiving threads'
    /// priority left as it is.
    pub fn new(guest_command: GuestCommand) -> Self {
        Self {
            guest_command,
            io_timeout: Duration::from_secs(10),
            take_over: None,
            max_pages: 1 << 24,
            accept_sim: true,
            nice: None,
        }
    }
}

/// What happened to one incoming migration.
#[derive(Debug)]
pub enum Arrival {
    /// An arena guest was received and runs here now.
    Adopted {
        /// The migration's id.
        id: String,
        /// The guest, running (dropping it ends it; `detach` keeps it).
        guest: Box<GuestProcess>,
        /// What the receiver applied.
        stats: ReceiverStats,
    },
    /// A `sim` guest was received and verified (there is nothing to run).
    Received {
        /// The migration's id.
        id: String,
        /// What the receiver applied.
        stats: ReceiverStats,
    },
    /// The migration did not complete here; the guest runs at the source.
    Failed {
        /// The migration's id (empty if the preamble was unreadable).
        id: String,
        /// Why.
        reason: String,
    },
}

/// The receiving side of a host; see the module documentation.
#[derive(Debug)]
pub struct ReceiveService {
    listener: TcpListener,
    config: Arc<ReceiveConfig>,
    outcomes: Arc<Outcomes>,
}

/// A [`ReceiveService`] running on its own thread; stops when dropped.
#[derive(Debug)]
pub struct ReceiveHandle {
    addr: SocketAddr,
    outcomes: Arc<Outcomes>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One line per arrival, as receivers log them.
impl std::fmt::Display for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arrival::Adopted { id, guest, stats } => {
                #[allow(clippy::cast_precision_loss)] // MiB for display
                let mib = stats.bytes as f64 / f64::from(1 << 20);
                write!(
                    f,
                    "adopted {id}: {} pid={} listen={} ({} pages applied, {mib:.1} MiB received)",
                    guest.spec().map_or("?", |s| s.workload.name()),
                    guest.pid(),
                    guest
                        .listen()
                        .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    stats.pages,
                )
            }
            Arrival::Received { id, stats } => write!(
                f,
                "received {id}: sim guest, {} pages applied and verified",
                stats.pages
            ),
            Arrival::Failed { id, reason } => write!(f, "failed {id}: {reason}"),
        }
    }
}

impl ReceiveService {
    /// Listen on `addr` (port 0: any free port).
    pub fn bind(addr: SocketAddr, config: ReceiveConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            config: Arc::new(config),
            outcomes: Arc::new(Outcomes::new()),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The outcome of every migration this service saw.
    pub fn outcomes(&self) -> &Arc<Outcomes> {
        &self.outcomes
    }

    /// Accept connections until `stop` is set, handling each on its own
    /// thread and reporting every migration's end to `arrivals`.
    pub fn run(&self, stop: &AtomicBool, arrivals: &mpsc::Sender<Arrival>) {
        while !stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let config = Arc::clone(&self.config);
                    let outcomes = Arc::clone(&self.outcomes);
                    let arrivals = arrivals.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("receive-{peer}"))
                        .spawn(move || {
                            if let Some(arrival) = handle_connection(stream, &config, &outcomes) {
                                let _ = arrivals.send(arrival);
                            }
                        });
                    if let Err(e) = spawned {
                        eprintln!("receiver: cannot handle a connection from {peer}: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    eprintln!("receiver: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Run on a new thread; arrivals go to the returned channel.
    pub fn spawn(self) -> io::Result<(ReceiveHandle, mpsc::Receiver<Arrival>)> {
        let addr = self.local_addr()?;
        let outcomes = Arc::clone(&self.outcomes);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("receive-accept".into())
            .spawn(move || self.run(&flag, &tx))?;
        Ok((
            ReceiveHandle {
                addr,
                outcomes,
                stop,
                thread: Some(thread),
            },
            rx,
        ))
    }
}

impl ReceiveHandle {
    /// Where the service listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The outcome registry.
    pub fn outcomes(&self) -> &Arc<Outcomes> {
        &self.outcomes
    }

    /// Stop accepting (migrations in progress finish on their threads).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ReceiveHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Refuse a migration stream with a NACK record, then close.
fn refuse(mut stream: TcpStream, reason: &str) {
    let mut out = Vec::new();
    Record::Nack(reason.to_owned()).encode(&mut out);
    let _ = stream.write_all(&out);
}

fn handle_connection(
    mut stream: TcpStream,
    config: &ReceiveConfig,
    outcomes: &Outcomes,
) -> Option<Arrival> {
    if stream.set_nonblocking(false).is_err() {
        return None;
    }
    let first = match FirstLine::read_from(&mut stream, config.io_timeout) {
        Ok(line) => line,
        Err(e) => {
            return Some(Arrival::Failed {
                id: String::new(),
                reason: format!("unreadable preamble: {e}"),
            })
        }
    };
    let (backend, id, pages) = match first {
        FirstLine::Status { id } => {
            // A keeper asks; wait for an outcome in progress, up to the I/O timeout.
            let _ = outcomes.answer(&mut stream, &id, config.io_timeout);
            return None;
        }
        FirstLine::Migrate { backend, id, pages } => (backend, id, pages),
    };
    let failed = |reason: String| Arrival::Failed {
        id: id.clone(),
        reason,
    };
    if !outcomes.begin(&id) {
        let reason = format!("migration id {id} was seen before; refusing a replayed stream");
        refuse(stream, &reason);
        return Some(failed(reason));
    }
    if pages > config.max_pages {
        let reason = format!(
            "a guest of {pages} pages is larger than this host accepts ({})",
            config.max_pages
        );
        outcomes.finish(&id, Outcome::Aborted);
        refuse(stream, &reason);
        return Some(failed(reason));
    }
    let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(4 << 20);
    match backend.as_str() {
        "arena" => Some(receive_arena(stream, config, outcomes, &id, pages)),
        "sim" if config.accept_sim => {
            let domain = SimDomain::blank(pages, VirtualClock::new());
            let _priority = super::RaisedPriority::raise(config.nice);
            let (receiver, result) = receive_tcp(stream, domain, config.io_timeout);
            let committed = receiver.state() == ReceiverState::Resumed;
            outcomes.finish(
                &id,
                if committed {
                    Outcome::Committed
                } else {
                    Outcome::Aborted
                },
            );
            Some(match (committed, result) {
                (true, _) => Arrival::Received {
                    id: id.clone(),
                    stats: receiver.stats(),
                },
                (false, Err(e)) => failed(e.to_string()),
                (false, Ok(())) => failed("the stream ended before the hand-over".into()),
            })
        }
        other => {
            let reason = format!("this host does not receive {other:?} guests");
            outcomes.finish(&id, Outcome::Aborted);
            refuse(stream, &reason);
            Some(failed(reason))
        }
    }
}

fn receive_arena(
    stream: TcpStream,
    config: &ReceiveConfig,
    outcomes: &Outcomes,
    id: &str,
    pages: u64,
) -> Arrival {
    let abort = |reason: String| {
        outcomes.finish(id, Outcome::Aborted);
        Arrival::Failed {
            id: id.to_owned(),
            reason,
        }
    };
    let mut incoming = match GuestProcess::spawn_incoming(&config.guest_command, pages) {
        Ok(g) => g,
        Err(e) => {
            let reason = format!("cannot start an incoming guest of {pages} pages: {e}");
            refuse(stream, &reason);
            return abort(reason);
        }
    };
    if let Some(take_over) = &config.take_over {
        let take_over = Arc::clone(take_over);
        incoming.set_start_hook(Some(StartHook(Box::new(move |spec| take_over(spec)))));
    }
    let domain = match ArenaDomain::process(incoming) {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("cannot control the incoming guest: {e}");
            refuse(stream, &reason);
            return abort(reason);
        }
    };
    // Raised only now: a process started from this thread (the incoming
    // guest above) would inherit the priority.
    let priority = super::RaisedPriority::raise(config.nice);
    let (receiver, result) = receive_tcp(stream, domain, config.io_timeout);
    drop(priority);
    let stats = receiver.stats();
    let resumed = receiver.state() == ReceiverState::Resumed;
    let guest = receiver.into_domain().into_process();
    match (resumed, guest) {
        (true, Some(guest)) => {
            // Started here: final, whatever happened to the RESUMED reply.
            outcomes.finish(id, Outcome::Committed);
            Arrival::Adopted {
                id: id.to_owned(),
                guest: Box::new(guest),
                stats,
            }
        }
        (_, guest) => {
            // End the incoming guest before the outcome says it never runs.
            if let Some(mut g) = guest {
                let _ = g.kill();
            }
            abort(match result {
                Err(e) => e.to_string(),
                Ok(()) => "the stream ended before the hand-over".into(),
            })
        }
    }
}
