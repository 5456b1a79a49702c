"""docs/reference.md is generated from the API models and must be regenerated with them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from modelops.api.crd import RESOURCES

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "gen_reference.py"
DOC = ROOT / "docs" / "reference.md"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_is_fresh() -> None:
    assert DOC.read_text() == _tool().render(), "run `python tools/gen_reference.py`"


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text(DOC.read_text().replace("Retries from the last checkpoint", "Retries"))
    check = [sys.executable, str(TOOL), "--check", "--output", str(stale)]
    failed = subprocess.run(check, capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 1 and "stale" in failed.stdout
    subprocess.run([sys.executable, str(TOOL), "--output", str(stale)], check=True, cwd=ROOT)
    assert subprocess.run(check, capture_output=True, cwd=ROOT).returncode == 0


def test_every_field_of_every_resource_is_documented() -> None:
    text = DOC.read_text()
    for info in RESOURCES:
        assert f"## {info.kind}\n" in text
        spec = info.model.model_fields["spec"].annotation
        assert isinstance(spec, type)
        for name, field in spec.model_fields.items():  # type: ignore[attr-defined]
            assert f"| `{field.alias or name}` |" in text, f"{info.kind}.spec.{name}"
