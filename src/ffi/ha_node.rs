//! The HA node from C: membership, the orchestrator and the resource
//! drivers of one host, started from the native configuration file, with
//! every event (each orchestrator decision with its reason) delivered to a
//! C callback.
//!
//! ```c
//! perfplus_ha_node *node;
//! perfplus_ha_node_start("/etc/perfplus/cluster.toml", NULL, on_event, state, free_state,
//!                        &node);                       // threads start here
//! char json[8192]; size_t len;
//! perfplus_ha_node_status_json(node, json, sizeof json, &len);
//! perfplus_ha_node_standby(node, 1, true);             // evacuate node 1
//! ...
//! perfplus_ha_node_stop(node);   // stops what runs here, leaves, joins every thread
//! perfplus_ha_node_free(node);
//! ```

use std::ffi::{c_char, c_void, CString};
use std::path::Path;

use super::error::Failure;
use super::handle::{
    arg_out, arg_str, box_handle, box_handle_free, box_handle_mut, box_handle_ref, write_text,
    BoxHandle,
};
use super::node::{c_event, perfplus_node_event, perfplus_userdata_free_fn};
use super::result::perfplus_result;
use crate::backend::arena::GuestCommand;
use crate::config::NodeConfig;
use crate::driver::StandardDrivers;
use crate::membership::NodeId;
use crate::orchestrator::{Action, Event as OrchestratorEvent, Reason};
use crate::runtime::ha::{HaEvent, HaEventHandler, HaNode};
use crate::runtime::NodeEvent;

/// The name of the thread `HaNode` runs its handler on (see
/// `runtime::ha`): stopping the node from there would wait for itself.
const EVENT_THREAD: &str = "perfplus-ha-events";

/// A running (or stopped) HA node (opaque).
pub struct perfplus_ha_node {
    _private: [u8; 0],
}

/// The Rust side of a `perfplus_ha_node`.
#[derive(Debug)]
pub(crate) struct HaNodeHandle {
    node: HaNode,
    /// Every configured node id, to check standby requests.
    hosts: Vec<u16>,
    /// `perfplus_ha_node_stop` ran: requests would go nowhere.
    stopped: bool,
}

impl BoxHandle for perfplus_ha_node {
    type Inner = HaNodeHandle;
}

/// What happened, in a `perfplus_ha_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_ha_event_kind {
    /// A membership event: `membership` has its fields.
    PERFPLUS_HA_EVENT_MEMBERSHIP = 1,
    /// Something the admin should know (`text`).
    PERFPLUS_HA_EVENT_WARNING = 2,
    /// The orchestrator decided `action` on `resource` (`from_host` ->
    /// `to_host`), for `reason` (`reason_text` in words). Only the decider
    /// decides; other nodes see the actions' outcomes.
    PERFPLUS_HA_EVENT_DECISION = 3,
    /// `resource` must move (`reason`) but no host may take it now.
    PERFPLUS_HA_EVENT_NO_ROOM = 4,
    /// `resource` must move (`reason`) but moved recently: not before
    /// `until_ms` (anti-flapping).
    PERFPLUS_HA_EVENT_DEFERRED = 5,
    /// `host` died: its resources wait until fencing confirms.
    PERFPLUS_HA_EVENT_AWAITING_RECOVERY = 6,
    /// This partition lost quorum: nothing is decided.
    PERFPLUS_HA_EVENT_QUORUM_LOST = 7,
    /// This partition has quorum again.
    PERFPLUS_HA_EVENT_QUORUM_REGAINED = 8,
    /// This node became the decider of its partition.
    PERFPLUS_HA_EVENT_BECAME_DECIDER = 9,
    /// Migrating `resource` failed; it still runs on `host`.
    PERFPLUS_HA_EVENT_MIGRATION_FAILED = 10,
    /// Starting `resource` on `host` failed.
    PERFPLUS_HA_EVENT_START_FAILED = 11,
    /// This node began carrying out `action` on `resource`.
    PERFPLUS_HA_EVENT_ACTION_STARTED = 12,
    /// An action this node carried out ended: `ok`, and `detail` (the
    /// error, or the downtime and bytes of a migration).
    PERFPLUS_HA_EVENT_ACTION_FINISHED = 13,
    /// No peer confirmed this node's home resources running elsewhere: it
    /// starts them.
    PERFPLUS_HA_EVENT_COLD_START = 14,
}

/// An orchestrator action, in a `perfplus_ha_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_ha_action {
    /// No action in this event.
    PERFPLUS_HA_ACTION_NONE = 0,
    /// Live-migrate `resource` from `from_host` to `to_host`.
    PERFPLUS_HA_ACTION_MIGRATE = 1,
    /// Start `resource` on `to_host`.
    PERFPLUS_HA_ACTION_START = 2,
}

/// Why the orchestrator moves a resource, in a `perfplus_ha_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_ha_reason {
    /// No reason in this event.
    PERFPLUS_HA_REASON_NONE = 0,
    /// `reason_host`'s uplink health fell below a peer's.
    PERFPLUS_HA_REASON_UPLINK_LOST = 1,
    /// `reason_host` died and was fenced.
    PERFPLUS_HA_REASON_HOST_FENCED = 2,
    /// `reason_host` is in standby.
    PERFPLUS_HA_REASON_STANDBY = 3,
    /// The resource's home `reason_host` is back.
    PERFPLUS_HA_REASON_FAILBACK = 4,
}

/// One event of an HA node. Strings are NUL-terminated and valid only
/// during the callback; fields an event kind does not use are 0 or NULL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct perfplus_ha_event {
    /// What happened.
    pub kind: perfplus_ha_event_kind,
    /// The event in one line, as `perfplus node` logs it (never NULL).
    pub text: *const c_char,
    /// The action decided, started or finished.
    pub action: perfplus_ha_action,
    /// The resource concerned, or NULL.
    pub resource: *const c_char,
    /// MIGRATE: where the resource runs now.
    pub from_host: u16,
    /// MIGRATE: where it goes; START: where it starts.
    pub to_host: u16,
    /// ACTION_FINISHED: whether the action succeeded.
    pub ok: bool,
    /// ACTION_FINISHED: what happened (error text, or downtime and bytes),
    /// else NULL.
    pub detail: *const c_char,
    /// DECISION, NO_ROOM, DEFERRED: why.
    pub reason: perfplus_ha_reason,
    /// The host the reason is about.
    pub reason_host: u16,
    /// The reason in words, or NULL.
    pub reason_text: *const c_char,
    /// AWAITING_RECOVERY, MIGRATION_FAILED, START_FAILED: the host.
    pub host: u16,
    /// DEFERRED: the orchestrator time (ms since the node started) before
    /// which the resource does not move again.
    pub until_ms: u64,
    /// MEMBERSHIP (and WARNING from membership): the membership event, as
    /// `perfplus_node_start`'s callback gets it; else NULL.
    pub membership: *const perfplus_node_event,
}

/// Called with each event on the node's event thread, never with a lock
/// held. It may call `perfplus_ha_node_status_json` and
/// `perfplus_ha_node_standby` on the node, but not stop or free it.
pub type perfplus_ha_event_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const perfplus_ha_event)>;

/// The C callback and its userdata, moved to the node's event thread.
struct HaCallback {
    on_event: perfplus_ha_event_fn,
    userdata: *mut c_void,
    destroy: perfplus_userdata_free_fn,
}

// SAFETY: the header's contract for `perfplus_ha_node_start` makes the
// caller promise that `userdata` may be used from the node's event thread
// (and freed there or on the thread that stops the node).
unsafe impl Send for HaCallback {}

impl Drop for HaCallback {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy {
            // SAFETY: the caller gave `destroy` for this `userdata`, to be
            // called once when the node is done with it: now.
            unsafe { destroy(self.userdata) };
        }
    }
}

/// The strings a `perfplus_ha_event` points to, kept alive for the call.
#[derive(Default)]
struct EventText {
    text: Option<CString>,
    resource: Option<CString>,
    detail: Option<CString>,
    reason: Option<CString>,
}

fn c_text(text: &str) -> Option<CString> {
    CString::new(text.replace('\0', " ")).ok()
}

fn c_ptr(text: &Option<CString>) -> *const c_char {
    text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr())
}

fn host_id(id: NodeId) -> u16 {
    id.0
}

/// Fill the action fields of `e` from `action`.
fn set_action(e: &mut perfplus_ha_event, text: &mut EventText, action: &Action) {
    match action {
        Action::Migrate { resource, from, to } => {
            e.action = perfplus_ha_action::PERFPLUS_HA_ACTION_MIGRATE;
            e.from_host = host_id(*from);
            e.to_host = host_id(*to);
            text.resource = c_text(resource);
        }
        Action::Start { resource, on } => {
            e.action = perfplus_ha_action::PERFPLUS_HA_ACTION_START;
            e.to_host = host_id(*on);
            text.resource = c_text(resource);
        }
    }
}

/// Fill the reason fields of `e` from `reason`.
fn set_reason(e: &mut perfplus_ha_event, text: &mut EventText, reason: &Reason) {
    use perfplus_ha_reason as R;
    (e.reason, e.reason_host) = match reason {
        Reason::UplinkLost { host, .. } => (R::PERFPLUS_HA_REASON_UPLINK_LOST, host.0),
        Reason::HostFenced(h) => (R::PERFPLUS_HA_REASON_HOST_FENCED, h.0),
        Reason::Standby(h) => (R::PERFPLUS_HA_REASON_STANDBY, h.0),
        Reason::Failback(h) => (R::PERFPLUS_HA_REASON_FAILBACK, h.0),
    };
    text.reason = c_text(&reason.to_string());
}

/// The C form of an HA event (without its string pointers, which point
/// into the returned texts once `point` is called).
fn ha_event(event: &HaEvent) -> (perfplus_ha_event, EventText) {
    use perfplus_ha_event_kind as K;
    let mut e = perfplus_ha_event {
        kind: K::PERFPLUS_HA_EVENT_WARNING,
        text: std::ptr::null(),
        action: perfplus_ha_action::PERFPLUS_HA_ACTION_NONE,
        resource: std::ptr::null(),
        from_host: 0,
        to_host: 0,
        ok: false,
        detail: std::ptr::null(),
        reason: perfplus_ha_reason::PERFPLUS_HA_REASON_NONE,
        reason_host: 0,
        reason_text: std::ptr::null(),
        host: 0,
        until_ms: 0,
        membership: std::ptr::null(),
    };
    let mut text = EventText {
        text: c_text(&event.to_string()),
        ..EventText::default()
    };
    match event {
        HaEvent::Node(NodeEvent::Membership(_)) => e.kind = K::PERFPLUS_HA_EVENT_MEMBERSHIP,
        HaEvent::Node(NodeEvent::Warning(_)) | HaEvent::Warning(_) => {
            e.kind = K::PERFPLUS_HA_EVENT_WARNING;
        }
        HaEvent::ColdStart => e.kind = K::PERFPLUS_HA_EVENT_COLD_START,
        HaEvent::ActionStarted(action) => {
            e.kind = K::PERFPLUS_HA_EVENT_ACTION_STARTED;
            set_action(&mut e, &mut text, action);
        }
        HaEvent::ActionFinished { action, ok, detail } => {
            e.kind = K::PERFPLUS_HA_EVENT_ACTION_FINISHED;
            set_action(&mut e, &mut text, action);
            e.ok = *ok;
            text.detail = c_text(detail);
        }
        HaEvent::Orchestrator(o) => match o {
            OrchestratorEvent::Decided { action, reason } => {
                e.kind = K::PERFPLUS_HA_EVENT_DECISION;
                set_action(&mut e, &mut text, action);
                set_reason(&mut e, &mut text, reason);
            }
            OrchestratorEvent::NoRoom { resource, reason } => {
                e.kind = K::PERFPLUS_HA_EVENT_NO_ROOM;
                text.resource = c_text(resource);
                set_reason(&mut e, &mut text, reason);
            }
            OrchestratorEvent::Deferred {
                resource,
                until_ms,
                reason,
            } => {
                e.kind = K::PERFPLUS_HA_EVENT_DEFERRED;
                text.resource = c_text(resource);
                e.until_ms = *until_ms;
                set_reason(&mut e, &mut text, reason);
            }
            OrchestratorEvent::AwaitingRecovery(h) => {
                e.kind = K::PERFPLUS_HA_EVENT_AWAITING_RECOVERY;
                e.host = h.0;
            }
            OrchestratorEvent::QuorumLost => e.kind = K::PERFPLUS_HA_EVENT_QUORUM_LOST,
            OrchestratorEvent::QuorumRegained => e.kind = K::PERFPLUS_HA_EVENT_QUORUM_REGAINED,
            OrchestratorEvent::BecameDecider => e.kind = K::PERFPLUS_HA_EVENT_BECAME_DECIDER,
            OrchestratorEvent::MigrationFailed { resource, host } => {
                e.kind = K::PERFPLUS_HA_EVENT_MIGRATION_FAILED;
                text.resource = c_text(resource);
                e.host = host.0;
            }
            OrchestratorEvent::StartFailed { resource, host } => {
                e.kind = K::PERFPLUS_HA_EVENT_START_FAILED;
                text.resource = c_text(resource);
                e.host = host.0;
            }
        },
    }
    (e, text)
}

impl HaEventHandler for HaCallback {
    fn on_event(&mut self, event: &HaEvent) {
        let Some(callback) = self.on_event else {
            return;
        };
        let (mut e, text) = ha_event(event);
        e.text = c_ptr(&text.text);
        e.resource = c_ptr(&text.resource);
        e.detail = c_ptr(&text.detail);
        e.reason_text = c_ptr(&text.reason);
        let membership = match event {
            HaEvent::Node(node_event) => Some(c_event(node_event)),
            _ => None,
        };
        let membership = membership.map(|(m, message)| {
            let m = perfplus_node_event {
                message: c_ptr(&message),
                ..m
            };
            (m, message)
        });
        if let Some((m, _)) = &membership {
            e.membership = m;
        }
        // SAFETY: the caller promised `callback` is a valid function taking
        // this userdata; the event and every string it points to outlive
        // the call.
        unsafe { callback(self.userdata, &e) };
    }
}

/// Start an HA node on this host from the native configuration file at
/// `config_path` (its `[[nodes]]`, `[[links]]`, `[[resources]]`, ...; see
/// the README), as node `node_name` (NULL: the file's `node`, else the
/// host name). Resources are driven by their configured drivers: OCF
/// agents run with this process's environment (e.g. `HA_RSCTMP`); arena
/// guests run `perfplus-arena-guest` from `PATH`, or the program named by
/// the environment variable `PERFPLUS_ARENA_GUEST`, and arrive on this
/// node's `migration` address. This
/// starts the node's threads (the first this library starts): membership,
/// the control listener, the HA loop, the event thread.
///
/// `on_event` (may be NULL) is called with `userdata` for each event on
/// the node's event thread: membership changes, every orchestrator
/// decision with its reason, the actions this node carries out. `destroy`
/// (may be NULL) is called with `userdata` once the node no longer needs
/// it (after `perfplus_ha_node_stop` or `perfplus_ha_node_free`), and also
/// if the start fails. `userdata` must be usable from another thread.
///
/// # Safety
/// `config_path` must be a NUL-terminated string or NULL; `node_name` a
/// NUL-terminated string or NULL; `on_event` and `destroy` valid functions
/// or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_ha_node_start(
    config_path: *const c_char,
    node_name: *const c_char,
    on_event: perfplus_ha_event_fn,
    userdata: *mut c_void,
    destroy: perfplus_userdata_free_fn,
    out: *mut *mut perfplus_ha_node,
) -> perfplus_result {
    const NAME: &str = "perfplus_ha_node_start";
    // Owns userdata from here on: dropped (destroy called) on any failure.
    let handler = HaCallback {
        on_event,
        userdata,
        destroy,
    };
    super::boundary::guard(NAME, move || {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path = unsafe { arg_str(config_path, NAME, "config_path") }?;
        let name = if node_name.is_null() {
            None
        } else {
            // SAFETY: non-NULL: the caller promises a NUL-terminated string.
            Some(unsafe { arg_str(node_name, NAME, "node_name") }?)
        };
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let mut config = NodeConfig::from_toml_file(Path::new(path)).map_err(crate::Error::from)?;
        if let Some(name) = name {
            config.local = config
                .nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.id)
                .ok_or_else(|| {
                    Failure::new(
                        perfplus_result::PERFPLUS_RESULT_UNKNOWN_NODE,
                        format!(
                            "{NAME}: node `{name}` is not among the [[nodes]] of {path} ({})",
                            config
                                .nodes
                                .iter()
                                .map(|n| n.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
        }
        let local_name = config
            .local_name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("node{}", config.local.0));
        let hosts = config.nodes.iter().map(|n| n.id.0).collect();
        let guest_program = std::env::var_os("PERFPLUS_ARENA_GUEST")
            .unwrap_or_else(|| "perfplus-arena-guest".into());
        let drivers = StandardDrivers::for_node(
            &config,
            &local_name,
            GuestCommand::new(guest_program, &[]),
            |_| {},
        )
        .map_err(|e| {
            let code = match e {
                crate::driver::DriverError::Io { .. } => perfplus_result::PERFPLUS_RESULT_IO,
                _ => perfplus_result::PERFPLUS_RESULT_INVALID_CONFIG,
            };
            Failure::new(
                code,
                format!("{NAME}: the arena guests cannot start here: {e}"),
            )
        })?;
        let node = HaNode::start(config, &drivers, handler).map_err(|e| {
            let mut failure = Failure::from(crate::Error::from(e));
            failure.message = format!("{NAME}: {}", failure.message);
            failure
        })?;
        out.write(box_handle::<perfplus_ha_node>(HaNodeHandle {
            node,
            hosts,
            stopped: false,
        }));
        Ok(())
    })
}

/// The cluster as this node sees it, as JSON: `{"node", "node_name",
/// "quorate", "decider", "hosts": [{"id", "name", "live", "ping_reachable",
/// "ping_configured", "standby", "awaiting_recovery", "used_mib"}],
/// "resources": [{"name", "state", "host", "to", "confirmed"}]}` (what
/// `perfplus status --json` prints). Written like `perfplus_last_error`
/// writes: at most `len - 1` bytes and a NUL; `*out_len` gets the whole
/// length, so `*out_len >= len` means it was cut (call again with a larger
/// buffer). May be called from the event callback.
///
/// # Safety
/// `node` must be a live node or NULL; `buf` must point to `len` writable
/// bytes or be NULL; `out_len` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_ha_node_status_json(
    node: *const perfplus_ha_node,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_ha_node_status_json";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let node = unsafe { box_handle_ref(node, NAME, "node") }?;
        // SAFETY: the caller promises `buf` (`len` bytes) and `out_len`
        // are writable, or NULL.
        unsafe { write_text(buf, len, out_len, NAME, || Ok(node.node.status().to_json())) }
    })
}

/// Put host `host_id` in standby (`on`: its resources are evacuated by
/// live migration, and it takes no new ones) or take it out, cluster-wide.
/// Returns at once; the decisions and actions arrive as events.
/// `PERFPLUS_RESULT_UNKNOWN_NODE` if `host_id` is not configured,
/// `PERFPLUS_RESULT_INVALID_STATE` once the node is stopped. May be called
/// from the event callback.
///
/// # Safety
/// `node` must be a live node or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_ha_node_standby(
    node: *const perfplus_ha_node,
    host_id: u16,
    on: bool,
) -> perfplus_result {
    const NAME: &str = "perfplus_ha_node_standby";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let node = unsafe { box_handle_ref(node, NAME, "node") }?;
        if !node.hosts.contains(&host_id) {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_UNKNOWN_NODE,
                format!(
                    "{NAME}: node {host_id} is not configured (configured: {:?})",
                    node.hosts
                ),
            ));
        }
        if node.stopped {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_STATE,
                format!("{NAME}: the node is stopped"),
            ));
        }
        node.node.standby(NodeId(host_id), on);
        Ok(())
    })
}

/// Stop the resources running on this host, leave the cluster cleanly and
/// join every thread; `destroy` has run for the userdata when this returns.
/// To keep the resources running, put this host in standby first and wait
/// until it runs nothing. Idempotent. From the event callback it would wait
/// for itself: `PERFPLUS_RESULT_INVALID_STATE`.
///
/// # Safety
/// `node` must be a live node or NULL, not used by another thread during
/// the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_ha_node_stop(node: *mut perfplus_ha_node) -> perfplus_result {
    const NAME: &str = "perfplus_ha_node_stop";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let node = unsafe { box_handle_mut(node, NAME, "node") }?;
        if std::thread::current().name() == Some(EVENT_THREAD) {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_STATE,
                format!(
                    "{NAME}: called from the node's event callback, where stopping would wait \
                     for the callback itself; stop the node from another thread"
                ),
            ));
        }
        node.node.stop();
        node.stopped = true;
        Ok(())
    })
}

/// Free a node (stopping it first if needed, as `perfplus_ha_node_stop`
/// does); NULL is a no-op. Not from the event callback.
///
/// # Safety
/// `node` must be NULL or a live node, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_ha_node_free(node: *mut perfplus_ha_node) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(node) }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::Health;

    fn text(p: *const c_char) -> Option<String> {
        if p.is_null() {
            return None;
        }
        // SAFETY: non-NULL pointers here come from live CStrings of the test.
        let text = unsafe { std::ffi::CStr::from_ptr(p) };
        Some(text.to_string_lossy().into())
    }

    #[test]
    fn a_decision_carries_its_action_and_reason() {
        let event = HaEvent::Orchestrator(OrchestratorEvent::Decided {
            action: Action::Migrate {
                resource: "web".into(),
                from: NodeId(1),
                to: NodeId(3),
            },
            reason: Reason::UplinkLost {
                host: NodeId(1),
                health: Health {
                    reachable: 0,
                    configured: 2,
                },
                best_peer_health: Health {
                    reachable: 2,
                    configured: 2,
                },
            },
        });
        let (e, t) = ha_event(&event);
        assert_eq!(e.kind, perfplus_ha_event_kind::PERFPLUS_HA_EVENT_DECISION);
        assert_eq!(e.action, perfplus_ha_action::PERFPLUS_HA_ACTION_MIGRATE);
        assert_eq!((e.from_host, e.to_host), (1, 3));
        assert_eq!(e.reason, perfplus_ha_reason::PERFPLUS_HA_REASON_UPLINK_LOST);
        assert_eq!(e.reason_host, 1);
        assert_eq!(text(c_ptr(&t.resource)).as_deref(), Some("web"));
        assert_eq!(text(c_ptr(&t.text)), Some(event.to_string()));
        assert!(text(c_ptr(&t.reason)).unwrap().contains("lost its uplink"));
    }

    #[test]
    fn a_finished_action_says_how_it_went() {
        let event = HaEvent::ActionFinished {
            action: Action::Start {
                resource: "db".into(),
                on: NodeId(2),
            },
            ok: false,
            detail: "agent exited 1".into(),
        };
        let (e, t) = ha_event(&event);
        assert_eq!(
            e.kind,
            perfplus_ha_event_kind::PERFPLUS_HA_EVENT_ACTION_FINISHED
        );
        assert_eq!(e.action, perfplus_ha_action::PERFPLUS_HA_ACTION_START);
        assert_eq!(e.to_host, 2);
        assert!(!e.ok);
        assert_eq!(text(c_ptr(&t.detail)).as_deref(), Some("agent exited 1"));
        assert_eq!(
            text(c_ptr(&t.text)).as_deref(),
            Some("ACTION_FAILED start db on node 2: agent exited 1")
        );
    }
}
