//! An in-memory state store for pipeline tests: the saved document is kept
//! serialised, exactly as the sled store keeps it, and survives as long as
//! its [`MemoryStoreHandle`] (a "restart" reuses the handle).

use std::sync::{Arc, Mutex};

use super::{check_forward, PipelineState, StateError, StateStore};
use crate::core::position::Position;

/// Called after every save with the saved document (e.g. to log the order of events).
pub type SaveHook = Box<dyn Fn(&serde_json::Value) + Send + Sync>;

#[derive(Default)]
struct Inner {
    saved: Option<serde_json::Value>,
    saves: u64,
    hook: Option<SaveHook>,
}

#[derive(Clone, Default)]
pub struct MemoryStoreHandle(Arc<Mutex<Inner>>);

pub struct MemoryStore {
    inner: MemoryStoreHandle,
}

impl MemoryStore {
    pub fn new() -> (MemoryStore, MemoryStoreHandle) {
        let h = MemoryStoreHandle::default();
        (MemoryStore { inner: h.clone() }, h)
    }

    /// A store over the same saved state (a process restart).
    pub fn reopen(handle: &MemoryStoreHandle) -> MemoryStore {
        MemoryStore {
            inner: handle.clone(),
        }
    }
}

impl MemoryStoreHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn saves(&self) -> u64 {
        self.lock().saves
    }

    pub fn state<P: Position>(&self) -> Option<PipelineState<P>> {
        self.lock()
            .saved
            .clone()
            .map(|v| serde_json::from_value(v).expect("saved state parses"))
    }

    pub fn on_save(&self, hook: SaveHook) {
        self.lock().hook = Some(hook);
    }
}

impl StateStore for MemoryStore {
    fn load<P: Position>(&self) -> Result<Option<PipelineState<P>>, StateError> {
        match &self.inner.lock().saved {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| StateError::Corrupt(e.to_string())),
        }
    }

    fn save<P: Position>(&mut self, state: &PipelineState<P>) -> Result<(), StateError> {
        check_forward(self.load::<P>()?.as_ref(), state)?;
        let v = serde_json::to_value(state).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let mut inner = self.inner.lock();
        if let Some(h) = &inner.hook {
            h(&v);
        }
        inner.saved = Some(v);
        inner.saves += 1;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), StateError> {
        self.inner.lock().saved = None;
        Ok(())
    }
}
