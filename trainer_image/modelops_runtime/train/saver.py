"""Epoch checkpoints written off the training thread.

A checkpoint is a few files in the store, the last one made durable (fsync, or an
object store's put): on a small model that costs more than an epoch's work. The loop
hands each epoch's state to this writer, which copies it at once and writes it while the
next epoch trains. At most one write is in flight; when the store is slower than the
epochs, the newest waiting checkpoint replaces an older one that has not started, so the
loop never waits on the store and the store holds the freshest epoch it could take.

Resume stays exact: a checkpoint is complete only once its `state.json` is written (see
`checkpoint`), so a process killed mid-write resumes from the previous complete epoch and
redoes the epochs after it, which are deterministic in (seed, epoch, rank).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import torch

from modelops_runtime.train import checkpoint


@dataclass
class _Pending:
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any]


def _detached(value: Any) -> Any:
    """A copy the training thread cannot change any more: tensors cloned to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_detached(v) for v in value)
    return copy.copy(value)


class Saver:
    """Writes epoch checkpoints under `root` in a background thread, newest first."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.saved: int | None = None
        self._pending: _Pending | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._closed = False
        self._lock = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="checkpoint-saver", daemon=True)
        self._thread.start()

    def put(self, epoch: int, model: dict[str, torch.Tensor], optimizer: dict[str, Any], state: dict[str, Any]) -> None:
        """Queue the checkpoint of `epoch`; raises the error of an earlier failed write."""
        pending = _Pending(epoch, _detached(model), _detached(optimizer), copy.deepcopy(state))
        with self._lock:
            self._raise()
            self._pending = pending
            self._lock.notify_all()

    def flush(self) -> int | None:
        """Wait until every queued checkpoint is written; returns the newest saved epoch."""
        with self._lock:
            self._lock.wait_for(lambda: (self._pending is None and not self._busy) or self._error is not None)
            self._raise()
            return self.saved

    def close(self) -> int | None:
        try:
            return self.flush()
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing a checkpoint under {self.root} failed") from self._error

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                job, self._pending, self._busy = self._pending, None, True
            try:
                checkpoint.save(self.root, job.epoch, job.model, job.optimizer, job.state)
            except BaseException as error:  # handed to the training thread at its next call
                with self._lock:
                    self._error, self._busy = error, False
                    self._lock.notify_all()
                return
            with self._lock:
                self.saved, self._busy = job.epoch, False
                self._lock.notify_all()
