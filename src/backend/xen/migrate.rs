//! Live-migrating a Xen guest to a host that runs the stock
//! `xl migrate-receive`, with Perf+ deciding the rounds.
//!
//! ```text
//!  migrate_domain("web1", policy, options)
//!    xl list -l            the configuration xl would send
//!    XlLink::open          transport command (ssh HOST perfplus migrate-receive,
//!                          or ssh HOST xl migrate-receive), banner, HELLO
//!    preamble              xl save header + config, libxl header, LIBXC_CONTEXT
//!    PV:  pv::save         xc_domain_save with Perf+ as its precopy_policy
//!    PVH: migration::migrate over PvhSource → LibxcSink (Perf+'s own rounds)
//!    libxl END; "domain received, ready to unpause"
//!    rename to NAME--migratedaway; "domain is yours, ..."; status byte
//!    xl destroy            the source, once the guest runs at the destination
//! ```
//!
//! Until the destination reports that the guest runs there, any failure
//! resumes the guest at the source ([`MigrationError::Aborted`]). The one
//! window where that is not safe is xl's too: after perfplus gave the
//! destination permission to start the guest and before it heard back,
//! both copies may exist; the source then stays suspended and renamed
//! `NAME--migratedaway` ([`MigrationError::HandoverUnconfirmed`]).

use super::session::{Session, SwitchoverBreakdown, XenMigrationOptions, XlLink};
use super::store::XenStore;
use super::transcode::{EncoderSettings, TranscodeStats};
use super::{XenDomain, XenError, XenHost};
use crate::migration::encode::EncodingSet;
use crate::migration::{
    MigrationError, MigrationReport, PrecopyPolicy, Progress, ProgressFlow, Stage,
};

/// The kind of guest, which decides the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestType {
    /// Paravirtualised: libxenguest's save loop (it rewrites the guest's
    /// page tables), with Perf+ as its pre-copy policy.
    Pv,
    /// PVH (an HVM container without a device model): Perf+'s own rounds.
    Pvh,
}

impl GuestType {
    /// `pv` or `pvh`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pv => "pv",
            Self::Pvh => "pvh",
        }
    }
}

/// What a Xen migration did.
#[derive(Debug, Clone, PartialEq)]
pub struct XenMigrationReport {
    /// The source domain.
    pub domid: u32,
    /// Its name.
    pub name: String,
    /// PV or PVH.
    pub guest_type: GuestType,
    /// Rounds, downtime (at the source: from the suspend request to the
    /// destination's report), total time, bytes, pages.
    pub migration: MigrationReport,
    /// Whether the stream was transcoded for a perfplus receiver.
    pub transcoded: bool,
    /// What went through the transcoder.
    pub stream: TranscodeStats,
    /// Whether the source domain was destroyed.
    pub source_destroyed: bool,
    /// Before the first round: the configuration (`xl list -l`), the
    /// transport and the handshake, ms.
    pub setup_ms: f64,
    /// PVH: listing the guest's populated gfns (a type query for every gfn
    /// up to the highest, which is near 4 GiB), ms; 0 for PV.
    pub gfn_scan_ms: f64,
    /// Destroying the source domain (`xl destroy`), ms.
    pub destroy_ms: f64,
    /// Where the downtime went, stage by stage.
    pub switchover: SwitchoverBreakdown,
}

/// Live-migrate the domain `domain` (name or id) with `policy` deciding
/// the rounds, to the receiver at the end of `options.transport_command`;
/// `observer` sees each decision and may cancel before the guest is
/// suspended.
///
/// PV guests go through libxenguest's own save loop with the policy as its
/// `precopy_policy`; PVH guests through Perf+'s own rounds
/// ([`crate::migration::migrate`]). HVM guests with a device model are
/// refused (QEMU's state is not carried).
pub fn migrate_domain(
    host: &XenHost,
    domain: &str,
    policy: &dyn PrecopyPolicy,
    options: &XenMigrationOptions,
    observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
) -> Result<XenMigrationReport, crate::Error> {
    let started = std::time::Instant::now();
    let info = host.find_domain(domain)?;
    let domid = info.domid;
    let store = XenStore::open(host.inner.libs.clone())?;
    let name = store
        .read(&format!("/local/domain/{domid}/name"))?
        .ok_or_else(|| XenError::NoSuchDomain(domain.to_string()))?;
    let mut source = XenDomain::attach(host, domid)?;
    source.set_stop_method(super::StopMethod::Suspend {
        timeout: options.suspend_timeout,
    });
    let encodings = if options.transcoded {
        policy.encodings()
    } else {
        EncodingSet::RAW_ONLY
    };
    let settings = EncoderSettings {
        chunked: options.transcoded,
        encodings,
        page_count: crate::backend::Domain::page_count(&source),
        delta_cache_bytes: options.delta_cache_bytes,
    };
    // `xl list -l` and the receiver's start (another xl, often over ssh)
    // take seconds each on a busy dom0: side by side.
    let (config, link) = std::thread::scope(|scope| {
        let config = scope.spawn(|| options.toolstack.migration_config(domid));
        let link = XlLink::open(options, settings);
        let config = config.join().unwrap_or_else(|_| {
            Err(XenError::Toolstack {
                command: "xl list -l".into(),
                reason: "the thread running it panicked".into(),
            })
        });
        (config, link)
    });
    let mut link = link.map_err(|e| aborted(Stage::Setup, e))?;
    let config = match config.and_then(|c| guest_type(&c, info.hvm, domid).map(|t| (c, t))) {
        Ok(c) => c,
        Err(e) => {
            link.close(false);
            return Err(e.into());
        }
    };
    let (config, guest_type) = config;
    if let Err(e) = link.send_literal(&super::xl::preamble(&config)) {
        link.close(false);
        return Err(aborted(Stage::Setup, e).into());
    }
    let session = Session {
        store: &store,
        name: &name,
        domid,
        options,
    };
    let setup_ms = started.elapsed().as_secs_f64() * 1e3;
    let migration = match guest_type {
        GuestType::Pv => {
            super::pv::migrate(&session, &mut source, &mut link, policy, observer).map(|m| (m, 0.0))
        }
        GuestType::Pvh => super::pvh::migrate(&session, source, &mut link, policy, observer),
    };
    let (migration, gfn_scan_ms) = match migration {
        Ok(m) => m,
        Err(e) => {
            link.close(false);
            return Err(e.into());
        }
    };
    let stream = link.encoder.stats();
    let switchover = link.timeline.breakdown();
    link.close(true);
    let destroying = std::time::Instant::now();
    let source_destroyed = if options.destroy_source {
        match options.toolstack.destroy(domid) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "perfplus: xen: the guest runs at the destination, but destroying the \
                     source domain {domid} ({name}--migratedaway) failed: {e}"
                );
                false
            }
        }
    } else {
        false
    };
    Ok(XenMigrationReport {
        domid,
        name,
        guest_type,
        migration,
        transcoded: options.transcoded,
        stream,
        source_destroyed,
        setup_ms,
        gfn_scan_ms,
        destroy_ms: destroying.elapsed().as_secs_f64() * 1e3,
        switchover,
    })
}

/// `Aborted` at `stage`: nothing was changed at the source yet.
fn aborted(stage: Stage, cause: MigrationError) -> MigrationError {
    MigrationError::Aborted {
        stage,
        cause: Box::new(cause),
    }
}

/// PV or PVH from the configuration's `c_info.type`; HVM is refused.
fn guest_type(config: &[u8], hvm: bool, domid: u32) -> Result<GuestType, XenError> {
    let kind = serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|v| v["c_info"]["type"].as_str().map(str::to_string));
    match (kind.as_deref(), hvm) {
        (Some("pv"), false) | (None, false) => Ok(GuestType::Pv),
        (Some("pvh"), true) => Ok(GuestType::Pvh),
        (other, _) => Err(XenError::Unexpected {
            call: "xl list -l",
            domid: Some(domid),
            what: format!(
                "a guest of type {} (perfplus migrates PV and PVH guests; an HVM guest's \
                 device model state is not carried)",
                other.unwrap_or("hvm")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pv_and_pvh_guests_are_migrated() {
        let cfg = |t: &str| format!(r#"{{"c_info": {{"type": "{t}"}}}}"#).into_bytes();
        assert_eq!(guest_type(&cfg("pv"), false, 1).unwrap(), GuestType::Pv);
        assert_eq!(guest_type(&cfg("pvh"), true, 1).unwrap(), GuestType::Pvh);
        let err = guest_type(&cfg("hvm"), true, 1).unwrap_err().to_string();
        assert!(err.contains("device model"), "{err}");
    }
}
