//! The C ABI: `include/perfplus.h` is generated from this module by cbindgen.
//!
//! Conventions (the same for every function, so C callers can rely on them):
//!
//! - every symbol starts with `perfplus_`; functions are
//!   `perfplus_<object>_<verb>`, constructors `_new`, destructors `_free`
//!   (called exactly once; NULL is a no-op);
//! - objects are opaque handles owned by one side at a time (see
//!   [`handle`]); configuration goes through builder functions;
//! - every fallible function returns a [`perfplus_result`]; outputs go
//!   through out-parameters, written only on success;
//! - [`perfplus_last_error`] returns the message of the last failure on the
//!   calling thread;
//! - no panic crosses the boundary: each exported body runs inside
//!   [`boundary::guard`], which turns a panic into
//!   [`perfplus_result::PERFPLUS_RESULT_PANIC`] and keeps its message;
//! - every pointer argument is checked; NULL where a value is required is
//!   [`perfplus_result::PERFPLUS_RESULT_NULL_ARGUMENT`], never a crash;
//! - the library starts no thread until asked to start a node or a migration
//!   (Heartbeat forks after loading a plugin, and threads do not survive a
//!   fork).
//!
//! Data flows one way through this module: raw pointers enter, are turned
//! into Rust references or owned values only by the helpers in [`handle`],
//! the Rust API does the work, and its errors leave as a result code plus a
//! thread-local message ([`error`]).

#![allow(non_camel_case_types)]

pub(crate) mod boundary;
pub mod error;
pub mod ha_node;
pub(crate) mod handle;
pub mod medium;
pub mod migration;
pub mod node;
pub mod policy;
pub mod receiver;
pub mod result;
pub mod round_tracker;
pub mod version;
pub mod xen;

pub use error::perfplus_last_error;
pub use result::{perfplus_result, perfplus_result_name};
pub use version::perfplus_version;
