"""The `poll` phase of the e2e harness: sluice's cursor-polled source copying
the same tables as the snapshot phase, beside ClickHouse's own copies.

  sluice_poll               [source.poll] kind = "postgres": start of `sluice run`
                            to every row in ClickHouse (the first poll copies
                            the table: COPY (SELECT ... ORDER BY cursor) binary)
  clickhouse_postgresql_fn  INSERT ... SELECT FROM postgresql() (same data)
  clickhouse_insert_select  INSERT ... SELECT of the copied table (without
                            sluice's metadata columns) into a plain MergeTree
                            table, within the server (remote() needs the
                            native TCP port, which the test ClickHouse
                            stand-in does not serve)
  sluice_poll_clickhouse    [source.poll] kind = "clickhouse": that plain table
                            polled into another ClickHouse database (ArrowStream)
  sluice_reconcile          one reconcile round (hard deletes) over the table
                            sluice_poll copied: RECONCILE_GONE keys that exist
                            only in ClickHouse are planted, then `sluice run`
                            resumes with reconcile_interval and the default
                            reconcile_chunk; keys compared per second, from
                            the round's log line
  sluice_reconcile_clickhouse  the same for sluice_poll_clickhouse's copy
                            (the source's lookup is an IN list on its key)
The logical source's numbers for the same tables are the snapshot phase's.
"""

import re
import time

# table -> (cursor column, key column)
TABLES = {"accounts": ("aid", "aid"), "mixed": ("created", "id")}
INTERVAL = "200ms"
# Keys planted in ClickHouse only, which a reconcile round must delete.
RECONCILE_GONE = 1000
ROUND_RE = re.compile(r"reconcile round done.*keys_checked=(\d+) deletes=(\d+) seconds=([0-9.]+)")
NATIVE_DB = "bench_pollch_native"


def config(h, name, source, ch_db):
    path = f"{h.work}/{name}.toml"
    with open(path, "w") as f:
        f.write(f"""[pipeline]
name = "{name}"
checkpoint_dir = "{h.work}/checkpoints"

{source}
[batch]
max_rows = 100000
max_bytes = "64MiB"

[sink.clickhouse]
url = "{h.ch.url}"
database = "{ch_db}"
user = "default"
""")
    return path


def timed_run(h, cfg, tag, count_sql, rows, timeout):
    """Starts `sluice run`, waits until `count_sql` reaches `rows`, stops it."""
    t0 = time.monotonic()
    p = h.start_sluice(cfg, tag)
    peaks = []
    try:
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"sluice exited {p.returncode}: {h.log_tail(tag)}")
            v = h.rss_peak_kib(p.pid)
            if v:
                peaks.append(v)
            try:
                if int(h.ch.scalar(count_sql)) >= rows:
                    break
            except Exception:  # noqa: BLE001
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"not done after {timeout} s: {h.log_tail(tag)}")
            if "table stopped" in h.log_tail(tag):
                raise RuntimeError(f"sluice stopped the table: {h.log_tail(tag)}")
            time.sleep(0.1)
        return time.monotonic() - t0, (max(peaks) if peaks else None)
    finally:
        h.stop(p)


def pg_source(h, table, extra=""):
    cursor, _ = TABLES[table]
    return f"""[source.poll]
kind = "postgres"
url = "{h.pg.url()}"
interval = "{INTERVAL}"

[[source.poll.tables]]
table = "public.{table}"
cursor = "{cursor}"
{extra}"""


def pg_reconcile(h, table, rows, timeout):
    """Resumes sluice_poll's pipeline (same checkpoint, nothing to copy) with
    a reconcile; measures its first round."""
    source = pg_source(h, table, 'reconcile_interval = "1s"\n')
    return reconcile_round(h, table, rows, timeout, source, f"bench_poll_{table}", table,
                           "sluice_reconcile", table)


def ch_source(h, table, extra=""):
    cursor, _ = TABLES[table]
    return f"""[source.poll]
kind = "clickhouse"
url = "{h.ch.url}"
interval = "{INTERVAL}"
settle_delay = "{INTERVAL}"

[[source.poll.tables]]
table = "{NATIVE_DB}.{table}"
cursor = "{cursor}"
{extra}"""


def reconcile_round(h, table, rows, timeout, source, name, target, system, label):
    """Plants keys that only the sink has, resumes pipeline `name` with
    `source` (reconcile on), measures its first round."""
    _, key = TABLES[table]
    ch_db = name
    # Keys below every real one, alive only in ClickHouse: gone from the source.
    h.ch.q(f"INSERT INTO {ch_db}.{target} ({key}, _version, _is_deleted) "
           f"SELECT -1 - number, 1, 0 FROM numbers({RECONCILE_GONE})")
    cfg = config(h, name, source, ch_db)
    tag = f"reconcile-{label}"
    p = h.start_sluice(cfg, tag)
    t0 = time.monotonic()
    try:
        while True:
            m = ROUND_RE.search(h.log_tail(tag))
            if m:
                break
            if p.poll() is not None:
                raise RuntimeError(f"sluice exited {p.returncode}: {h.log_tail(tag)}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"no reconcile round after {timeout} s: {h.log_tail(tag)}")
            time.sleep(0.2)
    finally:
        h.stop(p)
    checked, deletes, seconds = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if deletes != RECONCILE_GONE or checked != rows + RECONCILE_GONE:
        raise RuntimeError(f"reconcile compared {checked} keys and deleted {deletes}; "
                           f"expected {rows + RECONCILE_GONE} and {RECONCILE_GONE}")
    live = int(h.ch.scalar(f"SELECT count() FROM {ch_db}.{target} FINAL WHERE _is_deleted = 0"))
    if live != rows:
        raise RuntimeError(f"{live} live rows in ClickHouse after the reconcile, expected {rows}")
    return h.record(phase="poll", system=system, table=label, rows=checked,
                    seconds=round(seconds, 3),
                    note=f"one reconcile round, reconcile_chunk default: {checked} keys compared "
                         f"(rows_per_s = keys/s), {deletes} deletes written")


def pg_poll(h, table, rows, timeout):
    cursor, _ = TABLES[table]
    ch_db = f"bench_poll_{table}"
    h.ch.q(f"DROP DATABASE IF EXISTS {ch_db}")
    source = pg_source(h, table)
    cfg = config(h, f"bench_poll_{table}", source, ch_db)
    dt, rss = timed_run(h, cfg, f"poll-{table}", f"SELECT count() FROM {ch_db}.{table}", rows, timeout)
    return h.record(phase="poll", system="sluice_poll", table=table, rows=rows, seconds=round(dt, 3),
                    bytes=h.copy_bytes.get(table), peak_rss_kib=rss,
                    note=f"[source.poll] postgres, cursor {cursor}, interval {INTERVAL}: start to every row in ClickHouse")


def ch_poll(h, table, rows, timeout):
    """The plain copy made by ch_insert_select, polled into another database."""
    cursor, _ = TABLES[table]
    src, ch_db = NATIVE_DB, f"bench_pollch_{table}"
    h.ch.q(f"DROP DATABASE IF EXISTS {ch_db}")
    source = ch_source(h, table)
    cfg = config(h, f"bench_pollch_{table}", source, ch_db)
    dt, rss = timed_run(h, cfg, f"pollch-{table}", f"SELECT count() FROM {ch_db}.{src}_{table}", rows, timeout)
    return h.record(phase="poll", system="sluice_poll_clickhouse", table=f"ch:{table}", rows=rows,
                    seconds=round(dt, 3), peak_rss_kib=rss,
                    note=f"[source.poll] clickhouse, cursor {cursor}: start to every row in the other database")


def ch_insert_select(h, table, rows):
    src, dst = f"bench_poll_{table}", NATIVE_DB
    _, key = TABLES[table]
    h.ch.q(f"CREATE DATABASE IF NOT EXISTS {dst}")
    h.ch.q(f"DROP TABLE IF EXISTS {dst}.{table}")
    cols = h.ch.scalar(f"SELECT arrayStringConcat(groupArray(name), ', ') FROM system.columns "
                       f"WHERE database = '{src}' AND table = '{table}' AND name NOT LIKE '\\_%' ")
    h.ch.q(f"CREATE TABLE {dst}.{table} ENGINE = MergeTree ORDER BY {key} AS SELECT {cols} FROM {src}.{table} LIMIT 0")
    t0 = time.monotonic()
    h.ch.q(f"INSERT INTO {dst}.{table} SELECT {cols} FROM {src}.{table}")
    dt = time.monotonic() - t0
    got = int(h.ch.scalar(f"SELECT count() FROM {dst}.{table}"))
    if got != rows:
        raise RuntimeError(f"INSERT ... SELECT: {got} rows landed, expected {rows}")
    return h.record(phase="poll", system="clickhouse_insert_select", table=f"ch:{table}", rows=rows,
                    seconds=round(dt, 3))


def run(h, timeout):
    # The polled cursor needs an index to be read in order without a sort.
    h.pg.psql("CREATE INDEX IF NOT EXISTS mixed_created ON mixed (created)")
    for table, rows in (("accounts", h.size["accounts"]), ("mixed", h.size["mixed"])):
        h.attempt("poll", "sluice_poll", table, lambda: pg_poll(h, table, rows, timeout))
        h.attempt("poll", "clickhouse_postgresql_fn", table, lambda: h.snap_pgfn(table, rows, phase="poll"))
        h.attempt("poll", "clickhouse_insert_select", f"ch:{table}", lambda: ch_insert_select(h, table, rows))
        h.attempt("poll", "sluice_poll_clickhouse", f"ch:{table}", lambda: ch_poll(h, table, rows, timeout))
        h.attempt("poll", "sluice_reconcile", table, lambda: pg_reconcile(h, table, rows, timeout))
        h.attempt("poll", "sluice_reconcile_clickhouse", f"ch:{table}",
                  lambda: reconcile_round(h, table, rows, timeout,
                                          ch_source(h, table, 'reconcile_interval = "1s"\n'),
                                          f"bench_pollch_{table}", f"{NATIVE_DB}_{table}",
                                          "sluice_reconcile_clickhouse", f"ch:{table}"))
        for db in (f"bench_poll_{table}", f"bench_pollch_{table}", NATIVE_DB):
            h.ch.q(f"DROP DATABASE IF EXISTS {db}")
