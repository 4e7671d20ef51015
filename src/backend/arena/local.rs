//! [`LocalGuest`]: a guest whose code runs as threads of this process.
//! Its writers pass a [`Gate`] around each batch of stores, which is how
//! the migration side pauses them (there is no `SIGSTOP` for some threads
//! of a process). Used by tests and benchmarks that must know exactly
//! which pages the guest wrote, and by embedders whose guest lives in-process.

use std::sync::{Arc, Mutex};

use super::{ArenaError, ArenaMemory, Gate, GatePass, TrackedRegion};

/// An in-process guest: a tracked region, the gate its writers pass, and
/// an opaque state blob that migrates with it.
#[derive(Debug)]
pub struct LocalGuest {
    region: TrackedRegion,
    gate: Arc<Gate>,
    state: Mutex<Vec<u8>>,
}

impl LocalGuest {
    /// A guest of `pages` zero pages.
    pub fn new(pages: u64) -> Result<Arc<Self>, ArenaError> {
        Ok(Arc::new(Self {
            region: TrackedRegion::new(pages)?,
            gate: Arc::new(Gate::default()),
            state: Mutex::new(Vec::new()),
        }))
    }

    /// The guest's memory.
    pub fn memory(&self) -> ArenaMemory<'_> {
        self.region.memory()
    }

    /// The region.
    pub fn region(&self) -> &TrackedRegion {
        &self.region
    }

    /// Permission for guest code to run (and store) until the pass drops;
    /// blocks while the guest is paused.
    pub fn enter(&self) -> GatePass<'_> {
        self.gate.enter()
    }

    /// The gate (the domain's stopper).
    pub(super) fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.gate)
    }

    /// The state blob that `save_state` returns.
    pub fn state(&self) -> Vec<u8> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replace the state blob.
    pub fn set_state(&self, state: Vec<u8>) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }
}
