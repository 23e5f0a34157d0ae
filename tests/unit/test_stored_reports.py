"""A test's reports, stored and rebuilt: what comes back is what went in."""

from __future__ import annotations

import json

import pytest

from pytest_cachevault import replay

NODEID = "tests/test_x.py::TestBox::test_grow[1-a::b]"


def _reports(root: str) -> list[pytest.TestReport]:
    common = {
        "nodeid": NODEID,
        "location": ("tests/test_x.py", 11, "TestBox.test_grow[1-a::b]"),
        "keywords": {"test_grow[1-a::b]": 1, "parametrize": 1, "TestBox": 1},
    }
    return [
        pytest.TestReport(**common, outcome="passed", longrepr=None, when="setup",
                          duration=0.0012345678, start=1795408845.1234567, stop=1795408845.124691),
        pytest.TestReport(**common, outcome="passed", longrepr=None, when="call",
                          sections=[("Captured stdout call", f"read {root}/data.txt\n")],
                          user_properties=[("size", 3)],
                          duration=0.5, start=1795408845.2, stop=1795408845.7),
        pytest.TestReport(**common, outcome="passed", longrepr=None, when="teardown",
                          duration=0.0001, start=1795408845.8, stop=1795408845.8001),
    ]


def test_reports_come_back_as_they_were_stored(pytestconfig):
    root = str(pytestconfig.rootpath)
    before = _reports(root)
    text = replay.to_stored(pytestconfig, before)
    assert root not in text  # the rootdir is a token: the record replays from another checkout
    after = replay.from_stored(pytestconfig, text, NODEID)
    assert len(after) == 3
    for old, new in zip(before, after):
        assert new.nodeid == NODEID
        assert (new.when, new.outcome, new.longrepr) == (old.when, old.outcome, old.longrepr)
        assert new.location == old.location and isinstance(new.location, tuple)
        assert new.keywords == old.keywords
        assert new.sections == old.sections and new.user_properties == old.user_properties
        assert new.duration == round(old.duration, 6) and new.start == round(old.start, 6)
        assert getattr(new, replay.REPORT_ATTRIBUTE) == replay.CACHED
    # Each report has its own lists: a plugin adding to one does not add to the others.
    after[0].sections.append(("extra", "x"))
    assert after[2].sections == []


def test_a_node_id_one_stored_report_carries_is_its_own(pytestconfig):
    """A record names its test by the key it is stored under; a report that carries a
    node id of its own keeps it, and only that report."""
    common = {"location": ["test_x.py", 1, "test_y"], "keywords": {}, "outcome": "passed",
              "$report_type": "TestReport"}
    own = [{"when": "setup", "nodeid": "elsewhere.py::test_other"}, {"when": "call"}, {"when": "teardown"}]
    text = json.dumps({"common": common, "reports": own})
    after = replay.from_stored(pytestconfig, text, NODEID)
    assert [r.nodeid for r in after] == ["elsewhere.py::test_other", NODEID, NODEID]
