//! [`LocalGuest`]: a guest whose code runs as threads of this process.
//! Its writers pass a [`Gate`] around each batch of stores, which is how
//! the migration side pauses them (there is no `SIGSTOP` for some threads
//! of a process). Used by tests and benchmarks that must know exactly
//! which pages the guest wrote, and by embedders whose guest lives in-process.

use std::sync::{Arc, Mutex};

use super::{ArenaError, ArenaMemory, Gate, GatePass, TrackedRegion};

/// First bytes of an in-process guest's state blob.
const LOCAL_STATE_TAG: &[u8] = b"perfplus-arena-local/1\n";

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

    /// The guest's own state (what its "CPU" would hold).
    pub fn state(&self) -> Vec<u8> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replace the guest's own state.
    pub fn set_state(&self, state: Vec<u8>) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// The state as a migration blob: a tag, then the state.
    pub(super) fn state_blob(&self) -> Vec<u8> {
        let mut blob = LOCAL_STATE_TAG.to_vec();
        blob.extend_from_slice(&self.state());
        blob
    }

    /// Restore from a blob made by [`state_blob`](Self::state_blob).
    pub(super) fn restore_blob(&self, blob: &[u8]) -> Result<(), String> {
        let state = blob
            .strip_prefix(LOCAL_STATE_TAG)
            .ok_or_else(|| "not an in-process arena guest's state blob".to_owned())?;
        self.set_state(state.to_vec());
        Ok(())
    }
}
