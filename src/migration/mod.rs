//! Perf+ live migration: the sans-io parts (policy, planner, encoders,
//! stream) and the engine that drives them over a [`Domain`](crate::backend::Domain).

pub mod encode;
pub mod stream;
pub mod planner;
pub mod policy;
