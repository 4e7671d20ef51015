//! Pre-copy policies from C: Perf+'s stop rule (and the baselines) as a pure
//! function of a per-round stats snapshot, for a C toolstack's own pre-copy
//! loop (e.g. a libxenguest `precopy_policy` callback).
//!
//! ```c
//! perfplus_policy *policy;
//! perfplus_policy_new("perfplus", &policy);
//! perfplus_policy_set_downtime_target_ms(policy, 50.0);
//! perfplus_round_stats stats;   // filled by hand, or by a perfplus_round_tracker
//! perfplus_decision decision;
//! perfplus_policy_decide(policy, &stats, &decision);
//! if (decision.action == PERFPLUS_PRECOPY_STOP_AND_COPY) ...   // decision.reason says why
//! perfplus_policy_free(policy);
//! ```
//!
//! The structs are plain data with fixed-width fields; the policy reads
//! nothing else (no clock, no state), so the same snapshot always gets the
//! same decision.

use std::ffi::c_char;

use super::error::Failure;
use super::handle::{
    arg_out, arg_ref, arg_str, box_handle, box_handle_free, box_handle_mut, box_handle_ref,
    c_string_field, BoxHandle,
};
use super::result::perfplus_result;
use crate::migration::policy::{BuiltinPolicy, POLICY_NAMES};
use crate::migration::{Action, Decision, PrecopyPolicy, RoundStats};

/// A pre-copy policy (opaque): one of the built-in ones, with its settings.
pub struct perfplus_policy {
    _private: [u8; 0],
}

impl BoxHandle for perfplus_policy {
    type Inner = BuiltinPolicy;
}

/// What the policy sees before a round. All times in ms, sizes in bytes,
/// rates per second. "Infinite" fields take `INFINITY` from `<math.h>`;
/// no field may be NaN.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct perfplus_round_stats {
    /// Rounds already sent (0 before the first, full pass).
    pub iteration: u32,
    /// Time since the migration started.
    pub elapsed_ms: f64,
    /// Guest memory.
    pub memory_bytes: u64,
    /// Bytes per page (not 0).
    pub page_size: u32,
    /// Pages sent so far.
    pub pages_sent_total: u64,
    /// Bytes on the wire so far.
    pub bytes_sent_total: u64,
    /// Duration of the last round (0 before the first).
    pub last_round_ms: f64,
    /// Pages the next live round would send (dirty and not deferred).
    pub dirty_pages: u64,
    /// Hot pages held back for the final pass (0 if the caller does not
    /// defer pages, e.g. inside libxenguest's loop).
    pub deferred_pages: u64,
    /// Distinct pages dirtied per second during the last round (0 before).
    pub dirty_rate_pages_per_s: f64,
    /// Measured link bandwidth, bytes per second (0 until measured).
    pub bandwidth_bytes_per_s: f64,
    /// Expected wire bytes per resent page (the raw page size until measured).
    pub wire_bytes_per_page: f64,
    /// Expected fixed switchover cost (CPU state, resume).
    pub switchover_fixed_ms: f64,
    /// Round-trip time of the link.
    pub round_trip_ms: f64,
    /// Predicted downtime if the guest were paused now (INFINITY until the
    /// bandwidth is known).
    pub predicted_downtime_ms: f64,
    /// The part of the prediction more rounds cannot remove: fixed cost,
    /// round trips, and `predicted_hot_ms`.
    pub predicted_floor_ms: f64,
    /// The deferred pages' part of the floor: sending those expected to be
    /// written again during the next round (0 without deferred pages).
    pub predicted_hot_ms: f64,
    /// Lowest prediction of any earlier round, priced at the current cost
    /// per page: that round's owed pages at today's rates (INFINITY if
    /// none).
    pub best_earlier_prediction_ms: f64,
    /// Decisions since that lowest prediction (0 if this one is lower).
    pub decisions_since_best: u32,
    /// Time since that lowest prediction.
    pub ms_since_best: f64,
    /// Duration of the first, full pass (0 before it ended).
    pub first_round_ms: f64,
    /// The CPU cap in force, 1 to 100 (100: none).
    pub cpu_cap_percent: u8,
}

/// What a policy wants next.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_precopy_action {
    /// Send another live round.
    PERFPLUS_PRECOPY_CONTINUE = 1,
    /// Pause the guest and send the rest.
    PERFPLUS_PRECOPY_STOP_AND_COPY = 2,
    /// Give up: the guest keeps running at the source.
    PERFPLUS_PRECOPY_ABORT = 3,
}

/// A policy's decision.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct perfplus_decision {
    /// Continue, stop and copy, or abort.
    pub action: perfplus_precopy_action,
    /// The CPU cap wanted from now on, 1 to 100 (100: no cap).
    pub cpu_cap_percent: u8,
    /// Make the next round last at least this long (wait before harvesting
    /// the dirty log), ms; 0: no wait.
    pub min_round_ms: f64,
    /// Why, in words (NUL-terminated, cut to 127 bytes).
    pub reason: [c_char; 128],
}

impl perfplus_decision {
    /// The C form of a decision.
    pub(crate) fn from_decision(d: &Decision) -> Self {
        Self {
            action: match d.action {
                Action::Continue => perfplus_precopy_action::PERFPLUS_PRECOPY_CONTINUE,
                Action::StopAndCopy => perfplus_precopy_action::PERFPLUS_PRECOPY_STOP_AND_COPY,
                Action::Abort => perfplus_precopy_action::PERFPLUS_PRECOPY_ABORT,
            },
            cpu_cap_percent: d.cpu_cap.map_or(100, crate::backend::CpuShare::get),
            min_round_ms: d.min_round_ms,
            reason: c_string_field(d.reason),
        }
    }
}

impl perfplus_round_stats {
    /// The C form of a snapshot.
    pub(crate) fn from_stats(s: &RoundStats) -> Self {
        Self {
            iteration: s.iteration,
            elapsed_ms: s.elapsed_ms,
            memory_bytes: s.memory_bytes,
            page_size: u32::try_from(s.page_size).unwrap_or(u32::MAX),
            pages_sent_total: s.pages_sent_total,
            bytes_sent_total: s.bytes_sent_total,
            last_round_ms: s.last_round_ms,
            dirty_pages: s.dirty_pages,
            deferred_pages: s.deferred_pages,
            dirty_rate_pages_per_s: s.dirty_rate_pages_per_s,
            bandwidth_bytes_per_s: s.bandwidth_bytes_per_s,
            wire_bytes_per_page: s.wire_bytes_per_page,
            switchover_fixed_ms: s.switchover_fixed_ms,
            round_trip_ms: s.round_trip_ms,
            predicted_downtime_ms: s.predicted_downtime_ms,
            predicted_floor_ms: s.predicted_floor_ms,
            predicted_hot_ms: s.predicted_hot_ms,
            best_earlier_prediction_ms: s.best_earlier_prediction_ms,
            decisions_since_best: s.decisions_since_best,
            ms_since_best: s.ms_since_best,
            first_round_ms: s.first_round_ms,
            cpu_cap_percent: s.cpu_cap_percent,
        }
    }

    /// Check a snapshot from C and turn it into the Rust one: no NaN, no
    /// negative time, size or rate, a page size and a CPU cap in range.
    fn to_stats(self, function: &str) -> Result<RoundStats, Failure> {
        let invalid = |field: &str, why: &str| {
            Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
                format!("{function}: `stats->{field}` {why}"),
            )
        };
        let s = self;
        for (field, value) in [
            ("elapsed_ms", s.elapsed_ms),
            ("last_round_ms", s.last_round_ms),
            ("dirty_rate_pages_per_s", s.dirty_rate_pages_per_s),
            ("bandwidth_bytes_per_s", s.bandwidth_bytes_per_s),
            ("wire_bytes_per_page", s.wire_bytes_per_page),
            ("switchover_fixed_ms", s.switchover_fixed_ms),
            ("round_trip_ms", s.round_trip_ms),
            ("predicted_downtime_ms", s.predicted_downtime_ms),
            ("predicted_floor_ms", s.predicted_floor_ms),
            ("predicted_hot_ms", s.predicted_hot_ms),
            ("best_earlier_prediction_ms", s.best_earlier_prediction_ms),
            ("ms_since_best", s.ms_since_best),
            ("first_round_ms", s.first_round_ms),
        ] {
            if value.is_nan() {
                return Err(invalid(field, "is NaN"));
            }
            if value < 0.0 {
                return Err(invalid(field, &format!("is negative ({value})")));
            }
        }
        if s.page_size == 0 {
            return Err(invalid("page_size", "is 0"));
        }
        if !(1..=100).contains(&s.cpu_cap_percent) {
            return Err(invalid(
                "cpu_cap_percent",
                &format!("is {}; give 1 to 100 (100: no cap)", s.cpu_cap_percent),
            ));
        }
        Ok(RoundStats {
            iteration: s.iteration,
            elapsed_ms: s.elapsed_ms,
            memory_bytes: s.memory_bytes,
            page_size: s.page_size as usize,
            pages_sent_total: s.pages_sent_total,
            bytes_sent_total: s.bytes_sent_total,
            last_round_ms: s.last_round_ms,
            dirty_pages: s.dirty_pages,
            deferred_pages: s.deferred_pages,
            dirty_rate_pages_per_s: s.dirty_rate_pages_per_s,
            bandwidth_bytes_per_s: s.bandwidth_bytes_per_s,
            wire_bytes_per_page: s.wire_bytes_per_page,
            switchover_fixed_ms: s.switchover_fixed_ms,
            round_trip_ms: s.round_trip_ms,
            predicted_downtime_ms: s.predicted_downtime_ms,
            predicted_floor_ms: s.predicted_floor_ms,
            predicted_hot_ms: s.predicted_hot_ms,
            best_earlier_prediction_ms: s.best_earlier_prediction_ms,
            decisions_since_best: s.decisions_since_best,
            ms_since_best: s.ms_since_best,
            first_round_ms: s.first_round_ms,
            cpu_cap_percent: s.cpu_cap_percent,
        })
    }
}

/// The built-in policy called `name`, or a failure naming the choices.
pub(crate) fn policy_by_name(function: &str, name: &str) -> Result<BuiltinPolicy, Failure> {
    BuiltinPolicy::by_name(name).ok_or_else(|| {
        Failure::new(
            perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
            format!(
                "{function}: unknown policy \"{name}\": expected one of {}",
                POLICY_NAMES.join(", ")
            ),
        )
    })
}

/// Check a downtime target from C: finite and positive.
pub(crate) fn check_downtime_target(function: &str, ms: f64) -> Result<(), Failure> {
    if ms.is_finite() && ms > 0.0 {
        Ok(())
    } else {
        Err(Failure::new(
            perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
            format!("{function}: the downtime target must be a positive number of ms, not {ms}"),
        ))
    }
}

/// Set `policy`'s downtime target, or fail saying why it has none.
pub(crate) fn set_downtime_target(
    function: &str,
    policy: &mut BuiltinPolicy,
    ms: f64,
) -> Result<(), Failure> {
    check_downtime_target(function, ms)?;
    if policy.set_downtime_target_ms(ms) {
        return Ok(());
    }
    let why = match policy {
        BuiltinPolicy::XenDefault(_) => "it stops after 5 rounds or under 50 dirty pages",
        _ => "it never iterates",
    };
    Err(Failure::new(
        perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
        format!(
            "{function}: policy {} has no downtime target: {why}",
            policy.name()
        ),
    ))
}

/// A new policy: `perfplus` (default downtime target 100 ms), `xen-default`
/// (libxenguest's rule: 5 rounds or under 50 dirty pages), `qemu-default`
/// (remaining bytes fit in a 300 ms downtime limit at the measured
/// bandwidth; gives up after 30 minutes) or `stop-and-copy`. Free it with
/// `perfplus_policy_free`. Starts no thread.
///
/// # Safety
/// `name` must be a NUL-terminated string and `out` writable, or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_policy_new(
    name: *const c_char,
    out: *mut *mut perfplus_policy,
) -> perfplus_result {
    const NAME: &str = "perfplus_policy_new";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let name = unsafe { arg_str(name, NAME, "name") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let policy = policy_by_name(NAME, name)?;
        out.write(box_handle::<perfplus_policy>(policy));
        Ok(())
    })
}

/// Set the downtime the policy aims at, ms (finite, > 0): Perf+'s target,
/// or QEMU's downtime limit. `xen-default` and `stop-and-copy` have none:
/// `PERFPLUS_RESULT_INVALID_ARGUMENT`, and the policy is unchanged.
///
/// # Safety
/// `policy` must be a live policy or NULL, not used by another thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_policy_set_downtime_target_ms(
    policy: *mut perfplus_policy,
    downtime_target_ms: f64,
) -> perfplus_result {
    const NAME: &str = "perfplus_policy_set_downtime_target_ms";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let policy = unsafe { box_handle_mut(policy, NAME, "policy") }?;
        set_downtime_target(NAME, policy, downtime_target_ms)
    })
}

/// Decide from `stats` (see `perfplus_round_stats` for the fields and
/// their ranges; a NaN, a negative time, a zero page size or a CPU cap
/// outside 1..100 is `PERFPLUS_RESULT_INVALID_ARGUMENT` naming the field).
/// A pure function: the same stats always give the same decision. The
/// policy may be shared between threads for this call.
///
/// # Safety
/// `policy` must be a live policy or NULL; `stats` readable or NULL; `out`
/// writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_policy_decide(
    policy: *const perfplus_policy,
    stats: *const perfplus_round_stats,
    out: *mut perfplus_decision,
) -> perfplus_result {
    const NAME: &str = "perfplus_policy_decide";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let policy = unsafe { box_handle_ref(policy, NAME, "policy") }?;
        // SAFETY: the caller promises readable stats or NULL.
        let stats = unsafe { arg_ref(stats, NAME, "stats") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let stats = stats.to_stats(NAME)?;
        out.write(perfplus_decision::from_decision(&policy.decide(&stats)));
        Ok(())
    })
}

/// Free a policy; NULL is a no-op.
///
/// # Safety
/// `policy` must be NULL or a live policy, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_policy_free(policy: *mut perfplus_policy) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(policy) }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::error::last_error;

    fn new_policy(name: &std::ffi::CStr) -> *mut perfplus_policy {
        let mut policy = std::ptr::null_mut();
        // SAFETY: a NUL-terminated literal and a local out-parameter.
        let rc = unsafe { perfplus_policy_new(name.as_ptr(), &mut policy) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_OK, "{}", last_error());
        policy
    }

    fn stats() -> perfplus_round_stats {
        perfplus_round_stats {
            iteration: 3,
            elapsed_ms: 1000.0,
            memory_bytes: 1 << 30,
            page_size: 4096,
            pages_sent_total: 300_000,
            bytes_sent_total: 1 << 30,
            last_round_ms: 100.0,
            dirty_pages: 5000,
            deferred_pages: 0,
            dirty_rate_pages_per_s: 50_000.0,
            bandwidth_bytes_per_s: 1e9,
            wire_bytes_per_page: 4104.0,
            switchover_fixed_ms: 20.0,
            round_trip_ms: 0.4,
            predicted_downtime_ms: 85.0,
            predicted_floor_ms: 20.4,
            predicted_hot_ms: 0.0,
            best_earlier_prediction_ms: 90.0,
            decisions_since_best: 3,
            ms_since_best: 60_000.0,
            first_round_ms: 1000.0,
            cpu_cap_percent: 100,
        }
    }

    fn decide(policy: *const perfplus_policy, s: &perfplus_round_stats) -> perfplus_decision {
        let mut out = std::mem::MaybeUninit::<perfplus_decision>::uninit();
        // SAFETY: live handle, local stats, local out-parameter.
        let rc = unsafe { perfplus_policy_decide(policy, s, out.as_mut_ptr()) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_OK, "{}", last_error());
        // SAFETY: written on success.
        unsafe { out.assume_init() }
    }

    fn reason(d: &perfplus_decision) -> String {
        // SAFETY: the field is NUL-terminated.
        unsafe { std::ffi::CStr::from_ptr(d.reason.as_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_c_decision_is_the_rust_decision() {
        let policy = new_policy(c"perfplus");
        let s = stats();
        let d = decide(policy, &s);
        let rust = crate::migration::policy::PerfPlus::default().decide(&s.to_stats("t").unwrap());
        assert_eq!(
            d.action,
            perfplus_precopy_action::PERFPLUS_PRECOPY_STOP_AND_COPY
        );
        assert_eq!(reason(&d), rust.reason);
        assert_eq!(d.cpu_cap_percent, 100);
        // SAFETY: live handle, freed once.
        unsafe { perfplus_policy_free(policy) };
    }

    #[test]
    fn stats_round_trip_between_rust_and_c() {
        let s = stats();
        let back = perfplus_round_stats::from_stats(&s.to_stats("t").unwrap());
        assert_eq!(back, s);
    }

    #[test]
    fn nan_and_out_of_range_fields_are_refused_by_name() {
        let policy = new_policy(c"xen-default");
        let mut out = std::mem::MaybeUninit::<perfplus_decision>::uninit();
        for (edit, message) in [
            (
                Box::new(|s: &mut perfplus_round_stats| s.elapsed_ms = f64::NAN)
                    as Box<dyn Fn(&mut perfplus_round_stats)>,
                "perfplus_policy_decide: `stats->elapsed_ms` is NaN",
            ),
            (
                Box::new(|s: &mut perfplus_round_stats| s.cpu_cap_percent = 0),
                "perfplus_policy_decide: `stats->cpu_cap_percent` is 0; give 1 to 100 (100: no cap)",
            ),
            (
                Box::new(|s: &mut perfplus_round_stats| s.last_round_ms = -1.0),
                "perfplus_policy_decide: `stats->last_round_ms` is negative (-1)",
            ),
        ] {
            let mut s = stats();
            edit(&mut s);
            // SAFETY: live handle, local stats and out-parameter.
            let rc = unsafe { perfplus_policy_decide(policy, &s, out.as_mut_ptr()) };
            assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT);
            assert_eq!(last_error(), message);
        }
        // SAFETY: live handle, freed once.
        unsafe { perfplus_policy_free(policy) };
    }

    #[test]
    fn only_policies_with_a_target_take_one() {
        let xen = new_policy(c"xen-default");
        // SAFETY: live handle.
        let rc = unsafe { perfplus_policy_set_downtime_target_ms(xen, 50.0) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT);
        assert!(last_error().contains("xen-default has no downtime target"));
        let perfplus = new_policy(c"perfplus");
        // SAFETY: live handle.
        let rc = unsafe { perfplus_policy_set_downtime_target_ms(perfplus, f64::INFINITY) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT);
        // SAFETY: live handle.
        let rc = unsafe { perfplus_policy_set_downtime_target_ms(perfplus, 30.0) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_OK);
        // SAFETY: a live handle, freed once.
        unsafe { perfplus_policy_free(xen) };
        // SAFETY: a live handle, freed once.
        unsafe { perfplus_policy_free(perfplus) };
    }

    #[test]
    fn an_unknown_name_lists_the_choices() {
        let mut policy = std::ptr::null_mut();
        // SAFETY: a literal and a local out-parameter.
        let rc = unsafe { perfplus_policy_new(c"perf+".as_ptr(), &mut policy) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT);
        assert!(policy.is_null());
        assert_eq!(
            last_error(),
            "perfplus_policy_new: unknown policy \"perf+\": expected one of perfplus, xen-default, qemu-default, stop-and-copy"
        );
    }
}
