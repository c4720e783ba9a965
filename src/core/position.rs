//! Source positions, opaque to the pipeline.
//!
//! Each source defines its own position type (an LSN for PostgreSQL logical
//! replication, a cursor per table for a polled source). The pipeline only
//! orders positions (progress never moves backwards), stores them
//! (serialised) and hands them back to the source on restart and as
//! acknowledgements.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An ordered, serialisable source position. `PartialOrd` because a
/// position made of several independent parts (one cursor per table) is
/// only ordered when every part is: an incomparable position is refused
/// like a backwards one.
pub trait Position:
    Clone
    + fmt::Debug
    + fmt::Display
    + PartialOrd
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<T> Position for T where
    T: Clone
        + fmt::Debug
        + fmt::Display
        + PartialOrd
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// What a source says about which upstream its positions belong to (e.g.
/// PostgreSQL's system id and the slot name). Saved with the position; a
/// source refuses to resume from a position saved under another identity.
pub type SourceIdentity = BTreeMap<String, String>;

/// Whether `new` may replace `current`: equal or later.
pub fn moves_forward<P: PartialOrd>(current: &P, new: &P) -> bool {
    matches!(
        new.partial_cmp(current),
        Some(std::cmp::Ordering::Equal | std::cmp::Ordering::Greater)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_only() {
        assert!(moves_forward(&5u64, &5));
        assert!(moves_forward(&5u64, &6));
        assert!(!moves_forward(&5u64, &4));
        assert!(!moves_forward(&1.0f64, &f64::NAN));
    }
}
