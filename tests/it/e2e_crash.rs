//! Crash safety: while a load runs, sluice is killed with SIGKILL at random
//! moments (and aborted by the failpoint between the sink write and the
//! checkpoint) at least 20 times and restarted; at the end ClickHouse equals
//! PostgreSQL row for row.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::e2e::*;
use crate::support::*;
use rand::Rng;

const KILLS: usize = 22;

const ACCOUNTS_PG: &str = "SELECT id::text, balance::text, note, md5(body) FROM accounts";
const EVENTS_PG: &str = "SELECT id::text, account::text, amount::text FROM events";

fn accounts_ch(db: &str) -> String {
    format!("SELECT toString(id), toString(balance), note, lower(hex(MD5(body))) FROM `{db}`.accounts FINAL WHERE _is_deleted = 0")
}

fn events_ch(db: &str) -> String {
    format!("SELECT toString(id), toString(account), toString(amount) FROM `{db}`.events FINAL WHERE _is_deleted = 0")
}

/// Random transactions until `stop`: inserts, updates (some leaving a
/// TOASTed value unchanged, some moving the key), deletes.
async fn load(url: String, stop: Arc<AtomicBool>, txns: Arc<AtomicU64>) {
    let client = connect(&url).await;
    let mut next_account = 1000;
    while !stop.load(Ordering::Relaxed) {
        let (a, b, kind, n) = {
            let mut r = rand::thread_rng();
            (
                r.gen_range(1..200),
                r.gen_range(1..200),
                r.gen_range(0..10),
                r.gen_range(1..40),
            )
        };
        let sql = match kind {
            0..=3 => format!(
                "BEGIN; INSERT INTO events (account, amount) SELECT {a}, g FROM generate_series(1, {n}) g;
                 UPDATE accounts SET balance = balance + {n} WHERE id = {a}; COMMIT;"
            ),
            4 | 5 => format!("UPDATE accounts SET note = 'n' || {n} WHERE id IN ({a}, {b})"),
            6 => format!("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE account = {a} LIMIT {n})"),
            7 => {
                next_account += 1;
                format!(
                    "BEGIN; UPDATE accounts SET id = {next_account} WHERE id = (SELECT min(id) FROM accounts WHERE id > {a});
                     INSERT INTO accounts VALUES (500000 + {next_account} * 1000 + {a}, 0, 'new', 'b'); COMMIT;"
                )
            }
            8 => format!(
                "UPDATE accounts SET body = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 200)) WHERE id = {a}"
            ),
            _ => format!("BEGIN; DELETE FROM accounts WHERE id = {b}; INSERT INTO accounts VALUES ({b}, 0, 'again', 'x') ON CONFLICT DO NOTHING; COMMIT;"),
        };
        if let Err(e) = client.batch_execute(&sql).await {
            // A rolled-back transaction must leave no trace either; go on.
            let _ = client.batch_execute("ROLLBACK").await;
            eprintln!(
                "load: {}",
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string())
            );
        }
        txns.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_ends_equal_row_for_row() {
    let db = fresh_db("crash").await;
    db.client
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance int8 NOT NULL, note text, body text);
             CREATE TABLE events (id bigserial PRIMARY KEY, account int, amount int8);",
        )
        .await
        .unwrap();
    let mut p = TestPipeline::new(&db.url, &["public.accounts", "public.events"], "");
    // The slot exists from the first start on; rows before it are not replicated.
    let mut first = p.spawn(&[]);
    wait_for_slot(&db.client, &p.name).await;
    db.client
        .batch_execute(
            "INSERT INTO accounts SELECT g, 0, 'start', CASE WHEN g % 5 = 0
                THEN (SELECT string_agg(md5(random()::text || x), '') FROM generate_series(1, 200) x) ELSE 'small' END
             FROM generate_series(1, 200) g",
        )
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(db.url.clone(), stop.clone(), txns.clone()));

    let _ = first.kill();
    let _ = first.wait();
    let kills = KILLS;
    // Some runs abort by the failpoint, between sink write and checkpoint.
    let failpoint_aborts = p.kill_or_abort_repeatedly(kills - 1, 200..2500, 0.3).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();

    let mut last = p.spawn(&[]);
    let accounts = wait_equal(
        &p,
        &db.client,
        ACCOUNTS_PG,
        &accounts_ch(&p.ch_db),
        Duration::from_secs(120),
    )
    .await;
    let events = wait_equal(
        &p,
        &db.client,
        EVENTS_PG,
        &events_ch(&p.ch_db),
        Duration::from_secs(120),
    )
    .await;
    println!(
        "crash test: {kills} kills ({failpoint_aborts} by the failpoint between sink write and checkpoint), \
         {} load transactions; equal: {} accounts, {} events",
        txns.load(Ordering::Relaxed),
        accounts.len(),
        events.len()
    );
    assert!(kills >= 20);
    assert!(!events.is_empty());
    p.terminate_ok(&mut last, Duration::from_secs(30));
}
