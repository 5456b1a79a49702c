"""`python -m modelops_runtime <command> [args]`: every program the workload image runs.

A command is a `main(argv: list[str]) -> int` function, imported only when chosen
(torch and Ray are slow to import). Adding a command is one line in COMMANDS.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, str] = {
    "train": "modelops_runtime.train.cli:main",
    "evaluate": "modelops_runtime.evaluate:main",
    "compare": "modelops_runtime.compare:main",
    "datasets": "modelops_runtime.datasets:main",
    "serve": "modelops_runtime.serve.cli:main",
    "predict-batch": "modelops_runtime.batch_predict:main",
    "scan": "modelops_runtime.data.scan:main",
    "import": "modelops_runtime.importer:main",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m modelops_runtime {{{','.join(COMMANDS)}}} [args]", file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    module, function = COMMANDS[args[0]].split(":")
    from modelops_runtime.bucket_check import StorageError
    from modelops_runtime.errors import INPUT_ERROR_EXIT_CODE, InputError

    try:
        return int(getattr(importlib.import_module(module), function)(args[1:]) or 0)
    except StorageError as error:
        # A misconfigured store is one line naming the URI, not a traceback; one that a
        # retry cannot fix (no bucket, denied) exits as an input error.
        print(f"error: {error}", file=sys.stderr)
        return INPUT_ERROR_EXIT_CODE if isinstance(error, InputError) else 1


if __name__ == "__main__":
    sys.exit(main())
