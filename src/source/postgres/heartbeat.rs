//! The heartbeat: a transactional logical message every few seconds, so
//! that the stream sees a commit (with its time) even when the published
//! tables are idle. Lag in seconds stays exact and the slot advances. The
//! message is consumed by the session and never reaches a sink.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::catalog;
use crate::config::PgConnInfo;
use crate::metrics as m;

/// The prefix of sluice's heartbeat messages.
pub const HEARTBEAT_PREFIX: &str = "sluice_heartbeat";

/// Emits a heartbeat every `every` until `stop`. Failures are logged (once
/// per outage) and retried at the next beat: a heartbeat is never worth
/// stopping replication for.
pub async fn run(conn: PgConnInfo, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if client.is_none() {
            client = catalog::connect(&conn).await.ok();
        }
        let Some(c) = &client else { continue };
        let sql = format!("SELECT pg_logical_emit_message(true, '{HEARTBEAT_PREFIX}', '')");
        match c.simple_query(&sql).await {
            Ok(_) => {
                failing = false;
                metrics::counter!(m::HEARTBEATS).increment(1);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "heartbeat failed (lag in seconds may read high while the tables are idle); retrying");
                }
                failing = true;
                client = None;
            }
        }
    }
}
