#!/usr/bin/env bash
# End-to-end benchmark: PostgreSQL -> ClickHouse, sluice against its peers.
#   scripts/bench.sh [--size smoke|small|medium|large|ROWS] [--out FILE.json]
#                    [--phases snapshot,streaming,latency,pgbench] [--sluice BIN]
#                    [--reuse-services] [--keep]
# Builds sluice (release), starts private PostgreSQL and ClickHouse (chDB)
# instances on free ports (or, with --reuse-services, the shared ones of
# scripts/services.sh), creates the data, measures, prints a table and writes
# a JSON report (default target/bench/e2e.json). See docs/benchmarks.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${SLUICE_SKIP_INSTALL:-0}" != 1 ]]; then
  bash "$root/scripts/install-deps.sh" >&2
fi
exec "${PYTHON:-python3}" "$root/benches/e2e/harness.py" "$@"
