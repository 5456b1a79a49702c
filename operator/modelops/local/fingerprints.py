"""The fingerprints of an IncrementalUpdate's data in local mode.

One cache for the life of `modelops run`, written to its state folder after each scan: an
interval's look at the data reads only new or rewritten shards, and a restarted run does
not hash the whole dataset again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelops.api.training import DataFormat
from modelops.lifecycle.datascan import DataScan

if TYPE_CHECKING:
    from modelops_runtime.data.scan import FingerprintCache


class LocalScanner:
    """Scans one update's data against a baseline version, reusing what it hashed before."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: FingerprintCache | None = None

    @property
    def cache(self) -> FingerprintCache:
        if self._cache is None:
            from modelops_runtime.data.scan import load_cache  # heavy imports, only when used

            self._cache = load_cache(str(self.path))
        return self._cache

    def scan(
        self, uri: str, fmt: DataFormat, store: str, model: str, baseline: int | None
    ) -> DataScan:
        """The data now, against the snapshot `baseline` was trained on; the cache saved."""
        from modelops_runtime.data.scan import save_cache, scan

        cache = self.cache
        result = scan(uri, fmt, store, model, baseline, cache)
        save_cache(str(self.path), cache)
        return result
