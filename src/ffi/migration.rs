//! Live migration from C: a configuration builder, the progress callback
//! and the report, and the sender of a simulated guest over TCP.
//!
//! ```c
//! perfplus_migration_config *cfg;
//! perfplus_migration_config_new(&cfg);
//! perfplus_migration_config_set_policy(cfg, "perfplus");
//! perfplus_migration_config_set_downtime_target_ms(cfg, 50.0);
//! perfplus_migration_config_set_io_timeout_ms(cfg, 10000);
//! perfplus_migration_report report;
//! perfplus_result rc = perfplus_migration_send_sim(cfg, "web.toml", 256, "10.0.0.2:7791",
//!                                                  on_progress, state, &report);
//! // rc == PERFPLUS_RESULT_MIGRATION_ABORTED: the guest still runs at the source.
//! perfplus_migration_config_free(cfg);
//! ```
//!
//! The progress and report types are not tied to the simulated guest: every
//! migration entry point (a Xen domain's too) reports through them.

use std::ffi::{c_char, c_void};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::error::Failure;
use super::handle::{
    arg_out, arg_str, box_handle, box_handle_free, box_handle_mut, box_handle_ref, c_string_field,
    BoxHandle,
};
use super::policy::{perfplus_decision, policy_by_name, set_downtime_target};
use super::result::perfplus_result;
use crate::backend::sim::{RealTimeSim, Workload, STATE_BLOB_BYTES};
use crate::backend::Domain;
use crate::migration::policy::BuiltinPolicy;
use crate::migration::simulation::{default_delta_cache_bytes, memory_digest};
use crate::migration::{
    migrate, EngineConfig, MigrationReport, PerfplusSink, PrecopyPolicy, Progress, ProgressFlow,
    RealClock, TcpTransport,
};

/// The default timeout of every network read and write, ms.
const DEFAULT_IO_TIMEOUT_MS: u32 = 30_000;

/// How to migrate (opaque): the policy, its downtime target, timeouts.
pub struct perfplus_migration_config {
    _private: [u8; 0],
}

/// The Rust side of a `perfplus_migration_config`.
#[derive(Debug, Clone)]
pub(crate) struct MigrationConfig {
    /// The policy, with its settings.
    pub(crate) policy: BuiltinPolicy,
    /// A downtime target the caller set (kept across policy changes).
    downtime_target_ms: Option<f64>,
    /// Every network read and write (and the connect) waits at most this.
    pub(crate) io_timeout: Duration,
}

impl BoxHandle for perfplus_migration_config {
    type Inner = MigrationConfig;
}

/// Where a migration is, in a `perfplus_migration_progress`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_migration_phase {
    /// Before a live round: the policy decided (`decision`) from the
    /// round's numbers.
    PERFPLUS_MIGRATION_ROUND = 1,
    /// A batch of pages went out (in a live round or the final pass):
    /// `round_pages_sent` of `round_pages`, `bytes_sent_total`. For progress
    /// bars; comes many times per round.
    PERFPLUS_MIGRATION_SENT = 2,
    /// The guest is paused at the source; `final_pages` go in the final pass.
    PERFPLUS_MIGRATION_PAUSED = 3,
    /// The receiver applied and verified the whole stream.
    PERFPLUS_MIGRATION_VERIFIED = 4,
    /// The guest runs at the receiver; `downtime_ms` is known.
    PERFPLUS_MIGRATION_RESUMED = 5,
}

/// A migration's progress, passed to a `perfplus_migration_progress_fn`.
/// Fields a phase does not update keep their last value (e.g. at PAUSED,
/// the numbers of the last round).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct perfplus_migration_progress {
    /// Where the migration is.
    pub phase: perfplus_migration_phase,
    /// Live rounds sent so far (0 before the first, full pass). At ROUND,
    /// `decision` says whether round number `round` is sent.
    pub round: u32,
    /// Time since the migration started, ms.
    pub elapsed_ms: f64,
    /// ROUND: pages the next live round would send.
    pub dirty_pages: u64,
    /// ROUND: hot pages held back for the final pass.
    pub deferred_pages: u64,
    /// PAUSED: pages sent while the guest is paused.
    pub final_pages: u64,
    /// Distinct pages the guest dirtied per second in the last round.
    pub dirty_rate_pages_per_s: f64,
    /// Measured bandwidth, bytes per second (0 until measured).
    pub bandwidth_bytes_per_s: f64,
    /// Downtime predicted if the guest were paused now, ms (INFINITY until
    /// the bandwidth is known).
    pub predicted_downtime_ms: f64,
    /// Pages sent before this round.
    pub pages_sent_total: u64,
    /// Bytes on the wire so far (updated at ROUND and SENT).
    pub bytes_sent_total: u64,
    /// SENT: pages of the current round (or final pass) sent so far.
    pub round_pages_sent: u64,
    /// SENT: pages the current round (or final pass) sends in all.
    pub round_pages: u64,
    /// RESUMED: the guest's downtime, ms (0 before).
    pub downtime_ms: f64,
    /// The policy's last decision (at ROUND: this round's).
    pub decision: perfplus_decision,
}

/// Called on the migrating thread with each step of a migration. Return 0
/// to go on; non-zero cancels the migration (the guest resumes at the
/// source, and the call returns `PERFPLUS_RESULT_MIGRATION_ABORTED`): at
/// ROUND and PAUSED at once, at SENT when the batch in flight is done
/// (at the next ROUND or PAUSED). At VERIFIED and RESUMED the guest
/// already belongs to the receiver and the answer is ignored. No lock is
/// held during the call; it must not free the objects the migration uses.
pub type perfplus_migration_progress_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        progress: *const perfplus_migration_progress,
    ) -> i32,
>;

/// The outcome of a migration that handed the guest over.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct perfplus_migration_report {
    /// The policy's name (NUL-terminated).
    pub policy: [c_char; 32],
    /// Live rounds sent (the full pass included).
    pub rounds: u32,
    /// From pausing the guest at the source to it running at the receiver, ms.
    pub downtime_ms: f64,
    /// From the start to the hand-over, ms.
    pub total_ms: f64,
    /// Bytes on the wire, framing included.
    pub bytes_on_wire: u64,
    /// Page records sent (all rounds): the sum of the three below.
    pub pages_sent: u64,
    /// Of which zero markers.
    pub zero_pages: u64,
    /// Of which raw pages.
    pub raw_pages: u64,
    /// Of which XOR deltas against the copy the receiver holds.
    pub delta_pages: u64,
    /// Pages sent while the guest was paused.
    pub final_pages: u64,
    /// Hot pages deferred to the final pass.
    pub deferred_pages: u64,
    /// Pre-copy reached the policy's stop rule. Always true in a report: a
    /// policy that gives up makes the call fail with
    /// `PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED` (no report is written).
    pub converged: bool,
    /// The receiver verified the stream digest before taking the guest.
    pub verified: bool,
    /// Why pre-copy stopped (NUL-terminated, cut to 127 bytes).
    pub stop_reason: [c_char; 128],
    /// Digest of the whole guest memory at the hand-over as the source
    /// holds it (paused), to compare with the receiver's
    /// (`perfplus_receiver_report.guest_memory_digest`); 0 if the source
    /// backend cannot read its memory after the hand-over.
    pub guest_memory_digest: u64,
}

impl perfplus_migration_report {
    /// The C form of an engine report.
    pub(crate) fn from_report(r: &MigrationReport, guest_memory_digest: u64) -> Self {
        Self {
            policy: c_string_field(r.policy),
            rounds: r.rounds,
            downtime_ms: r.downtime_ms,
            total_ms: r.total_ms,
            bytes_on_wire: r.bytes_on_wire,
            pages_sent: r.sent.pages(),
            zero_pages: r.sent.zero_pages,
            raw_pages: r.sent.raw_pages,
            delta_pages: r.sent.delta_pages,
            final_pages: r.final_pages,
            deferred_pages: r.deferred_pages,
            converged: true,
            verified: r.verified,
            stop_reason: c_string_field(r.stop_reason),
            guest_memory_digest,
        }
    }
}

/// The engine's progress observer, forwarding to a C callback: what every
/// migration entry point passes to the engine.
pub(crate) struct ProgressCallback {
    callback: perfplus_migration_progress_fn,
    userdata: *mut c_void,
    last: perfplus_migration_progress,
    /// The callback asked to cancel where the engine cannot stop at once
    /// (a batch in flight): cancel at the next point where it can.
    cancel_pending: bool,
}

impl ProgressCallback {
    /// Forward to `callback` (NULL: no callback) with `userdata`.
    pub(crate) fn new(callback: perfplus_migration_progress_fn, userdata: *mut c_void) -> Self {
        Self {
            callback,
            userdata,
            last: perfplus_migration_progress {
                phase: perfplus_migration_phase::PERFPLUS_MIGRATION_ROUND,
                round: 0,
                elapsed_ms: 0.0,
                dirty_pages: 0,
                deferred_pages: 0,
                final_pages: 0,
                dirty_rate_pages_per_s: 0.0,
                bandwidth_bytes_per_s: 0.0,
                predicted_downtime_ms: f64::INFINITY,
                pages_sent_total: 0,
                bytes_sent_total: 0,
                round_pages_sent: 0,
                round_pages: 0,
                downtime_ms: 0.0,
                decision: perfplus_decision::from_decision(&crate::migration::Decision {
                    action: crate::migration::Action::Continue,
                    cpu_cap: None,
                    min_round_ms: 0.0,
                    reason: "",
                    send_deferred: false,
                }),
            },
            cancel_pending: false,
        }
    }

    /// Update the C view with `progress`, call the callback, and turn its
    /// answer into the engine's.
    pub(crate) fn observe(&mut self, progress: &Progress) -> ProgressFlow {
        use perfplus_migration_phase as P;
        let p = &mut self.last;
        match progress {
            Progress::Decided { stats, decision } => {
                p.phase = P::PERFPLUS_MIGRATION_ROUND;
                p.round = stats.iteration;
                p.elapsed_ms = stats.elapsed_ms;
                p.dirty_pages = stats.dirty_pages;
                p.deferred_pages = stats.deferred_pages;
                p.dirty_rate_pages_per_s = stats.dirty_rate_pages_per_s;
                p.bandwidth_bytes_per_s = stats.bandwidth_bytes_per_s;
                p.predicted_downtime_ms = stats.predicted_downtime_ms;
                p.pages_sent_total = stats.pages_sent_total;
                p.bytes_sent_total = stats.bytes_sent_total;
                p.decision = perfplus_decision::from_decision(decision);
            }
            Progress::Sent {
                round,
                round_pages_sent,
                round_pages,
                bytes_on_wire,
            } => {
                p.phase = P::PERFPLUS_MIGRATION_SENT;
                p.round = *round;
                p.round_pages_sent = *round_pages_sent;
                p.round_pages = *round_pages;
                p.bytes_sent_total = *bytes_on_wire;
            }
            Progress::Paused {
                final_pages,
                elapsed_ms,
            } => {
                p.phase = P::PERFPLUS_MIGRATION_PAUSED;
                p.final_pages = *final_pages;
                p.elapsed_ms = *elapsed_ms;
            }
            Progress::Verified { elapsed_ms } => {
                p.phase = P::PERFPLUS_MIGRATION_VERIFIED;
                p.elapsed_ms = *elapsed_ms;
            }
            Progress::Resumed {
                downtime_ms,
                elapsed_ms,
            } => {
                p.phase = P::PERFPLUS_MIGRATION_RESUMED;
                p.downtime_ms = *downtime_ms;
                p.elapsed_ms = *elapsed_ms;
            }
        }
        let Some(callback) = self.callback else {
            return ProgressFlow::Continue;
        };
        // SAFETY: the caller of the migration entry point promised that
        // `callback` is a valid function taking this userdata, on this
        // thread; the progress struct outlives the call.
        let answer = unsafe { callback(self.userdata, &self.last) };
        self.cancel_pending |= answer != 0;
        match progress {
            Progress::Decided { .. } | Progress::Paused { .. } if self.cancel_pending => {
                ProgressFlow::Cancel
            }
            _ => ProgressFlow::Continue,
        }
    }
}

/// A new migration configuration: policy `perfplus` (downtime target
/// 100 ms), network reads and writes that time out after 30 s. Free it with
/// `perfplus_migration_config_free`. Starts no thread.
///
/// # Safety
/// `out` must be writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_migration_config_new(
    out: *mut *mut perfplus_migration_config,
) -> perfplus_result {
    const NAME: &str = "perfplus_migration_config_new";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        out.write(box_handle::<perfplus_migration_config>(MigrationConfig {
            policy: policy_by_name(NAME, "perfplus")?,
            downtime_target_ms: None,
            io_timeout: Duration::from_millis(u64::from(DEFAULT_IO_TIMEOUT_MS)),
        }));
        Ok(())
    })
}

/// Run `body` on the configuration behind `config`.
///
/// # Safety
/// `config` must be a live configuration, not used by another thread during
/// the call, or NULL.
unsafe fn with_config(
    function: &'static str,
    config: *mut perfplus_migration_config,
    body: impl FnOnce(&mut MigrationConfig) -> Result<(), Failure>,
) -> perfplus_result {
    super::boundary::guard(function, move || {
        // SAFETY: forwarded caller promise.
        let config = unsafe { box_handle_mut(config, function, "config") }?;
        body(config)
    })
}

/// Choose the policy by name: `perfplus`, `xen-default`, `qemu-default` or
/// `stop-and-copy`. A downtime target set earlier carries over; a policy
/// that cannot take it is refused (`PERFPLUS_RESULT_INVALID_ARGUMENT`) and
/// the configuration is unchanged.
///
/// # Safety
/// `config` must be a live configuration or NULL, not used by another
/// thread during the call; `policy` a NUL-terminated string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_migration_config_set_policy(
    config: *mut perfplus_migration_config,
    policy: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_migration_config_set_policy";
    let body = |c: &mut MigrationConfig| {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let name = unsafe { arg_str(policy, NAME, "policy") }?;
        let mut chosen = policy_by_name(NAME, name)?;
        if let Some(ms) = c.downtime_target_ms {
            set_downtime_target(NAME, &mut chosen, ms)?;
        }
        c.policy = chosen;
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Set the downtime the policy aims at, ms (finite, > 0): Perf+'s target
/// or QEMU's limit. `xen-default` and `stop-and-copy` have none
/// (`PERFPLUS_RESULT_INVALID_ARGUMENT`, nothing changes).
///
/// # Safety
/// `config` must be a live configuration or NULL, not used by another
/// thread during the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_migration_config_set_downtime_target_ms(
    config: *mut perfplus_migration_config,
    downtime_target_ms: f64,
) -> perfplus_result {
    const NAME: &str = "perfplus_migration_config_set_downtime_target_ms";
    let body = |c: &mut MigrationConfig| {
        set_downtime_target(NAME, &mut c.policy, downtime_target_ms)?;
        c.downtime_target_ms = Some(downtime_target_ms);
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Set how long any network read, write or connect may wait, ms (1 or
/// more; default 30 000). A receiver that stops answering fails the
/// migration after this long, with the guest still at the source.
///
/// # Safety
/// `config` must be a live configuration or NULL, not used by another
/// thread during the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_migration_config_set_io_timeout_ms(
    config: *mut perfplus_migration_config,
    io_timeout_ms: u32,
) -> perfplus_result {
    const NAME: &str = "perfplus_migration_config_set_io_timeout_ms";
    let body = |c: &mut MigrationConfig| {
        if io_timeout_ms == 0 {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
                format!("{NAME}: the timeout must be at least 1 ms"),
            ));
        }
        c.io_timeout = Duration::from_millis(u64::from(io_timeout_ms));
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Free a configuration; NULL is a no-op.
///
/// # Safety
/// `config` must be NULL or a live configuration, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_migration_config_free(config: *mut perfplus_migration_config) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(config) }
    });
}

/// Connect to `address` (`host:port`), trying each address it resolves to.
pub(crate) fn connect(
    function: &str,
    address: &str,
    timeout: Duration,
) -> Result<TcpStream, Failure> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| {
            Failure::new(
                perfplus_result::PERFPLUS_RESULT_ADDRESS,
                format!("{function}: cannot resolve \"{address}\" (expected host:port): {e}"),
            )
        })?
        .collect();
    let mut last = None;
    for a in &addresses {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some((a, e)),
        }
    }
    let (code, why) = match &last {
        Some((a, e)) if e.kind() == std::io::ErrorKind::TimedOut => (
            perfplus_result::PERFPLUS_RESULT_TIMEOUT,
            format!("{a}: no answer within {} ms", timeout.as_millis()),
        ),
        Some((a, e)) => (
            perfplus_result::PERFPLUS_RESULT_CONNECTION_LOST,
            format!("{a}: {e}"),
        ),
        None => (
            perfplus_result::PERFPLUS_RESULT_ADDRESS,
            "it resolves to no address".into(),
        ),
    };
    Err(Failure::new(
        code,
        format!(
            "{function}: cannot connect to the receiver at {address} ({why}); nothing was sent"
        ),
    ))
}

/// Live-migrate a simulated guest to the receiver at `to_address`
/// (`host:port`, e.g. from `perfplus_receiver_local_address`) over TCP,
/// with the real engine and the configured policy, on the calling thread
/// (no thread is started).
///
/// The guest runs the workload described in the TOML file at
/// `workload_path` (see `benches/workloads/`), at 1/`scale_down` of its
/// size and write rates (1: as written), in real time: it keeps dirtying
/// pages while the rounds go over the wire. Its `[link]` section is
/// ignored (the link is the real one).
///
/// `progress` (may be NULL) is called with `userdata` on this thread before
/// each round, at the pause, when the receiver verified the stream and when
/// the guest runs there; a non-zero answer before the hand-over cancels.
///
/// On success `*out` receives the report. On failure nothing is written:
/// `PERFPLUS_RESULT_MIGRATION_ABORTED` (cancelled, receiver refused or
/// gone; the guest still runs at the source),
/// `PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED` (the policy gave up),
/// `PERFPLUS_RESULT_TIMEOUT` or `PERFPLUS_RESULT_CONNECTION_LOST` (could not
/// connect), `PERFPLUS_RESULT_INVALID_CONFIG` (a bad workload file: the
/// message names the line and field).
///
/// # Safety
/// `config` must be a live configuration or NULL (not freed during the
/// call); `workload_path` and `to_address` NUL-terminated strings or NULL;
/// `progress` a valid function or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_migration_send_sim(
    config: *const perfplus_migration_config,
    workload_path: *const c_char,
    scale_down: u32,
    to_address: *const c_char,
    progress: perfplus_migration_progress_fn,
    userdata: *mut c_void,
    out: *mut perfplus_migration_report,
) -> perfplus_result {
    const NAME: &str = "perfplus_migration_send_sim";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let config = unsafe { box_handle_ref(config, NAME, "config") }?.clone();
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let workload_path = unsafe { arg_str(workload_path, NAME, "workload_path") }?;
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let to_address = unsafe { arg_str(to_address, NAME, "to_address") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        if scale_down == 0 {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
                format!("{NAME}: `scale_down` is 0; 1 runs the workload as written"),
            ));
        }
        let workload = Workload::load(Path::new(workload_path))
            .map_err(crate::Error::from)?
            .scaled_down(u64::from(scale_down));
        let stream = connect(NAME, to_address, config.io_timeout)?;
        let transport = TcpTransport::new(stream, config.io_timeout)
            .map_err(|e| crate::Error::from(crate::migration::MigrationError::from(e)))?;
        let mut source = RealTimeSim::new(&workload, 1);
        let memory_bytes = source.page_count() * source.page_size() as u64;
        let mut sink = PerfplusSink::new(
            transport,
            config.policy.encodings(),
            default_delta_cache_bytes(memory_bytes),
            config.io_timeout,
        );
        let engine = EngineConfig {
            switchover_fixed_ms: workload.switchover_fixed_ms,
            state_bytes: STATE_BLOB_BYTES as u64,
            ..EngineConfig::default()
        };
        let mut callback = ProgressCallback::new(progress, userdata);
        let report = migrate(
            &mut source,
            &config.policy,
            &mut sink,
            &RealClock::new(),
            &engine,
            &mut |p: &Progress| callback.observe(p),
        )
        .map_err(crate::Error::from)?;
        // The source stays paused after the hand-over: its memory is the
        // guest's at the switchover.
        let digest = memory_digest(&mut source).map_err(crate::Error::from)?;
        out.write(perfplus_migration_report::from_report(&report, digest));
        Ok(())
    })
}
