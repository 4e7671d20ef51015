//! perfplus keeps services that live in virtual machines running through host
//! and network failures in small HA clusters: cluster membership, failure
//! detection, and **Perf+**, a dirty-page-aware pre-copy live-migration
//! algorithm that runs over Xen's libxenctrl / libxenguest.
//!
//! The crate is layered (see `DESIGN.md` beside the repository):
//!
//! - sans-io cores, pure state machines that take time as an argument
//!   ([`detector`], [`membership`], [`wire`], [`orchestrator`]);
//! - backends, the hypervisor seam;
//! - the runtime, the only place with threads, sockets and clocks
//!   ([`runtime::Node`], configured by [`config::NodeConfig`]);
//! - [`ffi`], the C ABI declared in `include/perfplus.h`.
//!
//! ```
//! // The library version, as the C ABI reports it.
//! assert_eq!(perfplus::VERSION, env!("CARGO_PKG_VERSION"));
//! ```

pub mod backend;
/// cbindgen:ignore
pub mod config;
pub mod detector;
/// cbindgen:ignore
pub mod driver;
mod error;
pub mod ffi;
/// cbindgen:ignore
pub mod heartbeat;
/// cbindgen:ignore
pub mod medium;
pub mod membership;
/// cbindgen:ignore
pub mod migration;
mod net_sys;
pub mod orchestrator;
/// cbindgen:ignore
pub mod runtime;
/// cbindgen:ignore
pub mod wire;

pub use error::Error;

/// The version of this library (`MAJOR.MINOR.PATCH`), as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
