#!/usr/bin/env bash
# Regenerate the pgoutput wire fixtures in tests/fixtures/pgoutput/*.hex.
#
# Starts a throwaway PostgreSQL (15 by default) in a temp dir, runs one small
# workload per fixture in its own database, and stores what the pgoutput
# plugin produced through pg_logical_slot_peek_binary_changes(): one message
# per line, hex encoded, below a '#' comment header with the SQL and options.
#
# The unit tests in src/source/postgres/pgoutput.rs read these files and need
# no server. LSNs, xids and timestamps change from run to run; the tests only
# assert relationships between them, so regenerating is safe.
#
# Usage: scripts/capture-pgoutput.sh            (as root or as a normal user)
# Env:   PGBIN (default /usr/lib/postgresql/15/bin), CAPTURE_PG_PORT (55432),
#        OUT (default tests/fixtures/pgoutput next to this script)
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${CAPTURE_PG_PORT:-55432}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/tests/fixtures/pgoutput}
WORK=$(mktemp -d /tmp/sluice-pgoutput-XXXXXX)
chmod 777 "$WORK"
mkdir -p "$OUT"

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop_server() {
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap stop_server EXIT

as_pg "$PGBIN/initdb" -A trust --no-sync -U postgres -D "$WORK/data" >"$WORK/initdb.log"
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w -o "\
 -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 \
 -c max_prepared_transactions=10 -c logical_decoding_work_mem=64kB \
 -c listen_addresses=127.0.0.1 -p $PORT -k $WORK" start >/dev/null

export PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)

# Options shared by most fixtures (protocol v2, binary tuples, streaming on,
# logical messages on).
V2="'proto_version', '2', 'publication_names', 'pub', 'binary', 'true', 'streaming', 'on', 'messages', 'true'"

# capture NAME OPTIONS SETUP_SQL WORKLOAD_SQL [TWO_PHASE_SLOT]
#   SETUP_SQL runs before the slot exists (so its effects are not decoded),
#   WORKLOAD_SQL after; the slot is then peeked with OPTIONS.
capture() {
    local name=$1 opts=$2 setup=$3 work=$4 two_phase=${5:-false}
    local db="cap_${name}"
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    "${PSQL[@]}" -d "$db" <<<"$setup"
    "${PSQL[@]}" -d "$db" -c \
        "SELECT pg_create_logical_replication_slot('cap', 'pgoutput', false, $two_phase)" >/dev/null
    "${PSQL[@]}" -d "$db" <<<"$work" >/dev/null
    local peek="SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('cap', NULL, NULL, $opts)"
    {
        echo "# pgoutput fixture '$name', captured by scripts/capture-pgoutput.sh"
        echo "# server: $("${PSQL[@]}" -d "$db" -At -c 'SHOW server_version')"
        echo "# slot: pg_create_logical_replication_slot('cap', 'pgoutput', false, $two_phase)"
        echo "# peek: $peek"
        echo "# setup (before the slot was created):"
        sed 's/^/#   /' <<<"$setup"
        echo "# workload (decoded):"
        sed 's/^/#   /' <<<"$work"
        echo "# one pgoutput message per line, hex:"
        "${PSQL[@]}" -d "$db" -At -c "$peek"
    } >"$OUT/$name.hex"
    "${PSQL[@]}" -d "$db" -c "SELECT pg_drop_replication_slot('cap')" >/dev/null
    "${PSQL[@]}" -d postgres -c "DROP DATABASE $db"
    echo "captured $name: $(grep -vc '^#' "$OUT/$name.hex") messages"
}

# --- Relation with an odd schema/table name, many column types, Type messages
WIDE_SETUP=$(cat <<'SQL'
CREATE SCHEMA "Sales Ops";
CREATE TYPE "Sales Ops".mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE "Sales Ops".money_pair AS (amount numeric(12,2), currency char(3));
CREATE TABLE "Sales Ops"."Order.Items Mixed" (
    id int4 PRIMARY KEY,
    "Qty" int8 NOT NULL,
    price numeric(10,2),
    note varchar(20),
    created timestamptz,
    flag bool,
    payload bytea,
    tags text[],
    uid uuid,
    doc jsonb,
    m "Sales Ops".mood,
    total "Sales Ops".money_pair
);
CREATE PUBLICATION pub FOR ALL TABLES;
SQL
)
WIDE_INSERT=$(cat <<'SQL'
INSERT INTO "Sales Ops"."Order.Items Mixed" VALUES
  (42, 9000000000, 12.34, 'hello', '2024-01-02 03:04:05.123456+00', true,
   '\xdeadbeef', ARRAY['a', NULL, 'c d'], 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '{"k": [1, 2]}', 'happy', ROW(5.50, 'EUR')),
  (43, -1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SQL
)
capture relation_types_v2 "$V2" "$WIDE_SETUP" "$WIDE_INSERT"
capture insert_text_v1 "'proto_version', '1', 'publication_names', 'pub'" \
    "$WIDE_SETUP" "$WIDE_INSERT"

# --- Simple insert, binary (int4 42 => 0000002a) and text
SIMPLE_SETUP=$(cat <<'SQL'
CREATE TABLE items (id int4 PRIMARY KEY, name text, qty int8);
CREATE PUBLICATION pub FOR ALL TABLES;
SQL
)
capture insert_binary_v2 "$V2" "$SIMPLE_SETUP" \
    "INSERT INTO items VALUES (42, 'hello', 7), (43, NULL, -2);"
capture insert_text_v2 "'proto_version', '2', 'publication_names', 'pub'" "$SIMPLE_SETUP" \
    "INSERT INTO items VALUES (42, 'hello', 7), (43, NULL, -2);"
capture insert_binary_v3 "'proto_version', '3', 'publication_names', 'pub', 'binary', 'true', 'streaming', 'on', 'messages', 'true'" \
    "$SIMPLE_SETUP" "INSERT INTO items VALUES (42, 'hello', 7);"

# --- Updates: no old tuple, old key after a PK change, old full tuple
UPD_SETUP=$(cat <<'SQL'
CREATE TABLE items (id int4 PRIMARY KEY, name text, qty int8);
CREATE TABLE items_full (id int4, name text, qty int8);
ALTER TABLE items_full REPLICA IDENTITY FULL;
INSERT INTO items VALUES (1, 'one', 10), (2, 'two', 20);
INSERT INTO items_full VALUES (1, 'one', 10), (2, 'two', 20);
CREATE PUBLICATION pub FOR ALL TABLES;
SQL
)
capture update_v2 "$V2" "$UPD_SETUP" "$(cat <<'SQL'
UPDATE items SET qty = 11 WHERE id = 1;
UPDATE items SET id = 100, name = 'hundred' WHERE id = 2;
UPDATE items_full SET qty = 21 WHERE id = 2;
SQL
)"

# --- An update that leaves a 100 kB TOASTed column unchanged => 'u'
capture toast_unchanged_v2 "$V2" "$(cat <<'SQL'
CREATE TABLE docs (id int4 PRIMARY KEY, version int4, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO docs VALUES (1, 1, repeat('0123456789', 10000));
CREATE PUBLICATION pub FOR ALL TABLES;
SQL
)" "UPDATE docs SET version = 2 WHERE id = 1;"

# --- Deletes with key and with full identity
capture delete_v2 "$V2" "$UPD_SETUP" "$(cat <<'SQL'
DELETE FROM items WHERE id = 1;
DELETE FROM items_full WHERE id = 2;
SQL
)"

# --- Truncate of several tables, with CASCADE and RESTART IDENTITY, then plain
capture truncate_v2 "$V2" "$(cat <<'SQL'
CREATE TABLE parent (id int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
CREATE TABLE child (id int4 PRIMARY KEY, parent_id int4 REFERENCES parent (id));
CREATE TABLE other (id int4 PRIMARY KEY);
CREATE TABLE lone (id int4 PRIMARY KEY);
CREATE PUBLICATION pub FOR ALL TABLES;
SQL
)" "$(cat <<'SQL'
TRUNCATE parent, other RESTART IDENTITY CASCADE;
TRUNCATE lone;
SQL
)"

# --- Logical decoding messages, transactional and not
capture message_v2 "$V2" "$SIMPLE_SETUP" "$(cat <<'SQL'
BEGIN;
INSERT INTO items VALUES (1, 'one', 1);
SELECT pg_logical_emit_message(true, 'sluice', 'in a transaction');
COMMIT;
SELECT pg_logical_emit_message(false, 'sluice.nontx', '\x00ff01'::bytea);
-- a non-transactional message does not flush the WAL; this commit does, so
-- the peek (which stops at the flushed position) always sees the message
INSERT INTO items VALUES (2, 'two', 2);
SQL
)"

# --- Replication origin
capture origin_v2 "$V2" "$SIMPLE_SETUP" "$(cat <<'SQL'
SELECT pg_replication_origin_create('sluice origin');
SELECT pg_replication_origin_session_setup('sluice origin');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF0', '2024-01-02 03:04:05+00');
INSERT INTO items VALUES (5, 'from origin', 5);
COMMIT;
SELECT pg_replication_origin_session_reset();
SQL
)"

# --- Streaming (protocol v2, streaming on, logical_decoding_work_mem=64kB)
STREAM_SETUP=$(cat <<'SQL'
CREATE TABLE small (id int4);
CREATE PUBLICATION pub FOR ALL TABLES;
SQL
)
capture stream_commit_v2 "$V2" "$STREAM_SETUP" "$(cat <<'SQL'
BEGIN;
SELECT pg_logical_emit_message(true, 'sluice', 'streamed');
INSERT INTO small SELECT g FROM generate_series(1, 1000) g;
COMMIT;
SQL
)"
# A streamed transaction that rolls back. The SQL interface decodes after the
# ROLLBACK is already in the WAL; streaming such a transaction hits the
# "concurrent abort" check at its first catalog access. A committed transaction
# on the same table first warms the caches, so the aborted one streams fully
# and is closed by a Stream Abort.
capture stream_abort_v2 "$V2" "$STREAM_SETUP" "$(cat <<'SQL'
INSERT INTO small VALUES (0);
BEGIN;
INSERT INTO small SELECT g FROM generate_series(1, 700) g;
ROLLBACK;
-- an abort record is not flushed by itself; this commit flushes it so that
-- the peek (which stops at the flushed WAL position) decodes it
INSERT INTO small VALUES (-1);
SQL
)"
# Without the warm-up: the aborted transaction hits the concurrent-abort check
# at its first catalog access while being streamed.
capture stream_abort_cold_v2 "$V2" "$STREAM_SETUP" "$(cat <<'SQL'
BEGIN;
INSERT INTO small SELECT g FROM generate_series(1, 700) g;
ROLLBACK;
INSERT INTO small VALUES (-1);
SQL
)"
capture stream_subxact_abort_v2 "$V2" "$STREAM_SETUP" "$(cat <<'SQL'
BEGIN;
INSERT INTO small VALUES (1);
SAVEPOINT sp;
INSERT INTO small SELECT g FROM generate_series(1000, 1700) g;
ROLLBACK TO SAVEPOINT sp;
INSERT INTO small VALUES (2);
COMMIT;
SQL
)"

# --- Two-phase commit (protocol v3, two_phase on; the slot must allow it)
TWO_PHASE="'proto_version', '3', 'publication_names', 'pub', 'binary', 'true', 'streaming', 'on', 'two_phase', 'on'"
capture two_phase_v3 "$TWO_PHASE" "$STREAM_SETUP" "$(cat <<'SQL'
BEGIN;
INSERT INTO small VALUES (1);
PREPARE TRANSACTION 'sluice gid 1';
COMMIT PREPARED 'sluice gid 1';
BEGIN;
INSERT INTO small VALUES (2);
PREPARE TRANSACTION 'sluice gid 2';
ROLLBACK PREPARED 'sluice gid 2';
BEGIN;
INSERT INTO small SELECT g FROM generate_series(1, 700) g;
PREPARE TRANSACTION 'sluice gid 3';
COMMIT PREPARED 'sluice gid 3';
SQL
)" true

# --- What this server says to protocol v4 (PG16+) requests
{
    echo "# 'streaming' 'parallel' on PG15 fails with: streaming requires a Boolean value"
    echo "# Protocol v4 request against $("${PSQL[@]}" -d postgres -At -c 'SHOW server_version'):"
    "${PSQL[@]}" -d postgres -c "SELECT pg_create_logical_replication_slot('v4', 'pgoutput')" >/dev/null
    "${PSQL[@]}" -d postgres -At -c "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('v4', NULL, NULL, 'proto_version', '4', 'publication_names', 'pub', 'streaming', 'on')" 2>&1 | sed 's/^/# /' || true
    "${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot('v4')" >/dev/null
} >"$OUT/proto_v4_pg15.txt"
cat "$OUT/proto_v4_pg15.txt"
