//! The cluster node from C: build a configuration, start a node with an
//! event callback, read its members, stop and free it.
//!
//! ```c
//! perfplus_node_config *cfg;
//! perfplus_node_config_new("lab", &cfg);
//! perfplus_node_config_add_node(cfg, 1, "alpha", 1);
//! perfplus_node_config_add_node(cfg, 2, "beta", 1);
//! perfplus_node_config_set_local(cfg, 1);
//! perfplus_node_config_set_key(cfg, secret, 32);
//! const char *peers[] = {"10.0.0.2"};
//! perfplus_node_config_add_unicast_link(cfg, "10.0.0.1", 7694, peers, 1);
//! perfplus_node *node;
//! perfplus_node_start(cfg, on_event, state, free_state, &node);  // threads start here
//! perfplus_node_config_free(cfg);                                  // the node keeps a copy
//! ...
//! perfplus_node_stop(node);   // leaves the cluster, joins every thread
//! perfplus_node_free(node);
//! ```

use std::ffi::{c_char, c_void, CString};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::error::Failure;
use super::handle::{
    arg_bytes, arg_out, arg_str, box_handle, box_handle_free, box_handle_mut, box_handle_ref,
    BoxHandle,
};
use super::result::perfplus_result;
use crate::config::{heartbeat, LinkConfig, NodeConfig};
use crate::detector::Health;
use crate::membership::{Event, Fencing, Incarnation, MemberState, NodeId, NodeSpec, QuorumReason};
use crate::runtime::{EventHandler, Node, NodeEvent};
use crate::wire::ClusterKey;

/// A node configuration under construction (opaque).
pub struct perfplus_node_config {
    _private: [u8; 0],
}

impl BoxHandle for perfplus_node_config {
    type Inner = NodeConfig;
}

/// A running (or stopped) cluster node (opaque).
pub struct perfplus_node {
    _private: [u8; 0],
}

impl BoxHandle for perfplus_node {
    type Inner = Node;
}

/// What happened, in a [`perfplus_node_event`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_event_kind {
    /// `node` is heard from (`rejoined`: again after a conviction).
    PERFPLUS_EVENT_MEMBER_UP = 1,
    /// Every link to `node` is silent; convicted at `deadline_us` unless heard.
    PERFPLUS_EVENT_MEMBER_SUSPECTED = 2,
    /// A suspected `node` was heard again.
    PERFPLUS_EVENT_MEMBER_CLEARED = 3,
    /// `node` (its `incarnation`) is convicted.
    PERFPLUS_EVENT_MEMBER_DEAD = 4,
    /// `node` left cleanly.
    PERFPLUS_EVENT_MEMBER_LEFT = 5,
    /// `node` restarted: `previous_incarnation` is gone.
    PERFPLUS_EVENT_MEMBER_RESTARTED = 6,
    /// `link` to `node` is down while another link works.
    PERFPLUS_EVENT_LINK_DOWN = 7,
    /// `link` to `node` works again.
    PERFPLUS_EVENT_LINK_UP = 8,
    /// `node`'s ping health is now `ping_reachable` of `ping_configured`.
    PERFPLUS_EVENT_HEALTH_CHANGED = 9,
    /// The view is now `view_size` members at `view_epoch`.
    PERFPLUS_EVENT_VIEW_CHANGED = 10,
    /// Quorum: `quorate`, `votes` of `expected_votes`, `message` says why.
    PERFPLUS_EVENT_QUORUM_CHANGED = 11,
    /// This node was paused for `duration_us`; nobody is accused for it.
    PERFPLUS_EVENT_LOCAL_PAUSE = 12,
    /// Fence `node`'s `incarnation`, then call `perfplus_node_fence_result`.
    PERFPLUS_EVENT_FENCE_REQUESTED = 13,
    /// Fencing `node` failed; it will be retried.
    PERFPLUS_EVENT_FENCE_FAILED = 14,
    /// `node`'s resources may be restarted elsewhere.
    PERFPLUS_EVENT_RECOVERY_ALLOWED = 15,
    /// A warning for the admin, in `message`.
    PERFPLUS_EVENT_WARNING = 16,
}

/// One event. Valid only during the callback; copy what you keep.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct perfplus_node_event {
    /// What happened.
    pub kind: perfplus_event_kind,
    /// The node concerned (0 if none).
    pub node: u16,
    /// Its incarnation (0 if none or never seen).
    pub incarnation: u64,
    /// MEMBER_RESTARTED: the incarnation that is gone.
    pub previous_incarnation: u64,
    /// MEMBER_UP: heard again after a conviction.
    pub rejoined: bool,
    /// LINK_DOWN / LINK_UP: the link index.
    pub link: u32,
    /// HEALTH_CHANGED: ping nodes reachable.
    pub ping_reachable: u8,
    /// HEALTH_CHANGED: ping nodes configured.
    pub ping_configured: u8,
    /// VIEW_CHANGED: the view's epoch.
    pub view_epoch: u64,
    /// VIEW_CHANGED: members in the view.
    pub view_size: u32,
    /// QUORUM_CHANGED: whether this partition is quorate.
    pub quorate: bool,
    /// QUORUM_CHANGED: votes present.
    pub votes: u32,
    /// QUORUM_CHANGED: votes configured.
    pub expected_votes: u32,
    /// LOCAL_PAUSE: its length; MEMBER_SUSPECTED: the deadline (node clock), µs.
    pub duration_us: u64,
    /// WARNING and QUORUM_CHANGED: text (NUL-terminated, valid during the
    /// callback), else NULL.
    pub message: *const c_char,
}

/// Where a member stands.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_member_state {
    /// Not heard from yet.
    PERFPLUS_MEMBER_UNKNOWN = 0,
    /// Alive.
    PERFPLUS_MEMBER_ALIVE = 1,
    /// Silent on every link, not yet convicted.
    PERFPLUS_MEMBER_SUSPECTED = 2,
    /// Convicted.
    PERFPLUS_MEMBER_DEAD = 3,
    /// Left cleanly.
    PERFPLUS_MEMBER_LEFT = 4,
}

/// One member, as `perfplus_node_members` reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct perfplus_member {
    /// Node id.
    pub id: u16,
    /// Votes.
    pub votes: u32,
    /// Incarnation (0: never seen).
    pub incarnation: u64,
    /// State.
    pub state: perfplus_member_state,
    /// Ping nodes it reaches (as it last said).
    pub ping_reachable: u8,
    /// Ping nodes configured.
    pub ping_configured: u8,
    /// Whether this is the local node.
    pub local: bool,
    /// Its name, NUL-terminated (cut to 63 bytes).
    pub name: [c_char; 64],
}

/// Called with each event, on the node's event thread, never with a lock
/// held: it may call other perfplus functions on the node (not stop/free).
pub type perfplus_node_event_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const perfplus_node_event)>;

/// Releases `userdata` when the node no longer needs it.
pub type perfplus_userdata_free_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

fn invalid(function: &str, message: impl std::fmt::Display) -> Failure {
    Failure::new(
        perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
        format!("{function}: {message}"),
    )
}

fn parse_ip(function: &str, argument: &str, text: &str) -> Result<IpAddr, Failure> {
    text.parse().map_err(|_| {
        invalid(
            function,
            format!("`{argument}` \"{text}\" is not an IP address"),
        )
    })
}

/// A new configuration for cluster `cluster_name`, with defaults (50 ms
/// heartbeats, phi detector, fencing required) and no nodes, links or key
/// yet. Free it with `perfplus_node_config_free`.
///
/// # Safety
/// `cluster_name` must be a NUL-terminated string and `out` writable, or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_new(
    cluster_name: *const c_char,
    out: *mut *mut perfplus_node_config,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_new";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a valid string or NULL.
        let name = unsafe { arg_str(cluster_name, NAME, "cluster_name") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        if name.is_empty() {
            return Err(invalid(NAME, "`cluster_name` is empty"));
        }
        // No key yet: a random-looking placeholder that start refuses.
        let mut config = NodeConfig::new(name, ClusterKey::from_bytes([0; 32]));
        config.source = format!("configuration built with {NAME}");
        out.write(box_handle::<perfplus_node_config>(config));
        Ok(())
    })
}

/// Read a native TOML configuration file (see the `config` module docs).
///
/// # Safety
/// `path` must be a NUL-terminated string and `out` writable, or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_from_file(
    path: *const c_char,
    out: *mut *mut perfplus_node_config,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_from_file";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a valid string or NULL.
        let path = unsafe { arg_str(path, NAME, "path") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let config = NodeConfig::from_toml_file(Path::new(path)).map_err(crate::Error::from)?;
        out.write(box_handle::<perfplus_node_config>(config));
        Ok(())
    })
}

/// Read Heartbeat's `ha.cf` and `authkeys` (refused if group or others can
/// read it) for the node named `node_name` (NULL: this host's name). The
/// node joins the Heartbeat 3 cluster those files describe, speaking
/// Heartbeat's own protocol on its media; it keeps the UUID and generation
/// Heartbeat nodes know it by in `/var/lib/perfplus/heartbeat`.
///
/// # Safety
/// `ha_cf` and `authkeys` must be NUL-terminated strings, `node_name` one or
/// NULL, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_from_heartbeat(
    ha_cf: *const c_char,
    authkeys: *const c_char,
    node_name: *const c_char,
    out: *mut *mut perfplus_node_config,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_from_heartbeat";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises valid strings or NULL.
        let ha_cf = unsafe { arg_str(ha_cf, NAME, "ha_cf") }?;
        // SAFETY: as above.
        let authkeys = unsafe { arg_str(authkeys, NAME, "authkeys") }?;
        let node_name = if node_name.is_null() {
            None
        } else {
            // SAFETY: non-NULL, the caller promises a valid string.
            Some(unsafe { arg_str(node_name, NAME, "node_name") }?.to_string())
        };
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let cf = heartbeat::HaCf::read(Path::new(ha_cf)).map_err(crate::Error::from)?;
        let keys = heartbeat::AuthKeys::read(Path::new(authkeys)).map_err(crate::Error::from)?;
        let local = match node_name {
            Some(n) => n,
            None => crate::config::local_hostname().map_err(crate::Error::from)?,
        };
        let config = NodeConfig::from_heartbeat(&cf, &keys, &local).map_err(crate::Error::from)?;
        out.write(box_handle::<perfplus_node_config>(config));
        Ok(())
    })
}

/// Run `body` on the configuration behind `config`.
///
/// # Safety
/// `config` must be NULL or a live configuration handle not used by
/// another thread during the call.
unsafe fn with_config(
    function: &'static str,
    config: *mut perfplus_node_config,
    body: impl FnOnce(&mut NodeConfig) -> Result<(), Failure>,
) -> perfplus_result {
    super::boundary::guard(function, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let config = unsafe { box_handle_mut(config, function, "config") }?;
        body(config)
    })
}

/// Add a cluster node: `id` (1..=65535), `name`, `votes` (usually 1).
///
/// # Safety
/// `config` must be a live configuration or NULL; `name` a NUL-terminated
/// string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_add_node(
    config: *mut perfplus_node_config,
    id: u16,
    name: *const c_char,
    votes: u32,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_add_node";
    let body = |c: &mut NodeConfig| {
        // SAFETY: the caller promises a valid string or NULL.
        let name = unsafe { arg_str(name, NAME, "name") }?;
        if id == 0 {
            return Err(invalid(NAME, "node id 0 is reserved; ids start at 1"));
        }
        if name.is_empty() {
            return Err(invalid(NAME, "`name` is empty"));
        }
        if c.nodes.iter().any(|n| n.id.0 == id || n.name == name) {
            return Err(invalid(
                NAME,
                format!("node {id} `{name}`: the id or the name is already configured"),
            ));
        }
        c.nodes.push(NodeSpec {
            id: NodeId(id),
            name: name.to_string(),
            votes,
        });
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Say which configured node this one is.
///
/// # Safety
/// `config` must be a live configuration or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_set_local(
    config: *mut perfplus_node_config,
    id: u16,
) -> perfplus_result {
    let body = |c: &mut NodeConfig| {
        c.local = NodeId(id);
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config("perfplus_node_config_set_local", config, body) }
}

/// Set the shared secret that authenticates heartbeats (at least 16 bytes;
/// every node must use the same).
///
/// # Safety
/// `config` must be a live configuration or NULL; `secret` must point to
/// `len` readable bytes or be NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_set_key(
    config: *mut perfplus_node_config,
    secret: *const u8,
    len: usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_set_key";
    let body = |c: &mut NodeConfig| {
        if secret.is_null() {
            return Err(Failure::null_argument(NAME, "secret"));
        }
        // SAFETY: the caller promises `len` readable bytes.
        let secret = unsafe { arg_bytes(secret, len, NAME, "secret") }?;
        if secret.len() < 16 {
            return Err(invalid(
                NAME,
                format!(
                    "the secret is {} bytes; use at least 16 random bytes",
                    secret.len()
                ),
            ));
        }
        c.key = ClusterKey::derive(secret);
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Add a unicast link: listen on `bind_address` (NULL: any) port `port`,
/// send to each of the `peer_count` addresses in `peers` (`"ip"` or
/// `"ip:port"`; the port defaults to `port`).
///
/// # Safety
/// `config` must be a live configuration or NULL; `bind_address` a
/// NUL-terminated string or NULL; `peers` an array of `peer_count`
/// NUL-terminated strings, or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_add_unicast_link(
    config: *mut perfplus_node_config,
    bind_address: *const c_char,
    port: u16,
    peers: *const *const c_char,
    peer_count: usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_add_unicast_link";
    let body = |c: &mut NodeConfig| {
        let bind = if bind_address.is_null() {
            None
        } else {
            // SAFETY: non-NULL, the caller promises a valid string.
            Some(parse_ip(NAME, "bind_address", unsafe {
                arg_str(bind_address, NAME, "bind_address")
            }?)?)
        };
        if peers.is_null() {
            return Err(Failure::null_argument(NAME, "peers"));
        }
        if peer_count == 0 {
            return Err(invalid(
                NAME,
                "`peer_count` is 0: a unicast link needs peers",
            ));
        }
        // SAFETY: the caller promises `peer_count` pointers.
        let list = unsafe { std::slice::from_raw_parts(peers, peer_count) };
        let mut addresses = Vec::with_capacity(list.len());
        for (i, &peer) in list.iter().enumerate() {
            let argument = format!("peers[{i}]");
            // SAFETY: the caller promises each entry is a valid string or NULL.
            let text = unsafe { arg_str(peer, NAME, &argument) }?;
            let address = text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, port)))
                .map_err(|_| {
                    invalid(
                        NAME,
                        format!("`{argument}` \"{text}\" is not an IP address or address:port"),
                    )
                })?;
            addresses.push(address);
        }
        c.links.push(LinkConfig::Unicast {
            interface: None,
            bind,
            port,
            peers: addresses,
        });
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Add a multicast link to `group` on `port`, sending from
/// `interface_address` (NULL: the default route's interface), with `ttl`.
///
/// # Safety
/// `config` must be a live configuration or NULL; `group` a NUL-terminated
/// string or NULL; `interface_address` one or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_add_multicast_link(
    config: *mut perfplus_node_config,
    group: *const c_char,
    port: u16,
    interface_address: *const c_char,
    ttl: u8,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_add_multicast_link";
    let body = |c: &mut NodeConfig| {
        // SAFETY: the caller promises a valid string or NULL.
        let text = unsafe { arg_str(group, NAME, "group") }?;
        let group = match parse_ip(NAME, "group", text)? {
            IpAddr::V4(g) if g.is_multicast() => g,
            _ => {
                return Err(invalid(
                    NAME,
                    format!("`group` \"{text}\" is not an IPv4 multicast group"),
                ))
            }
        };
        let interface_address = if interface_address.is_null() {
            None
        } else {
            // SAFETY: non-NULL, the caller promises a valid string.
            let text = unsafe { arg_str(interface_address, NAME, "interface_address") }?;
            match parse_ip(NAME, "interface_address", text)? {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => return Err(invalid(NAME, "`interface_address` must be IPv4")),
            }
        };
        c.links.push(LinkConfig::Multicast {
            interface: None,
            interface_address,
            group,
            port,
            ttl: ttl.max(1),
            loopback: false,
        });
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Add a broadcast link on `interface` and `port` (needs root or
/// CAP_NET_RAW to bind to the interface).
///
/// # Safety
/// `config` must be a live configuration or NULL; `interface` a
/// NUL-terminated string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_add_broadcast_link(
    config: *mut perfplus_node_config,
    interface: *const c_char,
    port: u16,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_add_broadcast_link";
    let body = |c: &mut NodeConfig| {
        // SAFETY: the caller promises a valid string or NULL.
        let interface = unsafe { arg_str(interface, NAME, "interface") }?;
        c.links.push(LinkConfig::Broadcast {
            interface: interface.to_string(),
            port,
        });
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Set the heartbeat interval (1..=65535 ms; default 50).
///
/// # Safety
/// `config` must be a live configuration or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_set_interval_ms(
    config: *mut perfplus_node_config,
    interval_ms: u32,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_set_interval_ms";
    let body = |c: &mut NodeConfig| {
        if interval_ms == 0 || interval_ms > u32::from(u16::MAX) {
            return Err(invalid(
                NAME,
                format!("interval {interval_ms} ms is outside 1..=65535"),
            ));
        }
        c.interval_ms = u64::from(interval_ms);
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Set the pause tolerance: a peer stopped for less than this is never
/// convicted (default 250 ms).
///
/// # Safety
/// `config` must be a live configuration or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_set_pause_tolerance_ms(
    config: *mut perfplus_node_config,
    pause_tolerance_ms: u32,
) -> perfplus_result {
    let body = |c: &mut NodeConfig| {
        c.detector.pause_tolerance_us = u64::from(pause_tolerance_ms) * 1_000;
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config("perfplus_node_config_set_pause_tolerance_ms", config, body) }
}

/// Add a ping node (an IP address this host should reach: a gateway).
///
/// # Safety
/// `config` must be a live configuration or NULL; `address` a
/// NUL-terminated string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_add_ping_node(
    config: *mut perfplus_node_config,
    address: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_add_ping_node";
    let body = |c: &mut NodeConfig| {
        // SAFETY: the caller promises a valid string or NULL.
        let text = unsafe { arg_str(address, NAME, "address") }?;
        c.ping_nodes.push(parse_ip(NAME, "address", text)?);
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Require fencing before a convicted node's resources move (the default),
/// or not.
///
/// # Safety
/// `config` must be a live configuration or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_set_fencing(
    config: *mut perfplus_node_config,
    required: bool,
) -> perfplus_result {
    let body = |c: &mut NodeConfig| {
        c.fencing = if required {
            Fencing::Required
        } else {
            Fencing::Disabled
        };
        Ok(())
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config("perfplus_node_config_set_fencing", config, body) }
}

/// Where a node of a Heartbeat 3 cluster (a configuration from
/// `perfplus_node_config_from_heartbeat`) keeps the UUID and generation
/// Heartbeat nodes know it by (default `/var/lib/perfplus/heartbeat`,
/// created at start). `PERFPLUS_RESULT_INVALID_ARGUMENT` for a
/// configuration that speaks perfplus's own protocol.
///
/// # Safety
/// `config` must be a live configuration or NULL; `path` a NUL-terminated
/// string or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_set_state_dir(
    config: *mut perfplus_node_config,
    path: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_config_set_state_dir";
    let body = |c: &mut NodeConfig| {
        // SAFETY: the caller promises a valid string or NULL.
        let path = unsafe { arg_str(path, NAME, "path") }?;
        match &mut c.protocol {
            crate::config::Protocol::Heartbeat3(hb) => {
                hb.state_dir = std::path::PathBuf::from(path);
                Ok(())
            }
            crate::config::Protocol::Perfplus => Err(invalid(
                NAME,
                "only a node of a Heartbeat 3 cluster (perfplus_node_config_from_heartbeat) keeps a state directory",
            )),
        }
    };
    // SAFETY: forwarded caller promises.
    unsafe { with_config(NAME, config, body) }
}

/// Free a configuration; NULL is a no-op.
///
/// # Safety
/// `config` must be NULL or a live configuration, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_config_free(config: *mut perfplus_node_config) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(config) }
    });
}

/// The C callback and its userdata, moved to the node's event thread.
struct CallbackHandler {
    on_event: perfplus_node_event_fn,
    userdata: *mut c_void,
    destroy: perfplus_userdata_free_fn,
}

// SAFETY: the header's contract for `perfplus_node_start` makes the caller
// promise that `userdata` may be used from the node's event thread (and
// freed there or on the thread that stops the node).
unsafe impl Send for CallbackHandler {}

impl Drop for CallbackHandler {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy {
            // SAFETY: the caller gave `destroy` for this `userdata`, to be
            // called once when the node is done with it: now.
            unsafe { destroy(self.userdata) };
        }
    }
}

impl EventHandler for CallbackHandler {
    fn on_event(&mut self, event: &NodeEvent) {
        let Some(callback) = self.on_event else {
            return;
        };
        let (event, message) = c_event(event);
        let event = perfplus_node_event {
            message: message.as_ref().map_or(std::ptr::null(), |m| m.as_ptr()),
            ..event
        };
        // SAFETY: the caller promised `callback` is a valid function taking
        // this userdata; the event and its message outlive the call.
        unsafe { callback(self.userdata, &event) };
    }
}

/// The C form of a node event, and the text its `message` must point to.
pub(crate) fn c_event(event: &NodeEvent) -> (perfplus_node_event, Option<CString>) {
    use perfplus_event_kind as K;
    let mut e = perfplus_node_event {
        kind: K::PERFPLUS_EVENT_WARNING,
        node: 0,
        incarnation: 0,
        previous_incarnation: 0,
        rejoined: false,
        link: 0,
        ping_reachable: 0,
        ping_configured: 0,
        view_epoch: 0,
        view_size: 0,
        quorate: false,
        votes: 0,
        expected_votes: 0,
        duration_us: 0,
        message: std::ptr::null(),
    };
    let text = |s: String| CString::new(s.replace('\0', " ")).ok();
    let mut message = None;
    let link = |l: usize| u32::try_from(l).unwrap_or(u32::MAX);
    match event {
        NodeEvent::Warning(w) => message = text(w.clone()),
        NodeEvent::Membership(m) => match m {
            Event::MemberUp {
                node,
                incarnation,
                rejoined,
            } => {
                e.kind = K::PERFPLUS_EVENT_MEMBER_UP;
                (e.node, e.incarnation, e.rejoined) = (node.0, incarnation.0, *rejoined);
            }
            Event::MemberSuspected { node, deadline_us } => {
                e.kind = K::PERFPLUS_EVENT_MEMBER_SUSPECTED;
                (e.node, e.duration_us) = (node.0, *deadline_us);
            }
            Event::MemberCleared { node } => {
                e.kind = K::PERFPLUS_EVENT_MEMBER_CLEARED;
                e.node = node.0;
            }
            Event::MemberDead { node, incarnation } => {
                e.kind = K::PERFPLUS_EVENT_MEMBER_DEAD;
                (e.node, e.incarnation) = (node.0, incarnation.0);
            }
            Event::MemberLeft { node, incarnation } => {
                e.kind = K::PERFPLUS_EVENT_MEMBER_LEFT;
                (e.node, e.incarnation) = (node.0, incarnation.0);
            }
            Event::MemberRestarted {
                node,
                previous,
                incarnation,
            } => {
                e.kind = K::PERFPLUS_EVENT_MEMBER_RESTARTED;
                (e.node, e.incarnation, e.previous_incarnation) =
                    (node.0, incarnation.0, previous.0);
            }
            Event::LinkDown { node, link: l } => {
                e.kind = K::PERFPLUS_EVENT_LINK_DOWN;
                (e.node, e.link) = (node.0, link(*l));
            }
            Event::LinkUp { node, link: l } => {
                e.kind = K::PERFPLUS_EVENT_LINK_UP;
                (e.node, e.link) = (node.0, link(*l));
            }
            Event::HealthChanged { node, health } => {
                e.kind = K::PERFPLUS_EVENT_HEALTH_CHANGED;
                (e.node, e.ping_reachable, e.ping_configured) =
                    (node.0, health.reachable, health.configured);
            }
            Event::ViewChanged { epoch, members, .. } => {
                e.kind = K::PERFPLUS_EVENT_VIEW_CHANGED;
                e.view_epoch = *epoch;
                e.view_size = u32::try_from(members.len()).unwrap_or(u32::MAX);
            }
            Event::QuorumChanged(q) => {
                e.kind = K::PERFPLUS_EVENT_QUORUM_CHANGED;
                (e.quorate, e.votes, e.expected_votes) = (q.quorate, q.votes, q.expected_votes);
                message = text(quorum_reason(q.reason).to_string());
            }
            Event::LocalPause { duration_us } => {
                e.kind = K::PERFPLUS_EVENT_LOCAL_PAUSE;
                e.duration_us = *duration_us;
            }
            Event::FenceRequested { node, incarnation } => {
                e.kind = K::PERFPLUS_EVENT_FENCE_REQUESTED;
                (e.node, e.incarnation) = (node.0, incarnation.0);
            }
            Event::FenceFailed { node, incarnation } => {
                e.kind = K::PERFPLUS_EVENT_FENCE_FAILED;
                (e.node, e.incarnation) = (node.0, incarnation.0);
            }
            Event::RecoveryAllowed { node, incarnation } => {
                e.kind = K::PERFPLUS_EVENT_RECOVERY_ALLOWED;
                (e.node, e.incarnation) = (node.0, incarnation.0);
            }
        },
    }
    (e, message)
}

fn quorum_reason(reason: QuorumReason) -> &'static str {
    match reason {
        QuorumReason::Majority => "majority of votes",
        QuorumReason::TieWonByPing => "tie won: better ping health",
        QuorumReason::TieWonByNodeId => "tie won: holds the lowest node id",
        QuorumReason::TieWonByFencing => "tie won: the other side is fenced",
        QuorumReason::Minority => "minority of votes",
        QuorumReason::TieLostNoUplink => "tie lost: no ping node answers",
        QuorumReason::TieLostByPing => "tie lost: the other side has better ping health",
        QuorumReason::TieLostByNodeId => "tie lost: the other side holds the lowest node id",
        QuorumReason::TieBeforeFullCluster => "tie: the whole cluster was never seen since start",
    }
}

/// Start a node with a copy of `config`: open its sockets, then start its
/// threads (the first threads this library starts). `on_event` (may be
/// NULL) is called with `userdata` for each event on the node's event
/// thread; `destroy` (may be NULL) is called with `userdata` once the node
/// no longer needs it (by `perfplus_node_stop`, or `perfplus_node_free`), and
/// also if the start fails. `userdata` must be usable from another thread.
///
/// # Safety
/// `config` must be a live configuration or NULL; `on_event` and `destroy`
/// valid functions or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_start(
    config: *const perfplus_node_config,
    on_event: perfplus_node_event_fn,
    userdata: *mut c_void,
    destroy: perfplus_userdata_free_fn,
    out: *mut *mut perfplus_node,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_start";
    // Owns userdata from here on: dropped (destroy called) on any failure.
    let handler = CallbackHandler {
        on_event,
        userdata,
        destroy,
    };
    super::boundary::guard(NAME, move || {
        // SAFETY: the caller promises a live handle or NULL.
        let config = unsafe { box_handle_ref(config, NAME, "config") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        if config.key == ClusterKey::from_bytes([0; 32]) {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_CONFIG,
                format!("{NAME}: no key: call perfplus_node_config_set_key first"),
            ));
        }
        let node = Node::start(config.clone(), handler).map_err(crate::Error::from)?;
        out.write(box_handle::<perfplus_node>(node));
        Ok(())
    })
}

/// How many members `perfplus_node_members` will report (every configured
/// node, this one included).
///
/// # Safety
/// `node` must be a live node or NULL; `out_count` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_member_count(
    node: *const perfplus_node,
    out_count: *mut usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_member_count";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let node = unsafe { box_handle_ref(node, NAME, "node") }?;
        // SAFETY: the caller promises `out_count` is writable or NULL.
        let out = unsafe { arg_out(out_count, NAME, "out_count") }?;
        out.write(node.members().len());
        Ok(())
    })
}

/// Copy every member into `members` (room for `capacity`), by id, and
/// their number into `*out_count`. If `capacity` is too small nothing is
/// written and the result is `PERFPLUS_RESULT_BUFFER_TOO_SMALL` (ask
/// `perfplus_node_member_count`). May be called from the event callback.
///
/// # Safety
/// `node` must be a live node or NULL; `members` must point to `capacity`
/// writable entries or be NULL; `out_count` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_members(
    node: *const perfplus_node,
    members: *mut perfplus_member,
    capacity: usize,
    out_count: *mut usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_members";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let node = unsafe { box_handle_ref(node, NAME, "node") }?;
        if members.is_null() {
            return Err(Failure::null_argument(NAME, "members"));
        }
        // SAFETY: the caller promises `out_count` is writable or NULL.
        let out_count = unsafe { arg_out(out_count, NAME, "out_count") }?;
        let list = node.members();
        if list.len() > capacity {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_BUFFER_TOO_SMALL,
                format!("{NAME}: {} members, room for {capacity}", list.len()),
            ));
        }
        // SAFETY: non-NULL, and the caller promises `capacity` writable
        // entries, of which we write `list.len() <= capacity`.
        let slots = unsafe { std::slice::from_raw_parts_mut(members, list.len()) };
        for (slot, m) in slots.iter_mut().zip(&list) {
            let health = m.health.unwrap_or(Health::default());
            let mut name = [0 as c_char; 64];
            for (dst, src) in name.iter_mut().zip(m.name.bytes().take(63)) {
                *dst = c_char::from_ne_bytes([src]);
            }
            *slot = perfplus_member {
                id: m.id.0,
                votes: m.votes,
                incarnation: m.incarnation.0,
                state: match m.state {
                    MemberState::Unknown => perfplus_member_state::PERFPLUS_MEMBER_UNKNOWN,
                    MemberState::Alive => perfplus_member_state::PERFPLUS_MEMBER_ALIVE,
                    MemberState::Suspected => perfplus_member_state::PERFPLUS_MEMBER_SUSPECTED,
                    MemberState::Dead => perfplus_member_state::PERFPLUS_MEMBER_DEAD,
                    MemberState::Left => perfplus_member_state::PERFPLUS_MEMBER_LEFT,
                },
                ping_reachable: health.reachable,
                ping_configured: health.configured,
                local: m.local,
                name,
            };
        }
        out_count.write(list.len());
        Ok(())
    })
}

/// Whether this node's partition is quorate.
///
/// # Safety
/// `node` must be a live node or NULL; `out_quorate` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_quorate(
    node: *const perfplus_node,
    out_quorate: *mut bool,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_quorate";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let node = unsafe { box_handle_ref(node, NAME, "node") }?;
        // SAFETY: the caller promises `out_quorate` is writable or NULL.
        let out = unsafe { arg_out(out_quorate, NAME, "out_quorate") }?;
        out.write(node.quorum().quorate);
        Ok(())
    })
}

/// Report the outcome of a PERFPLUS_EVENT_FENCE_REQUESTED: `ok` if node
/// `id`'s `incarnation` is known to be off.
///
/// # Safety
/// `node` must be a live node or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_fence_result(
    node: *const perfplus_node,
    id: u16,
    incarnation: u64,
    ok: bool,
) -> perfplus_result {
    const NAME: &str = "perfplus_node_fence_result";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let node = unsafe { box_handle_ref(node, NAME, "node") }?;
        node.fence_result(NodeId(id), Incarnation(incarnation), ok);
        Ok(())
    })
}

/// Leave the cluster cleanly and join the node's threads; `destroy` has
/// run for the userdata when this returns. Idempotent. Not from the event
/// callback.
///
/// # Safety
/// `node` must be a live node or NULL, not used by another thread during
/// the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_stop(node: *mut perfplus_node) -> perfplus_result {
    const NAME: &str = "perfplus_node_stop";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let node = unsafe { box_handle_mut(node, NAME, "node") }?;
        node.stop();
        Ok(())
    })
}

/// Free a node (stopping it first if needed); NULL is a no-op.
///
/// # Safety
/// `node` must be NULL or a live node, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_node_free(node: *mut perfplus_node) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(node) }
    });
}
