//! `perfplus_result`: the one return type of every fallible C function.
//!
//! Values are explicit and grouped by hundreds so that a C caller can test a
//! whole class (`code / 100 == 2` is "I/O or network") and so that new codes
//! can be added inside a group without renumbering: a value, once published,
//! never changes meaning.

use std::ffi::c_char;

/// The outcome of a call into perfplus.
///
/// | range | group |
/// |---|---|
/// | 0 | success |
/// | 100..=199 | the caller's arguments or the object's state |
/// | 200..=299 | I/O and network |
/// | 300..=399 | the hypervisor |
/// | 400..=499 | protocol: malformed, unauthenticated or unsupported bytes |
/// | 500..=599 | migration |
/// | 600..=699 | cluster: membership, quorum, fencing |
/// | 9000 | a panic inside perfplus (a bug; the message is kept) |
///
/// After any failure, `perfplus_last_error` gives a message for a human.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum perfplus_result {
    /// Success.
    PERFPLUS_RESULT_OK = 0,

    /// A pointer argument that must not be NULL was NULL.
    PERFPLUS_RESULT_NULL_ARGUMENT = 100,
    /// An argument has a value outside what the function accepts.
    PERFPLUS_RESULT_INVALID_ARGUMENT = 101,
    /// A caller-supplied buffer is too small for the result.
    PERFPLUS_RESULT_BUFFER_TOO_SMALL = 102,
    /// The object is not in a state that allows the call (e.g. already started).
    PERFPLUS_RESULT_INVALID_STATE = 103,
    /// A configuration file or value is invalid; the message names the file,
    /// line and field.
    PERFPLUS_RESULT_INVALID_CONFIG = 104,
    /// A string argument is not valid UTF-8.
    PERFPLUS_RESULT_INVALID_UTF8 = 105,

    /// An operating-system I/O call failed.
    PERFPLUS_RESULT_IO = 200,
    /// A network operation did not complete in time.
    PERFPLUS_RESULT_TIMEOUT = 201,
    /// The peer closed or reset the connection.
    PERFPLUS_RESULT_CONNECTION_LOST = 202,
    /// An address could not be parsed, resolved or bound.
    PERFPLUS_RESULT_ADDRESS = 203,
    /// A blocking call was interrupted by a signal before it had a result;
    /// nothing was lost: handle the signal and call again.
    PERFPLUS_RESULT_INTERRUPTED = 204,

    /// No hypervisor on this host (e.g. cannot open /dev/xen/privcmd).
    PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE = 300,
    /// A hypervisor library could not be loaded; the message names the package.
    PERFPLUS_RESULT_HYPERVISOR_LIBRARY = 301,
    /// The hypervisor or its libraries are a version perfplus does not support.
    PERFPLUS_RESULT_HYPERVISOR_VERSION = 302,
    /// The domain does not exist.
    PERFPLUS_RESULT_DOMAIN_NOT_FOUND = 303,
    /// A hypervisor call failed; the message names the call and errno.
    PERFPLUS_RESULT_HYPERVISOR_CALL = 304,

    /// Bytes from the network or a file are malformed or out of bounds.
    PERFPLUS_RESULT_MALFORMED = 400,
    /// The peer speaks an unsupported protocol version.
    PERFPLUS_RESULT_UNSUPPORTED_VERSION = 401,
    /// A message failed authentication (wrong key or tampered).
    PERFPLUS_RESULT_AUTHENTICATION = 402,

    /// The migration was aborted; the guest is still running at the source.
    PERFPLUS_RESULT_MIGRATION_ABORTED = 500,
    /// The receiver's copy of guest memory did not verify.
    PERFPLUS_RESULT_MIGRATION_VERIFY = 501,
    /// Pre-copy did not converge within its limits.
    PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED = 502,

    /// The local partition does not have quorum.
    PERFPLUS_RESULT_NO_QUORUM = 600,
    /// The node is not a configured member of the cluster.
    PERFPLUS_RESULT_UNKNOWN_NODE = 601,
    /// Fencing did not confirm.
    PERFPLUS_RESULT_FENCING = 602,

    /// perfplus panicked; this is a bug. The object involved should only be freed.
    PERFPLUS_RESULT_PANIC = 9000,
}

impl perfplus_result {
    /// Every value, in numeric order (used by tests and `perfplus_result_name`).
    pub const ALL: &'static [perfplus_result] = &[
        Self::PERFPLUS_RESULT_OK,
        Self::PERFPLUS_RESULT_NULL_ARGUMENT,
        Self::PERFPLUS_RESULT_INVALID_ARGUMENT,
        Self::PERFPLUS_RESULT_BUFFER_TOO_SMALL,
        Self::PERFPLUS_RESULT_INVALID_STATE,
        Self::PERFPLUS_RESULT_INVALID_CONFIG,
        Self::PERFPLUS_RESULT_INVALID_UTF8,
        Self::PERFPLUS_RESULT_IO,
        Self::PERFPLUS_RESULT_TIMEOUT,
        Self::PERFPLUS_RESULT_CONNECTION_LOST,
        Self::PERFPLUS_RESULT_ADDRESS,
        Self::PERFPLUS_RESULT_INTERRUPTED,
        Self::PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE,
        Self::PERFPLUS_RESULT_HYPERVISOR_LIBRARY,
        Self::PERFPLUS_RESULT_HYPERVISOR_VERSION,
        Self::PERFPLUS_RESULT_DOMAIN_NOT_FOUND,
        Self::PERFPLUS_RESULT_HYPERVISOR_CALL,
        Self::PERFPLUS_RESULT_MALFORMED,
        Self::PERFPLUS_RESULT_UNSUPPORTED_VERSION,
        Self::PERFPLUS_RESULT_AUTHENTICATION,
        Self::PERFPLUS_RESULT_MIGRATION_ABORTED,
        Self::PERFPLUS_RESULT_MIGRATION_VERIFY,
        Self::PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED,
        Self::PERFPLUS_RESULT_NO_QUORUM,
        Self::PERFPLUS_RESULT_UNKNOWN_NODE,
        Self::PERFPLUS_RESULT_FENCING,
        Self::PERFPLUS_RESULT_PANIC,
    ];

    /// The C name of this value, NUL-terminated.
    pub fn name_cstr(self) -> &'static std::ffi::CStr {
        match self {
            Self::PERFPLUS_RESULT_OK => c"PERFPLUS_RESULT_OK",
            Self::PERFPLUS_RESULT_NULL_ARGUMENT => c"PERFPLUS_RESULT_NULL_ARGUMENT",
            Self::PERFPLUS_RESULT_INVALID_ARGUMENT => c"PERFPLUS_RESULT_INVALID_ARGUMENT",
            Self::PERFPLUS_RESULT_BUFFER_TOO_SMALL => c"PERFPLUS_RESULT_BUFFER_TOO_SMALL",
            Self::PERFPLUS_RESULT_INVALID_STATE => c"PERFPLUS_RESULT_INVALID_STATE",
            Self::PERFPLUS_RESULT_INVALID_CONFIG => c"PERFPLUS_RESULT_INVALID_CONFIG",
            Self::PERFPLUS_RESULT_INVALID_UTF8 => c"PERFPLUS_RESULT_INVALID_UTF8",
            Self::PERFPLUS_RESULT_IO => c"PERFPLUS_RESULT_IO",
            Self::PERFPLUS_RESULT_TIMEOUT => c"PERFPLUS_RESULT_TIMEOUT",
            Self::PERFPLUS_RESULT_CONNECTION_LOST => c"PERFPLUS_RESULT_CONNECTION_LOST",
            Self::PERFPLUS_RESULT_ADDRESS => c"PERFPLUS_RESULT_ADDRESS",
            Self::PERFPLUS_RESULT_INTERRUPTED => c"PERFPLUS_RESULT_INTERRUPTED",
            Self::PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE => {
                c"PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE"
            }
            Self::PERFPLUS_RESULT_HYPERVISOR_LIBRARY => c"PERFPLUS_RESULT_HYPERVISOR_LIBRARY",
            Self::PERFPLUS_RESULT_HYPERVISOR_VERSION => c"PERFPLUS_RESULT_HYPERVISOR_VERSION",
            Self::PERFPLUS_RESULT_DOMAIN_NOT_FOUND => c"PERFPLUS_RESULT_DOMAIN_NOT_FOUND",
            Self::PERFPLUS_RESULT_HYPERVISOR_CALL => c"PERFPLUS_RESULT_HYPERVISOR_CALL",
            Self::PERFPLUS_RESULT_MALFORMED => c"PERFPLUS_RESULT_MALFORMED",
            Self::PERFPLUS_RESULT_UNSUPPORTED_VERSION => c"PERFPLUS_RESULT_UNSUPPORTED_VERSION",
            Self::PERFPLUS_RESULT_AUTHENTICATION => c"PERFPLUS_RESULT_AUTHENTICATION",
            Self::PERFPLUS_RESULT_MIGRATION_ABORTED => c"PERFPLUS_RESULT_MIGRATION_ABORTED",
            Self::PERFPLUS_RESULT_MIGRATION_VERIFY => c"PERFPLUS_RESULT_MIGRATION_VERIFY",
            Self::PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED => {
                c"PERFPLUS_RESULT_MIGRATION_NOT_CONVERGED"
            }
            Self::PERFPLUS_RESULT_NO_QUORUM => c"PERFPLUS_RESULT_NO_QUORUM",
            Self::PERFPLUS_RESULT_UNKNOWN_NODE => c"PERFPLUS_RESULT_UNKNOWN_NODE",
            Self::PERFPLUS_RESULT_FENCING => c"PERFPLUS_RESULT_FENCING",
            Self::PERFPLUS_RESULT_PANIC => c"PERFPLUS_RESULT_PANIC",
        }
    }

    /// The value with this number, if there is one.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| *r as u32 == code)
    }
}

/// The name of a result code as a static NUL-terminated string, e.g.
/// `"PERFPLUS_RESULT_NULL_ARGUMENT"`; `"PERFPLUS_RESULT_UNKNOWN"` for a number
/// that is not a result code. Never NULL; the string must not be freed.
#[no_mangle]
pub extern "C" fn perfplus_result_name(code: u32) -> *const c_char {
    super::boundary::guard_value(c"PERFPLUS_RESULT_PANIC".as_ptr(), || {
        perfplus_result::from_code(code)
            .map_or(c"PERFPLUS_RESULT_UNKNOWN", perfplus_result::name_cstr)
            .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_name_and_number() {
        let mut numbers = std::collections::HashSet::new();
        for r in perfplus_result::ALL {
            assert!(numbers.insert(*r as u32), "duplicate number {}", *r as u32);
            assert_eq!(
                r.name_cstr().to_str().unwrap(),
                format!("{r:?}"),
                "name of {r:?}"
            );
            assert_eq!(perfplus_result::from_code(*r as u32), Some(*r));
        }
    }

    #[test]
    fn codes_sit_in_their_groups() {
        use perfplus_result::*;
        assert_eq!(PERFPLUS_RESULT_OK as u32, 0);
        assert_eq!(PERFPLUS_RESULT_NULL_ARGUMENT as u32 / 100, 1);
        assert_eq!(PERFPLUS_RESULT_TIMEOUT as u32 / 100, 2);
        assert_eq!(PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE as u32 / 100, 3);
        assert_eq!(PERFPLUS_RESULT_MALFORMED as u32 / 100, 4);
        assert_eq!(PERFPLUS_RESULT_MIGRATION_ABORTED as u32 / 100, 5);
        assert_eq!(PERFPLUS_RESULT_NO_QUORUM as u32 / 100, 6);
        assert_eq!(PERFPLUS_RESULT_PANIC as u32, 9000);
    }

    #[test]
    fn unknown_code_has_a_name_too() {
        // SAFETY: perfplus_result_name returns a static NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(perfplus_result_name(12345)) };
        assert_eq!(name.to_str().unwrap(), "PERFPLUS_RESULT_UNKNOWN");
    }
}
