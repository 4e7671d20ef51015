//! bindgen output, checked in (see `../../README.md` for how to regenerate
//! it). The only place in the crate where lints are relaxed.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    clippy::multiple_unsafe_ops_per_block,
    clippy::ptr_as_ptr,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_lossless
)]

pub mod types;
pub mod xenctrl;
pub mod xenforeignmemory;
pub mod xenguest;
pub mod xenstore;
pub mod xentoollog;
