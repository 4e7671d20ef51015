//! Live-migrating a Xen guest from C: the same migration as `perfplus
//! migrate --backend xen` ([`crate::backend::xen::migrate_domain`]).
//!
//! Build the options (`perfplus_xen_migrate_options_new`, `_set_*`; NULL
//! options mean the defaults), then call `perfplus_xen_migrate`, which
//! blocks until the guest runs at the destination or the migration failed,
//! calling `progress` on the calling thread at each decision. It runs a
//! helper thread and the transport command for the duration of the call,
//! none afterwards.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use super::error::Failure;
use super::handle::{
    arg_out, arg_str, box_handle, box_handle_free, box_handle_mut, box_handle_ref, BoxHandle,
};
use super::result::perfplus_result;
use crate::backend::xen::{migrate_domain, XenHost, XenMigrationOptions};
use crate::migration::policy::{by_name, PerfPlus, POLICY_NAMES};
use crate::migration::{Action, PrecopyPolicy, Progress, ProgressFlow};

/// Options of a Xen migration under construction (opaque).
pub struct perfplus_xen_migrate_options {
    _private: [u8; 0],
}

/// What the options hold until the migration builds its own.
#[derive(Debug, Clone)]
pub(crate) struct MigrateOptions {
    policy: String,
    downtime_target_ms: Option<f64>,
    ssh_command: String,
    receiver: Option<String>,
    stock_receiver: bool,
    reply_timeout_ms: u64,
    suspend_timeout_ms: u64,
    delta_cache_bytes: usize,
    keep_source: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            policy: "perfplus".into(),
            downtime_target_ms: None,
            ssh_command: "ssh".into(),
            receiver: None,
            stock_receiver: false,
            reply_timeout_ms: 120_000,
            suspend_timeout_ms: 60_000,
            delta_cache_bytes: 64 << 20,
            keep_source: false,
        }
    }
}

impl BoxHandle for perfplus_xen_migrate_options {
    type Inner = MigrateOptions;
}

/// What a progress event reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_xen_migration_event_kind {
    /// Before a round: the policy's decision (`round`, `dirty_pages`,
    /// `predicted_downtime_ms`, `bandwidth_bytes_per_s`, `stop`, `reason`).
    PERFPLUS_XEN_MIGRATION_DECIDED = 1,
    /// The guest is stopped for the final pass.
    PERFPLUS_XEN_MIGRATION_SUSPENDED = 2,
    /// The destination has built the domain from the whole stream.
    PERFPLUS_XEN_MIGRATION_VERIFIED = 3,
    /// The guest runs at the destination (`downtime_ms`).
    PERFPLUS_XEN_MIGRATION_RESUMED = 4,
}

/// One progress event. Valid only during the callback; copy what you keep.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct perfplus_xen_migration_event {
    /// What happened.
    pub kind: perfplus_xen_migration_event_kind,
    /// Since the migration started, ms.
    pub elapsed_ms: f64,
    /// DECIDED: rounds already sent (0 before the full pass).
    pub round: u32,
    /// DECIDED: pages the next round would send.
    pub dirty_pages: u64,
    /// DECIDED: predicted downtime if the guest stopped now, ms.
    pub predicted_downtime_ms: f64,
    /// DECIDED: measured link bandwidth, bytes per second.
    pub bandwidth_bytes_per_s: f64,
    /// DECIDED: the policy stops pre-copy now (the rest is copied with the
    /// guest stopped).
    pub stop: bool,
    /// DECIDED: why, NUL-terminated; NULL for other events.
    pub reason: *const c_char,
    /// RESUMED: the downtime, ms.
    pub downtime_ms: f64,
}

/// Called with `userdata` for each progress event, on the thread that
/// called `perfplus_xen_migrate`. Return 0 to go on, anything else to
/// cancel (honoured before the guest is suspended).
pub type perfplus_xen_progress_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        event: *const perfplus_xen_migration_event,
    ) -> c_int,
>;

/// What a successful migration did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct perfplus_xen_migration_report {
    /// The source domain's id.
    pub domid: u32,
    /// True for a PVH guest (own rounds), false for PV (libxenguest's loop).
    pub pvh: bool,
    /// At the source, from the suspend request to the destination's report, ms.
    pub downtime_ms: f64,
    /// From the start to the hand-over, ms.
    pub total_ms: f64,
    /// Bytes on the wire.
    pub bytes_on_wire: u64,
    /// Pages sent, all rounds.
    pub pages_sent: u64,
    /// Live rounds (the full pass included).
    pub rounds: u32,
    /// The destination built the domain from the whole stream and started it.
    pub verified: bool,
    /// Pages sent as zero markers.
    pub zero_pages: u64,
    /// Pages sent as deltas.
    pub delta_pages: u64,
    /// Pages sent whole.
    pub raw_pages: u64,
    /// Pages in the final pass (guest stopped).
    pub final_pages: u64,
    /// The source domain was destroyed.
    pub source_destroyed: bool,
}

fn invalid(function: &str, message: impl std::fmt::Display) -> Failure {
    Failure::new(
        perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
        format!("{function}: {message}"),
    )
}

/// New options with the defaults: policy `perfplus`, transport `ssh`,
/// receiver `perfplus migrate-receive` (transcoded stream), 120 s for the
/// receiver's answers, 60 s to suspend, a 64 MiB delta cache, the source
/// destroyed afterwards. Free with `perfplus_xen_migrate_options_free`.
///
/// # Safety
/// `out` must be writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_new(
    out: *mut *mut perfplus_xen_migrate_options,
) -> perfplus_result {
    const NAME: &str = "perfplus_xen_migrate_options_new";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        out.write(box_handle::<perfplus_xen_migrate_options>(
            MigrateOptions::default(),
        ));
        Ok(())
    })
}

/// Run `body` on the options behind `options`.
///
/// # Safety
/// `options` must be NULL or live options not used by another thread.
unsafe fn with_options(
    name: &'static str,
    options: *mut perfplus_xen_migrate_options,
    body: impl FnOnce(&mut MigrateOptions) -> Result<(), Failure>,
) -> perfplus_result {
    super::boundary::guard(name, || {
        // SAFETY: forwarded caller promise.
        let options = unsafe { box_handle_mut(options, name, "options") }?;
        body(options)
    })
}

/// The pre-copy policy: `perfplus`, `xen-default`, `qemu-default` or
/// `stop-and-copy`.
///
/// # Safety
/// `options` must be live options or NULL; `policy` a NUL-terminated string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_set_policy(
    options: *mut perfplus_xen_migrate_options,
    policy: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_xen_migrate_options_set_policy";
    let body = |o: &mut MigrateOptions| {
        // SAFETY: the caller promises a valid string or NULL.
        let policy = unsafe { arg_str(policy, NAME, "policy") }?;
        if by_name(policy).is_none() {
            return Err(invalid(
                NAME,
                format!(
                    "unknown policy \"{policy}\" (one of {})",
                    POLICY_NAMES.join(", ")
                ),
            ));
        }
        if policy != o.policy {
            o.downtime_target_ms = None;
        }
        o.policy = policy.to_string();
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_options(NAME, options, body) }
}

/// Perf+'s downtime target, ms (default 100): above it, a pre-copy that
/// stopped converging watches for a quieter moment before stopping. Only
/// for the `perfplus` policy (set it after the policy).
///
/// # Safety
/// `options` must be live options or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_set_downtime_target_ms(
    options: *mut perfplus_xen_migrate_options,
    target_ms: f64,
) -> perfplus_result {
    const NAME: &str = "perfplus_xen_migrate_options_set_downtime_target_ms";
    // SAFETY: forwarded caller promises.
    unsafe {
        with_options(NAME, options, |o| {
            if o.policy != "perfplus" {
                return Err(invalid(
                    NAME,
                    format!("the policy is {}, not perfplus", o.policy),
                ));
            }
            if !(target_ms.is_finite() && target_ms > 0.0) {
                return Err(invalid(
                    NAME,
                    format!("`target_ms` {target_ms} is not positive"),
                ));
            }
            o.downtime_target_ms = Some(target_ms);
            Ok(())
        })
    }
}

/// The transport (default `ssh`): runs `SSH_COMMAND DESTINATION RECEIVER`;
/// with "" the destination itself is the transport command (xl's `-s ""`).
///
/// # Safety
/// `options` must be live options or NULL; `ssh_command` a NUL-terminated string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_set_ssh_command(
    options: *mut perfplus_xen_migrate_options,
    ssh_command: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_xen_migrate_options_set_ssh_command";
    let body = |o: &mut MigrateOptions| {
        // SAFETY: the caller promises a valid string or NULL.
        o.ssh_command = unsafe { arg_str(ssh_command, NAME, "ssh_command") }?.to_string();
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_options(NAME, options, body) }
}

/// The receiver command run at the destination (default `perfplus
/// migrate-receive`, or `xl migrate-receive` with the stock receiver).
///
/// # Safety
/// `options` must be live options or NULL; `receiver` a NUL-terminated string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_set_receiver(
    options: *mut perfplus_xen_migrate_options,
    receiver: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_xen_migrate_options_set_receiver";
    let body = |o: &mut MigrateOptions| {
        // SAFETY: the caller promises a valid string or NULL.
        let receiver = unsafe { arg_str(receiver, NAME, "receiver") }?;
        if receiver.trim().is_empty() {
            return Err(invalid(NAME, "`receiver` is empty"));
        }
        o.receiver = Some(receiver.to_string());
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_options(NAME, options, body) }
}

/// Whether the destination runs the stock `xl migrate-receive` (the plain
/// stream, no perfplus needed there) instead of `perfplus migrate-receive`.
///
/// # Safety
/// `options` must be live options or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_set_stock_receiver(
    options: *mut perfplus_xen_migrate_options,
    stock_receiver: bool,
) -> perfplus_result {
    // SAFETY: forwarded caller promises.
    unsafe {
        with_options(
            "perfplus_xen_migrate_options_set_stock_receiver",
            options,
            |o| {
                o.stock_receiver = stock_receiver;
                Ok(())
            },
        )
    }
}

/// The longest wait for each answer of the receiver (and for it to read
/// the stream), ms (at least 1).
///
/// # Safety
/// `options` must be live options or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_set_reply_timeout_ms(
    options: *mut perfplus_xen_migrate_options,
    timeout_ms: u64,
) -> perfplus_result {
    const NAME: &str = "perfplus_xen_migrate_options_set_reply_timeout_ms";
    // SAFETY: forwarded caller promises.
    unsafe {
        with_options(NAME, options, |o| {
            if timeout_ms == 0 {
                return Err(invalid(NAME, "`timeout_ms` is 0"));
            }
            o.reply_timeout_ms = timeout_ms;
            Ok(())
        })
    }
}

/// Keep the source domain (suspended, renamed `NAME--migratedaway`) after
/// a successful migration instead of destroying it.
///
/// # Safety
/// `options` must be live options or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_set_keep_source(
    options: *mut perfplus_xen_migrate_options,
    keep_source: bool,
) -> perfplus_result {
    // SAFETY: forwarded caller promises.
    unsafe {
        with_options(
            "perfplus_xen_migrate_options_set_keep_source",
            options,
            |o| {
                o.keep_source = keep_source;
                Ok(())
            },
        )
    }
}

/// Free options; NULL is a no-op.
///
/// # Safety
/// `options` must be NULL or live options, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate_options_free(
    options: *mut perfplus_xen_migrate_options,
) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(options) }
    });
}

/// Live-migrate the Xen domain `domain` (name or id) to `destination`, as
/// `perfplus migrate --backend xen` does (run as root in dom0). Blocks until
/// done. `options` may be NULL (the defaults); `progress` may be NULL; each
/// event is passed with `userdata`. `out_report` may be NULL; it is written
/// only on success.
///
/// Results: `PERFPLUS_RESULT_OK`, the guest runs at the destination;
/// `PERFPLUS_RESULT_MIGRATION_ABORTED` (or `_NOT_CONVERGED`, `_TIMEOUT`,
/// `_CONNECTION_LOST`, ...), the guest runs at the source;
/// `PERFPLUS_RESULT_INVALID_STATE`, the hand-over broke after the destination
/// was told to start the guest: check both hosts before resuming either
/// copy; `PERFPLUS_RESULT_HYPERVISOR_*` and `_DOMAIN_NOT_FOUND`, nothing
/// was started.
///
/// # Safety
/// `domain` and `destination` must be NUL-terminated strings or NULL;
/// `options` live options or NULL; `progress`, if not NULL, a function
/// taking this `userdata`; `out_report` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_xen_migrate(
    domain: *const c_char,
    destination: *const c_char,
    options: *const perfplus_xen_migrate_options,
    progress: perfplus_xen_progress_fn,
    userdata: *mut c_void,
    out_report: *mut perfplus_xen_migration_report,
) -> perfplus_result {
    const NAME: &str = "perfplus_xen_migrate";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises valid strings or NULL.
        let domain = unsafe { arg_str(domain, NAME, "domain") }?;
        // SAFETY: as above.
        let destination = unsafe { arg_str(destination, NAME, "destination") }?;
        let defaults = MigrateOptions::default();
        let o = if options.is_null() {
            &defaults
        } else {
            // SAFETY: the caller promises live options (checked non-NULL).
            unsafe { box_handle_ref(options, NAME, "options") }?
        };
        let out = if out_report.is_null() {
            None
        } else {
            // SAFETY: the caller promises `out_report` is writable.
            Some(unsafe { arg_out(out_report, NAME, "out_report") }?)
        };
        if domain.is_empty() || destination.is_empty() {
            return Err(invalid(
                NAME,
                "`domain` and `destination` must not be empty",
            ));
        }
        let policy: Box<dyn PrecopyPolicy> = match o.downtime_target_ms {
            Some(downtime_target_ms) => Box::new(PerfPlus {
                downtime_target_ms,
                ..PerfPlus::default()
            }),
            None => by_name(&o.policy).ok_or_else(|| invalid(NAME, "unknown policy"))?,
        };
        let mut xen = XenMigrationOptions::for_destination(
            destination,
            &o.ssh_command,
            o.receiver.as_deref(),
            o.stock_receiver,
        );
        xen.reply_timeout = Duration::from_millis(o.reply_timeout_ms);
        xen.write_timeout = Duration::from_millis(o.reply_timeout_ms);
        xen.suspend_timeout = Duration::from_millis(o.suspend_timeout_ms);
        xen.delta_cache_bytes = o.delta_cache_bytes;
        xen.destroy_source = !o.keep_source;
        let mut observer = |p: &Progress| report_progress(progress, userdata, p);
        let host = XenHost::open().map_err(crate::Error::from)?;
        let r = migrate_domain(&host, domain, policy.as_ref(), &xen, &mut observer)?;
        let m = &r.migration;
        if let Some(out) = out {
            out.write(perfplus_xen_migration_report {
                domid: r.domid,
                pvh: r.guest_type == crate::backend::xen::GuestType::Pvh,
                downtime_ms: m.downtime_ms,
                total_ms: m.total_ms,
                bytes_on_wire: m.bytes_on_wire,
                pages_sent: m.sent.pages(),
                rounds: m.rounds,
                verified: m.verified,
                zero_pages: m.sent.zero_pages,
                delta_pages: m.sent.delta_pages,
                raw_pages: m.sent.raw_pages,
                final_pages: m.final_pages,
                source_destroyed: r.source_destroyed,
            });
        }
        Ok(())
    })
}

/// Pass one event to the C callback.
fn report_progress(
    progress: perfplus_xen_progress_fn,
    userdata: *mut c_void,
    p: &Progress,
) -> ProgressFlow {
    let Some(callback) = progress else {
        return ProgressFlow::Continue;
    };
    use perfplus_xen_migration_event_kind as K;
    let mut event = perfplus_xen_migration_event {
        kind: K::PERFPLUS_XEN_MIGRATION_DECIDED,
        elapsed_ms: 0.0,
        round: 0,
        dirty_pages: 0,
        predicted_downtime_ms: 0.0,
        bandwidth_bytes_per_s: 0.0,
        stop: false,
        reason: std::ptr::null(),
        downtime_ms: 0.0,
    };
    let mut reason = None;
    match p {
        Progress::Decided { stats, decision } => {
            event.elapsed_ms = stats.elapsed_ms;
            event.round = stats.iteration;
            event.dirty_pages = stats.dirty_pages;
            event.predicted_downtime_ms = stats.predicted_downtime_ms;
            event.bandwidth_bytes_per_s = stats.bandwidth_bytes_per_s;
            event.stop = decision.action == Action::StopAndCopy;
            reason = CString::new(decision.reason).ok();
        }
        Progress::Paused { elapsed_ms, .. } => {
            event.kind = K::PERFPLUS_XEN_MIGRATION_SUSPENDED;
            event.elapsed_ms = *elapsed_ms;
        }
        Progress::Verified { elapsed_ms } => {
            event.kind = K::PERFPLUS_XEN_MIGRATION_VERIFIED;
            event.elapsed_ms = *elapsed_ms;
        }
        Progress::Resumed {
            downtime_ms,
            elapsed_ms,
        } => {
            event.kind = K::PERFPLUS_XEN_MIGRATION_RESUMED;
            event.elapsed_ms = *elapsed_ms;
            event.downtime_ms = *downtime_ms;
        }
        // Per-batch events are for progress bars; C hears of rounds.
        Progress::Sent { .. } => return ProgressFlow::Continue,
    }
    if let Some(r) = &reason {
        event.reason = r.as_ptr();
    }
    // SAFETY: the caller of perfplus_xen_migrate promised `callback` takes
    // this userdata; the event (and its reason) outlive the call.
    let answer = unsafe { callback(userdata, &event) };
    if answer == 0 {
        ProgressFlow::Continue
    } else {
        ProgressFlow::Cancel
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::last_error;
    use super::*;

    #[test]
    fn a_null_domain_is_refused_by_name() {
        // SAFETY: NULL arguments are refused before any use.
        let code = unsafe {
            perfplus_xen_migrate(
                std::ptr::null(),
                c"host2".as_ptr(),
                std::ptr::null(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_NULL_ARGUMENT);
        assert_eq!(
            last_error(),
            "perfplus_xen_migrate: argument `domain` is NULL"
        );
    }

    #[test]
    fn an_unknown_policy_is_refused_with_the_known_ones() {
        let mut options = std::ptr::null_mut();
        // SAFETY: a local out-parameter.
        let code = unsafe { perfplus_xen_migrate_options_new(&mut options) };
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_OK);
        // SAFETY: live options and a NUL-terminated literal.
        let code = unsafe { perfplus_xen_migrate_options_set_policy(options, c"fastest".as_ptr()) };
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT);
        assert!(
            last_error().contains("perfplus, xen-default"),
            "{}",
            last_error()
        );
        // SAFETY: live options, freed once.
        unsafe { perfplus_xen_migrate_options_free(options) };
    }
}
