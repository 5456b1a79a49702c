"""Source archives of custom networks: a folder packed as a reproducible .tar.gz, named by its sha256.

`modelops source push DIR --store URI --name N` packs DIR (the folder that holds the
factory's package), writes it to `<store>/_sources/<N>/<sha256>.tar.gz` and prints that
URI for spec.model.source. The same folder always packs to the same bytes (sorted
members, no timestamps or owners), so an unchanged source keeps its URI and a changed one
gets a new URI: a job names exactly the code it trains with. Only plain files and
folders are packed; caches (`__pycache__`, `*.pyc`) and hidden entries are left out.
Packing reads files only: nothing in the folder is imported here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from modelops.api.base import LABEL_PATTERN, STORE_URI_PATTERN
from modelops.api.network import (
    MAX_SOURCE_BYTES,
    MAX_SOURCE_MEMBERS,
    MAX_SOURCE_UNPACKED_BYTES,
    SOURCE_URI_PATTERN,
    SOURCES_FOLDER,
)

_SKIPPED_SUFFIXES = (".pyc", ".pyo")


class SourceError(ValueError):
    """The folder cannot be packed as a source archive."""


@dataclass(frozen=True)
class Archive:
    blob: bytes
    sha256: str
    files: int


def _members(folder: Path) -> list[Path]:
    """Files and folders to pack, sorted; refuses links and special files."""
    found: list[Path] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if path.suffix in _SKIPPED_SUFFIXES:
            continue
        if path.is_symlink():
            raise SourceError(f"{path} is a symbolic link; copy the file into the folder instead")
        if not (path.is_file() or path.is_dir()):
            raise SourceError(f"{path} is not a plain file or folder")
        found.append(path)
    return found


def pack(folder: Path) -> Archive:
    """The folder's reproducible .tar.gz, within the bounds the trainer unpacks."""
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder")
    members = _members(folder)
    if len(members) > MAX_SOURCE_MEMBERS:
        raise SourceError(f"{folder} has more than {MAX_SOURCE_MEMBERS} entries")
    total = 0
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in members:
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            data = path.read_bytes()
            total += len(data)
            if total > MAX_SOURCE_UNPACKED_BYTES:
                raise SourceError(f"{folder} holds more than {MAX_SOURCE_UNPACKED_BYTES} bytes")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    files = sum(1 for path in members if path.is_file())
    if not files:
        raise SourceError(f"{folder} has no files to pack")
    # mtime=0 and no file name in the gzip header: the same folder, the same bytes.
    blob = gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
    if len(blob) > MAX_SOURCE_BYTES:
        raise SourceError(f"{folder} packs to {len(blob)} bytes, over {MAX_SOURCE_BYTES}")
    return Archive(blob=blob, sha256=hashlib.sha256(blob).hexdigest(), files=files)


def archive_uri(store: str, name: str, sha256: str) -> str:
    """Where an archive goes: `<store>/_sources/<name>/<sha256>.tar.gz`."""
    if not re.fullmatch(LABEL_PATTERN, name) or len(name) > 63:
        raise SourceError(
            f"--name {name!r} is not a DNS-1123 label (lowercase letters, digits, '-')"
        )
    if not re.fullmatch(STORE_URI_PATTERN, store):
        raise SourceError(f"--store {store!r} is not a file:// or s3:// store URI")
    uri = f"{store.rstrip('/')}/{SOURCES_FOLDER}/{name}/{sha256}.tar.gz"
    if not re.fullmatch(SOURCE_URI_PATTERN, uri):
        raise SourceError(f"{uri!r} is not a valid model.source")
    return uri
