"""Custom networks: the spec's factory, params and source, and the source archive's safety
(packing with `modelops source push`, unpacking in the trainer)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops import cli
from modelops.api.validation import parse_resource
from modelops.source_archive import SourceError, archive_uri, pack
from modelops_runtime import usercode
from modelops_runtime.usercode import UserCodeError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom"
SHA = "ab" * 32
SOURCE = f"file:///var/lib/modelops/models/_sources/nets/{SHA}.tar.gz"


def _job(model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "custom"},
        "spec": {
            "model": {"task": "forecasting", **model},
            "data": {"uri": "file:///d", "sequence": {"column": "value", "window": 8}},
            "output": {"modelName": "m"},
            **spec,
        },
    }


def _custom(**fields: Any) -> dict[str, Any]:
    return {"architecture": "custom", "factory": "nets.cnn:build", **fields}


def _problems(document: dict[str, Any]) -> dict[str, str]:
    _, problems = parse_resource(document)
    return {problem.path: problem.message for problem in problems}


def test_a_custom_model_with_factory_params_options_and_source_is_valid() -> None:
    params, options = {"channels": 32, "dropout": 0.1}, {"norm": "layer", "causal": "true"}
    for source in (SOURCE, f"s3://bucket/models/_sources/nets/{SHA}.tar.gz", None):
        model = _custom(params=params, options=options, **({"source": source} if source else {}))
        resource, problems = parse_resource(_job(model))
        assert not problems, problems
        spec = resource.spec.model  # type: ignore[union-attr]
        # Each number keeps its type: the factory gets 32, not 32.0.
        assert spec.factory_arguments() == {**params, **options}
        assert [type(v) for v in spec.params.values()] == [int, float]


@pytest.mark.parametrize(
    ("model", "path", "words"),
    [
        (_custom(factory="nets.cnn"), "spec.model.factory", "pattern"),
        (_custom(factory="nets/cnn:build"), "spec.model.factory", "pattern"),
        (_custom(factory="nets.cnn:build()"), "spec.model.factory", "pattern"),
        (_custom(factory="nets..cnn:build"), "spec.model.factory", "pattern"),
        ({"architecture": "custom"}, "spec.model.factory", "needs a factory"),
        ({"architecture": "mlp", "factory": "nets.cnn:build"}, "spec.model.factory", "custom only"),
        ({"architecture": "lstm", "params": {"a": 1}}, "spec.model.params", "custom only"),
        ({"architecture": "gru", "source": SOURCE}, "spec.model.source", "custom only"),
        (_custom(params={"a": [1, 2]}), "spec.model.params.a", "not list"),
        (_custom(params={"a": {"b": 1}}), "spec.model.params.a", "not dict"),
        (_custom(params={"a": "gelu"}), "spec.model.params.a", "text and flags go in options"),
        (_custom(params={"a": True}), "spec.model.params.a", "not bool"),
        (_custom(params={"a": float("nan")}), "spec.model.params.a", "finite"),
        (_custom(params={f"p{i}": i for i in range(33)}), "spec.model.params", "at most 32"),
        (_custom(options={"a": "x" * 257}), "spec.model.options.a", "at most 256"),
        (_custom(options={"a": 1}), "spec.model.options.a", "valid string"),
        (
            _custom(params={"a": 1}, options={"a": "x"}),
            "spec.model.options",
            "in both params and options",
        ),
        ({"architecture": "mlp", "options": {"a": "x"}}, "spec.model.options", "custom only"),
        (_custom(source="http://example.com/nets.tar.gz"), "spec.model.source", "pattern"),
        (_custom(source="file:///store/nets.tar.gz"), "spec.model.source", "pattern"),
        (_custom(source="file:///store/_sources/nets/abc.tar.gz"), "spec.model.source", "pattern"),
        (
            _custom(source=f"file:///store/_sources/Nets/{SHA}.tar.gz"),
            "spec.model.source",
            "pattern",
        ),
        (
            _custom(source=f"file:///store/../_sources/nets/{SHA}.tar.gz"),
            "spec.model.source",
            "pattern",
        ),
        (_custom(source=f"file:///store/_sources/nets/{SHA}.zip"), "spec.model.source", "pattern"),
        (_custom(bidirectional=True), "spec.model.bidirectional", "rnn, gru and lstm"),
    ],
)
def test_bad_custom_models_are_refused_naming_the_field(
    model: dict[str, Any], path: str, words: str
) -> None:
    problems = _problems(_job(model))
    assert path in problems, problems
    assert words in problems[path]


def test_a_search_may_vary_the_factorys_params() -> None:
    space = [{"path": "model.params.channels", "type": "choice", "values": ["16", "32"]}]
    document = _job(_custom(params={"channels": 8}), search={"trials": 2, "space": space})
    assert _problems(document) == {}


# -- unpacking a source archive in the trainer -------------------------------------------


def _tarball(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _file(name: str, data: bytes = b"x = 1\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    ("member", "words"),
    [
        (_file("../escape.py"), "climbs out with '..'"),
        (_file("pkg/../../escape.py"), "climbs out with '..'"),
        (_file("/tmp/absolute.py"), "absolute path"),
        (_link("pkg/link.py", "/etc/passwd", tarfile.SYMTYPE), "is a link"),
        (_link("pkg/hard.py", "/etc/passwd", tarfile.LNKTYPE), "is a link"),
        (_link("pkg/fifo", "", tarfile.FIFOTYPE), "not a file or folder"),
    ],
)
def test_unsafe_archive_members_are_refused(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], words: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UserCodeError, match=words):
        usercode.extract(_tarball(_file("pkg/__init__.py"), member), str(dest))
    # Nothing was written outside the destination.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


def test_oversize_and_crowded_archives_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usercode, "MAX_EXTRACTED_BYTES", 1000)
    with pytest.raises(UserCodeError, match="unpacks to more than 1000 bytes"):
        usercode.extract(
            _tarball(_file("a.py", b"#" * 600), _file("b.py", b"#" * 600)), str(tmp_path)
        )
    monkeypatch.setattr(usercode, "MAX_MEMBERS", 3)
    with pytest.raises(UserCodeError, match="more than 3 members"):
        usercode.extract(_tarball(*(_file(f"m{i}.py") for i in range(4))), str(tmp_path))
    with pytest.raises(UserCodeError, match=r"not a readable \.tar\.gz"):
        usercode.extract(b"not a tarball at all", str(tmp_path))


def _stored(folder: Path, blob: bytes, name: str | None = None) -> str:
    digest = name or hashlib.sha256(blob).hexdigest()
    path = folder / "_sources" / "nets" / f"{digest}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path.as_uri()


def test_fetch_verifies_the_content_against_the_name_and_bounds_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = _tarball(_file("pkg/__init__.py"))
    assert usercode.fetch(_stored(tmp_path, blob)) == blob
    forged = _stored(tmp_path, blob, name="0" * 64)
    with pytest.raises(UserCodeError, match="content hashes to"):
        usercode.fetch(forged)
    with pytest.raises(UserCodeError, match="does not exist"):
        usercode.fetch((tmp_path / "_sources" / "nets" / f"{'1' * 64}.tar.gz").as_uri())
    monkeypatch.setattr(usercode, "MAX_ARCHIVE_BYTES", len(blob) - 1)
    with pytest.raises(UserCodeError, match="larger than"):
        usercode.fetch(_stored(tmp_path, blob))


def test_a_pushed_source_is_unpacked_privately_and_its_factory_resolved(tmp_path: Path) -> None:
    from modelops.api.training import ModelSpec

    package = tmp_path / "src" / "probe_factory_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "def build(n_inputs, n_outputs, **params):\n    return (n_inputs, n_outputs, params)\n"
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            cli.main(
                [
                    "source",
                    "push",
                    str(tmp_path / "src"),
                    "--store",
                    (tmp_path / "store").as_uri(),
                    "--name",
                    "nets",
                ]
            )
            == 0
        )
    uri = out.getvalue().strip()
    spec = ModelSpec(architecture="custom", factory="probe_factory_pkg.nets:build", source=uri)
    try:
        build = usercode.factory(spec)
        assert build(n_inputs=3, n_outputs=1, depth=2) == (3, 1, {"depth": 2})
        folder = usercode.activate(uri)
        assert (
            folder != str(tmp_path / "src")
            and Path(folder, "probe_factory_pkg", "nets.py").is_file()
        )
        missing = spec.model_copy(update={"factory": "probe_factory_pkg.nets:absent"})
        with pytest.raises(UserCodeError, match="has no function absent"):
            usercode.factory(missing)
    finally:
        sys.path[:] = [p for p in sys.path if "modelops-source-" not in p]
        for name in [m for m in sys.modules if m.startswith("probe_factory_pkg")]:
            del sys.modules[name]


# -- packing with `modelops source push` ---------------------------------------------------


def test_packing_is_reproducible_and_leaves_caches_out(tmp_path: Path) -> None:
    for copy in ("a", "b"):
        (tmp_path / copy / "pkg" / "__pycache__").mkdir(parents=True)
        (tmp_path / copy / "pkg" / "__init__.py").write_text("x = 1\n")
        (tmp_path / copy / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(
            bytes([copy == "a"])
        )
    first, second = pack(tmp_path / "a"), pack(tmp_path / "b")
    assert first.sha256 == second.sha256 == hashlib.sha256(first.blob).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(first.blob), mode="r:gz") as tar:
        assert tar.getnames() == ["pkg", "pkg/__init__.py"]


def test_packing_refuses_links_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "link.py").symlink_to("/etc/passwd")
    with pytest.raises(SourceError, match="symbolic link"):
        pack(tmp_path)
    with pytest.raises(SourceError, match="DNS-1123"):
        archive_uri("file:///store", "Bad_Name", SHA)
    with pytest.raises(SourceError, match="store URI"):
        archive_uri("http://store", "nets", SHA)


def test_the_example_names_the_archive_its_source_packs_to() -> None:
    job = yaml.safe_load((EXAMPLE / "trainingjob.yaml").read_text())
    digest = pack(EXAMPLE / "src").sha256
    assert job["spec"]["model"]["source"].endswith(f"/_sources/forecast-cnn/{digest}.tar.gz"), (
        "examples/custom/src changed: run `modelops source push examples/custom/src ...` and "
        "put the printed URI in examples/custom/trainingjob.yaml"
    )
