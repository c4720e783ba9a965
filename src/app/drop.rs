//! `sluice drop`: removes a pipeline's server-side objects and its state.

use crate::config::Config;
use crate::source::postgres::{catalog, SourceError};
use crate::state::sidecar;

/// Drops the slot, the publication (unless kept) and the state database.
/// Returns one line per action for the user.
pub async fn drop_pipeline(
    config: &Config,
    keep_publication: bool,
) -> Result<Vec<String>, SourceError> {
    let Some(pg) = config.source.postgres() else {
        return Err(SourceError::Unsupported(
            "a polled source has no slot or publication to drop".into(),
        ));
    };
    let client = catalog::connect(&pg.conn).await?;
    let mut lines = Vec::new();
    if catalog::drop_slot(&client, &pg.slot).await? {
        lines.push(format!("dropped replication slot \"{}\"", pg.slot));
    } else {
        lines.push(format!("replication slot \"{}\" did not exist", pg.slot));
    }
    if !keep_publication {
        if catalog::drop_publication(&client, &pg.publication).await? {
            lines.push(format!("dropped publication \"{}\"", pg.publication));
        } else {
            lines.push(format!("publication \"{}\" did not exist", pg.publication));
        }
    }
    let path = config.pipeline.checkpoint_path();
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
        lines.push(format!("removed checkpoint database {}", path.display()));
    }
    let _ = std::fs::remove_file(sidecar::path(&path));
    // The partitions recorded at copy time (beside the spill directory).
    let _ = std::fs::remove_file(crate::source::postgres::partitions::file_for(
        &path.with_extension("spill"),
    ));
    Ok(lines)
}
