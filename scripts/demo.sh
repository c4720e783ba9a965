#!/usr/bin/env bash
# demo.sh: the README's main job. On a fresh machine: installs what is
# missing, starts local PostgreSQL and ClickHouse (the test bed's servers),
# creates a `demo` database with sample tables (customers already filled:
# they arrive through the initial snapshot), runs `sluice check` and then
# `sluice run -c configs/demo.toml`, writes orders while it runs, shows them
# arriving in ClickHouse, and stops sluice gracefully.
#   scripts/demo.sh            # the demo, ~1 minute
#   scripts/demo.sh --follow   # keep sluice running until Ctrl-C
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
follow=0
[ "${1:-}" = "--follow" ] && follow=1

bash scripts/install-deps.sh
SLUICE_SKIP_INSTALL=1 bash scripts/services.sh start >/dev/null
# shellcheck disable=SC1091
source "${SLUICE_SERVICES_DIR:-/tmp/sluice-services}/env"

echo "== building sluice (release)"
cargo build --release --quiet
SLUICE=target/release/sluice

pg_admin=$SLUICE_TEST_PG_URL
export DEMO_PG_URL=${pg_admin%/*}/demo
export DEMO_CLICKHOUSE_URL=$SLUICE_TEST_CLICKHOUSE_URL
ch() { curl -sS --fail-with-body "$DEMO_CLICKHOUSE_URL/" --data-binary "$1"; }

echo "== a fresh demo database in PostgreSQL ($DEMO_PG_URL)"
if [ "$(psql "$pg_admin" -Atc "SELECT 1 FROM pg_database WHERE datname = 'demo'")" = 1 ]; then
    "$SLUICE" drop -c configs/demo.toml >/dev/null 2>&1 || true
    psql "$pg_admin" -qc "DROP DATABASE demo WITH (FORCE)"
fi
psql "$pg_admin" -qc "CREATE DATABASE demo"
psql "$DEMO_PG_URL" -q <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, tier text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, amount numeric(12,2),
                     status text, tags text[], created timestamptz NOT NULL DEFAULT now());
-- Rows that exist before sluice starts arrive through its initial snapshot.
INSERT INTO customers SELECT g, 'customer ' || g, CASE WHEN g % 3 = 0 THEN 'gold' END FROM generate_series(1, 100) g;
SQL
ch "DROP DATABASE IF EXISTS demo" >/dev/null
rm -rf checkpoints/demo checkpoints/demo.*

echo "== sluice check"
"$SLUICE" check -c configs/demo.toml

echo "== sluice run (log: target/demo-run.log)"
"$SLUICE" run -c configs/demo.toml 2>target/demo-run.log &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    [ "$(psql "$DEMO_PG_URL" -Atc "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_demo' AND active")" = 1 ] && break
    sleep 0.2
done

echo "== writing to PostgreSQL while sluice runs"
psql "$DEMO_PG_URL" -q <<'SQL'
INSERT INTO orders (id, customer, amount, status, tags)
  SELECT g, 1 + g % 100, round((random() * 500)::numeric, 2), 'new', ARRAY['web']
  FROM generate_series(1, 50000) g;
UPDATE orders SET status = 'shipped' WHERE id % 4 = 0;
DELETE FROM orders WHERE id % 10 = 0;
UPDATE customers SET tier = 'platinum' WHERE id = 7;
SQL

echo "== waiting for ClickHouse to catch up"
expected=$(psql "$DEMO_PG_URL" -Atc "SELECT count(*) FROM orders")
for _ in $(seq 1 150); do
    got=$(ch "SELECT count() FROM demo.orders FINAL WHERE _is_deleted = 0" 2>/dev/null || echo 0)
    [ "$got" = "$expected" ] && break
    sleep 0.2
done
echo "orders in PostgreSQL: $expected, in ClickHouse: $got"
echo "-- ClickHouse: SELECT status, count(), sum(amount) FROM demo.orders FINAL WHERE _is_deleted = 0 GROUP BY status"
ch "SELECT status, count(), sum(amount) FROM demo.orders FINAL WHERE _is_deleted = 0 GROUP BY status ORDER BY status FORMAT PrettyCompactMonoBlock"
echo "-- ClickHouse: customers (from the snapshot, one updated since)"
ch "SELECT count(), countIf(tier = 'gold') FROM demo.customers FINAL WHERE _is_deleted = 0 FORMAT PrettyCompactMonoBlock"
echo "-- ClickHouse: customer 7"
ch "SELECT id, name, tier, _version, _lsn FROM demo.customers FINAL WHERE id = 7 FORMAT PrettyCompactMonoBlock"

echo "== sluice status"
"$SLUICE" status -c configs/demo.toml

if [ "$follow" = 1 ]; then
    echo "sluice keeps running (pid $pid); write to $DEMO_PG_URL and query $DEMO_CLICKHOUSE_URL. Ctrl-C stops it."
    wait "$pid"
else
    kill -TERM "$pid"
    wait "$pid"
    trap - EXIT
    echo "== sluice stopped gracefully; last log lines:"
    tail -n 3 target/demo-run.log
    # A slot nobody reads keeps every later WAL segment of the server:
    # on the shared dev server that grew to tens of GB under the tests.
    echo "== sluice drop (the slot would hold WAL for good; ClickHouse keeps demo.*)"
    "$SLUICE" drop -c configs/demo.toml
fi
[ "$got" = "$expected" ]
