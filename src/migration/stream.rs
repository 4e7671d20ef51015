//! The Perf+ migration stream: versioned, self-checking records.
//!
//! Every record, in both directions, is framed the same way (little-endian):
//!
//! ```text
//!  0        2        4                 8                    8+len           16+len
//!  +--------+--------+-----------------+--------------------+---------------+
//!  | type   | zero   | len             | payload            | check         |
//!  | u16    | u16    | u32 (<= 4 MiB+) | len bytes          | u64 xxh3 of   |
//!  |        |        |                 |                    | bytes 0..8+len|
//!  +--------+--------+-----------------+--------------------+---------------+
//! ```
//!
//! A record whose check does not match, whose type is unknown or whose
//! length is over its type's bound is refused: the receiver stops, answers
//! `NACK` if it still can, and never resumes the guest.
//!
//! Sender to receiver, in this order:
//!
//! ```text
//!  HEADER    magic "PERFPLUS" | version u16 (=1) | zero u16 | page_size u32 | page_count u64
//!  PAGES*    round u32 | count u32 (1..=1024) | count x page entry
//!            page entry: u64 (pfn in bits 0..52, kind in bits 60..64) then
//!              kind 0 ZERO   nothing
//!              kind 1 RAW    page_size bytes
//!              kind 2 DELTA  len u16 (< page_size) | len bytes (see `encode`;
//!                            0 bytes: unchanged since last sent)
//!  CPU_STATE blob (<= 16 MiB), once, after the guest is paused
//!  END       page_records u64 | digest u64
//!  COMMIT    (empty), only after ACK: "the guest is yours"
//!  ABORT     reason (UTF-8, <= 1024 bytes), any time: the sender gave up
//! ```
//!
//! Receiver to sender:
//!
//! ```text
//!  ACK       page_records u64 | digest u64: everything applied and verified
//!  NACK      reason (UTF-8, <= 1024 bytes): refused, nothing will resume here
//!  RESUMED   (empty), after COMMIT: the guest runs at the receiver
//! ```
//!
//! The digest is a wrapping sum over page records of
//! [`page_digest`]`(pfn, page)`: the sender hashes the page it read, the
//! receiver the page it holds after applying the record. Equal sums (and
//! counts) mean every record arrived and every delta rebuilt the sender's
//! page, with no per-page state and no pass over memory inside the downtime.
//! That the *set* of pages sent is complete is the dirty log's job, checked
//! by the tests that compare memories.
//!
//! Versioning: the header carries the version; a receiver refuses any other
//! version with a clear error. New record types get new numbers; a receiver
//! refuses unknown types (no optional records in version 1).

#![forbid(unsafe_code)]

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, Xxh3};

use super::encode::{DecodeError, Encoding};
use crate::backend::Pfn;

/// Stream format version written and accepted.
pub const VERSION: u16 = 1;
/// The header magic.
pub const MAGIC: [u8; 8] = *b"PERFPLUS";
/// Bytes of framing around each record's payload.
pub const FRAME_BYTES: usize = 16;
/// Bytes of the HEADER record, framing included (it is always first).
pub const HEADER_RECORD_BYTES: usize = FRAME_BYTES + 24;
/// Bytes of framing per page entry (the pfn/kind word).
pub const PAGE_ENTRY_BYTES: usize = 8;
/// Most pages in one batch.
pub const MAX_BATCH_PAGES: usize = 1024;
/// Largest page-batch payload accepted.
pub const MAX_BATCH_PAYLOAD: usize = 4 * 1024 * 1024 + 64 * 1024;
/// Largest CPU/device state blob accepted.
pub const MAX_CPU_STATE: usize = 16 * 1024 * 1024;
/// Largest reason text accepted.
pub const MAX_REASON: usize = 1024;
/// Smallest and largest page sizes accepted.
pub const PAGE_SIZE_RANGE: std::ops::RangeInclusive<usize> = 512..=65536;
/// Largest page count accepted (2^52 pages).
pub const MAX_PAGE_COUNT: u64 = 1 << 52;

const PFN_MASK: u64 = (1 << 52) - 1;

/// Record type numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RecordType {
    /// Stream header.
    Header = 1,
    /// A batch of pages.
    Pages = 2,
    /// CPU/device state.
    CpuState = 3,
    /// End of the stream with the digest.
    End = 4,
    /// The sender hands the guest over.
    Commit = 5,
    /// The sender gave up.
    Abort = 6,
    /// Receiver: applied and verified.
    Ack = 16,
    /// Receiver: refused.
    Nack = 17,
    /// Receiver: the guest runs here.
    Resumed = 18,
}

impl RecordType {
    fn from_u16(value: u16) -> Option<Self> {
        Some(match value {
            1 => Self::Header,
            2 => Self::Pages,
            3 => Self::CpuState,
            4 => Self::End,
            5 => Self::Commit,
            6 => Self::Abort,
            16 => Self::Ack,
            17 => Self::Nack,
            18 => Self::Resumed,
            _ => return None,
        })
    }

    /// Largest payload this type may carry.
    fn max_payload(self) -> usize {
        match self {
            Self::Header => 24,
            Self::Pages => MAX_BATCH_PAYLOAD,
            Self::CpuState => MAX_CPU_STATE,
            Self::End | Self::Ack => 16,
            Self::Commit | Self::Resumed => 0,
            Self::Abort | Self::Nack => MAX_REASON,
        }
    }
}

/// A malformed or unexpected stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A record's check word does not match its bytes (corruption).
    #[error("record {index} (type {kind}) fails its integrity check: the stream is corrupt")]
    BadCheck {
        /// Records decoded before this one.
        index: u64,
        /// Its type number.
        kind: u16,
    },
    /// An unknown record type.
    #[error("record {index} has unknown type {kind}")]
    UnknownType {
        /// Records decoded before this one.
        index: u64,
        /// The type number.
        kind: u16,
    },
    /// A record longer than its type allows.
    #[error("record {index} ({kind:?}) is {len} bytes, at most {max} allowed")]
    TooLong {
        /// Records decoded before this one.
        index: u64,
        /// Its type.
        kind: RecordType,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The stream ended inside a record or before its end.
    #[error("the stream ended early ({what})")]
    Truncated {
        /// Where.
        what: &'static str,
    },
    /// The header does not start with the magic.
    #[error("not a perfplus migration stream (bad magic)")]
    BadMagic,
    /// A version this build does not speak.
    #[error("stream version {0} is not supported (this build speaks version {VERSION})")]
    UnsupportedVersion(u16),
    /// A record whose contents break the format.
    #[error("malformed {kind:?} record: {what}")]
    Malformed {
        /// Its type.
        kind: RecordType,
        /// What is wrong.
        what: String,
    },
    /// A delta that does not decode.
    #[error("delta for page {pfn} does not decode: {source}")]
    Delta {
        /// The page.
        pfn: Pfn,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A record that is valid but not allowed at this point.
    #[error("unexpected {got:?} record {when}")]
    Unexpected {
        /// What came.
        got: RecordType,
        /// In which state.
        when: &'static str,
    },
}

/// The stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// Bytes per page.
    pub page_size: usize,
    /// Pages in the guest.
    pub page_count: u64,
}

/// The end record and the acknowledgement: how many page records, and the
/// digest over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamDigest {
    /// Page records.
    pub page_records: u64,
    /// Wrapping sum of [`page_digest`] over them.
    pub digest: u64,
}

impl StreamDigest {
    /// Add one page record.
    pub fn add(&mut self, pfn: Pfn, page: &[u8]) {
        self.page_records += 1;
        self.digest = self.digest.wrapping_add(page_digest(pfn, page));
    }
}

/// The digest of one page record: a 64-bit hash of the page seeded with its
/// number.
pub fn page_digest(pfn: Pfn, page: &[u8]) -> u64 {
    xxh3_64_with_seed(page, pfn)
}

/// One page in a decoded batch: its number, encoding and payload range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEntry {
    /// The page.
    pub pfn: Pfn,
    /// How it was encoded.
    pub encoding: Encoding,
    /// Offset of its payload in the record payload.
    pub offset: usize,
    /// Length of its payload.
    pub len: usize,
}

/// A decoded page batch, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBatch {
    /// The round that sent it.
    pub round: u32,
    /// Its pages.
    pub entries: Vec<PageEntry>,
    /// The record payload.
    payload: Vec<u8>,
}

impl PageBatch {
    /// The payload bytes of `entry`.
    pub fn data(&self, entry: &PageEntry) -> &[u8] {
        &self.payload[entry.offset..entry.offset + entry.len]
    }
}

/// A decoded page batch still in the decoder's buffer: what a receiver
/// applies without copying the pages out first. Valid until the decoder
/// is fed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView<'a> {
    /// The round that sent it.
    pub round: u32,
    /// Its pages.
    pub entries: &'a [PageEntry],
    payload: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// The payload bytes of `entry`.
    pub fn data(&self, entry: &PageEntry) -> &'a [u8] {
        &self.payload[entry.offset..entry.offset + entry.len]
    }

    /// An owned copy.
    pub fn to_batch(&self) -> PageBatch {
        PageBatch {
            round: self.round,
            entries: self.entries.to_vec(),
            payload: self.payload.to_vec(),
        }
    }
}

/// A record as the decoder hands it out: page batches borrowed from its
/// buffer, everything else owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A page batch, borrowed.
    Pages(BatchView<'a>),
    /// Any other record (never [`Record::Pages`]).
    Other(Record),
}

impl Decoded<'_> {
    /// The record, owned.
    pub fn into_record(self) -> Record {
        match self {
            Self::Pages(view) => Record::Pages(view.to_batch()),
            Self::Other(record) => record,
        }
    }

    /// The record's type.
    pub fn kind(&self) -> RecordType {
        match self {
            Self::Pages(_) => RecordType::Pages,
            Self::Other(record) => record.kind(),
        }
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Stream header.
    Header(StreamHeader),
    /// A page batch.
    Pages(PageBatch),
    /// CPU/device state.
    CpuState(Vec<u8>),
    /// End of stream.
    End(StreamDigest),
    /// Hand-over.
    Commit,
    /// The sender gave up.
    Abort(String),
    /// Receiver verified.
    Ack(StreamDigest),
    /// Receiver refused.
    Nack(String),
    /// Receiver resumed the guest.
    Resumed,
}

impl Record {
    /// The record's type.
    pub fn kind(&self) -> RecordType {
        match self {
            Self::Header(_) => RecordType::Header,
            Self::Pages(_) => RecordType::Pages,
            Self::CpuState(_) => RecordType::CpuState,
            Self::End(_) => RecordType::End,
            Self::Commit => RecordType::Commit,
            Self::Abort(_) => RecordType::Abort,
            Self::Ack(_) => RecordType::Ack,
            Self::Nack(_) => RecordType::Nack,
            Self::Resumed => RecordType::Resumed,
        }
    }

    /// Append the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&(self.kind() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        match self {
            Self::Header(h) => {
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&VERSION.to_le_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&u32::try_from(h.page_size).unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&h.page_count.to_le_bytes());
            }
            Self::Pages(batch) => {
                out.extend_from_slice(&batch.round.to_le_bytes());
                let count = u32::try_from(batch.entries.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&count.to_le_bytes());
                for e in &batch.entries {
                    put_entry(out, e.pfn, e.encoding, batch.data(e));
                }
            }
            Self::CpuState(blob) => out.extend_from_slice(blob),
            Self::End(d) | Self::Ack(d) => {
                out.extend_from_slice(&d.page_records.to_le_bytes());
                out.extend_from_slice(&d.digest.to_le_bytes());
            }
            Self::Commit | Self::Resumed => {}
            Self::Abort(reason) | Self::Nack(reason) => {
                out.extend_from_slice(truncate_reason(reason).as_bytes());
            }
        }
        finish_frame(out, start);
    }
}

/// Cut a reason to [`MAX_REASON`] bytes at a character boundary.
fn truncate_reason(reason: &str) -> &str {
    let mut cut = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    &reason[..cut]
}

fn put_entry(out: &mut Vec<u8>, pfn: Pfn, encoding: Encoding, data: &[u8]) {
    let kind: u64 = match encoding {
        Encoding::Zero => 0,
        Encoding::Raw => 1,
        Encoding::Delta => 2,
    };
    out.extend_from_slice(&((pfn & PFN_MASK) | (kind << 60)).to_le_bytes());
    match encoding {
        Encoding::Zero => {}
        Encoding::Raw => out.extend_from_slice(data),
        Encoding::Delta => {
            out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_le_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// Write the length and the check word of the record starting at `start`.
fn finish_frame(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start - 8;
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    out[start + 4..start + 8].copy_from_slice(&len32.to_le_bytes());
    let check = xxh3_64(&out[start..]);
    out.extend_from_slice(&check.to_le_bytes());
}

/// Builds one `PAGES` record page by page. Raw pages may stay where they
/// are ([`push_raw`](Self::push_raw): the page's index in the caller's page
/// buffer): [`finish`](Self::finish) returns the record as pieces, the
/// framing and encoded pages from the writer's buffer and the raw pages
/// from the caller's, for one gathering write, so the sender copies no
/// page into the record (the check is computed over the pieces).
#[derive(Debug)]
pub struct BatchWriter {
    /// The record without its raw pages (and, once finished, its check).
    buf: Vec<u8>,
    /// Raw pages not in `buf`: (where in `buf` they go, index in the
    /// caller's pages).
    raw: Vec<(usize, usize)>,
    count: u32,
    page_size: usize,
}

impl BatchWriter {
    /// A writer for pages of `page_size` bytes.
    pub fn new(page_size: usize) -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            raw: Vec::with_capacity(MAX_BATCH_PAGES),
            count: 0,
            page_size,
        }
    }

    /// Start a batch for `round`.
    pub fn start(&mut self, round: u32) {
        self.buf.clear();
        self.raw.clear();
        self.count = 0;
        self.buf
            .extend_from_slice(&(RecordType::Pages as u16).to_le_bytes());
        self.buf.extend_from_slice(&[0; 6]);
        self.buf.extend_from_slice(&round.to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// The payload length so far.
    fn payload_len(&self) -> usize {
        self.buf.len() - 8 + self.raw.len() * self.page_size
    }

    /// Whether another page of any encoding fits.
    pub fn has_room(&self) -> bool {
        (self.count as usize) < MAX_BATCH_PAGES
            && self.payload_len() + PAGE_ENTRY_BYTES + self.page_size <= MAX_BATCH_PAYLOAD
    }

    /// Pages in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch holds no page.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Add a page with its encoded payload (copied into the record).
    pub fn push(&mut self, pfn: Pfn, encoding: Encoding, data: &[u8]) {
        put_entry(&mut self.buf, pfn, encoding, data);
        self.count += 1;
    }

    /// Add raw page number `index` of the page buffer that will be given
    /// to [`finish`](Self::finish), without copying it.
    pub fn push_raw(&mut self, pfn: Pfn, index: usize) {
        put_entry(&mut self.buf, pfn, Encoding::Raw, &[]);
        self.raw.push((self.buf.len(), index));
        self.count += 1;
    }

    /// Close the record and return it as pieces to write in order (valid
    /// until the next `start`); `pages` holds the pages given to
    /// [`push_raw`](Self::push_raw) by index. Panics if an index is past
    /// `pages`.
    pub fn finish<'a>(&'a mut self, pages: &'a [u8]) -> Vec<&'a [u8]> {
        self.buf[12..16].copy_from_slice(&self.count.to_le_bytes());
        let len32 = u32::try_from(self.payload_len()).unwrap_or(u32::MAX);
        self.buf[4..8].copy_from_slice(&len32.to_le_bytes());
        let body = self.buf.len();
        let size = self.page_size;
        let mut check = Xxh3::new();
        let mut at = 0;
        for &(cut, index) in &self.raw {
            check.update(&self.buf[at..cut]);
            check.update(&pages[index * size..(index + 1) * size]);
            at = cut;
        }
        check.update(&self.buf[at..body]);
        self.buf.extend_from_slice(&check.digest().to_le_bytes());
        let buf = &self.buf;
        let mut parts = Vec::with_capacity(2 * self.raw.len() + 1);
        let mut at = 0;
        for &(cut, index) in &self.raw {
            parts.push(&buf[at..cut]);
            parts.push(&pages[index * size..(index + 1) * size]);
            at = cut;
        }
        parts.push(&buf[at..]);
        parts
    }
}

/// Bytes read at a time while the next record's length is not known yet.
const READ_CHUNK: usize = 256 * 1024;

/// Incremental, bounded record decoder: feed bytes as they arrive
/// ([`push`](Self::push), or [`read_from`](Self::read_from) straight from a
/// socket), take records out ([`next_decoded`](Self::next_decoded) borrows page batches
/// from the buffer, [`next_record`](Self::next_record) copies them).
/// Reading from a source, it holds at most one record and one read.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    /// Storage; bytes `start..end` are received and not yet decoded.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    page_size: Option<usize>,
    page_count: u64,
    records: u64,
    entries: Vec<PageEntry>,
}

impl RecordDecoder {
    /// A decoder that learns the page size from the stream header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make room for `more` bytes after `end`, moving what is pending to
    /// the front only when the space behind it is short.
    fn reserve(&mut self, more: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= more {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < more {
            self.buf.resize(self.end + more, 0);
        }
    }

    /// Add received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Read once from `source` straight into the buffer: at most the rest
    /// of the record under way (so a record is never moved), or a chunk
    /// while its length is unknown. Returns the bytes read (0: end of
    /// stream). Decode what is complete before reading again.
    pub fn read_from(&mut self, source: &mut impl std::io::Read) -> std::io::Result<usize> {
        let want = match self.frame_len() {
            Some(total) if total > self.pending() => total - self.pending(),
            _ => READ_CHUNK,
        };
        self.reserve(want);
        let n = source.read(&mut self.buf[self.end..self.end + want])?;
        self.end += n.min(want);
        Ok(n)
    }

    /// The whole length of the pending record, once its frame header is
    /// in and plausible.
    fn frame_len(&self) -> Option<usize> {
        let avail = &self.buf[self.start..self.end];
        let kind = RecordType::from_u16(u16::from_le_bytes([*avail.first()?, *avail.get(1)?]))?;
        let len = u32::from_le_bytes(avail.get(4..8)?.try_into().ok()?) as usize;
        (len <= kind.max_payload()).then_some(FRAME_BYTES + len)
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Decode the next complete record, if there is one, copying a page
    /// batch out of the buffer.
    pub fn next_record(&mut self) -> Result<Option<Record>, StreamError> {
        Ok(self.next_decoded()?.map(Decoded::into_record))
    }

    /// Decode the next complete record, if there is one; a page batch
    /// stays in the buffer.
    pub fn next_decoded(&mut self) -> Result<Option<Decoded<'_>>, StreamError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 8 {
            return Ok(None);
        }
        let kind_raw = u16::from_le_bytes([avail[0], avail[1]]);
        let index = self.records;
        let kind = RecordType::from_u16(kind_raw).ok_or(StreamError::UnknownType {
            index,
            kind: kind_raw,
        })?;
        if avail[2..4] != [0, 0] {
            return Err(StreamError::Malformed {
                kind,
                what: "reserved header bytes are not zero".into(),
            });
        }
        let len = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]) as usize;
        if len > kind.max_payload() {
            return Err(StreamError::TooLong {
                index,
                kind,
                len,
                max: kind.max_payload(),
            });
        }
        if avail.len() < 8 + len + 8 {
            return Ok(None);
        }
        let body = &avail[..8 + len];
        let check_bytes: [u8; 8] = avail[8 + len..16 + len]
            .try_into()
            .map_err(|_| StreamError::Truncated { what: "check" })?;
        if xxh3_64(body) != u64::from_le_bytes(check_bytes) {
            return Err(StreamError::BadCheck {
                index,
                kind: kind_raw,
            });
        }
        let payload = self.start + 8..self.start + 8 + len;
        let Self {
            buf,
            page_size,
            page_count,
            entries,
            ..
        } = self;
        let decoded = decode(kind, &buf[payload], page_size, page_count, entries)?;
        self.start += 16 + len;
        self.records += 1;
        Ok(Some(decoded))
    }
}

/// A record from its payload (a checked frame); the header sets the
/// geometry the page batches are checked against.
fn decode<'a>(
    kind: RecordType,
    p: &'a [u8],
    geometry_page_size: &mut Option<usize>,
    geometry_page_count: &mut u64,
    entries: &'a mut Vec<PageEntry>,
) -> Result<Decoded<'a>, StreamError> {
    let malformed = |what: &str| StreamError::Malformed {
        kind,
        what: what.to_string(),
    };
    Ok(Decoded::Other(match kind {
        RecordType::Header => {
            if p.len() != 24 {
                return Err(malformed("header is not 24 bytes"));
            }
            if p[..8] != MAGIC {
                return Err(StreamError::BadMagic);
            }
            let version = u16::from_le_bytes([p[8], p[9]]);
            if version != VERSION {
                return Err(StreamError::UnsupportedVersion(version));
            }
            let page_size = u32::from_le_bytes([p[12], p[13], p[14], p[15]]) as usize;
            let page_count = u64::from_le_bytes(le8(&p[16..24]));
            if !PAGE_SIZE_RANGE.contains(&page_size) || !page_size.is_power_of_two() {
                return Err(malformed(&format!("page size {page_size}")));
            }
            if page_count == 0 || page_count > MAX_PAGE_COUNT {
                return Err(malformed(&format!("page count {page_count}")));
            }
            if geometry_page_size.is_some() {
                return Err(StreamError::Unexpected {
                    got: kind,
                    when: "after the stream header",
                });
            }
            *geometry_page_size = Some(page_size);
            *geometry_page_count = page_count;
            Record::Header(StreamHeader {
                page_size,
                page_count,
            })
        }
        RecordType::Pages => {
            let page_size = geometry_page_size.ok_or(StreamError::Unexpected {
                got: kind,
                when: "before the stream header",
            })?;
            let round = parse_batch(p, page_size, *geometry_page_count, entries)?;
            return Ok(Decoded::Pages(BatchView {
                round,
                entries,
                payload: p,
            }));
        }
        RecordType::CpuState => Record::CpuState(p.to_vec()),
        RecordType::End | RecordType::Ack => {
            if p.len() != 16 {
                return Err(malformed("digest is not 16 bytes"));
            }
            let d = StreamDigest {
                page_records: u64::from_le_bytes(le8(&p[..8])),
                digest: u64::from_le_bytes(le8(&p[8..])),
            };
            if kind == RecordType::End {
                Record::End(d)
            } else {
                Record::Ack(d)
            }
        }
        RecordType::Commit => Record::Commit,
        RecordType::Resumed => Record::Resumed,
        RecordType::Abort | RecordType::Nack => {
            let text = std::str::from_utf8(p)
                .map_err(|_| malformed("reason is not UTF-8"))?
                .to_string();
            if kind == RecordType::Abort {
                Record::Abort(text)
            } else {
                Record::Nack(text)
            }
        }
    }))
}

fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

/// The round and entries of a `PAGES` payload.
fn parse_batch(
    p: &[u8],
    page_size: usize,
    page_count: u64,
    entries: &mut Vec<PageEntry>,
) -> Result<u32, StreamError> {
    let malformed = |what: String| StreamError::Malformed {
        kind: RecordType::Pages,
        what,
    };
    if p.len() < 8 {
        return Err(malformed("batch header is short".into()));
    }
    let round = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    let count = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) as usize;
    if count == 0 || count > MAX_BATCH_PAGES {
        return Err(malformed(format!("{count} pages in a batch")));
    }
    entries.clear();
    let mut at = 8;
    for i in 0..count {
        let word = p
            .get(at..at + 8)
            .ok_or_else(|| malformed(format!("entry {i} of {count} is missing")))?;
        let word = u64::from_le_bytes(le8(word));
        at += 8;
        let pfn = word & PFN_MASK;
        if word & !PFN_MASK & !(0xf << 60) != 0 {
            return Err(malformed(format!("entry {i}: reserved bits set")));
        }
        if pfn >= page_count {
            return Err(malformed(format!(
                "entry {i}: page {pfn} beyond the guest's {page_count} pages"
            )));
        }
        let (encoding, len) = match word >> 60 {
            0 => (Encoding::Zero, 0),
            1 => (Encoding::Raw, page_size),
            2 => {
                let l = p
                    .get(at..at + 2)
                    .ok_or_else(|| malformed(format!("entry {i}: delta length missing")))?;
                at += 2;
                let len = usize::from(u16::from_le_bytes([l[0], l[1]]));
                if len >= page_size {
                    return Err(malformed(format!("entry {i}: delta of {len} bytes")));
                }
                (Encoding::Delta, len)
            }
            k => return Err(malformed(format!("entry {i}: unknown page kind {k}"))),
        };
        if at + len > p.len() {
            return Err(malformed(format!(
                "entry {i}: payload runs past the record"
            )));
        }
        entries.push(PageEntry {
            pfn,
            encoding,
            offset: at,
            len,
        });
        at += len;
    }
    if at != p.len() {
        return Err(malformed(format!(
            "{} trailing bytes after the last entry",
            p.len() - at
        )));
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, StreamError> {
        let mut d = RecordDecoder::new();
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(r) = d.next_record()? {
            out.push(r);
        }
        if d.pending() > 0 {
            return Err(StreamError::Truncated { what: "test" });
        }
        Ok(out)
    }

    fn batch(round: u32, pages: &[(Pfn, Encoding, Vec<u8>)], page_size: usize) -> Vec<u8> {
        let mut w = BatchWriter::new(page_size);
        w.start(round);
        for (pfn, e, data) in pages {
            w.push(*pfn, *e, data);
        }
        w.finish(&[]).concat()
    }

    #[test]
    fn a_whole_stream_round_trips() {
        let header = StreamHeader {
            page_size: 4096,
            page_count: 100,
        };
        let mut bytes = Vec::new();
        Record::Header(header).encode(&mut bytes);
        assert_eq!(bytes.len(), HEADER_RECORD_BYTES);
        bytes.extend(batch(
            0,
            &[
                (1, Encoding::Raw, vec![7; 4096]),
                (2, Encoding::Zero, vec![]),
                (99, Encoding::Delta, vec![0, 1, 5]),
            ],
            4096,
        ));
        Record::CpuState(vec![1, 2, 3]).encode(&mut bytes);
        let digest = StreamDigest {
            page_records: 3,
            digest: 42,
        };
        Record::End(digest).encode(&mut bytes);
        Record::Commit.encode(&mut bytes);
        let records = decode_all(&bytes).unwrap();
        assert_eq!(records[0], Record::Header(header));
        let Record::Pages(b) = &records[1] else {
            panic!("pages expected")
        };
        assert_eq!(b.entries.len(), 3);
        assert_eq!(b.entries[0].pfn, 1);
        assert_eq!(b.data(&b.entries[0]), &[7; 4096][..]);
        assert_eq!(b.entries[1].encoding, Encoding::Zero);
        assert_eq!(b.data(&b.entries[2]), &[0, 1, 5]);
        assert_eq!(records[2], Record::CpuState(vec![1, 2, 3]));
        assert_eq!(records[3], Record::End(digest));
        assert_eq!(records[4], Record::Commit);
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_check() {
        let mut bytes = Vec::new();
        Record::End(StreamDigest::default()).encode(&mut bytes);
        bytes[10] ^= 1;
        assert!(matches!(
            decode_all(&bytes),
            Err(StreamError::BadCheck { .. })
        ));
    }

    #[test]
    fn pages_before_the_header_and_pfns_past_the_guest_are_refused() {
        let b = batch(0, &[(5, Encoding::Zero, vec![])], 4096);
        assert!(matches!(
            decode_all(&b),
            Err(StreamError::Unexpected { .. })
        ));
        let mut bytes = Vec::new();
        Record::Header(StreamHeader {
            page_size: 4096,
            page_count: 5,
        })
        .encode(&mut bytes);
        bytes.extend(b);
        assert!(matches!(
            decode_all(&bytes),
            Err(StreamError::Malformed { .. })
        ));
    }

    #[test]
    fn an_oversized_length_is_refused_before_buffering() {
        let mut bytes = vec![3, 0, 0, 0];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut d = RecordDecoder::new();
        d.push(&bytes);
        assert!(matches!(d.next_record(), Err(StreamError::TooLong { .. })));
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let mut bytes = Vec::new();
        Record::Header(StreamHeader {
            page_size: 4096,
            page_count: 1,
        })
        .encode(&mut bytes);
        bytes[16] = 9;
        // Re-seal so only the version is wrong.
        let len = bytes.len();
        let check = xxh3_64(&bytes[..len - 8]);
        bytes[len - 8..].copy_from_slice(&check.to_le_bytes());
        assert_eq!(
            decode_all(&bytes).unwrap_err(),
            StreamError::UnsupportedVersion(9)
        );
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Record::End(StreamDigest {
                page_records: a,
                digest: b
            })),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Record::Ack(StreamDigest {
                page_records: a,
                digest: b
            })),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Record::CpuState),
            "[a-z ]{0,40}".prop_map(Record::Abort),
            "[a-z ]{0,40}".prop_map(Record::Nack),
            Just(Record::Commit),
            Just(Record::Resumed),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip_in_any_split(
            records in proptest::collection::vec(arb_record(), 0..8),
            pages in proptest::collection::vec((0u64..64, 0u8..3, any::<u8>()), 1..20),
            split in 1usize..97,
        ) {
            let mut bytes = Vec::new();
            Record::Header(StreamHeader { page_size: 512, page_count: 64 }).encode(&mut bytes);
            let pages: Vec<(Pfn, Encoding, Vec<u8>)> = pages
                .into_iter()
                .map(|(pfn, k, v)| match k {
                    0 => (pfn, Encoding::Zero, vec![]),
                    1 => (pfn, Encoding::Raw, vec![v; 512]),
                    _ => (pfn, Encoding::Delta, vec![0, 1, v]),
                })
                .collect();
            bytes.extend(batch(3, &pages, 512));
            for r in &records {
                r.encode(&mut bytes);
            }
            let mut d = RecordDecoder::new();
            let mut out = Vec::new();
            for chunk in bytes.chunks(split) {
                d.push(chunk);
                while let Some(r) = d.next_record().unwrap() {
                    out.push(r);
                }
            }
            prop_assert_eq!(d.pending(), 0);
            prop_assert_eq!(out.len(), records.len() + 2);
            let Record::Pages(b) = &out[1] else { panic!("pages expected") };
            prop_assert_eq!(b.entries.len(), pages.len());
            for (e, (pfn, enc, data)) in b.entries.iter().zip(&pages) {
                prop_assert_eq!(e.pfn, *pfn);
                prop_assert_eq!(e.encoding, *enc);
                prop_assert_eq!(b.data(e), &data[..]);
            }
            prop_assert_eq!(&out[2..], &records[..]);
        }

        #[test]
        fn records_read_from_a_source_match_records_pushed(
            records in proptest::collection::vec(arb_record(), 0..6),
            batches in proptest::collection::vec(
                proptest::collection::vec((0u64..64, 0u8..3, any::<u8>()), 1..12),
                1..4,
            ),
            reads in proptest::collection::vec(1usize..3000, 1..40),
        ) {
            // The same stream, pushed whole and read from a source whose
            // reads end anywhere (mid-frame, mid-page, across records).
            let mut bytes = Vec::new();
            Record::Header(StreamHeader { page_size: 512, page_count: 64 }).encode(&mut bytes);
            for (round, pages) in batches.iter().enumerate() {
                let pages: Vec<(Pfn, Encoding, Vec<u8>)> = pages
                    .iter()
                    .map(|&(pfn, k, v)| match k {
                        0 => (pfn, Encoding::Zero, vec![]),
                        1 => (pfn, Encoding::Raw, vec![v; 512]),
                        _ => (pfn, Encoding::Delta, vec![0, 1, v]),
                    })
                    .collect();
                bytes.extend(batch(u32::try_from(round).unwrap_or(0), &pages, 512));
                if let Some(r) = records.get(round) {
                    r.encode(&mut bytes);
                }
            }
            let expected = decode_all(&bytes).unwrap();
            struct Chunked<'a> { bytes: &'a [u8], reads: Vec<usize>, at: usize }
            impl std::io::Read for Chunked<'_> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    let step = self.reads[self.at % self.reads.len()];
                    self.at += 1;
                    let n = step.min(buf.len()).min(self.bytes.len());
                    buf[..n].copy_from_slice(&self.bytes[..n]);
                    self.bytes = &self.bytes[n..];
                    Ok(n)
                }
            }
            let mut source = Chunked { bytes: &bytes, reads, at: 0 };
            let mut d = RecordDecoder::new();
            let mut out = Vec::new();
            loop {
                while let Some(r) = d.next_record().unwrap() {
                    out.push(r);
                }
                if d.read_from(&mut source).unwrap() == 0 {
                    break;
                }
            }
            prop_assert_eq!(d.pending(), 0);
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn garbage_read_from_a_source_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..5000),
        ) {
            let mut source = &bytes[..];
            let mut d = RecordDecoder::new();
            while d.read_from(&mut source).unwrap() > 0 {
                while let Ok(Some(_)) = d.next_record() {}
            }
        }

        #[test]
        fn a_gathered_batch_is_the_same_record_as_one_built_inline(
            pages in proptest::collection::vec((0u64..64, 0u8..3, any::<u8>()), 1..40),
        ) {
            // Raw pages left in the caller's buffer (by index) and copied in
            // give the same bytes, check included.
            let size = 512;
            let buffer: Vec<u8> = pages
                .iter()
                .flat_map(|&(_, _, v)| std::iter::repeat_n(v, size))
                .collect();
            let mut inline = BatchWriter::new(size);
            let mut gathered = BatchWriter::new(size);
            inline.start(7);
            gathered.start(7);
            for (i, &(pfn, k, v)) in pages.iter().enumerate() {
                let (encoding, data) = match k {
                    0 => (Encoding::Zero, vec![]),
                    1 => (Encoding::Raw, vec![v; size]),
                    _ => (Encoding::Delta, vec![0, 1, v]),
                };
                inline.push(pfn, encoding, &data);
                if encoding == Encoding::Raw {
                    gathered.push_raw(pfn, i);
                } else {
                    gathered.push(pfn, encoding, &data);
                }
            }
            let a = inline.finish(&[]).concat();
            let b = gathered.finish(&buffer).concat();
            prop_assert_eq!(&a, &b);
            let mut bytes = Vec::new();
            Record::Header(StreamHeader { page_size: size, page_count: 64 }).encode(&mut bytes);
            bytes.extend(b);
            prop_assert!(decode_all(&bytes).is_ok());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut d = RecordDecoder::new();
            d.push(&bytes);
            while let Ok(Some(_)) = d.next_record() {}
        }

        #[test]
        fn corrupting_any_byte_is_an_error(at in 0usize..200, bit in 0u8..8) {
            let mut bytes = Vec::new();
            Record::Header(StreamHeader { page_size: 512, page_count: 64 }).encode(&mut bytes);
            bytes.extend(batch(1, &[(3, Encoding::Delta, vec![0, 2, 9, 9])], 512));
            Record::End(StreamDigest { page_records: 1, digest: 5 }).encode(&mut bytes);
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let result = decode_all(&bytes);
            prop_assert!(result.is_err(), "flip at {} went unnoticed", at);
        }
    }
}
