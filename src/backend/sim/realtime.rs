//! A simulated guest that runs in real time, for migrations over a real
//! link (TCP) instead of the simulated one.
//!
//! [`SimDomain`] runs on a [`VirtualClock`] that only moves when someone
//! moves it; over [`SimLink`](crate::migration::transport::SimLink) the link
//! model does. Over TCP nothing would, and the guest would sit still while
//! pre-copy runs. [`RealTimeSim`] moves the virtual clock to the monotonic
//! clock before every operation, so the guest writes at its workload's
//! rates *while* rounds go over the wire, exactly as a real guest would.
//!
//! The other direction matters too: a receiving sim guest pays its
//! switchover cost (restoring the CPU state, `switchover_fixed_ms` of the
//! workload) by moving its virtual clock on [`Domain::resume`]. Here that
//! time is also waited out for real before `resume` returns, so the
//! downtime the sender measures includes it, as it would with a real
//! hypervisor.

use std::time::{Duration, Instant};

use super::{SimDomain, VirtualClock, Workload};
use crate::backend::{BackendError, CpuShare, DirtyBitmap, Domain, Pfn};

/// A [`SimDomain`] whose virtual time follows real time. See the module
/// documentation.
#[derive(Debug)]
pub struct RealTimeSim {
    sim: SimDomain,
    clock: VirtualClock,
    started: Instant,
}

impl RealTimeSim {
    /// A guest running `workload` from now, with content and writes from
    /// `seed`.
    pub fn new(workload: &Workload, seed: u64) -> Self {
        let clock = VirtualClock::new();
        Self {
            sim: SimDomain::new(workload, seed, clock.clone()),
            clock,
            started: Instant::now(),
        }
    }

    /// An all-zero, paused guest of `page_count` pages: a receiving domain.
    pub fn blank(page_count: u64) -> Self {
        let clock = VirtualClock::new();
        Self {
            sim: SimDomain::blank(page_count, clock.clone()),
            clock,
            started: Instant::now(),
        }
    }

    /// The simulated guest underneath.
    pub fn sim(&self) -> &SimDomain {
        &self.sim
    }

    /// Take the simulated guest out.
    pub fn into_sim(self) -> SimDomain {
        self.sim
    }

    fn real_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bring the guest's virtual time up to real time.
    fn sync(&self) {
        self.clock.advance_to(self.real_ns());
    }

    /// Wait until real time has caught up with virtual time (after the
    /// guest spent virtual time, e.g. resuming).
    fn wait_for_virtual_time(&self) {
        let ahead = self.clock.now_ns().saturating_sub(self.real_ns());
        if ahead > 0 {
            std::thread::sleep(Duration::from_nanos(ahead));
        }
    }
}

impl Domain for RealTimeSim {
    fn page_size(&self) -> usize {
        self.sim.page_size()
    }

    fn page_count(&self) -> u64 {
        self.sim.page_count()
    }

    fn read_pages(&mut self, pfns: &[Pfn], buf: &mut [u8]) -> Result<(), BackendError> {
        self.sync();
        self.sim.read_pages(pfns, buf)
    }

    fn write_pages(&mut self, pfns: &[Pfn], data: &[u8]) -> Result<(), BackendError> {
        self.sync();
        self.sim.write_pages(pfns, data)
    }

    fn enable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.sync();
        self.sim.enable_dirty_log()
    }

    fn harvest_dirty(&mut self, dirty: &mut DirtyBitmap) -> Result<(), BackendError> {
        self.sync();
        self.sim.harvest_dirty(dirty)
    }

    fn disable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.sync();
        self.sim.disable_dirty_log()
    }

    fn dirty_log_is_exact(&self) -> bool {
        self.sim.dirty_log_is_exact()
    }

    fn pause(&mut self) -> Result<(), BackendError> {
        self.sync();
        self.sim.pause()
    }

    fn resume(&mut self) -> Result<(), BackendError> {
        self.sync();
        self.sim.resume()?;
        self.wait_for_virtual_time();
        Ok(())
    }

    fn is_paused(&self) -> bool {
        self.sim.is_paused()
    }

    fn set_cpu_cap(&mut self, cap: Option<CpuShare>) -> Result<(), BackendError> {
        self.sync();
        self.sim.set_cpu_cap(cap)
    }

    fn save_state(&mut self) -> Result<Vec<u8>, BackendError> {
        self.sync();
        self.sim.save_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BackendError> {
        self.sim.restore_state(state)
    }

    fn backend_name(&self) -> &'static str {
        "sim"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy_workload() -> Workload {
        Workload::from_toml(
            "name = \"busy\"\nmemory_mib = 4\nzero_fraction = 0.0\nswitchover_fixed_ms = 30\n\
             [[writer]]\nregion = [0.0, 1.0]\nrate_pages_per_s = 100000\ndistribution = \"uniform\"\n\
             bytes_per_write = 8\n[link]\nbandwidth_mbit = 1000\nlatency_ms = 0\n",
            "busy",
        )
        .unwrap()
    }

    #[test]
    fn the_guest_writes_while_real_time_passes() {
        let mut guest = RealTimeSim::new(&busy_workload(), 3);
        guest.enable_dirty_log().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut dirty = DirtyBitmap::new(guest.page_count());
        guest.harvest_dirty(&mut dirty).unwrap();
        // 100 000 writes/s for at least 20 ms: over 2000 writes.
        assert!(guest.sim().writes_applied() >= 2000);
        assert!(dirty.count() > 0);
        guest.pause().unwrap();
        let writes = guest.sim().writes_applied();
        std::thread::sleep(Duration::from_millis(5));
        guest.harvest_dirty(&mut dirty).unwrap();
        assert_eq!(
            guest.sim().writes_applied(),
            writes,
            "a paused guest writes nothing"
        );
    }

    #[test]
    fn a_receiving_guest_takes_its_switchover_cost_in_real_time() {
        let mut source = RealTimeSim::new(&busy_workload(), 3);
        source.pause().unwrap();
        let state = source.save_state().unwrap();
        let mut target = RealTimeSim::blank(source.page_count());
        target.restore_state(&state).unwrap();
        let before = Instant::now();
        target.resume().unwrap();
        assert!(before.elapsed() >= Duration::from_millis(30));
        assert!(!target.is_paused());
    }
}
