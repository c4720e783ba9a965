#!/usr/bin/env python3
"""sluice end-to-end benchmark: PostgreSQL -> ClickHouse, against peers, in one run.

Measures (see docs/benchmarks.md for the method):
  snapshot   COPY (FORMAT binary) drained (the emit limit), ClickHouse's
             postgresql() table function, sluice's initial snapshot
  streaming  a backlog of N changes drained by pg_recvlogical (the decode
             limit), by `sluice run`, by ClickHouse MaterializedPostgreSQL,
             and by `sluice run` into Kafka (tansu; every message acknowledged)
  latency    commit -> visible in ClickHouse at a fixed rate, sluice and
             MaterializedPostgreSQL
  poll       the cursor-polled source ([source.poll]) copying the same
             tables, beside postgresql() and ClickHouse's INSERT ... SELECT
             (benches/e2e/poll_phase.py)
  pgbench    pgbench's TPC-B-like load at 500 tx/s, then at full speed,
             replicated by sluice (default config) and MaterializedPostgreSQL
             side by side: commit -> visible per transaction, parts created,
             and the tables compared row for row at the end
and writes a JSON report. Python 3 stdlib only. Every measurement that fails
is recorded with its error; the harness goes on.
"""

import argparse
import collections
import json
import math
import os
import platform
import re
import resource
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
# changes, latency rate (changes/s) and duration (s), pgbench scale and
# duration of each pgbench run (s)
SIZES = {
    "smoke": dict(accounts=20_000, mixed=5_000, changes=4_000, rate=100, seconds=5,
                  pgbench_scale=1, pgbench_seconds=5),
    "small": dict(accounts=5_000_000, mixed=1_000_000, changes=1_000_000, rate=200, seconds=20,
                  pgbench_scale=10, pgbench_seconds=30),
    "medium": dict(accounts=20_000_000, mixed=4_000_000, changes=4_000_000, rate=500, seconds=30,
                   pgbench_scale=50, pgbench_seconds=60),
    "large": dict(accounts=100_000_000, mixed=20_000_000, changes=10_000_000, rate=1000, seconds=60,
                  pgbench_scale=100, pgbench_seconds=120),
}
PHASES = ("snapshot", "streaming", "latency", "pgbench", "poll")

CATCH_UP_TIMEOUT = 900  # s, per drain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka as bench_kafka  # noqa: E402  (the Kafka side, next to this file)


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


def proc_status_kib(pid, field):
    """A memory figure (KiB) of /proc/PID/status: VmHWM, VmRSS..."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, IndexError, ValueError):
        return None


def machine_cpu():
    """(busy, total) CPU jiffies of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v) - idle, sum(v)


def proc_cpu_jiffies(pid, with_children=False):
    """utime + stime of a process (plus its reaped children's), in jiffies."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    j = int(v[11]) + int(v[12])
    if with_children:
        j += int(v[13]) + int(v[14])
    return j


def tree_cpu_jiffies(root):
    """CPU of a process tree: the root with its reaped children, plus the
    live children's own (PostgreSQL's backends are the postmaster's)."""
    total = proc_cpu_jiffies(root, with_children=True)
    try:
        kids = open(f"/proc/{root}/task/{root}/children").read().split()
    except OSError:
        kids = []
    return total + sum(proc_cpu_jiffies(int(k)) for k in kids)


def rss_peak_kib(pid):
    return proc_status_kib(pid, "VmHWM")


# ------------------------------------------------------------------ pgbench
PGB_PUB = "sluice_bench_pgbench"
PGB_SLUICE_SLOT = "bench_sluice_pgb"
PGB_TS_SLOT = "bench_pgb_commit_ts"   # test_decoding: commit timestamps
PGB_SLUICE_DB = "bench_sluice_pgb"
PGB_MPG_DB = "bench_mpg_pgb"
PGB_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
PGB_KEYS = {"pgbench_accounts": "aid", "pgbench_branches": "bid", "pgbench_tellers": "tid", "pgbench_history": None}
PGBENCH_RATE = 500      # tx/s of the fixed-rate run
PGBENCH_CLIENTS = 4
PGBENCH_THREADS = 2
PGB_RUNS = ((f"rate{PGBENCH_RATE}", PGBENCH_RATE), ("full", None))

# pgbench's TPC-B-like transaction, statement for statement, except that the
# history row's mtime is the wall clock at its INSERT (the last statement
# before COMMIT), in UTC, instead of CURRENT_TIMESTAMP (the transaction's start).
TPCB_SCRIPT = """\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
  VALUES (:tid, :bid, :aid, :delta, clock_timestamp() AT TIME ZONE 'UTC');
END;
"""


def parse_pgbench(out):
    """The summary lines of a pgbench run."""
    r = {}
    pats = {
        "transactions": r"number of transactions actually processed: (\d+)",
        "failed": r"number of failed transactions: (\d+)",
        "latency_avg_ms": r"latency average = ([\d.]+) ms",
        "latency_stddev_ms": r"latency stddev = ([\d.]+) ms",
        "schedule_lag_avg_ms": r"rate limit schedule lag: avg ([\d.]+)",
        "schedule_lag_max_ms": r"rate limit schedule lag: avg [\d.]+ \(max ([\d.]+)",
        "tps": r"tps = ([\d.]+)",
    }
    for k, pat in pats.items():
        m = re.search(pat, out)
        if m:
            r[k] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    return r


def keyed_differences(a, b, examples=3):
    """Rows of a and b (TSV lines, both ordered by their first column, an
    integer key): keys missing on either side plus keys whose rows differ;
    and a few of the differing rows of each side."""
    i = j = diff = 0
    only_a, only_b = [], []

    def note(lst, row):
        if len(lst) < examples:
            lst.append(row)
    while i < len(a) and j < len(b):
        ka, kb = int(a[i].split("\t", 1)[0]), int(b[j].split("\t", 1)[0])
        if ka == kb:
            if a[i] != b[j]:
                diff += 1
                note(only_a, a[i])
                note(only_b, b[j])
            i += 1
            j += 1
        elif ka < kb:
            diff += 1
            note(only_a, a[i])
            i += 1
        else:
            diff += 1
            note(only_b, b[j])
            j += 1
    for row in a[i:i + examples]:
        note(only_a, row)
    for row in b[j:j + examples]:
        note(only_b, row)
    return diff + (len(a) - i) + (len(b) - j), only_a, only_b


class PsqlSession:
    """One long-lived psql: a query every ~100 ms without a new process and
    connection each time. Rows come back as lists of strings."""
    MARK = "__sluice_bench_end_of_query__"

    def __init__(self, pg, errlog):
        self.p = subprocess.Popen([pg.tool("psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                                   "-d", DB, "-X", "-Atq", "-F", "\t"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=errlog, text=True)

    def rows(self, sql):
        self.p.stdin.write(f"{sql};\n\\echo {self.MARK}\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("the psql session ended")
            line = line.rstrip("\n")
            if line == self.MARK:
                return out
            out.append(line.split("\t"))

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(10)
        except Exception:  # noqa: BLE001
            self.p.kill()


class Tx:
    """One pgbench transaction, known from its pgbench_history row in PostgreSQL."""
    __slots__ = ("mtime_us", "aid", "bal_after", "run", "vis")

    def __init__(self, mtime_us, aid, bal_after, run):
        self.mtime_us, self.aid, self.bal_after, self.run = mtime_us, aid, bal_after, run
        self.vis = {}  # view name -> wall time it was first seen visible


class PgbView:
    """Where one replica's visibility is observed: its pgbench_accounts
    (the account's balance) or its pgbench_history (the row itself)."""

    def __init__(self, system, table, db):
        self.system, self.table, self.db = system, table, db
        self.name = f"{system}/{table}"
        self.pending = {}     # accounts: aid -> [Tx] in commit order; history: (mtime_us, aid) -> Tx
        self.confirmed = {}   # accounts: aid -> balance last seen that a transaction explained
        self.last_val = {}    # accounts: aid -> balance of its newest row version seen
        self.unmatched = {}   # accounts: aid -> [(wall time, balance)] seen before PostgreSQL's row
        self.seen = set()     # accounts: (aid, _version, balance) already read
        self.marks = []       # accounts: (wall time, highest _version seen) of the last polls
        self.by_fallback = 0  # accounts: transactions resolved by the FINAL read after pgbench ended
        self.ambiguous = set()
        self.done_at = None
        self.error = None


class PgbenchObserver:
    """Commit -> visible for every pgbench transaction, on several replicas
    at once (method: docs/benchmarks.md, "pgbench").

    Every ~100 ms: (1) the new pgbench_history rows in PostgreSQL (mtime,
    aid, delta) extend a ledger: per account, its transactions in commit
    order and the balance each leaves; (2) each replica's new
    pgbench_accounts row versions are read (`_version`, the change's WAL
    position in both systems, above the highest one seen 2 s earlier): a
    balance equal to the one transaction T leaves (and not to the balance
    already explained) proves that T and the account's earlier transactions
    are applied; (3) replicas that have pgbench_history: the pending rows
    that are there. A transaction's lag = wall time of the answer that first
    showed it - its commit timestamp (taken from PostgreSQL afterwards)."""
    PERIOD = 0.1
    SLACK_US = 2_000_000   # commit order vs mtime order: far more than enough
    # _version is the change's WAL position, not its commit's: a transaction
    # that wrote early and committed late lands below newer versions. Row
    # versions are read again down to the highest one seen this long ago.
    VERSION_SLACK_S = 2.0

    def __init__(self, psql, ch, views, parts_fn):
        self.psql, self.ch, self.views, self.parts_fn = psql, ch, views, parts_fn
        self.balance = {}      # aid -> balance after its last known transaction (pgbench -i: 0)
        self.last_mtime = {}
        self.known = set()     # (mtime_us, aid)
        self.broken = set()    # accounts whose ledger order is unsure (a row came late)
        self.thread = None

    def system_dbs(self):
        return {v.system: v.db for v in self.views}

    # -- one run
    def start(self, run_name, t_start, timeout_after_end, rss_pid=None):
        self.run_name, self.t_start = run_name, t_start
        self.start_us = int(t_start * 1e6)
        self.max_mtime = self.start_us
        self.timeout = timeout_after_end
        self.rss_pid = rss_pid
        self.rss_peak = None
        self.vmhwm = None
        self.run_txs = []
        self.t_end = None
        self.done_at = {}
        self.parts_at_done = {}
        self.missed_live = 0
        self.live_lo = self.start_us
        self.polls = 0
        self.errors = []
        for v in self.views:
            v.done_at = None
            v.by_fallback = 0
            if v.table == "pgbench_accounts":
                self.accounts_watermark(v)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def pgbench_finished(self, t_end):
        self.t_end = t_end
        self.stop.set()

    def join(self):
        self.thread.join()

    def loop(self):
        final_fetch = False
        while True:
            t0 = time.time()
            try:
                if self.stop.is_set() and not final_fetch:
                    # Every row of this run, whatever the live polls missed.
                    self.poll_pg(self.start_us - 1, live=False)
                    final_fetch = True
                else:
                    self.live_lo = self.max_mtime - self.SLACK_US
                    self.poll_pg(self.live_lo, live=True)
                for v in (self.views if self.polls % 2 == 0 else reversed(self.views)):
                    self.poll_view(v, final_fetch)
            except Exception as e:  # noqa: BLE001
                if len(self.errors) < 5:
                    self.errors.append(str(e)[:300])
            self.polls += 1
            if self.rss_pid:
                r = proc_status_kib(self.rss_pid, "VmRSS")
                if r and (self.rss_peak or 0) < r:
                    self.rss_peak = r
                self.vmhwm = proc_status_kib(self.rss_pid, "VmHWM") or self.vmhwm
            if final_fetch:
                now = time.time()
                for v in self.views:
                    if v.done_at is None and self.caught_up(v):
                        v.done_at = now
                for sy in {v.system for v in self.views}:
                    vs = [v for v in self.views if v.system == sy]
                    if sy not in self.done_at and all(v.done_at for v in vs):
                        self.done_at[sy] = max(v.done_at for v in vs)
                        self.sample_parts(sy)
                if all(v.done_at for v in self.views):
                    return
            if self.t_end is not None and time.time() - self.t_end > self.timeout:
                for sy in {v.system for v in self.views} - set(self.parts_at_done):
                    self.sample_parts(sy)
                return
            time.sleep(max(0.0, self.PERIOD - (time.time() - t0)))

    def sample_parts(self, system):
        try:
            self.parts_at_done[system] = self.parts_fn(system)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"parts of {system}: {e}"[:300])

    def poll_pg(self, lo_us, live):
        rows = self.psql.rows("SELECT (extract(epoch FROM mtime) * 1000000)::int8, aid, delta FROM pgbench_history "
                              f"WHERE mtime > to_timestamp({lo_us}::float8 / 1000000) AT TIME ZONE 'UTC'")
        new = sorted((int(m), int(a), int(d)) for m, a, d in rows if (int(m), int(a)) not in self.known)
        for mt, aid, delta in new:
            if not live and mt <= self.live_lo:
                self.missed_live += 1  # the live polls should have seen it
            if mt < self.last_mtime.get(aid, 0):
                # Arrived after a later transaction of the same account: the
                # balances after it are unknown; leave this account out.
                self.broken.add(aid)
            bal = self.balance.get(aid, 0) + delta
            self.balance[aid] = bal
            self.last_mtime[aid] = max(mt, self.last_mtime.get(aid, 0))
            tx = Tx(mt, aid, bal, self.run_name)
            self.known.add((mt, aid))
            self.run_txs.append(tx)
            self.max_mtime = max(self.max_mtime, mt)
            for v in self.views:
                if v.table == "pgbench_accounts":
                    if aid not in self.broken:
                        v.pending.setdefault(aid, []).append(tx)
                else:
                    v.pending[(mt, aid)] = tx
        for v in self.views:
            if v.table == "pgbench_accounts" and v.unmatched:
                for aid in {a for _, a, _ in new} & v.unmatched.keys():
                    self.replay(v, aid)
        for aid in self.broken:
            for v in self.views:
                if v.table == "pgbench_accounts":
                    v.pending.pop(aid, None)

    def poll_view(self, v, final_fetch):
        if v.table != "pgbench_accounts" and not v.pending:
            return
        try:
            if v.table == "pgbench_accounts":
                self.poll_accounts(v)
                if final_fetch and v.done_at is None and time.time() - self.t_end > self.VERSION_SLACK_S + 1:
                    self.poll_accounts_final(v)
            else:
                self.poll_history(v)
            v.error = None
        except Exception as e:  # noqa: BLE001
            v.error = str(e)[:300]  # e.g. sluice creates a table with its first row

    def accounts_watermark(self, v):
        """Before the first run: the newest row version already there."""
        if not v.marks:
            v.marks = [(0.0, int(self.ch.scalar(f"SELECT max(_version) FROM {v.db}.pgbench_accounts")))]

    def poll_accounts(self, v):
        # The row versions written since the watermark (no FINAL: a new
        # version is the account's visible state).
        now = time.time()
        while len(v.marks) > 1 and v.marks[1][0] <= now - self.VERSION_SLACK_S:
            v.marks.pop(0)
        out = self.ch.q(f"SELECT aid, abalance, _version FROM {v.db}.pgbench_accounts "
                        f"WHERE _version > {v.marks[0][1]} ORDER BY _version FORMAT TSV")
        t = time.time()
        top = v.marks[-1][1]
        for line in out.splitlines():
            a, val, ver = line.split("\t")
            if val == "\\N":
                continue
            aid, val, ver = int(a), int(val), int(ver)
            # (Several changes may share a _version: the balance is part
            # of what makes a row version new.)
            if (aid, ver, val) in v.seen:
                continue
            v.seen.add((aid, ver, val))
            top = max(top, ver)
            v.last_val[aid] = val
            if not self.match(v, aid, val, t):
                v.unmatched.setdefault(aid, []).append((t, val))
        v.marks.append((t, top))

    def poll_accounts_final(self, v):
        """Some seconds after pgbench ended, for what is still pending: the
        accounts' current state (FINAL), in case the version feed missed a
        row (resolved_by_final_read counts them)."""
        aids = [a for a, txs in v.pending.items() if any(tx.run == self.run_name for tx in txs)]
        if not aids:
            return
        out = self.ch.q(f"SELECT aid, abalance FROM {v.db}.pgbench_accounts FINAL WHERE aid IN "
                        f"({','.join(map(str, aids[:20000]))}) FORMAT TSV", max_query_size=10_000_000)
        t = time.time()
        for line in out.splitlines():
            a, val = line.split("\t")
            if val == "\\N":
                continue
            aid, val = int(a), int(val)
            before = len(v.pending.get(aid, ()))
            if val != v.last_val.get(aid):
                v.last_val[aid] = val
            if self.match(v, aid, val, t):
                v.by_fallback += before - len(v.pending.get(aid, ()))

    def match(self, v, aid, val, t):
        """The replica showed balance val for aid at wall time t: resolve
        the pending transactions this proves applied; False if none."""
        txs = v.pending.get(aid)
        if not txs or val == v.confirmed.get(aid, 0):
            return False
        for k, tx in enumerate(txs):
            if tx.bal_after == val:
                # The replica's state is after some transaction j >= k of
                # this account: T0..Tk are applied.
                for t2 in txs[:k + 1]:
                    t2.vis[v.name] = t
                v.confirmed[aid] = val
                del txs[:k + 1]
                if not txs:
                    del v.pending[aid]
                return True
        return False

    def replay(self, v, aid):
        """Versions of aid that the replica showed before the ledger knew
        their transactions: match them now, with the time they were seen."""
        seen = v.unmatched.pop(aid, None)
        if not seen:
            return
        rest = []
        for t, val in seen:
            if self.match(v, aid, val, t):
                rest = []  # older versions are explained by this one
            else:
                rest.append((t, val))
        if rest:
            v.unmatched[aid] = rest

    def poll_history(self, v):
        lo = min(tx.mtime_us for tx in v.pending.values())
        out = self.ch.q(f"SELECT toUnixTimestamp64Micro(mtime), aid FROM {v.db}.pgbench_history "
                        f"WHERE toUnixTimestamp64Micro(mtime) >= {lo} FORMAT TSV")
        t = time.time()
        for line in out.splitlines():
            m, a = line.split("\t")
            tx = v.pending.pop((int(m), int(a)), None)
            if tx is not None:
                tx.vis.setdefault(v.name, t)

    def caught_up(self, v):
        """Every transaction of this run is visible on v (or cannot be told)."""
        if v.table != "pgbench_accounts":
            return not any(tx.run == self.run_name for tx in v.pending.values())
        for aid, txs in list(v.pending.items()):
            # The replica shows the account's final balance but it equals the
            # balance already explained (a later transaction returned to it):
            # applied or not cannot be told apart; left out of the figures.
            if v.last_val.get(aid, 0) == self.balance.get(aid) == v.confirmed.get(aid, 0):
                v.ambiguous.update((tx.mtime_us, tx.aid) for tx in txs)
                del v.pending[aid]
        return not any(tx.run == self.run_name for txs in v.pending.values() for tx in txs)

    # -- figures of one run, one view
    def stats(self, v, commits):
        """commits: (mtime_us, aid) -> PostgreSQL's commit timestamp (µs); a
        transaction missing there counts from its mtime instead."""
        pts = []
        unresolved = ambiguous = broken = from_mtime = 0
        for tx in self.run_txs:
            if v.table == "pgbench_accounts" and tx.aid in self.broken:
                broken += 1
            elif v.name in tx.vis:
                c = commits.get((tx.mtime_us, tx.aid))
                if c is None:
                    c = tx.mtime_us
                    from_mtime += 1
                pts.append((c / 1e6 - self.t_start, tx.vis[v.name] - c / 1e6))
            elif (tx.mtime_us, tx.aid) in v.ambiguous:
                ambiguous += 1
            else:
                unresolved += 1
        m = {"visible": len(pts), "not_visible": unresolved, "ambiguous_left_out": ambiguous,
             "late_rows_left_out": broken, "rows_missed_by_live_poll": self.missed_live, "polls": self.polls,
             "lag_from_mtime_not_commit": from_mtime,
             "resolved_by_final_read": v.by_fallback,
             "method": "per transaction: wall time of the first poll (~every 100 ms) whose answer showed it "
                       "in ClickHouse - its commit timestamp in PostgreSQL (same host clock)"}
        if self.errors or v.error:
            m["poll_errors"] = self.errors + ([f"last poll: {v.error}"] if v.error else [])
        if pts:
            lags = sorted(p[1] for p in pts)
            m["p50_ms"] = round(1000 * statistics.median(lags), 1)
            m["p99_ms"] = round(1000 * lags[min(len(lags) - 1, int(0.99 * len(lags)))], 1)
            m["max_ms"] = round(1000 * lags[-1], 1)
            dur = max(self.t_end - self.t_start, 1e-3)
            width = max(1, math.ceil(dur / 30))
            buckets = {}
            for off, lag in pts:
                buckets.setdefault(int(max(off, 0) // width), []).append(lag)
            m["lag_over_time"] = {"bucket_s": width, "columns": ["start_s", "transactions", "p50_ms", "max_ms"],
                                  "rows": [[b * width, len(ls), round(1000 * statistics.median(ls), 1),
                                            round(1000 * max(ls), 1)] for b, ls in sorted(buckets.items())]}
            # From pgbench's end until the run's last transaction was visible.
            m["catch_up_s"] = round(max(tx.vis[v.name] for tx in self.run_txs if v.name in tx.vis) - self.t_end, 3)
            if len(pts) >= 2:
                n = len(pts)
                mx = sum(p[0] for p in pts) / n
                my = sum(p[1] for p in pts) / n
                sxx = sum((p[0] - mx) ** 2 for p in pts)
                slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else 0.0
                m["lag_slope_ms_per_s"] = round(1000 * slope, 2)
                # Bounded lag: the fitted line grows by at most 1 s (or half
                # the median lag) over the run; a short stall that the
                # replica recovers from does not count, a growing backlog does.
                m["lag_growth_ms"] = round(1000 * slope * dur, 1)
                m["keeps_up"] = bool(v.done_at is not None
                                     and slope * dur <= max(1.0, 0.5 * statistics.median(lags)))
        if v.done_at is None:
            m["status"] = "error"
            m["error"] = (f"{unresolved} of {len(self.run_txs)} transactions not visible "
                          f"{self.timeout} s after pgbench ended")
            m["keeps_up"] = False
        return m



class Harness:
    def __init__(self, args):
        self.args = args
        self.size_name = args.size
        if args.size in SIZES:
            self.size = dict(SIZES[args.size])
        else:
            n = int(args.size)
            self.size = dict(accounts=n, mixed=max(n // 5, 1), changes=max(n // 10, 10),
                             rate=200, seconds=20, pgbench_scale=10, pgbench_seconds=30)
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
            self.kafka_brokers = env.get("SLUICE_TEST_KAFKA_BROKERS")
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
            if "streaming" in self.args.phases.split(","):
                kport = free_port()
                self.kafka_proc = bench_kafka.start_broker(kport, os.path.join(self.work, "tansu.log"))
                self.kafka_brokers = f"127.0.0.1:{kport}"
            self.report["servers"]["mode"] = "private instances started by the harness"
        self.report["servers"].update(pg_port=self.pg.port, clickhouse=self.ch.url,
                                      kafka=getattr(self, "kafka_brokers", None))
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
        if not set(self.args.phases.split(",")) & {"snapshot", "streaming", "latency", "poll"}:
            return
        log(f"creating data: {s['accounts']} accounts rows, {s['mixed']} mixed rows")
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
            for system, fn in (("copy_binary_devnull", self.snap_copy),
                               ("clickhouse_postgresql_fn", self.snap_pgfn),
                               ("sluice", self.snap_sluice),
                               ("sluice_snapshot_cmd", self.snap_sluice_cmd)):
                self.with_machine_cpu(lambda: self.attempt("snapshot", system, table, lambda: fn(table, rows)))

    def with_machine_cpu(self, fn):
        """Runs fn (which returns its measurement) and adds how busy the
        whole machine was meanwhile: the CPU seconds every process used
        (PostgreSQL, ClickHouse, sluice, the rest) and that as a share of
        all cores. Near 100%: the machine, not one program, was the limit."""
        b0, t0 = machine_cpu()
        g0 = self.cpu_groups()
        m = fn()
        b1, t1 = machine_cpu()
        g1 = self.cpu_groups()
        if isinstance(m, dict) and m.get("status") == "ok" and t1 > t0:
            tck = os.sysconf("SC_CLK_TCK")
            m["machine_cpu_s"] = round((b1 - b0) / tck, 2)
            m["machine_busy_pct"] = round(100.0 * (b1 - b0) / (t1 - t0), 1)
            if m.get("rows"):
                m["rows_per_machine_cpu_s"] = round(m["rows"] / max(m["machine_cpu_s"], 0.01))
            by = {k: round((g1[k] - g0[k]) / tck, 2) for k in g0}
            by["other"] = round(m["machine_cpu_s"] - sum(by.values()), 2)
            m["cpu_s_by_process"] = by
            log("machine", json.dumps({k: m[k] for k in ("system", "table", "machine_cpu_s", "machine_busy_pct", "cpu_s_by_process")}))
        return m

    def cpu_groups(self):
        """CPU jiffies so far of the measured processes: PostgreSQL (the
        postmaster's tree), the ClickHouse stand-in, and the harness's
        finished children (sluice, psql, clickhouse-side clients). Only for
        private instances: shared servers are not the harness's to count."""
        g = {"postgresql": 0, "clickhouse": 0, "sluice_and_clients": 0}
        pgdir = getattr(self, "pgdir", None)
        if pgdir:
            try:
                pm = int(open(os.path.join(pgdir, "postmaster.pid")).readline())
                g["postgresql"] = tree_cpu_jiffies(pm)
            except (OSError, ValueError):
                pass
        if getattr(self, "chdb_proc", None) is not None:
            g["clickhouse"] = proc_cpu_jiffies(self.chdb_proc.pid)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        g["sluice_and_clients"] = round((ru.ru_utime + ru.ru_stime) * os.sysconf("SC_CLK_TCK"))
        return g

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

    def snap_sluice_cmd(self, table, rows):
        """`sluice snapshot`: the one-shot copy (no slot), timed from start to
        exit (every row durable in ClickHouse when it exits)."""
        ch_db = f"bench_snapcmd_{table}"
        self.ch.q(f"DROP DATABASE IF EXISTS {ch_db}")
        cfg = self.sluice_config(f"bench_snapcmd_{table}", f"bench_snapcmd_{table}", [table], ch_db, "1s",
                                 snapshot=True)
        logf = open(os.path.join(self.work, f"sluice-snapcmd-{table}.log"), "w")
        t0 = time.monotonic()
        p = subprocess.Popen([self.sluice, "snapshot", "-c", cfg], stdout=logf, stderr=logf, cwd=self.work)
        self.procs.append(p)
        peaks = []
        while p.poll() is None:
            v = rss_peak_kib(p.pid)
            if v:
                peaks.append(v)
            if time.monotonic() - t0 > CATCH_UP_TIMEOUT:
                p.kill()
                raise RuntimeError(f"sluice snapshot not done after {CATCH_UP_TIMEOUT} s")
            time.sleep(0.1)
        dt = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError(f"sluice snapshot exited {p.returncode}: {self.log_tail(f'snapcmd-{table}')}")
        got = int(self.ch.scalar(f"SELECT count() FROM {ch_db}.{table}"))
        if got != rows:
            raise RuntimeError(f"sluice snapshot: {got} rows landed, expected {rows}")
        self.ch.q(f"DROP DATABASE IF EXISTS {ch_db}")
        return self.record(phase="snapshot", system="sluice_snapshot_cmd", table=table, rows=rows,
                           seconds=round(dt, 3), bytes=self.copy_bytes.get(table),
                           peak_rss_kib=max(peaks) if peaks else None,
                           note="`sluice snapshot` (no slot): start to exit")

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

    def snap_pgfn(self, table, rows, phase="snapshot"):
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
        return self.record(phase=phase, system="clickhouse_postgresql_fn", table=table, rows=rows,
                           seconds=round(dt, 3), bytes=self.copy_bytes.get(table))

    # ----------------------------------------------------------------- poll
    def poll(self):
        """The cursor-polled source beside ClickHouse's own copies (poll_phase.py)."""
        import poll_phase  # noqa: PLC0415
        self.rss_peak_kib = rss_peak_kib
        poll_phase.run(self, CATCH_UP_TIMEOUT)

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
        self.stream_deletes = 2 * dele
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
        kafka_ok = getattr(self, "kafka_brokers", None) is not None
        if kafka_ok:
            self.pg.psql("SELECT pg_create_logical_replication_slot('bench_kafka', 'pgoutput')")
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
        if kafka_ok:
            self.attempt("streaming", "sluice_kafka", "both", lambda: self.drain_kafka(changes, target_lsn, wal))
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

    def drain_kafka(self, changes, target_lsn, wal):
        """`sluice run` into Kafka: from start until the slot's confirmed
        position reaches the end of the backlog (confirmed only after the
        brokers acknowledged every message and the checkpoint is saved);
        then the topics are read back and must hold one event per change and
        one tombstone per delete."""
        prefix = f"bench{os.getpid()}_{int(time.time())}"
        path = os.path.join(self.work, "bench_kafka.toml")
        with open(path, "w") as f:
            f.write(f"""[pipeline]
name = "bench_kafka"
checkpoint_dir = "{self.work}/checkpoints"

[source.postgres]
url = "{self.pg.url()}"
slot = "bench_kafka"
publication = "{PUB}"
tables = ["public.stream_accounts", "public.stream_mixed"]
initial_snapshot = false
status_interval = "100ms"

[batch]
max_rows = 100000
max_bytes = "64MiB"
max_delay = "1s"

[sink.kafka]
brokers = "{self.kafka_brokers}"
topic_prefix = "{prefix}"
""")
        topics = [f"{prefix}.public.stream_accounts", f"{prefix}.public.stream_mixed"]
        broker = getattr(self, "kafka_proc", None)
        broker_cpu0 = cpu_seconds(broker.pid) if broker else None
        t0 = time.monotonic()
        p = self.start_sluice(path, "kafka")
        peaks = []
        try:
            while True:
                if p.poll() is not None:
                    raise RuntimeError(f"sluice exited {p.returncode}: {self.log_tail('kafka')}")
                v = rss_peak_kib(p.pid)
                if v:
                    peaks.append(v)
                done = self.pg.psql("SELECT confirmed_flush_lsn >= '" + target_lsn + "'::pg_lsn "
                                    "FROM pg_replication_slots WHERE slot_name = 'bench_kafka'")
                if done == "t":
                    sluice_cpu = cpu_seconds(p.pid)
                    break
                if time.monotonic() - t0 > CATCH_UP_TIMEOUT:
                    raise RuntimeError(f"not caught up after {CATCH_UP_TIMEOUT} s: {self.log_tail('kafka')}")
                time.sleep(0.1)
            dt = time.monotonic() - t0
        finally:
            self.stop(p)
        expected = changes + self.stream_deletes
        got = bench_kafka.count_messages(self.kafka_brokers, topics)
        if got != expected:
            raise RuntimeError(f"{got} messages in the topics, expected {expected} "
                               f"({changes} events + {self.stream_deletes} tombstones)")
        broker_cpu = (cpu_seconds(broker.pid) - broker_cpu0) if broker else None
        return self.record(phase="streaming", system="sluice_kafka", table="both", rows=changes,
                           seconds=round(dt, 3), bytes=wal, messages=got, sluice_cpu_s=sluice_cpu,
                           broker_cpu_s=round(broker_cpu, 2) if broker_cpu is not None else None,
                           peak_rss_kib=max(peaks) if peaks else None,
                           note="start of `sluice run` (Kafka sink) to the slot confirmed at the backlog's end; "
                                "messages counted afterwards")

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

    # -------------------------------------------------------------- pgbench
    def pgbench(self):
        """pgbench (TPC-B-like) at a fixed rate, then at full speed, replicated
        at the same time by sluice (default config) and MaterializedPostgreSQL;
        commit -> visible per transaction, parts created, and a row-for-row
        comparison at the end."""
        s = self.size
        scale, secs = s["pgbench_scale"], s["pgbench_seconds"]
        wl = self.report["pgbench_workload"] = {
            "scale": scale, "accounts_rows": 100_000 * scale, "seconds_per_run": secs,
            "clients": PGBENCH_CLIENTS, "threads": PGBENCH_THREADS, "fixed_rate_tps": PGBENCH_RATE,
            "script": "TPC-B-like (pgbench's built-in statements), mtime = clock_timestamp() "
                      "AT TIME ZONE 'UTC' at the INSERT, the last statement before COMMIT",
            "runs": {},
        }
        log(f"pgbench -i -s {scale}")
        t0 = time.monotonic()
        run([self.pg.tool("pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(self.pg.port),
             "-U", "postgres", DB])
        self.pg.script(f"""
            ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
            DROP PUBLICATION IF EXISTS {PGB_PUB};
            CREATE PUBLICATION {PGB_PUB} FOR TABLE {', '.join(PGB_TABLES)};
        """)
        wl["init_seconds"] = round(time.monotonic() - t0, 3)
        script = os.path.join(self.work, "tpcb_clock.sql")
        with open(script, "w") as f:
            f.write(TPCB_SCRIPT)

        # Both replicas follow the same transactions; each starts with its own
        # initial copy of the pgbench -i rows.
        self.resume_mpg()
        self.ch.q(f"DROP DATABASE IF EXISTS {PGB_SLUICE_DB}")
        cfg = self.sluice_config_default("bench_pgbench", PGB_SLUICE_SLOT, PGB_TABLES, PGB_SLUICE_DB)
        t_sync = time.monotonic()
        p = self.start_sluice(cfg, "pgbench")
        psql = None
        try:
            # system -> (ClickHouse database, sluice's table layout?)
            systems = {"sluice": (PGB_SLUICE_DB, True),
                       "clickhouse_materialized_postgresql": (PGB_MPG_DB, False)}
            failed = {}
            try:
                self.create_mpg(PGB_MPG_DB, list(PGB_TABLES))
            except Exception as e:  # noqa: BLE001
                failed["clickhouse_materialized_postgresql"] = f"setup: {e}"
            wl["initial_sync_seconds"] = {}
            for system, (db, is_sluice) in systems.items():
                if system in failed:
                    continue
                try:
                    wl["initial_sync_seconds"][system] = self.pgb_wait_initial(
                        db, is_sluice, scale, t_sync, proc=p if is_sluice else None)
                except Exception as e:  # noqa: BLE001
                    failed[system] = f"initial copy: {e}" + (
                        f"; sluice log tail: {self.log_tail('pgbench')}" if is_sluice else "")
            for system, msg in failed.items():
                del systems[system]
                self.record(phase="pgbench", system=system, table="setup", status="error", error=msg)
            # The tables each replica follows. sluice creates a table with its
            # first row (pgbench_history has none yet); MaterializedPostgreSQL
            # creates all of its tables at once and skips those it cannot
            # replicate.
            expected = {}
            for system, (db, is_sluice) in systems.items():
                names = self.ch.q(f"SELECT name FROM system.tables WHERE database = '{db}' FORMAT TSV").split()
                expected[system] = list(PGB_TABLES) if is_sluice else [t for t in PGB_TABLES if t in names]
            wl["replicated_tables"] = expected
            views = []
            for system, (db, is_sluice) in systems.items():
                views += [PgbView(system, t, db) for t in ("pgbench_accounts", "pgbench_history")
                          if t in expected[system]]
            skipped = {sy: self.pgb_missing_reason(systems[sy][0], "pgbench_history")
                       for sy in systems if "pgbench_history" not in expected[sy]}
            # The commit timestamp of every transaction, from PostgreSQL itself.
            self.pg.psql(f"SELECT pg_create_logical_replication_slot('{PGB_TS_SLOT}', 'test_decoding')")
            psql = PsqlSession(self.pg, open(os.path.join(self.work, "pgbench-observer-psql.log"), "w"))
            obs = PgbenchObserver(psql, self.ch, views, lambda sy: self.pgb_parts(systems[sy][0]))
            for run_name, rate in PGB_RUNS:
                res = self.attempt("pgbench", "pgbench", run_name,
                                   lambda: self.pgb_run(obs, run_name, rate, script, scale, secs, p))
                for sy, why in skipped.items():
                    self.record(phase="pgbench", system=sy, table=f"{run_name}/pgbench_history", run=run_name,
                                visible_on="pgbench_history", status="error", error=why)
                if res and res.get("system") == "pgbench":
                    break  # pgbench itself failed
            self.report["pgbench_compare"] = []
            for system, (db, is_sluice) in systems.items():
                self.pgb_converge(system, db, is_sluice, p if is_sluice else None)
                for t in PGB_TABLES:
                    self.report["pgbench_compare"].append(self.pgb_compare(system, db, is_sluice, t))
        finally:
            if psql:
                psql.close()
            self.stop(p)
            for slot in (PGB_SLUICE_SLOT, PGB_TS_SLOT):
                try:
                    self.pg.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
                                 f"WHERE slot_name = '{slot}' AND NOT active")
                except Exception:  # noqa: BLE001
                    pass
            for db in (PGB_MPG_DB, PGB_SLUICE_DB):
                try:
                    self.ch.q(f"DROP DATABASE IF EXISTS {db}")
                except Exception:  # noqa: BLE001
                    pass

    def sluice_config_default(self, name, slot, tables, ch_db):
        """sluice's default configuration: only the required keys, plus the
        ClickHouse database to write into (no [batch] section at all)."""
        path = os.path.join(self.work, f"{name}.toml")
        tl = ", ".join(f'"public.{t}"' for t in tables)
        with open(path, "w") as f:
            f.write(f"""[pipeline]
name = "{name}"

[source.postgres]
url = "{self.pg.url()}"
slot = "{slot}"
publication = "{PGB_PUB}"
tables = [{tl}]

[sink.clickhouse]
url = "{self.ch.url}"
database = "{ch_db}"
""")
        return path

    def pgb_wait_initial(self, db, final, scale, t0, proc=None, timeout=CATCH_UP_TIMEOUT):
        """Until the replica holds the pgbench -i rows; returns the seconds since t0."""
        want = {"pgbench_accounts": 100_000 * scale, "pgbench_tellers": 10 * scale, "pgbench_branches": scale}
        last = None
        while time.monotonic() - t0 < timeout:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"sluice exited {proc.returncode}")
            try:
                if all(int(self.ch.scalar(f"SELECT count() FROM {db}.{t}{' FINAL' if final else ''}")) == n
                       for t, n in want.items()):
                    return round(time.monotonic() - t0, 3)
            except Exception as e:  # noqa: BLE001
                last = str(e)[:300]
            time.sleep(0.2)
        raise RuntimeError(f"pgbench -i rows not in {db} after {timeout} s; last error: {last}")

    def pgb_missing_reason(self, db, table):
        """Why the replica has no such table: MaterializedPostgreSQL says it
        when asked for the table's definition."""
        try:
            self.ch.q(f"SHOW CREATE TABLE {db}.{table}")
            return "not replicated"
        except Exception as e:  # noqa: BLE001
            msg = str(e).split("Stack trace")[0]
            i = msg.rfind("DB::Exception:")
            msg = msg[i + 15:] if i >= 0 else msg
            return "not replicated: " + msg.split(". (")[0].strip()[:300]

    def pgb_parts(self, db):
        """Per table: the highest block number (one per part an INSERT
        created; merges keep it) and the active parts."""
        out = self.ch.q("SELECT table, max(max_block_number), countIf(active) FROM system.parts "
                        f"WHERE database = '{db}' GROUP BY table FORMAT TSV")
        r = {}
        for line in out.splitlines():
            t, b, a = line.split("\t")
            r[t] = (int(b), int(a))
        return r

    def pgb_run(self, obs, run_name, rate, script, scale, secs, sluice_proc):
        parts0 = {sy: self.pgb_parts(db) for sy, db in obs.system_dbs().items()}
        cmd = [self.pg.tool("pgbench"), "-n", "-s", str(scale), "-c", str(PGBENCH_CLIENTS),
               "-j", str(PGBENCH_THREADS), "-T", str(secs), "-f", script, "-h", "127.0.0.1",
               "-p", str(self.pg.port), "-U", "postgres"]
        if rate:
            cmd += ["-R", str(rate)]
        cmd.append(DB)
        timeout = 60 + 2 * secs
        log(f"pgbench run {run_name}: {' '.join(cmd[1:])}")
        t_start = time.time()
        obs.start(run_name, t_start, timeout, rss_pid=sluice_proc.pid)
        r = run(cmd, check=False, timeout=secs + 300)
        t_end = time.time()
        obs.pgbench_finished(t_end)
        obs.join()
        if r.returncode != 0:
            raise RuntimeError(f"pgbench exited {r.returncode}: {r.stderr[-1000:]}")
        st = parse_pgbench(r.stdout)
        st["seconds"] = round(t_end - t_start, 3)
        st["transactions_in_history"] = len(obs.run_txs)
        commits = self.pgb_commit_times()
        d = sorted(c - k[0] for k, c in commits.items())
        if d:
            # How far the history row's mtime is from the commit: what the
            # lag would be off by with mtime as the commit time.
            st["commit_minus_mtime_us"] = {"p50": d[len(d) // 2], "p99": d[min(len(d) - 1, int(0.99 * len(d)))],
                                           "max": d[-1], "transactions": len(d)}
        self.report["pgbench_workload"]["runs"][run_name] = st
        res = None
        for v in obs.views:
            m = obs.stats(v, commits)
            m.update(phase="pgbench", system=v.system, table=f"{run_name}/{v.table}", run=run_name,
                     visible_on=v.table, rows=len(obs.run_txs), seconds=round(t_end - t_start, 3),
                     rate_per_s=rate or "full speed")
            done = obs.done_at.get(v.system)
            p0, p1 = parts0.get(v.system, {}), obs.parts_at_done.get(v.system, {})
            if done and p1:
                created = {t: p1[t][0] - p0.get(t, (0, 0))[0] for t in p1}
                minutes = (done - t_start) / 60
                m["parts_created"] = created
                m["parts_per_min"] = round(sum(created.values()) / minutes, 1)
                m["active_parts_after"] = {t: p1[t][1] for t in p1}
            if v.system == "sluice":
                m["peak_rss_kib"] = obs.rss_peak
                m["vmhwm_kib"] = obs.vmhwm
                if sluice_proc.poll() is not None:
                    m["status"] = "error"
                    m["error"] = f"sluice exited {sluice_proc.returncode}: {self.log_tail('pgbench')}"
            res = self.record(**m)
        return res

    def pgb_commit_times(self):
        """(mtime_us, aid) -> commit timestamp (µs) of every pgbench
        transaction since the last call: test_decoding with include-timestamp
        on the harness's own slot; a transaction's history row and COMMIT
        line share its xid."""
        out = self.pg.psql(f"""
            SELECT xid,
                   CASE WHEN data LIKE 'COMMIT %'
                        THEN (extract(epoch FROM substring(data FROM '\\(at ([^)]*)\\)')::timestamptz)
                              * 1000000)::int8 END,
                   CASE WHEN data LIKE 'table %'
                        THEN (extract(epoch FROM substring(data FROM 'mtime\\[[^]]*\\]:''([^'']*)''')::timestamp)
                              * 1000000)::int8 END,
                   substring(data FROM ' aid\\[integer\\]:(-?[0-9]+)')
              FROM pg_logical_slot_get_changes('{PGB_TS_SLOT}', NULL, NULL,
                                               'include-timestamp', '1', 'skip-empty-xacts', '1')
             WHERE data LIKE 'COMMIT %' OR data LIKE 'table public.pgbench_history: INSERT:%'""")
        commit_at, rows = {}, []
        for line in out.splitlines():
            xid, c, m, a = line.split("|")
            if c:
                commit_at[xid] = int(c)
            else:
                rows.append((xid, int(m), int(a)))
        return {(m, a): commit_at[xid] for xid, m, a in rows if xid in commit_at}

    def pgb_fingerprint_pg(self):
        return self.pg.psql(
            "SELECT (SELECT count(*) || ' ' || coalesce(sum(abalance), 0) FROM pgbench_accounts) || ' ' || "
            "(SELECT count(*) || ' ' || coalesce(sum(tbalance), 0) FROM pgbench_tellers) || ' ' || "
            "(SELECT count(*) || ' ' || coalesce(sum(bbalance), 0) FROM pgbench_branches)")

    def pgb_fingerprint_ch(self, db, final):
        f = " FINAL WHERE _is_deleted = 0" if final else ""
        return self.ch.scalar(
            f"SELECT concat((SELECT concat(toString(count()), ' ', toString(sum(abalance))) FROM {db}.pgbench_accounts{f}), "
            f"' ', (SELECT concat(toString(count()), ' ', toString(sum(tbalance))) FROM {db}.pgbench_tellers{f}), "
            f"' ', (SELECT concat(toString(count()), ' ', toString(sum(bbalance))) FROM {db}.pgbench_branches{f}))")

    def pgb_converge(self, system, db, final, proc, timeout=60):
        """Waits (up to timeout s) until the keyed tables' count and balance
        sums equal PostgreSQL's, so that the comparison sees the last changes."""
        want = self.pgb_fingerprint_pg()
        t0 = time.monotonic()
        got = None
        while time.monotonic() - t0 < timeout:
            if proc is not None and proc.poll() is not None:
                break
            try:
                got = self.pgb_fingerprint_ch(db, final)
                if got == want:
                    return
            except Exception as e:  # noqa: BLE001
                got = str(e)[:200]
            time.sleep(0.5)
        log(f"pgbench: {system} did not converge in {timeout} s ({got} vs {want}); comparing anyway")

    def pgb_compare(self, system, db, final, table):
        """Row for row: PostgreSQL's table against the replica's (FINAL, not
        deleted). Keyed tables are walked in key order; pgbench_history (no
        key) is compared as a multiset. char(n) without trailing blanks,
        timestamps as epoch microseconds."""
        res = {"system": system, "table": table}
        names = self.ch.q(f"SELECT name FROM system.tables WHERE database = '{db}' FORMAT TSV").split()
        if table not in names:
            res.update(equal=False, status="not replicated",
                       pg_rows=int(self.pg.psql(f"SELECT count(*) FROM {table}")),
                       error=self.pgb_missing_reason(db, table))
            return res
        cols = [line.split("|") for line in self.pg.psql(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position").splitlines()]
        pg_exprs, ch_exprs = [], []
        for name, typ in cols:
            if typ == "character":
                pg_exprs.append(f"rtrim({name})")
                ch_exprs.append(f"trimRight({name})")
            elif typ.startswith("timestamp"):
                pg_exprs.append(f"(extract(epoch FROM {name}) * 1000000)::int8")
                ch_exprs.append(f"toUnixTimestamp64Micro({name})")
            else:
                pg_exprs.append(name)
                ch_exprs.append(name)
        key = PGB_KEYS[table]
        order = f" ORDER BY {key}" if key else ""
        pg_rows = run([self.pg.tool("psql"), "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres",
                       "-d", DB, "-X", "-q", "-c",
                       f"COPY (SELECT {', '.join(pg_exprs)} FROM {table}{order}) TO STDOUT"]).stdout.splitlines()
        where = " FINAL WHERE _is_deleted = 0" if final else ""
        ch_rows = self.ch.q(f"SELECT {', '.join(ch_exprs)} FROM {db}.{table}{where}{order} FORMAT TSV").splitlines()
        if key:
            diff, only_pg, only_ch = keyed_differences(pg_rows, ch_rows)
        else:
            a, b = collections.Counter(pg_rows), collections.Counter(ch_rows)
            diff = sum(((a - b) + (b - a)).values())
            only_pg, only_ch = list((a - b).elements())[:3], list((b - a).elements())[:3]
        res.update(equal=diff == 0, pg_rows=len(pg_rows), ch_rows=len(ch_rows), differences=diff,
                   compared_as="rows by key" if key else "multiset of rows (no key)",
                   columns=[c[0] for c in cols])
        if diff:
            res["examples_postgresql"] = only_pg
            res["examples_clickhouse"] = only_ch
            if not key:
                res["distinct_rows_postgresql"] = len(a)
                res["distinct_rows_clickhouse"] = len(b)
            # The same comparison with NULL and '' taken as equal: tells a
            # lost NULL apart from lost or changed rows.
            def blank(rows):
                return ["\t".join("" if f == "\\N" else f for f in r.split("\t")) for r in rows]
            pa, ca = blank(pg_rows), blank(ch_rows)
            if key:
                res["differences_null_as_empty"] = keyed_differences(pa, ca)[0]
            else:
                a2, b2 = collections.Counter(pa), collections.Counter(ca)
                res["differences_null_as_empty"] = sum(((a2 - b2) + (b2 - a2)).values())
        log(f"pgbench compare {system}/{table}: {'equal' if diff == 0 else f'{diff} differences'}"
            f" ({len(pg_rows)} rows in PostgreSQL, {len(ch_rows)} in ClickHouse)")
        return res

    # --------------------------------------------------------------- ratios
    def ratios(self):
        ms = [m for m in self.report["measurements"] if m.get("status") == "ok"]
        for phase in PHASES:
            for table in sorted({m["table"] for m in ms if m["phase"] == phase}):
                group = [m for m in ms if m["phase"] == phase and m["table"] == table]
                # Every way of running sluice (`run`, `snapshot`) against every peer.
                ours = [m for m in group if m["system"].startswith("sluice")] or [None]
                for our in ours:
                    for peer in (m for m in group if not m["system"].startswith("sluice")):
                        r = {"phase": phase, "table": table, "peer": peer["system"]}
                        if our is None:
                            r["status"] = "sluice not measured"
                        else:
                            if our["system"] != "sluice":
                                r["sluice"] = our["system"]
                            if phase in ("latency", "pgbench"):
                                for k in ("p50_ms", "p99_ms") + (("max_ms",) if phase == "pgbench" else ()):
                                    if our.get(k) and peer.get(k):
                                        r[f"{k}_sluice_over_peer"] = round(our[k] / peer[k], 3)
                            else:
                                r["rows_per_s_sluice_over_peer"] = round(our["rows_per_s"] / peer["rows_per_s"], 3)
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
        pgb = [m for m in self.report["measurements"] if m["phase"] == "pgbench" and m.get("run")]
        if pgb:
            runs = self.report.get("pgbench_workload", {}).get("runs", {})
            lines += ["", "| pgbench run | pgbench tps | system | visible on | tx | p50 ms | p99 ms | max ms "
                          "| keeps up | catch-up s | parts/min | peak RSS MiB | status |",
                      "|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
            for m in pgb:
                rss = m.get("peak_rss_kib")
                lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    m["run"], round(runs.get(m["run"], {}).get("tps", 0), 1) or "", m["system"], m.get("visible_on", ""),
                    m.get("rows", ""), m.get("p50_ms", ""), m.get("p99_ms", ""), m.get("max_ms", ""),
                    {True: "yes", False: "no"}.get(m.get("keeps_up"), ""), m.get("catch_up_s", ""),
                    m.get("parts_per_min", ""), round(rss / 1024, 1) if rss else "",
                    m["status"] if m["status"] == "ok" else f"{m['status']}: {m.get('error', '')[:80]}"))
        cmp_ = self.report.get("pgbench_compare")
        if cmp_:
            lines += ["", "| pgbench compare | table | equal | PostgreSQL rows | ClickHouse rows | differences "
                          "| differences, NULL = '' |",
                      "|---|---|---|---:|---:|---:|---:|"]
            for c in cmp_:
                eq = "yes" if c.get("equal") else ("no" if "differences" in c else c.get("status", "no"))
                lines.append(f"| {c['system']} | {c['table']} | {eq} | {c.get('pg_rows', '')} | "
                             f"{c.get('ch_rows', '')} | {c.get('differences', '')} | "
                             f"{c.get('differences_null_as_empty', '')} |")
        return "\n".join(lines)

    # ----------------------------------------------------------------- main
    def cleanup(self):
        for p in self.procs:
            self.stop(p)
        try:
            self.resume_mpg()
        except Exception:  # noqa: BLE001
            pass
        for db in ("bench_mpg", "bench_mpg_lat", PGB_MPG_DB, PGB_SLUICE_DB):
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
            if getattr(self, "kafka_proc", None):
                self.kafka_proc.kill()
                self.kafka_proc.wait()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        else:
            try:
                for slot in ("bench_recv", "bench_sluice", "bench_kafka", "bench_sluice_lat", PGB_SLUICE_SLOT, PGB_TS_SLOT):
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
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated: " + ", ".join(PHASES))
    ap.add_argument("--sluice", default=os.environ.get("SLUICE_BIN") or None,
                    help="use this sluice binary instead of building one (default: $SLUICE_BIN if set)")
    ap.add_argument("--reuse-services", action="store_true",
                    help="use the shared servers of scripts/services.sh instead of private instances")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = ap.parse_args()
    if args.size not in SIZES and not args.size.isdigit():
        ap.error("--size must be smoke, small, medium, large or a row count")
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        ap.error(f"unknown phase(s) {', '.join(sorted(unknown))}; known: {', '.join(PHASES)}")
    return Harness(args).main()


if __name__ == "__main__":
    sys.exit(main())
