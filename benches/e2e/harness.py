#!/usr/bin/env python3
"""sluice end-to-end benchmark: PostgreSQL -> ClickHouse, against peers, in one run.

Measures (see docs/benchmarks.md for the method):
  snapshot   COPY (FORMAT binary) drained (the emit limit), ClickHouse's
             postgresql() table function, sluice's initial snapshot
  streaming  a backlog of N changes drained by pg_recvlogical (the decode
             limit), by `sluice run`, by ClickHouse MaterializedPostgreSQL
  latency    commit -> visible in ClickHouse at a fixed rate, sluice and
             MaterializedPostgreSQL
and writes a JSON report. Python 3 stdlib only. Every measurement that fails
is recorded with its error; the harness goes on.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DB = "sluice_bench"
PUB = "sluice_bench_pub"

# rows of the pgbench-style table, rows of the mixed table, streaming
# changes, latency rate (changes/s) and duration (s)
SIZES = {
    "smoke": dict(accounts=20_000, mixed=5_000, changes=4_000, rate=100, seconds=5),
    "small": dict(accounts=5_000_000, mixed=1_000_000, changes=1_000_000, rate=200, seconds=20),
    "medium": dict(accounts=20_000_000, mixed=4_000_000, changes=4_000_000, rate=500, seconds=30),
    "large": dict(accounts=100_000_000, mixed=20_000_000, changes=10_000_000, rate=1000, seconds=60),
}

CATCH_UP_TIMEOUT = 900  # s, per drain


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


class Pg:
    def __init__(self, port, bindir):
        self.port = port
        self.bindir = bindir

    def tool(self, name):
        p = os.path.join(self.bindir, name)
        return p if os.path.exists(p) else name

    def psql(self, sql, db=DB, user="postgres"):
        r = run([self.tool("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db,
                 "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        return r.stdout.strip()

    def script(self, sql, db=DB):
        run([self.tool("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
             "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=sql)

    def url(self, db=DB):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"


class Ch:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def q(self, sql, timeout=3600, **settings):
        params = urllib.parse.urlencode(settings)
        req = urllib.request.Request(f"{self.url}/?{params}", data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"ClickHouse: {e.read().decode().strip()[:500]}") from None

    def scalar(self, sql):
        return self.q(sql).strip()


def rss_peak_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Harness:
    def __init__(self, args):
        self.args = args
        self.size_name = args.size
        if args.size in SIZES:
            self.size = dict(SIZES[args.size])
        else:
            n = int(args.size)
            self.size = dict(accounts=n, mixed=max(n // 5, 1), changes=max(n // 10, 10),
                             rate=200, seconds=20)
            self.size_name = f"rows={n}"
        self.work = tempfile.mkdtemp(prefix="sluice-bench-")
        os.chmod(self.work, 0o755)
        self.procs = []
        self.report = {
            "tool": "sluice e2e bench",
            "size": self.size_name,
            "parameters": self.size,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {},
            "versions": {},
            "servers": {},
            "measurements": [],
            "ratios": [],
            "errors": [],
        }
        self.copy_bytes = {}

    # ---------------------------------------------------------------- setup
    def machine(self):
        m = {"nproc": os.cpu_count(), "platform": platform.platform()}
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        m["cpu"] = line.split(":", 1)[1].strip()
                        break
            with open("/proc/meminfo") as f:
                m["mem_total_kib"] = int(f.readline().split()[1])
        except OSError:
            pass
        self.report["machine"] = m

    def start_servers(self):
        a = self.args
        bindir = os.environ.get("SLUICE_PG_BIN", "/usr/lib/postgresql/15/bin")
        if a.reuse_services:
            env = {}
            envfile = os.environ.get("SLUICE_SERVICES_DIR", "/tmp/sluice-services") + "/env"
            with open(envfile) as f:
                for line in f:
                    if line.startswith("export "):
                        k, v = line[7:].strip().split("=", 1)
                        env[k] = v
            pg_url = urllib.parse.urlparse(env["SLUICE_TEST_PG_URL"])
            self.pg = Pg(pg_url.port, bindir)
            self.ch = Ch(env["SLUICE_TEST_CLICKHOUSE_URL"])
            self.report["servers"]["mode"] = "shared (scripts/services.sh)"
        else:
            pg_port, ch_port = free_port(), free_port()
            pgdir = os.path.join(self.work, "pg")
            run(["bash", os.path.join(ROOT, "scripts/pg-instance.sh"), "start", pgdir, str(pg_port)])
            self.pgdir = pgdir
            self.pg = Pg(pg_port, bindir)
            chlog = open(os.path.join(self.work, "chdb_http.log"), "w")
            p = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts/chdb_http.py"), "--port",
                                  str(ch_port), "--data", os.path.join(self.work, "ch")],
                                 stdout=chlog, stderr=chlog)
            self.chdb_proc = p
            self.ch = Ch(f"http://127.0.0.1:{ch_port}")
            for _ in range(120):
                try:
                    if self.ch.q("SELECT 1", timeout=2).strip() == "1":
                        break
                except Exception:
                    time.sleep(0.5)
            else:
                raise RuntimeError("chdb_http.py did not come up")
            self.report["servers"]["mode"] = "private instances started by the harness"
        self.report["servers"].update(pg_port=self.pg.port, clickhouse=self.ch.url)
        v = self.report["versions"]
        v["postgresql"] = self.pg.psql("SHOW server_version", db="postgres")
        v["clickhouse"] = self.ch.scalar("SELECT version()")
        v["pg_recvlogical"] = run([self.pg.tool("pg_recvlogical"), "--version"]).stdout.strip()
        v["python"] = platform.python_version()
        try:
            v["sluice"] = run([self.sluice, "--version"]).stdout.strip()
        except Exception as e:  # noqa: BLE001
            v["sluice"] = f"unavailable: {e}"
        try:
            v["sluice_git"] = run(["git", "-C", ROOT, "describe", "--always", "--dirty"]).stdout.strip()
        except Exception:  # noqa: BLE001
            pass

    def build(self):
        if self.args.sluice:
            self.sluice = self.args.sluice
            return
        log("building sluice (release)")
        env = dict(os.environ)
        r = run(["cargo", "build", "--release", "--bin", "sluice", "--message-format=short"],
                cwd=ROOT, env=env, check=False)
        target = env.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        self.sluice = os.path.join(target, "release", "sluice")
        if r.returncode != 0:
            self.report["errors"].append({"phase": "build", "error": r.stderr[-2000:]})

    def create_data(self):
        s = self.size
        log(f"creating data: {s['accounts']} accounts rows, {s['mixed']} mixed rows")
        self.pg.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
        self.pg.psql(f"CREATE DATABASE {DB}", db="postgres")
        # Roles: one per peer so a peer can be paused (NOLOGIN + terminate).
        self.pg.script("""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_mpg') THEN
                CREATE ROLE bench_mpg LOGIN REPLICATION SUPERUSER;
              END IF;
            END $$;
            ALTER ROLE bench_mpg LOGIN;
        """, db="postgres")
        t0 = time.monotonic()
        self.pg.script(f"""
            CREATE TABLE accounts (aid int8 PRIMARY KEY, bid int4 NOT NULL,
                                   abalance int4 NOT NULL, filler char(84));
            INSERT INTO accounts SELECT g, 1 + (g - 1) / 100000, 0, '' FROM generate_series(1, {s['accounts']}) g;
            CREATE TABLE mixed (id int8 PRIMARY KEY, i4 int4, i2 int2, f8 float8, amount numeric(18,4),
                                note text, created timestamptz, uid uuid, doc jsonb, flag bool);
            INSERT INTO mixed SELECT g, g % 100000, (g % 30000)::int2, g / 7.0, (g % 10000000) / 100.0,
                   'note ' || md5(g::text), '2024-01-01'::timestamptz + g * interval '1 second',
                   md5(g::text)::uuid, jsonb_build_object('k', g, 'tag', 't' || (g % 100)), g % 2 = 0
              FROM generate_series(1, {s['mixed']}) g;
            VACUUM ANALYZE accounts; VACUUM ANALYZE mixed;
            CREATE TABLE stream_accounts (LIKE accounts INCLUDING ALL);
            CREATE TABLE stream_mixed (LIKE mixed INCLUDING ALL);
            CREATE TABLE lat (id int8 PRIMARY KEY, committed_at timestamptz NOT NULL, payload text);
            CREATE PUBLICATION {PUB} FOR TABLE stream_accounts, stream_mixed, lat;
        """)
        log(f"data created in {time.monotonic() - t0:.1f} s")

    # ------------------------------------------------------------ recording
    def record(self, **m):
        m.setdefault("status", "ok")
        if m.get("rows") and m.get("seconds"):
            m["rows_per_s"] = round(m["rows"] / m["seconds"], 1)
            if m.get("bytes"):
                m["mb_per_s"] = round(m["bytes"] / m["seconds"] / 1e6, 2)
        self.report["measurements"].append(m)
        log("measured", json.dumps(m))
        return m

    def attempt(self, phase, system, table, fn, **extra):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            msg = str(e)
            if isinstance(e, subprocess.CalledProcessError):
                msg = f"{e.cmd[0]} exited {e.returncode}: {(e.stderr or '')[-1500:]}"
            log(f"FAILED {phase}/{system}/{table}: {msg}")
            return self.record(phase=phase, system=system, table=table, status="error", error=msg, **extra)

    # ------------------------------------------------------------- snapshot
    def snapshot(self):
        for table, rows in (("accounts", self.size["accounts"]), ("mixed", self.size["mixed"])):
            self.attempt("snapshot", "copy_binary_devnull", table, lambda: self.snap_copy(table, rows))
            self.attempt("snapshot", "clickhouse_postgresql_fn", table, lambda: self.snap_pgfn(table, rows))
            self.attempt("snapshot", "sluice", table, lambda: self.snap_sluice(table, rows))

    def snap_sluice(self, table, rows):
        """`sluice run` on a fresh slot: its initial snapshot (COPY binary ->
        Arrow -> ClickHouse ArrowStream), timed from start until every row is
        in ClickHouse."""
        ch_db = f"bench_snap_{table}"
        self.ch.q(f"DROP DATABASE IF EXISTS {ch_db}")
        cfg = self.sluice_config(f"bench_snap_{table}", f"bench_snap_{table}", [table], ch_db, "1s",
                                 snapshot=True)
        t0 = time.monotonic()
        p = self.start_sluice(cfg, f"snap-{table}")
        peaks = []
        try:
            while True:
                if p.poll() is not None:
                    raise RuntimeError(f"sluice exited {p.returncode}: {self.log_tail(f'snap-{table}')}")
                v = rss_peak_kib(p.pid)
                if v:
                    peaks.append(v)
                try:
                    if int(self.ch.scalar(f"SELECT count() FROM {ch_db}.{table}")) >= rows:
                        break
                except Exception:  # noqa: BLE001
                    pass
                if time.monotonic() - t0 > CATCH_UP_TIMEOUT:
                    raise RuntimeError(f"snapshot not done after {CATCH_UP_TIMEOUT} s: "
                                       f"{self.log_tail(f'snap-{table}')}")
                time.sleep(0.1)
            dt = time.monotonic() - t0
        finally:
            self.stop(p)
            self.pg.psql(f"SELECT pg_drop_replication_slot('bench_snap_{table}')")
        self.ch.q(f"DROP DATABASE IF EXISTS {ch_db}")
        return self.record(phase="snapshot", system="sluice", table=table, rows=rows, seconds=round(dt, 3),
                           bytes=self.copy_bytes.get(table), peak_rss_kib=max(peaks) if peaks else None,
                           note="start of `sluice run` (new slot, initial snapshot) to every row in ClickHouse")

    def snap_copy(self, table, rows):
        # psql drains COPY ... TO STDOUT (FORMAT binary); wc -c counts the bytes.
        cmd = (f"{self.pg.tool('psql')} -h 127.0.0.1 -p {self.pg.port} -U postgres -d {DB} -X -Atq "
               f"-c 'COPY {table} TO STDOUT (FORMAT binary)' | wc -c")
        t0 = time.monotonic()
        r = run(["bash", "-o", "pipefail", "-c", cmd])
        dt = time.monotonic() - t0
        nbytes = int(r.stdout.strip())
        self.copy_bytes[table] = nbytes
        return self.record(phase="snapshot", system="copy_binary_devnull", table=table, rows=rows,
                           seconds=round(dt, 3), bytes=nbytes)

    def snap_pgfn(self, table, rows):
        self.ch.q("CREATE DATABASE IF NOT EXISTS bench_pgfn")
        self.ch.q(f"DROP TABLE IF EXISTS bench_pgfn.{table}")
        key = "aid" if table == "accounts" else "id"
        self.ch.q(f"CREATE TABLE bench_pgfn.{table} ENGINE = MergeTree ORDER BY {key} AS "
                  f"SELECT * FROM postgresql('127.0.0.1:{self.pg.port}', '{DB}', '{table}', 'postgres', '') "
                  "LIMIT 0")
        t0 = time.monotonic()
        self.ch.q(f"INSERT INTO bench_pgfn.{table} SELECT * FROM "
                  f"postgresql('127.0.0.1:{self.pg.port}', '{DB}', '{table}', 'postgres', '')")
        dt = time.monotonic() - t0
        got = int(self.ch.scalar(f"SELECT count() FROM bench_pgfn.{table}"))
        if got != rows:
            raise RuntimeError(f"postgresql(): {got} rows landed, expected {rows}")
        self.ch.q(f"DROP TABLE bench_pgfn.{table}")
        return self.record(phase="snapshot", system="clickhouse_postgresql_fn", table=table, rows=rows,
                           seconds=round(dt, 3), bytes=self.copy_bytes.get(table))

    # ------------------------------------------------------------ streaming
    def write_changes(self, n):
        """n row changes on stream_accounts / stream_mixed (half each):
        60% inserts, 30% updates, 10% deletes, in transactions of 100 rows."""
        per = n // 2
        ins, upd, dele = int(per * 0.6), int(per * 0.3), 0
        dele = per - ins - upd
        stmts = []
        step = 100
        for lo in range(1, ins + 1, step):
            hi = min(lo + step - 1, ins)
            stmts.append(f"INSERT INTO stream_accounts SELECT g, 1, 0, '' FROM generate_series({lo},{hi}) g;")
            stmts.append(
                "INSERT INTO stream_mixed SELECT g, g % 100000, (g % 30000)::int2, g / 7.0, "
                "(g % 10000000) / 100.0, 'note ' || md5(g::text), "
                "'2024-01-01'::timestamptz + g * interval '1 second', md5(g::text)::uuid, "
                f"jsonb_build_object('k', g, 'tag', 't' || (g % 100)), g % 2 = 0 FROM generate_series({lo},{hi}) g;")
        for lo in range(1, upd + 1, step):
            hi = min(lo + step - 1, upd)
            stmts.append(f"UPDATE stream_accounts SET abalance = abalance + 7 WHERE aid BETWEEN {lo} AND {hi};")
            stmts.append(f"UPDATE stream_mixed SET i4 = i4 + 7, note = note || 'u' WHERE id BETWEEN {lo} AND {hi};")
        for lo in range(ins - dele + 1, ins + 1, step):
            hi = min(lo + step - 1, ins)
            stmts.append(f"DELETE FROM stream_accounts WHERE aid BETWEEN {lo} AND {hi};")
            stmts.append(f"DELETE FROM stream_mixed WHERE id BETWEEN {lo} AND {hi};")
        t0 = time.monotonic()
        self.pg.script("\n".join(stmts))
        dt = time.monotonic() - t0
        return 2 * (ins + upd + dele), dt

    def pg_state(self):
        a = self.pg.psql("SELECT count(*), coalesce(sum(abalance), 0) FROM stream_accounts")
        m = self.pg.psql("SELECT count(*), coalesce(sum(i4), 0) FROM stream_mixed")
        return a.replace("|", "\t"), m.replace("|", "\t")

    def ch_state(self, db, final):
        f = " FINAL" if final else ""
        a = self.ch.scalar(f"SELECT count(), sum(abalance) FROM {db}.stream_accounts{f}")
        m = self.ch.scalar(f"SELECT count(), sum(i4) FROM {db}.stream_mixed{f}")
        return a, m

    def wait_caught_up(self, db, final, target, t0, proc=None, timeout=CATCH_UP_TIMEOUT):
        last_err = None
        while time.monotonic() - t0 < timeout:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before catching up; "
                                   f"last check: {last_err}")
            try:
                got = self.ch_state(db, final)
                if got == target:
                    return time.monotonic() - t0
                last_err = f"state {got}, want {target}"
            except Exception as e:  # noqa: BLE001
                last_err = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"not caught up after {timeout} s: {last_err}")

    def sluice_config(self, name, slot, tables, ch_db, max_delay, snapshot=False):
        path = os.path.join(self.work, f"{name}.toml")
        tl = ", ".join(f'"public.{t}"' for t in tables)
        with open(path, "w") as f:
            f.write(f"""[pipeline]
name = "{name}"
checkpoint_dir = "{self.work}/checkpoints"

[source.postgres]
url = "{self.pg.url()}"
slot = "{slot}"
publication = "{PUB}"
tables = [{tl}]
initial_snapshot = {"true" if snapshot else "false"}

[batch]
max_rows = 100000
max_bytes = "64MiB"
max_delay = "{max_delay}"

[sink.clickhouse]
url = "{self.ch.url}"
database = "{ch_db}"
user = "default"
""")
        return path

    def start_sluice(self, config, tag):
        logf = open(os.path.join(self.work, f"sluice-{tag}.log"), "w")
        p = subprocess.Popen([self.sluice, "run", "-c", config], stdout=logf, stderr=logf,
                             cwd=self.work)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log_tail(self, tag):
        try:
            with open(os.path.join(self.work, f"sluice-{tag}.log")) as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def pause_mpg(self):
        self.pg.psql("ALTER ROLE bench_mpg NOLOGIN", db="postgres")
        self.pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'bench_mpg'",
                     db="postgres")

    def resume_mpg(self):
        self.pg.psql("ALTER ROLE bench_mpg LOGIN", db="postgres")

    def create_mpg(self, ch_db, tables):
        self.ch.q(f"DROP DATABASE IF EXISTS {ch_db}")
        self.ch.q(f"CREATE DATABASE {ch_db} ENGINE = MaterializedPostgreSQL('127.0.0.1:{self.pg.port}', "
                  f"'{DB}', 'bench_mpg', '') SETTINGS materialized_postgresql_tables_list = '{','.join(tables)}', "
                  "materialized_postgresql_backoff_max_ms = 500",
                  allow_experimental_database_materialized_postgresql=1)

    def streaming(self):
        n = self.size["changes"]
        # Every consumer starts at the same point: slots exist before the writes.
        self.pg.psql("SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
        self.pg.psql("SELECT pg_create_logical_replication_slot('bench_sluice', 'pgoutput')")
        mpg_ok = True
        try:
            self.create_mpg("bench_mpg", ["stream_accounts", "stream_mixed"])
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:
                try:
                    self.ch.q("SELECT count() FROM bench_mpg.stream_accounts")
                    break
                except Exception:  # noqa: BLE001
                    time.sleep(0.5)
            self.pause_mpg()
        except Exception as e:  # noqa: BLE001
            mpg_ok = False
            self.record(phase="streaming", system="clickhouse_materialized_postgresql", table="both",
                        status="error", error=f"setup: {e}")
        log(f"writing {n} changes")
        changes, write_s = self.write_changes(n)
        target_lsn = self.pg.psql("SELECT pg_current_wal_lsn()")
        target = self.pg_state()
        # Let the writes' aftermath (dirty buffers) settle before the first drain.
        self.pg.psql("CHECKPOINT")
        self.report["streaming_workload"] = {
            "changes": changes, "write_seconds": round(write_s, 3), "target_lsn": target_lsn,
            "final_rows": {"stream_accounts": target[0], "stream_mixed": target[1]},
            "wal_bytes": int(self.pg.psql(
                "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots "
                "WHERE slot_name = 'bench_recv'")),
        }
        wal = self.report["streaming_workload"]["wal_bytes"]
        self.attempt("streaming", "pg_recvlogical", "both", lambda: self.drain_recvlogical(changes, target_lsn, wal))
        self.attempt("streaming", "sluice", "both", lambda: self.drain_sluice(changes, target, wal))
        if mpg_ok:
            self.attempt("streaming", "clickhouse_materialized_postgresql", "both",
                         lambda: self.drain_mpg(changes, target, wal))
        self.resume_mpg()
        self.ch.q("DROP DATABASE IF EXISTS bench_mpg")

    def drain_recvlogical(self, changes, target_lsn, wal):
        cmd = [self.pg.tool("pg_recvlogical"), "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres",
               "-d", DB, "--slot", "bench_recv", "--start", "-o", "proto_version=1",
               "-o", f"publication_names={PUB}", "-o", "binary=true", "-E", target_lsn, "-f", "/dev/null",
               "--no-loop"]
        t0 = time.monotonic()
        r = run(cmd, check=False, timeout=CATCH_UP_TIMEOUT)
        dt = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"pg_recvlogical exited {r.returncode}: {r.stderr[-1000:]}")
        return self.record(phase="streaming", system="pg_recvlogical", table="both", rows=changes,
                           seconds=round(dt, 3), bytes=wal,
                           note="decode limit: walsender decoding + pgoutput, output to /dev/null")

    def drain_sluice(self, changes, target, wal):
        self.ch.q("CREATE DATABASE IF NOT EXISTS bench_sluice")
        cfg = self.sluice_config("bench_stream", "bench_sluice", ["stream_accounts", "stream_mixed"],
                                 "bench_sluice", "1s")
        t0 = time.monotonic()
        p = self.start_sluice(cfg, "stream")
        peak = None
        try:
            stop_poll = threading.Event()
            peaks = []

            def poll():
                while not stop_poll.is_set():
                    v = rss_peak_kib(p.pid)
                    if v:
                        peaks.append(v)
                    time.sleep(0.2)
            th = threading.Thread(target=poll, daemon=True)
            th.start()
            try:
                dt = self.wait_caught_up("bench_sluice", True, target, t0, proc=p)
            finally:
                stop_poll.set()
                th.join()
                peak = max(peaks) if peaks else None
        except Exception as e:
            raise RuntimeError(f"{e}; sluice log tail: {self.log_tail('stream')}") from None
        finally:
            self.stop(p)
        return self.record(phase="streaming", system="sluice", table="both", rows=changes, seconds=round(dt, 3),
                           bytes=wal, peak_rss_kib=peak,
                           note="start of `sluice run` to ClickHouse FINAL state == PostgreSQL state")

    def drain_mpg(self, changes, target, wal):
        # Proof that the backlog was not consumed while paused.
        before = self.ch_state("bench_mpg", False)
        if before == target:
            raise RuntimeError(f"MaterializedPostgreSQL was not paused: already caught up ({before})")
        t0 = time.monotonic()
        self.resume_mpg()
        dt = self.wait_caught_up("bench_mpg", False, target, t0)
        return self.record(phase="streaming", system="clickhouse_materialized_postgresql", table="both",
                           rows=changes, seconds=round(dt, 3), bytes=wal, state_before=list(before),
                           note="unpaused (role LOGIN again) to state == PostgreSQL state; "
                                "includes up to 0.5 s reconnect backoff")

    # -------------------------------------------------------------- latency
    def latency(self):
        self.pg.psql("SELECT pg_create_logical_replication_slot('bench_sluice_lat', 'pgoutput')")
        self.attempt("latency", "sluice", "lat", self.latency_sluice)
        self.attempt("latency", "clickhouse_materialized_postgresql", "lat", self.latency_mpg)

    def paced_writes(self, id0, rate, seconds):
        """Inserts rate*seconds rows into lat, one per transaction, paced;
        committed_at = clock_timestamp() at insert."""
        n = int(rate * seconds)
        p = subprocess.Popen([self.pg.tool("psql"), "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres",
                              "-d", DB, "-X", "-q"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        for i in range(n):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            p.stdin.write(f"INSERT INTO lat VALUES ({id0 + i}, clock_timestamp(), 'x');\n")
            p.stdin.flush()
        p.stdin.close()
        p.wait()
        return n, time.monotonic() - t0

    def observe(self, table, id0, n, deadline_s, stop):
        """Polls ClickHouse; returns latency (s) per row: first time seen - committed_at."""
        seen = {}
        last = id0 - 1
        t_end = None
        while True:
            now = time.time()
            try:
                out = self.ch.q(f"SELECT id, toUnixTimestamp64Micro(committed_at) FROM {table} "
                                f"WHERE id > {last} AND id < {id0 + n} FORMAT TSV")
            except Exception:  # noqa: BLE001
                out = ""
            for line in out.splitlines():
                i, c = line.split("\t")
                i = int(i)
                if i not in seen:
                    seen[i] = now - int(c) / 1e6
            # Rows may land out of order across batches: only advance over a
            # contiguous prefix.
            while last + 1 in seen:
                last += 1
            if len(seen) >= n:
                break
            if stop.is_set():
                t_end = t_end or time.monotonic()
                if time.monotonic() - t_end > deadline_s:
                    break
            time.sleep(0.05)
        return seen

    def lat_run(self, system, table, id0, start, stop_fn, rss_pid=None):
        rate, secs = self.size["rate"], self.size["seconds"]
        n = int(rate * secs)
        stop = threading.Event()
        result = {}
        th = threading.Thread(target=lambda: result.update(seen=self.observe(table, id0, n, 30, stop)),
                              daemon=True)
        th.start()
        written, wdt = self.paced_writes(id0, rate, secs)
        stop.set()
        th.join()
        peak = rss_peak_kib(rss_pid) if rss_pid else None
        stop_fn()
        lats = sorted(result.get("seen", {}).values())
        m = dict(phase="latency", system=system, table="lat", rows=written, seconds=round(wdt, 3),
                 rate_per_s=rate, visible=len(lats),
                 method="poll ClickHouse every ~50 ms; latency = poll time of first sight - committed_at "
                        "(clock_timestamp() at insert, same host clock)")
        if rss_pid:
            m["peak_rss_kib"] = peak
        if lats:
            m["p50_ms"] = round(1000 * statistics.median(lats), 1)
            m["p99_ms"] = round(1000 * lats[min(len(lats) - 1, int(0.99 * len(lats)))], 1)
            m["max_ms"] = round(1000 * lats[-1], 1)
        if len(lats) < written:
            m["status"] = "error"
            m["error"] = f"only {len(lats)} of {written} rows became visible"
        return self.record(**m)

    def latency_sluice(self):
        self.ch.q("CREATE DATABASE IF NOT EXISTS bench_sluice")
        cfg = self.sluice_config("bench_lat", "bench_sluice_lat", ["lat"], "bench_sluice", "100ms")
        p = self.start_sluice(cfg, "lat")
        # Wait until the pipeline is up (its table exists after the first row).
        self.pg.psql("INSERT INTO lat VALUES (0, clock_timestamp(), 'warm-up')")
        t0 = time.monotonic()
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"sluice exited {p.returncode}: {self.log_tail('lat')}")
            try:
                if self.ch.scalar("SELECT count() FROM bench_sluice.lat") != "0":
                    break
            except Exception:  # noqa: BLE001
                pass
            if time.monotonic() - t0 > 60:
                self.stop(p)
                raise RuntimeError(f"sluice did not deliver the warm-up row in 60 s: {self.log_tail('lat')}")
            time.sleep(0.2)
        return self.lat_run("sluice", "bench_sluice.lat", 1_000_000, t0, lambda: self.stop(p), rss_pid=p.pid)

    def latency_mpg(self):
        self.resume_mpg()
        self.create_mpg("bench_mpg_lat", ["lat"])
        t0 = time.monotonic()
        while True:
            try:
                self.ch.q("SELECT count() FROM bench_mpg_lat.lat")
                break
            except Exception:  # noqa: BLE001
                if time.monotonic() - t0 > 60:
                    raise
                time.sleep(0.5)
        try:
            return self.lat_run("clickhouse_materialized_postgresql", "bench_mpg_lat.lat", 2_000_000, t0,
                                lambda: None)
        finally:
            self.ch.q("DROP DATABASE IF EXISTS bench_mpg_lat")

    # --------------------------------------------------------------- ratios
    def ratios(self):
        ms = [m for m in self.report["measurements"] if m.get("status") == "ok"]
        for phase in ("snapshot", "streaming", "latency"):
            for table in sorted({m["table"] for m in ms if m["phase"] == phase}):
                group = [m for m in ms if m["phase"] == phase and m["table"] == table]
                ours = [m for m in group if m["system"] == "sluice"]
                for peer in (m for m in group if m["system"] != "sluice"):
                    r = {"phase": phase, "table": table, "peer": peer["system"]}
                    if not ours:
                        r["status"] = "sluice not measured"
                    elif phase == "latency":
                        for k in ("p50_ms", "p99_ms"):
                            if ours[0].get(k) and peer.get(k):
                                r[f"{k}_sluice_over_peer"] = round(ours[0][k] / peer[k], 3)
                    else:
                        r["rows_per_s_sluice_over_peer"] = round(ours[0]["rows_per_s"] / peer["rows_per_s"], 3)
                    self.report["ratios"].append(r)

    def table(self):
        lines = ["| phase | system | table | rows | s | rows/s | MB/s | p50 ms | p99 ms | peak RSS MiB | status |",
                 "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for m in self.report["measurements"]:
            rss = m.get("peak_rss_kib")
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                m["phase"], m["system"], m["table"], m.get("rows", ""), m.get("seconds", ""),
                m.get("rows_per_s", ""), m.get("mb_per_s", ""), m.get("p50_ms", ""), m.get("p99_ms", ""),
                round(rss / 1024, 1) if rss else "",
                m["status"] if m["status"] == "ok" else f"{m['status']}: {m.get('error', m.get('note', ''))[:80]}"))
        if self.report["ratios"]:
            lines += ["", "| phase | table | peer | sluice/peer |", "|---|---|---|---|"]
            for r in self.report["ratios"]:
                v = {k: v for k, v in r.items() if k not in ("phase", "table", "peer")}
                lines.append(f"| {r['phase']} | {r['table']} | {r['peer']} | "
                             + ", ".join(f"{k}={x}" for k, x in v.items()) + " |")
        return "\n".join(lines)

    # ----------------------------------------------------------------- main
    def cleanup(self):
        for p in self.procs:
            self.stop(p)
        try:
            self.resume_mpg()
        except Exception:  # noqa: BLE001
            pass
        for db in ("bench_mpg", "bench_mpg_lat"):
            try:
                self.ch.q(f"DROP DATABASE IF EXISTS {db}")
            except Exception:  # noqa: BLE001
                pass
        if not self.args.reuse_services:
            if getattr(self, "chdb_proc", None):
                self.chdb_proc.terminate()
                try:
                    self.chdb_proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.chdb_proc.kill()
            if getattr(self, "pgdir", None):
                run(["bash", os.path.join(ROOT, "scripts/pg-instance.sh"), "stop", self.pgdir], check=False)
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        else:
            try:
                for slot in ("bench_recv", "bench_sluice", "bench_sluice_lat"):
                    self.pg.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
                                 f"WHERE slot_name = '{slot}' AND NOT active")
                self.pg.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
            except Exception:  # noqa: BLE001
                pass

    def main(self):
        t_all = time.monotonic()
        self.machine()
        try:
            self.build()
            self.start_servers()
            self.create_data()
            for phase in self.args.phases.split(","):
                log(f"phase {phase}")
                try:
                    getattr(self, phase)()
                except Exception as e:  # noqa: BLE001
                    self.report["errors"].append({"phase": phase, "error": str(e)})
                    log(f"phase {phase} failed: {e}")
        except Exception as e:  # noqa: BLE001
            self.report["errors"].append({"phase": "setup", "error": str(e)})
            log(f"setup failed: {e}")
        finally:
            self.cleanup()
        self.ratios()
        self.report["total_seconds"] = round(time.monotonic() - t_all, 1)
        out = self.args.out
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(self.report, f, indent=2)
        print(self.table())
        print(f"\nreport: {out} ({self.report['total_seconds']} s; work dir {self.work}"
              f"{' kept' if self.args.keep else ''})")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", help="smoke|small|medium|large or a row count")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench", "e2e.json"))
    ap.add_argument("--phases", default="snapshot,streaming,latency")
    ap.add_argument("--sluice", default=os.environ.get("SLUICE_BIN") or None,
                    help="use this sluice binary instead of building one (default: $SLUICE_BIN if set)")
    ap.add_argument("--reuse-services", action="store_true",
                    help="use the shared servers of scripts/services.sh instead of private instances")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = ap.parse_args()
    if args.size not in SIZES and not args.size.isdigit():
        ap.error("--size must be smoke, small, medium, large or a row count")
    return Harness(args).main()


if __name__ == "__main__":
    sys.exit(main())
