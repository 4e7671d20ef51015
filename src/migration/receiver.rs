//! The receiving side: applies a Perf+ stream to a [`Domain`], verifies it,
//! acknowledges, and resumes the guest only when the sender hands it over.
//!
//! States:
//!
//! ```text
//!  AwaitHeader ─HEADER─▶ Receiving ─PAGES*, CPU_STATE─▶ Receiving ─END (digest ok)─▶ Verified ─COMMIT─▶ Resumed
//!       │                    │                                  │                         │
//!       └────────────────────┴─ bad record, ABORT, EOF, digest mismatch ─▶ Failed (NACK sent, guest never resumed)
//! ```
//!
//! [`Receiver`] is sans-io: feed it bytes ([`Receiver::on_bytes`]), send
//! what [`Receiver::take_replies`] returns. [`receive_tcp`] runs it on a TCP
//! stream; the simulated link runs it inline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::encode::{apply_delta, Encoding};
use super::stream::{
    PageBatch, Record, RecordDecoder, StreamDigest, StreamHeader, HEADER_RECORD_BYTES,
};
use super::transport::SimPeer;
use super::MigrationError;
use crate::backend::{Domain, Pfn};

/// Where the receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverState {
    /// Nothing received yet.
    AwaitHeader,
    /// Taking pages and the CPU state.
    Receiving,
    /// END verified and acknowledged; waiting for COMMIT.
    Verified,
    /// The guest runs here.
    Resumed,
    /// The stream was refused or broke; the guest was not resumed here.
    Failed,
}

/// Counts of what the receiver applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Page records applied.
    pub pages: u64,
    /// Of which zero markers.
    pub zero_pages: u64,
    /// Of which deltas.
    pub delta_pages: u64,
    /// Bytes received.
    pub bytes: u64,
}

/// Applies a stream to a domain. See the module documentation.
#[derive(Debug)]
pub struct Receiver<D> {
    domain: D,
    decoder: RecordDecoder,
    state: ReceiverState,
    digest: StreamDigest,
    cpu_state_seen: bool,
    outbox: Vec<u8>,
    failure: Option<String>,
    stats: ReceiverStats,
    pages: Vec<u8>,
    bases: Vec<u8>,
}

impl<D: Domain> Receiver<D> {
    /// A receiver writing into `domain` (an empty, paused domain of the
    /// source's geometry).
    pub fn new(domain: D) -> Self {
        Self {
            domain,
            decoder: RecordDecoder::new(),
            state: ReceiverState::AwaitHeader,
            digest: StreamDigest::default(),
            cpu_state_seen: false,
            outbox: Vec::new(),
            failure: None,
            stats: ReceiverStats::default(),
            pages: Vec::new(),
            bases: Vec::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> ReceiverState {
        self.state
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// What was applied.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The domain.
    pub fn domain(&self) -> &D {
        &self.domain
    }

    /// The domain, mutably.
    pub fn domain_mut(&mut self) -> &mut D {
        &mut self.domain
    }

    /// Take the domain out.
    pub fn into_domain(self) -> D {
        self.domain
    }

    /// Bytes to send back to the sender.
    pub fn take_replies(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbox)
    }

    /// Bytes arrived. On an error the receiver is `Failed`, has queued a
    /// NACK, and ignores everything after.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), MigrationError> {
        if matches!(self.state, ReceiverState::Failed | ReceiverState::Resumed) {
            return Ok(());
        }
        self.stats.bytes += bytes.len() as u64;
        self.decoder.push(bytes);
        loop {
            let record = match self.decoder.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            };
            if let Err(e) = self.apply(record) {
                return Err(self.fail(e));
            }
        }
    }

    /// The connection closed. Fine after the hand-over, an error before.
    pub fn on_eof(&mut self) -> Result<(), MigrationError> {
        match self.state {
            ReceiverState::Resumed | ReceiverState::Failed => Ok(()),
            _ => Err(self.fail(MigrationError::Protocol {
                what: format!(
                    "the stream ended early ({} bytes unparsed, state {:?}); the guest was not resumed here",
                    self.decoder.pending(),
                    self.state
                ),
            })),
        }
    }

    fn fail(&mut self, e: MigrationError) -> MigrationError {
        if self.state != ReceiverState::Failed {
            self.state = ReceiverState::Failed;
            let reason = e.to_string();
            Record::Nack(reason.clone()).encode(&mut self.outbox);
            self.failure = Some(reason);
        }
        e
    }

    fn unexpected(&self, record: &Record) -> MigrationError {
        MigrationError::Protocol {
            what: format!("{:?} record in state {:?}", record.kind(), self.state),
        }
    }

    fn apply(&mut self, record: Record) -> Result<(), MigrationError> {
        use ReceiverState as S;
        match (self.state, record) {
            (_, Record::Abort(reason)) => Err(MigrationError::SenderAborted { reason }),
            (S::AwaitHeader, Record::Header(h)) => {
                if h.page_size != self.domain.page_size()
                    || h.page_count != self.domain.page_count()
                {
                    return Err(MigrationError::GeometryMismatch {
                        stream_pages: h.page_count,
                        stream_page_size: h.page_size,
                        domain_pages: self.domain.page_count(),
                        domain_page_size: self.domain.page_size(),
                    });
                }
                self.state = S::Receiving;
                Ok(())
            }
            (S::Receiving, Record::Pages(batch)) => self.apply_batch(&batch),
            (S::Receiving, Record::CpuState(blob)) if !self.cpu_state_seen => {
                self.domain
                    .restore_state(&blob)
                    .map_err(|source| MigrationError::Backend {
                        what: "restoring the CPU state",
                        source,
                    })?;
                self.cpu_state_seen = true;
                Ok(())
            }
            (S::Receiving, Record::End(sent)) if self.cpu_state_seen => {
                if sent != self.digest {
                    return Err(MigrationError::DigestMismatch {
                        sent,
                        received: self.digest,
                    });
                }
                Record::Ack(self.digest).encode(&mut self.outbox);
                self.state = S::Verified;
                Ok(())
            }
            (S::Verified, Record::Commit) => {
                self.domain
                    .resume()
                    .map_err(|source| MigrationError::Backend {
                        what: "resuming the guest at the receiver",
                        source,
                    })?;
                Record::Resumed.encode(&mut self.outbox);
                self.state = S::Resumed;
                Ok(())
            }
            (_, record) => Err(self.unexpected(&record)),
        }
    }

    fn apply_batch(&mut self, batch: &PageBatch) -> Result<(), MigrationError> {
        let size = self.domain.page_size();
        let pfns: Vec<Pfn> = batch.entries.iter().map(|e| e.pfn).collect();
        // Deltas apply to the pages held now: read them in one batch.
        let delta_pfns: Vec<Pfn> = batch
            .entries
            .iter()
            .filter(|e| e.encoding == Encoding::Delta)
            .map(|e| e.pfn)
            .collect();
        self.bases.resize(delta_pfns.len() * size, 0);
        self.domain
            .read_pages(&delta_pfns, &mut self.bases)
            .map_err(|source| MigrationError::Backend {
                what: "reading pages to apply deltas",
                source,
            })?;
        self.pages.resize(pfns.len() * size, 0);
        let mut next_base = 0;
        for (i, entry) in batch.entries.iter().enumerate() {
            let page = &mut self.pages[i * size..(i + 1) * size];
            match entry.encoding {
                Encoding::Zero => {
                    page.fill(0);
                    self.stats.zero_pages += 1;
                }
                Encoding::Raw => page.copy_from_slice(batch.data(entry)),
                Encoding::Delta => {
                    // (A page twice in one batch, which the sender never
                    // does, would rebuild from a stale base; the digest
                    // catches that.)
                    page.copy_from_slice(&self.bases[next_base * size..(next_base + 1) * size]);
                    next_base += 1;
                    apply_delta(page, batch.data(entry)).map_err(|source| {
                        MigrationError::Stream(super::StreamError::Delta {
                            pfn: entry.pfn,
                            source,
                        })
                    })?;
                    self.stats.delta_pages += 1;
                }
            }
            self.digest.add(entry.pfn, page);
            self.stats.pages += 1;
        }
        self.domain
            .write_pages(&pfns, &self.pages)
            .map_err(|source| MigrationError::Backend {
                what: "writing received pages",
                source,
            })
    }
}

impl<D: Domain> SimPeer for Receiver<D> {
    fn deliver(&mut self, bytes: &[u8]) -> Vec<u8> {
        let _ = self.on_bytes(bytes);
        self.take_replies()
    }

    fn closed(&mut self) {
        let _ = self.on_eof();
    }

    fn has_hung_up(&self) -> bool {
        self.state == ReceiverState::Failed
    }
}

/// Run a receiver on a TCP stream until the guest is resumed here or the
/// stream fails. Every read waits at most `io_timeout`.
pub fn receive_tcp<D: Domain>(
    mut stream: TcpStream,
    domain: D,
    io_timeout: Duration,
) -> (Receiver<D>, Result<(), MigrationError>) {
    let mut receiver = Receiver::new(domain);
    let result = configure_tcp(&stream, io_timeout)
        .and_then(|()| pump_tcp(&mut stream, &mut receiver, io_timeout, &[]));
    (receiver, result)
}

/// Like [`receive_tcp`], for a receiver that learns the guest's geometry
/// from the stream: `make_domain` gets the HEADER record and builds the
/// receiving domain, or refuses the guest with a reason (e.g. it is larger
/// than this host accepts): the sender then gets a NACK with that reason,
/// the result is [`MigrationError::Refused`], and there is no receiver.
/// Every read waits at most `io_timeout`.
pub fn receive_tcp_with<D: Domain>(
    mut stream: TcpStream,
    io_timeout: Duration,
    make_domain: impl FnOnce(&StreamHeader) -> Result<D, String>,
) -> (Option<Receiver<D>>, Result<(), MigrationError>) {
    let refuse = |stream: &mut TcpStream, error: MigrationError| {
        let reason = match &error {
            MigrationError::Refused { reason } => reason.clone(),
            other => other.to_string(),
        };
        let mut nack = Vec::new();
        Record::Nack(reason).encode(&mut nack);
        // Best effort: the sender may be gone. The FIN follows the NACK, so
        // the sender can read it even after its next write fails.
        let _ = stream.write_all(&nack);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        (None, Err(error))
    };
    if let Err(e) = configure_tcp(&stream, io_timeout) {
        return (None, Err(e));
    }
    let mut first = [0; HEADER_RECORD_BYTES];
    if let Err(e) = stream.read_exact(&mut first) {
        let error = read_error(e, io_timeout, "reading the stream header");
        return refuse(&mut stream, error.into());
    }
    let mut decoder = RecordDecoder::new();
    decoder.push(&first);
    let header = match decoder.next_record() {
        Ok(Some(Record::Header(header))) => header,
        Ok(Some(other)) => {
            let error = MigrationError::Protocol {
                what: format!("the stream starts with {:?}, not HEADER", other.kind()),
            };
            return refuse(&mut stream, error);
        }
        Ok(None) => {
            let error = MigrationError::Protocol {
                what: "the stream does not start with a HEADER record".into(),
            };
            return refuse(&mut stream, error);
        }
        Err(e) => return refuse(&mut stream, e.into()),
    };
    let domain = match make_domain(&header) {
        Ok(domain) => domain,
        Err(reason) => return refuse(&mut stream, MigrationError::Refused { reason }),
    };
    let mut receiver = Receiver::new(domain);
    let result = pump_tcp(&mut stream, &mut receiver, io_timeout, &first);
    (Some(receiver), result)
}

fn configure_tcp(stream: &TcpStream, io_timeout: Duration) -> Result<(), MigrationError> {
    stream
        .set_read_timeout(Some(io_timeout))
        .and_then(|()| stream.set_write_timeout(Some(io_timeout)))
        .map_err(|source| {
            super::TransportError::Io {
                what: "configuring the migration socket",
                source,
            }
            .into()
        })
}

fn read_error(
    e: std::io::Error,
    io_timeout: Duration,
    what: &'static str,
) -> super::TransportError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            super::TransportError::Timeout {
                what: "waiting for the sender",
                after_ms: u64::try_from(io_timeout.as_millis()).unwrap_or(u64::MAX),
            }
        }
        std::io::ErrorKind::UnexpectedEof => super::TransportError::Closed { what },
        _ => super::TransportError::Io { what, source: e },
    }
}

/// Feed `initial` bytes, then the stream, to `receiver`, answering the
/// sender, until the guest is resumed here or the stream fails.
fn pump_tcp<D: Domain>(
    stream: &mut TcpStream,
    receiver: &mut Receiver<D>,
    io_timeout: Duration,
    initial: &[u8],
) -> Result<(), MigrationError> {
    let mut buf = vec![0; 256 * 1024];
    let mut pending = initial.len();
    buf[..pending].copy_from_slice(initial);
    loop {
        let n = if pending > 0 {
            std::mem::take(&mut pending)
        } else {
            match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error = read_error(e, io_timeout, "reading the stream");
                    let error = receiver.fail(error.into());
                    // Tell the sender why, if it still listens.
                    let _ = stream.write_all(&receiver.take_replies());
                    return Err(error);
                }
            }
        };
        let outcome = if n == 0 {
            receiver.on_eof()
        } else {
            receiver.on_bytes(&buf[..n])
        };
        let replies = receiver.take_replies();
        if !replies.is_empty() {
            // The sender may already be gone after a failure.
            let sent = stream.write_all(&replies);
            if outcome.is_ok() {
                sent.map_err(|source| super::TransportError::Io {
                    what: "answering the sender",
                    source,
                })?;
            }
        }
        outcome?;
        if receiver.state() == ReceiverState::Resumed || n == 0 {
            return Ok(());
        }
    }
}
