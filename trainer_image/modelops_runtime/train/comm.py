"""The few collective operations the loop needs; trivial when it runs alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Comm:
    """Rank, world size and device of this worker."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def alone(cls, use_gpu: bool) -> Comm:
        """A single worker, on the GPU when asked for and present."""
        gpu = use_gpu and torch.cuda.is_available()
        return cls(device=torch.device("cuda") if gpu else torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world > 1 and dist.is_available() and dist.is_initialized()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over workers."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def broadcast(self, value: T) -> T:
        """Rank 0's value, on every worker."""
        if not self.distributed:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        result: T = box[0]
        return result

    def gather(self, value: T) -> list[T]:
        """Every worker's value, on every worker."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
