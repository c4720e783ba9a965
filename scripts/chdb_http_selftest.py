#!/usr/bin/env python3
"""Self-test of a ClickHouse HTTP endpoint (chdb_http.py or a real server).

Usage: python3 scripts/chdb_http_selftest.py [URL]
URL defaults to $SLUICE_TEST_CLICKHOUSE_URL.  Creates and drops the database
`sluice_selftest`.  Needs pyarrow (a dependency of chdb-core).
Prints one line per check and exits non-zero if any check fails.
"""

import base64
import decimal
import datetime
import gzip
import http.client
import io
import json
import os
import struct
import sys
import threading
import time
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SLUICE_TEST_CLICKHOUSE_URL", "")
if not URL:
    sys.exit("usage: chdb_http_selftest.py URL (or set SLUICE_TEST_CLICKHOUSE_URL)")
U = urllib.parse.urlsplit(URL)
HOST, PORT = U.hostname, U.port or 8123
DB = "sluice_selftest"

failures = []
passed = 0


def req(query=None, body=b"", params=None, headers=None, method="POST", conn=None, path="/"):
    p = dict(params or {})
    if query is not None:
        p["query"] = query
    url = path + ("?" + urllib.parse.urlencode(p) if p else "")
    own = conn is None
    c = conn or http.client.HTTPConnection(HOST, PORT, timeout=60)
    h = {"Content-Length": str(len(body))} if not (headers and "Transfer-Encoding" in headers) else {}
    h.update(headers or {})
    c.request(method, url, body=body if body else None, headers=h)
    r = c.getresponse()
    data = r.read()
    if own:
        c.close()
    return r.status, dict(r.getheaders()), data


def q(sql, **kw):
    st, hd, data = req(sql, **kw)
    if st != 200:
        raise AssertionError(f"{sql!r}: HTTP {st}: {data[:300]!r}")
    return data


def check(name, fn):
    global passed
    t0 = time.monotonic()
    try:
        fn()
        passed += 1
        print(f"ok   {name} ({(time.monotonic() - t0) * 1000:.0f} ms)")
    except Exception as e:  # noqa: BLE001
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def eq(a, b):
    if a != b:
        raise AssertionError(f"{a!r} != {b!r}")


def arrow_stream(table):
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def t_ping():
    st, _, data = req(method="GET", path="/ping")
    eq((st, data), (200, b"Ok.\n"))
    st, _, data = req(method="GET")
    eq((st, data), (200, b"Ok.\n"))


def t_setup():
    q(f"DROP DATABASE IF EXISTS {DB}")
    q(f"CREATE DATABASE {DB}")


def t_select_default_format():
    st, hd, data = req("SELECT 1 AS a, 'x' AS b")
    eq((st, data), (200, b"1\tx\n"))
    eq(hd.get("X-ClickHouse-Format"), "TabSeparated")
    assert "X-ClickHouse-Query-Id" in hd and "X-ClickHouse-Summary" in hd, hd
    json.loads(hd["X-ClickHouse-Summary"])
    eq(hd.get("X-ClickHouse-Timezone"), "UTC")


def t_query_in_body_and_url():
    eq(q(None, body=b"SELECT 2"), b"2\n")
    eq(q("SELECT", body=b"3"), b"3\n")  # URL + "\n" + body


def t_database_param_and_header():
    q("CREATE TABLE t_db (x UInt8) ENGINE = Memory", params={"database": DB})
    eq(q("SELECT currentDatabase()", params={"database": DB}), DB.encode() + b"\n")
    eq(q("SELECT currentDatabase()", headers={"X-ClickHouse-Database": DB}), DB.encode() + b"\n")
    eq(q("SELECT currentDatabase()"), b"default\n")  # does not stick


def t_jsoneachrow_roundtrip():
    q(f"CREATE TABLE {DB}.j (id UInt64, s String, n Nullable(Int32), d String DEFAULT 'dflt') "
      "ENGINE = MergeTree ORDER BY id")
    body = b'{"id":1,"s":"a","n":null}\n{"s":"b","id":2,"n":5}\n'
    st, hd, _ = req(f"INSERT INTO {DB}.j FORMAT JSONEachRow", body=body)
    eq(st, 200)
    eq(json.loads(hd["X-ClickHouse-Summary"])["written_rows"], "2")
    out = json.loads(q(f"SELECT * FROM {DB}.j ORDER BY id FORMAT JSON"))
    eq(out["data"], [{"id": 1, "s": "a", "n": None, "d": "dflt"},
                     {"id": 2, "s": "b", "n": 5, "d": "dflt"}])


def t_insert_statement_in_body():
    eq(q(None, body=f"INSERT INTO {DB}.j FORMAT JSONEachRow\n{{\"id\":3,\"s\":\"c\"}}\n".encode()), b"")
    eq(q(f"INSERT INTO {DB}.j (id, s) VALUES (4, 'd')"), b"")
    eq(q(f"SELECT count() FROM {DB}.j"), b"4\n")


def t_arrowstream_reordered_types():
    q(f"CREATE TABLE {DB}.a (id UInt64, name String, n Nullable(Int32), d Decimal(18,4), "
      "ts DateTime64(6, 'UTC'), u UUID, extra String DEFAULT 'dflt') ENGINE = MergeTree ORDER BY id")
    tbl = pa.table({
        "u": pa.array([uuid.UUID(int=1).bytes, uuid.UUID(int=2).bytes], pa.binary(16)),
        "ts": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), datetime.datetime(1999, 12, 31)],
                       pa.timestamp("us", tz="UTC")),
        "d": pa.array([decimal.Decimal("1.2345"), decimal.Decimal("-99.0001")], pa.decimal128(18, 4)),
        "n": pa.array([None, 5], pa.int32()),
        "name": pa.array(["x", "y"]),
        "id": pa.array([1, 2], pa.uint64()),
    })
    eq(q(f"INSERT INTO {DB}.a FORMAT ArrowStream", body=arrow_stream(tbl)), b"")
    eq(q(f"SELECT * FROM {DB}.a ORDER BY id"),
       b"1\tx\t\\N\t1.2345\t2024-01-02 03:04:05.123456\t00000000-0000-0000-0000-000000000001\tdflt\n"
       b"2\ty\t5\t-99.0001\t1999-12-31 00:00:00.000000\t00000000-0000-0000-0000-000000000002\tdflt\n")
    # and back out as Arrow
    data = q(f"SELECT id, n, d, ts FROM {DB}.a ORDER BY id FORMAT ArrowStream")
    back = pa.ipc.open_stream(data).read_all()
    eq(back.column("n").to_pylist(), [None, 5])
    eq(back.column("d").to_pylist(), [decimal.Decimal("1.2345"), decimal.Decimal("-99.0001")])


def t_rowbinary_positional():
    q(f"CREATE TABLE {DB}.rb (a UInt8, b UInt16, s String) ENGINE = Memory")
    body = b"\x01" + struct.pack("<H", 513) + b"\x02hi"
    q(f"INSERT INTO {DB}.rb FORMAT RowBinary", body=body)
    # column list: positional over the listed columns, others default
    q(f"INSERT INTO {DB}.rb (b, a) FORMAT RowBinary", body=struct.pack("<H", 7) + b"\x09")
    eq(q(f"SELECT * FROM {DB}.rb ORDER BY a"), b"1\t513\thi\n9\t7\t\n")
    eq(q(f"SELECT a, b FROM {DB}.rb WHERE a = 1 FORMAT RowBinary"), b"\x01\x01\x02")


def t_rowbinary_with_names_and_types():
    data = q(f"SELECT s, a FROM {DB}.rb WHERE a = 1 FORMAT RowBinaryWithNamesAndTypes")
    q(f"CREATE TABLE {DB}.rb2 (a UInt8, s String) ENGINE = Memory")
    q(f"INSERT INTO {DB}.rb2 FORMAT RowBinaryWithNamesAndTypes", body=data)
    eq(q(f"SELECT * FROM {DB}.rb2"), b"1\thi\n")


def t_native_parquet_csv_tsv():
    q(f"CREATE TABLE {DB}.f (id UInt32, v String) ENGINE = MergeTree ORDER BY id")
    native = q("SELECT toString(number) AS v, toUInt32(number) AS id FROM numbers(3) FORMAT Native")
    q(f"INSERT INTO {DB}.f FORMAT Native", body=native)
    pbuf = io.BytesIO()
    pq.write_table(pa.table({"v": ["p"], "id": pa.array([10], pa.uint32())}), pbuf)
    q(f"INSERT INTO {DB}.f FORMAT Parquet", body=pbuf.getvalue())
    q(f"INSERT INTO {DB}.f FORMAT CSV", body=b"20,csv\n")
    q(f"INSERT INTO {DB}.f FORMAT TSV", body=b"30\ttsv\n")
    q(f"INSERT INTO {DB}.f FORMAT Arrow", body=_arrow_file(pa.table({"id": pa.array([40], pa.uint32()), "v": ["arrowfile"]})))
    eq(q(f"SELECT id, v FROM {DB}.f ORDER BY id FORMAT CSV"),
       b'0,"0"\n1,"1"\n2,"2"\n10,"p"\n20,"csv"\n30,"tsv"\n40,"arrowfile"\n')


def _arrow_file(tbl):
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, tbl.schema) as w:
        w.write_table(tbl)
    return sink.getvalue()


def t_replacing_final_is_deleted():
    q(f"CREATE TABLE {DB}.r (id UInt64, v String, _version UInt64, _is_deleted UInt8) "
      "ENGINE = ReplacingMergeTree(_version, _is_deleted) ORDER BY id")
    q(f"INSERT INTO {DB}.r FORMAT JSONEachRow",
      body=b'{"id":1,"v":"a","_version":1,"_is_deleted":0}\n{"id":2,"v":"b","_version":1,"_is_deleted":0}\n')
    q(f"INSERT INTO {DB}.r FORMAT JSONEachRow",
      body=b'{"id":1,"v":"a2","_version":2,"_is_deleted":0}\n{"id":2,"v":"b","_version":2,"_is_deleted":1}\n')
    eq(q(f"SELECT id, v FROM {DB}.r FINAL ORDER BY id"), b"1\ta2\n")
    eq(q(f"SELECT count() FROM {DB}.r"), b"4\n")
    q(f"OPTIMIZE TABLE {DB}.r FINAL")


def t_errors():
    st, hd, data = req("SELEC 1")
    eq((st, hd.get("X-ClickHouse-Exception-Code")), (400, "62"))
    assert data.startswith(b"Code: 62. DB::Exception: Syntax error") and b"(SYNTAX_ERROR) (version " in data, data
    st, hd, data = req("SELECT * FROM nosuch_table_x")
    eq((st, hd.get("X-ClickHouse-Exception-Code")), (404, "60"))
    st, hd, data = req("SELECT 1", params={"database": "nosuch_db_x"})
    eq((st, hd.get("X-ClickHouse-Exception-Code")), (404, "81"))
    st, hd, data = req(f"INSERT INTO {DB}.j FORMAT JSONEachRow", body=b'{"id":"zz"}\n')
    assert st in (400, 500) and data.startswith(b"Code: "), (st, data)
    st, hd, data = req("SELECT throwIf(1)")
    eq(st, 500)
    st, hd, data = req("SELECT 1", params={"compress": "1"})
    assert st == 501 and b"compress" in data, (st, data)
    st, hd, data = req("SELECT 1; SELECT 2")
    eq(st, 400)


def t_settings_per_query():
    eq(q("SELECT getSetting('max_threads')", params={"max_threads": "1"}), b"1\n")
    assert q("SELECT getSetting('max_threads')") != b"1\n"
    st, _, data = req("SELECT number FROM numbers(10)", params={"max_result_rows": "2", "result_overflow_mode": "throw"})
    eq(st, 500)
    st, _, data = req("SELECT 1", params={"no_such_setting_x": "1"})
    eq(st, 404)
    q("SET max_threads = 1")  # no session: does not stick
    assert q("SELECT getSetting('max_threads')") != b"1\n"


def t_session_id():
    sid = {"session_id": "selftest-" + uuid.uuid4().hex}
    q("SET max_threads = 1", params=sid)
    eq(q("SELECT getSetting('max_threads')", params=sid), b"1\n")
    q(f"USE {DB}", params=sid)
    eq(q("SELECT currentDatabase()", params=sid), DB.encode() + b"\n")
    eq(q("SELECT currentDatabase()"), b"default\n")


def t_query_parameters():
    eq(q("SELECT {x:UInt32} + 1, {s:String}", params={"param_x": "41", "param_s": "a b"}), b"42\ta b\n")
    boundary = "selftestboundary"
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in [("query", "SELECT {x:UInt8} * 2"), ("param_x", "21")])
    body += f"--{boundary}--\r\n"
    eq(q(None, body=body.encode(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}), b"42\n")


def t_http_compression():
    gz = gzip.compress(b"SELECT 5")
    eq(q(None, body=gz, headers={"Content-Encoding": "gzip"}), b"5\n")
    st, hd, data = req("SELECT 6", params={"enable_http_compression": "1"}, headers={"Accept-Encoding": "gzip"})
    eq((st, hd.get("Content-Encoding"), gzip.decompress(data)), (200, "gzip", b"6\n"))
    st, hd, data = req("SELECT 6", headers={"Accept-Encoding": "gzip"})
    eq((hd.get("Content-Encoding"), data), (None, b"6\n"))


def t_chunked_and_keepalive():
    c = http.client.HTTPConnection(HOST, PORT, timeout=30)
    for i in range(3):
        c.putrequest("POST", "/?" + urllib.parse.urlencode({"query": f"INSERT INTO {DB}.j FORMAT JSONEachRow"}))
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for piece in (b'{"id":%d,' % (100 + i), b'"s":"chunk"}\n'):
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        r.read()
        eq(r.status, 200)
    st, _, data = req(f"SELECT count() FROM {DB}.j WHERE s = 'chunk'", conn=c)
    eq(data, b"3\n")
    c.close()


def t_concurrent_inserts():
    q(f"CREATE TABLE {DB}.c (id UInt64, w UInt8) ENGINE = MergeTree ORDER BY id")
    errs = []

    def work(w):
        try:
            rows = "".join(json.dumps({"id": w * 1000 + i, "w": w}) + "\n" for i in range(100))
            q(f"INSERT INTO {DB}.c FORMAT JSONEachRow", body=rows.encode())
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=work, args=(w,)) for w in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    eq(q(f"SELECT count(), uniqExact(w) FROM {DB}.c"), b"2000\t20\n")


def t_auth_header_accepted():
    tok = base64.b64encode(b"default:whatever").decode()
    st, _, _ = req("SELECT 1", headers={"Authorization": "Basic " + tok})
    assert st in (200, 403), st


def t_cleanup():
    q(f"DROP DATABASE IF EXISTS {DB}")


tests = [t_ping, t_setup, t_select_default_format, t_query_in_body_and_url, t_database_param_and_header,
         t_jsoneachrow_roundtrip, t_insert_statement_in_body, t_arrowstream_reordered_types,
         t_rowbinary_positional, t_rowbinary_with_names_and_types, t_native_parquet_csv_tsv,
         t_replacing_final_is_deleted, t_errors, t_settings_per_query, t_session_id,
         t_query_parameters, t_http_compression, t_chunked_and_keepalive, t_concurrent_inserts,
         t_auth_header_accepted, t_cleanup]
for t in tests:
    check(t.__name__[2:], t)
print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
