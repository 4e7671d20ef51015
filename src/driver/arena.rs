//! The arena driver: perfplus's own guests (`perfplus-arena-guest`
//! processes whose whole state lives in an MMU-tracked arena), live-migrated
//! with Perf+ between hosts.
//!
//! One [`ArenaHost`] per host owns the guest processes running there and
//! the host's receiver (a [`ReceiveService`] on the host's migration
//! address, adopting each incoming guest into its own process); the
//! per-resource [`ArenaDriver`]s share it.
//!
//! ```text
//!  source host                                   target host
//!  migrate_to(r): take r's GuestProcess,
//!    send_guest(Perf+) ──── stream ────────────▶ ReceiveService adopts it
//!    (on failure it runs here, given back)       ArenaHost files it under r
//!  release hook (drop the service address)       take-over hook (claim it)
//!                                                migrate_from(r): waits for r
//! ```
//!
//! A resource's parameters are the guest's spec words (`workload=kv
//! listen=10.206.0.1:7000 wal=/srv/shared/web ...`, see
//! [`GuestSpec::parse_words`]); `pages` defaults to the resource's memory.
//! With `wal=DIR` on shared storage, a guest restarted after its host died
//! replays every acknowledged write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{
    DriverError, DriverResource, MigrationSummary, PeerHost, ResourceDriver, ResourceStatus,
};
use crate::backend::arena::workload::GuestSpec;
use crate::backend::arena::{
    send_guest, Arrival, Fate, GuestCommand, GuestProcess, ReceiveConfig, ReceiveHandle,
    ReceiveService, SendConfig, TakeOver,
};
use crate::migration::engine::{Progress, ProgressFlow};
use crate::migration::policy::by_name;

/// Called with the guest's spec when it leaves this host (stopped, or
/// moved away): drop its service address, for example.
pub type Release = Arc<dyn Fn(&GuestSpec) + Send + Sync>;

/// Called with a resource's name and each progress event of a migration
/// this host sends.
pub type ProgressHook = Arc<dyn Fn(&str, &Progress) + Send + Sync>;

/// How a host runs arena guests.
#[derive(Clone)]
pub struct ArenaSettings {
    /// The guest program (`perfplus-arena-guest`, or a program that
    /// dispatches to `guest_main`).
    pub guest_program: GuestCommand,
    /// Where this host receives guests (its `migration` address); `None`:
    /// it only sends.
    pub receive_address: Option<SocketAddr>,
    /// The pre-copy policy (`perfplus`, `xen-default`, ...).
    pub policy: String,
    /// Claim a guest's service address before it starts here (a start, or
    /// an adopted migration).
    pub take_over: Option<TakeOver>,
    /// Give a guest's service address back when it leaves this host.
    pub release: Option<Release>,
    /// Migration progress, for displays.
    pub progress: Option<ProgressHook>,
    /// How long `migrate_from` waits for the adopted guest.
    pub adopt_timeout: Duration,
}

impl std::fmt::Debug for ArenaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaSettings")
            .field("guest_program", &self.guest_program)
            .field("receive_address", &self.receive_address)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ArenaSettings {
    /// Defaults: Perf+, no hooks, 120 s to adopt.
    pub fn new(guest_program: GuestCommand, receive_address: Option<SocketAddr>) -> Self {
        Self {
            guest_program,
            receive_address,
            policy: "perfplus".into(),
            take_over: None,
            release: None,
            progress: None,
            adopt_timeout: Duration::from_secs(120),
        }
    }
}

/// Hooks that move a guest's service address with it: on arrival (or a
/// start) add the address to `interface` and announce it with a gratuitous
/// ARP (`arping -U`, from iputils-arping), so switches and clients learn
/// where it went; on departure remove it. A guest without a `listen`
/// address is left alone.
pub fn address_hooks(interface: &str) -> (TakeOver, Release) {
    let iface = interface.to_string();
    let take_over: TakeOver = Arc::new(move |spec: &GuestSpec| {
        let Some(listen) = spec.listen else {
            return Ok(());
        };
        let ip = listen.ip().to_string();
        let prefix = if listen.is_ipv4() { "32" } else { "128" };
        // `replace`: idempotent when the address is already here.
        run(
            "ip",
            &["addr", "replace", &format!("{ip}/{prefix}"), "dev", &iface],
        )?;
        if listen.is_ipv4() {
            // Unsolicited ARP, twice (a lost one must not strand clients),
            // in the background: the guest need not wait for it.
            let args = ["-U", "-c", "2", "-I", iface.as_str(), ip.as_str()].map(String::from);
            std::thread::spawn(move || {
                let _ = std::process::Command::new("arping")
                    .args(&args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            });
        }
        Ok(())
    });
    let iface = interface.to_string();
    let release: Release = Arc::new(move |spec: &GuestSpec| {
        if let Some(listen) = spec.listen {
            let prefix = if listen.is_ipv4() { "32" } else { "128" };
            let _ = run(
                "ip",
                &[
                    "addr",
                    "del",
                    &format!("{}/{prefix}", listen.ip()),
                    "dev",
                    &iface,
                ],
            );
        }
    });
    (take_over, release)
}

/// Run a command; its failure (or absence) is an error naming it.
fn run(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = std::process::Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The guests of one host and its receiver.
pub struct ArenaHost {
    settings: ArenaSettings,
    guests: Mutex<BTreeMap<String, GuestProcess>>,
    arrived: Condvar,
    receiver: Mutex<Option<ReceiveHandle>>,
}

impl std::fmt::Debug for ArenaHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaHost")
            .field("settings", &self.settings)
            .field("guests", &self.guests.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The resource a migration id belongs to (ids are `<resource>-<pid>-<ns>`,
/// see [`SendConfig::unique_id`]).
fn resource_of(id: &str) -> Option<&str> {
    let mut parts = id.rsplitn(3, '-');
    let (_, _, resource) = (parts.next()?, parts.next()?, parts.next()?);
    Some(resource)
}

impl ArenaHost {
    /// Start the host's receiver (if it has a migration address) and the
    /// thread that files adopted guests.
    pub fn start(settings: ArenaSettings) -> Result<Arc<Self>, DriverError> {
        let host = Arc::new(Self {
            settings,
            guests: Mutex::new(BTreeMap::new()),
            arrived: Condvar::new(),
            receiver: Mutex::new(None),
        });
        if let Some(address) = host.settings.receive_address {
            let mut config = ReceiveConfig::new(host.settings.guest_program.clone());
            config.take_over = host.settings.take_over.clone();
            config.accept_sim = false;
            let io = |source| DriverError::Io {
                what: format!("the arena receiver on {address}"),
                source,
            };
            let (handle, arrivals) = ReceiveService::bind(address, config)
                .map_err(io)?
                .spawn()
                .map_err(io)?;
            *host.receiver.lock() = Some(handle);
            let weak = Arc::downgrade(&host);
            std::thread::Builder::new()
                .name("perfplus-arena-arrivals".into())
                .spawn(move || {
                    for arrival in arrivals {
                        let Some(host) = weak.upgrade() else { return };
                        if let Arrival::Adopted { id, guest, .. } = arrival {
                            match resource_of(&id) {
                                Some(resource) => {
                                    host.guests.lock().insert(resource.to_string(), *guest);
                                    host.arrived.notify_all();
                                }
                                // Not one of ours: it runs, but nobody manages it.
                                None => guest.detach(),
                            }
                        }
                    }
                })
                .map_err(|e| DriverError::Io {
                    what: "the arena arrivals thread".into(),
                    source: e,
                })?;
        }
        Ok(host)
    }

    /// The driver of one resource on this host.
    pub fn driver(self: &Arc<Self>) -> ArenaDriver {
        ArenaDriver { host: self.clone() }
    }

    /// The resources whose guests run here.
    pub fn running(&self) -> Vec<String> {
        let mut guests = self.guests.lock();
        guests.retain(|_, g| !g.has_exited());
        guests.keys().cloned().collect()
    }

    fn release(&self, guest: &GuestProcess) {
        if let (Some(release), Some(spec)) = (&self.settings.release, guest.spec()) {
            release(spec);
        }
    }
}

/// A resource's spec: its parameters as spec words, `pages` from its memory
/// unless given.
pub fn spec_of(resource: &DriverResource) -> Result<GuestSpec, DriverError> {
    let mut words: Vec<String> = resource
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !resource.params.contains_key("pages") {
        let mib = resource
            .memory_mib
            .ok_or_else(|| DriverError::Misconfigured {
                resource: resource.name.clone(),
                reason: "give `pages` or the resource's memory".into(),
            })?;
        words.push(format!("pages={}", mib * 256));
    }
    GuestSpec::parse_words(words.iter().map(String::as_str)).map_err(|e| {
        DriverError::Misconfigured {
            resource: resource.name.clone(),
            reason: e.to_string(),
        }
    })
}

/// Drives one arena resource; see the module documentation.
#[derive(Debug)]
pub struct ArenaDriver {
    host: Arc<ArenaHost>,
}

impl ArenaDriver {
    fn failed(action: &str, resource: &DriverResource, reason: String) -> DriverError {
        DriverError::Failed {
            action: action.into(),
            resource: resource.name.clone(),
            exit_code: 1,
            reason,
        }
    }
}

impl ResourceDriver for ArenaDriver {
    fn start(&mut self, resource: &DriverResource) -> Result<(), DriverError> {
        if self.monitor(resource)? == ResourceStatus::Running {
            return Ok(());
        }
        let spec = spec_of(resource)?;
        if let Some(take_over) = &self.host.settings.take_over {
            take_over(&spec).map_err(|e| {
                Self::failed(
                    "start",
                    resource,
                    format!("cannot take over its address: {e}"),
                )
            })?;
        }
        let guest = GuestProcess::spawn(&self.host.settings.guest_program, &spec)
            .map_err(|e| Self::failed("start", resource, e.to_string()))?;
        self.host.guests.lock().insert(resource.name.clone(), guest);
        Ok(())
    }

    fn stop(&mut self, resource: &DriverResource) -> Result<(), DriverError> {
        let guest = self.host.guests.lock().remove(&resource.name);
        if let Some(mut guest) = guest {
            guest
                .kill()
                .map_err(|e| Self::failed("stop", resource, e.to_string()))?;
            self.host.release(&guest);
        }
        Ok(())
    }

    fn monitor(&mut self, resource: &DriverResource) -> Result<ResourceStatus, DriverError> {
        let mut guests = self.host.guests.lock();
        let exited = match guests.get_mut(&resource.name) {
            Some(g) => g.has_exited(),
            None => return Ok(ResourceStatus::Stopped),
        };
        if exited {
            // It died by itself: forget it, so a start runs it again.
            guests.remove(&resource.name);
            return Ok(ResourceStatus::Stopped);
        }
        Ok(ResourceStatus::Running)
    }

    fn migrate_to(
        &mut self,
        resource: &DriverResource,
        target: &PeerHost,
    ) -> Result<MigrationSummary, DriverError> {
        let address: SocketAddr = target
            .migration_address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                Self::failed(
                    "migrate_to",
                    resource,
                    format!("{} has no `migration` address", target.name),
                )
            })?;
        let policy = by_name(&self.host.settings.policy).ok_or_else(|| {
            Self::failed(
                "migrate_to",
                resource,
                format!("unknown policy {}", self.host.settings.policy),
            )
        })?;
        let Some(guest) = self.host.guests.lock().remove(&resource.name) else {
            return Err(Self::failed(
                "migrate_to",
                resource,
                "it does not run here".into(),
            ));
        };
        let spec = guest.spec().cloned();
        let config = SendConfig::new(SendConfig::unique_id(&resource.name));
        let progress = self.host.settings.progress.clone();
        let name = resource.name.clone();
        let mut observer = |p: &Progress| {
            if let Some(progress) = &progress {
                progress(&name, p);
            }
            ProgressFlow::Continue
        };
        match send_guest(guest, address, policy.as_ref(), &config, &mut observer) {
            Ok(report) => {
                if let (Some(release), Some(spec)) = (&self.host.settings.release, &spec) {
                    release(spec);
                }
                Ok(MigrationSummary {
                    downtime_us: Some(ms_to_us(report.migration.downtime_ms)),
                    bytes: Some(report.migration.bytes_on_wire),
                })
            }
            Err(failure) => {
                let reason = failure.error.to_string();
                match failure.fate {
                    Fate::RunsHere(guest) => {
                        self.host.guests.lock().insert(resource.name.clone(), *guest);
                        Err(Self::failed("migrate_to", resource, reason))
                    }
                    Fate::Moved => {
                        if let (Some(release), Some(spec)) = (&self.host.settings.release, &spec) {
                            release(spec);
                        }
                        // Handed over, confirmed by a status query.
                        Ok(MigrationSummary::default())
                    }
                    Fate::LeftToKeeper => Err(Self::failed(
                        "migrate_to",
                        resource,
                        format!("{reason}; the stopped guest is left to its keeper, which settles it from the receiver's record"),
                    )),
                    Fate::Lost => Err(Self::failed(
                        "migrate_to",
                        resource,
                        format!("{reason}; the guest could not be resumed here"),
                    )),
                }
            }
        }
    }

    fn migrate_from(
        &mut self,
        resource: &DriverResource,
        source: &PeerHost,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + self.host.settings.adopt_timeout;
        let mut guests = self.host.guests.lock();
        while !guests.contains_key(&resource.name) {
            if self
                .host
                .arrived
                .wait_until(&mut guests, deadline)
                .timed_out()
            {
                return Err(Self::failed(
                    "migrate_from",
                    resource,
                    format!("no guest arrived from {}", source.name),
                ));
            }
        }
        Ok(())
    }
}

fn ms_to_us(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        // Rounded to whole µs; a downtime fits in u64 µs by far.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let us = (ms * 1000.0).round() as u64;
        us
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_ids_name_their_resource() {
        let id = SendConfig::unique_id("web-2");
        assert_eq!(resource_of(&id), Some("web-2"));
        assert_eq!(resource_of("x"), None);
    }

    #[test]
    fn spec_comes_from_parameters_and_memory() {
        let resource = DriverResource {
            name: "web".into(),
            params: [("workload", "kv"), ("listen", "127.0.0.1:7000")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            memory_mib: Some(64),
        };
        let spec = spec_of(&resource).unwrap();
        assert_eq!(spec.pages, 64 * 256);
        assert_eq!(spec.listen, Some("127.0.0.1:7000".parse().unwrap()));
        let mut bad = resource.clone();
        bad.params.insert("colour".into(), "blue".into());
        let err = spec_of(&bad).unwrap_err();
        assert!(err.to_string().contains("unknown key"), "{err}");
    }
}
