//! The stream transcoder: carries an xl migration stream with its pages
//! zero- and delta-encoded, and rebuilds it byte for byte for the stock
//! `xl migrate-receive` on the other side.
//!
//! ```text
//!  sender (perfplus migrate)                    receiver (perfplus migrate-receive)
//!  xl/libxl framing ─ push_literal ─┐                       ┌─▶ xl migrate-receive
//!  libxc stream ───── push_libxc ───┤ Encoder ══ chunks ══▶ Decoder   (stdin: the exact
//!  (xc_domain_save, or the PVH      │  PAGE_DATA → PAGES             bytes the sender's
//!   sink's own records)             │  the rest  → LITERAL           side produced)
//! ```
//!
//! The encoder follows the libxc stream's record framing ([`super::records`]):
//! every well-formed `PAGE_DATA` record becomes a `PAGES` chunk in which
//! each page is zero, raw or an XOR delta against the copy the receiver
//! already holds ([`crate::migration::encode`], with the same bounded
//! [`DeltaCache`] on both sides, fed the same pages in the same order so
//! the two stay identical); everything else, including any record the
//! encoder does not fully understand, travels as `LITERAL` bytes. The
//! receiver rebuilds each record and checks it against the sender's digest
//! of the original, so a rebuilt stream is byte-identical or refused.
//!
//! Chunks (little endian):
//!
//! ```text
//!  0      1      2      4        8                  8+len      16+len
//!  +------+------+------+--------+------------------+----------+
//!  | kind | 0    | 0    | len    | payload          | check    |  check: xxh3-64 of
//!  | u8   | u8   | u16  | u32    | len bytes        | u64      |  bytes 0..8+len
//!  +------+------+------+--------+------------------+----------+
//!
//!  1 HELLO    magic "PPXLSTRM" | version u16 (=1) | 0 u16 | page_size u32 (=4096)
//!             | page_count u64 | delta_cache_bytes u64             (first, once)
//!  2 LITERAL  1..=1 MiB bytes, copied through
//!  3 PAGES    round u32 | count u32 (1..=1024) | digest u64 (xxh3-64 of the
//!             whole original PAGE_DATA record) | count x u64 pfn word
//!             | per pfn word whose type carries data, in order:
//!                 enc u8: 0 ZERO | 1 RAW + 4096 bytes | 2 DELTA + len u16 (< 4096) + len bytes
//!  4 END      (empty): the sender is done; nothing may follow
//! ```
//!
//! The decoder is strict and bounded: it holds at most one chunk, refuses
//! unknown kinds, oversized chunks, a guest or cache over its limits,
//! non-canonical deltas, a delta for a page it holds no copy of, and any
//! rebuilt record whose digest differs.

#![forbid(unsafe_code)]

use xxhash_rust::xxh3::xxh3_64;

use super::records::{
    nibble_has_data, nibble_is_known, padding, type_nibble, DOMAIN_HEADER_BYTES,
    IMAGE_HEADER_BYTES, MAX_BATCH_PFNS, MAX_PAGE_DATA_BODY, PAGE_DATA_HEADER_BYTES, PAGE_SIZE,
    PFN_MASK, REC_TYPE_END, REC_TYPE_PAGE_DATA,
};
use crate::migration::encode::{
    apply_delta, encode_page, DecodeError, DeltaCache, Encoding, EncodingSet,
};

/// Transcoded stream version written and accepted.
pub const VERSION: u16 = 1;
/// The HELLO magic.
pub const MAGIC: [u8; 8] = *b"PPXLSTRM";
/// Largest LITERAL chunk.
pub const MAX_LITERAL: usize = 1 << 20;
/// Framing bytes around each chunk's payload.
pub const FRAME_BYTES: usize = 16;

const HELLO_PAYLOAD: usize = 32;
const PAGES_HEADER: usize = 16;
/// Largest encoded page: a delta (`enc`, `len u16`, under a page of bytes).
const MAX_ENTRY: usize = 3 + PAGE_SIZE - 1;
/// Largest PAGES payload.
pub const MAX_PAGES_PAYLOAD: usize = PAGES_HEADER + MAX_BATCH_PFNS * (8 + MAX_ENTRY);

const KIND_HELLO: u8 = 1;
const KIND_LITERAL: u8 = 2;
const KIND_PAGES: u8 = 3;
const KIND_END: u8 = 4;

const ENC_ZERO: u8 = 0;
const ENC_RAW: u8 = 1;
const ENC_DELTA: u8 = 2;

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_HELLO => "HELLO",
        KIND_LITERAL => "LITERAL",
        KIND_PAGES => "PAGES",
        KIND_END => "END",
        _ => "unknown",
    }
}

fn max_payload(kind: u8) -> usize {
    match kind {
        KIND_HELLO => HELLO_PAYLOAD,
        KIND_LITERAL => MAX_LITERAL,
        KIND_PAGES => MAX_PAGES_PAYLOAD,
        _ => 0,
    }
}

/// A transcoded stream the receiver refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// A chunk's check word does not match its bytes (corruption on the way).
    #[error(
        "chunk {index} of the transcoded stream fails its integrity check: the stream is corrupt"
    )]
    BadCheck {
        /// Chunks decoded before this one.
        index: u64,
    },
    /// A chunk kind this build does not know.
    #[error("chunk {index} of the transcoded stream has unknown kind {kind}")]
    UnknownKind {
        /// Chunks decoded before this one.
        index: u64,
        /// The kind byte.
        kind: u8,
    },
    /// A chunk longer than its kind allows.
    #[error("chunk {index} ({kind}) is {len} bytes, at most {max} allowed")]
    TooLong {
        /// Chunks decoded before this one.
        index: u64,
        /// Its kind.
        kind: &'static str,
        /// Its payload length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The stream does not start with the HELLO magic.
    #[error("not a perfplus transcoded xl stream (bad magic)")]
    BadMagic,
    /// A version this build does not speak.
    #[error(
        "transcoded stream version {0} is not supported (this build speaks version {VERSION})"
    )]
    UnsupportedVersion(u16),
    /// The sender asks for more than this receiver allows.
    #[error("the sender asks for {what} = {value}, over this receiver's limit of {limit}")]
    OverLimit {
        /// The setting.
        what: &'static str,
        /// What the sender asked for.
        value: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// A chunk whose contents break the format.
    #[error("malformed chunk {index} ({kind}): {what}")]
    Malformed {
        /// Chunks decoded before this one.
        index: u64,
        /// Its kind.
        kind: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A valid chunk where it may not come.
    #[error("unexpected {kind} chunk {index} {when}")]
    Unexpected {
        /// Chunks decoded before this one.
        index: u64,
        /// Its kind.
        kind: &'static str,
        /// Where it came.
        when: &'static str,
    },
    /// A delta that does not decode.
    #[error("delta for page {pfn} in chunk {index} does not decode: {source}")]
    Delta {
        /// Chunks decoded before this one.
        index: u64,
        /// The page.
        pfn: u64,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A delta against a page this receiver holds no copy of (the two
    /// caches disagree: a sender bug or a forged stream).
    #[error("chunk {index} sends a delta for page {pfn}, of which this receiver holds no copy")]
    NoDeltaBase {
        /// Chunks decoded before this one.
        index: u64,
        /// The page.
        pfn: u64,
    },
    /// The rebuilt PAGE_DATA record is not the sender's.
    #[error("the PAGE_DATA record rebuilt from chunk {index} differs from the sender's (digest mismatch)")]
    RebuiltMismatch {
        /// Chunks decoded before this one.
        index: u64,
    },
    /// The stream ended inside a chunk or without END.
    #[error("the transcoded stream ended early ({what})")]
    Truncated {
        /// Where.
        what: &'static str,
    },
}

/// Counts of what went through a transcoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscodeStats {
    /// PAGE_DATA records seen.
    pub page_records: u64,
    /// Of those, sent as PAGES chunks (the rest went as literal bytes).
    pub encoded_records: u64,
    /// Pfn entries in the PAGE_DATA records.
    pub pfns: u64,
    /// Pages carrying data (the others are holes or broken pages).
    pub data_pages: u64,
    /// Data pages sent as zero markers.
    pub zero_pages: u64,
    /// Data pages sent whole.
    pub raw_pages: u64,
    /// Data pages sent as deltas.
    pub delta_pages: u64,
    /// Bytes of the original stream.
    pub stream_bytes: u64,
    /// Bytes on the wire (chunks with framing, or the stream itself).
    pub wire_bytes: u64,
}

/// How an [`Encoder`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Write chunks for a perfplus receiver (true), or the stream as it is
    /// for the stock `xl migrate-receive` (false; pages are only counted).
    pub chunked: bool,
    /// Encodings allowed for pages (chunked only).
    pub encodings: EncodingSet,
    /// Pfns below this have their zero/copy state tracked for deltas.
    pub page_count: u64,
    /// Bytes of page copies kept for deltas (both sides hold as much).
    pub delta_cache_bytes: usize,
}

#[derive(Debug)]
enum EncodeState {
    Headers { left: usize },
    RecordHeader { have: usize },
    Passthrough { left: usize, end: bool },
    PageData { want: usize },
    Trailing,
}

/// The sending half: libxc and framing bytes in, wire bytes out.
#[derive(Debug)]
pub struct Encoder {
    settings: EncoderSettings,
    cache: Option<DeltaCache>,
    state: EncodeState,
    /// The record being collected (header first).
    record: Vec<u8>,
    literal: Vec<u8>,
    scratch: Vec<u8>,
    round: u32,
    stats: TranscodeStats,
}

/// `n` as a little-endian u32 (every length here is bounded far below 4 GiB).
fn le32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

fn put_chunk_header(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
    start
}

fn finish_chunk(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start - 8;
    // Payloads are bounded far below 4 GiB.
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    out[start + 4..start + 8].copy_from_slice(&len32.to_le_bytes());
    let check = xxh3_64(&out[start..]);
    out.extend_from_slice(&check.to_le_bytes());
}

impl Encoder {
    /// An encoder with these settings. In chunked mode, write
    /// [`hello`](Self::hello) first.
    pub fn new(settings: EncoderSettings) -> Self {
        let cache = (settings.chunked && settings.encodings.delta)
            .then(|| DeltaCache::new(PAGE_SIZE, settings.page_count, settings.delta_cache_bytes));
        Self {
            settings,
            cache,
            state: EncodeState::Headers {
                left: IMAGE_HEADER_BYTES + DOMAIN_HEADER_BYTES,
            },
            record: Vec::new(),
            literal: Vec::new(),
            scratch: Vec::new(),
            round: 0,
            stats: TranscodeStats::default(),
        }
    }

    /// Whether the output is chunked (for a perfplus receiver).
    pub fn is_chunked(&self) -> bool {
        self.settings.chunked
    }

    /// What went through so far.
    pub fn stats(&self) -> TranscodeStats {
        self.stats
    }

    /// The pre-copy round the next pages belong to (their copies are kept
    /// for deltas from round 1 on: pages resent are likely to change again).
    pub fn set_round(&mut self, round: u32) {
        self.round = round;
    }

    /// Append the HELLO chunk (chunked mode; nothing otherwise).
    pub fn hello(&mut self, out: &mut Vec<u8>) {
        if !self.settings.chunked {
            return;
        }
        let before = out.len();
        let start = put_chunk_header(out, KIND_HELLO);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&le32(PAGE_SIZE));
        out.extend_from_slice(&self.settings.page_count.to_le_bytes());
        let cache = if self.cache.is_some() {
            self.settings.delta_cache_bytes as u64
        } else {
            0
        };
        out.extend_from_slice(&cache.to_le_bytes());
        finish_chunk(out, start);
        self.stats.wire_bytes += (out.len() - before) as u64;
    }

    /// Finish: bytes of an incomplete record still held go out as they
    /// are, then the END chunk (chunked mode).
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if matches!(
            self.state,
            EncodeState::RecordHeader { .. } | EncodeState::PageData { .. }
        ) {
            let partial = std::mem::take(&mut self.record);
            self.literal(&partial, out);
            self.state = EncodeState::Trailing;
        }
        self.flush_literal(out);
        if !self.settings.chunked {
            return;
        }
        let before = out.len();
        let start = put_chunk_header(out, KIND_END);
        finish_chunk(out, start);
        self.stats.wire_bytes += (out.len() - before) as u64;
    }

    /// Bytes outside the libxc stream (xl's header, libxl's records, the
    /// handshake messages): copied through.
    pub fn push_literal(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.stats.stream_bytes += bytes.len() as u64;
        self.literal(bytes, out);
        self.flush_literal(out);
    }

    /// Bytes of the libxc stream, from its image header on, in any pieces.
    pub fn push_libxc(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        self.stats.stream_bytes += input.len() as u64;
        while !input.is_empty() {
            match &mut self.state {
                EncodeState::Headers { left } => {
                    let n = (*left).min(input.len());
                    *left -= n;
                    let done = *left == 0;
                    let (now, rest) = input.split_at(n);
                    input = rest;
                    self.literal(now, out);
                    if done {
                        self.state = EncodeState::RecordHeader { have: 0 };
                        self.record.clear();
                    }
                }
                EncodeState::RecordHeader { have } => {
                    let n = (8 - *have).min(input.len());
                    *have += n;
                    let full = *have == 8;
                    self.record.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if full {
                        self.start_record(out);
                    }
                }
                EncodeState::Passthrough { left, end } => {
                    let n = (*left).min(input.len());
                    *left -= n;
                    let next = match (*left, *end) {
                        (0, true) => Some(EncodeState::Trailing),
                        (0, false) => Some(EncodeState::RecordHeader { have: 0 }),
                        _ => None,
                    };
                    let (now, rest) = input.split_at(n);
                    input = rest;
                    self.literal(now, out);
                    if let Some(next) = next {
                        self.record.clear();
                        self.state = next;
                    }
                }
                EncodeState::PageData { want } => {
                    let n = (*want - self.record.len()).min(input.len());
                    let full = self.record.len() + n == *want;
                    self.record.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if full {
                        self.page_data(out);
                        self.record.clear();
                        self.state = EncodeState::RecordHeader { have: 0 };
                    }
                }
                EncodeState::Trailing => {
                    let (now, rest) = input.split_at(input.len());
                    input = rest;
                    self.literal(now, out);
                }
            }
        }
        self.flush_literal(out);
    }

    /// A record header is complete in `self.record`: decide how to carry it.
    fn start_record(&mut self, out: &mut Vec<u8>) {
        let rtype = u32::from_le_bytes([
            self.record[0],
            self.record[1],
            self.record[2],
            self.record[3],
        ]);
        let length = u32::from_le_bytes([
            self.record[4],
            self.record[5],
            self.record[6],
            self.record[7],
        ]) as usize;
        if rtype == REC_TYPE_PAGE_DATA
            && (PAGE_DATA_HEADER_BYTES..=MAX_PAGE_DATA_BODY).contains(&length)
            && length % 8 == 0
        {
            // Keep collecting: the whole record is needed to encode it.
            self.state = EncodeState::PageData { want: 8 + length };
            return;
        }
        let header = std::mem::take(&mut self.record);
        self.literal(&header, out);
        self.record = header;
        self.state = EncodeState::Passthrough {
            left: length + padding(length),
            end: rtype == REC_TYPE_END,
        };
        if length == 0 {
            self.state = if rtype == REC_TYPE_END {
                EncodeState::Trailing
            } else {
                EncodeState::RecordHeader { have: 0 }
            };
            self.record.clear();
        }
    }

    /// A whole PAGE_DATA record is in `self.record`: count it, and encode
    /// it if it is well formed (else copy it through).
    fn page_data(&mut self, out: &mut Vec<u8>) {
        self.stats.page_records += 1;
        let Some(layout) = PageDataLayout::parse(&self.record) else {
            let record = std::mem::take(&mut self.record);
            self.literal(&record, out);
            self.record = record;
            return;
        };
        self.stats.pfns += layout.count as u64;
        self.stats.data_pages += layout.data_pages as u64;
        if !self.settings.chunked {
            self.stats.raw_pages += layout.data_pages as u64;
            let record = std::mem::take(&mut self.record);
            self.literal(&record, out);
            self.record = record;
            return;
        }
        self.flush_literal(out);
        self.stats.encoded_records += 1;
        let before = out.len();
        let start = put_chunk_header(out, KIND_PAGES);
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&le32(layout.count));
        out.extend_from_slice(&xxh3_64(&self.record).to_le_bytes());
        let words_at = 8 + PAGE_DATA_HEADER_BYTES;
        out.extend_from_slice(&self.record[words_at..words_at + 8 * layout.count]);
        let mut page_at = words_at + 8 * layout.count;
        for i in 0..layout.count {
            let at = words_at + 8 * i;
            let word = u64::from_le_bytes(self.record[at..at + 8].try_into().unwrap_or([0; 8]));
            if !nibble_has_data(type_nibble(word)) {
                continue;
            }
            let pfn = word & PFN_MASK;
            let page = &self.record[page_at..page_at + PAGE_SIZE];
            page_at += PAGE_SIZE;
            let encoding = encode_page(
                self.settings.encodings,
                self.cache.as_mut(),
                pfn,
                page,
                &mut self.scratch,
            );
            if let Some(cache) = &mut self.cache {
                cache.sent(
                    pfn,
                    page,
                    encoding == Encoding::Zero,
                    self.round > 0,
                    self.round,
                );
            }
            match encoding {
                Encoding::Zero => {
                    self.stats.zero_pages += 1;
                    out.push(ENC_ZERO);
                }
                Encoding::Raw => {
                    self.stats.raw_pages += 1;
                    out.push(ENC_RAW);
                    out.extend_from_slice(page);
                }
                Encoding::Delta => {
                    self.stats.delta_pages += 1;
                    out.push(ENC_DELTA);
                    // A delta is shorter than a page (encode_delta's budget).
                    let len = u16::try_from(self.scratch.len()).unwrap_or(u16::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(&self.scratch);
                }
            }
        }
        finish_chunk(out, start);
        self.stats.wire_bytes += (out.len() - before) as u64;
    }

    fn literal(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if !self.settings.chunked {
            out.extend_from_slice(bytes);
            self.stats.wire_bytes += bytes.len() as u64;
            return;
        }
        let mut bytes = bytes;
        while !bytes.is_empty() {
            let room = MAX_LITERAL - self.literal.len();
            let n = room.min(bytes.len());
            self.literal.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.literal.len() == MAX_LITERAL {
                self.flush_literal(out);
            }
        }
    }

    fn flush_literal(&mut self, out: &mut Vec<u8>) {
        if self.literal.is_empty() {
            return;
        }
        let before = out.len();
        let start = put_chunk_header(out, KIND_LITERAL);
        out.extend_from_slice(&self.literal);
        finish_chunk(out, start);
        self.literal.clear();
        self.stats.wire_bytes += (out.len() - before) as u64;
    }
}

/// The shape of a well-formed PAGE_DATA record (header included).
struct PageDataLayout {
    count: usize,
    data_pages: usize,
}

impl PageDataLayout {
    /// `None` unless the record is one the stock restore accepts and the
    /// encoder can rebuild exactly: 1..=1024 pfns, reserved word zero, known
    /// types, and a length of exactly header + pfn words + data pages.
    fn parse(record: &[u8]) -> Option<Self> {
        let body = record.get(8..)?;
        let count = u32::from_le_bytes(body.get(0..4)?.try_into().ok()?) as usize;
        let reserved = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
        if count == 0 || count > MAX_BATCH_PFNS || reserved != 0 {
            return None;
        }
        let words = body.get(8..8 + 8 * count)?;
        let mut data_pages = 0;
        for w in words.chunks_exact(8) {
            let nibble = type_nibble(u64::from_le_bytes(w.try_into().ok()?));
            if !nibble_is_known(nibble) {
                return None;
            }
            data_pages += usize::from(nibble_has_data(nibble));
        }
        (body.len() == PAGE_DATA_HEADER_BYTES + 8 * count + PAGE_SIZE * data_pages)
            .then_some(Self { count, data_pages })
    }
}

/// What a receiver accepts from a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Largest guest (pages tracked for deltas: one bit each).
    pub max_page_count: u64,
    /// Largest delta cache (page copies held).
    pub max_delta_cache_bytes: u64,
}

impl Default for DecoderLimits {
    /// A 1 TiB guest (32 MiB of bitmap), a 1 GiB cache.
    fn default() -> Self {
        Self {
            max_page_count: 1 << 28,
            max_delta_cache_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    AwaitHello,
    Streaming,
    Ended,
}

/// The receiving half: chunks in, the original stream out.
#[derive(Debug)]
pub struct Decoder {
    limits: DecoderLimits,
    buf: Vec<u8>,
    start: usize,
    chunks: u64,
    state: DecodeState,
    cache: Option<DeltaCache>,
    page: Vec<u8>,
    stats: TranscodeStats,
}

impl Decoder {
    /// A decoder accepting senders within `limits`.
    pub fn new(limits: DecoderLimits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            start: 0,
            chunks: 0,
            state: DecodeState::AwaitHello,
            cache: None,
            page: vec![0; PAGE_SIZE],
            stats: TranscodeStats::default(),
        }
    }

    /// What came through so far.
    pub fn stats(&self) -> TranscodeStats {
        self.stats
    }

    /// Whether the END chunk arrived.
    pub fn ended(&self) -> bool {
        self.state == DecodeState::Ended
    }

    /// Add received bytes (at most one chunk plus this is held).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && (self.start == self.buf.len() || self.start > 1 << 20) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Decode every complete chunk, appending the rebuilt stream to `out`.
    /// Returns true once the END chunk has been decoded.
    pub fn decode(&mut self, out: &mut Vec<u8>) -> Result<bool, TranscodeError> {
        while self.decode_one(out)? {}
        Ok(self.ended())
    }

    /// After the input ended: an error unless the stream ended cleanly.
    pub fn finish(&self) -> Result<(), TranscodeError> {
        if self.start < self.buf.len() {
            return Err(TranscodeError::Truncated {
                what: "inside a chunk",
            });
        }
        match self.state {
            DecodeState::Ended => Ok(()),
            DecodeState::AwaitHello => Err(TranscodeError::Truncated {
                what: "before HELLO",
            }),
            DecodeState::Streaming => Err(TranscodeError::Truncated { what: "before END" }),
        }
    }

    /// Decode one chunk if it is complete; true if one was.
    fn decode_one(&mut self, out: &mut Vec<u8>) -> Result<bool, TranscodeError> {
        let index = self.chunks;
        let avail = &self.buf[self.start..];
        if avail.len() < 8 {
            return Ok(false);
        }
        let kind = avail[0];
        let name = kind_name(kind);
        if !(KIND_HELLO..=KIND_END).contains(&kind) {
            return Err(TranscodeError::UnknownKind { index, kind });
        }
        if avail[1..4] != [0, 0, 0] {
            return Err(TranscodeError::Malformed {
                index,
                kind: name,
                what: "reserved header bytes are not zero".into(),
            });
        }
        let len = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]) as usize;
        let max = max_payload(kind);
        if len > max {
            return Err(TranscodeError::TooLong {
                index,
                kind: name,
                len,
                max,
            });
        }
        if avail.len() < FRAME_BYTES + len {
            return Ok(false);
        }
        let check = u64::from_le_bytes(
            avail[8 + len..16 + len]
                .try_into()
                .map_err(|_| TranscodeError::Truncated { what: "check word" })?,
        );
        if xxh3_64(&avail[..8 + len]) != check {
            return Err(TranscodeError::BadCheck { index });
        }
        if self.state == DecodeState::Ended {
            return Err(TranscodeError::Unexpected {
                index,
                kind: name,
                when: "after END",
            });
        }
        let range = self.start + 8..self.start + 8 + len;
        let buf = std::mem::take(&mut self.buf);
        let result = self.apply(index, kind, &buf[range], out);
        self.buf = buf;
        result?;
        self.start += FRAME_BYTES + len;
        self.chunks += 1;
        self.stats.wire_bytes += (FRAME_BYTES + len) as u64;
        Ok(true)
    }

    fn apply(
        &mut self,
        index: u64,
        kind: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TranscodeError> {
        let name = kind_name(kind);
        match (self.state, kind) {
            (DecodeState::AwaitHello, KIND_HELLO) => self.hello(payload),
            (DecodeState::AwaitHello, _) => Err(TranscodeError::Unexpected {
                index,
                kind: name,
                when: "before HELLO",
            }),
            (_, KIND_HELLO) => Err(TranscodeError::Unexpected {
                index,
                kind: name,
                when: "after HELLO",
            }),
            (_, KIND_LITERAL) => {
                if payload.is_empty() {
                    return Err(TranscodeError::Malformed {
                        index,
                        kind: name,
                        what: "empty literal".into(),
                    });
                }
                out.extend_from_slice(payload);
                self.stats.stream_bytes += payload.len() as u64;
                Ok(())
            }
            (_, KIND_PAGES) => {
                let start = out.len();
                let result = self.pages(index, payload, out);
                if result.is_err() {
                    out.truncate(start);
                } else {
                    self.stats.stream_bytes += (out.len() - start) as u64;
                }
                result
            }
            (_, _) => {
                // END (the only kind left): empty.
                if !payload.is_empty() {
                    return Err(TranscodeError::Malformed {
                        index,
                        kind: name,
                        what: "END carries bytes".into(),
                    });
                }
                self.state = DecodeState::Ended;
                Ok(())
            }
        }
    }

    fn hello(&mut self, p: &[u8]) -> Result<(), TranscodeError> {
        if p.len() != HELLO_PAYLOAD {
            return Err(TranscodeError::Malformed {
                index: 0,
                kind: "HELLO",
                what: format!("{} bytes, {HELLO_PAYLOAD} expected", p.len()),
            });
        }
        if p[0..8] != MAGIC {
            return Err(TranscodeError::BadMagic);
        }
        let version = u16::from_le_bytes([p[8], p[9]]);
        if version != VERSION {
            return Err(TranscodeError::UnsupportedVersion(version));
        }
        let page_size = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
        if p[10..12] != [0, 0] || page_size as usize != PAGE_SIZE {
            return Err(TranscodeError::Malformed {
                index: 0,
                kind: "HELLO",
                what: format!("page size {page_size} (only {PAGE_SIZE} is carried)"),
            });
        }
        let page_count = u64::from_le_bytes(p[16..24].try_into().unwrap_or([0; 8]));
        let cache_bytes = u64::from_le_bytes(p[24..32].try_into().unwrap_or([0; 8]));
        if page_count > self.limits.max_page_count {
            return Err(TranscodeError::OverLimit {
                what: "page_count",
                value: page_count,
                limit: self.limits.max_page_count,
            });
        }
        if cache_bytes > self.limits.max_delta_cache_bytes {
            return Err(TranscodeError::OverLimit {
                what: "delta_cache_bytes",
                value: cache_bytes,
                limit: self.limits.max_delta_cache_bytes,
            });
        }
        let cache_bytes = usize::try_from(cache_bytes).map_err(|_| TranscodeError::OverLimit {
            what: "delta_cache_bytes",
            value: cache_bytes,
            limit: usize::MAX as u64,
        })?;
        self.cache = Some(DeltaCache::new(PAGE_SIZE, page_count, cache_bytes));
        self.state = DecodeState::Streaming;
        Ok(())
    }

    /// Rebuild one PAGE_DATA record from a PAGES payload, appending it to `out`.
    fn pages(&mut self, index: u64, p: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        let malformed = |what: String| TranscodeError::Malformed {
            index,
            kind: "PAGES",
            what,
        };
        if p.len() < PAGES_HEADER {
            return Err(malformed("shorter than its header".into()));
        }
        let round = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        let count = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) as usize;
        let digest = u64::from_le_bytes(p[8..16].try_into().unwrap_or([0; 8]));
        if count == 0 || count > MAX_BATCH_PFNS {
            return Err(malformed(format!(
                "{count} pfns (1..={MAX_BATCH_PFNS} allowed)"
            )));
        }
        let words = p
            .get(PAGES_HEADER..PAGES_HEADER + 8 * count)
            .ok_or_else(|| malformed("pfn words cut short".into()))?;
        let mut data_pages = 0;
        for w in words.chunks_exact(8) {
            let nibble = type_nibble(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
            if !nibble_is_known(nibble) {
                return Err(malformed(format!("unknown page type {nibble:#x}")));
            }
            data_pages += usize::from(nibble_has_data(nibble));
        }
        let body = PAGE_DATA_HEADER_BYTES + 8 * count + PAGE_SIZE * data_pages;
        let record_start = out.len();
        out.reserve(8 + body);
        out.extend_from_slice(&REC_TYPE_PAGE_DATA.to_le_bytes());
        out.extend_from_slice(&le32(body));
        out.extend_from_slice(&le32(count));
        out.extend_from_slice(&0_u32.to_le_bytes());
        out.extend_from_slice(words);
        let cache = self.cache.as_mut().ok_or(TranscodeError::Unexpected {
            index,
            kind: "PAGES",
            when: "before HELLO",
        })?;
        let mut at = PAGES_HEADER + 8 * count;
        for w in words.chunks_exact(8) {
            let word = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            if !nibble_has_data(type_nibble(word)) {
                continue;
            }
            let pfn = word & PFN_MASK;
            let enc = *p
                .get(at)
                .ok_or_else(|| malformed(format!("page {pfn} missing")))?;
            at += 1;
            let encoding = match enc {
                ENC_ZERO => {
                    self.page.fill(0);
                    Encoding::Zero
                }
                ENC_RAW => {
                    let raw = p
                        .get(at..at + PAGE_SIZE)
                        .ok_or_else(|| malformed(format!("page {pfn} cut short")))?;
                    at += PAGE_SIZE;
                    self.page.copy_from_slice(raw);
                    Encoding::Raw
                }
                ENC_DELTA => {
                    let len = p
                        .get(at..at + 2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                        .ok_or_else(|| malformed(format!("delta length of page {pfn} missing")))?;
                    at += 2;
                    let delta = p
                        .get(at..at + len)
                        .ok_or_else(|| malformed(format!("delta of page {pfn} cut short")))?;
                    at += len;
                    match cache.base(pfn) {
                        Some(Some(copy)) => self.page.copy_from_slice(copy),
                        Some(None) => self.page.fill(0),
                        None => return Err(TranscodeError::NoDeltaBase { index, pfn }),
                    }
                    apply_delta(&mut self.page, delta).map_err(|source| TranscodeError::Delta {
                        index,
                        pfn,
                        source,
                    })?;
                    Encoding::Delta
                }
                other => {
                    return Err(malformed(format!(
                        "page {pfn} has unknown encoding {other}"
                    )))
                }
            };
            cache.sent(
                pfn,
                &self.page,
                encoding == Encoding::Zero,
                round > 0,
                round,
            );
            out.extend_from_slice(&self.page);
            match encoding {
                Encoding::Zero => self.stats.zero_pages += 1,
                Encoding::Raw => self.stats.raw_pages += 1,
                Encoding::Delta => self.stats.delta_pages += 1,
            }
        }
        if at != p.len() {
            return Err(malformed(format!(
                "{} bytes after the last page",
                p.len() - at
            )));
        }
        if xxh3_64(&out[record_start..]) != digest {
            return Err(TranscodeError::RebuiltMismatch { index });
        }
        self.stats.page_records += 1;
        self.stats.encoded_records += 1;
        self.stats.pfns += count as u64;
        self.stats.data_pages += data_pages as u64;
        Ok(())
    }
}

/// Transcode a whole stream in one go (tests, tools): `literal_before`,
/// the libxc stream, `literal_after`, END.
pub fn encode_all(
    settings: EncoderSettings,
    literal_before: &[u8],
    libxc: &[u8],
    literal_after: &[u8],
) -> Vec<u8> {
    let mut encoder = Encoder::new(settings);
    let mut out = Vec::new();
    encoder.hello(&mut out);
    encoder.push_literal(literal_before, &mut out);
    encoder.push_libxc(libxc, &mut out);
    encoder.push_literal(literal_after, &mut out);
    encoder.end(&mut out);
    out
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    use super::super::records;
    use super::*;
    use proptest::prelude::*;

    fn write_libxc_record(out: &mut Vec<u8>, rtype: u32, body: &[u8]) {
        records::write_record(out, rtype, body).unwrap();
    }

    fn settings(chunked: bool) -> EncoderSettings {
        EncoderSettings {
            chunked,
            encodings: EncodingSet::ALL,
            page_count: 64,
            delta_cache_bytes: 8 * PAGE_SIZE,
        }
    }

    fn headers(out: &mut Vec<u8>) {
        out.extend_from_slice(&records::image_header());
        out.extend_from_slice(&records::domain_header(records::DHDR_TYPE_X86_PV, 4, 17));
    }

    fn page(seed: u8, tweak: u8) -> Vec<u8> {
        let mut p: Vec<u8> = (0..PAGE_SIZE)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect();
        p[100] = tweak;
        p
    }

    fn decode_all(wire: &[u8], pieces: usize) -> Result<Vec<u8>, TranscodeError> {
        let mut d = Decoder::new(DecoderLimits::default());
        let mut out = Vec::new();
        let step = (wire.len() / pieces.max(1)).max(1);
        for piece in wire.chunks(step) {
            d.push(piece);
            d.decode(&mut out)?;
        }
        d.finish()?;
        Ok(out)
    }

    fn sample_stream() -> Vec<u8> {
        let mut s = Vec::new();
        headers(&mut s);
        write_libxc_record(&mut s, 2, &[8, 4, 0, 0, 0, 0, 0, 0]);
        // Round 0: three pages and a hole.
        let words = [
            records::pfn_word(1, 0),
            records::pfn_word(2, 0),
            records::pfn_word(3, 0xf000_0000),
            records::pfn_word(4, 0x1000_0000),
        ];
        let pages = [page(3, 0), vec![0; PAGE_SIZE], page(5, 0)];
        records::write_page_data(&mut s, &words, |i| &pages[i]);
        // Round 1: the same pages, slightly changed.
        let pages = [page(3, 9), page(7, 1), page(5, 2)];
        records::write_page_data(&mut s, &words, |i| &pages[i]);
        write_libxc_record(&mut s, 7, &[1, 2, 3]);
        write_libxc_record(&mut s, REC_TYPE_END, &[]);
        s
    }

    #[test]
    fn a_stream_is_rebuilt_byte_for_byte_with_fewer_bytes_on_the_wire() {
        let stream = sample_stream();
        let before = b"xl header and config".to_vec();
        let after = b"libxl END, handshake".to_vec();
        let mut encoder = Encoder::new(settings(true));
        let mut wire = Vec::new();
        encoder.hello(&mut wire);
        encoder.push_literal(&before, &mut wire);
        encoder.set_round(0);
        let split = stream.len() / 2;
        encoder.push_libxc(&stream[..split], &mut wire);
        encoder.set_round(1);
        encoder.push_libxc(&stream[split..], &mut wire);
        encoder.push_literal(&after, &mut wire);
        encoder.end(&mut wire);
        let stats = encoder.stats();
        assert_eq!(stats.page_records, 2);
        assert_eq!(stats.encoded_records, 2);
        assert_eq!(stats.data_pages, 6);
        assert!(stats.zero_pages >= 1, "{stats:?}");
        assert!(stats.delta_pages >= 1, "{stats:?}");
        assert!(wire.len() < before.len() + stream.len() + after.len());
        let rebuilt = decode_all(&wire, 7).unwrap();
        assert_eq!(rebuilt, [before, stream, after].concat());
    }

    #[test]
    fn plain_mode_copies_the_stream_and_counts_its_pages() {
        let stream = sample_stream();
        let mut encoder = Encoder::new(settings(false));
        let mut wire = Vec::new();
        encoder.hello(&mut wire);
        encoder.push_libxc(&stream, &mut wire);
        encoder.end(&mut wire);
        assert_eq!(wire, stream);
        assert_eq!(encoder.stats().data_pages, 6);
        assert_eq!(encoder.stats().wire_bytes, stream.len() as u64);
    }

    #[test]
    fn an_odd_page_data_record_travels_as_literal_bytes() {
        let mut s = Vec::new();
        headers(&mut s);
        // Reserved word set, and a record one page short.
        let mut odd = vec![1, 0, 0, 0, 1, 0, 0, 0];
        odd.extend_from_slice(&records::pfn_word(3, 0).to_le_bytes());
        odd.extend_from_slice(&page(9, 9));
        write_libxc_record(&mut s, REC_TYPE_PAGE_DATA, &odd);
        let mut short = vec![2, 0, 0, 0, 0, 0, 0, 0];
        short.extend_from_slice(&records::pfn_word(3, 0).to_le_bytes());
        short.extend_from_slice(&records::pfn_word(4, 0).to_le_bytes());
        short.extend_from_slice(&page(9, 9));
        write_libxc_record(&mut s, REC_TYPE_PAGE_DATA, &short);
        write_libxc_record(&mut s, REC_TYPE_END, &[]);
        let wire = encode_all(settings(true), b"", &s, b"");
        let rebuilt = decode_all(&wire, 3).unwrap();
        assert_eq!(rebuilt, s);
    }

    #[test]
    fn a_corrupt_chunk_is_refused() {
        let wire = encode_all(settings(true), b"hdr", &sample_stream(), b"");
        for at in [3, 20, 60, wire.len() / 2, wire.len() - 12] {
            let mut bad = wire.clone();
            bad[at] ^= 0x40;
            assert!(decode_all(&bad, 1).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn a_stream_cut_short_is_refused() {
        let wire = encode_all(settings(true), b"hdr", &sample_stream(), b"");
        let err = decode_all(&wire[..wire.len() - 16], 1).unwrap_err();
        assert_eq!(err, TranscodeError::Truncated { what: "before END" });
        let err = decode_all(&wire[..wire.len() - 5], 1).unwrap_err();
        assert_eq!(
            err,
            TranscodeError::Truncated {
                what: "inside a chunk"
            }
        );
    }

    #[test]
    fn a_sender_over_the_limits_is_refused() {
        let big = EncoderSettings {
            page_count: (1 << 28) + 1,
            ..settings(true)
        };
        let wire = encode_all(big, b"", &sample_stream(), b"");
        let mut d = Decoder::new(DecoderLimits::default());
        d.push(&wire);
        let err = d.decode(&mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                TranscodeError::OverLimit {
                    what: "page_count",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_delta_without_a_base_is_refused() {
        // Hand-made PAGES chunk: a delta for page 1 the receiver never got.
        let mut wire = Vec::new();
        Encoder::new(settings(true)).hello(&mut wire);
        let mut rec = Vec::new();
        let p = page(3, 0);
        records::write_page_data(&mut rec, &[records::pfn_word(1, 0)], |_| &p);
        let start = put_chunk_header(&mut wire, KIND_PAGES);
        wire.extend_from_slice(&1_u32.to_le_bytes());
        wire.extend_from_slice(&1_u32.to_le_bytes());
        wire.extend_from_slice(&xxh3_64(&rec).to_le_bytes());
        wire.extend_from_slice(&records::pfn_word(1, 0).to_le_bytes());
        wire.extend_from_slice(&[ENC_DELTA, 2, 0, 0, 1]);
        finish_chunk(&mut wire, start);
        let mut d = Decoder::new(DecoderLimits::default());
        d.push(&wire);
        assert_eq!(
            d.decode(&mut Vec::new()).unwrap_err(),
            TranscodeError::NoDeltaBase { index: 1, pfn: 1 }
        );
    }

    /// A random libxc stream: headers, then rounds of PAGE_DATA records over
    /// a few pfns whose pages change a little between rounds (so zero,
    /// delta and raw all occur), other records, odd PAGE_DATA records, END.
    fn arb_stream() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
        let record = prop_oneof![
            // (kind 0: page data) pfns, types, content seeds, tweak
            (proptest::collection::vec((0_u64..80, 0_usize..6, 0_u8..4, any::<u8>()), 1..12))
                .prop_map(|entries| (0_u8, entries, Vec::new())),
            // (kind 1: another record) body
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| (1_u8, Vec::new(), b)),
            // (kind 2: a PAGE_DATA record with garbage in it)
            proptest::collection::vec(any::<u8>(), 8..64).prop_map(|b| (2_u8, Vec::new(), b)),
        ];
        (
            proptest::collection::vec(record, 0..14),
            proptest::collection::vec(1_usize..5000, 0..6),
        )
            .prop_map(|(records_, splits)| {
                const TYPES: [u32; 6] = [0, 0, 0x1000_0000, 0x9000_0000, 0xf000_0000, 0xd000_0000];
                let mut s = Vec::new();
                headers(&mut s);
                for (kind, entries, body) in records_ {
                    match kind {
                        0 => {
                            let words: Vec<u64> = entries
                                .iter()
                                .map(|&(pfn, t, _, _)| records::pfn_word(pfn, TYPES[t]))
                                .collect();
                            let pages: Vec<Vec<u8>> = entries
                                .iter()
                                .filter(|&&(_, t, _, _)| records::pfinfo_has_data(TYPES[t]))
                                .map(|&(pfn, _, seed, tweak)| match seed {
                                    0 => vec![0; PAGE_SIZE],
                                    s => page(s.wrapping_add(pfn as u8), tweak),
                                })
                                .collect();
                            records::write_page_data(&mut s, &words, |i| &pages[i]);
                        }
                        1 => write_libxc_record(&mut s, 2 + u32::from(body.len() as u8 % 9), &body),
                        _ => write_libxc_record(&mut s, REC_TYPE_PAGE_DATA, &body),
                    }
                }
                write_libxc_record(&mut s, REC_TYPE_END, &[]);
                (s, splits)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn transcoding_rebuilds_the_stream_exactly(
            (stream, splits) in arb_stream(),
            before in proptest::collection::vec(any::<u8>(), 0..100),
            chunked in any::<bool>(),
            cache_pages in 0_usize..6,
            pieces in 1_usize..9,
        ) {
            let settings = EncoderSettings {
                chunked,
                encodings: EncodingSet::ALL,
                page_count: 64,
                delta_cache_bytes: cache_pages * PAGE_SIZE,
            };
            let mut encoder = Encoder::new(settings);
            let mut wire = Vec::new();
            encoder.hello(&mut wire);
            encoder.push_literal(&before, &mut wire);
            let mut rest = &stream[..];
            for (round, split) in splits.iter().enumerate() {
                let n = (*split).min(rest.len());
                encoder.set_round(round as u32);
                encoder.push_libxc(&rest[..n], &mut wire);
                rest = &rest[n..];
            }
            encoder.set_round(99);
            encoder.push_libxc(rest, &mut wire);
            encoder.end(&mut wire);
            let expected = [before.clone(), stream.clone()].concat();
            if chunked {
                let rebuilt = decode_all(&wire, pieces).unwrap();
                prop_assert_eq!(rebuilt, expected);
                let stats = encoder.stats();
                prop_assert_eq!(stats.wire_bytes, wire.len() as u64);
                prop_assert_eq!(stats.zero_pages + stats.raw_pages + stats.delta_pages, stats.data_pages);
            } else {
                prop_assert_eq!(wire, expected);
            }
        }

        #[test]
        fn any_bytes_given_as_a_libxc_stream_round_trip(
            bytes in proptest::collection::vec(any::<u8>(), 0..9000),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut encoder = Encoder::new(settings(true));
            let mut wire = Vec::new();
            encoder.hello(&mut wire);
            let cut = cut.index(bytes.len() + 1);
            encoder.push_libxc(&bytes[..cut], &mut wire);
            encoder.push_libxc(&bytes[cut..], &mut wire);
            encoder.end(&mut wire);
            prop_assert_eq!(decode_all(&wire, 3).unwrap(), bytes);
        }

        #[test]
        fn garbage_never_panics_the_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            with_hello in any::<bool>(),
        ) {
            let mut d = Decoder::new(DecoderLimits { max_page_count: 1 << 16, max_delta_cache_bytes: 1 << 20 });
            if with_hello {
                let mut h = Vec::new();
                Encoder::new(settings(true)).hello(&mut h);
                d.push(&h);
            }
            d.push(&bytes);
            let mut out = Vec::new();
            let _ = d.decode(&mut out);
            let _ = d.finish();
        }

        #[test]
        fn a_flipped_bit_never_rebuilds_a_different_stream(
            (stream, _) in arb_stream(),
            at in any::<prop::sample::Index>(),
            bit in 0_u8..8,
        ) {
            let wire = encode_all(settings(true), b"pre", &stream, b"post");
            let mut bad = wire.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            if let Ok(rebuilt) = decode_all(&bad, 1) {
                prop_assert_eq!(rebuilt, [b"pre".to_vec(), stream, b"post".to_vec()].concat());
            }
        }
    }
}
