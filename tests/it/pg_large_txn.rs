//! A 2-million-row transaction streams through with bounded memory: the
//! server streams it in chunks, sluice holds it on disk until it commits,
//! then replays it into bounded micro-batches.

use std::time::{Duration, Instant};

use crate::support::*;

/// Peak resident set (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_million_row_transaction_streams_with_bounded_memory() {
    const ROWS: u64 = 2_000_000;
    let db = fresh_db("bigtxn").await;
    db.client
        .batch_execute("CREATE TABLE big (id int8 PRIMARY KEY, amount numeric(12,2), note text, at timestamptz)")
        .await
        .unwrap();
    let name = unique_name("bigtxn");
    let dir = std::env::temp_dir().join(&name);
    let cfg = write_config(
        &dir,
        &name,
        &format!(
            r#"
[pipeline]
name = "{name}"
checkpoint_dir = "{dir}"
[source.postgres]
url = "{url}"
slot = "{name}"
publication = "{name}"
tables = ["public.big"]
[batch]
max_rows = 50000
max_bytes = "32MiB"
max_delay = "1s"
[sink.clickhouse]
url = "{ch}"
"#,
            dir = dir.display(),
            url = db.url,
            ch = servers().clickhouse_url
        ),
    );
    // `tail` prints every change; count lines instead of keeping them.
    let mut child = std::process::Command::new(sluice_bin())
        .args(["tail", "-c"])
        .arg(&cfg)
        .args(["--limit", &ROWS.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sluice tail");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut n = 0u64;
        for line in std::io::BufReader::new(stdout).lines() {
            if line.is_err() {
                break;
            }
            n += 1;
        }
        n
    });
    // Give tail time to create the slot before the transaction starts.
    crate::support::e2e::wait_for_slot(&db.client, &name).await;
    let started = Instant::now();
    db.client
        .batch_execute(&format!(
            "INSERT INTO big SELECT g, g * 1.25, 'row ' || g, now() FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
    let mut peak = 0;
    let status = loop {
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "tail did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines = counter.join().unwrap();
    println!(
        "2M-row transaction: {lines} changes in {:.1} s, peak RSS {:.1} MB",
        started.elapsed().as_secs_f64(),
        peak as f64 / 1e6
    );
    assert!(status.success(), "tail failed: {status}");
    assert_eq!(lines, ROWS);
    assert!(
        peak < 300 << 20,
        "peak RSS {} MB is over 300 MB",
        peak >> 20
    );
}
