#!/usr/bin/env bash
# The whole suite as two pytest processes side by side, of about equal length:
#   - tests/cluster (the control plane, the operator and the real node), then tests/e2e
#     (the quickstart in local mode, in its own processes);
#   - everything else: unit, runtime (on one local Ray) and docs.
# Each process has its own session fixtures, so there is still one control plane and one Ray.
# The first process's output goes to a log, printed when both are done; the exit status
# fails when either process fails, or when neither collected a test.
#
#   tools/run-tests.sh [pytest arguments for both processes, e.g. --durations=40 or -k NAME]
# Paths belong to one tier's target instead (make test-unit, ...): both processes would run them.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
log=.state/test-cluster-e2e.log
mkdir -p .state

"$python" -m pytest tests/cluster tests/e2e -o cache_dir=.state/pytest-cache-cluster "$@" >"$log" 2>&1 &
cluster=$!
# Ctrl-C or a kill of this script stops the first process too. A background job ignores
# SIGINT, so it gets SIGTERM; the control plane's processes die with it (PR_SET_PDEATHSIG).
trap 'kill -TERM "$cluster" 2>/dev/null; wait "$cluster"; exit 130' INT TERM

"$python" -m pytest --ignore=tests/cluster --ignore=tests/e2e "$@"
rest=$?
wait "$cluster"
cluster_rc=$?
trap - INT TERM

echo
echo "================ tests/cluster and tests/e2e (ran alongside; log: $log) ================"
cat "$log"
echo "tests/cluster and tests/e2e: exit $cluster_rc; the other tiers: exit $rest"

# pytest's 5 means it collected nothing: fine for one process when -k or -m selects
# tests of the other only, a failure when both collected nothing.
if [ "$rest" -eq 5 ] && [ "$cluster_rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
for rc in "$rest" "$cluster_rc"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
    exit "$rc"
  fi
done
exit 0
