"""The documentation tier's summary: how many blocks ran, how many are marked, and why."""

from __future__ import annotations

from collections import Counter

import pytest

_RESULTS: dict[str, tuple[str, str]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_documented_block[" not in report.nodeid:
        return
    block = report.nodeid.split("test_documented_block[", 1)[1].rstrip("]")
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _RESULTS[block] = ("marked", reason.removeprefix("Skipped: "))
    elif report.when == "call" or report.failed:
        _RESULTS[block] = ("passed" if report.passed else "failed", "")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    outcomes = Counter(outcome for outcome, _ in _RESULTS.values())
    ran = outcomes["passed"] + outcomes["failed"]
    terminalreporter.section("documentation blocks")
    terminalreporter.write_line(
        f"{ran} ran ({outcomes['passed']} passed, {outcomes['failed']} failed), "
        f"{outcomes['marked']} marked not runnable here"
    )
    def order(item: tuple[str, tuple[str, str]]) -> tuple[str, int]:
        path, _, line = item[0].rpartition(":")
        return path, int(line) if line.isdigit() else 0

    for block, (outcome, reason) in sorted(_RESULTS.items(), key=order):
        if outcome == "marked":
            terminalreporter.write_line(f"  {block}: {reason}")
