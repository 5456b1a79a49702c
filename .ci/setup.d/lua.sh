#!/usr/bin/env bash
# Lua interpreters for tests/unit/test_argocd_health.py, which runs docs/argocd-health.lua.
# Argo CD evaluates health checks with gopher-lua (Lua 5.1 semantics), so the script is run
# under both 5.1 and 5.4; the test fails (it does not skip) when either is missing.
set -euo pipefail

missing=()
for interpreter in lua5.1 lua5.4; do
  command -v "$interpreter" >/dev/null 2>&1 || missing+=("$interpreter")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "lua: $(lua5.1 -v 2>&1 | head -1); $(lua5.4 -v 2>&1 | head -1)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "lua: ${missing[*]} missing and apt-get is not available; install them by hand" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "lua: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "lua: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for interpreter in "${missing[@]}"; do
  command -v "$interpreter" >/dev/null 2>&1 || { echo "lua: $interpreter still missing" >&2; exit 1; }
done
echo "lua: $(lua5.1 -v 2>&1 | head -1); $(lua5.4 -v 2>&1 | head -1)"
