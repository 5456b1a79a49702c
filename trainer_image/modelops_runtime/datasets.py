"""Example datasets written as shards: `python -m modelops_runtime datasets {digits,sunspots} DIR`.

- digits: scikit-learn's bundled 8x8 handwritten digits (1797 rows), columns f0..f63
  and `target`; DIR/train/ holds the training shards and DIR/holdout/ a held-out shard.
- sunspots: a synthetic stand-in for the monthly sunspot series (no download is
  possible here): an 11-"year" cycle (132 steps) with skewed peaks, a slowly varying
  cycle strength, and Gaussian noise, in column `value`. DIR holds the shards, each a
  consecutive stretch of the series; `--holdout DIR2` writes the continuation there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CYCLE = 132
_ROW_GROUP = 256


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path.with_suffix(".csv"), index=False)
    else:
        # Small row groups, so even these small shards stream in several chunks.
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path.with_suffix(".parquet"), row_group_size=_ROW_GROUP)


def _write_shards(frame: pd.DataFrame, folder: Path, shards: int, fmt: str) -> list[Path]:
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        path = folder / f"part-{i:05d}"
        _write(frame.iloc[part].reset_index(drop=True), path, fmt)
        paths.append(path.with_suffix(f".{fmt}"))
    return paths


def digits_frame() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    frame = pd.DataFrame(bunch.data.astype(np.float32), columns=[f"f{i}" for i in range(bunch.data.shape[1])])
    frame["target"] = bunch.target.astype(np.int64)
    return frame


def write_digits(folder: str | Path, shards: int = 4, holdout_fraction: float = 0.2, seed: int = 0, fmt: str = "parquet") -> dict[str, list[Path]]:
    """Shuffle the digits with `seed`, hold out a fraction, shard the rest."""
    frame = digits_frame()
    frame = frame.iloc[np.random.default_rng(seed).permutation(len(frame))].reset_index(drop=True)
    held = round(len(frame) * holdout_fraction)
    root = Path(folder)
    return {
        "train": _write_shards(frame.iloc[held:], root / "train", shards, fmt),
        "holdout": _write_shards(frame.iloc[:held], root / "holdout", 1, fmt),
    }


def sunspot_like(steps: int, start: int = 0, seed: int = 0) -> np.ndarray:
    """The synthetic series at time steps start .. start+steps-1 (noise seeded by both)."""
    t = np.arange(start, start + steps, dtype=np.float64)
    phase = 2 * np.pi * t / CYCLE
    strength = 80 + 40 * np.sin(2 * np.pi * t / (CYCLE * 7.3) + 0.5)
    # Rises faster than it falls, as solar cycles do.
    shape = ((1 + np.sin(phase + 0.3 * np.sin(phase))) / 2) ** 1.5
    noise = np.random.default_rng([seed, start]).normal(0.0, 8.0, steps)
    return (strength * shape + noise).astype(np.float32)


def write_sunspots(
    folder: str | Path,
    shards: int = 4,
    rows: int = 3000,
    seed: int = 0,
    fmt: str = "parquet",
    holdout: str | Path | None = None,
    holdout_rows: int = 600,
) -> dict[str, list[Path]]:
    """`rows` steps split into consecutive shards; optionally the next `holdout_rows` apart."""
    out = {"train": _write_shards(pd.DataFrame({"value": sunspot_like(rows, 0, seed)}), Path(folder), shards, fmt)}
    if holdout is not None:
        frame = pd.DataFrame({"value": sunspot_like(holdout_rows, rows, seed)})
        out["holdout"] = _write_shards(frame, Path(holdout), 1, fmt)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="modelops_runtime datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="name", required=True)
    digits = sub.add_parser("digits", help="scikit-learn digits as train/ and holdout/ shards")
    digits.add_argument("dir")
    digits.add_argument("--shards", type=int, default=4)
    digits.add_argument("--holdout-fraction", type=float, default=0.2)
    sunspots = sub.add_parser("sunspots", help="a synthetic sunspot-like series")
    sunspots.add_argument("dir")
    sunspots.add_argument("--shards", type=int, default=4)
    sunspots.add_argument("--rows", type=int, default=3000)
    sunspots.add_argument("--holdout", help="folder for the series' continuation")
    sunspots.add_argument("--holdout-rows", type=int, default=600)
    for command in (digits, sunspots):
        command.add_argument("--format", choices=["parquet", "csv"], default="parquet")
        command.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.name == "digits":
        written = write_digits(args.dir, args.shards, args.holdout_fraction, args.seed, args.format)
    else:
        written = write_sunspots(args.dir, args.shards, args.rows, args.seed, args.format, args.holdout, args.holdout_rows)
    for part, paths in written.items():
        print(f"{part}: {len(paths)} shard(s) in {paths[0].parent}")
    return 0
