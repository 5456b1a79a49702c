"""Bring a scikit-learn model into ModelOps: fit, convert to ONNX, `modelops import`.

1. fits a StandardScaler + LogisticRegression pipeline on scikit-learn's bundled
   digits (columns f0..f63, as `python -m modelops_runtime datasets digits` writes them),
   holding back a fifth of the rows;
2. converts it with skl2onnx to `<root>/import/digits-sklearn.onnx` (no ZipMap needed:
   the import cuts it off either way);
3. runs `modelops import` on it, which publishes the next version of `digits-sklearn`
   in the local store `<root>/models` (what `file:///var/lib/modelops/models` in
   modeldeployment.yaml means to `modelops run --root <root>`);
4. prints the holdout accuracy scikit-learn gives, to compare with the served model's.

`python examples/import/convert.py [--root .modelops]`, then
`modelops run examples/import/modeldeployment.yaml --root .modelops`.
On a cluster, import into the deployment's store instead (`--store s3://bucket/models`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelops_runtime.datasets import digits_frame

MODEL = "digits-sklearn"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".modelops", help="local folder of `modelops run --root`")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()

    frame = digits_frame()
    features = [c for c in frame.columns if c != "target"]
    order = np.random.default_rng(0).permutation(len(frame))
    held = order[: len(frame) // 5]
    train = order[len(frame) // 5 :]
    x = frame[features].to_numpy(np.float32)
    y = frame["target"].to_numpy()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    pipeline.fit(x[train], y[train])

    path = root / "import" / f"{MODEL}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        to_onnx(pipeline, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    )
    print(f"wrote {path} ({path.stat().st_size} bytes)")

    command = [
        sys.executable, "-m", "modelops", "import", str(path),
        "--store", f"file://{root / 'models'}", "--model", MODEL, "--features", ",".join(features),
    ]  # fmt: skip
    print("$ modelops import", " ".join(command[4:]))
    subprocess.run(command, check=True)
    accuracy = float((pipeline.predict(x[held]) == y[held]).mean())
    print(f"scikit-learn holdout accuracy: {accuracy:.3f} on {len(held)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
