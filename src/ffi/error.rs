//! The thread-local "last error" and the failure type of the C boundary.
//!
//! Every failed call stores its message here before returning its code, so
//! a C caller can ask `perfplus_last_error` what went wrong. The message
//! stays until the next failure on the same thread; a successful call does
//! not clear it.

use std::cell::RefCell;
use std::ffi::c_char;

use super::result::perfplus_result;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A failure on its way out through the C boundary: a code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: perfplus_result,
    pub(crate) message: String,
}

impl Failure {
    /// A failure with this code and message.
    pub(crate) fn new(code: perfplus_result, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A NULL pointer where `function` needs a value for `argument`.
    pub(crate) fn null_argument(function: &str, argument: &str) -> Self {
        Self::new(
            perfplus_result::PERFPLUS_RESULT_NULL_ARGUMENT,
            format!("{function}: argument `{argument}` is NULL"),
        )
    }
}

impl From<crate::Error> for Failure {
    fn from(error: crate::Error) -> Self {
        use perfplus_result as R;
        let code = match &error {
            crate::Error::Backend(e) => backend_code(e),
            crate::Error::Migration(e) => migration_code(e),
            crate::Error::Workload(_) => R::PERFPLUS_RESULT_INVALID_CONFIG,
            crate::Error::Ha(e) => ha_code(e),
            crate::Error::Config(e) => config_code(e),
            crate::Error::Node(e) => node_code(e),
            crate::Error::Medium(e) => {
                use crate::medium::MediumError as M;
                match e {
                    M::Config(_) | M::KeyFile { .. } => R::PERFPLUS_RESULT_INVALID_CONFIG,
                    M::Bind { .. } => R::PERFPLUS_RESULT_ADDRESS,
                    M::PayloadTooLarge { .. } => R::PERFPLUS_RESULT_INVALID_ARGUMENT,
                    M::SendFailed { .. } | M::Receive(_) => R::PERFPLUS_RESULT_IO,
                    M::Interrupted => R::PERFPLUS_RESULT_INTERRUPTED,
                    M::BufferTooSmall { .. } => R::PERFPLUS_RESULT_BUFFER_TOO_SMALL,
                }
            }
            crate::Error::Xen(e) => {
                use crate::backend::xen::XenError as X;
                match e {
                    X::NoHypervisor { .. } | X::PrivcmdUnavailable { .. } => {
                        R::PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE
                    }
                    X::Library(_) => R::PERFPLUS_RESULT_HYPERVISOR_LIBRARY,
                    X::HypervisorVersion { .. } => R::PERFPLUS_RESULT_HYPERVISOR_VERSION,
                    X::NoSuchDomain(_) => R::PERFPLUS_RESULT_DOMAIN_NOT_FOUND,
                    X::Call { .. }
                    | X::Unexpected { .. }
                    | X::SuspendTimeout { .. }
                    | X::UnexpectedShutdown { .. }
                    | X::Toolstack { .. } => R::PERFPLUS_RESULT_HYPERVISOR_CALL,
                }
            }
        };
        // The whole chain of causes, so C callers see the root cause too.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Self::new(code, message)
    }
}

/// The result code of a migration failure: what happened to the guest
/// first (aborted and back at the source, or not converged), then the
/// cause.
fn migration_code(e: &crate::migration::MigrationError) -> perfplus_result {
    use crate::migration::{MigrationError as M, TransportError as T};
    use perfplus_result as R;
    match e {
        M::Aborted { cause, .. } => match cause.as_ref() {
            M::NotConverged { .. } => R::PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED,
            M::DigestMismatch { .. } => R::PERFPLUS_RESULT_MIGRATION_VERIFY,
            _ => R::PERFPLUS_RESULT_MIGRATION_ABORTED,
        },
        M::NotConverged { .. } => R::PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED,
        M::DigestMismatch { .. } => R::PERFPLUS_RESULT_MIGRATION_VERIFY,
        M::ResumeFailed { .. } | M::HandoverUnconfirmed { .. } => R::PERFPLUS_RESULT_INVALID_STATE,
        M::Backend { source, .. } => backend_code(source),
        M::Transport(T::Timeout { .. }) => R::PERFPLUS_RESULT_TIMEOUT,
        M::Transport(T::Closed { .. }) => R::PERFPLUS_RESULT_CONNECTION_LOST,
        M::Transport(T::Io { .. }) => R::PERFPLUS_RESULT_IO,
        M::Stream(crate::migration::StreamError::UnsupportedVersion(_)) => {
            R::PERFPLUS_RESULT_UNSUPPORTED_VERSION
        }
        M::Stream(_) | M::Protocol { .. } | M::GeometryMismatch { .. } => {
            R::PERFPLUS_RESULT_MALFORMED
        }
        M::Refused { .. } | M::SenderAborted { .. } | M::Cancelled => {
            R::PERFPLUS_RESULT_MIGRATION_ABORTED
        }
    }
}

/// The result code of a backend failure.
fn backend_code(e: &crate::backend::BackendError) -> perfplus_result {
    use crate::backend::BackendError as B;
    use perfplus_result as R;
    match e {
        B::Unsupported { .. } | B::PfnOutOfRange { .. } | B::BufferSize { .. } => {
            R::PERFPLUS_RESULT_INVALID_ARGUMENT
        }
        B::DirtyLogDisabled | B::InvalidState { .. } => R::PERFPLUS_RESULT_INVALID_STATE,
        B::Gone { .. } => R::PERFPLUS_RESULT_DOMAIN_NOT_FOUND,
        B::Io { .. } => R::PERFPLUS_RESULT_IO,
        B::Hypervisor { .. } => R::PERFPLUS_RESULT_HYPERVISOR_CALL,
    }
}

/// The result code of an HA node that could not start.
fn ha_code(e: &crate::runtime::ha::HaError) -> perfplus_result {
    use crate::driver::DriverError as D;
    use crate::runtime::ha::HaError as H;
    use perfplus_result as R;
    match e {
        H::Node(e) => node_code(e),
        H::Orchestrator(_) | H::NoControlAddress(_) => R::PERFPLUS_RESULT_INVALID_CONFIG,
        H::Driver { source, .. } => match source {
            D::Io { .. } | D::Timeout { .. } | D::Failed { .. } => R::PERFPLUS_RESULT_IO,
            _ => R::PERFPLUS_RESULT_INVALID_CONFIG,
        },
        H::Listen { .. } => R::PERFPLUS_RESULT_ADDRESS,
        H::Thread(_) => R::PERFPLUS_RESULT_IO,
    }
}

/// The result code of a membership node that could not start.
fn node_code(e: &crate::runtime::NodeError) -> perfplus_result {
    use crate::runtime::NodeError as N;
    use perfplus_result as R;
    match e {
        N::Config(e) => config_code(e),
        N::Membership(_) => R::PERFPLUS_RESULT_INVALID_CONFIG,
        N::Link { .. } => R::PERFPLUS_RESULT_ADDRESS,
        N::Ping(_) | N::Incarnation { .. } | N::Thread(_) => R::PERFPLUS_RESULT_IO,
        N::Heartbeat(e) => {
            use crate::heartbeat::HeartbeatError as H;
            match e {
                H::Io { .. } | H::CorruptIdentity { .. } => R::PERFPLUS_RESULT_IO,
                H::NodeNotListed { .. } | H::Timing { .. } | H::ZeroGeneration => {
                    R::PERFPLUS_RESULT_INVALID_CONFIG
                }
            }
        }
    }
}

fn config_code(error: &crate::config::ConfigError) -> perfplus_result {
    match error {
        crate::config::ConfigError::Read { .. } => perfplus_result::PERFPLUS_RESULT_IO,
        _ => perfplus_result::PERFPLUS_RESULT_INVALID_CONFIG,
    }
}

/// Store `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|last| {
        let mut last = last.borrow_mut();
        last.clear();
        last.push_str(message);
    });
}

/// This thread's last error message ("" if there was none).
pub(crate) fn last_error() -> String {
    LAST_ERROR.with(|last| last.borrow().clone())
}

/// Copy the message of the last failure on the calling thread into `buf`.
///
/// The message is written like `snprintf` writes: at most `len - 1` bytes and
/// a terminating NUL, cut at a UTF-8 character boundary. `*out_len` receives
/// the length of the whole message (without the NUL), so `*out_len >= len`
/// means it was cut. The message is empty if no call on this thread has
/// failed. A successful call does not clear it.
///
/// Returns `PERFPLUS_RESULT_NULL_ARGUMENT` if `buf` or `out_len` is NULL and
/// `PERFPLUS_RESULT_BUFFER_TOO_SMALL` if `len` is 0 (nothing is written then);
/// both failures replace the stored message with their own.
///
/// # Safety
///
/// `buf` must point to `len` writable bytes and `out_len` to a writable
/// `size_t`, or be NULL.
#[no_mangle]
pub unsafe extern "C" fn perfplus_last_error(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> perfplus_result {
    const NAME: &str = "perfplus_last_error";
    super::boundary::guard(NAME, || {
        // SAFETY: the caller promises `buf` points to `len` writable bytes
        // and `out_len` is writable, or NULL.
        unsafe { super::handle::write_text(buf, len, out_len, NAME, || Ok(last_error())) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_last_error(len: usize) -> (perfplus_result, String, usize) {
        let mut buf = vec![0x55_u8; len.max(1)];
        let mut out_len = usize::MAX;
        // SAFETY: buf holds `len` bytes (at least one) and out_len is a local.
        let code = unsafe { perfplus_last_error(buf.as_mut_ptr().cast(), len, &mut out_len) };
        let text = if code == perfplus_result::PERFPLUS_RESULT_OK {
            let nul = buf.iter().position(|b| *b == 0).unwrap();
            String::from_utf8(buf[..nul].to_vec()).unwrap()
        } else {
            String::new()
        };
        (code, text, out_len)
    }

    #[test]
    fn message_is_copied_with_its_length() {
        set_last_error("link eth1 is down");
        let (code, text, len) = read_last_error(64);
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_OK);
        assert_eq!(text, "link eth1 is down");
        assert_eq!(len, 17);
    }

    #[test]
    fn long_message_is_cut_at_a_character_boundary_and_terminated() {
        set_last_error("héllo");
        // Room for 2 bytes + NUL: "h" then the 2-byte "é" does not fit whole.
        let (code, text, len) = read_last_error(3);
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_OK);
        assert_eq!(text, "h");
        assert_eq!(len, "héllo".len());
    }

    #[test]
    fn null_buffer_is_refused_and_becomes_the_last_error() {
        let mut out_len = 0;
        // SAFETY: a NULL buffer is allowed by the contract and must be refused.
        let code = unsafe { perfplus_last_error(std::ptr::null_mut(), 10, &mut out_len) };
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_NULL_ARGUMENT);
        assert_eq!(last_error(), "perfplus_last_error: argument `buf` is NULL");
    }

    #[test]
    fn zero_length_is_too_small_and_out_len_is_untouched() {
        set_last_error("x");
        let (code, _, out_len) = read_last_error(0);
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_BUFFER_TOO_SMALL);
        assert_eq!(
            out_len,
            usize::MAX,
            "out-parameters are written only on success"
        );
    }

    #[test]
    fn crate_errors_map_to_their_group() {
        let failure = Failure::from(crate::Error::from(
            crate::backend::BackendError::PfnOutOfRange {
                pfn: 9,
                page_count: 4,
            },
        ));
        assert_eq!(
            failure.code,
            perfplus_result::PERFPLUS_RESULT_INVALID_ARGUMENT
        );
        assert_eq!(failure.message, "page 9 is outside guest memory (4 pages)");
    }

    #[test]
    fn xen_errors_map_to_the_hypervisor_group() {
        use crate::backend::xen::XenError;
        let failure = Failure::from(crate::Error::from(XenError::NoHypervisor {
            path: "/dev/xen/privcmd",
        }));
        assert_eq!(
            failure.code,
            perfplus_result::PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE
        );
        assert_eq!(
            failure.message,
            "no Xen hypervisor on this host (cannot open /dev/xen/privcmd)"
        );
        let failure = Failure::from(crate::Error::from(XenError::HypervisorVersion {
            major: 4,
            minor: 18,
        }));
        assert_eq!(
            failure.code,
            perfplus_result::PERFPLUS_RESULT_HYPERVISOR_VERSION
        );
    }

    #[test]
    fn last_error_belongs_to_the_thread() {
        set_last_error("main thread failure");
        let other = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(other, "");
        assert_eq!(last_error(), "main thread failure");
    }

    #[test]
    fn migration_failures_map_to_what_happened_to_the_guest() {
        use crate::migration::{MigrationError as M, Stage, TransportError};
        let aborted = |cause| {
            crate::Error::Migration(M::Aborted {
                stage: Stage::Round(2),
                cause: Box::new(cause),
            })
        };
        let f = Failure::from(aborted(M::NotConverged {
            reason: "30 minutes",
        }));
        assert_eq!(
            f.code,
            perfplus_result::PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED
        );
        let f = Failure::from(aborted(M::Transport(TransportError::Closed {
            what: "sending",
        })));
        assert_eq!(f.code, perfplus_result::PERFPLUS_RESULT_MIGRATION_ABORTED);
        assert!(f.message.contains("running at the source"), "{}", f.message);
        let f = Failure::from(crate::Error::Migration(M::Transport(
            TransportError::Timeout {
                what: "waiting",
                after_ms: 5,
            },
        )));
        assert_eq!(f.code, perfplus_result::PERFPLUS_RESULT_TIMEOUT);
    }
}
