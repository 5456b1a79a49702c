"""What changed in a dataset since a version's snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelops.api.artifact import ShardInfo, SnapshotManifest


@dataclass(frozen=True)
class DataDelta:
    """Shards that differ between an old snapshot and the current listing."""

    new: list[ShardInfo] = field(default_factory=list)
    changed: list[ShardInfo] = field(default_factory=list)
    deleted: list[ShardInfo] = field(default_factory=list)
    unchanged: list[ShardInfo] = field(default_factory=list)

    @property
    def fresh(self) -> list[ShardInfo]:
        """Shards to train on: new and changed."""
        return [*self.new, *self.changed]

    @property
    def fresh_rows(self) -> int:
        return sum(shard.rows for shard in self.fresh)

    @property
    def is_empty(self) -> bool:
        return not (self.new or self.changed or self.deleted)


def compute_delta(old: SnapshotManifest | None, current: SnapshotManifest) -> DataDelta:
    """Compare by path; a shard whose size or hash differs counts as changed."""
    before = {shard.path: shard for shard in (old.shards if old else [])}
    now = {shard.path: shard for shard in current.shards}
    new, changed, unchanged = [], [], []
    for path in sorted(now):
        shard = now[path]
        previous = before.get(path)
        if previous is None:
            new.append(shard)
        elif (previous.sha256, previous.size) != (shard.sha256, shard.size):
            changed.append(shard)
        else:
            unchanged.append(shard)
    deleted = [before[path] for path in sorted(before) if path not in now]
    return DataDelta(new=new, changed=changed, deleted=deleted, unchanged=unchanged)


def schema_problem(expected: list[str], found: list[str], shard: str) -> str | None:
    """A message naming the columns by which a shard differs from the trained schema."""
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected column(s) {', '.join(extra)}")
    return f"shard {shard} changed schema: {'; '.join(parts)}"
