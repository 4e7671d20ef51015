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
//!
//! On a socket ([`Receiver::read_from`]) the bytes are read straight into
//! the decoder's buffer, reads ending at record boundaries, and a page
//! batch is applied where it lies: raw pages go from the record into the
//! domain ([`Domain::write_page_list`], one `process_vm_writev` for the
//! arena), so each page byte is touched by the receiver's own code only by
//! the record check and the digest, both xxh3.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::encode::{apply_delta, Encoding};
use super::stream::{
    BatchView, Decoded, Record, RecordDecoder, StreamDigest, StreamHeader, HEADER_RECORD_BYTES,
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
    decoder: RecordDecoder,
    core: Core<D>,
}

/// Everything but the decoder, so a page batch can be applied while it
/// still lies in the decoder's buffer.
#[derive(Debug)]
struct Core<D> {
    domain: D,
    state: ReceiverState,
    digest: StreamDigest,
    cpu_state_seen: bool,
    outbox: Vec<u8>,
    failure: Option<String>,
    stats: ReceiverStats,
    pfns: Vec<Pfn>,
    /// Pages rebuilt from deltas.
    rebuilt: Vec<u8>,
    zero_page: Vec<u8>,
}

impl<D: Domain> Receiver<D> {
    /// A receiver writing into `domain` (an empty, paused domain of the
    /// source's geometry).
    pub fn new(domain: D) -> Self {
        Self {
            decoder: RecordDecoder::new(),
            core: Core {
                domain,
                state: ReceiverState::AwaitHeader,
                digest: StreamDigest::default(),
                cpu_state_seen: false,
                outbox: Vec::new(),
                failure: None,
                stats: ReceiverStats::default(),
                pfns: Vec::new(),
                rebuilt: Vec::new(),
                zero_page: Vec::new(),
            },
        }
    }

    /// The state.
    pub fn state(&self) -> ReceiverState {
        self.core.state
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.core.failure.as_deref()
    }

    /// What was applied.
    pub fn stats(&self) -> ReceiverStats {
        self.core.stats
    }

    /// The domain.
    pub fn domain(&self) -> &D {
        &self.core.domain
    }

    /// The domain, mutably.
    pub fn domain_mut(&mut self) -> &mut D {
        &mut self.core.domain
    }

    /// Take the domain out.
    pub fn into_domain(self) -> D {
        self.core.domain
    }

    /// Bytes to send back to the sender.
    pub fn take_replies(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.core.outbox)
    }

    fn is_done(&self) -> bool {
        matches!(
            self.core.state,
            ReceiverState::Failed | ReceiverState::Resumed
        )
    }

    /// Bytes arrived. On an error the receiver is `Failed`, has queued a
    /// NACK, and ignores everything after.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), MigrationError> {
        if self.is_done() {
            return Ok(());
        }
        self.core.stats.bytes += bytes.len() as u64;
        self.decoder.push(bytes);
        self.apply_received()
    }

    /// Read once from `source` straight into the decoder's buffer and
    /// apply what is complete (pages go from there into the domain without
    /// another copy). Returns the bytes read: 0 is the end of the stream,
    /// for [`on_eof`](Self::on_eof). A read error is returned as is, for
    /// the caller to report (see [`fail_with`](Self::fail_with)).
    pub fn read_from(
        &mut self,
        source: &mut impl Read,
    ) -> std::io::Result<(usize, Result<(), MigrationError>)> {
        if self.is_done() {
            return Ok((0, Ok(())));
        }
        let n = self.decoder.read_from(source)?;
        self.core.stats.bytes += n as u64;
        Ok((n, self.apply_received()))
    }

    fn apply_received(&mut self) -> Result<(), MigrationError> {
        loop {
            let record = match self.decoder.next_decoded() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.core.fail(e.into())),
            };
            if let Err(e) = self.core.apply(record) {
                return Err(self.core.fail(e));
            }
            if self.is_done() {
                return Ok(());
            }
        }
    }

    /// The connection closed. Fine after the hand-over, an error before.
    pub fn on_eof(&mut self) -> Result<(), MigrationError> {
        match self.core.state {
            ReceiverState::Resumed | ReceiverState::Failed => Ok(()),
            _ => Err(self.core.fail(MigrationError::Protocol {
                what: format!(
                    "the stream ended early ({} bytes unparsed, state {:?}); the guest was not resumed here",
                    self.decoder.pending(),
                    self.core.state
                ),
            })),
        }
    }

    /// Fail with `e` (a transport error, say): the receiver is `Failed`
    /// with a NACK queued. Returns `e`.
    pub fn fail_with(&mut self, e: MigrationError) -> MigrationError {
        self.core.fail(e)
    }
}

impl<D: Domain> Core<D> {
    fn fail(&mut self, e: MigrationError) -> MigrationError {
        if self.state != ReceiverState::Failed {
            self.state = ReceiverState::Failed;
            let reason = e.to_string();
            Record::Nack(reason.clone()).encode(&mut self.outbox);
            self.failure = Some(reason);
        }
        e
    }

    fn apply(&mut self, record: Decoded<'_>) -> Result<(), MigrationError> {
        use ReceiverState as S;
        let record = match (self.state, record) {
            (S::Receiving, Decoded::Pages(batch)) => return self.apply_batch(batch),
            (state, Decoded::Pages(_)) => {
                return Err(MigrationError::Protocol {
                    what: format!("PAGES record in state {state:?}"),
                })
            }
            (_, Decoded::Other(record)) => record,
        };
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
            (state, record) => Err(MigrationError::Protocol {
                what: format!("{:?} record in state {state:?}", record.kind()),
            }),
        }
    }

    /// Apply a batch where it lies: raw pages go from the record into the
    /// domain, zero pages from one zero page, and only deltas are rebuilt
    /// in a buffer (from the pages held now).
    fn apply_batch(&mut self, batch: BatchView<'_>) -> Result<(), MigrationError> {
        let size = self.domain.page_size();
        if self.zero_page.len() != size {
            self.zero_page = vec![0; size];
        }
        self.pfns.clear();
        self.pfns.extend(
            batch
                .entries
                .iter()
                .filter(|e| e.encoding == Encoding::Delta)
                .map(|e| e.pfn),
        );
        self.rebuilt.resize(self.pfns.len() * size, 0);
        self.domain
            .read_pages(&self.pfns, &mut self.rebuilt)
            .map_err(|source| MigrationError::Backend {
                what: "reading pages to apply deltas",
                source,
            })?;
        // (A page twice in one batch, which the sender never does, would
        // rebuild from a stale base; the digest catches that.)
        let deltas = batch
            .entries
            .iter()
            .filter(|e| e.encoding == Encoding::Delta);
        for (entry, page) in deltas.zip(self.rebuilt.chunks_exact_mut(size)) {
            apply_delta(page, batch.data(entry)).map_err(|source| {
                MigrationError::Stream(super::StreamError::Delta {
                    pfn: entry.pfn,
                    source,
                })
            })?;
        }
        self.pfns.clear();
        let mut pages: Vec<&[u8]> = Vec::with_capacity(batch.entries.len());
        let mut rebuilt = self.rebuilt.chunks_exact(size);
        for entry in batch.entries {
            let page = match entry.encoding {
                Encoding::Zero => {
                    self.stats.zero_pages += 1;
                    &self.zero_page[..]
                }
                Encoding::Raw => batch.data(entry),
                Encoding::Delta => {
                    self.stats.delta_pages += 1;
                    rebuilt.next().unwrap_or_default()
                }
            };
            self.digest.add(entry.pfn, page);
            self.stats.pages += 1;
            self.pfns.push(entry.pfn);
            pages.push(page);
        }
        self.domain
            .write_page_list(&self.pfns, &pages)
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
        self.state() == ReceiverState::Failed
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
    let mut first = Some(initial).filter(|bytes| !bytes.is_empty());
    loop {
        let (n, outcome) = if let Some(bytes) = first.take() {
            (bytes.len(), receiver.on_bytes(bytes))
        } else {
            match receiver.read_from(stream) {
                Ok((0, _)) => (0, receiver.on_eof()),
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error = read_error(e, io_timeout, "reading the stream");
                    let error = receiver.fail_with(error.into());
                    // Tell the sender why, if it still listens.
                    let _ = stream.write_all(&receiver.take_replies());
                    return Err(error);
                }
            }
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
