#!/usr/bin/env bash
# The KServe SDK for the OIP interop tests (tests/runtime/test_serve_grpc.py). Installed
# without its pinned dependencies, which would downgrade the Kubernetes client, pandas
# and psutil the project runs on; the few it needs that are not already here are added.
set -euo pipefail
if python3 -c "import kserve" >/dev/null 2>&1; then
  echo "kserve: $(python3 -c 'import kserve, importlib.metadata as m; print(m.version("kserve"))')"
  exit 0
fi
python3 -m pip install --progress-bar off -q --no-deps "kserve==0.21.0" "cloudevents<2" \
  grpc-interceptor timing-asgi tabulate deprecation python-multipart
python3 -c "import kserve" && echo "kserve: installed"
