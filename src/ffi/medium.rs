//! The redundant authenticated medium for C ([`crate::medium`]): one
//! logical datagram channel over several UDP links, HMAC-SHA256 on every
//! frame, duplicates from the other links suppressed, per-link health.
//!
//! Written for Heartbeat's HBcomm plugins: `perfplus_medium_open` only
//! creates and binds a socket and **starts no thread**, so it may run before
//! `fork()`; after the fork one process may send while another receives on
//! its own copy of the handle (only one process may send: each copy counts
//! its own sequence numbers, and a receiver drops repeated ones). A handle
//! is used by one thread at a time.
//!
//! ```c
//! perfplus_medium_config *cfg;
//! perfplus_medium_config_new(&cfg);
//! perfplus_medium_config_set_node(cfg, "nodea");
//! perfplus_medium_config_set_key_file(cfg, "/etc/ha.d/perfplus.key");
//! perfplus_medium_config_set_port(cfg, 7940);
//! perfplus_medium_config_add_link(cfg, "10.0.1.2");      // port 0: same port
//! perfplus_medium_config_add_link(cfg, "10.0.2.2:7940");
//! perfplus_medium *m;
//! if (perfplus_medium_open(cfg, &m) != PERFPLUS_RESULT_OK) { ...perfplus_last_error... }
//! perfplus_medium_config_free(cfg);
//! perfplus_medium_send(m, buf, len);
//! perfplus_medium_recv(m, buf, sizeof buf, &len, 1000);  // PERFPLUS_RESULT_TIMEOUT if quiet
//! perfplus_medium_free(m);
//! ```

use std::ffi::c_char;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::boundary::guard;
use super::error::Failure;
use super::handle::{
    arg_bytes, arg_out, arg_out_bytes, arg_str, box_handle, box_handle_free, box_handle_mut,
    box_handle_ref, BoxHandle,
};
use super::result::perfplus_result;
use crate::medium::{MediumConfig, UdpMedium};

/// The configuration of a medium (opaque; build it with the
/// `perfplus_medium_config_*` functions).
pub struct perfplus_medium_config {
    _private: [u8; 0],
}
impl BoxHandle for perfplus_medium_config {
    type Inner = MediumConfig;
}

/// An open medium (opaque).
pub struct perfplus_medium {
    _private: [u8; 0],
}
impl BoxHandle for perfplus_medium {
    type Inner = UdpMedium;
}

/// The counters of a medium, for `perfplus_medium_read_counter`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum perfplus_medium_counter {
    /// Payloads sent (each on every link).
    PERFPLUS_MEDIUM_COUNTER_SENT = 0,
    /// Sends that failed on one link.
    PERFPLUS_MEDIUM_COUNTER_SEND_ERRORS = 1,
    /// Payloads delivered by `perfplus_medium_recv`.
    PERFPLUS_MEDIUM_COUNTER_DELIVERED = 2,
    /// Copies of an already delivered payload (from another link), dropped.
    PERFPLUS_MEDIUM_COUNTER_DUPLICATES = 3,
    /// Frames that failed authentication (wrong key or altered), dropped.
    PERFPLUS_MEDIUM_COUNTER_AUTH_FAILURES = 4,
    /// Datagrams that are no frame of ours, dropped.
    PERFPLUS_MEDIUM_COUNTER_MALFORMED = 5,
    /// Replayed frames (older incarnation or sequence number), dropped.
    PERFPLUS_MEDIUM_COUNTER_REPLAYS = 6,
    /// Datagrams from an address that is no configured link, dropped.
    PERFPLUS_MEDIUM_COUNTER_UNKNOWN_SOURCE = 7,
}

fn invalid(message: String) -> Failure {
    Failure::new(perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT, message)
}

/// Create an empty medium configuration in `*out`.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_new(
    out: *mut *mut perfplus_medium_config,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_config_new";
    guard(NAME, || {
        // SAFETY: the caller promises `out` is NULL or writable.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        out.write(box_handle::<perfplus_medium_config>(MediumConfig::default()));
        Ok(())
    })
}

/// Set this node's name (1 to 64 bytes; Heartbeat plugins pass `uname -n`).
/// Frames carrying our own name are ignored when they loop back.
///
/// # Safety
/// `config` must be NULL or a live configuration; `node` NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_set_node(
    config: *mut perfplus_medium_config,
    node: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_config_set_node";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let config = unsafe { box_handle_mut::<perfplus_medium_config>(config, NAME, "config") }?;
        // SAFETY: per the contract above.
        let node = unsafe { arg_str(node, NAME, "node") }?;
        if node.is_empty() || node.len() > crate::medium::frame::MAX_NAME_BYTES {
            return Err(invalid(format!(
                "{NAME}: node name {node:?} must be 1 to 64 bytes"
            )));
        }
        config.node = Some(node.to_owned());
        Ok(())
    })
}

/// Set the cluster key: `len` bytes at `key`, at least 16.
///
/// # Safety
/// `config` must be NULL or a live configuration; `key` NULL or `len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_set_key(
    config: *mut perfplus_medium_config,
    key: *const u8,
    len: usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_config_set_key";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let config = unsafe { box_handle_mut::<perfplus_medium_config>(config, NAME, "config") }?;
        if key.is_null() {
            return Err(Failure::null_argument(NAME, "key"));
        }
        // SAFETY: per the contract above; NULL was refused.
        let key = unsafe { arg_bytes(key, len, NAME, "key") }?;
        if key.len() < crate::medium::frame::MIN_KEY_BYTES {
            return Err(invalid(format!(
                "{NAME}: the key is {len} bytes; at least 16 are needed"
            )));
        }
        config.key = Some(key.to_vec());
        Ok(())
    })
}

/// Read the cluster key from a file only its owner can read (mode 600, like
/// `authkeys`); a trailing newline is not part of the key. At least 16 bytes.
///
/// # Safety
/// `config` must be NULL or a live configuration; `path` NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_set_key_file(
    config: *mut perfplus_medium_config,
    path: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_config_set_key_file";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let config = unsafe { box_handle_mut::<perfplus_medium_config>(config, NAME, "config") }?;
        // SAFETY: per the contract above.
        let path = unsafe { arg_str(path, NAME, "path") }?;
        config
            .set_key_file(Path::new(path))
            .map_err(|e| Failure::from(crate::Error::from(e)))
    })
}

/// Set the local UDP port (default 7940), used on every link.
///
/// # Safety
/// `config` must be NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_set_port(
    config: *mut perfplus_medium_config,
    port: u16,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_config_set_port";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let config = unsafe { box_handle_mut::<perfplus_medium_config>(config, NAME, "config") }?;
        if port == 0 {
            return Err(invalid(format!("{NAME}: port 0 is not a port")));
        }
        config.port = Some(port);
        Ok(())
    })
}

/// Add a link: the peer's address on it, `"10.0.1.2:7940"`, or `"10.0.1.2"`
/// for the same port as ours. Links are numbered from 0 in the order added;
/// a datagram belongs to the link whose peer address it comes from.
///
/// # Safety
/// `config` must be NULL or a live configuration; `peer` NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_add_link(
    config: *mut perfplus_medium_config,
    peer: *const c_char,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_config_add_link";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let config = unsafe { box_handle_mut::<perfplus_medium_config>(config, NAME, "config") }?;
        // SAFETY: per the contract above.
        let peer = unsafe { arg_str(peer, NAME, "peer") }?;
        let addr = peer
            .parse::<SocketAddr>()
            .or_else(|_| peer.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
            .map_err(|_| {
                Failure::new(
                    perfplus_result::PERFPLUS_RESULT_ADDRESS,
                    format!("{NAME}: {peer:?} is not an IP address or IP:port"),
                )
            })?;
        if !addr.is_ipv4() {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_ADDRESS,
                format!("{NAME}: {peer:?}: only IPv4 links are supported"),
            ));
        }
        if config.links.iter().any(|l| l.ip() == addr.ip()) {
            return Err(invalid(format!(
                "{NAME}: a link to {} exists; each link needs its own peer address",
                addr.ip()
            )));
        }
        config.links.push(addr);
        Ok(())
    })
}

/// A link is reported down after `timeout_ms` without an authentic frame
/// (default 2000).
///
/// # Safety
/// `config` must be NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_set_link_timeout_ms(
    config: *mut perfplus_medium_config,
    timeout_ms: u32,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_config_set_link_timeout_ms";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let config = unsafe { box_handle_mut::<perfplus_medium_config>(config, NAME, "config") }?;
        if timeout_ms == 0 {
            return Err(invalid(format!("{NAME}: the timeout must be > 0")));
        }
        config.link_timeout_ms = Some(u64::from(timeout_ms));
        Ok(())
    })
}

/// Free a configuration (NULL is a no-op). Open media do not need it.
///
/// # Safety
/// `config` must be NULL or a live configuration, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_config_free(config: *mut perfplus_medium_config) {
    super::boundary::guard_value((), || {
        // SAFETY: per the contract above.
        unsafe { box_handle_free(config) }
    })
}

/// Open a medium: bind the UDP port. Starts no thread; safe before `fork()`.
/// Needs a node name, a key and at least one link.
///
/// # Safety
/// `config` must be NULL or a live configuration; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_open(
    config: *const perfplus_medium_config,
    out: *mut *mut perfplus_medium,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_open";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let config = unsafe { box_handle_ref::<perfplus_medium_config>(config, NAME, "config") }?;
        // SAFETY: per the contract above.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let medium = UdpMedium::open(config).map_err(|e| Failure::from(crate::Error::from(e)))?;
        out.write(box_handle::<perfplus_medium>(medium));
        Ok(())
    })
}

/// Send `len` bytes at `buf` on every link as one authenticated frame.
/// Succeeds if at least one link took it (`PERFPLUS_RESULT_IO` if none did).
///
/// # Safety
/// `medium` must be NULL or a live medium; `buf` NULL (only with `len` 0)
/// or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_send(
    medium: *mut perfplus_medium,
    buf: *const u8,
    len: usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_send";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let medium = unsafe { box_handle_mut::<perfplus_medium>(medium, NAME, "medium") }?;
        // SAFETY: per the contract above.
        let payload = unsafe { arg_bytes(buf, len, NAME, "buf") }?;
        medium
            .send(payload)
            .map_err(|e| Failure::from(crate::Error::from(e)))
    })
}

/// Wait up to `timeout_ms` for the next payload (blocking, in this thread)
/// and copy it to `buf`; `*out_len` gets its length. Returns
/// `PERFPLUS_RESULT_TIMEOUT` if none came, `PERFPLUS_RESULT_INTERRUPTED` if
/// a signal came first, `PERFPLUS_RESULT_BUFFER_TOO_SMALL` if it did not fit
/// `capacity` (it is dropped). Duplicates, replays,
/// forgeries and strangers are counted and skipped, never returned.
///
/// # Safety
/// `medium` must be NULL or a live medium; `buf` NULL or `capacity`
/// writable bytes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_recv(
    medium: *mut perfplus_medium,
    buf: *mut u8,
    capacity: usize,
    out_len: *mut usize,
    timeout_ms: u32,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_recv";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let medium = unsafe { box_handle_mut::<perfplus_medium>(medium, NAME, "medium") }?;
        // SAFETY: per the contract above.
        let buf = unsafe { arg_out_bytes(buf, capacity, NAME, "buf") }?;
        // SAFETY: per the contract above.
        let out_len = unsafe { arg_out(out_len, NAME, "out_len") }?;
        match medium.recv(buf, Duration::from_millis(u64::from(timeout_ms))) {
            Ok(Some(n)) => {
                out_len.write(n);
                Ok(())
            }
            Ok(None) => Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_TIMEOUT,
                format!("{NAME}: nothing arrived within {timeout_ms} ms"),
            )),
            Err(e) => Err(Failure::from(crate::Error::from(e))),
        }
    })
}

/// The number of links in `*out`.
///
/// # Safety
/// `medium` must be NULL or a live medium; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_link_count(
    medium: *const perfplus_medium,
    out: *mut usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_link_count";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let medium = unsafe { box_handle_ref::<perfplus_medium>(medium, NAME, "medium") }?;
        // SAFETY: per the contract above.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        out.write(medium.links().len());
        Ok(())
    })
}

/// Health of link `index`, as seen by the process that receives: `*out_up`
/// is true while authentic frames arrive on it (within the link timeout);
/// `*out_silent_ms` is the time since the last one, `UINT64_MAX` if none
/// ever came.
///
/// # Safety
/// `medium` must be NULL or a live medium; the out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_link_status(
    medium: *const perfplus_medium,
    index: usize,
    out_up: *mut bool,
    out_silent_ms: *mut u64,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_link_status";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let medium = unsafe { box_handle_ref::<perfplus_medium>(medium, NAME, "medium") }?;
        // SAFETY: per the contract above.
        let out_up = unsafe { arg_out(out_up, NAME, "out_up") }?;
        // SAFETY: per the contract above.
        let out_silent_ms = unsafe { arg_out(out_silent_ms, NAME, "out_silent_ms") }?;
        let up = medium.link_up(index).ok_or_else(|| {
            invalid(format!(
                "{NAME}: link {index} does not exist ({} links)",
                medium.links().len()
            ))
        })?;
        out_up.write(up);
        out_silent_ms.write(medium.link_silent_ms(index).unwrap_or(u64::MAX));
        Ok(())
    })
}

/// The peer address of link `index` as text (`"10.0.1.2:7940"`), written
/// like `perfplus_last_error` writes: at most `len - 1` bytes and a NUL;
/// `*out_len` gets the full length.
///
/// # Safety
/// `medium` must be NULL or a live medium; `buf` NULL or `len` writable
/// bytes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_link_name(
    medium: *const perfplus_medium,
    index: usize,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_link_name";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let medium = unsafe { box_handle_ref::<perfplus_medium>(medium, NAME, "medium") }?;
        // SAFETY: per the contract above.
        let buf = unsafe { arg_out_bytes(buf.cast::<u8>(), len, NAME, "buf") }?;
        // SAFETY: per the contract above.
        let out_len = unsafe { arg_out(out_len, NAME, "out_len") }?;
        let name = medium
            .links()
            .get(index)
            .ok_or_else(|| {
                invalid(format!(
                    "{NAME}: link {index} does not exist ({} links)",
                    medium.links().len()
                ))
            })?
            .to_string();
        if buf.is_empty() {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_BUFFER_TOO_SMALL,
                format!("{NAME}: `len` is 0, no room for the terminating NUL"),
            ));
        }
        let cut = name.len().min(buf.len() - 1);
        buf[..cut].copy_from_slice(&name.as_bytes()[..cut]);
        buf[cut] = 0;
        out_len.write(name.len());
        Ok(())
    })
}

/// The value of one counter (a `perfplus_medium_counter`) in `*out`.
/// Counters belong to the process: after a fork each process counts its own.
///
/// # Safety
/// `medium` must be NULL or a live medium; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_read_counter(
    medium: *const perfplus_medium,
    counter: u32,
    out: *mut u64,
) -> perfplus_result {
    const NAME: &str = "perfplus_medium_read_counter";
    guard(NAME, || {
        // SAFETY: per the contract above.
        let medium = unsafe { box_handle_ref::<perfplus_medium>(medium, NAME, "medium") }?;
        // SAFETY: per the contract above.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let s = medium.stats();
        use perfplus_medium_counter as C;
        let value = [
            (C::PERFPLUS_MEDIUM_COUNTER_SENT, s.sent),
            (C::PERFPLUS_MEDIUM_COUNTER_SEND_ERRORS, s.send_errors),
            (C::PERFPLUS_MEDIUM_COUNTER_DELIVERED, s.delivered),
            (C::PERFPLUS_MEDIUM_COUNTER_DUPLICATES, s.duplicates),
            (C::PERFPLUS_MEDIUM_COUNTER_AUTH_FAILURES, s.auth_failures),
            (C::PERFPLUS_MEDIUM_COUNTER_MALFORMED, s.malformed),
            (C::PERFPLUS_MEDIUM_COUNTER_REPLAYS, s.replays),
            (C::PERFPLUS_MEDIUM_COUNTER_UNKNOWN_SOURCE, s.unknown_source),
        ]
        .into_iter()
        .find(|(c, _)| *c as u32 == counter)
        .map(|(_, v)| v)
        .ok_or_else(|| {
            invalid(format!(
                "{NAME}: {counter} is not a perfplus_medium_counter"
            ))
        })?;
        out.write(value);
        Ok(())
    })
}

/// Close the socket and free the medium (NULL is a no-op). After a fork,
/// each process frees its own copy.
///
/// # Safety
/// `medium` must be NULL or a live medium, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_medium_free(medium: *mut perfplus_medium) {
    super::boundary::guard_value((), || {
        // SAFETY: per the contract above.
        unsafe { box_handle_free(medium) }
    })
}
