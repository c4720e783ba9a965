#!/usr/bin/env bash
# pg-instance.sh: a throwaway PostgreSQL 15 for tests.
#
#   scripts/pg-instance.sh start DIR PORT [-c key=val ...]
#   scripts/pg-instance.sh stop DIR
#   scripts/pg-instance.sh status DIR
#
# `start` runs initdb into DIR (if it has no cluster yet) and starts the
# server as the `postgres` OS user when run as root, listening on
# 127.0.0.1:PORT only, unix socket inside DIR, log in DIR/postgres.log.
# Defaults: wal_level=logical, max_replication_slots=256, max_wal_senders=256,
# max_connections=300, fsync=off, full_page_writes=off; extra `-c key=val`
# arguments override them.  Idempotent: a server already running from DIR on
# PORT is success.  pg_hba.conf: members of sluice_md5_auth use md5, of
# sluice_scram_auth scram-sha-256, of sluice_password_auth cleartext
# password; everyone else trust; 127.0.0.1/32 only.
set -euo pipefail

PG_BIN=${SLUICE_PG_BIN:-/usr/lib/postgresql/15/bin}

die() { echo "pg-instance: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 start DIR PORT [-c key=val ...] | stop DIR | status DIR" >&2
    exit 2
}

# Run a command as the postgres OS user when we are root.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Make DIR's parents traversable for the postgres user, then DIR itself.
prepare_dir() {
    local dir=$1 p
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        p=$(dirname "$dir")
        while [ "$p" != / ]; do
            # only add the search bit for others; never remove anything
            chmod o+x "$p" 2>/dev/null || true
            p=$(dirname "$p")
        done
        chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
}

log_tail() {
    local dir=$1
    if [ -f "$dir/postgres.log" ]; then
        echo "---- tail of $dir/postgres.log ----" >&2
        tail -n 40 "$dir/postgres.log" >&2
    fi
}

is_running() {  # DIR -> 0 if a postmaster runs from DIR
    local dir=$1 pid
    [ -f "$dir/postmaster.pid" ] || return 1
    pid=$(head -n 1 "$dir/postmaster.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

running_port() {  # DIR -> port of the running postmaster (line 4)
    sed -n 4p "$1/postmaster.pid" 2>/dev/null
}

write_hba() {
    local dir=$1
    cat > "$dir/pg_hba.conf" <<'EOF'
# Written by scripts/pg-instance.sh.  First match wins.
# TYPE  DATABASE     USER                   ADDRESS        METHOD
local   all          all                                   trust
local   replication  all                                   trust
host    all          +sluice_md5_auth       127.0.0.1/32   md5
host    replication  +sluice_md5_auth       127.0.0.1/32   md5
host    all          +sluice_scram_auth     127.0.0.1/32   scram-sha-256
host    replication  +sluice_scram_auth     127.0.0.1/32   scram-sha-256
host    all          +sluice_password_auth  127.0.0.1/32   password
host    replication  +sluice_password_auth  127.0.0.1/32   password
host    all          all                    127.0.0.1/32   trust
host    replication  all                    127.0.0.1/32   trust
EOF
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$dir/pg_hba.conf"
}

create_roles() {
    local dir=$1 port=$2
    as_pg "$PG_BIN/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'EOF'
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['sluice_md5_auth', 'sluice_scram_auth', 'sluice_password_auth'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END
$$;
EOF
}

cmd_start() {
    [ $# -ge 2 ] || usage
    local dir=$1 port=$2
    shift 2
    case $port in ''|*[!0-9]*) die "bad port: $port" ;; esac
    [ -x "$PG_BIN/postgres" ] || die "no PostgreSQL at $PG_BIN (run scripts/install-deps.sh)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    if is_running "$dir"; then
        if [ "$(running_port "$dir")" = "$port" ]; then
            if as_pg "$PG_BIN/pg_isready" -q -h "$dir" -p "$port" -t 10; then
                create_roles "$dir" "$port"
                echo "pg-instance: already running in $dir on 127.0.0.1:$port"
                return 0
            fi
        else
            die "a server already runs from $dir on port $(running_port "$dir"), not $port"
        fi
    fi

    prepare_dir "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
        local out
        if ! out=$(as_pg "$PG_BIN/initdb" -D "$dir" -A trust --no-sync -U postgres -E UTF8 \
                --locale=C 2>&1); then
            printf '%s\n' "$out" >&2
            die "initdb failed in $dir"
        fi
    fi
    write_hba "$dir"

    # Defaults first; caller's -c options come later and win.
    local -a opts=(
        -c listen_addresses=127.0.0.1
        -c "port=$port"
        -c "unix_socket_directories=$dir"
        -c wal_level=logical
        -c max_replication_slots=256
        -c max_wal_senders=256
        -c max_connections=300
        -c fsync=off
        -c full_page_writes=off
    )
    opts+=("$@")

    # pg_ctl -o takes one string: quote each option for the shell it uses.
    local o ostr=""
    for o in "${opts[@]}"; do
        ostr+=" $(printf '%q' "$o")"
    done
    : >"$dir/postgres.log" 2>/dev/null || true
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$dir/postgres.log"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/postgres.log" -o "$ostr" -w -t 60 start >/dev/null; then
        log_tail "$dir"
        die "PostgreSQL failed to start in $dir on port $port"
    fi
    local i
    for i in $(seq 1 100); do
        if as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then
            break
        fi
        [ "$i" -lt 100 ] || { log_tail "$dir"; die "PostgreSQL does not accept connections on $port"; }
        sleep 0.1
    done
    create_roles "$dir" "$port" || { log_tail "$dir"; die "creating auth roles failed"; }
    echo "pg-instance: started in $dir on 127.0.0.1:$port"
}

cmd_stop() {
    [ $# -ge 1 ] || usage
    local dir=$1
    [ -d "$dir" ] || return 0
    if is_running "$dir"; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null ||
            as_pg "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w -t 30 stop >/dev/null
        echo "pg-instance: stopped $dir"
    fi
}

cmd_status() {
    [ $# -ge 1 ] || usage
    if is_running "$1"; then
        echo "running on 127.0.0.1:$(running_port "$1") (pid $(head -n 1 "$1/postmaster.pid"))"
    else
        echo "not running"
        return 1
    fi
}

[ $# -ge 1 ] || usage
sub=$1
shift
case $sub in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    *) usage ;;
esac
