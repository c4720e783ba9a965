//! The pipeline's error: a layer's typed error, kept typed until classified.

use crate::core::{Classify, ErrorClass};
use crate::sink::SinkError;
use crate::source::SourceError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] StateError),
    /// A task of the pipeline ended abnormally (a bug).
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unsupported(String),
}

impl Classify for PipelineError {
    fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Source(e) => e.class(),
            PipelineError::Sink(e) => e.class(),
            PipelineError::State(e) => e.class(),
            PipelineError::Internal(_) | PipelineError::Unsupported(_) => ErrorClass::Fatal,
        }
    }
}
