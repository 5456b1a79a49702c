"""What the operator imports must not drag in the ML stack (its image has no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

OPERATOR_SIDE = [
    "modelops.k8s.main",
    "modelops.k8s.incrementalupdate.reconcile",
    "modelops_runtime.data.shards",  # the IncrementalUpdate controller lists data with it
    "modelops_runtime.data.readers",
    "modelops_runtime.artifacts",
]


@pytest.mark.parametrize("module", OPERATOR_SIDE)
def test_module_imports_without_torch_or_ray(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'safetensors') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"
