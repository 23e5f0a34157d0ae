"""Replayed reports on their way from an xdist worker to its controller.

pytest-xdist sends every report a worker emits to the controller, serialized field by
field and rebuilt there. For a replayed test that is most of a warm ``-n`` run: with
a warm store more-itertools' 765 tests (23,489 reports, most of them subtests') took
about three times as long under ``-n 2`` as serially, the workers serializing and
the controller unserializing. A replayed test's reports are all in the record's
text, which the controller can rebuild as the worker did (:func:`replay.from_stored`),
so the worker sends that text once, with the test's first report, and each of its
reports after that as its position alone. The controller's pytest, xdist and other
plugins get the same reports through the same hooks, in the same order.

Both ends must agree: the controller offers it in each worker's ``workerinput``, and
a worker whose controller did not (an older plugin, or the vault off there) sends
reports as xdist does. A report is claimed by ``pytest_report_to_serializable`` and
``pytest_report_from_serializable``, the hooks xdist itself calls for every report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from . import replay

#: The ``workerinput`` entry by which a controller offers to rebuild replayed tests.
OFFER = "cachevault_replayed_reports"
#: What an offer must say: a worker and a controller of other plugin versions may
#: disagree on the message below, and then the worker sends reports as usual.
VERSION = 1
#: The field of a message for a replayed report: its position among its test's reports.
POSITION = "$cachevault_position"
#: The field of a test's first report with its record's text.
STORED = "$cachevault_stored"
#: Fields xdist adds to every report it sends; the controller's reports carry them.
_XDIST_FIELDS = ("item_index", "worker_id", "testrun_uid")


def offered(config: pytest.Config) -> bool:
    """Whether this process is an xdist worker whose controller rebuilds replayed tests."""
    workerinput = getattr(config, "workerinput", None)
    return isinstance(workerinput, dict) and workerinput.get(OFFER) == VERSION


class ReplayedReportSender:
    """xdist worker: sends the reports of the test being replayed as described above."""

    def __init__(self) -> None:
        self._positions: dict[int, tuple[int, pytest.TestReport]] = {}
        self._stored = ""

    @contextmanager
    def replaying(self, reports: list[pytest.TestReport], stored: str) -> Iterator[None]:
        """While ``reports``, rebuilt from ``stored``, go through the report hooks."""
        self._positions = {id(report): (i, report) for i, report in enumerate(reports)}
        self._stored = stored
        try:
            yield
        finally:
            self._positions = {}
            self._stored = ""

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_to_serializable(self, report: object) -> dict | None:
        found = self._positions.get(id(report))
        if found is None or found[1] is not report:
            return None
        position, report = found
        message: dict = {POSITION: position, "nodeid": report.nodeid}
        if position == 0:
            message[STORED] = self._stored
        return message


class ReplayedReportReceiver:
    """xdist controller: offers the above to each worker and rebuilds what they send."""

    def __init__(self) -> None:
        #: (worker id, node id) -> the reports of the test that worker is replaying.
        self._replaying: dict[tuple[object, str], list[pytest.TestReport]] = {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput[OFFER] = VERSION

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_from_serializable(self, config: pytest.Config, data: dict) -> object:
        position = data.get(POSITION)
        if position is None:
            return None
        nodeid = str(data.get("nodeid"))
        test = (data.get("worker_id"), nodeid)
        if STORED in data:
            try:
                self._replaying[test] = replay.from_stored(config, data[STORED], nodeid)
            except replay.BadRecord as exc:  # the worker rebuilt the same text: a bug
                raise RuntimeError(f"cachevault: cannot rebuild the reports of {nodeid}: {exc}") from exc
        reports = self._replaying[test]
        report = reports[position]
        if position == len(reports) - 1:
            del self._replaying[test]
        for field in _XDIST_FIELDS:
            if field in data:
                setattr(report, field, data[field])
        return report
