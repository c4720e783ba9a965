//! One classification for every layer's errors. Each layer keeps its own
//! typed error enum; the pipeline only asks which class an error is in.

use std::fmt;

use crate::config::TableName;

/// What the pipeline does about an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Wait and retry with backoff (network, server restarts, overload).
    Transient,
    /// Stop replicating this table only (with the error as its reason); the
    /// others go on. The table stays stopped until it is resynced.
    Table(TableName),
    /// Stop the pipeline: a person must act, and the message says how.
    Fatal,
}

/// Implemented by every layer's error enum, in one place per layer.
pub trait Classify: fmt::Display {
    fn class(&self) -> ErrorClass;

    fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}
