#!/usr/bin/env python3
"""chdb_http.py: the ClickHouse HTTP interface in front of the chDB engine.

A development/test stand-in for a real ClickHouse server.  chDB (PyPI
`chdb-core`) is ClickHouse 26.9 compiled as an in-process library; it has no
server mode.  This script keeps one persistent chDB session on a data
directory and answers the subset of the ClickHouse HTTP protocol that clients
such as the Rust `clickhouse` crate (compression disabled) and curl use.

Everything the project does against this server must also work unchanged
against a real ClickHouse server: this front only translates.  See
docs/testbed.md for the exact list of what is and is not implemented.

Usage:
    python3 scripts/chdb_http.py --port PORT --data DIR [--host 127.0.0.1]
                                 [--users-file F] [--password-file F]
                                 [--tls-cert F --tls-key F]
"""

import argparse
import base64
import gzip
import hmac
import http.server
import json
import os
import re
import signal
import socketserver
import ssl
import sys
import threading
import time
import uuid
import zlib
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

# Servers normally run in UTC; make chDB's server time zone deterministic.
os.environ.setdefault("TZ", "UTC")

try:  # optional codecs
    import zstandard  # type: ignore
except ImportError:  # pragma: no cover
    zstandard = None
try:
    import brotli  # type: ignore
except ImportError:  # pragma: no cover
    brotli = None

import chdb.session  # noqa: E402  (after TZ)

# --------------------------------------------------------------------------
# Constants

# URL parameters that belong to the HTTP interface itself; every other
# parameter is a ClickHouse setting for this one query.
HTTP_PARAMS = {
    "query", "database", "user", "password", "query_id", "session_id",
    "session_timeout", "session_check", "default_format", "compress",
    "decompress", "enable_http_compression", "http_zlib_compression_level",
    "wait_end_of_query", "buffer_size", "quota_key", "stacktrace", "role",
    "client_protocol_version", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "add_http_cors_header",
    "http_response_buffer_size", "http_wait_end_of_query",
    "http_native_compression_disable_checksumming_on_decompress",
    "cancel_http_readonly_queries_on_client_close",
}

# HTTP status per exception name, as a real server maps them
# (ClickHouse src/Server/HTTP/exceptionCodeToHTTPStatus.cpp); others -> 500.
_STATUS_BY_NAME = {}
for _name in ("REQUIRED_PASSWORD",):
    _STATUS_BY_NAME[_name] = 401
for _name in ("UNKNOWN_USER WRONG_PASSWORD AUTHENTICATION_FAILED "
              "SET_NON_GRANTED_ROLE ACCESS_DENIED").split():
    _STATUS_BY_NAME[_name] = 403
for _name in ("BAD_ARGUMENTS CANNOT_COMPILE_REGEXP CANNOT_PARSE_TEXT "
              "CANNOT_PARSE_ESCAPE_SEQUENCE CANNOT_PARSE_QUOTED_STRING "
              "CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER "
              "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 "
              "CANNOT_PARSE_IPV6 CANNOT_PARSE_INPUT_ASSERTION_FAILED "
              "CANNOT_PARSE_UUID DUPLICATE_COLUMN ILLEGAL_COLUMN "
              "UNKNOWN_ELEMENT_IN_AST UNKNOWN_TYPE_OF_AST_NODE "
              "THERE_IS_NO_COLUMN TOO_DEEP_AST TOO_BIG_AST "
              "UNEXPECTED_AST_STRUCTURE SYNTAX_ERROR INCORRECT_DATA "
              "TYPE_MISMATCH VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE").split():
    _STATUS_BY_NAME[_name] = 400
for _name in ("UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE "
              "UNKNOWN_STORAGE UNKNOWN_DATABASE UNKNOWN_SETTING "
              "UNKNOWN_DIRECTION_OF_SORTING UNKNOWN_AGGREGATE_FUNCTION "
              "UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE UNKNOWN_TYPE_OF_QUERY "
              "UNKNOWN_ROLE").split():
    _STATUS_BY_NAME[_name] = 404
_STATUS_BY_NAME.update({
    "QUERY_IS_TOO_LARGE": 413, "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503, "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503, "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408, "UNSUPPORTED_MEDIA_TYPE": 415,
})

# Error codes this front raises itself (numbers as in ClickHouse).
E_BAD_ARGUMENTS = (36, "BAD_ARGUMENTS")
E_SYNTAX_ERROR = (62, "SYNTAX_ERROR")
E_NOT_IMPLEMENTED = (48, "NOT_IMPLEMENTED")
E_AUTHENTICATION_FAILED = (516, "AUTHENTICATION_FAILED")
E_UNKNOWN_FORMAT = (73, "UNKNOWN_FORMAT")
E_LOGICAL_ERROR = (49, "LOGICAL_ERROR")

_BINARY_FORMAT_PREFIXES = (
    "rowbinary", "native", "arrow", "parquet", "orc", "avro", "protobuf",
    "msgpack", "capnproto", "bsoneachrow", "npy",
)

_EXC_RE = re.compile(r"Code: (\d+)\. (DB::Exception: )?(.*)", re.S)
_VERSION_SUFFIX_RE = re.compile(r"\s*\(version [0-9.]+[^)]*(?:\([^)]*\))?\)\s*$")


class CHError(Exception):
    """An exception in ClickHouse's shape: code, name, message."""

    def __init__(self, code, name, message):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @classmethod
    def make(cls, code_name, message):
        return cls(code_name[0], code_name[1], message)

    @classmethod
    def from_chdb(cls, exc):
        text = str(exc)
        m = _EXC_RE.search(text)
        if not m:
            return cls(1001, "STD_EXCEPTION", text.strip())
        code = int(m.group(1))
        msg = _VERSION_SUFFIX_RE.sub("", m.group(3).strip())
        name = ""
        n = re.search(r"\(([A-Z][A-Z0-9_]+)\)\s*$", msg)
        if n:
            name = n.group(1)
            msg = msg[: n.start()].rstrip()
        return cls(code, name, msg)

    def status(self):
        return _STATUS_BY_NAME.get(self.name, 500)

    def body(self, version):
        name = f" ({self.name})" if self.name else ""
        msg = self.message if self.message.endswith(".") else self.message + "."
        return (f"Code: {self.code}. DB::Exception: {msg}{name} "
                f"(version {version})\n").encode()


# --------------------------------------------------------------------------
# A small SQL scanner: enough to find where an INSERT's data starts, the
# first keyword, a trailing FORMAT clause and multi-statements.

_WS = b" \t\r\n\f\v"


def _tokens(buf, start=0):
    """Yield (kind, value, start, end) tokens of SQL in bytes `buf`.

    kind: 'word', 'qident', 'string', 'num', 'punct'.  Comments are skipped.
    """
    i, n = start, len(buf)
    while i < n:
        c = buf[i]
        if c in _WS:
            i += 1
            continue
        if buf.startswith(b"--", i) or c == 0x23:  # -- or # comment
            j = buf.find(b"\n", i)
            i = n if j < 0 else j + 1
            continue
        if buf.startswith(b"/*", i):
            j = buf.find(b"*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in (0x27, 0x22, 0x60):  # ' " `
            j = i + 1
            while j < n:
                if buf[j] == 0x5C:  # backslash escape
                    j += 2
                    continue
                if buf[j] == c:
                    if j + 1 < n and buf[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
            kind = "string" if c == 0x27 else "qident"
            yield kind, buf[i + 1:end - 1], i, end
            i = end
            continue
        if c == 0x5F or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c >= 0x80:
            j = i + 1
            while j < n:
                d = buf[j]
                if d == 0x5F or 0x30 <= d <= 0x39 or 0x41 <= d <= 0x5A or 0x61 <= d <= 0x7A or d >= 0x80:
                    j += 1
                else:
                    break
            yield "word", buf[i:j], i, j
            i = j
            continue
        if 0x30 <= c <= 0x39:
            j = i + 1
            while j < n and (buf[j] in b"0123456789.eExXabcdefABCDEF_" or
                             (buf[j] in b"+-" and buf[j - 1] in b"eE")):
                j += 1
            yield "num", buf[i:j], i, j
            i = j
            continue
        yield "punct", buf[i:i + 1], i, i + 1
        i += 1


def _is_word(tok, word):
    return tok[0] == "word" and tok[1].upper() == word.encode()


def analyze(buf):
    """Look at a statement (bytes).

    Returns a dict with:
      first:    first keyword, upper case ('' if none)
      insert:   for `INSERT ... FORMAT X <data>`: (head_bytes, fmt, data_offset)
      format:   trailing FORMAT clause of a non-INSERT statement, or None
      multi:    True if there is more than one statement
    """
    info = {"first": "", "insert": None, "format": None, "multi": False}
    toks = _tokens(buf)
    first = next(toks, None)
    if first is None:
        return info
    if first[0] == "word":
        info["first"] = first[1].decode("utf-8", "replace").upper()
    depth = 0
    if info["first"] == "INSERT":
        # INSERT INTO [TABLE|FUNCTION] name... [(cols)] [SETTINGS ...] FORMAT f
        state = "into"
        for tok in toks:
            kind = tok[0]
            if kind == "punct":
                if tok[1] == b"(":
                    depth += 1
                elif tok[1] == b")":
                    depth -= 1
                continue
            if depth:
                continue
            if state == "into":
                if _is_word(tok, "INTO"):
                    continue
                if _is_word(tok, "TABLE") or _is_word(tok, "FUNCTION"):
                    continue
                state = "name"  # this token is the table (or function) name
                continue
            if _is_word(tok, "VALUES") or _is_word(tok, "SELECT") or \
                    _is_word(tok, "WITH") or _is_word(tok, "FROM"):
                return info  # data inline / from a query: run as a whole
            if _is_word(tok, "FORMAT"):
                fmt_tok = next(toks, None)
                if fmt_tok is None or fmt_tok[0] not in ("word", "qident"):
                    return info
                fmt = fmt_tok[1].decode("utf-8", "replace")
                d = fmt_tok[3]
                n = len(buf)
                # Data starts after the format name: skip blanks, then one
                # line break (as ClickHouse's INSERT parser does).
                while d < n and buf[d] in b" \t\f":
                    d += 1
                if d < n and buf[d] == 0x0D:
                    d += 1
                if d < n and buf[d] == 0x0A:
                    d += 1
                info["insert"] = (buf[: tok[2]], fmt, d)
                return info
        return info
    prev_format = False
    last_format = None
    for tok in toks:
        kind = tok[0]
        if kind == "punct":
            if tok[1] == b"(":
                depth += 1
            elif tok[1] == b")":
                depth -= 1
            elif tok[1] == b";" and depth == 0:
                rest = next(toks, None)
                if rest is not None:
                    info["multi"] = True
                break
            prev_format = False
            continue
        if depth == 0 and prev_format and kind in ("word", "qident"):
            last_format = tok[1].decode("utf-8", "replace")
            prev_format = False
            continue
        prev_format = depth == 0 and _is_word(tok, "FORMAT")
    info["format"] = last_format
    return info


def content_type_for(fmt):
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=" + ("present" if "withnames" in f else "absent")
    if f in ("jsoneachrow", "jsonlines", "ndjson", "jsonstringseachrow",
             "jsoncompacteachrow", "jsoncompactstringseachrow") or \
            (f.startswith("jsoncompact") and "eachrow" in f) or f.startswith("jsoneachrow"):
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f == "xml":
        return "application/xml; charset=UTF-8"
    if f.startswith(_BINARY_FORMAT_PREFIXES):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


_SETTINGS_WORD = re.compile(rb"\bSETTINGS\b", re.IGNORECASE)


def sql_literal(value):
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ident(name):
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise CHError.make(E_BAD_ARGUMENTS, f"Invalid setting name: {name}")
    return name


# --------------------------------------------------------------------------
# Users and credentials, the way ClickHouse's HTTP interface takes them
# (src/Server/HTTP/authenticateUserByHTTP.cpp, src/Access/AccessControl.cpp).
# Names and passwords are bytes end to end: what the client sent is compared,
# whatever its encoding.

def load_users(users_file=None, password_file=None):
    """{user: password} (bytes) or None when no users are configured.

    users_file: lines `user:password`, split at the first colon and taken
    literally (a password may hold colons and blanks); blank lines and lines
    starting with `#` are skipped.  password_file: its first line is the
    password of user `default`.  Errors name the file and line, never a
    password."""
    if not users_file and not password_file:
        return None
    users = {}
    if users_file:
        with open(users_file, "rb") as f:
            lines = f.read().splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip() or line.startswith(b"#"):
                continue
            user, sep, password = line.partition(b":")
            if not sep or not user:
                raise ValueError(f"{users_file}:{n}: expected user:password")
            if user in users:
                raise ValueError(f"{users_file}:{n}: user {user.decode('utf-8', 'replace')} "
                                 "is listed twice")
            users[user] = password
    if password_file:
        with open(password_file, "rb") as f:
            lines = f.read().splitlines()
        password = lines[0] if lines else b""
        if b"default" in users and users[b"default"] != password:
            raise ValueError(f"user default has one password in {users_file} and another "
                             f"in {password_file}")
        users[b"default"] = password
    return users


def _auth_error(message):
    return CHError.make(E_AUTHENTICATION_FAILED, message)


def _two_ways(a, b):
    return _auth_error(f"Invalid authentication: it is not allowed to use {a} and {b} simultaneously")


def request_credentials(headers, raw_query):
    """(user, password) as bytes from one request.

    Like ClickHouse: the X-ClickHouse-User/-Key headers, else HTTP Basic,
    else the `user`/`password` URL parameters (user `default`, empty password
    when absent).  Using two of these at once, an empty user name or another
    Authorization scheme is an authentication error (516)."""
    def header(name):
        v = headers.get(name)
        # http.server decodes header lines as Latin-1; undo it to get the
        # bytes the client sent (a UTF-8 password stays UTF-8).
        return None if v is None else v.encode("latin-1")

    x_user = header("X-ClickHouse-User") or b""
    x_key = header("X-ClickHouse-Key") or b""
    authorization = header("Authorization")
    url = {}
    for part in raw_query.encode("latin-1").split(b"&"):
        k, _, v = part.partition(b"=")
        k = unquote_to_bytes(k.replace(b"+", b" "))
        if k in (b"user", b"password") and k not in url:  # the first one counts
            url[k] = unquote_to_bytes(v.replace(b"+", b" "))

    if x_user or x_key:
        if not x_user:
            raise _auth_error("Got an empty user name from X-ClickHouse HTTP headers")
        if authorization is not None:
            raise _two_ways("X-ClickHouse HTTP headers", "Authorization HTTP header")
        if url:
            raise _two_ways("X-ClickHouse HTTP headers", "authentication via parameters")
        return x_user, x_key
    if authorization is not None:
        if url:
            raise _two_ways("Authorization HTTP header", "authentication via parameters")
        scheme, _, info = authorization.strip().partition(b" ")
        if scheme.lower() != b"basic":
            raise _auth_error(f"Invalid authentication: '{scheme.decode('latin-1')}' HTTP "
                              "Authorization scheme is not supported")
        try:
            decoded = base64.b64decode(info.strip(), validate=True)
        except ValueError:
            raise CHError.make(E_BAD_ARGUMENTS, "Invalid Authorization header: not base64")
        user, _, password = decoded.partition(b":")
        if not user:
            raise _auth_error("Got an empty user name from Authorization HTTP header")
        return user, password
    user = url.get(b"user", b"default")
    if not user:
        raise _auth_error("Got an empty user name from authentication via parameters")
    return user, url.get(b"password", b"")


def authenticate(users, user, password):
    """Raises 516 unless `user` exists with exactly this password.  The
    message is the same for an unknown user and a wrong password, as in
    ClickHouse, and never contains the password."""
    expected = users.get(user)
    # Compare even for an unknown user: the answer time should not tell
    # which user names exist.
    ok = hmac.compare_digest(password, expected if expected is not None else b"\0" + password)
    if not ok or expected is None:
        raise _auth_error(f"{user.decode('utf-8', 'replace')}: Authentication failed: password is "
                          "incorrect, or there is no user with such name")


# --------------------------------------------------------------------------
# The engine: one chDB session, one lock.

class Engine:
    def __init__(self, path):
        os.makedirs(path, exist_ok=True)
        self.session = chdb.session.Session(path)
        self.lock = threading.Lock()
        # Servers do not accept `1+1` as a query; chDB does by default.
        self._q("SET implicit_select = 0")
        self.version = self._q("SELECT version()").bytes().decode().strip()
        self.timezone = self._q("SELECT timezone()").bytes().decode().strip()
        self.baseline = self._changed_settings()
        self.current_db = None
        self.sessions = {}  # session_id -> {"settings": {}, "database": str}

    def _q(self, sql, fmt="TabSeparated", params=None):
        return self.session.query(sql, fmt, params=params or {})

    def _changed_settings(self):
        out = self._q("SELECT name, value FROM system.settings WHERE changed AND name != 'database' "
                      "SETTINGS max_result_rows = 0, max_result_bytes = 0, max_rows_to_read = 0, "
                      "max_bytes_to_read = 0, max_execution_time = 0, readonly = 0",
                      "JSONCompactEachRow").bytes()
        res = {}
        for line in out.splitlines():
            if line.strip():
                k, v = json.loads(line)
                res[k] = v
        return res

    def _use(self, db):
        if db != self.current_db:
            self.current_db = None
            self._q(f"USE `{db.replace('`', '``')}`")
            self.current_db = db

    def _apply_settings(self, settings):
        if settings:
            self._q("SET " + ", ".join(f"{sql_ident(k)} = {sql_literal(v)}"
                                       for k, v in settings.items()))

    def _reset_settings(self, known):
        """Put settings back to the baseline after a request.

        `known` are the names this front applied itself; they are reset
        blindly first (a changed limit could break the query that looks for
        other changes)."""
        def reset_expr(k):
            if k in self.baseline:
                return f"{k} = {sql_literal(self.baseline[k])}"
            return f"{k} = DEFAULT"
        if known:
            self._q("SET " + ", ".join(reset_expr(sql_ident(k)) for k in known))
        changed = self._changed_settings()
        resets = [reset_expr(k) for k, v in changed.items() if self.baseline.get(k) != v]
        resets += [reset_expr(k) for k in self.baseline if k not in changed]
        if resets:
            self._q("SET " + ", ".join(resets))
        return changed

    def execute(self, req):
        """Run one request.  Returns (body_bytes, summary_dict, fmt)."""
        t_wait = time.monotonic()
        with self.lock:
            t_held = time.monotonic()
            req.lock_wait_ms = (t_held - t_wait) * 1000
            try:
                return self._execute_locked(req)
            finally:
                req.lock_held_ms = (time.monotonic() - t_held) * 1000

    def _execute_locked(self, req):
        sess = None
        if req.session_id:
            sess = self.sessions.setdefault(req.session_id, {"settings": {}, "database": None})
        db = req.database or (sess and sess["database"]) or "default"
        settings = {}
        if sess:
            settings.update(sess["settings"])
        settings.update(req.settings)
        # A server applies a request's settings to that query alone; an
        # INSERT can say so in its own SETTINGS clause, which spares the
        # SET-and-reset round trips below (each a query on the one
        # engine every other request waits for).
        req.insert_settings = {}
        if settings and req.info["insert"] is not None and \
                not _SETTINGS_WORD.search(req.info["insert"][0]):
            req.insert_settings, settings = settings, {}
        stmt_first = req.info["first"]
        must_reset = bool(settings) or stmt_first == "SET"
        try:
            try:
                self._use(db)
                self._apply_settings(settings)
            except CHError:
                raise
            except Exception as e:
                raise CHError.from_chdb(e)
            return self._run(req)
        finally:
            if stmt_first == "USE":
                new_db = self._q("SELECT currentDatabase()").bytes().decode().strip()
                self.current_db = new_db
                if sess is not None:
                    sess["database"] = new_db
            if must_reset:
                try:
                    changed = self._reset_settings(settings.keys())
                    if sess is not None and stmt_first == "SET":
                        for k, v in changed.items():
                            if req.settings.get(k) != v and self.baseline.get(k) != v:
                                sess["settings"][k] = v
                except Exception as e:  # pragma: no cover
                    sys.stderr.write(f"chdb_http: failed to reset settings: {e}\n")

    def _run(self, req):
        t0 = time.monotonic()
        if req.info["insert"] is not None:
            head, fmt, _ = req.info["insert"]
            head_sql = head.decode("utf-8", "replace")
            if req.insert_settings:
                head_sql = head_sql.rstrip() + " SETTINGS " + ", ".join(
                    f"{sql_ident(k)} = {sql_literal(v)}" for k, v in req.insert_settings.items()) + " "
            try:
                ins = self.session.send_insert(head_sql, fmt)
            except Exception as e:
                raise CHError.from_chdb(e)
            try:
                if req.insert_data:
                    ins.append(req.insert_data)
                res = ins.finish()
            except Exception as e:
                try:
                    ins.cancel()
                except Exception:
                    pass
                raise CHError.from_chdb(e)
            summary = {
                "read_rows": res.rows_written, "read_bytes": len(req.insert_data),
                "written_rows": res.rows_written, "written_bytes": res.bytes_written,
                "total_rows_to_read": 0, "result_rows": res.rows_written,
                "result_bytes": res.bytes_written,
                "elapsed_ns": int(res.elapsed * 1e9),
            }
            return b"", summary, req.out_format
        try:
            r = self._q(req.sql, req.out_format, req.params)
        except Exception as e:
            raise CHError.from_chdb(e)
        if r.has_error():
            raise CHError.from_chdb(r.error_message())
        body = r.bytes()
        summary = {
            "read_rows": r.rows_read(), "read_bytes": r.bytes_read(),
            "written_rows": r.rows_written(), "written_bytes": r.bytes_written(),
            "total_rows_to_read": r.rows_read(),
            "result_rows": r.rows_written() or 0, "result_bytes": len(body),
            "elapsed_ns": int((r.elapsed() or (time.monotonic() - t0)) * 1e9),
        }
        return body, summary, req.out_format

    def close(self):
        self.session.close()


# --------------------------------------------------------------------------
# HTTP

class Request:
    pass


def decode_body(data, encoding):
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity", "none"):
        return data
    if enc in ("gzip", "x-gzip"):
        return gzip.decompress(data)
    if enc == "deflate":
        try:
            return zlib.decompress(data)
        except zlib.error:
            return zlib.decompress(data, -zlib.MAX_WBITS)
    if enc == "zstd" and zstandard is not None:
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if enc in ("br", "brotli") and brotli is not None:
        return brotli.decompress(data)
    raise CHError.make(E_BAD_ARGUMENTS, f"Unknown HTTP compression method: {encoding}")


def pick_response_encoding(accept):
    for part in (accept or "").split(","):
        name = part.split(";")[0].strip().lower()
        if name in ("gzip", "x-gzip"):
            return "gzip"
        if name == "deflate":
            return "deflate"
        if name == "zstd" and zstandard is not None:
            return "zstd"
        if name == "br" and brotli is not None:
            return "br"
    return None


def encode_body(data, enc):
    if enc == "gzip":
        return gzip.compress(data, compresslevel=3)
    if enc == "deflate":
        return zlib.compress(data, 3)
    if enc == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if enc == "br":
        return brotli.compress(data)
    return data


def parse_multipart(body, content_type):
    """Minimal multipart/form-data parser: returns {name: str}."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise CHError.make(E_BAD_ARGUMENTS, "multipart/form-data without boundary")
    delim = b"--" + m.group(1).encode()
    fields = {}
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        hdr, _, value = part.partition(b"\r\n\r\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        nm = re.search(rb'name="([^"]*)"', hdr)
        if nm:
            fields[nm.group(1).decode()] = value.decode("utf-8", "replace")
    return fields


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb_http"
    # Headers and body go out in two writes; with Nagle on, the body waits
    # for the client's delayed ACK (~40 ms a request on keep-alive).
    disable_nagle_algorithm = True

    def version_string(self):
        return self.server_version
    timeout = 120  # idle keep-alive connections are dropped after this

    # quiet the default logging; we log our own line
    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    # ---- plumbing
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body, headers, fmt_header=True):
        enc = None
        if self._compress_response and body:
            enc = pick_response_encoding(self.headers.get("Accept-Encoding"))
            if enc:
                body = encode_body(body, enc)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if enc:
            self.send_header("Content-Encoding", enc)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Keep-Alive", f"timeout={self.timeout}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._resp_len = len(body)

    def _error(self, err, query_id=""):
        engine = self.server.engine
        headers = [
            ("Content-Type", "text/plain; charset=UTF-8"),
            ("X-ClickHouse-Server-Display-Name", "chdb_http"),
            ("X-ClickHouse-Exception-Code", str(err.code)),
        ]
        if query_id:
            headers.append(("X-ClickHouse-Query-Id", query_id))
        self._status = err.status()
        self._send(self._status, err.body(engine.version), headers)

    def _handle(self):
        t0 = time.monotonic()
        self._status = 0
        self._resp_len = 0
        self._compress_response = False
        self._log_sql = ""
        self._lock_ms = ""
        query_id = ""
        try:
            body = self._read_body()  # always drain, keep-alive depends on it
            split = urlsplit(self.path)
            path = split.path
            params = parse_qsl(split.query, keep_blank_values=True)
            if path in ("/ping",) or (path == "/" and not params and not body
                                      and self.command in ("GET", "HEAD")):
                self._status = 200
                self._send(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
                return
            if path not in ("/", "/query"):
                self._status = 404
                self._send(404, f"There is no handle {path}\n\nUse / or /ping.\n".encode(),
                           [("Content-Type", "text/plain; charset=UTF-8")])
                return
            # No users configured: anyone may query, whatever they send.
            if self.server.users is not None:
                user, password = request_credentials(self.headers, split.query)
                authenticate(self.server.users, user, password)
            query_id = self._serve_query(params, body)
        except CHError as e:
            self._error(e, query_id)
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - bug in this front
            self._error(CHError.make(E_LOGICAL_ERROR, f"chdb_http: {type(e).__name__}: {e}"), query_id)
        finally:
            dt = (time.monotonic() - t0) * 1000
            sql = self._log_sql.replace("\n", " ")
            if len(sql) > 160:
                sql = sql[:160] + "..."
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} {self.command} "
                             f"{self._status} {dt:.1f}ms {self._resp_len}B{self._lock_ms} {sql}\n")

    def _serve_query(self, params, body):
        engine = self.server.engine
        h = self.headers
        req = Request()
        query_param = None
        req.settings = {}
        req.params = {}
        req.database = h.get("X-ClickHouse-Database")
        req.session_id = None
        req.query_id = h.get("X-ClickHouse-Query-Id") or ""
        out_format = h.get("X-ClickHouse-Format")
        compress = decompress = False
        for k, v in params:
            if k == "query":
                query_param = v
            elif k == "database":
                req.database = v
            elif k == "query_id":
                req.query_id = v
            elif k == "session_id":
                req.session_id = v
            elif k == "default_format":
                out_format = out_format or v
            elif k == "compress":
                compress = v not in ("", "0")
            elif k == "decompress":
                decompress = v not in ("", "0")
            elif k == "enable_http_compression":
                self._compress_response = v not in ("", "0")
            elif k.startswith("param_"):
                req.params[k[6:]] = v
            elif k in HTTP_PARAMS:
                continue
            else:
                req.settings[k] = v
        req.query_id = req.query_id or str(uuid.uuid4())
        self._log_sql = query_param or ""

        if compress or decompress:
            raise CHError.make(
                E_NOT_IMPLEMENTED,
                "chdb_http (dev stand-in for ClickHouse) does not support ClickHouse's native "
                "block compression (compress=1 / decompress=1); use HTTP Content-Encoding or "
                "disable compression in the client")

        body = decode_body(body, h.get("Content-Encoding"))
        ctype = h.get("Content-Type") or ""
        if ctype.lower().startswith("multipart/form-data"):
            fields = parse_multipart(body, ctype)
            body = b""
            for k, v in fields.items():
                if k == "query":
                    query_param = (query_param + "\n" if query_param else "") + v
                elif k.startswith("param_"):
                    req.params[k[6:]] = v

        # The statement: URL query, then a line feed, then the body.
        qbytes = (query_param or "").encode()
        if qbytes and body:
            head = qbytes + b"\n" + body[:65536]
        else:
            head = qbytes or body[:65536]
        req.info = analyze(head)
        if req.info["insert"] is not None:
            h_bytes, fmt, off = req.info["insert"]
            if qbytes and body:
                if off <= len(qbytes):
                    req.insert_data = qbytes[off:] + b"\n" + body
                else:
                    req.insert_data = body[off - len(qbytes) - 1:]
            else:
                req.insert_data = (qbytes or body)[off:]
            req.sql = None
            self._log_sql = h_bytes.decode("utf-8", "replace") + f"FORMAT {fmt} <{len(req.insert_data)} bytes>"
            req.out_format = out_format or "TabSeparated"
        else:
            full = (qbytes + b"\n" + body) if (qbytes and body) else (qbytes or body)
            if len(full) > 65536:
                req.info = analyze(full)
            sql = full.decode("utf-8", "replace")
            self._log_sql = sql
            if not sql.strip():
                raise CHError.make(E_SYNTAX_ERROR, "Empty query")
            if req.info["multi"]:
                raise CHError.make(E_SYNTAX_ERROR, "Multi-statements are not allowed")
            req.sql = sql
            req.out_format = req.info["format"] or out_format or "TabSeparated"

        try:
            body_out, summary, fmt = engine.execute(req)
        finally:
            # Time queued for the engine, then time holding it: one engine
            # serves every request, so the first is the others' second.
            if hasattr(req, "lock_held_ms"):
                self._lock_ms = f" wait={req.lock_wait_ms:.1f}ms held={req.lock_held_ms:.1f}ms"
        summary_hdr = json.dumps({k: str(v) for k, v in summary.items()}, separators=(",", ":"))
        headers = [
            ("Content-Type", content_type_for(fmt)),
            ("X-ClickHouse-Server-Display-Name", "chdb_http"),
            ("X-ClickHouse-Query-Id", req.query_id),
            ("X-ClickHouse-Format", fmt),
            ("X-ClickHouse-Timezone", engine.timezone),
            ("X-ClickHouse-Summary", summary_hdr),
        ]
        self._status = 200
        self._send(200, body_out, headers)
        return req.query_id


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    users = None        # {user: password} (bytes); None: no authentication
    ssl_context = None  # set: HTTPS only
    # A client that connects and never completes the TLS handshake must not
    # hold its thread for long.
    tls_handshake_timeout = 10

    def finish_request(self, request, client_address):
        if self.ssl_context is None:
            return super().finish_request(request, client_address)
        # Handshake here, in the connection's own thread rather than in
        # accept(), so that a slow or silent client cannot stall the listener.
        request.settimeout(self.tls_handshake_timeout)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            reason = getattr(e, "reason", None) or type(e).__name__
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {client_address[0]} "
                             f"TLS handshake failed: {reason}\n")
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            # close_notify first: TLS clients may take a bare TCP close for a
            # truncation attack.  Bounded wait for the peer's answer.
            try:
                conn.settimeout(1)
                conn.unwrap()
            except (OSError, ValueError):
                pass
            # wrap_socket took over the socket: the caller only holds the
            # detached original, so close it here.
            conn.close()


def tls_context(cert_file, key_file):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    # Only HTTP/1.1 is spoken; saying so spares clients an h2 attempt.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main():
    ap = argparse.ArgumentParser(description="ClickHouse HTTP interface over chDB (dev stand-in)")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--data", required=True, help="chDB data directory (persistent)")
    ap.add_argument("--users-file",
                    help="require credentials: lines user:password (split at the first colon)")
    ap.add_argument("--password-file",
                    help="require credentials: the first line is user default's password "
                         "(with --users-file: adds or must match user default)")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    try:
        users = load_users(args.users_file, args.password_file)
        ctx = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError, ssl.SSLError) as e:
        sys.exit(f"chdb_http: {e}")

    engine = Engine(os.path.abspath(args.data))
    server = Server((args.host, args.port), Handler)
    server.engine = engine
    server.users = users
    server.ssl_context = ctx
    scheme = "https" if ctx else "http"
    auth = "any" if users is None else f"{len(users)} user(s)"
    sys.stderr.write(f"chdb_http: ClickHouse {engine.version} (chDB) on {scheme}://{args.host}:{args.port}"
                     f" data={args.data} auth={auth}\n")
    sys.stderr.flush()

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        # chDB teardown can hang on background threads (e.g. replication):
        # give it a few seconds, then leave anyway.
        killer = threading.Timer(5.0, lambda: os._exit(0))
        killer.daemon = True
        killer.start()
        with engine.lock:
            try:
                engine.close()
            except Exception:
                pass
        sys.stderr.write("chdb_http: stopped\n")
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
