"""Every shell block of README.md and docs/*.md runs here, or says why it cannot.

A block without a mark is run (bash -e, in a scratch copy of the repository's
user-facing files, with the installed `modelops` and `python`) and must exit 0; when
the docs show its output (an `expected-output` block after it, or the output lines of
a `console` block), the output must match. A marked block is reported as skipped with
its reason; the session's summary counts both (tests/docs/conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.blocks import (
    ROOT,
    DocBlock,
    all_shell_blocks,
    doc_files,
    expected_output,
    fenced_shell_lines,
    make_sandbox,
    run_block,
    same_output,
    shell_blocks,
)

pytestmark = pytest.mark.docs

BLOCKS = all_shell_blocks()


def _param(doc: DocBlock) -> object:
    marks: list[pytest.MarkDecorator] = []
    if doc.covered_by:
        marks = [pytest.mark.covered_by(*doc.covered_by), pytest.mark.skip(reason=doc.not_run_reason)]
    elif doc.skip_reason and not doc.problems:
        marks = [pytest.mark.skip(reason=doc.skip_reason)]
    return pytest.param(doc, id=doc.id, marks=marks)


@pytest.mark.parametrize("doc", [_param(doc) for doc in BLOCKS])
def test_documented_block(doc: DocBlock, tmp_path: Path) -> None:
    assert not doc.problems, f"{doc.id}: " + "; ".join(doc.problems)
    status, output = run_block(doc, make_sandbox(tmp_path))
    assert status == 0, f"{doc.id} exited {status}:\n{doc.block.code}\n--- output\n{output}"
    expected = expected_output(doc)
    if expected is not None:
        assert same_output(doc, expected, output), (
            f"{doc.id}: the docs show\n{expected}\n--- but it printed\n{output}"
        )


def test_the_docs_have_blocks_that_run() -> None:
    """The tier is not empty: a docs change that marks everything would fail here."""
    ran = [doc for doc in BLOCKS if doc.runs]
    shown = [doc for doc in ran if expected_output(doc) is not None]
    assert len(ran) >= 5, [doc.id for doc in ran]
    assert len(shown) >= 3, [doc.id for doc in shown]


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shell_fence_is_collected(path: Path) -> None:
    """Read on its own, each shell-looking fence is one the tier runs or reports as marked."""
    fences = fenced_shell_lines(path)
    unsupported = [(line, lang) for line, lang in fences if lang not in ("sh", "bash", "console")]
    assert not unsupported, f"{path.name}: write these fences as sh, bash or console: {unsupported}"
    collected = [doc.block.lineno for doc in shell_blocks(path)]
    assert collected == [line for line, _ in fences], (path.name, collected, fences)


_COVERED = sorted({name for doc in BLOCKS for name in doc.covered_by})


@pytest.mark.parametrize("name", _COVERED or ["(none)"])
def test_a_covering_test_exists(name: str) -> None:
    if name == "(none)":
        pytest.fail("no block names a covering test; the tier expects the quickstart at least")
    file, _, test = name.partition("::")
    path = ROOT / file
    assert path.is_file() and path.name.startswith("test_"), f"{name}: no such test file"
    if test:
        pattern = rf"^(async )?def {re.escape(test)}\("
        assert re.search(pattern, path.read_text(), re.MULTILINE), f"{name}: no such test"


def test_marks_must_say_why() -> None:
    """The checks themselves: a bare skip, an unknown mark and a mark on YAML are refused."""
    from io import StringIO

    from pytest_codeblocks import extract_from_buffer

    from tests.docs import blocks

    text = (
        "<!--pytest.mark.skip-->\n```sh\nfalse\n```\n"
        "<!--pytest.mark.xfail-->\n```sh\nfalse\n```\n"
        '<!--pytest.mark.covered_by("tests/e2e/test_quickstart.py")-->\n```sh\nmake quickstart\n```\n'
    )
    docs = []
    for block in extract_from_buffer(StringIO(text)):
        doc = DocBlock(ROOT / "README.md", block)
        blocks._read_marks(doc)
        docs.append(doc)
    assert "must say why" in docs[0].problems[0]
    assert "only skip" in docs[1].problems[0]
    assert docs[2].covered_by == ("tests/e2e/test_quickstart.py",) and not docs[2].runs


def test_the_runner_reports_failures_and_other_output(tmp_path: Path) -> None:
    from pytest_codeblocks import CodeBlock

    failing = DocBlock(ROOT / "README.md", CodeBlock("echo one\nfalse\necho never\n", 1, "sh"))
    status, output = run_block(failing, tmp_path)
    assert status == 1 and output == "one\n"
    shown = DocBlock(ROOT / "README.md", CodeBlock("echo two >&2\n", 1, "sh", expected_output="one\n"))
    status, output = run_block(shown, tmp_path)
    assert status == 0 and output == "two\n"
    assert not same_output(shown, "one\n", output) and same_output(shown, "two  \n\n", output)
    console = DocBlock(ROOT / "README.md", CodeBlock("$ echo three\nthree\n", 1, "console"))
    assert expected_output(console) == "three\n"
    assert run_block(console, tmp_path) == (0, "three\n")
