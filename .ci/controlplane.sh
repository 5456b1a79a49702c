#!/usr/bin/env bash
# Build (or reuse) the pinned control-plane binaries and print their versions.
#
# Called by .ci/run.  Binaries are cached by version under
# ${MODELOPS_CACHE:-$HOME/.cache/modelops}/controlplane/<versions>/bin; only missing ones are
# built (each is written under a temporary name and renamed into place), so an interrupted
# build resumes where it stopped.  A cold build needs only the Go module proxy.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
fi
for tool in go openssl "$PYTHON"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "controlplane: $tool not found" >&2; exit 1; }
done
echo "controlplane: $(go version)"

start=$(date +%s)
"$PYTHON" tests/controlplane/cluster.py build
echo "controlplane: build or reuse took $(( $(date +%s) - start ))s"
