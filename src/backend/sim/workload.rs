//! Workload files: what a simulated guest does, in TOML, so anyone can add
//! one without code.
//!
//! ```toml
//! name = "web"
//! memory_mib = 4096
//! zero_fraction = 0.3          # pages that start all-zero
//! switchover_fixed_ms = 20     # CPU/device state and resume cost
//!
//! [[writer]]
//! region = [0.10, 0.108]       # fractions of guest memory
//! rate_pages_per_s = 20000     # page writes per second
//! distribution = "zipf"        # uniform | zipf (needs zipf_s) | sequential
//! zipf_s = 0.99
//! bytes_per_write = 512        # bytes changed per write: 8 for a counter, 4096 for a full rewrite
//!
//! [[phase]]                    # optional: from at_s on, these writers replace the others
//! at_s = 20
//! [[phase.writer]]
//! region = [0.0, 0.5]
//! rate_pages_per_s = 50000
//! distribution = "uniform"
//! bytes_per_write = 4096
//!
//! [link]
//! bandwidth_mbit = 10000
//! latency_ms = 0.2             # one way
//! ```
//!
//! Every field is required except `zipf_s` (only, and always, with
//! `distribution = "zipf"`) and `[[phase]]`. Unknown fields are errors. An
//! invalid file gets a [`WorkloadError`] naming the file, the line and the
//! field.

#![forbid(unsafe_code)]

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// An invalid workload file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}:{line}: `{field}`: {message}")]
pub struct WorkloadError {
    /// The file (or the name given for a string).
    pub origin: String,
    /// 1-based line of the offending value.
    pub line: usize,
    /// The field.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// How a writer picks the page of its next write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every page of the region equally likely.
    Uniform,
    /// Page of rank k with probability proportional to k^-s (ranks are
    /// scattered over the region, not contiguous).
    Zipf {
        /// The exponent (0.99 is YCSB's default).
        s: f64,
    },
    /// Page after page through the region, wrapping around.
    Sequential,
}

/// One stream of page writes.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterSpec {
    /// `[start, end)` as fractions of guest memory.
    pub region: [f64; 2],
    /// Page writes per second.
    pub rate_pages_per_s: f64,
    /// Which pages.
    pub distribution: Distribution,
    /// Bytes changed per write.
    pub bytes_per_write: usize,
}

/// From `at_s` on, `writers` replace the writers before.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Seconds after the start of the run.
    pub at_s: f64,
    /// The writers from then on (possibly none).
    pub writers: Vec<WriterSpec>,
}

/// The link between the hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// Bandwidth in Mbit/s (10^6 bit/s).
    pub bandwidth_mbit: f64,
    /// One-way latency in milliseconds.
    pub latency_ms: f64,
}

/// A simulated guest's workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Its name.
    pub name: String,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Fraction of pages that start all-zero.
    pub zero_fraction: f64,
    /// CPU/device state and resume cost at switchover, in ms.
    pub switchover_fixed_ms: f64,
    /// Writers from the start.
    pub writers: Vec<WriterSpec>,
    /// Later phases, by increasing `at_s`.
    pub phases: Vec<Phase>,
    /// The link.
    pub link: LinkSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Spanned<String>,
    memory_mib: Spanned<u64>,
    zero_fraction: Spanned<f64>,
    switchover_fixed_ms: Spanned<f64>,
    #[serde(default)]
    writer: Vec<RawWriter>,
    #[serde(default)]
    phase: Vec<RawPhase>,
    link: Spanned<RawLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWriter {
    region: Spanned<Vec<f64>>,
    rate_pages_per_s: Spanned<f64>,
    distribution: Spanned<String>,
    zipf_s: Option<Spanned<f64>>,
    bytes_per_write: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    at_s: Spanned<f64>,
    #[serde(default)]
    writer: Vec<RawWriter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    bandwidth_mbit: Spanned<f64>,
    latency_ms: Spanned<f64>,
}

struct Checker<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let at = span.start.min(self.text.len());
        self.text[..at].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn error(&self, span: &Range<usize>, field: &str, message: impl Into<String>) -> WorkloadError {
        WorkloadError {
            origin: self.origin.to_string(),
            line: self.line(span),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn check<T: Copy>(
        &self,
        value: &Spanned<T>,
        field: &str,
        ok: impl Fn(T) -> bool,
        expected: &str,
    ) -> Result<T, WorkloadError> {
        let v = *value.get_ref();
        if ok(v) {
            Ok(v)
        } else {
            Err(self.error(&value.span(), field, format!("must be {expected}")))
        }
    }

    fn writer(&self, w: &RawWriter, at: &str) -> Result<WriterSpec, WorkloadError> {
        let region = w.region.get_ref();
        let f = |name: &str| format!("{at}.{name}");
        if region.len() != 2
            || !(0.0..1.0).contains(&region[0])
            || !(region[0] < region[1] && region[1] <= 1.0)
        {
            return Err(self.error(
                &w.region.span(),
                &f("region"),
                "must be [start, end] with 0 <= start < end <= 1 (fractions of guest memory)",
            ));
        }
        let rate = self.check(
            &w.rate_pages_per_s,
            &f("rate_pages_per_s"),
            |r: f64| r.is_finite() && r >= 0.0,
            "a finite number >= 0",
        )?;
        let bytes = self.check(
            &w.bytes_per_write,
            &f("bytes_per_write"),
            |b: u64| (1..=4096).contains(&b),
            "between 1 and 4096",
        )?;
        let distribution = match (w.distribution.get_ref().as_str(), &w.zipf_s) {
            ("uniform", None) => Distribution::Uniform,
            ("sequential", None) => Distribution::Sequential,
            ("zipf", Some(s)) => Distribution::Zipf {
                s: self.check(
                    s,
                    &f("zipf_s"),
                    |s: f64| s.is_finite() && s > 0.0 && s <= 5.0,
                    "in (0, 5]",
                )?,
            },
            ("zipf", None) => {
                return Err(self.error(
                    &w.distribution.span(),
                    &f("zipf_s"),
                    "distribution \"zipf\" needs zipf_s (the exponent, e.g. 0.99)",
                ))
            }
            ("uniform" | "sequential", Some(s)) => {
                return Err(self.error(
                    &s.span(),
                    &f("zipf_s"),
                    "only applies to distribution = \"zipf\"",
                ))
            }
            (other, _) => {
                return Err(self.error(
                    &w.distribution.span(),
                    &f("distribution"),
                    format!("\"{other}\" is not one of \"uniform\", \"zipf\", \"sequential\""),
                ))
            }
        };
        Ok(WriterSpec {
            region: [region[0], region[1]],
            rate_pages_per_s: rate,
            distribution,
            bytes_per_write: usize::try_from(bytes).unwrap_or(4096),
        })
    }
}

impl Workload {
    /// Parse a workload from TOML `text`; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, WorkloadError> {
        let c = Checker { origin, text };
        let raw: RawWorkload = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().to_string();
            // The field: named in the message, or the key on the offending line.
            let line_text = text[..span.start.min(text.len())]
                .rsplit('\n')
                .next()
                .unwrap_or("")
                .to_string()
                + text[span.start.min(text.len())..]
                    .split('\n')
                    .next()
                    .unwrap_or("");
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| !k.is_empty() && !k.starts_with('['));
            let field = message
                .split('`')
                .nth(1)
                .map(str::to_string)
                .or(key)
                .unwrap_or_else(|| "?".to_string());
            c.error(&span, &field, message)
        })?;
        if raw.name.get_ref().trim().is_empty() {
            return Err(c.error(&raw.name.span(), "name", "must not be empty"));
        }
        let memory_mib = c.check(
            &raw.memory_mib,
            "memory_mib",
            |m: u64| (1..=1 << 22).contains(&m),
            "between 1 and 4194304 (4 TiB)",
        )?;
        let zero_fraction = c.check(
            &raw.zero_fraction,
            "zero_fraction",
            |z: f64| (0.0..=1.0).contains(&z),
            "between 0 and 1",
        )?;
        let switchover_fixed_ms = c.check(
            &raw.switchover_fixed_ms,
            "switchover_fixed_ms",
            |t: f64| t.is_finite() && t >= 0.0,
            "a finite number >= 0",
        )?;
        if raw.writer.is_empty() {
            return Err(c.error(&(0..0), "writer", "at least one [[writer]] is needed"));
        }
        let writers = raw
            .writer
            .iter()
            .enumerate()
            .map(|(i, w)| c.writer(w, &format!("writer[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut phases = Vec::new();
        let mut last_at = 0.0;
        for (i, p) in raw.phase.iter().enumerate() {
            let at_s = c.check(
                &p.at_s,
                &format!("phase[{i}].at_s"),
                |t: f64| t.is_finite() && t > last_at,
                &format!("a finite number of seconds after the previous phase ({last_at})"),
            )?;
            last_at = at_s;
            let writers = p
                .writer
                .iter()
                .enumerate()
                .map(|(j, w)| c.writer(w, &format!("phase[{i}].writer[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            phases.push(Phase { at_s, writers });
        }
        let link = raw.link.get_ref();
        let bandwidth_mbit = c.check(
            &link.bandwidth_mbit,
            "link.bandwidth_mbit",
            |b: f64| b.is_finite() && b > 0.0,
            "a finite number > 0",
        )?;
        let latency_ms = c.check(
            &link.latency_ms,
            "link.latency_ms",
            |l: f64| l.is_finite() && l >= 0.0,
            "a finite number >= 0",
        )?;
        Ok(Self {
            name: raw.name.into_inner(),
            memory_mib,
            zero_fraction,
            switchover_fixed_ms,
            writers,
            phases,
            link: LinkSpec {
                bandwidth_mbit,
                latency_ms,
            },
        })
    }

    /// Read and parse a workload file.
    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| WorkloadError {
            origin: origin.clone(),
            line: 0,
            field: "-".into(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_toml(&text, &origin)
    }

    /// The same workload at `1/factor` scale: memory, every write rate and
    /// the link bandwidth divided by `factor`. Every duration (rounds,
    /// downtime) stays the same while `factor` times fewer pages move.
    pub fn scaled_down(&self, factor: u64) -> Self {
        let f = factor.max(1);
        let scale_writers = |ws: &[WriterSpec]| {
            ws.iter()
                .map(|w| WriterSpec {
                    rate_pages_per_s: w.rate_pages_per_s / f as f64,
                    ..w.clone()
                })
                .collect::<Vec<_>>()
        };
        Self {
            memory_mib: (self.memory_mib / f).max(1),
            writers: scale_writers(&self.writers),
            phases: self
                .phases
                .iter()
                .map(|p| Phase {
                    at_s: p.at_s,
                    writers: scale_writers(&p.writers),
                })
                .collect(),
            link: LinkSpec {
                bandwidth_mbit: self.link.bandwidth_mbit / f as f64,
                ..self.link
            },
            ..self.clone()
        }
    }

    /// The writers in force `t_s` seconds after the start.
    pub fn writers_at(&self, t_s: f64) -> &[WriterSpec] {
        self.phases
            .iter()
            .rev()
            .find(|p| p.at_s <= t_s)
            .map_or(&self.writers[..], |p| &p.writers[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
memory_mib = 64
zero_fraction = 0.5
switchover_fixed_ms = 20

[[writer]]
region = [0.0, 0.5]
rate_pages_per_s = 1000
distribution = "zipf"
zipf_s = 0.99
bytes_per_write = 8

[[phase]]
at_s = 2.5
[[phase.writer]]
region = [0.5, 1.0]
rate_pages_per_s = 10
distribution = "sequential"
bytes_per_write = 4096

[link]
bandwidth_mbit = 1000
latency_ms = 0.2
"#;

    #[test]
    fn a_complete_file_parses() {
        let w = Workload::from_toml(GOOD, "good.toml").unwrap();
        assert_eq!(w.memory_mib, 64);
        assert_eq!(w.writers[0].distribution, Distribution::Zipf { s: 0.99 });
        assert_eq!(
            w.phases[0].writers[0].distribution,
            Distribution::Sequential
        );
        assert_eq!(w.writers_at(3.0)[0].bytes_per_write, 4096);
        assert_eq!(w.writers_at(1.0)[0].bytes_per_write, 8);
    }

    fn error_for(from: &str, to: &str) -> WorkloadError {
        let text = GOOD.replacen(from, to, 1);
        Workload::from_toml(&text, "bad.toml").unwrap_err()
    }

    #[test]
    fn errors_name_the_field_and_the_line() {
        let e = error_for("rate_pages_per_s = 1000", "rate_pages_per_s = -1");
        assert_eq!(e.line, 9);
        assert_eq!(e.field, "writer[0].rate_pages_per_s");
        assert!(e
            .to_string()
            .starts_with("bad.toml:9: `writer[0].rate_pages_per_s`"));

        let e = error_for("region = [0.0, 0.5]", "region = [0.6, 0.5]");
        assert_eq!((e.line, e.field.as_str()), (8, "writer[0].region"));

        let e = error_for("zipf_s = 0.99\n", "");
        assert_eq!(e.field, "writer[0].zipf_s");

        let e = error_for("\"sequential\"", "\"random\"");
        assert_eq!(
            (e.line, e.field.as_str()),
            (19, "phase[0].writer[0].distribution")
        );

        let e = error_for("latency_ms = 0.2", "latency_ms = 0.2\nmtu = 9000");
        assert_eq!(e.field, "mtu");
        assert_eq!(e.line, 25);

        let e = error_for("memory_mib = 64", "memory_mib = \"big\"");
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("memory_mib"), "{e}");

        let e = error_for("at_s = 2.5", "at_s = 0");
        assert_eq!(e.field, "phase[0].at_s");

        let e = error_for("switchover_fixed_ms = 20\n", "");
        assert!(e.to_string().contains("switchover_fixed_ms"), "{e}");
    }

    #[test]
    fn scaling_down_keeps_durations() {
        let w = Workload::from_toml(GOOD, "good.toml")
            .unwrap()
            .scaled_down(16);
        assert_eq!(w.memory_mib, 4);
        assert!((w.writers[0].rate_pages_per_s - 62.5).abs() < 1e-9);
        assert!((w.link.bandwidth_mbit - 62.5).abs() < 1e-9);
        assert_eq!(w.phases[0].at_s, 2.5);
    }
}
