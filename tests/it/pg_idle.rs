//! An idle slot must not pin WAL: with no changes for our tables for 30 s
//! while another database generates WAL, confirmed_flush_lsn advances.

use std::time::{Duration, Instant};

use crate::support::source::*;
use crate::support::*;
use sluice::source::postgres::catalog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slot_advances_while_other_databases_write() {
    let db = fresh_db("idle").await;
    db.client
        .batch_execute("CREATE TABLE quiet (id int PRIMARY KEY)")
        .await
        .unwrap();
    let cfg = source_config(&db.url, &["public.quiet"]);
    let mut src = start_source(&cfg, small_batches(), true, Vec::new()).await;
    let catalog_client = catalog::connect(&cfg.conn).await.unwrap();
    let initial = wait_for(
        "the slot to report a position",
        Duration::from_secs(30),
        || async {
            catalog::slot(&catalog_client, &cfg.slot)
                .await
                .unwrap()
                .and_then(|s| s.confirmed_flush_lsn)
        },
    )
    .await;

    // Another database keeps writing WAL; our table stays untouched.
    let other = fresh_db("idle_other").await;
    other
        .client
        .batch_execute("CREATE TABLE noise (id serial PRIMARY KEY, pad text)")
        .await
        .unwrap();
    let started = Instant::now();
    let mut acked = 0;
    while started.elapsed() < Duration::from_secs(30) {
        other
            .client
            .batch_execute(
                "INSERT INTO noise (pad) SELECT repeat('n', 500) FROM generate_series(1, 200)",
            )
            .await
            .unwrap();
        // Act as the sink: acknowledge what the source asks to checkpoint.
        while let Ok(flush) = src.flushes.try_recv() {
            assert_eq!(flush.rows(), 0, "nothing of ours changed");
            if let Some(c) = flush.position {
                let _ = src.acks.send(c);
                acked += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        while let Ok(flush) = src.flushes.try_recv() {
            if let Some(c) = flush.position {
                let _ = src.acks.send(c);
            }
        }
        let now = catalog::slot(&catalog_client, &cfg.slot)
            .await
            .unwrap()
            .and_then(|s| s.confirmed_flush_lsn)
            .unwrap_or(initial);
        if now > initial {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn stayed at {initial}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let current = catalog::current_wal_lsn(&catalog_client).await.unwrap();
    println!(
        "idle slot: confirmed {initial} -> {after} (server at {current}), {acked} idle checkpoints"
    );
    assert!(after > initial);
    // Not stuck at the start: within the last ~10 MB of WAL written meanwhile.
    assert!(
        current.0 - after.0 < (current.0 - initial.0) / 2,
        "slot lags: {after} vs {current}"
    );
    src.stop.cancel();
    let _ = src.task.await;
}
