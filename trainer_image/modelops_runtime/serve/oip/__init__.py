"""The Open Inference Protocol's gRPC messages and service stubs.

`pb2` and `pb2_grpc` are compiled from `grpc_predict_v2.proto` (beside this file)
with grpcio-tools the first time this package is imported: the generated code is
never stored in the source tree, so it cannot drift from the .proto or be edited
by hand. Compiling takes milliseconds, once per process.
"""

from __future__ import annotations

import sys
import tempfile
import types
from importlib import resources
from pathlib import Path

PROTO = "grpc_predict_v2.proto"
_PACKAGE = __name__  # modelops_runtime.serve.oip
_MODULE = "grpc_predict_v2"


def generate(out: Path) -> tuple[str, str]:
    """Run protoc (grpcio-tools) on the .proto; returns the (pb2, pb2_grpc) sources."""
    from grpc_tools import protoc

    # The .proto is laid out under its package path so that the generated modules
    # are named (and import each other) as modelops_runtime.serve.oip.*.
    relative = Path(*_PACKAGE.split("."), PROTO)
    source = out / "src" / relative
    source.parent.mkdir(parents=True)
    source.write_bytes(resources.files(_PACKAGE).joinpath(PROTO).read_bytes())
    generated = out / "gen"
    generated.mkdir()
    status = protoc.main(
        ["protoc", f"-I{out / 'src'}", f"--python_out={generated}", f"--grpc_python_out={generated}",
         str(relative)]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO} with status {status}")
    folder = generated.joinpath(*_PACKAGE.split("."))
    return (folder / f"{_MODULE}_pb2.py").read_text(), (folder / f"{_MODULE}_pb2_grpc.py").read_text()


def _load(name: str, code: str) -> types.ModuleType:
    module = types.ModuleType(f"{_PACKAGE}.{name}")
    module.__file__ = f"<generated from {PROTO}>"
    sys.modules[module.__name__] = module  # before exec: pb2_grpc imports pb2 by this name
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    setattr(sys.modules[_PACKAGE], name, module)
    return module


with tempfile.TemporaryDirectory(prefix="modelops-oip-") as _tmp:
    _pb2_code, _grpc_code = generate(Path(_tmp))
pb2 = _load(f"{_MODULE}_pb2", _pb2_code)
pb2_grpc = _load(f"{_MODULE}_pb2_grpc", _grpc_code)

__all__ = ["PROTO", "generate", "pb2", "pb2_grpc"]
