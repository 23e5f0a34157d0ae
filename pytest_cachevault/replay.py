"""Stored reports: to JSON when a test ran, and back through pytest's hooks on a hit.

Reports go through ``pytest_report_to_serializable`` / ``pytest_report_from_serializable``
(the path pytest-xdist uses; plain reports come back without the hook while pytest's
own decoders are the only ones), minus the fields that describe one run rather than the
test (xdist's worker and run ids). The fields a test's reports share (node id,
location, keywords, mostly outcome and sections too) are written once, and times are
kept to the microsecond: a warm run parses one stored text per test, and its size is
most of the cost. The text has the rootdir replaced by a token, so that a record
replays from another checkout with that checkout's paths: a hit parses its reports
once, after one text substitution, and a lookup that misses never parses them. JSON
has no tuples; the fields pytest expects as tuples are made tuples again.
"""

from __future__ import annotations

import builtins
import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from .inputs import warning_source

#: Attribute set on reports this plugin emits or annotates: "cached", or why it ran.
REPORT_ATTRIBUTE = "vault"
#: Attribute with the ``--vault-explain`` line of a test that ran.
WHY_ATTRIBUTE = "vault_why"
CACHED = "cached"
_RUN_FIELDS = ("node", "worker_id", "item_index", "testrun_uid", REPORT_ATTRIBUTE, WHY_ATTRIBUTE)
#: Report fields in seconds, kept to the microsecond (pytest shows milliseconds at most).
_TIMES = ("duration", "start", "stop")
_ROOT_TOKEN = "{vault-rootdir}"
#: Shared report fields left out when they hold these values (most tests' do), and
#: put back on replay; the node id is the entry's name in its result file.
_DEFAULTS = {"longrepr": None, "user_properties": [], "sections": []}
_rebuilder_key = pytest.StashKey["Callable[[dict], object]"]()
#: pytest's own report decoders, and this plugin's xdist receiver (:mod:`wire`), which
#: decodes only what a worker sends.
_KNOWN_DECODERS = ("_pytest.reports", "_pytest.subtests", "pytest_cachevault.wire")
#: The field by which pytest's subtests plugin claims a report.
_SUBTEST_TYPE = "_report_type"
_ABSENT = object()


class BadRecord(Exception):
    """Stored reports that pytest cannot turn back into reports."""


def _to_text(value: Any, root: str) -> str:
    """``value`` as JSON text with ``root`` replaced by the token in every string.

    Objects JSON lacks (a subtest's ``range`` argument) become their ``repr``, which is
    all a replayed report ever shows of them."""
    text = json.dumps(value, default=repr)
    return text.replace(json.dumps(root)[1:-1], _ROOT_TOKEN)


def _from_text(text: str, root: str) -> Any:
    return json.loads(text.replace(_ROOT_TOKEN, json.dumps(root)[1:-1]))


def to_stored(config: pytest.Config, reports: list[pytest.TestReport]) -> str:
    """The reports of one test as the JSON text a record keeps: ``{"common": fields all
    reports share, "reports": [the other fields of each]}``, without the node id and
    the shared fields that hold their usual value (:data:`_DEFAULTS`)."""
    serializable = config.hook.pytest_report_to_serializable
    datas = []
    for report in reports:
        data = serializable(config=config, report=report)
        for field in _RUN_FIELDS:
            data.pop(field, None)
        for field in _TIMES:
            if isinstance(data.get(field), float):
                data[field] = round(data[field], 6)
        datas.append(data)
    common = dict(datas[0])
    for data in datas[1:]:
        for field in [k for k, v in common.items() if data.get(k, _ABSENT) != v]:
            del common[field]
    own = [{k: v for k, v in data.items() if k not in common} for data in datas]
    common.pop("nodeid", None)
    for field, usual in _DEFAULTS.items():
        if field in common and common[field] == usual:
            del common[field]
    return _to_text({"common": common, "reports": own}, str(config.rootpath))


def _tuples(report: pytest.TestReport) -> None:
    report.location = tuple(report.location)  # type: ignore[assignment]
    if isinstance(report.longrepr, list):
        report.longrepr = tuple(report.longrepr)
    report.sections = [tuple(section) for section in report.sections]
    report.user_properties = [tuple(prop) for prop in report.user_properties]


def _rebuilder(config: pytest.Config) -> Callable[[dict], object]:
    """How to turn one stored report back into a report, worked out once per run.

    While pytest's own (and :mod:`wire`'s) are the only ``pytest_report_from_serializable``
    hooks, a plain test report without a traceback (the passed and skipped reports a
    warm run is made of) is built directly: the hook and pytest's general decoding took
    a tenth of a warm run. Anything else (a traceback, a subtest's report) goes
    through the hook."""
    rebuild = config.stash.get(_rebuilder_key, None)
    if rebuild is not None:
        return rebuild
    hook = config.hook.pytest_report_from_serializable

    def through_hook(data: dict) -> object:
        data["nodeid"] = str(data["nodeid"])  # see from_stored
        return hook(config=config, data=data)

    def direct(data: dict) -> object:
        if (data.get("$report_type") != "TestReport" or _SUBTEST_TYPE in data
                or isinstance(data.get("longrepr"), dict)):
            return through_hook(data)
        del data["$report_type"]
        return pytest.TestReport(**data)

    known_only = all(impl.function.__module__ in _KNOWN_DECODERS for impl in hook.get_hookimpls())
    rebuild = config.stash[_rebuilder_key] = direct if known_only else through_hook
    return rebuild


def from_stored(config: pytest.Config, stored: object, nodeid: str) -> list[pytest.TestReport]:
    """Rebuild the reports of test ``nodeid`` from a record's text, marked as cached;
    :class:`BadRecord` if impossible."""
    if not isinstance(stored, str):
        raise BadRecord("reports are not JSON text")
    reports = []
    try:
        value = _from_text(stored, str(config.rootpath))
        common, own = value["common"], value["reports"]
        if not isinstance(common, dict) or not isinstance(own, list):
            raise BadRecord("reports of an unknown shape")
        rebuild = _rebuilder(config)
        node: object = nodeid
        for fields in own:
            # The default lists are shared, but _tuples gives each report its own.
            report = rebuild({"nodeid": node, **_DEFAULTS, **common, **fields})
            if not isinstance(report, pytest.TestReport):
                raise BadRecord("not a test report")
            # pytest 9.2 parses the node id of every report it builds (``report.id``),
            # a fifth of a warm run: the test's other reports are given the parsed one.
            parsed = getattr(report, "id", None)
            if parsed is not None and str(parsed) == nodeid:
                node = parsed
            _tuples(report)
            setattr(report, REPORT_ATTRIBUTE, CACHED)
            reports.append(report)
    except Exception as exc:  # the store is untrusted: any shape may come back
        raise BadRecord(str(exc)) from exc
    if not reports or reports[0].when != "setup" or reports[-1].when != "teardown":
        raise BadRecord("reports of an incomplete test")
    return reports


def warning_to_stored(config: pytest.Config, message: warnings.WarningMessage) -> str:
    stored = {
        "category": message.category.__name__,
        "module": message.category.__module__,
        "message": str(message.message),
        "filename": str(message.filename),
        "lineno": message.lineno,
    }
    return _to_text(stored, str(config.rootpath))


def _warning_category(name: object, module: object) -> type[Warning]:
    """The built-in category of that name, or a stand-in class that prints the same.

    Nothing is imported on the say-so of the store."""
    builtin = getattr(builtins, str(name), None)
    if isinstance(builtin, type) and issubclass(builtin, Warning):
        return builtin
    return type(str(name), (UserWarning,), {"__module__": str(module)})


def emit(item: pytest.Item, reports: list[pytest.TestReport], stored_warnings: list) -> None:
    """Send stored reports through the hooks a live run would call, in the same order.

    Warnings are issued again, so pytest's own warning capture around the protocol
    records them as it would in a live run."""
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    root = str(item.config.rootpath)
    for text in stored_warnings:
        try:
            stored = _from_text(text, root) if isinstance(text, str) else None
        except ValueError:
            continue
        if isinstance(stored, dict):
            warnings.warn_explicit(
                str(stored.get("message")),
                _warning_category(stored.get("category"), stored.get("module")),
                warning_source(str(stored.get("filename")), root),
                stored.get("lineno") if isinstance(stored.get("lineno"), int) else 0,
            )
    for report in reports:
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
