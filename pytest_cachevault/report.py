"""What the user sees: ``(cached)`` on replayed tests and the ``vault:`` summary line.

Counts come from the reports themselves (the ``vault`` attribute set by the recorder or
the replayer), so they are right under pytest-xdist too, where the controller only
sees reports sent by its workers.
"""

from __future__ import annotations

from collections import Counter

import pytest

from .replay import CACHED, REPORT_ATTRIBUTE

#: Order in which the reasons a test ran are listed.
REASONS = ("new", "changed", "failed last time", "bypass", "uncacheable")


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class VaultReporter:
    """Counts replayed and run tests, decorates verbose lines, writes the summary."""

    def __init__(self) -> None:
        self.replayed = 0
        self.saved = 0.0
        self.reasons: Counter[str] = Counter()
        self.warnings: list[str] = []
        #: Why the vault is off for this run, if it is: every test then runs, nothing is stored.
        self.off: str | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport):
        status = yield
        if getattr(report, REPORT_ATTRIBUTE, None) != CACHED or not status or not status[2]:
            return status
        category, letter, word = status
        if isinstance(word, tuple):
            word = (f"{word[0]} (cached)", word[1])
        else:
            word = f"{word} (cached)"
        return category, letter, word

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        status = getattr(report, REPORT_ATTRIBUTE, None)
        if status is None:
            return
        if status == CACHED:
            self.saved += report.duration
            if report.when == "teardown":
                self.replayed += 1
        elif report.when == "teardown":
            self.reasons[status] += 1

    def summary_line(self) -> str:
        ran = sum(self.reasons.values())
        ordered = sorted(self.reasons, key=lambda r: (REASONS.index(r) if r in REASONS else 99, r))
        detail = ", ".join(f"{self.reasons[r]} {r}" for r in ordered)
        line = f"vault: {self.replayed} replayed, {ran} run"
        if detail:
            line += f" ({detail})"
        return f"{line}, {format_duration(self.saved)} saved"

    def pytest_terminal_summary(self, terminalreporter) -> None:
        for warning in self.warnings:
            terminalreporter.write_line(f"vault warning: {warning}", yellow=True)
        if self.off is not None:
            terminalreporter.write_line(
                f"vault: off for this run, every test ran and nothing was stored ({self.off})",
                yellow=True,
            )
        else:
            terminalreporter.write_line(self.summary_line())
