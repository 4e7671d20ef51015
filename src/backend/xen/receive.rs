//! The receiving end of a transcoded migration (`perfplus migrate-receive`,
//! started by the sender as xl starts `xl migrate-receive`: over ssh, its
//! standard input the stream, its standard output the answers). It runs
//! the stock `xl migrate-receive` and sits in front of it:
//!
//! ```text
//!  stdin ─▶ Decoder (PAGES → PAGE_DATA, byte for byte) ─▶ xl migrate-receive's stdin
//!  stdout ◀─ hello line, then xl migrate-receive's stdout, relayed as it comes
//! ```
//!
//! A stream that does not decode, or ends before its END chunk, is cut off
//! before `xl migrate-receive` sees anything wrong in it: it then fails the
//! restore and destroys the domain it was building, and the sender,
//! which never hears "domain received", resumes its guest.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use super::transcode::{Decoder, DecoderLimits, TranscodeError, TranscodeStats};
use super::xl::{PERFPLUS_RECEIVER_HELLO, RECEIVER_READY};

/// How the receiving end runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// The stock receiver, run with `sh -c` (`xl migrate-receive`, with its
    /// options: `-e` to stay in the foreground, `-p` to leave it paused).
    pub receiver_command: String,
    /// What the sender may ask for.
    pub limits: DecoderLimits,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self {
            receiver_command: "xl migrate-receive".into(),
            limits: DecoderLimits::default(),
        }
    }
}

/// What came through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceiveReport {
    /// The transcoded stream.
    pub stream: TranscodeStats,
    /// The stock receiver's exit code (`None`: killed by a signal).
    pub receiver_exit_code: Option<i32>,
    /// From the last stream bytes handed to the stock receiver before it
    /// said "domain received, ready to unpause" to that message, ms: its
    /// restore's tail, which `xl migrate` pays too (`None` if it never said
    /// so).
    pub ready_after_stream_ms: Option<f64>,
}

/// Why the receiving end failed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The stream did not decode; it was cut off before the stock receiver.
    #[error("refused the migration stream: {0}")]
    Stream(#[from] TranscodeError),
    /// Reading the stream or writing the answers failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stock receiver failed (it says why on standard error).
    #[error("`{command}` failed ({status})")]
    Receiver {
        /// Its command line.
        command: String,
        /// Its exit status.
        status: String,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ReceiveError {
    move |source| ReceiveError::Io { what, source }
}

/// Receive a transcoded stream from `input` for the stock receiver, and
/// relay its answers to `output` (see the module documentation).
pub fn receive(
    mut input: impl Read,
    output: impl Write + Send,
    options: &ReceiveOptions,
) -> Result<ReceiveReport, ReceiveError> {
    let mut output = output;
    output
        .write_all(PERFPLUS_RECEIVER_HELLO)
        .and_then(|()| output.flush())
        .map_err(io("sending the hello line"))?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&options.receiver_command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io("starting the stock receiver"))?;
    let (Some(mut to_receiver), Some(mut from_receiver)) =
        (child.stdin.take(), child.stdout.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ReceiveError::Io {
            what: "starting the stock receiver",
            source: std::io::Error::other("no pipes"),
        });
    };
    let mut decoder = Decoder::new(options.limits);
    // When the stream's bytes last went to the stock receiver, and how
    // long after that it said "ready".
    let last_input: Mutex<Option<Instant>> = Mutex::new(None);
    let ready_after: Mutex<Option<f64>> = Mutex::new(None);
    let decoded = std::thread::scope(|scope| {
        let relay = scope.spawn(|| -> std::io::Result<()> {
            let mut buf = vec![0_u8; 64 * 1024];
            loop {
                let n = from_receiver.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                let got = &buf[..n];
                if got
                    .windows(RECEIVER_READY.len())
                    .any(|w| w == RECEIVER_READY)
                {
                    let last = last_input.lock().ok().and_then(|l| *l);
                    if let (Some(last), Ok(mut r)) = (last, ready_after.lock()) {
                        *r = Some(last.elapsed().as_secs_f64() * 1e3);
                    }
                }
                output.write_all(got)?;
                output.flush()?;
            }
        });
        let result = (|| -> Result<(), ReceiveError> {
            let mut buf = vec![0_u8; 1 << 20];
            let mut out = Vec::new();
            loop {
                let n = match input.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io("reading the migration stream")(e)),
                };
                if n == 0 {
                    decoder.finish()?;
                    return Ok(());
                }
                decoder.push(&buf[..n]);
                out.clear();
                let ended = decoder.decode(&mut out)?;
                super::channel::without_sigpipe(|| to_receiver.write_all(&out))
                    .map_err(io("passing the stream to the stock receiver"))?;
                if !out.is_empty() {
                    if let Ok(mut l) = last_input.lock() {
                        *l = Some(Instant::now());
                    }
                }
                if ended {
                    return Ok(());
                }
            }
        })();
        // The stock receiver's input ends here: cleanly after END, cut
        // short after a failure (it then destroys what it built).
        drop(to_receiver);
        let relayed = relay.join();
        (result, relayed)
    });
    let (result, relayed) = decoded;
    let status = child.wait().map_err(io("waiting for the stock receiver"))?;
    result?;
    match relayed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(io("relaying the stock receiver's answers")(e)),
        Err(_) => {
            return Err(ReceiveError::Io {
                what: "relaying the stock receiver's answers",
                source: std::io::Error::other("the relay thread panicked"),
            })
        }
    }
    if !status.success() {
        return Err(ReceiveError::Receiver {
            command: options.receiver_command.clone(),
            status: status.to_string(),
        });
    }
    Ok(ReceiveReport {
        stream: decoder.stats(),
        receiver_exit_code: status.code(),
        ready_after_stream_ms: ready_after.lock().ok().and_then(|r| *r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::xen::transcode::{encode_all, EncoderSettings};
    use crate::migration::encode::EncodingSet;

    fn settings() -> EncoderSettings {
        EncoderSettings {
            chunked: true,
            encodings: EncodingSet::ALL,
            page_count: 16,
            delta_cache_bytes: 4 * 4096,
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ppxen-receive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_stock_receiver_gets_the_rebuilt_stream_and_its_answers_come_back() {
        let dir = scratch("ok");
        let got = dir.join("got");
        let stream = b"xl header, then a libxc stream that is all literal".to_vec();
        let wire = encode_all(settings(), &stream, &[], b"");
        let options = ReceiveOptions {
            receiver_command: format!("echo banner; cat > {}", got.display()),
            ..ReceiveOptions::default()
        };
        let mut answers = Vec::new();
        let report = receive(&wire[..], &mut answers, &options).unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), stream);
        assert_eq!(answers, [PERFPLUS_RECEIVER_HELLO, b"banner\n"].concat());
        assert_eq!(report.receiver_exit_code, Some(0));
        assert_eq!(report.ready_after_stream_ms, None, "it never said ready");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_stock_receivers_ready_is_timed_from_the_streams_last_bytes() {
        let wire = encode_all(settings(), b"a libxc stream", &[], b"");
        let options = ReceiveOptions {
            receiver_command: "cat >/dev/null; printf 'domain received, ready to unpause\\000'"
                .into(),
            ..ReceiveOptions::default()
        };
        let mut answers = Vec::new();
        let report = receive(&wire[..], &mut answers, &options).unwrap();
        assert!(answers.ends_with(RECEIVER_READY), "{answers:?}");
        assert!(report.ready_after_stream_ms.is_some());
    }

    #[test]
    fn a_cut_stream_never_reaches_the_stock_receiver_whole() {
        let dir = scratch("cut");
        let got = dir.join("got");
        let wire = encode_all(settings(), b"0123456789", &[], b"abcdefghij");
        let options = ReceiveOptions {
            receiver_command: format!("cat > {}", got.display()),
            ..ReceiveOptions::default()
        };
        // Without the END chunk: refused, and the receiver saw a short stream.
        let err = receive(&wire[..wire.len() - 16], Vec::new(), &options).unwrap_err();
        assert!(
            matches!(err, ReceiveError::Stream(TranscodeError::Truncated { .. })),
            "{err}"
        );
        assert_eq!(std::fs::read(&got).unwrap(), b"0123456789abcdefghij");
        // A corrupt chunk: nothing after it is passed on.
        let mut bad = wire.clone();
        let last = bad.len() - 20;
        bad[last] ^= 1;
        let err = receive(&bad[..], Vec::new(), &options).unwrap_err();
        assert!(
            matches!(err, ReceiveError::Stream(TranscodeError::BadCheck { .. })),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
