"""A custom network's code: the factory named by spec.model, from the image or a source archive.

Only training processes call this (the driver and each Ray worker, which build the
network): the operator validates the factory string and never imports it. A source
archive (`modelops source push`) is read from the store, checked against the sha256 its
name carries, and unpacked member by member into a private temporary folder that goes on
`sys.path` of this process only. Unpacking refuses what could write outside that folder or
fill the disk: absolute names, `..`, links and devices, too many members or bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import stat
import sys
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from modelops.api.network import MAX_SOURCE_BYTES as MAX_ARCHIVE_BYTES
from modelops.api.network import MAX_SOURCE_MEMBERS as MAX_MEMBERS
from modelops.api.network import MAX_SOURCE_UNPACKED_BYTES as MAX_EXTRACTED_BYTES
from modelops.api.training import ModelSpec
from modelops_runtime.errors import InputError

_lock = threading.Lock()
# sha256 → the folder it was unpacked into, once per process.
_unpacked: dict[str, str] = {}


class UserCodeError(InputError, ValueError):
    """The custom network's code cannot be fetched, unpacked, imported or called."""


def archive_digest(uri: str) -> str:
    """The sha256 a source URI names: its file name without `.tar.gz`."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    digest = name.removesuffix(".tar.gz")
    if digest == name or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UserCodeError(f"model.source {uri!r}: the file name is not <sha256>.tar.gz")
    return digest


def fetch(uri: str) -> bytes:
    """The archive's bytes, at most MAX_ARCHIVE_BYTES, verified against its name."""
    from modelops_runtime import artifacts  # fsspec: only where an archive is read

    expected = archive_digest(uri)
    try:
        fs, path = artifacts.filesystem(uri)
        with fs.open(path, "rb") as handle:
            blob: bytes = handle.read(MAX_ARCHIVE_BYTES + 1)
    except FileNotFoundError as missing:
        raise UserCodeError(
            f"model.source {uri!r} does not exist (push it with `modelops source push`)"
        ) from missing
    if len(blob) > MAX_ARCHIVE_BYTES:
        raise UserCodeError(f"model.source {uri!r} is larger than {MAX_ARCHIVE_BYTES} bytes")
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise UserCodeError(
            f"model.source {uri!r}: content hashes to {actual}, not to the name's {expected}"
        )
    return blob


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if member.name.startswith("/") or name.is_absolute():
        raise UserCodeError(f"source archive member {member.name!r} has an absolute path")
    if ".." in name.parts:
        raise UserCodeError(f"source archive member {member.name!r} climbs out with '..'")
    if not (member.isfile() or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "not a file or folder"
        raise UserCodeError(f"source archive member {member.name!r} is {kind}")
    return name


def extract(blob: bytes, dest: str) -> None:
    """Unpack a .tar.gz into `dest`, refusing anything but plain files and folders inside it."""
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
            _unpack(archive, dest)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as broken:
        raise UserCodeError(f"source archive is not a readable .tar.gz: {broken}") from broken


def _unpack(archive: tarfile.TarFile, dest: str) -> None:
    total = 0
    for count, member in enumerate(archive, start=1):
        if count > MAX_MEMBERS:
            raise UserCodeError(f"source archive has more than {MAX_MEMBERS} members")
        relative = _member_path(member)
        target = os.path.join(dest, *relative.parts)
        if member.isdir():
            os.makedirs(target, mode=0o700, exist_ok=True)
            continue
        total += member.size
        if total > MAX_EXTRACTED_BYTES:
            raise UserCodeError(f"source archive unpacks to more than {MAX_EXTRACTED_BYTES} bytes")
        source = archive.extractfile(member)
        if source is None:
            raise UserCodeError(f"source archive member {member.name!r} cannot be read")
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        # Created here, never opened through an existing name: nothing links out.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(target, flags, stat.S_IRUSR | stat.S_IWUSR), "wb") as out:
            out.write(source.read(member.size))


def activate(uri: str) -> str:
    """Unpack the archive at `uri` (once per process) and put it first on `sys.path`."""
    digest = archive_digest(uri)
    with _lock:
        folder = _unpacked.get(digest)
        if folder is None:
            folder = tempfile.mkdtemp(prefix=f"modelops-source-{digest[:12]}-")
            extract(fetch(uri), folder)
            _unpacked[digest] = folder
        if folder not in sys.path:
            sys.path.insert(0, folder)
            importlib.invalidate_caches()
    return folder


def factory(spec: ModelSpec) -> Callable[..., Any]:
    """The callable spec.model.factory names, from its source archive or the image."""
    if spec.factory is None:
        raise UserCodeError("model.factory is not set")
    if spec.source is not None:
        activate(spec.source)
    module_name, _, attribute = spec.factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        where = f"the source archive {spec.source}" if spec.source else "the image"
        raise UserCodeError(
            f"model.factory {spec.factory!r}: importing {module_name} from {where} failed: {error!r}"
        ) from error
    found = getattr(module, attribute, None)
    if not callable(found):
        raise UserCodeError(
            f"model.factory {spec.factory!r}: {module_name} has no function {attribute}"
        )
    return found  # type: ignore[no-any-return]
