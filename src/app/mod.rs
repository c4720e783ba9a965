//! The commands (`run`, `snapshot`, `resync`, `check`, `status`, `tail`, `drop`): each builds the
//! concrete source, sink and state store the config names and hands them to
//! the layers below. The only place that knows every concrete type.

pub mod allocator;
pub mod check;
pub mod cli;
pub mod drop;
pub mod http;
pub mod monitor;
pub mod progress;
pub mod requests;
pub mod resync;
pub mod run;
pub mod status;
pub mod tail;

pub use run::{run, snapshot};
