//! [`XenDomain`]: a running Xen guest behind the [`Domain`] trait.
//!
//! - log-dirty: `xc_shadow_control(ENABLE_LOGDIRTY)`, then each harvest is
//!   `xc_logdirty_control(CLEAN)` into a hypercall buffer of
//!   `xc_domain_nr_gpfns` bits (the whole, possibly sparse, gfn space),
//!   with `LOGDIRTY_FINAL` once we have paused the guest; always `OFF` at
//!   the end, also when dropped;
//! - pages: foreign mappings by gfn in batches of 1024 (libxenguest's
//!   `MAX_BATCH_SIZE`), with per-page errors checked. Only for HVM-type
//!   guests (HVM, PVH), whose gfn is the pfn; a PV guest's memory moves
//!   through libxenguest's own save loop, which translates its P2M and
//!   rewrites its page tables;
//! - pause/resume: Xen counts pauses per controller, so the domain
//!   remembers whether *it* holds one and gives back only that; for a
//!   migration ([`StopMethod::Suspend`]) the guest is instead asked to
//!   suspend itself through xenstore, as libxl does, so that it reconnects
//!   its event channels and shared pages wherever it wakes up (a merely
//!   paused guest would wake up in a new domain with none of them), and
//!   resumed with `xc_domain_resume(fast)` if the migration fails;
//! - CPU cap: the credit/credit2 cap, read, changed and restored.
//!
//! Dropping a `XenDomain` undoes everything it did: log-dirty off, the
//! original cap back, its pause or suspend released. A failed migration
//! therefore leaves the guest running. After a successful one,
//! [`XenDomain::mark_migrated`] keeps it stopped for the toolstack to
//! destroy.

use std::ffi::c_int;
use std::time::{Duration, Instant};

use libxenctrl_sys as sys;

use super::hcall::HypercallBuffer;
use super::host::{DomainInfo, XenHost};
use super::records;
use super::store::XenStore;
use super::XenError;
use crate::backend::{BackendError, CpuShare, DirtyBitmap, Domain, Pfn};

/// Bytes per page on x86.
const PAGE_SIZE: usize = sys::XC_PAGE_SIZE;

/// Pages mapped per foreign-memory call (libxenguest's `MAX_BATCH_SIZE`).
const MAP_BATCH_PAGES: usize = 1024;

/// Counts Xen reports with each harvest (`xc_shadow_op_stats_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogDirtyStats {
    /// Pages dirtied since the previous harvest, by Xen's count.
    pub dirty_count: u32,
    /// Write faults taken to log them (shadow paging; 0 under HAP).
    pub fault_count: u32,
}

/// How [`Domain::pause`] stops the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMethod {
    /// `xc_domain_pause`: the vCPUs stop where they are (to watch a guest).
    Pause,
    /// Ask the guest to suspend itself (xenstore `control/shutdown` =
    /// "suspend") and wait up to `timeout` until Xen shows it shut down
    /// for suspend: what a migration needs.
    Suspend {
        /// How long the guest may take (libxl allows 60 s).
        timeout: Duration,
    },
}

/// How often the domain's state is polled while it suspends: a hypercall
/// each time, and the most this adds to the downtime.
const SUSPEND_POLL: Duration = Duration::from_millis(2);

/// A guest's scheduler cap before perfplus changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SavedCap {
    Credit(u16),
    Credit2(u16),
}

/// A Xen domain perfplus migrates (or watches).
#[derive(Debug)]
pub struct XenDomain {
    host: XenHost,
    domid: u32,
    hvm: bool,
    vcpus: u32,
    gfn_count: u64,
    dirty_log: Option<HypercallBuffer>,
    we_paused: bool,
    stop: StopMethod,
    suspended: bool,
    migrated: bool,
    saved_cap: Option<SavedCap>,
    last_stats: LogDirtyStats,
}

impl std::fmt::Debug for HypercallBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HypercallBuffer")
    }
}

pub(super) fn backend_error(e: XenError, domid: u32) -> BackendError {
    match e {
        XenError::Call { call, source, .. } => BackendError::Hypervisor {
            call,
            domid,
            reason: source.to_string(),
        },
        XenError::Unexpected { call, what, .. } => BackendError::Hypervisor {
            call,
            domid,
            reason: what,
        },
        XenError::NoSuchDomain(_) => BackendError::Gone {
            reason: format!("Xen domain {domid} no longer exists"),
        },
        other => BackendError::Hypervisor {
            call: "xen",
            domid,
            reason: other.to_string(),
        },
    }
}

impl XenDomain {
    /// Take hold of domain `domid` (running or paused, not dying).
    pub fn attach(host: &XenHost, domid: u32) -> Result<Self, XenError> {
        let info = host
            .domain_info(domid)?
            .filter(|i| !i.dying)
            .ok_or_else(|| XenError::NoSuchDomain(domid.to_string()))?;
        let mut gfns: sys::xen_pfn_t = 0;
        // SAFETY: `gfns` is a valid out-parameter.
        if unsafe {
            host.libs()
                .ctrl
                .xc_domain_nr_gpfns(host.xch(), domid, &mut gfns)
        } < 0
        {
            return Err(XenError::last_os_error("xc_domain_nr_gpfns", Some(domid)));
        }
        Ok(Self {
            host: host.clone(),
            domid,
            hvm: info.hvm,
            vcpus: info.online_vcpus.max(1),
            gfn_count: gfns,
            dirty_log: None,
            we_paused: false,
            stop: StopMethod::Pause,
            suspended: false,
            migrated: false,
            saved_cap: None,
            last_stats: LogDirtyStats::default(),
        })
    }

    /// Choose how [`Domain::pause`] stops the guest (default
    /// [`StopMethod::Pause`]).
    pub fn set_stop_method(&mut self, stop: StopMethod) {
        self.stop = stop;
    }

    /// Whether perfplus suspended the guest (and has not resumed it).
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// Ask the guest to suspend itself and wait until it has (Xen shows it
    /// shut down with reason suspend), as libxl does: "suspend" into
    /// xenstore `control/shutdown`, then poll the domain's state. If the
    /// guest does not even take the request within `timeout`, the request
    /// is withdrawn and the guest runs on.
    pub fn suspend(&mut self, timeout: Duration) -> Result<(), XenError> {
        if self.suspended {
            return Ok(());
        }
        let store = XenStore::open(self.host.inner.libs.clone())?;
        let path = format!("/local/domain/{}/control/shutdown", self.domid);
        store.write(&path, "suspend")?;
        let started = Instant::now();
        loop {
            let info = self.info()?;
            if info.shutdown {
                if info.is_suspended() {
                    self.suspended = true;
                    return Ok(());
                }
                return Err(XenError::UnexpectedShutdown {
                    domid: self.domid,
                    reason: info.shutdown_reason,
                });
            }
            if started.elapsed() >= timeout {
                let withdrawn = store.withdraw_suspend_request(self.domid)?;
                // The guest may have finished between the last look and
                // the withdrawal.
                if self.info()?.is_suspended() {
                    self.suspended = true;
                    return Ok(());
                }
                return Err(XenError::SuspendTimeout {
                    domid: self.domid,
                    acknowledged: !withdrawn,
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
            std::thread::sleep(SUSPEND_POLL);
        }
    }

    /// Let a guest that suspended for a migration run on here: the suspend
    /// hypercall returns "cancelled" to it (`xc_domain_resume(fast)`), so it
    /// just goes on, and xenstored is told it runs (`XS_RESUME`). Also for a
    /// guest that suspended late, after perfplus had given up waiting.
    pub fn resume_after_suspend(&mut self) -> Result<(), XenError> {
        if !self.info()?.is_suspended() {
            self.suspended = false;
            return Ok(());
        }
        // SAFETY: plain domctls on a domain id.
        if unsafe {
            self.host
                .libs()
                .guest
                .xc_domain_resume(self.host.xch(), self.domid, 1)
        } != 0
        {
            return Err(XenError::last_os_error(
                "xc_domain_resume",
                Some(self.domid),
            ));
        }
        self.suspended = false;
        XenStore::open(self.host.inner.libs.clone())?.resume_domain(self.domid)
    }

    /// The guest now runs elsewhere: never resume this copy (it stays
    /// suspended or paused for the toolstack to destroy).
    pub fn mark_migrated(&mut self) {
        self.migrated = true;
    }

    /// The handle to the hypervisor this domain was attached through.
    pub fn host(&self) -> &XenHost {
        &self.host
    }
    /// The domain id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// Whether the guest is an HVM container (HVM or PVH) rather than PV.
    pub fn is_hvm(&self) -> bool {
        self.hvm
    }

    /// The hypervisor's current view of the domain.
    pub fn info(&self) -> Result<DomainInfo, XenError> {
        self.host
            .domain_info(self.domid)?
            .ok_or_else(|| XenError::NoSuchDomain(self.domid.to_string()))
    }

    /// Xen's counts from the last harvest.
    pub fn last_harvest_stats(&self) -> LogDirtyStats {
        self.last_stats
    }

    /// The `XEN_DOMCTL_PFINFO_*` type of each page (`NOTAB` for plain
    /// memory, `XTAB` for a hole, `BROKEN`, page-table types on PV), from
    /// `xc_get_pfn_type_batch`.
    pub fn page_types(&self, pfns: &[Pfn]) -> Result<Vec<u32>, XenError> {
        page_types(&self.host, self.domid, pfns)
    }

    fn check_access(&self, pfns: &[Pfn], len: usize) -> Result<(), BackendError> {
        if !self.hvm {
            return Err(BackendError::Unsupported {
                backend: "xen",
                what: "direct page access to PV guests (their memory moves through \
                       libxenguest's save loop, which translates the guest's P2M)",
            });
        }
        let expected = pfns.len() * PAGE_SIZE;
        if len != expected {
            return Err(BackendError::BufferSize { expected, got: len });
        }
        if let Some(&pfn) = pfns.iter().find(|&&p| p >= self.gfn_count) {
            return Err(BackendError::PfnOutOfRange {
                pfn,
                page_count: self.gfn_count,
            });
        }
        Ok(())
    }

    /// Map `batch` (≤ [`MAP_BATCH_PAGES`]) and run `f` over the mapping.
    fn with_mapping(
        &self,
        batch: &[Pfn],
        prot: c_int,
        f: impl FnOnce(*mut u8),
    ) -> Result<(), BackendError> {
        let libs = self.host.libs();
        let fmem = self.host.inner.fmem.as_ptr();
        let arr: Vec<sys::xen_pfn_t> = batch.to_vec();
        let mut err: Vec<c_int> = vec![0; batch.len()];
        // SAFETY: `arr` and `err` hold `batch.len()` entries; with `err`
        // non-NULL a failure of single pages is reported per page.
        let addr = unsafe {
            (libs.foreign_memory.xenforeignmemory_map)(
                fmem,
                self.domid,
                prot,
                batch.len(),
                arr.as_ptr(),
                err.as_mut_ptr(),
            )
        };
        if addr.is_null() {
            return Err(backend_error(
                XenError::last_os_error("xenforeignmemory_map", Some(self.domid)),
                self.domid,
            ));
        }
        let failed = err.iter().position(|&e| e != 0);
        if failed.is_none() {
            f(addr.cast::<u8>());
        }
        // SAFETY: `addr` maps `batch.len()` pages, unmapped exactly once.
        unsafe {
            (libs.foreign_memory.xenforeignmemory_unmap)(fmem, addr, batch.len());
        }
        match failed {
            None => Ok(()),
            Some(i) => Err(BackendError::Hypervisor {
                call: "xenforeignmemory_map",
                domid: self.domid,
                reason: format!(
                    "page {}: {}",
                    batch[i],
                    std::io::Error::from_raw_os_error(err[i].abs())
                ),
            }),
        }
    }

    fn shadow_op(&self, op: u32, call: &'static str) -> Result<(), XenError> {
        // SAFETY: these ops take no bitmap and no allocation size.
        let rc = unsafe {
            self.host.libs().ctrl.xc_shadow_control(
                self.host.xch(),
                self.domid,
                op,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc < 0 {
            return Err(XenError::last_os_error(call, Some(self.domid)));
        }
        Ok(())
    }

    /// The domain's current scheduler cap in percent of one pCPU (`None`:
    /// uncapped), as the hypervisor has it.
    pub fn cpu_cap(&self) -> Result<Option<u16>, XenError> {
        let credit2 = self.credit2()?;
        let (_, cap) = self.credit_get(credit2)?;
        Ok((cap != 0).then_some(cap))
    }

    /// Whether the domain's cpupool runs credit2 (true) or credit (false).
    fn credit2(&self) -> Result<bool, XenError> {
        match self.host.sched_id()? {
            s if s == sys::XEN_SCHEDULER_CREDIT => Ok(false),
            s if s == sys::XEN_SCHEDULER_CREDIT2 => Ok(true),
            s => Err(XenError::Unexpected {
                call: "xc_sched_id",
                domid: Some(self.domid),
                what: format!("scheduler {s}: CPU caps need credit or credit2"),
            }),
        }
    }

    fn credit_get(&self, credit2: bool) -> Result<(u16, u16), XenError> {
        let libs = self.host.libs();
        let (rc, weight, cap) = if credit2 {
            let mut s = sys::xen_domctl_sched_credit2::default();
            // SAFETY: `s` is a valid out-parameter.
            let rc = unsafe {
                libs.ctrl
                    .xc_sched_credit2_domain_get(self.host.xch(), self.domid, &mut s)
            };
            (rc, s.weight, s.cap)
        } else {
            let mut s = sys::xen_domctl_sched_credit::default();
            // SAFETY: `s` is a valid out-parameter.
            let rc = unsafe {
                libs.ctrl
                    .xc_sched_credit_domain_get(self.host.xch(), self.domid, &mut s)
            };
            (rc, s.weight, s.cap)
        };
        if rc != 0 {
            return Err(XenError::last_os_error(
                "xc_sched_credit_domain_get",
                Some(self.domid),
            ));
        }
        Ok((weight, cap))
    }

    /// Set only the cap (weight 0 = unchanged for both schedulers; cap 0
    /// removes it).
    fn credit_set_cap(&self, credit2: bool, cap: u16) -> Result<(), XenError> {
        let libs = self.host.libs();
        let rc = if credit2 {
            let mut s = sys::xen_domctl_sched_credit2 { weight: 0, cap };
            // SAFETY: `s` is a valid in-parameter.
            unsafe {
                libs.ctrl
                    .xc_sched_credit2_domain_set(self.host.xch(), self.domid, &mut s)
            }
        } else {
            let mut s = sys::xen_domctl_sched_credit { weight: 0, cap };
            // SAFETY: `s` is a valid in-parameter.
            unsafe {
                libs.ctrl
                    .xc_sched_credit_domain_set(self.host.xch(), self.domid, &mut s)
            }
        };
        if rc != 0 {
            return Err(XenError::last_os_error(
                "xc_sched_credit_domain_set",
                Some(self.domid),
            ));
        }
        Ok(())
    }

    fn restore_cap(&mut self) -> Result<(), XenError> {
        match self.saved_cap.take() {
            None => Ok(()),
            Some(SavedCap::Credit(cap)) => self.credit_set_cap(false, cap),
            Some(SavedCap::Credit2(cap)) => self.credit_set_cap(true, cap),
        }
    }

    fn hvm_state_records(&self) -> Result<Vec<u8>, XenError> {
        let libs = self.host.libs();
        let xch = self.host.xch();
        let mut out = Vec::new();
        let too_long = |call| XenError::Unexpected {
            call,
            domid: Some(self.domid),
            what: "a record over the stream's 128 MiB limit".into(),
        };

        // TSC_INFO
        let (mut mode, mut khz, mut incarnation) = (0_u32, 0_u32, 0_u32);
        let mut nsec = 0_u64;
        // SAFETY: all four are valid out-parameters.
        let rc = unsafe {
            libs.ctrl.xc_domain_get_tsc_info(
                xch,
                self.domid,
                &mut mode,
                &mut nsec,
                &mut khz,
                &mut incarnation,
            )
        };
        if rc != 0 {
            return Err(XenError::last_os_error(
                "xc_domain_get_tsc_info",
                Some(self.domid),
            ));
        }
        let mut tsc = Vec::with_capacity(24);
        tsc.extend_from_slice(&mode.to_le_bytes());
        tsc.extend_from_slice(&khz.to_le_bytes());
        tsc.extend_from_slice(&nsec.to_le_bytes());
        tsc.extend_from_slice(&incarnation.to_le_bytes());
        tsc.extend_from_slice(&0_u32.to_le_bytes());
        records::write_record(&mut out, records::REC_TYPE_X86_TSC_INFO, &tsc)
            .ok_or_else(|| too_long("xc_domain_get_tsc_info"))?;

        // HVM_CONTEXT: ask for the size, then the blob.
        // SAFETY: NULL/0 asks for the size only.
        let size = unsafe {
            libs.ctrl
                .xc_domain_hvm_getcontext(xch, self.domid, std::ptr::null_mut(), 0)
        };
        let size = u32::try_from(size)
            .map_err(|_| XenError::last_os_error("xc_domain_hvm_getcontext", Some(self.domid)))?;
        let mut ctx = vec![0_u8; size as usize];
        // SAFETY: `ctx` holds `size` writable bytes.
        let got = unsafe {
            libs.ctrl
                .xc_domain_hvm_getcontext(xch, self.domid, ctx.as_mut_ptr(), size)
        };
        let got = usize::try_from(got)
            .map_err(|_| XenError::last_os_error("xc_domain_hvm_getcontext", Some(self.domid)))?;
        ctx.truncate(got);
        records::write_record(&mut out, records::REC_TYPE_HVM_CONTEXT, &ctx)
            .ok_or_else(|| too_long("xc_domain_hvm_getcontext"))?;

        // HVM_PARAMS: the non-zero ones of libxenguest's list.
        const PARAMS: [u32; 16] = [
            sys::HVM_PARAM_STORE_PFN,
            sys::HVM_PARAM_IOREQ_PFN,
            sys::HVM_PARAM_BUFIOREQ_PFN,
            sys::HVM_PARAM_PAGING_RING_PFN,
            sys::HVM_PARAM_MONITOR_RING_PFN,
            sys::HVM_PARAM_SHARING_RING_PFN,
            sys::HVM_PARAM_VM86_TSS_SIZED,
            sys::HVM_PARAM_CONSOLE_PFN,
            sys::HVM_PARAM_ACPI_IOPORTS_LOCATION,
            sys::HVM_PARAM_VIRIDIAN,
            sys::HVM_PARAM_IDENT_PT,
            sys::HVM_PARAM_VM_GENERATION_ID_ADDR,
            sys::HVM_PARAM_IOREQ_SERVER_PFN,
            sys::HVM_PARAM_NR_IOREQ_SERVER_PAGES,
            sys::HVM_PARAM_X87_FIP_WIDTH,
            sys::HVM_PARAM_MCA_CAP,
        ];
        let mut entries = Vec::new();
        for index in PARAMS {
            let mut value = 0_u64;
            // SAFETY: `value` is a valid out-parameter.
            let rc = unsafe {
                libs.ctrl
                    .xc_hvm_param_get(xch, self.domid, index, &mut value)
            };
            if rc != 0 {
                return Err(XenError::last_os_error(
                    "xc_hvm_param_get",
                    Some(self.domid),
                ));
            }
            if value != 0 {
                entries.push((u64::from(index), value));
            }
        }
        // libxenguest leaves the record out when no parameter is set.
        if entries.is_empty() {
            return Ok(out);
        }
        let mut params = Vec::with_capacity(8 + 16 * entries.len());
        params.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(0).to_le_bytes());
        params.extend_from_slice(&0_u32.to_le_bytes());
        for (index, value) in entries {
            params.extend_from_slice(&index.to_le_bytes());
            params.extend_from_slice(&value.to_le_bytes());
        }
        records::write_record(&mut out, records::REC_TYPE_HVM_PARAMS, &params)
            .ok_or_else(|| too_long("xc_hvm_param_get"))?;
        Ok(out)
    }
}

/// The `XEN_DOMCTL_PFINFO_*` type of each of `pfns` of `domid`, from
/// `xc_get_pfn_type_batch`, 1024 at a time.
pub(super) fn page_types(host: &XenHost, domid: u32, pfns: &[Pfn]) -> Result<Vec<u32>, XenError> {
    let mut types = Vec::with_capacity(pfns.len());
    let mut arr: Vec<sys::xen_pfn_t> = Vec::with_capacity(MAP_BATCH_PAGES);
    for batch in pfns.chunks(MAP_BATCH_PAGES) {
        arr.clear();
        arr.extend_from_slice(batch);
        // At most MAP_BATCH_PAGES.
        let n = u32::try_from(arr.len()).unwrap_or(u32::MAX);
        // SAFETY: `arr` holds `n` gfns and is rewritten in place.
        let rc = unsafe {
            host.libs()
                .ctrl
                .xc_get_pfn_type_batch(host.xch(), domid, n, arr.as_mut_ptr())
        };
        if rc != 0 {
            return Err(XenError::last_os_error(
                "xc_get_pfn_type_batch",
                Some(domid),
            ));
        }
        // The type sits in the top nibble of the low 32 bits.
        types.extend(arr.iter().map(|t| (*t & 0xf000_0000) as u32));
    }
    Ok(types)
}

impl Domain for XenDomain {
    fn page_size(&self) -> usize {
        PAGE_SIZE
    }

    /// The gfn space, holes included (`xc_domain_nr_gpfns`): for a PVH
    /// guest of 128 MiB about 1 Mi pages, because the special pages sit
    /// just below 4 GiB.
    fn page_count(&self) -> u64 {
        self.gfn_count
    }

    /// Pages with no memory behind them (holes of the sparse gfn space,
    /// broken pages: `xc_get_pfn_type_batch` says XTAB, XALLOC or BROKEN)
    /// read as zeros; the rest through one foreign mapping per batch.
    fn read_pages(&mut self, pfns: &[Pfn], buf: &mut [u8]) -> Result<(), BackendError> {
        self.check_access(pfns, buf.len())?;
        let domid = self.domid;
        for (batch, out) in pfns
            .chunks(MAP_BATCH_PAGES)
            .zip(buf.chunks_mut(MAP_BATCH_PAGES * PAGE_SIZE))
        {
            let types = self
                .page_types(batch)
                .map_err(|e| backend_error(e, domid))?;
            let mut mapped = Vec::with_capacity(batch.len());
            for ((&pfn, &t), page) in batch.iter().zip(&types).zip(out.chunks_mut(PAGE_SIZE)) {
                if records::pfinfo_has_data(t) {
                    mapped.push(pfn);
                } else {
                    page.fill(0);
                }
            }
            if mapped.is_empty() {
                continue;
            }
            self.with_mapping(&mapped, libc::PROT_READ, |addr| {
                let mut at = 0;
                for (&t, page) in types.iter().zip(out.chunks_mut(PAGE_SIZE)) {
                    if records::pfinfo_has_data(t) {
                        // SAFETY: the mapping holds `mapped.len()` readable
                        // pages; `at` counts the data pages before this one,
                        // so `addr + at` is inside it; `page` is one page of
                        // `out`, which the mapping does not overlap.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                addr.wrapping_add(at * PAGE_SIZE),
                                page.as_mut_ptr(),
                                PAGE_SIZE,
                            );
                        }
                        at += 1;
                    }
                }
            })?;
        }
        Ok(())
    }

    fn write_pages(&mut self, pfns: &[Pfn], data: &[u8]) -> Result<(), BackendError> {
        self.check_access(pfns, data.len())?;
        for (batch, input) in pfns
            .chunks(MAP_BATCH_PAGES)
            .zip(data.chunks(MAP_BATCH_PAGES * PAGE_SIZE))
        {
            self.with_mapping(batch, libc::PROT_READ | libc::PROT_WRITE, |addr| {
                // SAFETY: the mapping holds `batch.len()` writable pages,
                // exactly `input.len()` bytes; they do not overlap `input`.
                unsafe { std::ptr::copy_nonoverlapping(input.as_ptr(), addr, input.len()) }
            })?;
        }
        Ok(())
    }

    fn enable_dirty_log(&mut self) -> Result<(), BackendError> {
        let domid = self.domid;
        if self.dirty_log.is_some() {
            // Already on: empty the log, as the contract asks.
            let mut scratch = DirtyBitmap::new(self.gfn_count);
            return self.harvest_dirty(&mut scratch);
        }
        let bytes = usize::try_from(self.gfn_count.div_ceil(8)).unwrap_or(usize::MAX);
        let buffer =
            HypercallBuffer::new(&self.host, bytes).map_err(|e| backend_error(e, domid))?;
        if let Err(e) = self.shadow_op(
            sys::XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
            "xc_shadow_control(ENABLE_LOGDIRTY)",
        ) {
            if !self.hvm {
                // PV: on already means another migration owns it; turning
                // it off would break that one.
                return Err(backend_error(e, domid));
            }
            // HVM: QEMU may have it on for VRAM tracking; libxenguest turns
            // it off and on again, and so do we.
            self.shadow_op(sys::XEN_DOMCTL_SHADOW_OP_OFF, "xc_shadow_control(OFF)")
                .map_err(|e| backend_error(e, domid))?;
            self.shadow_op(
                sys::XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
                "xc_shadow_control(ENABLE_LOGDIRTY)",
            )
            .map_err(|e| backend_error(e, domid))?;
        }
        self.dirty_log = Some(buffer);
        Ok(())
    }

    fn harvest_dirty(&mut self, dirty: &mut DirtyBitmap) -> Result<(), BackendError> {
        let domid = self.domid;
        let gfn_count = self.gfn_count;
        if dirty.pages() != gfn_count {
            return Err(BackendError::BufferSize {
                expected: usize::try_from(gfn_count.div_ceil(64) * 8).unwrap_or(usize::MAX),
                got: dirty.words().len() * 8,
            });
        }
        let mode = if self.we_paused || self.suspended {
            sys::XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL
        } else {
            0
        };
        let ctrl = &self.host.inner.libs.ctrl;
        let xch = self.host.xch();
        let buffer = self
            .dirty_log
            .as_mut()
            .ok_or(BackendError::DirtyLogDisabled)?;
        let mut stats = sys::xc_shadow_op_stats_t::default();
        // SAFETY: the buffer holds at least `gfn_count` bits of
        // hypercall-safe memory; `stats` is a valid out-parameter.
        let rc = unsafe {
            ctrl.xc_logdirty_control(
                xch,
                domid,
                sys::XEN_DOMCTL_SHADOW_OP_CLEAN,
                buffer.descriptor(),
                gfn_count,
                mode,
                &mut stats,
            )
        };
        if rc < 0 {
            return Err(backend_error(
                XenError::last_os_error("xc_logdirty_control(CLEAN)", Some(domid)),
                domid,
            ));
        }
        if u64::try_from(rc).ok() != Some(gfn_count) {
            // libxenguest treats a short count as failure too.
            return Err(BackendError::Hypervisor {
                call: "xc_logdirty_control(CLEAN)",
                domid,
                reason: format!("processed {rc} of {gfn_count} pages"),
            });
        }
        let words = dirty.words_mut();
        let src = buffer.words();
        for (dst, &w) in words.iter_mut().zip(src) {
            *dst |= w;
        }
        // Bits past the last page stay clear, as DirtyBitmap requires.
        let tail_bits = gfn_count % 64;
        if tail_bits != 0 {
            if let Some(last) = words.last_mut() {
                *last &= (1_u64 << tail_bits) - 1;
            }
        }
        buffer.clear();
        self.last_stats = LogDirtyStats {
            dirty_count: stats.dirty_count,
            fault_count: stats.fault_count,
        };
        Ok(())
    }

    fn disable_dirty_log(&mut self) -> Result<(), BackendError> {
        if self.dirty_log.take().is_none() {
            return Err(BackendError::DirtyLogDisabled);
        }
        self.shadow_op(sys::XEN_DOMCTL_SHADOW_OP_OFF, "xc_shadow_control(OFF)")
            .map_err(|e| backend_error(e, self.domid))
    }

    /// Xen's log is exact for what the guest wrote, but also marks pages
    /// Xen or dom0 wrote into (grant copies, the shared info page).
    fn dirty_log_is_exact(&self) -> bool {
        false
    }

    fn pause(&mut self) -> Result<(), BackendError> {
        if let StopMethod::Suspend { timeout } = self.stop {
            return self
                .suspend(timeout)
                .map_err(|e| backend_error(e, self.domid));
        }
        if self.we_paused {
            return Ok(());
        }
        // SAFETY: plain domctl on a domain id.
        if unsafe {
            self.host
                .libs()
                .ctrl
                .xc_domain_pause(self.host.xch(), self.domid)
        } != 0
        {
            return Err(backend_error(
                XenError::last_os_error("xc_domain_pause", Some(self.domid)),
                self.domid,
            ));
        }
        self.we_paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), BackendError> {
        self.restore_cap()
            .map_err(|e| backend_error(e, self.domid))?;
        if self.suspended || self.stop != StopMethod::Pause {
            // Also a guest that suspended after perfplus gave up waiting.
            self.resume_after_suspend()
                .map_err(|e| backend_error(e, self.domid))?;
        }
        if !self.we_paused {
            return Ok(());
        }
        // SAFETY: plain domctl on a domain id; we hold one pause reference.
        if unsafe {
            self.host
                .libs()
                .ctrl
                .xc_domain_unpause(self.host.xch(), self.domid)
        } != 0
        {
            return Err(backend_error(
                XenError::last_os_error("xc_domain_unpause", Some(self.domid)),
                self.domid,
            ));
        }
        self.we_paused = false;
        Ok(())
    }

    fn is_paused(&self) -> bool {
        self.we_paused || self.suspended || self.info().is_ok_and(|i| i.paused || i.shutdown)
    }

    fn set_cpu_cap(&mut self, cap: Option<CpuShare>) -> Result<(), BackendError> {
        let domid = self.domid;
        let Some(share) = cap else {
            return self.restore_cap().map_err(|e| backend_error(e, domid));
        };
        let credit2 = self.credit2().map_err(|_| BackendError::Unsupported {
            backend: "xen",
            what: "CPU caps with a scheduler other than credit or credit2",
        })?;
        let (_, current) = self
            .credit_get(credit2)
            .map_err(|e| backend_error(e, domid))?;
        let original = match self.saved_cap {
            Some(SavedCap::Credit(c) | SavedCap::Credit2(c)) => c,
            None => {
                self.saved_cap = Some(if credit2 {
                    SavedCap::Credit2(current)
                } else {
                    SavedCap::Credit(current)
                });
                current
            }
        };
        // What the guest may use unthrottled: its own cap, or all its vCPUs.
        let full = if original == 0 {
            100 * self.vcpus
        } else {
            u32::from(original)
        };
        let capped = (full * u32::from(share.get()) / 100).max(1);
        let capped = u16::try_from(capped).unwrap_or(u16::MAX - 1);
        self.credit_set_cap(credit2, capped)
            .map_err(|e| backend_error(e, domid))
    }

    /// HVM/PVH: the libxc v3 records TSC_INFO, HVM_CONTEXT and HVM_PARAMS,
    /// byte for byte as they go into a migration stream.
    fn save_state(&mut self) -> Result<Vec<u8>, BackendError> {
        if !self.hvm {
            return Err(BackendError::Unsupported {
                backend: "xen",
                what:
                    "a state blob for PV guests (libxenguest's save loop writes their vCPU records)",
            });
        }
        self.hvm_state_records()
            .map_err(|e| backend_error(e, self.domid))
    }

    fn restore_state(&mut self, _state: &[u8]) -> Result<(), BackendError> {
        Err(BackendError::Unsupported {
            backend: "xen",
            what:
                "restoring state into a domain (the receiving side is the stock xc_domain_restore)",
        })
    }

    fn backend_name(&self) -> &'static str {
        "xen"
    }
}

impl Drop for XenDomain {
    /// Undo what this handle did, so an abandoned migration leaves the guest
    /// running as it was. Errors are reported, not fatal: the domain may be
    /// gone (migrated away, destroyed).
    fn drop(&mut self) {
        if self.dirty_log.is_some() {
            if let Err(e) = self.disable_dirty_log() {
                eprintln!("perfplus: xen: {e}");
            }
        }
        if self.migrated {
            return;
        }
        if let Err(e) = self.resume() {
            eprintln!("perfplus: xen: {e}");
        }
    }
}
