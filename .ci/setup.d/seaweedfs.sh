#!/usr/bin/env bash
# SeaweedFS's `weed` (Apache-2.0), the real S3-compatible server that the s3:// tests start
# on loopback (tests/s3_server.py). Built from the Go module proxy at a pinned version and
# cached under ${MODELOPS_CACHE:-$HOME/.cache/modelops}/seaweedfs/<version>/weed, so only
# the first run on a machine builds it. The tests fail, not skip, when it is missing.
set -euo pipefail

# The proxy serves this module only as a pseudo-version (it has no usable semver tags).
VERSION="v0.0.0-20261109003541-7506e5f91cd6"
cache="${MODELOPS_CACHE:-$HOME/.cache/modelops}/seaweedfs/$VERSION"
weed="$cache/weed"

if [ -x "$weed" ]; then
  echo "seaweedfs: cached $weed ($("$weed" version 2>/dev/null | head -1))"
  exit 0
fi

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || { echo "seaweedfs: go not found; cannot build weed" >&2; exit 1; }

echo "seaweedfs: building weed $VERSION with $(go version) (cold build, minutes)"
start=$(date +%s)
mkdir -p "$cache"
# Built into a scratch folder and renamed into place, so an interrupted build never
# leaves a half-written binary that a later run would take as cached.
work="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# `go install pkg@version` refuses this module (its go.mod has a replace directive), so the
# module is downloaded from the proxy and built inside its own folder, under its own go.mod
# and go.sum: the same dependency versions its authors pinned.
src="$(go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$src/weed" ] || { echo "seaweedfs: module download gave no source folder" >&2; exit 1; }
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/weed" ./weed)
[ -x "$work/weed" ] || { echo "seaweedfs: go build produced no weed binary" >&2; exit 1; }
mv -f "$work/weed" "$weed"
echo "seaweedfs: built $weed in $(( $(date +%s) - start ))s ($("$weed" version 2>/dev/null | head -1))"
