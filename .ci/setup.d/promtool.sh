#!/usr/bin/env bash
# promtool (Debian's prometheus package) for tests/unit/test_chart.py: it checks the chart's
# alert rules and dashboard queries and runs rule unit tests. The tests fail, not skip,
# when it is missing.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  echo "promtool: $(promtool --version 2>&1 | head -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool: missing and apt-get is not available; install Prometheus's promtool by hand" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "promtool: need root or sudo to install it" >&2; exit 1; }
  sudo="sudo"
fi
echo "promtool: installing the prometheus package"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null 2>&1 || { echo "promtool: still missing" >&2; exit 1; }
echo "promtool: $(promtool --version 2>&1 | head -1)"
