//! A sink that keeps what it is given, in memory: for pipeline tests of the
//! commit protocol and the table lifecycle. Durable in the only sense a test
//! needs: what `apply` accepted is visible through its [`MemorySinkHandle`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{Sink, SinkError};
use crate::config::TableName;
use crate::core::health::Report;
use crate::core::SinkItem;

/// Called with every accepted `apply` (e.g. to log the order of events).
pub type ApplyHook = Box<dyn Fn(&[SinkItem]) + Send + Sync>;

#[derive(Default)]
struct Inner {
    applied: Vec<SinkItem>,
    /// Tables to stop on sight, with the reason.
    fail_tables: BTreeMap<TableName, String>,
    failed: BTreeSet<TableName>,
    newly_failed: Vec<(TableName, String)>,
    /// The next this-many `apply` calls fail transiently.
    transient_failures: u32,
    /// `finish_copy` calls, in order.
    finished_copies: Vec<(TableName, u64)>,
    hook: Option<ApplyHook>,
}

/// The pipeline owns the sink; the test keeps this handle to steer and inspect it.
#[derive(Clone, Default)]
pub struct MemorySinkHandle(Arc<Mutex<Inner>>);

pub struct MemorySink {
    inner: MemorySinkHandle,
}

impl MemorySink {
    pub fn new() -> (MemorySink, MemorySinkHandle) {
        let handle = MemorySinkHandle::default();
        (
            MemorySink {
                inner: handle.clone(),
            },
            handle,
        )
    }
}

impl MemorySinkHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything applied so far, in order.
    pub fn applied(&self) -> Vec<SinkItem> {
        self.lock().applied.clone()
    }

    /// Rows applied for `table`.
    pub fn rows_of(&self, table: &TableName) -> usize {
        self.lock()
            .applied
            .iter()
            .filter(|i| matches!(i, SinkItem::Rows(b) if &b.shape.table == table))
            .map(SinkItem::rows)
            .sum()
    }

    /// The `finish_copy` calls so far: (table, version).
    pub fn finished_copies(&self) -> Vec<(TableName, u64)> {
        self.lock().finished_copies.clone()
    }

    /// The sink will stop `table` (as for an incompatible schema change) the
    /// next time it sees rows of it.
    pub fn fail_table(&self, table: TableName, reason: &str) {
        self.lock().fail_tables.insert(table, reason.to_owned());
    }

    /// The next `n` applies fail with a transient error.
    pub fn fail_transiently(&self, n: u32) {
        self.lock().transient_failures = n;
    }

    pub fn on_apply(&self, hook: ApplyHook) {
        self.lock().hook = Some(hook);
    }
}

impl Sink for MemorySink {
    async fn open(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn apply(&mut self, items: &[SinkItem]) -> Result<(), SinkError> {
        let mut inner = self.inner.lock();
        if inner.transient_failures > 0 {
            inner.transient_failures -= 1;
            return Err(SinkError::Other {
                message: "injected transient failure".into(),
                transient: true,
            });
        }
        let mut accepted = Vec::with_capacity(items.len());
        for item in items {
            if let SinkItem::Rows(b) = item {
                let t = &b.shape.table;
                if inner.failed.contains(t) {
                    continue;
                }
                if let Some(reason) = inner.fail_tables.remove(t) {
                    inner.failed.insert(t.clone());
                    inner.newly_failed.push((t.clone(), reason));
                    continue;
                }
            }
            accepted.push(item.clone());
        }
        if let Some(hook) = &inner.hook {
            hook(&accepted);
        }
        inner.applied.extend(accepted);
        Ok(())
    }

    fn take_failed(&mut self) -> Vec<(TableName, String)> {
        std::mem::take(&mut self.inner.lock().newly_failed)
    }

    async fn finish_copy(&mut self, table: &TableName, version: u64) -> Result<(), SinkError> {
        self.inner
            .lock()
            .finished_copies
            .push((table.clone(), version));
        Ok(())
    }

    fn reset_table(&mut self, table: &TableName) {
        self.inner.lock().failed.remove(table);
    }

    fn fork(&self) -> Self {
        MemorySink {
            inner: self.inner.clone(),
        }
    }

    async fn healthcheck(&self) -> Report {
        let mut r = Report::default();
        r.ok("memory", "in-memory sink");
        r
    }
}
