//! The session of one Xen migration: its options, the link to the
//! receiver (the transport command with the transcoder in front of it),
//! and xl's hand-over at the end, shared by the PV and PVH data paths.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::channel::CommandChannel;
use super::store::XenStore;
use super::toolstack::Toolstack;
use super::transcode::{Encoder, EncoderSettings};
use super::xl::{
    PERFPLUS_RECEIVER_HELLO, PERMISSION_TO_GO, RECEIVER_BANNER, RECEIVER_READY, REPORT,
};
use super::{domain, XenError};
use crate::migration::{EngineConfig, MigrationError};

/// How a Xen guest migrates.
#[derive(Debug, Clone, PartialEq)]
pub struct XenMigrationOptions {
    /// The transport command, run with `sh -c`: its standard input takes
    /// the stream, its standard output gives the receiver's answers (see
    /// [`transport_command`]).
    pub transport_command: String,
    /// The receiver is `perfplus migrate-receive` (true: pages travel zero-
    /// and delta-encoded, and are rebuilt there for `xl migrate-receive`),
    /// or the stock `xl migrate-receive` itself (false: the plain stream).
    pub transcoded: bool,
    /// Bytes of page copies the sender (and so the receiver) keeps for deltas.
    pub delta_cache_bytes: usize,
    /// Longest wait for each answer of the receiver (its banner, "domain
    /// received" after the restore, its report).
    pub reply_timeout: Duration,
    /// Longest time the receiver may stop reading the stream.
    pub write_timeout: Duration,
    /// Longest time the guest may take to suspend (libxl allows 60 s).
    pub suspend_timeout: Duration,
    /// The toolstack commands (configuration, destroying the source).
    pub toolstack: Toolstack,
    /// Destroy the source domain once the guest runs at the destination
    /// (as `xl migrate` does). If false it stays suspended, renamed
    /// `NAME--migratedaway`, for the caller to destroy.
    pub destroy_source: bool,
    /// The engine's settings: batch size (PVH), and what the downtime
    /// prediction assumes about the switch-over (both).
    pub engine: EngineConfig,
}

impl XenMigrationOptions {
    /// Defaults for a transport command: transcoded, a 64 MiB delta cache,
    /// 120 s for the receiver's answers and writes, 60 s to suspend.
    pub fn new(transport_command: impl Into<String>) -> Self {
        Self {
            transport_command: transport_command.into(),
            transcoded: true,
            delta_cache_bytes: 64 << 20,
            reply_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(120),
            suspend_timeout: Duration::from_secs(60),
            toolstack: Toolstack::default(),
            destroy_source: true,
            engine: EngineConfig {
                // libxenguest's MAX_BATCH_SIZE: one PAGE_DATA record each.
                batch_pages: 1024,
                // The receiver's restore of the CPU state and libxl's
                // hand-over (rename, unpause, report) after the last page.
                // In the TCG test bed the switch-over breakdown measured
                // far more: suspend 30-160 ms, the stock receiver's restore
                // tail 150-180 ms, rename + start 35-60 ms (xl pays the
                // same); kept low here, since raising it changes when Perf+
                // stops, which wants its own evaluation.
                switchover_fixed_ms: 50.0,
                link_latency_ms: 0.0,
                // HVM context, parameters, TSC, CPU policy.
                state_bytes: 64 * 1024,
            },
        }
    }
}

/// The receiver that decodes the transcoded stream (at the destination).
pub const PERFPLUS_RECEIVER: &str = "perfplus migrate-receive";
/// The stock receiver.
pub const XL_RECEIVER: &str = "xl migrate-receive";

impl XenMigrationOptions {
    /// Options for a destination reached as `xl migrate` reaches it:
    /// `SSH_COMMAND DESTINATION RECEIVER` (with an empty `ssh_command`,
    /// `destination` is the whole transport command). The receiver is
    /// `receiver`, or by default [`PERFPLUS_RECEIVER`] (the stream
    /// transcoded) or, with `stock_receiver`, [`XL_RECEIVER`] (plain).
    pub fn for_destination(
        destination: &str,
        ssh_command: &str,
        receiver: Option<&str>,
        stock_receiver: bool,
    ) -> Self {
        let default = if stock_receiver {
            XL_RECEIVER
        } else {
            PERFPLUS_RECEIVER
        };
        let mut options = Self::new(transport_command(
            destination,
            ssh_command,
            receiver.unwrap_or(default),
        ));
        options.transcoded = !stock_receiver;
        options
    }
}

/// The transport command for `destination`, as xl builds it: `exec SSH
/// DESTINATION RECEIVER`, or, with an empty `ssh_command` (xl's `-s ""`),
/// `destination` itself is the command.
pub fn transport_command(destination: &str, ssh_command: &str, receiver: &str) -> String {
    if ssh_command.is_empty() {
        destination.to_string()
    } else {
        format!("exec {ssh_command} {destination} {receiver}")
    }
}

/// Where the switch-over's time went, ms on a monotonic clock: from the
/// request to stop the guest to the destination's report that it runs
/// there (the downtime, as the source sees it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SwitchoverBreakdown {
    /// The suspend request (xenstore `control/shutdown`) until the guest
    /// had suspended (`SHUTDOWN_suspend`).
    pub suspend_ms: f64,
    /// The final pass: PV, libxenguest's last round with its state records
    /// (until `xc_domain_save` returned); PVH, harvesting the last dirty
    /// pages, reading and sending them.
    pub final_pass_ms: f64,
    /// PV: what perfplus's pump still had to transcode and send after
    /// libxenguest finished; PVH: reading and sending the CPU state records.
    pub state_ms: f64,
    /// The END records sent until the destination said "domain received,
    /// ready to unpause" (the stream's tail through the transport and the
    /// receiver, and the receiver's restore).
    pub receiver_ms: f64,
    /// Renaming the source domain (`NAME--migratedaway`).
    pub rename_ms: f64,
    /// Permission to go until the receiver's report (it unpauses the guest).
    pub start_ms: f64,
    /// Stream bytes still queued in perfplus's pipes toward the receiver
    /// when the guest was asked to stop (they go before the final pass).
    pub queued_bytes_at_stop: u64,
    /// Before the stop, with the guest still running (not downtime):
    /// waiting for what the last round left queued in perfplus's pipes to
    /// reach the receiver ([`DRAIN_BEFORE_STOP`] at most).
    pub drain_before_stop_ms: f64,
    /// Stream bytes queued when the last round ended (before that wait).
    pub queued_bytes_after_rounds: u64,
}

/// The longest wait, with the guest still running, for the stream the last
/// live round left queued in perfplus's pipes to reach the receiver before
/// the guest is asked to stop. Whatever is still queued at the stop delays
/// the final pass by as much (it showed as ~100 ms of extra downtime for
/// ~850 KiB in the test bed), while the guest dirties only a few pages
/// more meanwhile.
pub const DRAIN_BEFORE_STOP: Duration = Duration::from_secs(2);
/// Queued bytes not worth waiting for (a few pages' worth).
const DRAIN_SLACK_BYTES: u64 = 16 * 4096;
/// How often the queue is looked at while waiting (`FIONREAD`: a pipe
/// signals room, not emptiness).
const DRAIN_POLL: Duration = Duration::from_millis(1);

/// Wait (up to `limit`) until `queued` (stream bytes still in perfplus's
/// pipes) is down to a few pages. Returns what was queued before and after.
pub(crate) fn wait_drained(queued: impl Fn() -> u64, limit: Duration) -> (u64, u64) {
    let started = Instant::now();
    let before = queued();
    let mut now = before;
    // Low twice in a row: one look can fall between a reader taking bytes
    // out of a pipe and counting them as in hand.
    let mut low = 0;
    loop {
        low = if now <= DRAIN_SLACK_BYTES { low + 1 } else { 0 };
        if low == 2 || started.elapsed() >= limit {
            return (before, now);
        }
        std::thread::sleep(DRAIN_POLL);
        now = queued();
    }
}

/// The moments of the switch-over, as they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    StopRequested,
    Stopped,
    PagesSent,
    StateSent,
    EndSent,
    Ready,
    Renamed,
    GoSent,
    Reported,
}

const MARKS: usize = 9;

/// The switch-over's moments, shared by the source and the sink.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    marks: Mutex<[Option<Instant>; MARKS]>,
    queued_at_stop: std::sync::atomic::AtomicU64,
    drained: Mutex<(u64, f64)>,
}

impl Timeline {
    /// Record `mark` now (again: the later moment counts).
    pub(crate) fn mark(&self, mark: Mark) {
        if let Ok(mut m) = self.marks.lock() {
            m[mark as usize] = Some(Instant::now());
        }
    }

    fn set_queued_at_stop(&self, bytes: u64) {
        self.queued_at_stop
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Before the stop: wait (up to [`DRAIN_BEFORE_STOP`]) until `queued`
    /// (the stream bytes still in perfplus's pipes) is down to a few pages,
    /// and note what was queued at the stop.
    pub(crate) fn drain_before_stop(&self, queued: impl Fn() -> u64) {
        let started = Instant::now();
        let (before, now) = wait_drained(queued, DRAIN_BEFORE_STOP);
        if let Ok(mut d) = self.drained.lock() {
            *d = (before, started.elapsed().as_secs_f64() * 1e3);
        }
        self.set_queued_at_stop(now);
    }

    /// The breakdown (a stage whose ends were not both seen is 0).
    pub(crate) fn breakdown(&self) -> SwitchoverBreakdown {
        let m = self.marks.lock().map(|m| *m).unwrap_or_default();
        let drained = self.drained.lock().map(|d| *d).unwrap_or_default();
        let span = |a: Mark, b: Mark| match (m[a as usize], m[b as usize]) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64() * 1e3,
            _ => 0.0,
        };
        SwitchoverBreakdown {
            suspend_ms: span(Mark::StopRequested, Mark::Stopped),
            final_pass_ms: span(Mark::Stopped, Mark::PagesSent),
            state_ms: span(Mark::PagesSent, Mark::StateSent),
            receiver_ms: span(Mark::EndSent, Mark::Ready),
            rename_ms: span(Mark::Ready, Mark::Renamed),
            start_ms: span(Mark::GoSent, Mark::Reported),
            queued_bytes_at_stop: self
                .queued_at_stop
                .load(std::sync::atomic::Ordering::Relaxed),
            drain_before_stop_ms: drained.1,
            queued_bytes_after_rounds: drained.0,
        }
    }
}

/// The transport to the receiver with the transcoder in front of it.
#[derive(Debug)]
pub(crate) struct XlLink {
    pub(crate) channel: CommandChannel,
    pub(crate) encoder: Encoder,
    out: Vec<u8>,
    reply_timeout: Duration,
    /// The switch-over's moments.
    pub(crate) timeline: Arc<Timeline>,
}

fn protocol(what: String) -> MigrationError {
    MigrationError::Protocol { what }
}

impl XlLink {
    /// Start the transport, and read the receiver's banner (and, for a
    /// perfplus receiver, its hello first, answered with HELLO).
    pub(crate) fn open(
        options: &XenMigrationOptions,
        settings: EncoderSettings,
    ) -> Result<Self, MigrationError> {
        let channel = CommandChannel::spawn(&options.transport_command, options.write_timeout)?;
        let mut link = Self {
            channel,
            encoder: Encoder::new(settings),
            out: Vec::new(),
            reply_timeout: options.reply_timeout,
            timeline: Arc::default(),
        };
        let stock = "the destination runs the stock `xl migrate-receive`, which cannot \
                     decode the transcoded stream: migrate to `perfplus migrate-receive` \
                     there, or with the plain stream (--stock-receiver)";
        let perfplus = "the destination runs `perfplus migrate-receive`, which expects the \
                        transcoded stream: migrate without --stock-receiver";
        let line = link.read_line()?;
        if settings.chunked {
            if line == RECEIVER_BANNER {
                return Err(MigrationError::Refused {
                    reason: stock.into(),
                });
            }
            if line != PERFPLUS_RECEIVER_HELLO {
                return Err(unexpected_line(&line, "perfplus migrate-receive's hello"));
            }
            link.encoder.hello(&mut link.out);
            link.flush()?;
            let line = link.read_line()?;
            if line != RECEIVER_BANNER {
                return Err(unexpected_line(&line, "xl's receiver banner"));
            }
        } else if line == PERFPLUS_RECEIVER_HELLO {
            return Err(MigrationError::Refused {
                reason: perfplus.into(),
            });
        } else if line != RECEIVER_BANNER {
            return Err(unexpected_line(&line, "xl's receiver banner"));
        }
        Ok(link)
    }

    fn read_line(&mut self) -> Result<Vec<u8>, MigrationError> {
        let mut line = Vec::new();
        let mut byte = [0_u8; 1];
        while line.len() < 256 {
            self.channel.recv_exact(
                &mut byte,
                self.reply_timeout,
                "waiting for the receiver's banner",
            )?;
            line.push(byte[0]);
            if byte[0] == b'\n' {
                return Ok(line);
            }
        }
        Err(unexpected_line(&line, "a banner line"))
    }

    fn flush(&mut self) -> Result<(), MigrationError> {
        if !self.out.is_empty() {
            let sent = self.channel.send(&self.out);
            self.out.clear();
            sent?;
        }
        Ok(())
    }

    /// Send bytes outside the libxc stream.
    pub(crate) fn send_literal(&mut self, bytes: &[u8]) -> Result<(), MigrationError> {
        self.encoder.push_literal(bytes, &mut self.out);
        self.flush()
    }

    /// Send bytes of the libxc stream.
    pub(crate) fn send_libxc(&mut self, bytes: &[u8]) -> Result<(), MigrationError> {
        self.encoder.push_libxc(bytes, &mut self.out);
        self.flush()
    }

    /// Read `message` from the receiver, exactly.
    pub(crate) fn expect(
        &mut self,
        message: &'static [u8],
        what: &'static str,
    ) -> Result<(), MigrationError> {
        let mut buf = vec![0_u8; message.len()];
        self.channel
            .recv_exact(&mut buf, self.reply_timeout, what)?;
        if buf != message {
            return Err(unexpected_line(&buf, what));
        }
        Ok(())
    }

    /// Read one byte (the receiver's status).
    fn read_status(&mut self) -> Result<u8, MigrationError> {
        let mut b = [0_u8; 1];
        self.channel.recv_exact(
            &mut b,
            self.reply_timeout,
            "waiting for the receiver's status",
        )?;
        Ok(b[0])
    }

    /// Bytes on the wire so far.
    pub(crate) fn bytes_on_wire(&self) -> u64 {
        self.channel.bytes_sent()
    }

    /// Close the stream: after a hand-over, with END (the receiver's side
    /// ends cleanly); after a failure, without (the receiver sees a cut
    /// stream and destroys what it built). Waits a little for the command.
    pub(crate) fn close(mut self, completed: bool) {
        if completed {
            self.encoder.end(&mut self.out);
            let _ = self.flush();
        }
        self.channel.finish(Duration::from_secs(10));
    }
}

fn unexpected_line(got: &[u8], what: &str) -> MigrationError {
    protocol(format!(
        "expected {what}, got {:?}",
        String::from_utf8_lossy(&got[..got.len().min(120)])
    ))
}

/// How the final hand-over failed.
#[derive(Debug)]
pub(crate) enum HandoverError {
    /// Before the destination was given permission: resume here.
    BeforePermission(MigrationError),
    /// The destination could not start the guest, destroyed its copy and
    /// gave permission back: resume here.
    ReturnedToSource(MigrationError),
    /// Permission was given and nothing came back: both copies may exist.
    Unconfirmed(MigrationError),
}

impl HandoverError {
    pub(crate) fn into_inner(self) -> MigrationError {
        match self {
            Self::BeforePermission(e) | Self::ReturnedToSource(e) | Self::Unconfirmed(e) => e,
        }
    }
}

/// After the whole stream: wait until the destination has built the domain.
pub(crate) fn await_ready(link: &mut XlLink) -> Result<(), MigrationError> {
    link.timeline.mark(Mark::EndSent);
    link.expect(
        RECEIVER_READY,
        "waiting for the receiver to build the domain",
    )?;
    link.timeline.mark(Mark::Ready);
    Ok(())
}

/// xl's hand-over: rename the source away, let the destination start the
/// guest, read its report.
pub(crate) fn hand_over(
    link: &mut XlLink,
    store: &XenStore,
    domid: u32,
    name: &str,
) -> Result<(), HandoverError> {
    let away = format!("{name}--migratedaway");
    store.rename_domain(domid, name, &away).map_err(|e| {
        HandoverError::BeforePermission(xen_failure("renaming the source domain", domid, e))
    })?;
    link.timeline.mark(Mark::Renamed);
    // From here on, as for xl, the destination may start the guest.
    link.send_literal(PERMISSION_TO_GO)
        .map_err(HandoverError::Unconfirmed)?;
    link.timeline.mark(Mark::GoSent);
    link.expect(REPORT, "waiting for the receiver's report")
        .map_err(HandoverError::Unconfirmed)?;
    let status = link.read_status().map_err(HandoverError::Unconfirmed)?;
    link.timeline.mark(Mark::Reported);
    if status == 0 {
        return Ok(());
    }
    link.expect(
        PERMISSION_TO_GO,
        "waiting for the receiver's permission to resume here",
    )
    .map_err(HandoverError::Unconfirmed)?;
    if let Err(e) = store.rename_domain(domid, &away, name) {
        eprintln!("perfplus: xen: renaming domain {domid} back to {name}: {e}");
    }
    Err(HandoverError::ReturnedToSource(MigrationError::Refused {
        reason: format!(
            "the destination could not start the guest (xl status {status}) and destroyed its copy"
        ),
    }))
}

/// A Xen failure as a migration failure.
pub(crate) fn xen_failure(what: &'static str, domid: u32, e: XenError) -> MigrationError {
    MigrationError::Backend {
        what,
        source: domain::backend_error(e, domid),
    }
}
/// What both data paths need to know about the migration.
pub(crate) struct Session<'a> {
    pub(crate) store: &'a XenStore,
    pub(crate) name: &'a str,
    pub(crate) domid: u32,
    pub(crate) options: &'a XenMigrationOptions,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::encode::EncodingSet;

    #[test]
    fn the_stop_waits_for_the_last_round_to_drain_and_notes_what_was_left() {
        let timeline = Timeline::default();
        let queued = std::cell::Cell::new(1_u64 << 20);
        timeline.drain_before_stop(|| {
            let now = queued.get();
            queued.set(now.saturating_sub(256 << 10));
            now
        });
        assert_eq!(queued.get(), 0, "it looked until the queue was empty");
        let b = timeline.breakdown();
        assert_eq!(b.queued_bytes_after_rounds, 1 << 20);
        assert_eq!(b.queued_bytes_at_stop, 0);
    }

    #[test]
    fn stages_are_the_spans_between_their_marks_and_zero_when_unseen() {
        let timeline = Timeline::default();
        timeline.mark(Mark::StopRequested);
        timeline.mark(Mark::Stopped);
        timeline.mark(Mark::EndSent);
        let b = timeline.breakdown();
        assert!(b.suspend_ms >= 0.0);
        assert_eq!(b.final_pass_ms, 0.0, "no PagesSent mark");
        assert_eq!(b.receiver_ms, 0.0, "no Ready mark");
        assert_eq!(b.start_ms, 0.0);
    }

    #[test]
    fn a_pipe_tells_what_is_queued_in_it() {
        let mut ch = CommandChannel::spawn("sleep 5", Duration::from_secs(5)).unwrap();
        ch.send(&[1_u8; 5000]).unwrap();
        assert_eq!(ch.queued_bytes(), 5000);
        ch.finish(Duration::from_millis(10));
    }

    #[test]
    fn the_transport_is_built_like_xls() {
        assert_eq!(
            transport_command("host2", "ssh", "perfplus migrate-receive"),
            "exec ssh host2 perfplus migrate-receive"
        );
        assert_eq!(
            transport_command("countpipe /tmp/n | xl migrate-receive", "", "ignored"),
            "countpipe /tmp/n | xl migrate-receive"
        );
    }

    fn stock_receiver(script: &str) -> XenMigrationOptions {
        let mut o = XenMigrationOptions::new(script);
        o.transcoded = false;
        o.reply_timeout = Duration::from_secs(5);
        o
    }

    fn plain() -> EncoderSettings {
        EncoderSettings {
            chunked: false,
            encodings: EncodingSet::RAW_ONLY,
            page_count: 16,
            delta_cache_bytes: 0,
        }
    }

    #[test]
    fn a_stock_receiver_banner_opens_the_link() {
        let o = stock_receiver(
            "printf 'xl migration receiver ready, send binary domain data.\\n'; cat >/dev/null",
        );
        let link = XlLink::open(&o, plain()).unwrap();
        link.close(false);
    }

    #[test]
    fn a_stock_receiver_refuses_a_transcoded_stream_before_anything_is_sent() {
        let mut o = stock_receiver(
            "printf 'xl migration receiver ready, send binary domain data.\\n'; cat >/dev/null",
        );
        o.transcoded = true;
        let settings = EncoderSettings {
            chunked: true,
            ..plain()
        };
        let err = XlLink::open(&o, settings).unwrap_err().to_string();
        assert!(err.contains("--stock-receiver"), "{err}");
    }

    #[test]
    fn a_receiver_saying_something_else_is_a_protocol_error() {
        let o = stock_receiver("echo 'Permission denied (publickey).'");
        let err = XlLink::open(&o, plain()).unwrap_err();
        assert!(matches!(err, MigrationError::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("Permission denied"), "{err}");
    }
}
