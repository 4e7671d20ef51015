//! The record output side: what the engine hands over each round, behind
//! [`StreamSink`], so a different stream format can be written from the
//! same rounds (the Xen backend writes a libxc v3 stream for PVH guests:
//! `PAGE_DATA` records from [`StreamSink::send_pages`], `HVM_CONTEXT` from
//! [`StreamSink::send_cpu_state`], `END` from
//! [`StreamSink::end_and_await_ack`], with libxl's handshake around it).
//!
//! [`PerfplusSink`] writes the Perf+ stream ([`super::stream`]) over any
//! [`Transport`], choosing each page's encoding and keeping the digest.

use std::time::Duration;

use super::encode::{encode_page, DeltaCache, DeltaGate, Encoding, EncodingSet};
use super::stream::{
    BatchWriter, Record, RecordDecoder, StreamDigest, StreamHeader, PAGE_ENTRY_BYTES,
};
use super::transport::Transport;
use super::MigrationError;
use crate::backend::Pfn;

/// What one [`StreamSink::send_pages`] call put on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSent {
    /// Bytes on the wire, framing included.
    pub wire_bytes: u64,
    /// Pages sent as zero markers.
    pub zero_pages: u64,
    /// Pages sent raw.
    pub raw_pages: u64,
    /// Pages sent as deltas.
    pub delta_pages: u64,
}

impl BatchSent {
    /// Pages in total.
    pub fn pages(&self) -> u64 {
        self.zero_pages + self.raw_pages + self.delta_pages
    }

    /// Add another batch.
    pub fn add(&mut self, other: BatchSent) {
        self.wire_bytes += other.wire_bytes;
        self.zero_pages += other.zero_pages;
        self.raw_pages += other.raw_pages;
        self.delta_pages += other.delta_pages;
    }
}

/// Where the engine's output goes. Calls come in this order: `begin`,
/// `send_pages`*, `send_cpu_state`, `end_and_await_ack`,
/// `commit_and_await_resumed`; `abort` at any point before the ack.
pub trait StreamSink {
    /// Start the stream for a guest of this geometry.
    fn begin(&mut self, header: StreamHeader) -> Result<(), MigrationError>;

    /// Send pages `pfns` whose contents are `data` (page `i` at
    /// `i * page_size`), read in round `round` (the final pass has the
    /// highest round number).
    fn send_pages(
        &mut self,
        round: u32,
        pfns: &[Pfn],
        data: &[u8],
    ) -> Result<BatchSent, MigrationError>;

    /// Send the CPU/device state (the guest is paused).
    fn send_cpu_state(&mut self, blob: &[u8]) -> Result<u64, MigrationError>;

    /// End the stream and wait until the receiver confirms it applied and
    /// verified everything. Until this returns `Ok`, the source may resume.
    fn end_and_await_ack(&mut self) -> Result<(), MigrationError>;

    /// Hand the guest over and wait until the receiver says it runs there.
    fn commit_and_await_resumed(&mut self) -> Result<(), MigrationError>;

    /// Tell the receiver the migration is off (best effort).
    fn abort(&mut self, reason: &str);

    /// The guest is paused: the pages that follow are the final pass, and
    /// nothing is sent after them (no page needs keeping for a later
    /// delta).
    fn final_pass_begins(&mut self) {}

    /// Wait until the bytes sent so far have left this host (the end of a
    /// round is when its pages are out, not when they sit in a socket
    /// buffer). Sinks that cannot tell return at once.
    fn wait_sent(&mut self) -> Result<(), MigrationError> {
        Ok(())
    }

    /// Bytes on the wire so far.
    fn bytes_on_wire(&self) -> u64;
}

/// Writes the Perf+ stream over a [`Transport`].
#[derive(Debug)]
pub struct PerfplusSink<T> {
    transport: T,
    encodings: EncodingSet,
    cache_bytes: usize,
    cache: Option<DeltaCache>,
    digest: StreamDigest,
    batch: BatchWriter,
    payload: Vec<u8>,
    frame: Vec<u8>,
    page_size: usize,
    bytes: u64,
    reply_timeout: Duration,
    replies: RecordDecoder,
    final_pass: bool,
    delta_gate: DeltaGate,
}

impl<T: Transport> PerfplusSink<T> {
    /// A sink over `transport` that may use `encodings`, keeps up to
    /// `delta_cache_bytes` of page copies for deltas, and waits at most
    /// `reply_timeout` for each answer of the receiver.
    pub fn new(
        transport: T,
        encodings: EncodingSet,
        delta_cache_bytes: usize,
        reply_timeout: Duration,
    ) -> Self {
        Self {
            transport,
            encodings,
            cache_bytes: delta_cache_bytes,
            cache: None,
            digest: StreamDigest::default(),
            batch: BatchWriter::new(4096),
            payload: Vec::new(),
            frame: Vec::new(),
            page_size: 4096,
            bytes: 0,
            reply_timeout,
            replies: RecordDecoder::new(),
            final_pass: false,
            delta_gate: DeltaGate::default(),
        }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Take the transport out.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// The digest of the page records sent so far.
    pub fn digest(&self) -> StreamDigest {
        self.digest
    }

    /// Delta-cache (hits, misses).
    pub fn cache_hits(&self) -> (u64, u64) {
        self.cache.as_ref().map_or((0, 0), DeltaCache::hit_counts)
    }

    /// After a send failure, a NACK the receiver sent before hanging up
    /// explains it better than "connection lost": wait briefly for it.
    fn explain(&mut self, e: super::TransportError) -> MigrationError {
        let mut buf = [0; 2048];
        let wait = self.reply_timeout.min(Duration::from_secs(1));
        if let Ok(n) = self.transport.recv(&mut buf, wait) {
            self.replies.push(&buf[..n]);
            if let Ok(Some(Record::Nack(reason))) = self.replies.next_record() {
                return MigrationError::Refused { reason };
            }
        }
        e.into()
    }

    fn send_record(&mut self, record: &Record) -> Result<u64, MigrationError> {
        self.frame.clear();
        record.encode(&mut self.frame);
        let len = self.frame.len() as u64;
        if let Err(e) = self.transport.send(&self.frame) {
            return Err(self.explain(e));
        }
        self.bytes += len;
        Ok(len)
    }

    fn await_reply(&mut self) -> Result<Record, MigrationError> {
        let mut buf = vec![0; 4096];
        loop {
            if let Some(r) = self.replies.next_record()? {
                return Ok(r);
            }
            let n = self.transport.recv(&mut buf, self.reply_timeout)?;
            if n == 0 {
                return Err(super::TransportError::Closed {
                    what: "waiting for the receiver",
                }
                .into());
            }
            self.replies.push(&buf[..n]);
        }
    }

    /// Send the batch; `pages` is the page buffer its raw pages index.
    fn flush_batch(&mut self, pages: &[u8]) -> Result<u64, MigrationError> {
        if self.batch.is_empty() {
            return Ok(0);
        }
        let parts = self.batch.finish(pages);
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if let Err(e) = self.transport.send_parts(&parts) {
            return Err(self.explain(e));
        }
        self.bytes += len;
        Ok(len)
    }
}

impl<T: Transport> StreamSink for PerfplusSink<T> {
    fn begin(&mut self, header: StreamHeader) -> Result<(), MigrationError> {
        self.page_size = header.page_size;
        self.batch = BatchWriter::new(header.page_size);
        if self.encodings.delta {
            self.cache = Some(DeltaCache::new(
                header.page_size,
                header.page_count,
                self.cache_bytes,
            ));
        }
        self.send_record(&Record::Header(header)).map(|_| ())
    }

    fn send_pages(
        &mut self,
        round: u32,
        pfns: &[Pfn],
        data: &[u8],
    ) -> Result<BatchSent, MigrationError> {
        let mut sent = BatchSent::default();
        let size = self.page_size;
        self.batch.start(round);
        for (index, (&pfn, page)) in pfns.iter().zip(data.chunks_exact(size)).enumerate() {
            if !self.batch.has_room() {
                sent.wire_bytes += self.flush_batch(data)?;
                self.batch.start(round);
            }
            // Pages without a base cannot be deltas: they do not count.
            let attempt = self.cache.as_ref().is_some_and(|c| c.has_base(pfn))
                && if self.final_pass {
                    self.delta_gate.is_open()
                } else {
                    self.delta_gate.allow()
                };
            let encoding = encode_page(
                self.encodings,
                self.cache.as_mut().filter(|_| attempt),
                pfn,
                page,
                &mut self.payload,
            );
            if attempt && encoding != Encoding::Zero {
                self.delta_gate.record(encoding == Encoding::Delta);
            }
            if let Some(cache) = self.cache.as_mut().filter(|_| !self.final_pass) {
                // Pages resent after the first pass are the ones likely to
                // change again: worth a cached copy. (Not in the final
                // pass: nothing follows it, and copying every page into the
                // cache there cost downtime.)
                cache.sent(pfn, page, encoding == Encoding::Zero, round > 0, round);
            }
            match encoding {
                Encoding::Zero => sent.zero_pages += 1,
                Encoding::Raw => sent.raw_pages += 1,
                Encoding::Delta => sent.delta_pages += 1,
            }
            if encoding == Encoding::Raw {
                // Sent from `data` itself (one gathering write per batch).
                self.batch.push_raw(pfn, index);
            } else {
                self.batch.push(pfn, encoding, &self.payload);
            }
            self.digest.add(pfn, page);
        }
        sent.wire_bytes += self.flush_batch(data)?;
        debug_assert!(sent.wire_bytes >= sent.pages() * PAGE_ENTRY_BYTES as u64);
        Ok(sent)
    }

    fn send_cpu_state(&mut self, blob: &[u8]) -> Result<u64, MigrationError> {
        self.send_record(&Record::CpuState(blob.to_vec()))
    }

    fn end_and_await_ack(&mut self) -> Result<(), MigrationError> {
        let digest = self.digest;
        self.send_record(&Record::End(digest))?;
        match self.await_reply()? {
            Record::Ack(d) if d == digest => Ok(()),
            Record::Ack(d) => Err(MigrationError::DigestMismatch {
                sent: digest,
                received: d,
            }),
            Record::Nack(reason) => Err(MigrationError::Refused { reason }),
            other => Err(MigrationError::Protocol {
                what: format!("expected ACK or NACK, got {:?}", other.kind()),
            }),
        }
    }

    fn commit_and_await_resumed(&mut self) -> Result<(), MigrationError> {
        self.send_record(&Record::Commit)?;
        match self.await_reply()? {
            Record::Resumed => Ok(()),
            Record::Nack(reason) => Err(MigrationError::Refused { reason }),
            other => Err(MigrationError::Protocol {
                what: format!("expected RESUMED, got {:?}", other.kind()),
            }),
        }
    }

    fn abort(&mut self, reason: &str) {
        let _ = self.send_record(&Record::Abort(reason.to_string()));
    }

    fn bytes_on_wire(&self) -> u64 {
        self.bytes
    }

    fn final_pass_begins(&mut self) {
        self.final_pass = true;
    }

    fn wait_sent(&mut self) -> Result<(), MigrationError> {
        // A link that does not drain within the reply timeout shows up in
        // the next write's timeout; here it only ends the wait.
        self.transport.wait_sent(self.reply_timeout)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::transport::TransportError;

    /// A transport that takes everything and answers nothing.
    struct Discard;

    impl Transport for Discard {
        fn send(&mut self, _: &[u8]) -> Result<(), TransportError> {
            Ok(())
        }

        fn recv(&mut self, _: &mut [u8], _: Duration) -> Result<usize, TransportError> {
            Ok(0)
        }
    }

    /// `pages` pages of 4 KiB, every byte new (a guest rewriting whole pages).
    fn rewritten(pages: usize, generation: u8) -> Vec<u8> {
        (0..pages * 4096)
            .map(|i| u8::try_from((i * 131 + usize::from(generation) * 71) % 251).unwrap_or(0) | 1)
            .collect()
    }

    #[test]
    fn a_closed_delta_gate_samples_live_rounds_but_not_the_final_pass() {
        let pfns: Vec<Pfn> = (0..256).collect();
        let mut sink = PerfplusSink::new(Discard, EncodingSet::ALL, 4 << 20, Duration::ZERO);
        sink.begin(StreamHeader {
            page_size: 4096,
            page_count: 256,
        })
        .unwrap();
        // Rounds 0 and 1 give every page a cached copy; from round 2 on every
        // delta attempt loses, and the gate closes.
        for round in 0..4_u8 {
            sink.send_pages(u32::from(round), &pfns, &rewritten(256, round))
                .unwrap();
        }
        let tried = |sink: &PerfplusSink<Discard>| sink.cache_hits().0;
        let before = tried(&sink);
        let sent = sink.send_pages(4, &pfns, &rewritten(256, 4)).unwrap();
        let sampled = tried(&sink) - before;
        assert_eq!(sent.delta_pages, 0);
        assert!(
            (1..=32).contains(&sampled),
            "a closed gate samples a live round: {sampled} of 256 tried"
        );
        sink.final_pass_begins();
        let before = tried(&sink);
        let sent = sink.send_pages(5, &pfns, &rewritten(256, 5)).unwrap();
        assert_eq!(sent.raw_pages, 256);
        assert_eq!(tried(&sink), before, "no delta tried in the final pass");
    }
}
