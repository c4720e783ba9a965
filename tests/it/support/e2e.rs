//! End-to-end helpers: a pipeline config per test, the sluice process, and
//! row-for-row comparison of PostgreSQL and ClickHouse.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{servers, unique_name, write_config};

/// One test pipeline: config file, names, and where its logs go.
pub struct TestPipeline {
    pub name: String,
    pub config: PathBuf,
    pub dir: PathBuf,
    /// The ClickHouse database it writes into.
    pub ch_db: String,
    pub clickhouse_url: String,
    /// Query ClickHouse with the pipeline's own settings (user, password,
    /// TLS CA) through sluice's client, for servers that demand them.
    pub ch_from_config: bool,
    runs: u32,
    /// `sluice run` processes started, killed if still running when the
    /// test ends (a failed assertion must not leave one behind).
    pids: Vec<u32>,
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        let config = self.config.to_string_lossy().into_owned();
        for pid in &self.pids {
            // Only a process still running this pipeline (the pid may be reused).
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(&config) {
                continue;
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The `[source.postgres]` section of a test pipeline over `tables`.
fn pg_source(pg_url: &str, tables: &[&str]) -> impl Fn(&str) -> String {
    let pg_url = pg_url.to_owned();
    let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    move |name| {
        format!(
            "[source.postgres]\nurl = \"{pg_url}\"\nslot = \"{name}\"\npublication = \"{name}\"\ntables = [{}]\nstatus_interval = \"1s\"\n",
            tables.join(", ")
        )
    }
}

fn clickhouse_sink(ch_url: &str, name: &str, sink_extra: &str) -> String {
    format!("[sink.clickhouse]\nurl = \"{ch_url}\"\ndatabase = \"{name}\"\n{sink_extra}\n")
}

impl TestPipeline {
    /// `extra` is appended to the config (e.g. `[sink.clickhouse]` options
    /// must go through `sink_extra`).
    pub fn new(pg_url: &str, tables: &[&str], sink_extra: &str) -> TestPipeline {
        Self::with_clickhouse(pg_url, tables, sink_extra, &servers().clickhouse_url)
    }

    pub fn with_clickhouse(
        pg_url: &str,
        tables: &[&str],
        sink_extra: &str,
        ch_url: &str,
    ) -> TestPipeline {
        let mut p = Self::with_parts(&pg_source(pg_url, tables), &|name| {
            clickhouse_sink(ch_url, name, sink_extra)
        });
        p.clickhouse_url = ch_url.to_owned();
        p
    }

    /// A pipeline into the test Kafka broker, topics `<name>.<schema>.<table>`.
    pub fn with_kafka(pg_url: &str, tables: &[&str], sink_extra: &str) -> TestPipeline {
        Self::with_kafka_brokers(pg_url, tables, sink_extra, &servers().kafka_brokers)
    }

    pub fn with_kafka_brokers(
        pg_url: &str,
        tables: &[&str],
        sink_extra: &str,
        brokers: &str,
    ) -> TestPipeline {
        Self::with_sink(pg_url, tables, &|name| {
            format!(
                "[sink.kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{name}\"\n{sink_extra}\n"
            )
        })
    }

    /// `sink(name)` is the config's `[sink.*]` section.
    pub fn with_sink(pg_url: &str, tables: &[&str], sink: &dyn Fn(&str) -> String) -> TestPipeline {
        Self::with_parts(&pg_source(pg_url, tables), sink)
    }

    /// A pipeline whose `[source...]` section `source(name)` writes (e.g. a
    /// polled source), into ClickHouse at `ch_url`.
    pub fn with_source(
        source: impl Fn(&str) -> String,
        sink_extra: &str,
        ch_url: &str,
    ) -> TestPipeline {
        let mut p = Self::with_parts(&source, &|name| clickhouse_sink(ch_url, name, sink_extra));
        p.clickhouse_url = ch_url.to_owned();
        p
    }

    /// `source(name)` and `sink(name)` write the config's `[source.*]` and
    /// `[sink.*]` sections for the pipeline called `name`.
    pub fn with_parts(
        source: &dyn Fn(&str) -> String,
        sink: &dyn Fn(&str) -> String,
    ) -> TestPipeline {
        let name = unique_name("e2e");
        let dir = std::env::temp_dir().join(&name);
        let body = format!(
            r#"
[pipeline]
name = "{name}"
checkpoint_dir = "{dir}"

{source}
[batch]
max_rows = 2000
max_bytes = "8MiB"
max_delay = "200ms"

{sink}
"#,
            dir = dir.display(),
            source = source(&name),
            sink = sink(&name),
        );
        let config = write_config(&dir, &name, &body);
        TestPipeline {
            ch_db: name.clone(),
            name,
            config,
            dir,
            clickhouse_url: String::new(),
            ch_from_config: false,
            runs: 0,
            pids: Vec::new(),
        }
    }

    /// The topic of `table` ("schema.table") under the default naming.
    pub fn topic(&self, table: &str) -> String {
        format!("{}.{table}", self.name)
    }

    /// Replaces `from` by `to` in the config file (e.g. a `[batch]` value).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "the config has no {from:?}");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// Starts `sluice run`; its log goes to `<dir>/run-N.log`.
    pub fn spawn(&mut self, env: &[(&str, &str)]) -> Child {
        self.runs += 1;
        let log = std::fs::File::create(self.dir.join(format!("run-{}.log", self.runs))).unwrap();
        let mut cmd = Command::new(super::sluice_bin());
        cmd.args(["run", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", "info,sluice=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start sluice run");
        self.pids.push(child.id());
        child
    }

    /// `kills` times: starts `sluice run`, lets it work for a random time
    /// in `wait_ms`, then kill -9s it. Fails if it exits on its own.
    pub async fn kill_repeatedly(&mut self, kills: usize, wait_ms: std::ops::Range<u64>) {
        self.kill_or_abort_repeatedly(kills, wait_ms, 0.0).await;
    }

    /// Like [`TestPipeline::kill_repeatedly`], but a run is started with
    /// probability `failpoint` with `SLUICE_CRASH_AFTER_SINK_WRITE` set (it
    /// aborts between a sink write and its checkpoint). Returns how many
    /// runs ended by the failpoint.
    pub async fn kill_or_abort_repeatedly(
        &mut self,
        kills: usize,
        wait_ms: std::ops::Range<u64>,
        failpoint: f64,
    ) -> usize {
        use rand::Rng;
        let mut aborts = 0;
        for _ in 0..kills {
            let (wait, use_failpoint, nth) = {
                let mut r = rand::thread_rng();
                (
                    r.gen_range(wait_ms.clone()),
                    r.gen_bool(failpoint),
                    r.gen_range(1..4).to_string(),
                )
            };
            let env: Vec<(&str, &str)> = if use_failpoint {
                vec![("SLUICE_CRASH_AFTER_SINK_WRITE", nth.as_str())]
            } else {
                Vec::new()
            };
            let mut child = self.spawn(&env);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match child.try_wait().unwrap() {
                Some(status) if use_failpoint && !status.success() => aborts += 1,
                Some(status) => panic!(
                    "sluice exited on its own: {status}\n{}",
                    tail(&self.last_log(), 40)
                ),
                None => child.kill().unwrap(),
            }
            let _ = child.wait();
        }
        aborts
    }

    pub fn log(&self, run: u32) -> String {
        std::fs::read_to_string(self.dir.join(format!("run-{run}.log"))).unwrap_or_default()
    }

    pub fn last_log(&self) -> String {
        self.log(self.runs)
    }

    /// Stops the latest run with SIGTERM; it must exit cleanly within
    /// `timeout` (the panic shows the end of its log).
    pub fn terminate_ok(&self, child: &mut Child, timeout: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sluice did not stop within {timeout:?} after SIGTERM\n{}",
                    tail(&self.last_log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "sluice exited with {status} after SIGTERM\n{}",
            tail(&self.last_log(), 60)
        );
    }

    /// Runs a ClickHouse query against this pipeline's server (TSV out).
    pub async fn ch(&self, sql: &str) -> Result<String, String> {
        let client = if self.ch_from_config {
            let config = sluice::load_config(&self.config).map_err(|e| e.to_string())?;
            let sluice::config::SinkConfig::ClickHouse(ch) = &config.sink else {
                return Err("the pipeline's sink is not ClickHouse".into());
            };
            sluice::sink::clickhouse::client(ch).map_err(|e| e.to_string())?
        } else {
            clickhouse::Client::default()
                .with_url(&self.clickhouse_url)
                .with_compression(clickhouse::Compression::None)
        };
        let mut cursor = client
            .query(sql)
            .fetch_bytes("TabSeparated")
            .map_err(|e| e.to_string())?;
        let bytes = cursor.collect().await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// `sluice ARGS -c CONFIG` with `env` set: (success, stdout + stderr).
pub fn sluice_output(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(super::sluice_bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("run sluice");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

impl TestPipeline {
    /// Runs `sluice run` (with `env`) until it exits by itself (a fatal
    /// error), at most `limit`; returns its log.
    pub fn run_until_exit(&mut self, env: &[(&str, &str)], limit: Duration) -> String {
        let mut child = self.spawn(env);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    !status.success(),
                    "sluice run succeeded: {}",
                    self.last_log()
                );
                return self.last_log();
            }
            if start.elapsed() > limit {
                terminate(&mut child, Duration::from_secs(20));
                panic!(
                    "sluice run kept retrying a fatal error for {limit:?}:\n{}",
                    tail(&self.last_log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Sends SIGTERM (graceful shutdown) and waits for exit.
pub fn terminate(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("sluice did not stop within {timeout:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rows as TSV lines from PostgreSQL (NULL as \N), for comparison.
pub async fn pg_tsv(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "\\N".into())
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect()
}

pub fn tsv_lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// Waits until ClickHouse returns the same rows as PostgreSQL, then returns
/// them; on timeout panics with the first differences.
pub async fn wait_equal(
    p: &TestPipeline,
    pg: &tokio_postgres::Client,
    pg_sql: &str,
    ch_sql: &str,
    timeout: Duration,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        // Sorted on both sides: the two servers order text and numbers differently.
        let mut expected = pg_tsv(pg, pg_sql).await;
        expected.sort();
        let actual = p.ch(ch_sql).await.map(|t| {
            let mut lines = tsv_lines(&t);
            lines.sort();
            lines
        });
        match actual {
            Ok(a) if a == expected => return a,
            other if start.elapsed() > timeout => {
                let a = other.unwrap_or_else(|e| vec![format!("error: {e}")]);
                let diff: Vec<String> = expected
                    .iter()
                    .zip(a.iter().chain(std::iter::repeat(&String::new())))
                    .filter(|(e, a)| e != a)
                    .take(5)
                    .map(|(e, a)| format!("  postgres:   {e}\n  clickhouse: {a}"))
                    .collect();
                panic!(
                    "ClickHouse did not catch up in {timeout:?}: {} rows in PostgreSQL, {} in ClickHouse; first differences:\n{}\nlast sluice log:\n{}",
                    expected.len(),
                    a.len(),
                    diff.join("\n"),
                    tail(&p.last_log(), 30)
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until a replication slot of this name is active (sluice started).
pub async fn wait_for_slot(client: &tokio_postgres::Client, slot: &str) {
    super::wait_for(
        "sluice to create its slot",
        Duration::from_secs(60),
        || async {
            client
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                    &[&slot],
                )
                .await
                .unwrap()
                .map(|_| ())
        },
    )
    .await;
}
