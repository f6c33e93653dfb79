#!/usr/bin/env bash
# Set up a development environment on a fresh machine: the project venv (.venv) with bridgedoctor
# and its test dependencies. Idempotent. Needs python3 (>= 3.10) with venv; the tests also need
# PostgreSQL's server binaries (Debian: apt-get install postgresql), installed here when missing
# and we are root, and systemd-nspawn (systemd-container) for the real-systemd tests.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BRIDGEDOCTOR_VENV:-$REPO/.venv}"
PYTHON="${BRIDGEDOCTOR_PYTHON:-$(command -v python3.11 || command -v python3)}"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[dev]" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c 'import bridgedoctor, olm, vodozemac, maubot' \
    || { echo "setup: the project venv $VENV is incomplete" >&2; exit 1; }

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "setup: PostgreSQL server binaries (initdb) are missing: install postgresql" >&2
        exit 1
    fi
fi
# The real-systemd tier (tests/systemd, tests/support/nspawn.py) boots containers with
# systemd-nspawn; Debian ships it in systemd-container.
if ! command -v systemd-nspawn >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container >/dev/null
    else
        echo "setup: systemd-nspawn is missing (apt-get install systemd-container); the systemd tests will skip" >&2
    fi
fi
echo "setup: ready ($VENV)"
