"""Errors in what the user gave (the data, the spec against the data), not in the run.

They recur on every attempt, so retrying them only burns the job's backoffLimit (and
its GPUs for as long): `python -m modelops_runtime train` exits with
`INPUT_ERROR_EXIT_CODE` for them and the operator fails the job at once. Each is also
the built-in exception callers caught before, so existing handlers keep working.
"""

from __future__ import annotations

from modelops.lifecycle.training_report import INPUT_ERROR_EXIT_CODE

__all__ = ["INPUT_ERROR_EXIT_CODE", "InputError", "MissingColumns", "ModelFileError", "NoData"]


class InputError(Exception):
    """The input cannot be trained on as it is; the user must change the data or the spec."""


class NoData(InputError, FileNotFoundError):
    """The dataset is not a folder, or has no shard of its format."""


class MissingColumns(InputError, ValueError):
    """The spec names columns the data does not have."""


class ModelFileError(InputError, ValueError):
    """A model file that cannot be loaded: malformed, truncated, oversize or unsafe."""
