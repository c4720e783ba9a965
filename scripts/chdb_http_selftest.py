#!/usr/bin/env python3
"""Self-test of a ClickHouse HTTP endpoint (chdb_http.py or a real server),
and of chdb_http.py's credentials and TLS.

Usage: python3 scripts/chdb_http_selftest.py [--no-spawn | --spawn-only] [URL]

URL (http or https; https is verified against the system CAs or
$SSL_CERT_FILE) defaults to $SLUICE_TEST_CLICKHOUSE_URL; `user:password@` in
it is sent as HTTP Basic auth.  The URL checks create and drop the database
`sluice_selftest` and are meant to pass against a real ClickHouse too.

Unless --no-spawn, the auth_* and tls_* checks then start two private
chdb_http.py instances (this script's directory, free ports, a temp dir):
one with users, one with users and HTTPS under a throwaway CA made with
openssl; they need openssl and curl.  --spawn-only runs just those (no URL).

Needs pyarrow (a dependency of chdb-core).  Prints one line per check and
exits non-zero if any check fails.
"""

import base64
import decimal
import datetime
import gzip
import http.client
import io
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

_args = sys.argv[1:]
SPAWN = "--no-spawn" not in _args
URL_CHECKS = "--spawn-only" not in _args
_rest = [a for a in _args if a not in ("--no-spawn", "--spawn-only")]
if not SPAWN and not URL_CHECKS or len(_rest) > 1 or any(a.startswith("-") for a in _rest):
    sys.exit("usage: chdb_http_selftest.py [--no-spawn | --spawn-only] [URL]")
URL = _rest[0] if _rest else os.environ.get("SLUICE_TEST_CLICKHOUSE_URL", "")
if URL_CHECKS and not URL:
    sys.exit("usage: chdb_http_selftest.py [--no-spawn | --spawn-only] URL "
             "(or set SLUICE_TEST_CLICKHOUSE_URL)")
U = urllib.parse.urlsplit(URL)
HOST, PORT = U.hostname, U.port or (8443 if U.scheme == "https" else 8123)
URL_AUTH = {}
if U.username is not None:
    _cred = (urllib.parse.unquote(U.username) + ":" + urllib.parse.unquote(U.password or "")).encode()
    URL_AUTH = {"Authorization": "Basic " + base64.b64encode(_cred).decode()}
DB = "sluice_selftest"


def connect(timeout=60):
    if U.scheme == "https":
        return http.client.HTTPSConnection(HOST, PORT, timeout=timeout,
                                           context=ssl.create_default_context())
    return http.client.HTTPConnection(HOST, PORT, timeout=timeout)


failures = []
passed = 0


def req(query=None, body=b"", params=None, headers=None, method="POST", conn=None, path="/"):
    p = dict(params or {})
    if query is not None:
        p["query"] = query
    url = path + ("?" + urllib.parse.urlencode(p) if p else "")
    own = conn is None
    c = conn or connect()
    h = {"Content-Length": str(len(body))} if not (headers and "Transfer-Encoding" in headers) else {}
    if not any(k in (headers or {}) for k in ("Authorization", "X-ClickHouse-User", "X-ClickHouse-Key")):
        h.update(URL_AUTH)
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


def t_insert_settings_apply_to_that_insert_only():
    # The front puts a request's settings into the INSERT itself.
    q(f"CREATE TABLE {DB}.ins_settings (a UInt8, n UInt8 DEFAULT 7) ENGINE = MergeTree ORDER BY a")
    q(f"INSERT INTO {DB}.ins_settings FORMAT TSV", body=b"1\t\\N\n",
      params={"input_format_null_as_default": "1"})
    st, _, _ = req(f"INSERT INTO {DB}.ins_settings FORMAT TSV", body=b"2\t\\N\n",
                   params={"input_format_null_as_default": "0"})
    eq(st, 400)  # cannot parse \N as UInt8
    # A SETTINGS clause of its own is kept; the request's go the other way.
    q(f"INSERT INTO {DB}.ins_settings SETTINGS input_format_null_as_default = 1 FORMAT TSV",
      body=b"3\t\\N\n", params={"max_threads": "1"})
    st, _, _ = req(f"INSERT INTO {DB}.ins_settings FORMAT TSV", body=b"4\t4\n", params={"no_such_setting_x": "1"})
    eq(st, 404)
    eq(q(f"SELECT a, n FROM {DB}.ins_settings ORDER BY a"), b"1\t7\n3\t7\n")
    assert q("SELECT getSetting('input_format_null_as_default')") == b"true\n"
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
    c = connect(timeout=30)
    for i in range(3):
        c.putrequest("POST", "/?" + urllib.parse.urlencode({"query": f"INSERT INTO {DB}.j FORMAT JSONEachRow"}))
        c.putheader("Transfer-Encoding", "chunked")
        for k, v in URL_AUTH.items():
            c.putheader(k, v)
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


# --------------------------------------------------------------------------
# Credentials and TLS of chdb_http.py itself, on private instances.

HERE = os.path.dirname(os.path.abspath(__file__))
# Distinct, greppable secrets: none of them may show up in a response or a log.
ALICE_PW = "al1ce-" + uuid.uuid4().hex[:12] + ":with colon & space"
DEFAULT_PW = "dflt-" + uuid.uuid4().hex[:12]
UTF8_USER, UTF8_PW = "jürgen", "pässwörd-" + uuid.uuid4().hex[:8]
SECRETS = (ALICE_PW, DEFAULT_PW, UTF8_PW)
AUTH_FAILED = ("Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
               "or there is no user with such name. (AUTHENTICATION_FAILED) (version {version})\n")

work = None      # temp dir
servers = {}     # name -> Spawned
seen = []        # every response (status, headers, body) from the private servers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Spawned:
    """A chdb_http.py of our own on a free port; `tls` = (cert, key, ca)."""

    def __init__(self, name, extra_args, tls=None):
        self.name, self.tls = name, tls
        self.port = free_port()
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.log = os.path.join(self.dir, "server.log")
        args = [sys.executable, os.path.join(HERE, "chdb_http.py"), "--host", "127.0.0.1",
                "--port", str(self.port), "--data", os.path.join(self.dir, "data")] + extra_args
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.ctx = ssl.create_default_context(cafile=tls[2]) if tls else None

    def conn(self, host="127.0.0.1", timeout=30):
        if self.ctx:
            return http.client.HTTPSConnection(host, self.port, timeout=timeout, context=self.ctx)
        return http.client.HTTPConnection(host, self.port, timeout=timeout)

    def wait_up(self, deadline):
        while True:
            try:
                c = self.conn(timeout=2)
                c.request("GET", "/ping")
                if c.getresponse().read() == b"Ok.\n":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log, errors="replace") as f:
                    raise AssertionError(f"{self.name} did not start: {f.read()[-2000:]}")
            time.sleep(0.2)

    def req(self, sql, params=None, headers=None, conn=None, raw_path=None):
        """POST sql; returns (status, headers, body) and remembers them for
        the leak check."""
        path = raw_path or "/?" + urllib.parse.urlencode(params or {})
        c = conn or self.conn()
        body = sql.encode()
        c.putrequest("POST", path)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            c.putheader(k, v)  # bytes values go out as they are (UTF-8 headers)
        c.endheaders(body)
        r = c.getresponse()
        out = (r.status, dict(r.getheaders()), r.read())
        if conn is None:
            c.close()
        seen.append(out)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def xch(user, password):
    return {"X-ClickHouse-User": user.encode(), "X-ClickHouse-Key": password.encode()}


def ok_select(srv, n, **kw):
    st, hd, data = srv.req(f"SELECT {n}", **kw)
    eq((st, data), (200, f"{n}\n".encode()))


def auth_failed(srv, user, **kw):
    st, hd, data = srv.req("SELECT 1", **kw)
    eq((st, hd.get("X-ClickHouse-Exception-Code")), (403, "516"))
    assert "WWW-Authenticate" not in hd, hd
    eq(data.decode(), AUTH_FAILED.format(user=user, version=srv.version))


def make_certs(d):
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost,
    with the extensions strict verifiers (webpki/rustls) insist on."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    ca_key, ca, key, csr, cert = (os.path.join(d, n) for n in
                                  ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = os.path.join(d, "server.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=sluice selftest CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext)
    return cert, key, ca


def t_spawn_servers():
    global work
    work = tempfile.mkdtemp(prefix="chdb_http_selftest_")
    users = os.path.join(work, "users")
    with open(users, "wb") as f:
        f.write(f"# user:password\nalice:{ALICE_PW}\n\n{UTF8_USER}:{UTF8_PW}\nnopass:\n".encode())
    pw = os.path.join(work, "default-password")
    with open(pw, "w") as f:
        f.write(DEFAULT_PW + "\n")
    tls = make_certs(work)
    servers["auth"] = Spawned("auth", ["--users-file", users, "--password-file", pw])
    servers["tls"] = Spawned("tls", ["--users-file", users], tls=tls)
    deadline = time.monotonic() + 90
    for srv in servers.values():
        srv.wait_up(deadline)
        st, _, data = srv.req("SELECT version()", headers=basic("alice", ALICE_PW))
        eq(st, 200)
        srv.version = data.decode().strip()


def t_auth_basic():
    srv = servers["auth"]
    ok_select(srv, 1, headers=basic("alice", ALICE_PW))
    ok_select(srv, 2, headers=basic(UTF8_USER, UTF8_PW))  # UTF-8 inside base64
    ok_select(srv, 3, headers=basic("nopass", ""))


def t_auth_x_clickhouse_headers():
    srv = servers["auth"]
    ok_select(srv, 1, headers=xch("alice", ALICE_PW))
    ok_select(srv, 2, headers=xch(UTF8_USER, UTF8_PW))  # raw UTF-8 header bytes
    ok_select(srv, 3, headers={"X-ClickHouse-User": "nopass"})


def t_auth_url_parameters():
    srv = servers["auth"]
    ok_select(srv, 1, params={"user": "alice", "password": ALICE_PW})
    ok_select(srv, 2, params={"user": UTF8_USER, "password": UTF8_PW})
    ok_select(srv, 3, params={"password": DEFAULT_PW})  # no user: `default`
    ok_select(srv, 4, params={"user": "default", "password": DEFAULT_PW})


def t_auth_password_file_is_default():
    srv = servers["auth"]
    ok_select(srv, 1, headers=basic("default", DEFAULT_PW))
    auth_failed(srv, "default")  # no credentials at all: user default, empty password


def t_auth_wrong_password():
    srv = servers["auth"]
    auth_failed(srv, "alice", headers=basic("alice", ALICE_PW + "x"))
    auth_failed(srv, "alice", headers=xch("alice", ALICE_PW[:-1]))
    auth_failed(srv, "alice", params={"user": "alice", "password": DEFAULT_PW})
    auth_failed(srv, "alice", params={"user": "alice"})
    auth_failed(srv, "nopass", headers=basic("nopass", "x"))
    auth_failed(srv, "default", headers=basic("default", ALICE_PW))
    auth_failed(srv, UTF8_USER, headers=xch(UTF8_USER, UTF8_PW.upper()))


def t_auth_unknown_user():
    srv = servers["auth"]
    auth_failed(srv, "mallory", headers=basic("mallory", ALICE_PW))
    auth_failed(srv, "mallory", params={"user": "mallory", "password": ""})


def t_auth_refused_forms():
    srv = servers["auth"]
    for kw, text in [
        ({"headers": {**basic("alice", ALICE_PW), **xch("alice", ALICE_PW)}},
         "it is not allowed to use X-ClickHouse HTTP headers and Authorization HTTP header simultaneously"),
        ({"headers": basic("alice", ALICE_PW), "params": {"user": "alice"}},
         "it is not allowed to use Authorization HTTP header and authentication via parameters simultaneously"),
        ({"headers": xch("alice", ALICE_PW), "params": {"password": ALICE_PW}},
         "it is not allowed to use X-ClickHouse HTTP headers and authentication via parameters simultaneously"),
        ({"headers": {"X-ClickHouse-Key": ALICE_PW}}, "Got an empty user name from X-ClickHouse HTTP headers"),
        ({"headers": basic("", ALICE_PW)}, "Got an empty user name from Authorization HTTP header"),
        ({"params": {"user": "", "password": ALICE_PW}}, "Got an empty user name from authentication via parameters"),
        ({"headers": {"Authorization": "Bearer " + ALICE_PW}}, "'Bearer' HTTP Authorization scheme is not supported"),
    ]:
        st, hd, data = srv.req("SELECT 1", **kw)
        eq((st, hd.get("X-ClickHouse-Exception-Code")), (403, "516"))
        assert text in data.decode() and data.decode().endswith("(AUTHENTICATION_FAILED) (version "
                                                                 f"{srv.version})\n"), data


def t_auth_keepalive_after_failure():
    srv = servers["auth"]
    c = srv.conn()
    auth_failed(srv, "alice", headers=basic("alice", "nope"), conn=c)
    ok_select(srv, 7, headers=basic("alice", ALICE_PW), conn=c)
    c.close()


def t_auth_ping_is_open():
    c = servers["auth"].conn()
    c.request("GET", "/ping")
    r = c.getresponse()
    eq((r.status, r.read()), (200, b"Ok.\n"))


def curl(srv, *args, host="127.0.0.1"):
    cp = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30", *args,
                         f"https://{host}:{srv.port}/", "--data-binary", "SELECT 42"],
                        capture_output=True, timeout=60)
    return cp.returncode, cp.stdout, cp.stderr


def t_tls_curl_with_ca():
    srv = servers["tls"]
    ca = srv.tls[2]
    for host in ("127.0.0.1", "localhost"):
        rc, out, err = curl(srv, "--cacert", ca, "-u", f"alice:{ALICE_PW}", host=host)
        eq((rc, out), (0, b"42\n\n200"))
    rc, out, err = curl(srv, "--cacert", ca, "-u", "alice:wrong")
    assert rc == 0 and out.endswith(b"\n403") and b"Code: 516." in out, (rc, out)


def t_tls_curl_without_ca_fails():
    rc, out, err = curl(servers["tls"], "-u", f"alice:{ALICE_PW}")
    assert rc == 60 and b"certificate" in err, (rc, out, err)  # 60: peer certificate not verified


def t_tls_host_name_checked():
    srv = servers["tls"]
    rc, out, err = curl(srv, "--cacert", srv.tls[2], "--resolve", f"not-in-san.test:{srv.port}:127.0.0.1",
                        "-u", f"alice:{ALICE_PW}", host="not-in-san.test")
    assert rc == 60 and b"not-in-san.test" in err, (rc, out, err)


def t_tls_plain_http_refused():
    srv = servers["tls"]
    cp = subprocess.run(["curl", "-sS", "--max-time", "30", "-u", f"alice:{ALICE_PW}",
                         f"http://127.0.0.1:{srv.port}/", "--data-binary", "SELECT 1"],
                        capture_output=True, timeout=60)
    assert cp.returncode != 0 and b"1\n" not in cp.stdout, cp


def t_tls_python_client_keepalive():
    srv = servers["tls"]
    c = srv.conn(host="localhost")
    auth = xch("alice", ALICE_PW)
    eq(srv.req("CREATE TABLE tls_t (x UInt8) ENGINE = Memory", headers=auth, conn=c)[0], 200)
    eq(srv.req("INSERT INTO tls_t FORMAT JSONEachRow\n{\"x\":5}\n", headers=auth, conn=c)[0], 200)
    eq(srv.req("SELECT sum(x) FROM tls_t", headers=auth, conn=c)[2], b"5\n")
    auth_failed(srv, "alice", headers=xch("alice", "wrong"), conn=c)
    c.close()


def leak_forms(secret):
    b = secret.encode()
    return {b, urllib.parse.quote(secret).encode(), urllib.parse.quote_plus(secret).encode(),
            base64.b64encode(b"alice:" + b), base64.b64encode(UTF8_USER.encode() + b":" + b),
            base64.b64encode(b"default:" + b)}


def t_auth_no_password_in_responses_or_logs():
    time.sleep(0.3)  # log lines are written after the response
    logs = {}
    for name, srv in servers.items():
        with open(srv.log, "rb") as f:
            logs[name] = f.read()
        assert b" 403 " in logs[name], f"{name} log has no 403 lines: {logs[name][-500:]!r}"
    assert len(seen) > 30, len(seen)
    for secret in SECRETS:
        for form in leak_forms(secret):
            for st, hd, data in seen:
                blob = data + repr(hd).encode() + repr({k: v.encode("latin-1") for k, v in hd.items()}).encode()
                assert form not in blob, f"a password form is in a response ({st})"
            for name, log in logs.items():
                assert form not in log, f"a password form is in the {name} server log"


def t_stop_servers():
    for srv in servers.values():
        srv.stop()
        eq(srv.proc.returncode, 0)
    shutil.rmtree(work, ignore_errors=True)


tests = []
if URL_CHECKS:
    tests += [t_ping, t_setup, t_select_default_format, t_query_in_body_and_url, t_database_param_and_header,
              t_jsoneachrow_roundtrip, t_insert_statement_in_body, t_arrowstream_reordered_types,
              t_rowbinary_positional, t_rowbinary_with_names_and_types, t_native_parquet_csv_tsv,
              t_replacing_final_is_deleted, t_errors, t_settings_per_query,
              t_insert_settings_apply_to_that_insert_only, t_session_id,
              t_query_parameters, t_http_compression, t_chunked_and_keepalive, t_concurrent_inserts,
              t_auth_header_accepted, t_cleanup]
if SPAWN:
    tests += [t_spawn_servers, t_auth_basic, t_auth_x_clickhouse_headers, t_auth_url_parameters,
              t_auth_password_file_is_default, t_auth_wrong_password, t_auth_unknown_user,
              t_auth_refused_forms, t_auth_keepalive_after_failure, t_auth_ping_is_open,
              t_tls_curl_with_ca, t_tls_curl_without_ca_fails, t_tls_host_name_checked,
              t_tls_plain_http_refused, t_tls_python_client_keepalive,
              t_auth_no_password_in_responses_or_logs, t_stop_servers]
try:
    for t in tests:
        check(t.__name__[2:], t)
finally:
    for srv in servers.values():  # also after a failure or ^C: leave nothing running
        srv.stop()
    if work:
        shutil.rmtree(work, ignore_errors=True)
print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
