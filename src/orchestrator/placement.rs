//! Choosing a host for a resource: the healthiest eligible host with room,
//! then the one with the most free memory, then the lowest id (so every
//! host computes the same answer).

use super::{Health, HostId, Orchestrator, Recovery};

/// What the caller wants of the target beyond eligibility.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Wanted {
    /// Only this host (failback goes home or nowhere).
    pub(super) only: Option<HostId>,
    /// Never this host (where the resource runs now).
    pub(super) exclude: Option<HostId>,
    /// Only hosts strictly healthier than this (moving off a bad uplink).
    pub(super) min_health: Option<Health>,
}

/// The host `resource` should go to, if any may take it.
pub(super) fn choose_target(orch: &Orchestrator, resource: &str, wanted: Wanted) -> Option<HostId> {
    let r = orch.resources.get(resource)?;
    let eligible = orch.hosts.values().filter(|h| {
        h.live
            && !h.standby
            && h.recovery == Recovery::None
            && Some(h.spec.id) != wanted.exclude
            && wanted.only.is_none_or(|only| only == h.spec.id)
            && wanted
                .min_health
                .is_none_or(|min| h.health.better_than(&min))
            && (r.spec.allowed_hosts.is_empty() || r.spec.allowed_hosts.contains(&h.spec.id))
            && h.spec.capacity_mib.saturating_sub(orch.used_mib(h.spec.id)) >= r.spec.memory_mib
    });
    let mut best: Option<(u8, u64, HostId)> = None;
    for h in eligible {
        let free = h.spec.capacity_mib.saturating_sub(orch.used_mib(h.spec.id));
        let better = match best {
            None => true,
            // Higher health, then more room; ties keep the lower id (seen first).
            Some((reachable, room, _)) => (h.health.reachable, free) > (reachable, room),
        };
        if better {
            best = Some((h.health.reachable, free, h.spec.id));
        }
    }
    best.map(|(_, _, id)| id)
}
