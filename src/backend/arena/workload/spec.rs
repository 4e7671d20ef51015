//! [`GuestSpec`]: what a guest process runs, as `key=value` words. The same
//! words are the guest program's command line and the state blob that
//! migrates with the guest (its "device configuration"), so a destination
//! starts exactly the workload the source ran.
//!
//! ```text
//! perfplus-arena-guest/1 workload=kv pages=262144 seed=1 fill_pct=50 keys=1048576 listen=127.0.0.1:7000
//! ```
//!
//! Parsing is strict: unknown keys, repeated keys, values out of range and
//! words over [`MAX_WORD_BYTES`] are errors naming the word.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The blob's first word (format and version).
pub const BLOB_MAGIC: &str = "perfplus-arena-guest/1";
/// Longest word accepted.
pub const MAX_WORD_BYTES: usize = 4096;
/// Most words accepted.
const MAX_WORDS: usize = 32;

/// Which workload a guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// Key-value service: a hash table in the arena served over TCP.
    Kv,
    /// Sequential rewriter: rewrites whole pages front to back, forever.
    Muncher,
    /// 8-byte counter increments at random places.
    Sparse,
    /// Mostly idle: a clock word ticks (100 times a second by default).
    Idle,
}

impl WorkloadKind {
    /// Every workload.
    pub const ALL: [WorkloadKind; 4] = [Self::Kv, Self::Muncher, Self::Sparse, Self::Idle];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kv => "kv",
            Self::Muncher => "muncher",
            Self::Sparse => "sparse",
            Self::Idle => "idle",
        }
    }

    /// Code in the arena header.
    pub fn code(self) -> u64 {
        match self {
            Self::Kv => 1,
            Self::Muncher => 2,
            Self::Sparse => 3,
            Self::Idle => 4,
        }
    }

    /// From a header code.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// From a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A guest's workload and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// The workload.
    pub workload: WorkloadKind,
    /// Arena size in pages.
    pub pages: u64,
    /// Seed of the workload's own randomness and of the background content.
    pub seed: u64,
    /// Percent of the background pages (those the workload's structures do
    /// not use) filled with non-zero content at start; the rest stay zero.
    pub fill_pct: u8,
    /// `kv`: number of keys, all present from the start with value 0
    /// (default: a table of about an eighth of the arena).
    pub keys: u64,
    /// `muncher`: pages rewritten per second, `sparse`: updates per second
    /// (for both, 0 means as fast as the CPU goes); `idle`: clock ticks per
    /// second (0: a guest that writes nothing by itself).
    pub rate_per_s: u64,
    /// `muncher`/`sparse`: percent of the arena they write over.
    pub area_pct: u8,
    /// `kv`: the TCP address to serve on (port 0: any free port).
    pub listen: Option<SocketAddr>,
    /// `kv`: a directory standing in for shared storage; each write is
    /// logged there and synced before it is acknowledged, and a guest that
    /// starts with an existing log replays it.
    pub wal_dir: Option<PathBuf>,
}

/// A spec word that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad guest spec word {word:?}: {reason}")]
pub struct SpecError {
    /// The word (truncated to 80 bytes).
    pub word: String,
    /// Why.
    pub reason: String,
}

fn bad(word: &str, reason: impl Into<String>) -> SpecError {
    let mut word = word.to_owned();
    if word.len() > 80 {
        let mut cut = 80;
        while !word.is_char_boundary(cut) {
            cut -= 1;
        }
        word.truncate(cut);
    }
    SpecError {
        word,
        reason: reason.into(),
    }
}

impl GuestSpec {
    /// A spec with defaults for `workload` over `pages` pages.
    pub fn new(workload: WorkloadKind, pages: u64) -> Self {
        Self {
            workload,
            pages,
            seed: 1,
            fill_pct: 50,
            // A table of about an eighth of the arena.
            keys: pages.saturating_mul(4).clamp(1, 1 << 24),
            rate_per_s: match workload {
                WorkloadKind::Muncher | WorkloadKind::Kv => 0,
                WorkloadKind::Sparse => 20_000,
                WorkloadKind::Idle => 100,
            },
            area_pct: 100,
            listen: None,
            wal_dir: None,
        }
    }

    /// Parse the words of a command line or blob (without the magic word).
    pub fn parse_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Self, SpecError> {
        let mut workload = None;
        let mut pages = None;
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for (i, word) in words.into_iter().enumerate() {
            if i >= MAX_WORDS {
                return Err(bad(word, format!("more than {MAX_WORDS} words")));
            }
            if word.len() > MAX_WORD_BYTES {
                return Err(bad(word, format!("longer than {MAX_WORD_BYTES} bytes")));
            }
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(word, "expected key=value"))?;
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(bad(word, "given twice"));
            }
            match key {
                "workload" => {
                    workload = Some(WorkloadKind::from_name(value).ok_or_else(|| {
                        bad(word, "workload must be one of kv, muncher, sparse, idle")
                    })?);
                }
                "pages" => pages = Some(parse_u64(word, value, 1, 1 << 36)?),
                _ => {}
            }
            fields.push((key, value));
        }
        let workload = workload.ok_or_else(|| bad("", "workload= is required"))?;
        let pages = pages.ok_or_else(|| bad("", "pages= is required"))?;
        let mut spec = Self::new(workload, pages);
        for (key, value) in fields {
            let word = format!("{key}={value}");
            let word = word.as_str();
            match key {
                "workload" | "pages" => {}
                "seed" => spec.seed = parse_u64(word, value, 0, u64::MAX)?,
                "fill_pct" => spec.fill_pct = parse_pct(word, value)?,
                "keys" => spec.keys = parse_u64(word, value, 1, 1 << 32)?,
                "rate" => spec.rate_per_s = parse_u64(word, value, 0, 1 << 32)?,
                "area_pct" => {
                    spec.area_pct = parse_pct(word, value)?;
                    if spec.area_pct == 0 {
                        return Err(bad(word, "must be 1..=100"));
                    }
                }
                "listen" => {
                    spec.listen = Some(
                        value
                            .parse()
                            .map_err(|_| bad(word, "expected an address like 127.0.0.1:7000"))?,
                    );
                }
                "wal" => {
                    if value.is_empty() || value.chars().any(char::is_whitespace) {
                        return Err(bad(word, "a non-empty path without whitespace"));
                    }
                    spec.wal_dir = Some(PathBuf::from(value));
                }
                _ => {
                    return Err(bad(
                        word,
                        "unknown key (known: workload pages seed fill_pct keys rate area_pct listen wal)",
                    ))
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Parse a state blob (`perfplus-arena-guest/1 key=value ...`).
    pub fn from_blob(blob: &[u8]) -> Result<Self, SpecError> {
        if blob.len() > MAX_WORDS * (MAX_WORD_BYTES + 1) {
            return Err(bad(
                "",
                format!("a blob of {} bytes is too long", blob.len()),
            ));
        }
        let text = std::str::from_utf8(blob).map_err(|_| bad("", "the blob is not UTF-8"))?;
        let mut words = text.split(' ');
        match words.next() {
            Some(BLOB_MAGIC) => Self::parse_words(words),
            Some(other) => Err(bad(other, format!("expected {BLOB_MAGIC}"))),
            None => Err(bad("", "empty blob")),
        }
    }

    /// The spec as command-line words.
    pub fn to_words(&self) -> Vec<String> {
        let mut words = vec![
            format!("workload={}", self.workload),
            format!("pages={}", self.pages),
            format!("seed={}", self.seed),
            format!("fill_pct={}", self.fill_pct),
            format!("keys={}", self.keys),
            format!("rate={}", self.rate_per_s),
            format!("area_pct={}", self.area_pct),
        ];
        if let Some(listen) = self.listen {
            words.push(format!("listen={listen}"));
        }
        if let Some(wal) = &self.wal_dir {
            words.push(format!("wal={}", wal.display()));
        }
        words
    }

    /// The spec as a state blob.
    pub fn to_blob(&self) -> Vec<u8> {
        let mut text = BLOB_MAGIC.to_owned();
        for w in self.to_words() {
            text.push(' ');
            text.push_str(&w);
        }
        text.into_bytes()
    }

    /// Cross-field checks (e.g. the key-value table fits in the arena).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.pages < 2 {
            return Err(bad(
                &format!("pages={}", self.pages),
                "an arena needs at least 2 pages",
            ));
        }
        if self.workload == WorkloadKind::Kv {
            let table = super::kv::table_pages(self.keys);
            if table + 1 > self.pages {
                return Err(bad(
                    &format!("keys={}", self.keys),
                    format!(
                        "the table for {} keys needs {} pages, the arena has {}",
                        self.keys,
                        table + 1,
                        self.pages
                    ),
                ));
            }
            if self.listen.is_none() {
                return Err(bad("", "workload=kv needs listen=ADDR"));
            }
        }
        if let Some(wal) = &self.wal_dir {
            if wal
                .to_str()
                .is_none_or(|s| s.chars().any(char::is_whitespace))
            {
                return Err(bad("wal", "a UTF-8 path without whitespace"));
            }
        }
        Ok(())
    }
}

fn parse_u64(word: &str, value: &str, min: u64, max: u64) -> Result<u64, SpecError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(word, "expected a decimal number"));
    }
    let n: u64 = value.parse().map_err(|_| bad(word, "number too large"))?;
    if n < min || n > max {
        return Err(bad(word, format!("must be {min}..={max}")));
    }
    Ok(n)
}

fn parse_pct(word: &str, value: &str) -> Result<u8, SpecError> {
    let n = parse_u64(word, value, 0, 100)?;
    u8::try_from(n).map_err(|_| bad(word, "must be 0..=100"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_round_trips_through_its_blob() {
        let mut spec = GuestSpec::new(WorkloadKind::Kv, 4096);
        spec.listen = Some("127.0.0.1:7000".parse().unwrap());
        spec.wal_dir = Some("/tmp/wal".into());
        spec.keys = 1000;
        assert_eq!(GuestSpec::from_blob(&spec.to_blob()).unwrap(), spec);
    }

    #[test]
    fn unknown_repeated_and_out_of_range_words_are_refused_by_name() {
        let e = GuestSpec::parse_words(["workload=idle", "pages=10", "colour=red"]).unwrap_err();
        assert_eq!(e.word, "colour=red");
        let e = GuestSpec::parse_words(["workload=idle", "pages=10", "pages=11"]).unwrap_err();
        assert!(e.reason.contains("twice"), "{e}");
        let e = GuestSpec::parse_words(["workload=idle", "pages=10", "fill_pct=101"]).unwrap_err();
        assert_eq!(e.word, "fill_pct=101");
        let e = GuestSpec::parse_words([
            "workload=kv",
            "pages=10",
            "keys=100000",
            "listen=127.0.0.1:1",
        ])
        .unwrap_err();
        assert!(e.reason.contains("table"), "{e}");
        let e = GuestSpec::from_blob(b"qemu/1 workload=idle pages=10").unwrap_err();
        assert!(e.reason.contains(BLOB_MAGIC), "{e}");
    }

    proptest! {
        #[test]
        fn garbage_blobs_never_panic(blob in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = GuestSpec::from_blob(&blob);
        }

        #[test]
        fn any_valid_spec_round_trips(
            kind in 0_usize..4, pages in 2_u64..1_000_000, seed in any::<u64>(),
            fill in 0_u8..=100, rate in 0_u64..1_000_000, area in 1_u8..=100,
        ) {
            let workload = WorkloadKind::ALL[kind];
            let mut spec = GuestSpec::new(workload, pages);
            spec.seed = seed;
            spec.fill_pct = fill;
            spec.rate_per_s = rate;
            spec.area_pct = area;
            spec.keys = 1;
            if workload == WorkloadKind::Kv {
                spec.pages = spec.pages.max(4);
                spec.listen = Some("[::1]:9".parse().unwrap());
            }
            prop_assert_eq!(GuestSpec::from_blob(&spec.to_blob()).unwrap(), spec);
        }
    }
}
