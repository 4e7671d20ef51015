//! The receiving end of a simulated-guest migration from C: listen, accept
//! one migration into a simulated guest, verify it, report.
//!
//! ```c
//! perfplus_receiver *rx;
//! perfplus_receiver_new("127.0.0.1:0", &rx);           // binds; no thread yet
//! char address[64]; size_t len;
//! perfplus_receiver_local_address(rx, address, sizeof address, &len);
//! perfplus_receiver_start(rx);                          // one thread: accept + receive
//! ... perfplus_migration_send_sim(cfg, path, 256, address, ...) ...
//! perfplus_receiver_report report;
//! perfplus_receiver_wait(rx, &report);                  // joins that thread
//! perfplus_receiver_free(rx);
//! ```
//!
//! Or, in a process that only receives, `perfplus_receiver_accept` does the
//! same on the calling thread. The guest's geometry comes from the stream
//! header; a guest larger than `perfplus_receiver_set_max_memory_mib`
//! allows is refused (the sender is told why).

use std::ffi::c_char;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::Failure;
use super::handle::{
    arg_out, arg_str, box_handle, box_handle_free, box_handle_mut, box_handle_ref, write_text,
    BoxHandle,
};
use super::result::perfplus_result;
use crate::backend::sim::{RealTimeSim, PAGE_SIZE};
use crate::migration::receiver::receive_tcp_with;
use crate::migration::simulation::memory_digest;

/// The default timeout of every network read and write, and of waiting for
/// the sender to connect, ms.
const DEFAULT_IO_TIMEOUT_MS: u32 = 30_000;
/// The default largest guest accepted, MiB.
const DEFAULT_MAX_MEMORY_MIB: u64 = 1024;

/// A migration receiver for simulated guests (opaque).
pub struct perfplus_receiver {
    _private: [u8; 0],
}

/// What a receiver received, once the guest runs at the receiver.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct perfplus_receiver_report {
    /// Pages of the received guest.
    pub page_count: u64,
    /// Bytes per page.
    pub page_size: u32,
    /// Page records applied (all rounds).
    pub pages_applied: u64,
    /// Of which zero markers.
    pub zero_pages: u64,
    /// Of which XOR deltas.
    pub delta_pages: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Digest of the whole received guest memory, to compare with the
    /// sender's `perfplus_migration_report.guest_memory_digest`: equal
    /// digests mean the guest arrived page for page.
    pub guest_memory_digest: u64,
}

/// Settings and state behind a `perfplus_receiver`.
#[derive(Debug)]
pub(crate) struct ReceiverHandle {
    /// Taken by the one accept.
    listener: Option<TcpListener>,
    local: SocketAddr,
    io_timeout: Duration,
    max_memory_mib: u64,
    thread: Option<JoinHandle<Result<perfplus_receiver_report, Failure>>>,
    cancel: Arc<AtomicBool>,
    connection: Arc<Mutex<Option<TcpStream>>>,
}

impl BoxHandle for perfplus_receiver {
    type Inner = ReceiverHandle;
}

impl Drop for ReceiverHandle {
    fn drop(&mut self) {
        // Stop a started receive: no new connection, and the current one
        // is shut down, so the thread ends at once.
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(stream) = self.connection.lock().take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ReceiverHandle {
    fn take_listener(&mut self, function: &str) -> Result<TcpListener, Failure> {
        self.listener.take().ok_or_else(|| {
            Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_STATE,
                format!("{function}: this receiver already accepted its one migration"),
            )
        })
    }

    fn check_unused(&self, function: &str) -> Result<(), Failure> {
        if self.listener.is_some() {
            Ok(())
        } else {
            Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_STATE,
                format!("{function}: the receiver is already receiving"),
            ))
        }
    }
}

/// Everything one accept needs, moved to wherever it runs.
struct Accept {
    listener: TcpListener,
    io_timeout: Duration,
    max_memory_mib: u64,
    cancel: Arc<AtomicBool>,
    connection: Arc<Mutex<Option<TcpStream>>>,
}

impl Accept {
    fn wait_for_sender(&self, function: &str) -> Result<TcpStream, Failure> {
        let io = |what: &str, e: std::io::Error| {
            Failure::new(
                perfplus_result::PERFPLUS_RESULT_IO,
                format!("{function}: {what}: {e}"),
            )
        };
        self.listener
            .set_nonblocking(true)
            .map_err(|e| io("cannot poll the listening socket", e))?;
        let deadline = Instant::now() + self.io_timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| io("cannot configure the connection", e))?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("accepting the sender", e)),
            }
            if self.cancel.load(Ordering::SeqCst) {
                return Err(Failure::new(
                    perfplus_result::PERFPLUS_RESULT_MIGRATION_ABORTED,
                    format!("{function}: the receiver was freed before a sender connected"),
                ));
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    perfplus_result::PERFPLUS_RESULT_TIMEOUT,
                    format!(
                        "{function}: no sender connected within {} ms",
                        self.io_timeout.as_millis()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn run(self, function: &str) -> Result<perfplus_receiver_report, Failure> {
        let stream = self.wait_for_sender(function)?;
        if let Ok(clone) = stream.try_clone() {
            *self.connection.lock() = Some(clone);
        }
        let max_mib = self.max_memory_mib;
        let (receiver, result) = receive_tcp_with(stream, self.io_timeout, |header| {
            if header.page_size != PAGE_SIZE {
                return Err(format!(
                    "a simulated guest has pages of {PAGE_SIZE} bytes, the stream's are {}",
                    header.page_size
                ));
            }
            let mib = header
                .page_count
                .saturating_mul(PAGE_SIZE as u64)
                .div_ceil(1 << 20);
            if mib > max_mib {
                return Err(format!(
                    "the guest has {mib} MiB; this receiver takes at most {max_mib} MiB \
                     (perfplus_receiver_set_max_memory_mib)"
                ));
            }
            Ok(RealTimeSim::blank(header.page_count))
        });
        self.connection.lock().take();
        result.map_err(|e| {
            let mut failure = Failure::from(crate::Error::from(e));
            failure.message = format!("{function}: {}", failure.message);
            failure
        })?;
        let mut receiver = receiver.ok_or_else(|| {
            Failure::new(
                perfplus_result::PERFPLUS_RESULT_PANIC,
                format!("{function}: the receive ended without a receiver"),
            )
        })?;
        let stats = receiver.stats();
        let domain = receiver.domain_mut();
        let guest_memory_digest = memory_digest(domain).map_err(crate::Error::from)?;
        Ok(perfplus_receiver_report {
            page_count: crate::backend::Domain::page_count(domain),
            page_size: u32::try_from(PAGE_SIZE).unwrap_or(u32::MAX),
            pages_applied: stats.pages,
            zero_pages: stats.zero_pages,
            delta_pages: stats.delta_pages,
            bytes_received: stats.bytes,
            guest_memory_digest,
        })
    }
}

/// A receiver listening on `listen_address` (`host:port`; port 0 picks a
/// free one, see `perfplus_receiver_local_address`). Binds the socket and
/// starts no thread. Defaults: 30 s I/O timeout, guests up to 1024 MiB.
///
/// # Safety
/// `listen_address` must be a NUL-terminated string or NULL; `out` writable
/// or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_new(
    listen_address: *const c_char,
    out: *mut *mut perfplus_receiver,
) -> perfplus_result {
    const NAME: &str = "perfplus_receiver_new";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let address = unsafe { arg_str(listen_address, NAME, "listen_address") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let failure = |why: String| {
            Failure::new(
                perfplus_result::PERFPLUS_RESULT_ADDRESS,
                format!("{NAME}: cannot listen on \"{address}\": {why}"),
            )
        };
        let addresses: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|e| failure(format!("{e} (expected host:port)")))?
            .collect();
        let listener = TcpListener::bind(&addresses[..]).map_err(|e| failure(e.to_string()))?;
        let local = listener.local_addr().map_err(|e| failure(e.to_string()))?;
        out.write(box_handle::<perfplus_receiver>(ReceiverHandle {
            listener: Some(listener),
            local,
            io_timeout: Duration::from_millis(u64::from(DEFAULT_IO_TIMEOUT_MS)),
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            thread: None,
            cancel: Arc::new(AtomicBool::new(false)),
            connection: Arc::new(Mutex::new(None)),
        }));
        Ok(())
    })
}

/// Set how long waiting for the sender to connect, and each network read
/// and write, may take, ms (1 or more). Only before the receive starts.
///
/// # Safety
/// `receiver` must be a live receiver or NULL, not used by another thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_set_io_timeout_ms(
    receiver: *mut perfplus_receiver,
    io_timeout_ms: u32,
) -> perfplus_result {
    const NAME: &str = "perfplus_receiver_set_io_timeout_ms";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let r = unsafe { box_handle_mut(receiver, NAME, "receiver") }?;
        r.check_unused(NAME)?;
        if io_timeout_ms == 0 {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
                format!("{NAME}: the timeout must be at least 1 ms"),
            ));
        }
        r.io_timeout = Duration::from_millis(u64::from(io_timeout_ms));
        Ok(())
    })
}

/// Set the largest guest accepted, MiB (1 or more; default 1024): a larger
/// one is refused and its sender told why. A simulated receiving guest
/// holds the pages it receives in memory. Only before the receive starts.
///
/// # Safety
/// `receiver` must be a live receiver or NULL, not used by another thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_set_max_memory_mib(
    receiver: *mut perfplus_receiver,
    max_memory_mib: u64,
) -> perfplus_result {
    const NAME: &str = "perfplus_receiver_set_max_memory_mib";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let r = unsafe { box_handle_mut(receiver, NAME, "receiver") }?;
        r.check_unused(NAME)?;
        if max_memory_mib == 0 {
            return Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT,
                format!("{NAME}: the limit must be at least 1 MiB"),
            ));
        }
        r.max_memory_mib = max_memory_mib;
        Ok(())
    })
}

/// The address the receiver listens on (`ip:port`), for the sender:
/// written like `perfplus_last_error` writes (at most `len - 1` bytes and a
/// NUL; `*out_len` gets the whole length).
///
/// # Safety
/// `receiver` must be a live receiver or NULL; `buf` must point to `len`
/// writable bytes or be NULL; `out_len` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_local_address(
    receiver: *const perfplus_receiver,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_receiver_local_address";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle or NULL.
        let r = unsafe { box_handle_ref(receiver, NAME, "receiver") }?;
        let address = r.local.to_string();
        // SAFETY: the caller promises `buf` (`len` bytes) and `out_len`
        // are writable, or NULL.
        unsafe { write_text(buf, len, out_len, NAME, || Ok(address)) }
    })
}

/// Wait (at most the I/O timeout) for one sender, receive its guest into a
/// simulated guest, verify the stream and resume the guest here, all on
/// the calling thread; then report. A receiver takes one migration.
///
/// Failures (nothing written to `*out`; the guest never ran here):
/// `PERFPLUS_RESULT_TIMEOUT` (no sender, or it went quiet),
/// `PERFPLUS_RESULT_MIGRATION_ABORTED` (the sender gave up, e.g. its
/// progress callback cancelled, or the guest was refused),
/// `PERFPLUS_RESULT_MIGRATION_VERIFY` (the stream digest did not match),
/// `PERFPLUS_RESULT_MALFORMED` (the bytes are not a valid stream),
/// `PERFPLUS_RESULT_INVALID_STATE` (already used).
///
/// # Safety
/// `receiver` must be a live receiver or NULL, not used by another thread
/// during the call; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_accept(
    receiver: *mut perfplus_receiver,
    out: *mut perfplus_receiver_report,
) -> perfplus_result {
    const NAME: &str = "perfplus_receiver_accept";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let r = unsafe { box_handle_mut(receiver, NAME, "receiver") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let accept = Accept {
            listener: r.take_listener(NAME)?,
            io_timeout: r.io_timeout,
            max_memory_mib: r.max_memory_mib,
            cancel: r.cancel.clone(),
            connection: r.connection.clone(),
        };
        out.write(accept.run(NAME)?);
        Ok(())
    })
}

/// Do what `perfplus_receiver_accept` does on a new thread (named
/// `perfplus-receiver`, the only thread this object starts); collect the
/// outcome with `perfplus_receiver_wait`. Freeing the receiver instead
/// stops the thread (the connection is shut down) and joins it.
///
/// # Safety
/// `receiver` must be a live receiver or NULL, not used by another thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_start(
    receiver: *mut perfplus_receiver,
) -> perfplus_result {
    const NAME: &str = "perfplus_receiver_start";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let r = unsafe { box_handle_mut(receiver, NAME, "receiver") }?;
        let accept = Accept {
            listener: r.take_listener(NAME)?,
            io_timeout: r.io_timeout,
            max_memory_mib: r.max_memory_mib,
            cancel: r.cancel.clone(),
            connection: r.connection.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("perfplus-receiver".into())
            .spawn(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    accept.run("perfplus_receiver_wait")
                }))
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        perfplus_result::PERFPLUS_RESULT_PANIC,
                        "perfplus_receiver_wait: the receiving thread panicked",
                    ))
                })
            })
            .map_err(|e| {
                Failure::new(
                    perfplus_result::PERFPLUS_RESULT_IO,
                    format!("{NAME}: cannot start a thread: {e}"),
                )
            })?;
        r.thread = Some(thread);
        Ok(())
    })
}

/// Wait for the receive started by `perfplus_receiver_start` to end and
/// return its outcome (as `perfplus_receiver_accept` would, its message in
/// this thread's `perfplus_last_error`). `PERFPLUS_RESULT_INVALID_STATE` if
/// no receive was started or its outcome was already collected.
///
/// # Safety
/// `receiver` must be a live receiver or NULL, not used by another thread
/// during the call; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_wait(
    receiver: *mut perfplus_receiver,
    out: *mut perfplus_receiver_report,
) -> perfplus_result {
    const NAME: &str = "perfplus_receiver_wait";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises a live handle, exclusively ours, or NULL.
        let r = unsafe { box_handle_mut(receiver, NAME, "receiver") }?;
        // SAFETY: the caller promises `out` is writable or NULL.
        let out = unsafe { arg_out(out, NAME, "out") }?;
        let thread = r.thread.take().ok_or_else(|| {
            Failure::new(
                perfplus_result::PERFPLUS_RESULT_INVALID_STATE,
                format!("{NAME}: no receive is running (call perfplus_receiver_start first)"),
            )
        })?;
        let outcome = thread.join().unwrap_or_else(|_| {
            Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_PANIC,
                format!("{NAME}: the receiving thread panicked"),
            ))
        })?;
        out.write(outcome);
        Ok(())
    })
}

/// Free a receiver; NULL is a no-op. A receive still running is stopped
/// (its connection shut down: the sender sees the migration fail and keeps
/// its guest) and its thread joined.
///
/// # Safety
/// `receiver` must be NULL or a live receiver, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn perfplus_receiver_free(receiver: *mut perfplus_receiver) {
    super::boundary::guard_value((), || {
        // SAFETY: the caller promises a live handle freed once, or NULL.
        unsafe { box_handle_free(receiver) }
    });
}
