"""The shell blocks of README.md and docs/*.md, as pytest-codeblocks reads them.

pytest-codeblocks finds the fenced blocks and the HTML comments before them
(`<!--pytest.mark.skip(reason="...")-->`, `<!--pytest-codeblocks:expected-output-->`
followed by a fenced block of output). Its own runner executes a block in pytest's
working directory with the output of stdout alone; this module runs a block in a
scratch copy of the repository's user-facing files instead, so a documented command
that writes files (`modelops crds`, a dataset) never touches the checkout, and compares
what a terminal would show (stdout and stderr together).

A block that cannot run here says why, just before it, with one of

    <!--pytest.mark.skip(reason="needs Docker: kind runs its nodes as containers")-->
    <!--pytest.mark.covered_by("tests/cluster/test_real_node.py::test_training_job_trains_on_real_ray_pods")-->

`covered_by` names the tests that run the same commands elsewhere (a file, or
file::test); tests/docs/test_doc_blocks.py checks that each one exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_codeblocks import CodeBlock, extract_from_file

ROOT = Path(__file__).resolve().parents[2]
SHELL_SYNTAXES = ("sh", "bash", "console")
# What a scratch copy holds: the files the documented commands read.
SANDBOX_FILES = ("examples", "crds", "charts", "mk", "Makefile", "pyproject.toml", "kind-config.yaml")
BLOCK_TIMEOUT_S = 120


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class DocBlock:
    path: Path
    block: CodeBlock
    skip_reason: str | None = None
    covered_by: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.block.lineno}"

    @property
    def runs(self) -> bool:
        return self.skip_reason is None and not self.covered_by and not self.problems

    @property
    def not_run_reason(self) -> str:
        reasons = [self.skip_reason] if self.skip_reason else []
        if self.covered_by:
            reasons.insert(0, "covered by " + ", ".join(self.covered_by))
        return "; ".join(reasons)


def _read_marks(doc: DocBlock) -> None:
    for text in doc.block.marks:
        try:
            decorator = eval(text, {"pytest": pytest})
        except Exception as error:  # a typo in a docs comment is a test failure, said plainly
            doc.problems.append(f"cannot read the mark {text!r}: {error}")
            continue
        mark = getattr(decorator, "mark", None)
        if mark is None:
            doc.problems.append(f"{text!r} is not a pytest mark")
        elif mark.name == "skip":
            reason = str(mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")).strip()
            if not reason:
                doc.problems.append(f"{text!r}: a skipped block must say why (reason=...)")
            doc.skip_reason = reason or None
        elif mark.name == "covered_by":
            if not mark.args:
                doc.problems.append(f"{text!r}: name the tests that cover the block")
            doc.covered_by = tuple(str(arg) for arg in mark.args)
        else:
            doc.problems.append(f"{text!r}: only skip(reason=...) and covered_by(...) are used")


def shell_blocks(path: Path) -> list[DocBlock]:
    """The file's sh/bash/console blocks; a mark found on another kind of block is a problem."""
    found = []
    for block in extract_from_file(path):
        doc = DocBlock(path, block)
        if block.syntax in SHELL_SYNTAXES:
            _read_marks(doc)
            found.append(doc)
        elif block.marks:
            raise ValueError(f"{doc.id}: marks {block.marks} stand before a {block.syntax!r} block")
    return found


def all_shell_blocks() -> list[DocBlock]:
    return [doc for path in doc_files() for doc in shell_blocks(path)]


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_LIKE = {"sh", "bash", "console", "shell", "zsh", "shell-session", "shellsession", "terminal"}


def fenced_shell_lines(path: Path) -> list[tuple[int, str]]:
    """(line, language) of every opening fence that looks like a shell, read independently."""
    found = []
    inside: str | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _FENCE.match(line)
        if not match:
            continue
        if inside is None:
            inside = match.group(1)
            if match.group(2).lower() in SHELL_LIKE:
                found.append((number, match.group(2)))
        elif match.group(1).startswith(inside) and not match.group(2):
            inside = None
    return found


def console_script(code: str) -> tuple[str, str]:
    """A `console` block: `$ ` lines are commands, the other lines their output."""
    commands, output = [], []
    for line in code.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        else:
            output.append(line)
    return "\n".join(commands) + "\n", "\n".join(output) + "\n" if output else ""


def make_sandbox(directory: Path) -> Path:
    for name in SANDBOX_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, directory / name)
        elif source.exists():
            shutil.copy2(source, directory / name)
    return directory


def run_block(doc: DocBlock, sandbox: Path) -> tuple[int, str]:
    """Run the block with bash -e in the sandbox; returns (exit status, terminal output)."""
    code = doc.block.code
    if doc.block.syntax == "console":
        code, _ = console_script(code)
    env = dict(os.environ)
    # The interpreter running the tests provides `python` and the `modelops` script.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "PYTHONWARNINGS": "ignore"})
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=sandbox,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )
    return result.returncode, result.stdout


def expected_output(doc: DocBlock) -> str | None:
    if doc.block.syntax == "console":
        _, shown = console_script(doc.block.code)
        return shown or None
    return doc.block.expected_output


def same_output(doc: DocBlock, expected: str, actual: str) -> bool:
    if doc.block.expected_output_ignore_whitespace:
        return re.sub(r"\s+", "", expected) == re.sub(r"\s+", "", actual)
    lines = [line.rstrip() for line in actual.rstrip("\n").splitlines()]
    return lines == [line.rstrip() for line in expected.rstrip("\n").splitlines()]
