#!/usr/bin/env bash
# Build the maubot plugin: dist/<id>-v<version>.mbp (prints its path). Upload it in maubot's web
# UI (https://<matrix domain>/_matrix/maubot/) or with `mbc upload`; see docs/plugin.md.
#
# The .mbp holds bridgedoctor_maubot/ and only the stdlib-only part of bridgedoctor/ the plugin
# imports (protocol, render.matrix, render.matrix_reset, render.matrix_watch, render.matrix_apply,
# render.neutral):
# maubot installs no dependencies, so nothing else may ship.
# Built from a clean staging copy, because `mbc build` zips whole package directories,
# __pycache__ included.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${BRIDGEDOCTOR_VENV:-$REPO/.venv}/bin/python"
OUT_DIR="${1:-$REPO/dist}"
cd "$REPO"

field() { sed -n "s/^$1: *\([^ #]*\).*/\1/p" maubot.yaml; }
id="$(field id)"
version="$(field version)"
core="$("$PY" -c 'import bridgedoctor; print(bridgedoctor.__version__)')"
if [[ "$version" != "$core" ]]; then
    echo "build-mbp: maubot.yaml version $version differs from bridgedoctor $core" >&2
    exit 1
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bridgedoctor/render" "$stage/bridgedoctor_maubot"
cp maubot.yaml base-config.yaml "$stage/"
cp bridgedoctor/__init__.py bridgedoctor/protocol.py "$stage/bridgedoctor/"
cp bridgedoctor/render/__init__.py bridgedoctor/render/matrix.py bridgedoctor/render/matrix_reset.py \
    bridgedoctor/render/matrix_watch.py bridgedoctor/render/matrix_apply.py \
    bridgedoctor/render/neutral.py \
    "$stage/bridgedoctor/render/"
cp bridgedoctor_maubot/*.py "$stage/bridgedoctor_maubot/"

mkdir -p "$OUT_DIR"
out="$(cd "$OUT_DIR" && pwd)/$id-v$version.mbp"
rm -f "$out" # mbc asks before overwriting, and aborts without a terminal
(cd "$stage" && "$PY" -m maubot.cli build -o "$out" .) </dev/null >/dev/null
# mbc exits 0 on some failures: trust the file, not the exit code.
[[ -s "$out" ]] || { echo "build-mbp: mbc build wrote no $out" >&2; exit 1; }
echo "$out"
