//! The round-stats tracker from C: builds the `perfplus_round_stats` a
//! policy decides on from what a pre-copy loop can count (pages and bytes
//! sent per round, how long each took, pages dirtied meanwhile), so a C
//! toolstack gets the same bandwidth, dirty-rate and downtime prediction
//! Perf+ uses in its own engine.
//!
//! ```c
//! perfplus_round_tracker *t;
//! perfplus_round_tracker_new(memory_bytes, 4096, 20.0, 0.2, 16384, &t);
//! for (;;) {
//!     perfplus_round_stats stats;
//!     perfplus_round_tracker_snapshot(t, elapsed_ms, dirty_pages, 0, &stats);
//!     perfplus_decision d;
//!     perfplus_policy_decide(policy, &stats, &d);
//!     if (d.action != PERFPLUS_PRECOPY_CONTINUE) break;
//!     ... send a round ...
//!     perfplus_round_tracker_round_done(t, pages, bytes, round_ms, dirtied);
//! }
//! perfplus_round_tracker_free(t);
//! ```
//!
//! In libxenguest's `precopy_policy` callback, `precopy_stats` gives the
//! iteration and `dirty_count`; the callback adds its own clock and byte
//! counter.

use super::error::Failure;
use super::handle::{arg_out, box_handle, box_handle_free, box_handle_mut, BoxHandle};
use super::policy::perfplus_round_stats;
use super::result::perfplus_result;
use crate::migration::RoundStatsTracker;

/// Builds round stats from what a pre-copy loop measures (opaque).
pub struct perfplus_round_tracker {
    _private: [u8; 0],
}

impl BoxHandle for perfplus_round_tracker {
    type Inner = RoundStatsTracker;
}

fn check_ms(function: &str, argument: &str, value: f64) -> Result<(), Failure> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Failure::new(
            perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
            format!("{function}: `{argument}` must be a finite number >= 0, not {value}"),
        ))
    }
}

/// A tracker for a guest of `memory_bytes` in pages of `page_size` bytes,
/// with the expected fixed switchover cost (CPU state and resume, ms), the
/// link's round-trip time (ms) and the CPU/device state size (bytes), which
/// enter the downtime prediction. Starts no thread.
///
/// # Safety
/// `out` must be writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_round_tracker_new(
    memory_bytes: u64,
    page_size: u32,
    switchover_fixed_ms: f64,
    round_trip_ms: f64,
    state_bytes: u64,
    out: *mut *mut perfplus_round_tracker,
) -> perfplus_result {
    const NAME: &str = "perfplus_round_tracker_new";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        if page_size == 0 {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
                format!("{NAME}: `page_size` is 0"),
            ));
        }
        check_ms(NAME, "switchover_fixed_ms", switchover_fixed_ms)?;
        check_ms(NAME, "round_trip_ms", round_trip_ms)?;
        let tracker = RoundStatsTracker::new(
            memory_bytes,
            page_size as usize,
            switchover_fixed_ms,
            round_trip_ms,
            state_bytes,
        );
        out.write(box_handle::<perfplus_round_tracker>(tracker));
        Ok(())
    })
}

/// Record a finished round: `pages` and wire `bytes` sent, its duration
/// (ms, >= 0), and the pages the guest dirtied meanwhile (the next dirty
/// log's count).
///
/// # Safety
/// `tracker` must be a live tracker or NULL, not used by another thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_round_tracker_round_done(
    tracker: *mut perfplus_round_tracker,
    pages: u64,
    bytes: u64,
    duration_ms: f64,
    dirtied_pages: u64,
) -> perfplus_result {
    const NAME: &str = "perfplus_round_tracker_round_done";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let tracker = unsafe { box_handle_mut(tracker, NAME, "tracker") }?;
        check_ms(NAME, "duration_ms", duration_ms)?;
        tracker.round_done(pages, bytes, duration_ms, dirtied_pages);
        Ok(())
    })
}

/// The stats for the next decision, `elapsed_ms` after the start, when the
/// next round would send `dirty_pages` and `deferred_pages` are held back
/// for the final pass. The tracker remembers this snapshot's prediction (it
/// becomes the "best earlier" one if it is the lowest), so take one
/// snapshot per decision.
///
/// # Safety
/// `tracker` must be a live tracker or NULL, not used by another thread
/// during the call; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_round_tracker_snapshot(
    tracker: *mut perfplus_round_tracker,
    elapsed_ms: f64,
    dirty_pages: u64,
    deferred_pages: u64,
    out: *mut perfplus_round_stats,
) -> perfplus_result {
    const NAME: &str = "perfplus_round_tracker_snapshot";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let tracker = unsafe { box_handle_mut(tracker, NAME, "tracker") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        check_ms(NAME, "elapsed_ms", elapsed_ms)?;
        let stats = tracker.snapshot(elapsed_ms, dirty_pages, deferred_pages);
        out.write(perfplus_round_stats::from_stats(&stats));
        Ok(())
    })
}

/// Free a tracker; NULL is a no-op.
///
/// # Safety
/// `tracker` must be NULL or a live tracker, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_round_tracker_free(tracker: *mut perfplus_round_tracker) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(tracker) }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::error::last_error;

    #[test]
    fn the_tracker_measures_bandwidth_and_predicts_downtime() {
        let mut t = std::ptr::null_mut();
        // SAFETY: a local out-parameter.
        let rc = unsafe { perfplus_round_tracker_new(1 << 30, 4096, 20.0, 0.0, 0, &mut t) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_OK);
        let mut s = std::mem::MaybeUninit::<perfplus_round_stats>::uninit();
        // SAFETY: live handle, local out-parameter.
        let rc = unsafe { perfplus_round_tracker_snapshot(t, 0.0, 262_144, 0, s.as_mut_ptr()) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_OK);
        // SAFETY: written on success.
        let first = unsafe { s.assume_init() };
        assert!(first.predicted_downtime_ms.is_infinite());
        // SAFETY: live handle.
        let rc =
            unsafe { perfplus_round_tracker_round_done(t, 262_144, 1_000_000_000, 1000.0, 5000) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_OK);
        // SAFETY: live handle, local out-parameter.
        let rc = unsafe { perfplus_round_tracker_snapshot(t, 1000.0, 1000, 0, s.as_mut_ptr()) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_OK);
        // SAFETY: written on success.
        let second = unsafe { s.assume_init() };
        assert!((second.bandwidth_bytes_per_s - 1e9).abs() < 1.0);
        assert!((second.dirty_rate_pages_per_s - 5000.0).abs() < 1e-9);
        assert!(second.predicted_downtime_ms > 20.0 && second.predicted_downtime_ms < 25.0);
        // SAFETY: live handle.
        let rc = unsafe { perfplus_round_tracker_round_done(t, 1, 1, f64::NAN, 0) };
        assert_eq!(rc, perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT);
        assert_eq!(
            last_error(),
            "perfplus_round_tracker_round_done: `duration_ms` must be a finite number >= 0, not NaN"
        );
        // SAFETY: live handle, freed once.
        unsafe { perfplus_round_tracker_free(t) };
    }
}
