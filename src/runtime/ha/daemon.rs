//! The node daemon: what `perfplus node` (and each host of the demo) runs
//! until told to stop. Membership only when the configuration has no
//! resources; otherwise an [`HaNode`] with the standard drivers, arena
//! guests run by `guest_program`. Every event is one log line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{HaEvent, HaNode};
use crate::backend::arena::GuestCommand;
use crate::config::NodeConfig;
use crate::driver::arena::address_hooks;
use crate::driver::StandardDrivers;
use crate::migration::engine::Progress;
use crate::runtime::{Node, NodeEvent};

/// How the daemon runs its host.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The arena guest program (this program with a `guest` argument,
    /// typically).
    pub guest_program: GuestCommand,
    /// Interface that arena guests' service addresses move to (see
    /// [`address_hooks`]); `None`: addresses stay put.
    pub service_interface: Option<String>,
    /// Pre-copy policy for arena migrations (`perfplus` by default).
    pub policy: Option<String>,
    /// Extra environment for OCF agents.
    pub ocf_env: Vec<(String, String)>,
}

/// A log line with the wall-clock time, `t=<µs since the epoch> text`, so
/// the lines of several hosts can be merged.
pub fn stamp(text: &str) -> String {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("t={us} {text}")
}

/// One line per round decision and per phase of a migration this host
/// sends (batches are not logged: too many).
pub fn describe_progress(resource: &str, progress: &Progress) -> Option<String> {
    match progress {
        Progress::Decided { stats, decision } => Some(format!(
            "PROGRESS {resource} round={} dirty_pages={} deferred_pages={} dirty_rate_pages_per_s={:.0} bandwidth_bytes_per_s={:.0} predicted_downtime_ms={:.1} decision={:?}",
            stats.iteration,
            stats.dirty_pages,
            stats.deferred_pages,
            stats.dirty_rate_pages_per_s,
            stats.bandwidth_bytes_per_s,
            stats.predicted_downtime_ms,
            decision.action,
        )),
        Progress::Paused { final_pages, .. } => {
            Some(format!("PROGRESS {resource} paused final_pages={final_pages}"))
        }
        Progress::Verified { .. } => Some(format!("PROGRESS {resource} verified")),
        _ => None,
    }
}

/// Run this host's node until `stop` is set, logging through `log`; then
/// stop the resources that run here and leave the cluster.
pub fn run(
    config: NodeConfig,
    options: &DaemonOptions,
    stop: &AtomicBool,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<(), String> {
    let name = config
        .local_name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("node{}", config.local.0));
    log(&format!(
        "START node={} name={name} cluster={} source={}",
        config.local.0, config.cluster_name, config.source
    ));
    let wait = || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    if config.cluster.resources.is_empty() {
        let log_events = log.clone();
        let mut node = Node::start(config, move |event: &NodeEvent| match event {
            NodeEvent::Membership(e) => log_events(&e.to_string()),
            NodeEvent::Warning(w) => log_events(&format!("WARNING {w}")),
        })
        .map_err(|e| e.to_string())?;
        wait();
        node.stop();
    } else {
        let progress_log = log.clone();
        let mut drivers =
            StandardDrivers::for_node(&config, &name, options.guest_program.clone(), |arena| {
                if let Some(interface) = &options.service_interface {
                    let (take_over, release) = address_hooks(interface);
                    arena.take_over = Some(take_over);
                    arena.release = Some(release);
                }
                if let Some(policy) = &options.policy {
                    arena.policy = policy.clone();
                }
                arena.progress = Some(Arc::new(move |resource: &str, p: &Progress| {
                    if let Some(line) = describe_progress(resource, p) {
                        progress_log(&line);
                    }
                }));
            })
            .map_err(|e| e.to_string())?;
        drivers.ocf_env = options.ocf_env.clone();
        let log_events = log.clone();
        let mut node = HaNode::start(config, &drivers, move |event: &HaEvent| {
            log_events(&event.to_string());
        })
        .map_err(|e| e.to_string())?;
        wait();
        log("STOPPING stopping the resources that run here, then leaving the cluster");
        node.stop();
    }
    log("STOPPED");
    Ok(())
}
