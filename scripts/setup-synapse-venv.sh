#!/usr/bin/env bash
# Create the separate Synapse virtualenv used by the end-to-end tests (tests/e2e).
# Idempotent: does nothing if the venv already runs the pinned Synapse version; a venv that
# does not (broken, other version) is deleted and rebuilt.
#
#   BRIDGEDOCTOR_SYNAPSE_VENV   target venv  (default: <repo>/.venv-synapse)
#   BRIDGEDOCTOR_SYNAPSE_PYTHON interpreter  (default: python3.11, else python3)
set -euo pipefail

SYNAPSE_VERSION=1.163.2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BRIDGEDOCTOR_SYNAPSE_VENV:-$REPO/.venv-synapse}"

fail() {
    echo "setup-synapse-venv: ERROR: $*" >&2
    exit 1
}

venv_ok() {
    # Importing the homeserver module also loads Synapse's Rust extension. Not
    # synapse.__version__: inside a git checkout it carries that checkout's branch and commit.
    "$VENV/bin/python" - "$SYNAPSE_VERSION" >/dev/null 2>&1 <<'EOF'
import importlib.metadata, sys
import synapse.app.homeserver  # noqa: F401
sys.exit(importlib.metadata.version("matrix-synapse") != sys.argv[1])
EOF
}

if [[ -x "$VENV/bin/python" ]] && venv_ok; then
    echo "setup-synapse-venv: Synapse $SYNAPSE_VERSION already in $VENV"
    exit 0
fi

PYTHON="${BRIDGEDOCTOR_SYNAPSE_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    PYTHON="$(command -v python3.11 || command -v python3 || true)"
fi
[[ -n "$PYTHON" ]] || fail "no python3.11/python3 found (set BRIDGEDOCTOR_SYNAPSE_PYTHON)"
command -v "$PYTHON" >/dev/null || fail "interpreter '$PYTHON' not found"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (4, 0)))' \
    || fail "$PYTHON is not Python >= 3.10 (required by Synapse $SYNAPSE_VERSION)"

if [[ -e "$VENV" ]]; then
    # Only ever delete something that is recognisably a (broken/outdated) venv.
    [[ -f "$VENV/pyvenv.cfg" ]] || fail "$VENV exists and is not a virtualenv; refusing to touch it"
    rm -rf "$VENV"
fi

LOG="$(mktemp -t setup-synapse-venv.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT
echo "setup-synapse-venv: installing matrix-synapse==$SYNAPSE_VERSION into $VENV"
if ! "$PYTHON" -m venv "$VENV" >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    fail "'$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)"
fi
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "matrix-synapse==$SYNAPSE_VERSION" >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    fail "pip install matrix-synapse==$SYNAPSE_VERSION failed (log tail above)"
fi
venv_ok || fail "Synapse installed but 'import synapse.app.homeserver' fails in $VENV"
echo "setup-synapse-venv: done"
