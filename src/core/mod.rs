//! The shared model every layer speaks: changes as Arrow batches with
//! metadata columns, source-neutral column descriptions, opaque positions,
//! and the one error classification. Depends on nothing but `config`'s
//! value types; sources, sinks, the state store and the pipeline build on it.

pub mod change;
pub mod error;
pub mod files;
pub mod health;
pub mod json;
pub mod logical;
pub mod meta;
pub mod position;
pub mod text;

pub use change::{AddedDefault, ColumnInfo, Flush, SinkItem, TableBatch, TableShape, TruncateMeta};
pub use error::{Classify, ErrorClass};
pub use logical::LogicalType;
pub use position::{Position, SourceIdentity};
