#!/usr/bin/env python3
"""Build the two container images without a Docker engine, cached by content hash.

    python tools/images.py build [operator|runtime|all]   # podman build, skipped when unchanged
    python tools/images.py archive NAME                   # an OCI archive of one image (path printed)
    python tools/images.py base                           # the Debian base image only

The Dockerfiles are the ones users build with Docker; here they are built by podman (no
daemon) with two differences, both build arguments:

- ``PYTHON_IMAGE`` is a base made from Debian packages with mmdebstrap (bookworm:
  python3.11, venv, ca-certificates), because no container registry is reachable; the
  Dockerfiles still default to ``python:3.11-slim``.
- pip installs from a wheelhouse (``pip download`` on the host, once per dependency set)
  mounted into the build, with ``PIP_NO_INDEX=1``: the build itself needs no network and a
  second build of changed code reuses every dependency layer.

The entry points, user, ports and layout are the Dockerfiles' own. Everything is cached
under ``${MODELOPS_CACHE:-~/.cache/modelops}/images``; an image is rebuilt only when the
hash of what its Dockerfile copies (and of the Dockerfile, base and wheelhouse) changes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("MODELOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python-is-python3",
    "ca-certificates",
    "passwd",
    "procps",
)
HASH_LABEL = "dev.modelops.content-hash"


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("MODELOPS_CACHE") or str(Path.home() / ".cache" / "modelops")
    path = Path(base) / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return str(project["version"])


@dataclass(frozen=True)
class Image:
    """One image of the project: its Dockerfile, the extra it installs, its tag."""

    name: str
    dockerfile: str
    extra: str
    repository: str
    sources: tuple[str, ...] = ("README.md", "operator/modelops", "trainer_image/modelops_runtime")

    @property
    def tag(self) -> str:
        registry = os.environ.get("REGISTRY", "ghcr.io/modelops")
        return f"{registry}/{self.repository}:{version()}"


IMAGES = {
    "operator": Image("operator", "operator/Dockerfile", "operator", "modelops-operator"),
    "runtime": Image("runtime", "trainer_image/Dockerfile", "runtime", "modelops-runtime"),
}


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, check=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def podman() -> str:
    found = shutil.which("podman")
    if not found:
        raise SystemExit("podman not found: apt-get install podman (or build with Docker)")
    return found


def image_label(tag: str, label: str) -> str | None:
    proc = subprocess.run(
        [podman(), "image", "inspect", "--format", "{{json .Labels}}", tag],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    labels = json.loads(proc.stdout.strip() or "null") or {}
    value = labels.get(label)
    return str(value) if value is not None else None


# -- the Debian base -------------------------------------------------------------------------


def base_tag() -> str:
    digest = hashlib.sha256(" ".join((DEBIAN_SUITE, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    return f"localhost/modelops-base:{DEBIAN_SUITE}-{digest}"


def ensure_base() -> str:
    """A Debian base image made with mmdebstrap, imported into podman once."""
    tag = base_tag()
    if image_label(tag, HASH_LABEL) is not None or _exists(tag):
        return tag
    tarball = cache_dir() / f"{tag.rsplit(':', 1)[1]}.rootfs.tar"
    if not tarball.exists():
        if not shutil.which("mmdebstrap"):
            raise SystemExit("mmdebstrap not found: apt-get install mmdebstrap")
        started = time.monotonic()
        log(f"making the base root file system ({DEBIAN_SUITE}: {', '.join(BASE_PACKAGES)})")
        tmp = tarball.with_name(
            f"{tarball.name}.{os.getpid()}.tar"
        )  # mmdebstrap goes by the suffix
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(tmp),
                DEBIAN_MIRROR,
            ],
            stdout=subprocess.DEVNULL,
        )
        os.replace(tmp, tarball)
        log(f"base root file system in {time.monotonic() - started:.0f}s")
    run(
        [podman(), "import", "--change", 'CMD ["/bin/bash"]', str(tarball), tag],
        stdout=subprocess.DEVNULL,
    )
    log(f"imported {tag}")
    return tag


def _exists(tag: str) -> bool:
    proc = subprocess.run([podman(), "image", "exists", tag], check=False)
    return proc.returncode == 0


# -- the wheelhouse --------------------------------------------------------------------------


def requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


# The S3 stack pins itself link by link (s3fs → fsspec, aiobotocore → botocore →
# python-dateutil<3, which the newest kubernetes client refuses); resolved afresh it sends
# pip's resolver through every aiobotocore release.
PINNED_FROM_HERE = (
    "s3fs", "fsspec", "aiobotocore", "botocore", "aioitertools", "jmespath", "python-dateutil"
)


def installed_pins() -> list[str]:
    """`name==version` of the S3 stack as `pip install -e .[all]` resolved it here."""
    pins = []
    for name in PINNED_FROM_HERE:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def ensure_wheelhouse() -> Path:
    """Every wheel both images install, downloaded once per dependency set."""
    reqs = sorted(
        {
            *requirements("operator"),
            *requirements("runtime"),
            "pip",
            "setuptools>=68",
            "wheel",
        }
    )
    digest = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]
    folder = cache_dir() / f"wheels-{digest}"
    done = folder / ".complete"
    if done.exists():
        return folder
    started = time.monotonic()
    log(f"downloading {len(reqs)} requirements and their dependencies into {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    # `pip wheel` rather than `pip download`: the few sdists become wheels here, on the same
    # platform as the base (linux x86_64, CPython 3.11, glibc of Debian bookworm or newer).
    # The versions this interpreter resolved for the same requirements settle the S3 stack.
    constraints = folder / "constraints.txt"
    constraints.write_text("\n".join(installed_pins()) + "\n")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--progress-bar",
            "off",
            "-c",
            str(constraints),
            "-w",
            str(folder),
            *reqs,
        ]
    )
    done.write_text("\n".join(reqs) + "\n")
    log(f"wheelhouse ready in {time.monotonic() - started:.0f}s")
    # Each is a few GB (torch and its CUDA wheels): one for an older dependency set is
    # never read again, and a few of them fill a CI machine's disk.
    for stale in folder.parent.glob("wheels-*"):
        if stale != folder and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            log(f"removed the stale wheelhouse {stale.name}")
    return folder


# -- building --------------------------------------------------------------------------------


def content_hash(image: Image, base: str, wheels: Path) -> str:
    """What the Dockerfile copies, the Dockerfile itself, the base and the wheelhouse."""
    digest = hashlib.sha256()
    digest.update(f"{base}\n{wheels.name}\n{image.tag}\n".encode())
    paths = [image.dockerfile, "pyproject.toml", *image.sources]
    for rel in paths:
        path = ROOT / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build(image: Image) -> str:
    """Build one image unless one with the same content hash is already there; its tag."""
    base = ensure_base()
    wheels = ensure_wheelhouse()
    wanted = content_hash(image, base, wheels)
    if image_label(image.tag, HASH_LABEL) == wanted:
        log(f"{image.tag} is up to date ({wanted})")
        return image.tag
    started = time.monotonic()
    log(f"building {image.tag} from {image.dockerfile} ({wanted})")
    context = _context(image)
    build_log = cache_dir() / f"build-{image.name}.log"
    try:
        with build_log.open("w") as out:
            proc = subprocess.run(
                [
                    podman(),
                    "build",
                    "--network",
                    "none",
                    "--layers",
                    "-f",
                    image.dockerfile,
                    "--build-arg",
                    f"PYTHON_IMAGE={base}",
                    "--build-arg",
                    f"VERSION={version()}",
                    "--build-arg",
                    "PIP_FIND_LINKS=/wheels",
                    "--build-arg",
                    "PIP_NO_INDEX=1",
                    "--volume",
                    f"{wheels}:/wheels:ro",
                    *ulimit_args(),
                    "--label",
                    f"{HASH_LABEL}={wanted}",
                    "-t",
                    image.tag,
                    str(context),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
    finally:
        shutil.rmtree(context, ignore_errors=True)
    if proc.returncode != 0:
        tail = "\n".join(build_log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"podman build of {image.tag} failed (full log: {build_log}):\n{tail}")
    log(f"built {image.tag} in {time.monotonic() - started:.0f}s")
    return image.tag


def ulimit_args() -> list[str]:
    """Limits no higher than this process's: raising them needs CAP_SYS_RESOURCE, which
    sandboxed builders lack (the runtime's defaults would then fail every RUN step)."""
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = 16384 if nproc == resource.RLIM_INFINITY else min(nproc, 16384)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def _context(image: Image) -> Path:
    """A build context with only what the Dockerfile copies (no caches, no .git)."""
    context = Path(tempfile.mkdtemp(prefix=f"modelops-{image.name}-context-"))
    for rel in (image.dockerfile, "pyproject.toml", *image.sources):
        src, dst = ROOT / rel, context / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    return context


def built_hash(image: Image) -> str:
    """The content hash of the built image; exits naming the build command when there is none."""
    wanted = image_label(image.tag, HASH_LABEL)
    if wanted is None:
        raise SystemExit(
            f"{image.tag} is not built: run `python tools/images.py build {image.name}`"
        )
    return wanted


def archive(image: Image) -> Path:
    """The image as an OCI archive (for `ctr images import`), cached by content hash."""
    wanted = built_hash(image)
    path = cache_dir() / f"{image.name}-{wanted}.oci.tar"
    if path.exists():
        return path
    for stale in cache_dir().glob(f"{image.name}-*.oci.tar"):
        stale.unlink()
    started = time.monotonic()
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    run([podman(), "save", "--format", "oci-archive", "-o", str(tmp), image.tag])
    os.replace(tmp, path)
    log(f"saved {image.tag} to {path.name} in {time.monotonic() - started:.0f}s")
    return path


def push(image: Image, target: str) -> None:
    """Push a built image to a registry on loopback (plain HTTP, as a node's is); the
    layers the registry already holds are not sent again."""
    built_hash(image)
    started = time.monotonic()
    run([podman(), "push", "--quiet", "--tls-verify=false", image.tag, target])
    log(f"pushed {image.tag} to {target} in {time.monotonic() - started:.0f}s")


def image_hash(image: Image) -> str | None:
    return image_label(image.tag, HASH_LABEL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) images")
    b.add_argument("which", nargs="?", default="all", choices=["all", *IMAGES])
    a = sub.add_parser("archive", help="write an OCI archive of a built image; print its path")
    a.add_argument("which", choices=list(IMAGES))
    sub.add_parser("base", help="make (or reuse) the Debian base image")
    args = parser.parse_args(argv)
    if args.command == "base":
        print(ensure_base())
    elif args.command == "build":
        names = list(IMAGES) if args.which == "all" else [args.which]
        for name in names:
            print(build(IMAGES[name]))
    elif args.command == "archive":
        print(archive(IMAGES[args.which]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
