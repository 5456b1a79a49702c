"""Every flag of `modelops` and of `python -m modelops_runtime` is used by some test.

The flags are read from the argparse parsers themselves (subcommands included), so a
new flag without a test fails here. A flag counts as used when a test file other than
this one names it (as the whole token `--flag`) and also names its command. The
runtime's commands build their parsers inside `main`; they are captured by stopping
`parse_args` at its first call.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"

# Flags no test needs to pass: (command, flag) -> why. Keep this empty where possible.
ALLOWED_UNUSED: dict[tuple[str, str], str] = {}


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _runtime_parser(command: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    from modelops_runtime.__main__ import COMMANDS

    module, function = COMMANDS[command].split(":")
    entry = getattr(importlib.import_module(module), function)

    def capture(self: argparse.ArgumentParser, *_: object, **__: object) -> None:
        raise _Captured(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        try:
            entry([])
        except _Captured as captured:
            return captured.parser
    raise AssertionError(f"python -m modelops_runtime {command} parsed no arguments")


def _flags(parser: argparse.ArgumentParser, command: str) -> Iterator[tuple[str, str]]:
    """(command, flag) for every option; subcommands extend the command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, f"{command} {name}")
        elif isinstance(action, argparse._HelpAction):
            continue
        else:
            for flag in action.option_strings:
                yield command, flag


def all_flags(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    from modelops.cli import build_parser
    from modelops_runtime.__main__ import COMMANDS

    found = list(_flags(build_parser(), "modelops"))
    for command in COMMANDS:
        parser = _runtime_parser(command, monkeypatch)
        found += _flags(parser, f"python -m modelops_runtime {command}")
    return found


def _test_sources() -> dict[Path, str]:
    this = Path(__file__).resolve()
    return {p: p.read_text() for p in TESTS.rglob("*.py") if p.resolve() != this}


def _used(command: str, flag: str, sources: dict[Path, str]) -> list[Path]:
    token = re.compile(rf"(?<![\w-]){re.escape(flag)}(?![\w-])")
    # The last word of the command: validate, crds, operator, serve, predict-batch, digits ...
    name = command.split()[-1]
    words = [] if name in ("modelops", "modelops_runtime") else [name]
    return [
        path
        for path, text in sources.items()
        if token.search(text) and all(re.search(rf"\b{re.escape(w)}\b", text) for w in words)
    ]


def test_the_parsers_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = all_flags(monkeypatch)
    commands = {command for command, _ in flags}
    assert {"modelops operator", "python -m modelops_runtime serve"} <= commands
    assert ("python -m modelops_runtime datasets digits", "--holdout-fraction") in flags
    assert len(flags) > 60, len(flags)


def test_every_flag_is_used_by_a_test(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = _test_sources()
    missing = [
        f"{command} {flag}"
        for command, flag in all_flags(monkeypatch)
        if (command, flag) not in ALLOWED_UNUSED and not _used(command, flag, sources)
    ]
    assert not missing, "flags no test uses:\n  " + "\n  ".join(missing)


def test_the_allow_list_is_still_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = set(all_flags(monkeypatch))
    sources = _test_sources()
    stale = [key for key in ALLOWED_UNUSED if key not in flags or _used(*key, sources)]
    assert not stale, f"remove from ALLOWED_UNUSED: {stale}"


def test_the_search_can_fail() -> None:
    """A flag nobody wrote is not found, and a flag of another command does not count."""
    sources = {Path("a.py"): 'run(["serve", "--max-queue", "4"])'}
    assert _used("python -m modelops_runtime serve", "--max-queue", sources)
    assert not _used("python -m modelops_runtime serve", "--max", sources)
    assert not _used("python -m modelops_runtime compare", "--max-queue", sources)


def test_the_operator_synopsis_lists_every_flag() -> None:
    """docs/trainingjob.md, "Running the operator": the synopsis names each option of the parser."""
    from modelops.cli import build_parser

    text = (ROOT / "docs" / "trainingjob.md").read_text()
    synopsis = text.split("```text\nmodelops operator ", 1)[1].split("```", 1)[0]
    documented = set(re.findall(r"\[(-{1,2}[\w-]+)", synopsis))
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = [
        a.option_strings
        for a in sub.choices["operator"]._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]
    missing = [names for names in options if not documented & set(names)]
    assert not missing, f"docs/trainingjob.md's synopsis lacks {missing}"
    unknown = documented - {name for names in options for name in names}
    assert not unknown, f"docs/trainingjob.md's synopsis names flags that do not exist: {unknown}"
