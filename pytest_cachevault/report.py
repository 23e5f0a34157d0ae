"""What the user sees: ``(cached)`` on replayed tests and the ``vault:`` summary line.

Counts come from the reports themselves (the ``vault`` attribute set by the recorder or
the replayer), so they are right under pytest-xdist too, where the controller only
sees reports sent by its workers. Warnings, and why the vault was off, are not in
reports: each worker hands them to the controller in its ``workeroutput``, and the
controller prints each distinct one once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from .replay import CACHED, REPORT_ATTRIBUTE, WHY_ATTRIBUTE
from .store import Store, StoreError

#: Order in which the reasons a test ran are listed.
REASONS = ("new", "changed", "failed last time", "bypass", "uncacheable")
#: The ``workeroutput`` entry in which an xdist worker hands its warnings over.
WORKER_OUTPUT_KEY = "cachevault"


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

    def __init__(self, explain_all: bool = False) -> None:
        self.explain_all = explain_all
        #: ``(nodeid, why)`` of each test that ran, for ``--vault-explain``.
        self.explanations: list[tuple[str, str]] = []
        #: ``--vault-explain=NODEID``: lines describing that test's records.
        self.describe: Callable[[], list[str]] | None = None
        #: Where to leave this run's counts for ``--vault-stats`` (None: nowhere).
        self.store: Store | None = None
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
            if self.explain_all:
                self.explanations.append((report.nodeid, str(getattr(report, WHY_ATTRIBUTE, status))))

    def summary_line(self) -> str:
        ran = sum(self.reasons.values())
        ordered = sorted(self.reasons, key=lambda r: (REASONS.index(r) if r in REASONS else 99, r))
        detail = ", ".join(f"{self.reasons[r]} {r}" for r in ordered)
        line = f"vault: {self.replayed} replayed, {ran} run"
        if detail:
            line += f" ({detail})"
        return f"{line}, {format_duration(self.saved)} saved"

    def add_warning(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    # trylast: after the session plugin has handed its warnings over.
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if isinstance(workeroutput, dict):  # an xdist worker: the controller reports
            workeroutput[WORKER_OUTPUT_KEY] = {"warnings": list(self.warnings), "off": self.off}
        if self.store is None or self.off is not None:
            return
        try:
            self.store.put_run({"replayed": self.replayed, "ran": sum(self.reasons.values())})
        except StoreError:
            pass  # the session already warned that the store is not writable

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """xdist controller: take over what a finished worker had to say."""
        handed = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if not isinstance(handed, dict):
            return
        for warning in handed.get("warnings") or ():
            self.add_warning(str(warning))
        if handed.get("off") and self.off is None:
            self.off = str(handed["off"])

    def pytest_terminal_summary(self, terminalreporter) -> None:
        for warning in self.warnings:
            terminalreporter.write_line(f"vault warning: {warning}", yellow=True)
        if self.off is not None:
            terminalreporter.write_line(
                f"vault: off for this run, every test ran and nothing was stored ({self.off})",
                yellow=True,
            )
        else:
            if self.explain_all:
                terminalreporter.section("vault explain")
                for nodeid, why in self.explanations:
                    terminalreporter.write_line(f"{nodeid}: {why}")
            if self.describe is not None:
                terminalreporter.section("vault explain")
                for line in self.describe():
                    terminalreporter.write_line(line)
            terminalreporter.write_line(self.summary_line())
