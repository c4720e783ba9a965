#!/usr/bin/env bash
# test.sh: everything the test suite needs, then the suite.
#
# Installs what is missing (apt/pip), starts (or reuses) the test servers on
# loopback (PostgreSQL 15, the ClickHouse stand-in, the Kafka broker) and
# runs `cargo test`. Extra arguments go to cargo test, e.g.
#   scripts/test.sh --test it -- pg_source      (one module of the integration tests)
# The servers keep running for the next run; stop them with
#   scripts/services.sh stop
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
SLUICE_SKIP_INSTALL=1 bash scripts/services.sh start >/dev/null
# shellcheck disable=SC1091
source "${SLUICE_SERVICES_DIR:-/tmp/sluice-services}/env"
export SLUICE_TEST_PG_URL SLUICE_TEST_CLICKHOUSE_URL SLUICE_TEST_KAFKA_BROKERS SLUICE_PG_BIN
echo "test servers: PostgreSQL $SLUICE_TEST_PG_URL, ClickHouse $SLUICE_TEST_CLICKHOUSE_URL, Kafka $SLUICE_TEST_KAFKA_BROKERS" >&2
log=$(mktemp)
set +e
cargo test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ {p += $4; f += $6} END {printf "total: %d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
exit "$status"
