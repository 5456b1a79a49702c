"""Model version numbers: allocated per model name, monotonic, never handed out twice.

The book of a model is a ConfigMap `modelops-versions-<model>` in the job's namespace:
`next` is the next free number and `jobs` records which job (by uid) got which number,
so asking again for the same job (a restarted operator, a retried reconcile) returns the
same number. Updates carry the ConfigMap's resourceVersion; a concurrent writer (another
thread, another operator) makes the API server answer 409 and the update is redone on
the fresh book. The counter never goes down, even when a job is deleted and its entry
forgotten, so a number is never reused.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelops.k8s.kube import ApiError, Kube, namespaced_path
from modelops.k8s.trainingjob import names


@dataclass(frozen=True)
class VersionBook:
    """The content of a model's version ConfigMap."""

    next: int = 1
    jobs: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Mapping[str, str] | None) -> VersionBook:
        data = data or {}
        raw_jobs = json.loads(data.get("jobs", "{}"))
        jobs = {uid: (str(entry["job"]), int(entry["version"])) for uid, entry in raw_jobs.items()}
        # Never below a recorded number, whatever `next` says (a hand-edited book).
        floor = max((version for _, version in jobs.values()), default=0) + 1
        return cls(next=max(int(data.get("next", "1")), floor), jobs=jobs)

    def to_data(self) -> dict[str, str]:
        jobs = {uid: {"job": job, "version": v} for uid, (job, v) in sorted(self.jobs.items())}
        return {"next": str(self.next), "jobs": json.dumps(jobs, separators=(",", ":"))}

    def assign(self, uid: str, job: str) -> tuple[VersionBook, int]:
        """The job's number, and the book that records it (the same book when known)."""
        if uid in self.jobs:
            return self, self.jobs[uid][1]
        version = self.next
        return VersionBook(next=version + 1, jobs={**self.jobs, uid: (job, version)}), version

    def forget(self, uid: str) -> VersionBook:
        jobs = {key: value for key, value in self.jobs.items() if key != uid}
        return VersionBook(next=self.next, jobs=jobs)


class VersionConflict(RuntimeError):
    """The book kept changing under us; the caller retries later."""


class VersionAllocator:
    """Allocates through the API server.

    Within this process, one lock per book serialises the writers, and a writer takes
    every request queued behind the lock into one update (group commit: 200 jobs
    starting at once cost a handful of writes, not 200). The last book read or written
    is kept, so an update is usually one request; a 409 (another process wrote, or the
    cache is old) drops it and the update is redone on a fresh read.
    """

    def __init__(self, kube: Kube, max_tries: int = 30) -> None:
        self._kube = kube
        self._max_tries = max_tries
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._waiting: dict[tuple[str, str], dict[str, str]] = {}
        self._books: dict[tuple[str, str], dict[str, Any]] = {}
        self._known: dict[str, int] = {}

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def allocate(self, namespace: str, model: str, uid: str, job: str) -> int:
        known = self._known.get(uid)
        if known is not None:
            return known
        key = (namespace, model)
        with self._guard:
            self._waiting.setdefault(key, {})[uid] = job
        with self._lock(key):
            if uid not in self._known:  # else an earlier writer took us along
                with self._guard:
                    batch = self._waiting.pop(key, {})
                # Ours too, even if it went with a writer whose update failed.
                batch.setdefault(uid, job)

                def assign(book: VersionBook) -> VersionBook:
                    for each_uid, each_job in batch.items():
                        book, _ = book.assign(each_uid, each_job)
                    return book

                book = self._update(namespace, model, assign)
                for each_uid in batch:
                    self._known[each_uid] = book.jobs[each_uid][1]
        return self._known[uid]

    def forget(self, namespace: str, model: str, uid: str) -> None:
        """Drop a deleted job's entry; its number stays used.

        A missing book is left missing: there is nothing to forget, and creating one
        would be refused forever in a terminating namespace (the job's finalizer would
        never finish) or restart the numbering at 1 in a live one.
        """
        self._known.pop(uid, None)
        with self._lock((namespace, model)):
            self._update(namespace, model, lambda book: book.forget(uid), create=False)

    def _update(
        self,
        namespace: str,
        model: str,
        change: Callable[[VersionBook], VersionBook],
        create: bool = True,
    ) -> VersionBook:
        key = (namespace, model)
        path = namespaced_path("ConfigMap", namespace, names.versions_config_map(model))
        for attempt in range(self._max_tries):
            current = self._books.get(key) or self._read(path)
            book = VersionBook.from_data(current.get("data") if current else None)
            updated = change(book)
            if current is None and not create:
                return book
            if current is not None and updated == book:
                return book
            try:
                if current is None:
                    written = self._kube.create(_book_manifest(namespace, model, updated))
                else:
                    written = self._kube.replace(path, {**current, "data": updated.to_data()})
            except ApiError as error:
                if not (error.conflict or error.not_found):
                    raise
                self._books.pop(key, None)  # someone else wrote (or deleted): read again
                # Jitter spreads out writers that collided, so they do not collide again.
                time.sleep(random.uniform(0.0, min(1.0, 0.02 * 2**attempt)))
                continue
            self._books[key] = written
            return updated
        raise VersionConflict(f"the version book of model {model!r} kept changing")

    def _read(self, path: str) -> dict[str, Any] | None:
        try:
            return self._kube.get(path)
        except ApiError as error:
            if error.not_found:
                return None
            raise


def _book_manifest(namespace: str, model: str, book: VersionBook) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.versions_config_map(model),
            "namespace": namespace,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_MODEL: model},
        },
        "data": book.to_data(),
    }
