"""Job checkpoints in the store, without pickle.

Layout under `<store>/<model>/checkpoints/<job-id>/<run-key>/` (the run key digests the
job, its spec and its data, see `modelops.lifecycle.lineage`: only the same run resumes):
- `epoch-<N>/model.safetensors`: network weights (`model.*` keys, as in a version);
- `epoch-<N>/optimizer.safetensors`: optimizer tensors (`state.<param>.<name>`);
- `epoch-<N>/state.json`: optimizer scalars and groups, loop state, written last, so an
  epoch folder without it is an unfinished write and is ignored;
- `attempts/<n>`: one folder (an empty object on an object store) per start of the
  training function, made atomically;
- `run.json`: the run's pin (see `modelops_runtime.train.runs`).
Checkpoints of stores written before runs were scoped sit directly under `<job-id>/`;
no run resumes them.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem

from modelops_runtime import artifacts, publish

MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
_EPOCH = re.compile(r"^epoch-([0-9]+)$")
_ATTEMPT = re.compile(r"^([0-9]+)$")


def job_root(store_uri: str, model: str, job_id: str) -> str:
    return artifacts.join(store_uri, model, "checkpoints", job_id)


def run_root(store_uri: str, model: str, job_id: str, run_key: str) -> str:
    return artifacts.join(job_root(store_uri, model, job_id), run_key)


def _children(uri: str, pattern: re.Pattern[str]) -> list[int]:
    fs, root = artifacts.filesystem(uri)
    if not fs.exists(root):
        return []
    found = []
    for entry in fs.ls(root, detail=False):
        match = pattern.match(str(entry).rstrip("/").rsplit("/", 1)[-1])
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def next_attempt(root: str) -> int:
    """Claim the next attempt number (0 first): by creating its folder on a file system;
    on an object store, where folders do not exist, by a create-only put (If-None-Match)
    of an empty object of that name."""
    fs, path = artifacts.filesystem(artifacts.join(root, "attempts"))
    local = isinstance(fs, LocalFileSystem)
    if local:
        fs.makedirs(path, exist_ok=True)
    candidate = max(_children(artifacts.join(root, "attempts"), _ATTEMPT), default=-1) + 1
    while True:
        try:
            if local:
                fs.mkdir(f"{path}/{candidate}", create_parents=False)
            else:
                fs.pipe_file(f"{path}/{candidate}", b"", mode="create")
            return candidate
        except OSError as error:
            if not publish.refused_as_existing(error):
                raise
            candidate += 1


def epoch_uri(root: str, epoch: int) -> str:
    return artifacts.join(root, f"epoch-{epoch}")


def latest_epoch(root: str) -> int | None:
    """The newest epoch whose checkpoint is complete.

    A `state.json` that does not parse (cut short by an older writer, or a full disk)
    marks an unfinished checkpoint like a missing one: the run resumes from the one
    before instead of failing on it at every attempt.
    """
    for epoch in reversed(_children(root, _EPOCH)):
        fs, path = artifacts.filesystem(artifacts.join(epoch_uri(root, epoch), STATE))
        if not fs.exists(path):
            continue
        try:
            artifacts.read_json(artifacts.join(epoch_uri(root, epoch), STATE))
        except (ValueError, UnicodeDecodeError):
            continue
        return epoch
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def split_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON-able rest) of an optimizer's state dict."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param}.{name}"] = value
            else:
                scalars.setdefault(str(param), {})[name] = _jsonable(value)
    groups = [{k: _jsonable(v) for k, v in group.items()} for group in state_dict["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `split_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param, name = key.split(".", 2)
        state.setdefault(int(param), {})[name] = value
    for param, entries in meta["scalars"].items():
        state.setdefault(int(param), {}).update(entries)
    # JSON turned tuples (Adam's betas) into lists; optimizers expect tuples there.
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def save(
    root: str,
    epoch: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> str:
    """Write the checkpoint of `epoch`; older ones beyond `keep` are removed."""
    folder = epoch_uri(root, epoch)
    artifacts.save_weights(artifacts.join(folder, MODEL), {f"model.{k}": v for k, v in model_state.items()})
    tensors, meta = split_optimizer(optimizer_state)
    artifacts.save_weights(artifacts.join(folder, OPTIMIZER), tensors)
    artifacts.write_json(artifacts.join(folder, STATE), {**state, "epoch": epoch, "optimizer": meta})
    fs, _ = artifacts.filesystem(root)
    for old in _children(root, _EPOCH):
        if old <= epoch - keep:
            artifacts.remove(fs, artifacts.filesystem(epoch_uri(root, old))[1])
    return folder


def load_state(root: str, epoch: int) -> dict[str, Any]:
    state: dict[str, Any] = artifacts.read_json(artifacts.join(epoch_uri(root, epoch), STATE))
    return state


def load_model(root: str, epoch: int) -> dict[str, torch.Tensor]:
    """The network's state dict (without the `model.` prefix)."""
    tensors = artifacts.load_weights(artifacts.join(epoch_uri(root, epoch), MODEL))
    return {k.removeprefix("model."): v for k, v in tensors.items()}


def load_optimizer(root: str, epoch: int, state: dict[str, Any]) -> dict[str, Any]:
    tensors = artifacts.load_weights(artifacts.join(epoch_uri(root, epoch), OPTIMIZER))
    return join_optimizer(tensors, state["optimizer"])
