//! PVH guests: all of Perf+ in its own rounds ([`crate::migration::migrate`]:
//! dirty-page history, hot-page deferral, the stop rule, zero and delta
//! pages), over the guest's memory through log-dirty and foreign mappings,
//! writing the libxc v3 stream (HVM type) that the stock restore accepts.
//!
//! ```text
//!  PvhSource (Domain)                         LibxcSink (StreamSink)
//!   dense page index ◀── GfnMap ──▶ gfn        begin:      image + domain header (HVM),
//!   read_pages:  XenDomain (foreign maps)                  CPUID/MSR policy, STATIC_DATA_END
//!   harvest:     Xen's bitmap (all gfns)      send_pages: PAGE_DATA (gfn | type), ≤ 1024
//!                → dense bitmap                send_cpu_state: TSC_INFO, HVM_CONTEXT, HVM_PARAMS
//!   pause:       suspend through xenstore     end:        END, libxl END, "domain received"
//!   resume:      xc_domain_resume(fast)       commit:     xl's hand-over
//! ```
//!
//! A PVH guest's gfn space is sparse: a 128 MiB guest has about 1 Mi gfns,
//! because its special pages (xenstore, console, ...) sit just below 4 GiB.
//! [`GfnMap`] numbers the pages that hold memory when the migration starts
//! (types from `xc_get_pfn_type_batch`: not XTAB, XALLOC or BROKEN), so
//! the engine plans, counts and predicts over the guest's real memory and
//! never reads the holes. Xen's dirty bitmap still covers every gfn; a
//! dirty gfn outside the map is ignored if it is still a hole (the shared
//! info page that Xen writes is one) and aborts the migration if it has
//! become memory (ballooned in), rather than leaving it behind.

use std::os::fd::RawFd;
use std::sync::Arc;

use libxenctrl_sys as sys;

use super::channel::{pipe_queued_bytes, pipe_reader_gone};
use super::domain::{backend_error, page_types};
use super::records::{self, pfinfo_has_data, REC_TYPE_END, REC_TYPE_STATIC_DATA_END};
use super::session::{
    await_ready, hand_over, wait_drained, HandoverError, Mark, Session, Timeline, XlLink,
    DRAIN_BEFORE_STOP,
};
use super::xl::{libxl_empty_record, LIBXL_REC_END};
use super::{XenDomain, XenError, XenHost};
use crate::backend::{BackendError, CpuShare, DirtyBitmap, Domain, Pfn};
use crate::migration::engine::MigrationReport;
use crate::migration::sink::{BatchSent, StreamSink};
use crate::migration::stream::StreamHeader;
use crate::migration::{MigrationError, PrecopyPolicy, Progress, ProgressFlow, RealClock, Stage};

/// A contiguous run of populated gfns and the dense index of its first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GfnRun {
    gfn: u64,
    index: u64,
    len: u64,
}

/// The guest's populated gfns, numbered densely from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GfnMap {
    runs: Vec<GfnRun>,
    pages: u64,
}

impl GfnMap {
    /// The populated gfns of `domain` now, from `xc_get_pfn_type_batch`,
    /// 1024 gfns per call from both ends of the gfn space at once, until as
    /// many pages with memory were found as the domain owns (`tot_pages`):
    /// a PVH guest's memory sits at the bottom (RAM) and the top (its
    /// special pages, just below 4 GiB, and RAM above 4 GiB), so this
    /// skips the hole between them, about 1 Mi gfns of a small guest. Pages
    /// the domain owns but has not mapped (or a count that changed while
    /// looking) make it look at every gfn, as libxenguest does.
    pub fn of(domain: &XenDomain) -> Result<Self, XenError> {
        let owned = domain.info()?.tot_pages;
        let map = Self::scan(domain.page_count(), owned, |gfns| domain.page_types(gfns))?;
        if domain.info()?.tot_pages == owned {
            return Ok(map);
        }
        // Ballooned while looking: look at everything.
        Self::scan(domain.page_count(), u64::MAX, |gfns| {
            domain.page_types(gfns)
        })
    }

    /// The scan of [`GfnMap::of`] over gfns `0..gfn_count`, with `types`
    /// answering for a batch, until `owned` pages with data were found.
    fn scan<E>(
        gfn_count: u64,
        owned: u64,
        mut types: impl FnMut(&[Pfn]) -> Result<Vec<u32>, E>,
    ) -> Result<Self, E> {
        let (mut lo, mut hi) = (0_u64, gfn_count);
        let (mut bottom, mut top) = (Vec::new(), Vec::new());
        let mut batch: Vec<Pfn> = Vec::with_capacity(1024);
        let mut from_bottom = true;
        while lo < hi && ((bottom.len() + top.len()) as u64) < owned {
            let n = (hi - lo).min(1024);
            batch.clear();
            if from_bottom {
                batch.extend(lo..lo + n);
                lo += n;
            } else {
                batch.extend(hi - n..hi);
                hi -= n;
            }
            let found = types(&batch)?;
            let data = batch
                .iter()
                .zip(&found)
                .filter(|(_, &t)| pfinfo_has_data(t))
                .map(|(&g, _)| g);
            if from_bottom {
                bottom.extend(data);
            } else {
                top.extend(data);
            }
            from_bottom = !from_bottom;
        }
        // Batches from the top come in descending order.
        top.sort_unstable();
        Ok(Self::from_populated(bottom.into_iter().chain(top)))
    }

    /// The map of these gfns (ascending).
    pub fn from_populated(gfns: impl IntoIterator<Item = u64>) -> Self {
        let mut runs: Vec<GfnRun> = Vec::new();
        let mut pages = 0;
        for gfn in gfns {
            match runs.last_mut() {
                Some(r) if r.gfn + r.len == gfn => r.len += 1,
                _ => runs.push(GfnRun {
                    gfn,
                    index: pages,
                    len: 1,
                }),
            }
            pages += 1;
        }
        Self { runs, pages }
    }

    /// Populated pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The gfn of dense page `index`.
    pub fn gfn(&self, index: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.index + r.len <= index);
        self.runs
            .get(i)
            .filter(|r| r.index <= index)
            .map(|r| r.gfn + (index - r.index))
    }

    /// The dense index of `gfn`, if it is populated.
    pub fn index(&self, gfn: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.gfn + r.len <= gfn);
        self.runs
            .get(i)
            .filter(|r| r.gfn <= gfn)
            .map(|r| r.index + (gfn - r.gfn))
    }

    /// Mark in `dense` the populated pages among gfns `[start, end)`;
    /// append the gfns in the range that are not in the map to `outside`.
    fn translate(&self, start: u64, end: u64, dense: &mut DirtyBitmap, outside: &mut Vec<u64>) {
        let mut gfn = start;
        let mut i = self.runs.partition_point(|r| r.gfn + r.len <= gfn);
        while gfn < end {
            match self.runs.get(i) {
                Some(r) if r.gfn <= gfn => {
                    let stop = end.min(r.gfn + r.len);
                    let first = r.index + (gfn - r.gfn);
                    dense.set_range(crate::backend::PageRange {
                        start: first,
                        end: first + (stop - gfn),
                    });
                    gfn = stop;
                    i += 1;
                }
                next => {
                    let stop = next.map_or(end, |r| r.gfn.min(end));
                    outside.extend(gfn..stop);
                    gfn = stop;
                }
            }
        }
    }
}

/// A PVH guest seen through its [`GfnMap`], stopped by suspending it.
#[derive(Debug)]
pub(crate) struct PvhSource {
    domain: XenDomain,
    map: Arc<GfnMap>,
    full: DirtyBitmap,
    gfns: Vec<u64>,
    outside: Vec<u64>,
    /// The switch-over's moments, and the pipe to the transport (to see
    /// what is queued in it when the guest is asked to stop).
    timeline: Arc<Timeline>,
    wire_fd: Option<RawFd>,
}

impl PvhSource {
    pub(crate) fn new(
        domain: XenDomain,
        map: Arc<GfnMap>,
        timeline: Arc<Timeline>,
        wire_fd: Option<RawFd>,
    ) -> Self {
        let full = DirtyBitmap::new(domain.page_count());
        Self {
            domain,
            map,
            full,
            gfns: Vec::new(),
            outside: Vec::new(),
            timeline,
            wire_fd,
        }
    }

    fn translate_pfns(&mut self, pfns: &[Pfn]) -> Result<(), BackendError> {
        self.gfns.clear();
        for &p in pfns {
            self.gfns
                .push(self.map.gfn(p).ok_or(BackendError::PfnOutOfRange {
                    pfn: p,
                    page_count: self.map.pages(),
                })?);
        }
        Ok(())
    }
}

impl Domain for PvhSource {
    fn page_size(&self) -> usize {
        records::PAGE_SIZE
    }

    fn page_count(&self) -> u64 {
        self.map.pages()
    }

    fn read_pages(&mut self, pfns: &[Pfn], buf: &mut [u8]) -> Result<(), BackendError> {
        self.translate_pfns(pfns)?;
        let gfns = std::mem::take(&mut self.gfns);
        let result = self.domain.read_pages(&gfns, buf);
        self.gfns = gfns;
        result
    }

    fn write_pages(&mut self, _pfns: &[Pfn], _data: &[u8]) -> Result<(), BackendError> {
        Err(BackendError::Unsupported {
            backend: "xen",
            what: "writing a migrating guest's memory",
        })
    }

    fn enable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.domain.enable_dirty_log()
    }

    fn harvest_dirty(&mut self, dirty: &mut DirtyBitmap) -> Result<(), BackendError> {
        self.full.clear();
        self.domain.harvest_dirty(&mut self.full)?;
        self.outside.clear();
        for range in self.full.ranges() {
            self.map
                .translate(range.start, range.end, dirty, &mut self.outside);
        }
        if self.outside.is_empty() {
            return Ok(());
        }
        let domid = self.domain.domid();
        let types = self
            .domain
            .page_types(&self.outside)
            .map_err(|e| backend_error(e, domid))?;
        if let Some((gfn, _)) = self
            .outside
            .iter()
            .zip(&types)
            .find(|(_, &t)| pfinfo_has_data(t))
        {
            return Err(BackendError::Hypervisor {
                call: "xc_logdirty_control",
                domid,
                reason: format!(
                    "gfn {gfn:#x} became guest memory during the migration (ballooned in?); \
                     perfplus moves the memory the guest had when the migration started"
                ),
            });
        }
        Ok(())
    }

    fn disable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.domain.disable_dirty_log()
    }

    fn dirty_log_is_exact(&self) -> bool {
        false
    }

    fn pause(&mut self) -> Result<(), BackendError> {
        // The sink's `wait_sent` already let the last live round leave the
        // pipe to the transport; whatever is still there (a round cut
        // short) goes before the stop too, while the guest still runs.
        if let Some(fd) = self.wire_fd {
            // A receiver gone reads nothing more: stop looking.
            self.timeline.drain_before_stop(|| {
                if pipe_reader_gone(fd) {
                    0
                } else {
                    pipe_queued_bytes(fd)
                }
            });
        }
        self.timeline.mark(Mark::StopRequested);
        self.domain.pause()?;
        self.timeline.mark(Mark::Stopped);
        Ok(())
    }

    fn resume(&mut self) -> Result<(), BackendError> {
        self.domain.resume()
    }

    fn is_paused(&self) -> bool {
        self.domain.is_paused()
    }

    fn set_cpu_cap(&mut self, cap: Option<CpuShare>) -> Result<(), BackendError> {
        self.domain.set_cpu_cap(cap)
    }

    fn save_state(&mut self) -> Result<Vec<u8>, BackendError> {
        self.timeline.mark(Mark::PagesSent);
        self.domain.save_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BackendError> {
        self.domain.restore_state(state)
    }

    fn backend_name(&self) -> &'static str {
        "xen"
    }
}

/// How the hand-over ended, when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandoverFailure {
    /// The guest may be resumed at the source.
    Resumable,
    /// Permission was given and not answered.
    Unconfirmed,
}

/// Writes a libxc v3 stream (HVM type) inside xl's protocol.
pub(crate) struct LibxcSink<'a, 's> {
    link: &'a mut XlLink,
    host: XenHost,
    session: &'a Session<'s>,
    map: Arc<GfnMap>,
    record: Vec<u8>,
    gfns: Vec<u64>,
    words: Vec<u64>,
    data_at: Vec<usize>,
    handover: Option<HandoverFailure>,
    /// The pipe the stream leaves by, to see when a round's bytes are out.
    wire_fd: Option<RawFd>,
}

impl std::fmt::Debug for LibxcSink<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibxcSink").finish_non_exhaustive()
    }
}

impl<'a, 's> LibxcSink<'a, 's> {
    pub(crate) fn new(
        link: &'a mut XlLink,
        host: XenHost,
        session: &'a Session<'s>,
        map: Arc<GfnMap>,
        wire_fd: Option<RawFd>,
    ) -> Self {
        Self {
            link,
            host,
            session,
            map,
            record: Vec::new(),
            gfns: Vec::new(),
            words: Vec::new(),
            data_at: Vec::new(),
            handover: None,
            wire_fd,
        }
    }

    fn xen(&self, what: &'static str, e: XenError) -> MigrationError {
        MigrationError::Backend {
            what,
            source: backend_error(e, self.session.domid),
        }
    }

    /// The guest's CPUID and MSR policies, as libxenguest's static data.
    fn cpu_policy_records(&self, out: &mut Vec<u8>) -> Result<(), XenError> {
        let libs = self.host.libs();
        let xch = self.host.xch();
        let domid = self.session.domid;
        let (mut nr_leaves, mut nr_msrs) = (0_u32, 0_u32);
        // SAFETY: two valid out-parameters.
        if unsafe {
            libs.guest
                .xc_cpu_policy_get_size(xch, &mut nr_leaves, &mut nr_msrs)
        } != 0
        {
            return Err(XenError::last_os_error(
                "xc_cpu_policy_get_size",
                Some(domid),
            ));
        }
        let mut leaves = vec![sys::xen_cpuid_leaf_t::default(); nr_leaves as usize];
        let mut msrs = vec![sys::xen_msr_entry_t::default(); nr_msrs as usize];
        // SAFETY: allocates a policy object, freed below.
        let policy = unsafe { libs.guest.xc_cpu_policy_init() };
        if policy.is_null() {
            return Err(XenError::last_os_error("xc_cpu_policy_init", Some(domid)));
        }
        // SAFETY: `policy` is live.
        let mut rc = unsafe { libs.guest.xc_cpu_policy_get_domain(xch, domid, policy) };
        if rc == 0 {
            // SAFETY: `policy` is live; the arrays hold `nr_leaves` and
            // `nr_msrs` entries, which the call may lower.
            rc = unsafe {
                libs.guest.xc_cpu_policy_serialise(
                    xch,
                    policy,
                    leaves.as_mut_ptr(),
                    &mut nr_leaves,
                    msrs.as_mut_ptr(),
                    &mut nr_msrs,
                )
            };
        }
        let errno = XenError::last_os_error("xc_cpu_policy_get_domain", Some(domid));
        // SAFETY: destroyed exactly once, after its last use.
        unsafe { libs.guest.xc_cpu_policy_destroy(policy) };
        if rc != 0 {
            return Err(errno);
        }
        leaves.truncate(nr_leaves as usize);
        msrs.truncate(nr_msrs as usize);
        let mut body = Vec::with_capacity(24 * leaves.len());
        for l in &leaves {
            for v in [l.leaf, l.subleaf, l.a, l.b, l.c, l.d] {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        let too_long = || XenError::Unexpected {
            call: "xc_cpu_policy_serialise",
            domid: Some(domid),
            what: "a policy over the stream's record limit".into(),
        };
        if !body.is_empty() {
            records::write_record(out, records::REC_TYPE_X86_CPUID_POLICY, &body)
                .ok_or_else(too_long)?;
        }
        body.clear();
        for m in &msrs {
            body.extend_from_slice(&m.idx.to_le_bytes());
            body.extend_from_slice(&m.flags.to_le_bytes());
            body.extend_from_slice(&m.val.to_le_bytes());
        }
        if !body.is_empty() {
            records::write_record(out, records::REC_TYPE_X86_MSR_POLICY, &body)
                .ok_or_else(too_long)?;
        }
        Ok(())
    }
}

impl StreamSink for LibxcSink<'_, '_> {
    fn begin(&mut self, _header: StreamHeader) -> Result<(), MigrationError> {
        let (major, minor) = self
            .host
            .version()
            .map_err(|e| self.xen("reading the Xen version", e))?;
        let mut out = Vec::new();
        out.extend_from_slice(&records::image_header());
        out.extend_from_slice(&records::domain_header(
            records::DHDR_TYPE_X86_HVM,
            major,
            minor,
        ));
        self.cpu_policy_records(&mut out)
            .map_err(|e| self.xen("reading the guest's CPU policy", e))?;
        let _ = records::write_record(&mut out, REC_TYPE_STATIC_DATA_END, &[]);
        self.link.send_libxc(&out)
    }

    fn send_pages(
        &mut self,
        round: u32,
        pfns: &[Pfn],
        data: &[u8],
    ) -> Result<BatchSent, MigrationError> {
        let size = records::PAGE_SIZE;
        let before = self.link.encoder.stats();
        let bytes_before = self.link.bytes_on_wire();
        for (chunk, pages) in pfns
            .chunks(records::MAX_BATCH_PFNS)
            .zip(data.chunks(records::MAX_BATCH_PFNS * size))
        {
            self.gfns.clear();
            for &p in chunk {
                self.gfns
                    .push(self.map.gfn(p).ok_or(MigrationError::Protocol {
                        what: format!("page {p} is outside the guest's memory map"),
                    })?);
            }
            let types = page_types(&self.host, self.session.domid, &self.gfns)
                .map_err(|e| self.xen("reading page types", e))?;
            self.words.clear();
            self.data_at.clear();
            for (i, (&gfn, &t)) in self.gfns.iter().zip(&types).enumerate() {
                self.words.push(records::pfn_word(gfn, t));
                if pfinfo_has_data(t) {
                    self.data_at.push(i);
                }
            }
            self.record.clear();
            let data_at = &self.data_at;
            records::write_page_data(&mut self.record, &self.words, |i| {
                let at = data_at[i] * size;
                &pages[at..at + size]
            });
            self.link.encoder.set_round(round);
            let record = std::mem::take(&mut self.record);
            let sent = self.link.send_libxc(&record);
            self.record = record;
            sent?;
        }
        let after = self.link.encoder.stats();
        let mut sent = BatchSent {
            wire_bytes: self.link.bytes_on_wire() - bytes_before,
            zero_pages: after.zero_pages - before.zero_pages,
            raw_pages: after.raw_pages - before.raw_pages,
            delta_pages: after.delta_pages - before.delta_pages,
        };
        // Pages that turned into holes since they were read went as types
        // only; count them as (zero-byte) pages so the engine's numbers add up.
        let holes = pfns.len() as u64 - (after.data_pages - before.data_pages);
        sent.zero_pages += holes;
        Ok(sent)
    }

    fn send_cpu_state(&mut self, blob: &[u8]) -> Result<u64, MigrationError> {
        let before = self.link.bytes_on_wire();
        self.link.send_libxc(blob)?;
        self.link.timeline.mark(Mark::StateSent);
        Ok(self.link.bytes_on_wire() - before)
    }

    fn end_and_await_ack(&mut self) -> Result<(), MigrationError> {
        let mut end = Vec::new();
        let _ = records::write_record(&mut end, REC_TYPE_END, &[]);
        self.link.send_libxc(&end)?;
        self.link.send_literal(&libxl_empty_record(LIBXL_REC_END))?;
        await_ready(self.link)
    }

    fn commit_and_await_resumed(&mut self) -> Result<(), MigrationError> {
        hand_over(
            self.link,
            self.session.store,
            self.session.domid,
            self.session.name,
        )
        .map_err(|e| {
            self.handover = Some(match e {
                HandoverError::Unconfirmed(_) => HandoverFailure::Unconfirmed,
                _ => HandoverFailure::Resumable,
            });
            e.into_inner()
        })
    }

    fn abort(&mut self, _reason: &str) {
        // xl's protocol has no abort message: the receiver learns it from
        // the stream ending without its END (the link is closed so).
    }

    fn bytes_on_wire(&self) -> u64 {
        self.link.bytes_on_wire()
    }

    fn wait_sent(&mut self) -> Result<(), MigrationError> {
        // A round ends when its pages have left perfplus's pipes toward the
        // receiver, not when they entered them: the engine's bandwidth
        // estimate and round timing then see the link, and the next round
        // (or the stop) does not queue behind this one. A receiver gone
        // reads nothing more: stop looking (the next write says why).
        if let Some(fd) = self.wire_fd {
            wait_drained(
                || {
                    if pipe_reader_gone(fd) {
                        0
                    } else {
                        pipe_queued_bytes(fd)
                    }
                },
                DRAIN_BEFORE_STOP,
            );
        }
        Ok(())
    }
}

/// Migrate the PVH guest `domain` over `link` (its preamble already
/// sent); the report and how long listing its gfns took, ms.
pub(crate) fn migrate(
    session: &Session<'_>,
    domain: XenDomain,
    link: &mut XlLink,
    policy: &dyn PrecopyPolicy,
    observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
) -> Result<(MigrationReport, f64), MigrationError> {
    let domid = session.domid;
    let scanning = std::time::Instant::now();
    let map = GfnMap::of(&domain).map_err(|e| MigrationError::Aborted {
        stage: Stage::Setup,
        cause: Box::new(MigrationError::Backend {
            what: "listing the guest's memory",
            source: backend_error(e, domid),
        }),
    })?;
    let gfn_scan_ms = scanning.elapsed().as_secs_f64() * 1e3;
    let map = Arc::new(map);
    let host = domain.host().clone();
    let wire_fd = link.channel.split().ok().map(|(w, _)| w.raw_fd());
    let mut source = PvhSource::new(domain, map.clone(), link.timeline.clone(), wire_fd);
    let mut sink = LibxcSink::new(link, host, session, map, wire_fd);
    let result = crate::migration::migrate(
        &mut source,
        policy,
        &mut sink,
        &RealClock::new(),
        &session.options.engine,
        observer,
    );
    match result {
        Ok(report) => {
            source.domain.mark_migrated();
            Ok((report, gfn_scan_ms))
        }
        Err(MigrationError::HandoverUnconfirmed { cause })
            if sink.handover == Some(HandoverFailure::Resumable) =>
        {
            let _ = source.set_cpu_cap(None);
            let _ = source.disable_dirty_log();
            Err(MigrationError::after_resume(
                Stage::Commit,
                cause,
                source.resume(),
            ))
        }
        Err(e @ MigrationError::HandoverUnconfirmed { .. }) => {
            source.domain.mark_migrated();
            Err(e)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_numbers_populated_gfns_densely_and_back() {
        // RAM 0..4, special pages at 0xfeff8..0xff000.
        let map = GfnMap::from_populated((0..4).chain(0xfeff8..0xff000));
        assert_eq!(map.pages(), 12);
        assert_eq!(map.gfn(0), Some(0));
        assert_eq!(map.gfn(3), Some(3));
        assert_eq!(map.gfn(4), Some(0xfeff8));
        assert_eq!(map.gfn(11), Some(0xfefff));
        assert_eq!(map.gfn(12), None);
        for i in 0..12 {
            assert_eq!(map.index(map.gfn(i).unwrap()), Some(i));
        }
        assert_eq!(map.index(4), None);
        assert_eq!(map.index(0xff000), None);
    }

    /// A PVH-like layout: RAM at the bottom, special pages below 4 GiB,
    /// holes (XTAB) elsewhere.
    fn layout(gfn: u64) -> u32 {
        if gfn < 3000 || (0xfeff8..0xff000).contains(&gfn) {
            0
        } else {
            0xf000_0000
        }
    }

    #[test]
    fn the_scan_stops_once_every_owned_page_is_found() {
        let mut asked = 0;
        let map = GfnMap::scan(0xff000, 3008, |gfns| {
            asked += gfns.len();
            Ok::<_, ()>(gfns.iter().map(|&g| layout(g)).collect())
        })
        .unwrap();
        assert_eq!(
            map,
            GfnMap::from_populated((0..3000).chain(0xfeff8..0xff000))
        );
        // Three batches from the bottom, two from the top, not 1020.
        assert_eq!(asked, 5 * 1024);
    }

    #[test]
    fn a_page_owned_but_not_mapped_makes_the_scan_look_everywhere() {
        let mut asked = 0;
        let map = GfnMap::scan(0xff000, 3009, |gfns| {
            asked += gfns.len();
            Ok::<_, ()>(gfns.iter().map(|&g| layout(g)).collect())
        })
        .unwrap();
        assert_eq!(map.pages(), 3008);
        assert_eq!(asked, 0xff000);
    }

    #[test]
    fn dirty_gfns_become_dense_pages_and_holes_are_set_aside() {
        let map = GfnMap::from_populated((10..20).chain(100..105));
        let mut dense = DirtyBitmap::new(map.pages());
        let mut outside = Vec::new();
        map.translate(8, 12, &mut dense, &mut outside);
        map.translate(19, 101, &mut dense, &mut outside);
        let set: Vec<u64> = dense.iter().collect();
        assert_eq!(set, vec![0, 1, 9, 10]);
        assert_eq!(outside.len(), 2 + 80);
        assert_eq!(&outside[..3], &[8, 9, 20]);
        assert_eq!(*outside.last().unwrap(), 99);
    }
}
