"""Publishing a version: written aside, then made visible at once, never over another.

A run writes its version into `<store>/<model>/.staging/<token>/` and then publishes it
as `v<N>`, create-only:
- on a file system, by a rename that never replaces (`renameat2(RENAME_NOREPLACE)`, or
  a plain rename where the kernel lacks it, which fails on a non-empty folder, and a
  version folder is never empty): readers see no folder or the whole one;
- on an object store, by a conditional put (If-None-Match) of `v<N>/publish.json` that
  claims the number; only the claimant copies the files in, the card last, and a
  version counts as published only once its card is there (`artifacts.list_versions`).
A second writer of `v<N>` gets VersionTaken (even the same run, once the version is
whole) and publishes under another number.
`publish.json` names the run that owns the version, so a rerun of that run can reuse
it instead of publishing a copy. Versions written before publishing existed have no
`publish.json`; they are read as they are and owned by no run.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from modelops_runtime import artifacts

OWNER = "publish.json"
STAGING = ".staging"
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1

Step = Callable[[], None]


class VersionTaken(FileExistsError):
    """`v<N>` is already published (or claimed) by another run."""

    def __init__(self, uri: str, owner: dict[str, Any] | None) -> None:
        by = f"job {owner.get('jobId')}, run {owner.get('run')}" if owner else "an earlier writer"
        super().__init__(f"{uri} already exists ({by}); versions are never overwritten")
        self.uri = uri
        self.owner = owner


def stage_uri(store_uri: str, name: str) -> str:
    """A fresh private folder to write a version into before it is published."""
    return artifacts.join(store_uri, name, STAGING, uuid.uuid4().hex)


def taken(store_uri: str, name: str) -> list[int]:
    """Every number in use: published, claimed, or left unfinished by an older writer."""
    fs, root = artifacts.filesystem(artifacts.join(store_uri, name))
    if not fs.exists(root):
        return []
    numbers = []
    for entry in fs.ls(root, detail=False):
        match = _VERSION_DIR.match(str(entry).rstrip("/").rsplit("/", 1)[-1])
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def next_number(store_uri: str, name: str) -> int:
    """The number after every one in use; the publish itself settles a race for it."""
    return max(taken(store_uri, name), default=0) + 1


def owner(version_uri: str) -> dict[str, Any] | None:
    """Who published a version; None for a version from before publishing (or none)."""
    fs, path = artifacts.filesystem(artifacts.join(version_uri, OWNER))
    try:
        with fs.open(path, "r") as handle:
            found: dict[str, Any] = json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return found


def same_run(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return a is not None and (a.get("jobId"), a.get("run")) == (b.get("jobId"), b.get("run"))


def publish(staging_uri: str, version_uri: str, run: dict[str, Any]) -> None:
    """Make the staged folder the version at `version_uri`, or raise VersionTaken."""
    for step in publish_steps(staging_uri, version_uri, run):
        step()


def publish_steps(staging_uri: str, version_uri: str, run: dict[str, Any]) -> list[Step]:
    """The publish as a list of steps: stopping after any of them leaves no partial version."""
    fs, source = artifacts.filesystem(staging_uri)
    _, target = artifacts.filesystem(version_uri)
    text = json.dumps(run, sort_keys=True).encode()
    if isinstance(fs, LocalFileSystem):
        return [
            partial(fs.pipe_file, f"{source}/{OWNER}", text),
            partial(fs.makedirs, target.rsplit("/", 1)[0], exist_ok=True),
            partial(_rename_local, source, target, version_uri),
        ]
    files = sorted(str(path)[len(source) + 1 :] for path in fs.find(source))
    # The card is copied last: until it is there, readers do not count the version.
    ordered = [f for f in files if f not in (artifacts.CARD, OWNER)] + [f for f in files if f == artifacts.CARD]
    steps: list[Step] = [partial(_claim, fs, f"{target}/{OWNER}", text, run, version_uri)]
    steps += [partial(fs.copy, f"{source}/{name}", f"{target}/{name}") for name in ordered]
    steps.append(partial(artifacts.remove, fs, source))
    return steps


def refused_as_existing(error: OSError) -> bool:
    """A conditional put refused because the object exists. s3fs maps that to
    FileExistsError only when the server names the If-None-Match condition, as AWS does;
    other servers (SeaweedFS) answer a bare 412 PreconditionFailed."""
    if isinstance(error, FileExistsError):
        return True
    response = getattr(error.__cause__, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "PreconditionFailed"


def _claim(fs: AbstractFileSystem, path: str, text: bytes, run: dict[str, Any], version_uri: str) -> None:
    try:
        fs.pipe_file(path, text, mode="create")
    except OSError as error:
        if not refused_as_existing(error):
            raise
        # Our own claim from an attempt that died while copying: this run finishes it.
        # Once the card is there the version is whole, and stays as it is.
        found = owner(version_uri)
        if not same_run(found, run) or fs.exists(f"{path.rsplit('/', 1)[0]}/{artifacts.CARD}"):
            raise VersionTaken(version_uri, found) from None


def _rename_local(source: str, target: str, version_uri: str) -> None:
    try:
        _rename_noreplace(source, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise VersionTaken(version_uri, owner(version_uri)) from error
        raise


def _rename_noreplace(source: str, target: str) -> None:
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        done = renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if done == 0:
            return
        code = ctypes.get_errno()
        # ENOSYS/EINVAL: no such call, or a file system without the flag.
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), target)
    # A plain rename replaces only an empty folder, and a version folder is never empty.
    os.rename(source, target)


def discard(staging_uri: str) -> None:
    """Remove a staged folder that was not published (a reused version, a failed run)."""
    fs, path = artifacts.filesystem(staging_uri)
    if fs.exists(path):
        artifacts.remove(fs, path)
