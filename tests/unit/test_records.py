"""Unit tests of result files: one per test module and run, common inputs written once."""

from __future__ import annotations

import os
import time

from pytest_cachevault import gc, records
from pytest_cachevault.store import SUFFIX, Store

KEY = "ab" * 16


def entry(outcome: str = "passed", shared: tuple[str, ...] = ("11" * 16,), **files: str) -> dict:
    inputs = {"file": {"test_x.py": "aa", "conftest.py": None, **files}, "code": {}}
    return {"outcome": outcome, "reports": "{}", "inputs": inputs, "shared": list(shared)}


def test_pack_writes_common_inputs_once_and_whole_gives_each_entry_back():
    entries = {
        "test_x.py::a": entry(**{"src/a.py": "01"}),
        "test_x.py::b": entry(**{"src/b.py": "02"}),
        "test_x.py::c": entry(shared=("22" * 16,)),
    }
    payload = records.pack(entries, "ee" * 16)
    assert payload["common"] == {"file": {"test_x.py": "aa", "conftest.py": None}, "code": {}}
    assert payload["tests"]["test_x.py::a"]["inputs"] == {"file": {"src/a.py": "01"}, "code": {}}
    assert payload["tests"]["test_x.py::c"]["inputs"] == {"file": {}, "code": {}}
    assert payload["shared"] == ["11" * 16]
    assert "shared" not in payload["tests"]["test_x.py::a"]
    assert payload["tests"]["test_x.py::c"]["shared"] == ["22" * 16]
    for nodeid, recorded in entries.items():
        assert records.whole(payload, payload["tests"][nodeid]) == recorded


def test_an_input_with_another_digest_in_one_test_is_not_common():
    payload = records.pack({"t::a": entry(**{"src/a.py": "01"}), "t::b": entry(**{"src/a.py": "02"})}, "ee" * 16)
    assert "src/a.py" not in payload["common"]["file"]
    assert records.whole(payload, payload["tests"]["t::b"])["inputs"]["file"]["src/a.py"] == "02"


def test_malformed_inputs_are_none():
    payload = records.pack({"t::a": entry()}, "ee" * 16)
    assert records.whole({**payload, "common": {"file": []}}, payload["tests"]["t::a"]) is None
    assert records.whole(payload, {"inputs": {"file": {}}}) is None
    assert records.whole({**payload, "shared": "x"}, {"inputs": {"file": {}, "code": {}}}) is None


def test_a_run_writes_only_what_it_ran_and_replaces_its_own_earlier_file(store):
    module = records.ModuleResults(store, KEY)
    module.write("ee" * 16)
    assert list(store.candidates(KEY)) == []  # nothing recorded: nothing written
    module.record("t::a", entry())
    module.write("ee" * 16)
    module.record("t::b", entry())
    module.write("ee" * 16)
    [only] = store.candidates(KEY)
    assert sorted(only.payload["tests"]) == ["t::a", "t::b"]
    module.write("ee" * 16)  # nothing new since
    assert len(list(store.candidates(KEY))) == 1


def test_a_module_is_read_newest_first_and_only_as_far_as_needed(store):
    first = records.ModuleResults(store, KEY)
    first.record("t::a", entry())
    first.record("t::b", entry())
    first.write("ee" * 16)
    second = records.ModuleResults(store, KEY)
    second.record("t::a", entry("failed"))
    second.write("ee" * 16)

    reader = records.ModuleResults(Store(store.directory), KEY)
    assert [e["outcome"] for _, e in reader.entries("t::a")] == ["failed", "passed"]
    lazy = records.ModuleResults(Store(store.directory), KEY)
    next(lazy.entries("t::a"))
    assert len(lazy._read) == 1  # the older file is not read for a test the newest holds
    assert [e["outcome"] for _, e in lazy.entries("t::b")] == ["passed"]
    assert len(lazy._read) == 2


def test_gc_removes_a_module_s_files_oldest_made_first(store):
    """The older file was used last (a later run replayed from it): evicting by last use
    alone would drop the newer file, whose failure the older pass would then hide."""
    writes = []
    for outcome in ("passed", "failed"):
        module = records.ModuleResults(store, KEY)
        module.record("t::a", entry(outcome))
        module.write(store.put_object({"n": 1}))
        writes.append(module._written[-1])
    older, newer = writes
    os.utime(newer, (time.time() - 7200,) * 2)
    total = sum(f.stat().st_size for f in store.base.rglob(f"*{SUFFIX}"))
    gc.collect(store, max_size=total - 1, max_age=10**9)  # room for all but one file
    assert os.path.exists(newer) and not os.path.exists(older)
    assert [c.payload["tests"]["t::a"]["outcome"] for c in store.candidates(KEY)] == ["failed"]


def test_gc_by_age_never_keeps_an_older_file_without_the_newer_ones(store):
    writes = []
    for outcome in ("passed", "failed"):
        module = records.ModuleResults(store, KEY)
        module.record("t::a", entry(outcome))
        module.write("ee" * 16)
        writes.append(module._written[-1])
    older, newer = writes
    month_ago = (time.time() - 30 * 86400,) * 2
    os.utime(newer, month_ago)  # unused for a month, but an older file of its module is in use
    gc.collect(store, max_size=10**9, max_age=7 * 86400)
    assert os.path.exists(older) and os.path.exists(newer)
    os.utime(older, month_ago)
    os.utime(newer)
    gc.collect(store, max_size=10**9, max_age=7 * 86400)
    assert not os.path.exists(older) and os.path.exists(newer)


def test_a_module_visited_twice_keeps_what_both_visits_recorded(store):
    """xdist sends tests in chunks and ``--ff`` reorders: a run may leave a module and
    come back to it."""
    module = records.ModuleResults(store, KEY)
    module.record("t::a", entry())
    module.write("ee" * 16)
    module.release()
    module.record("t::b", entry())
    module.write("ee" * 16)
    assert sorted(n for c in store.candidates(KEY) for n in c.payload["tests"]) == ["t::a", "t::b"]


def test_partial_writes_hold_only_the_new_results_and_the_whole_write_replaces_them(store):
    """Every FLUSH_SECONDS a run writes what it recorded since its last write, to a file
    of its own (rewriting the whole module each time grew with the square of its
    length); a run killed then keeps them all. Leaving the module, one file replaces them."""
    module = records.ModuleResults(store, KEY)
    module.record("t::a", entry())
    module.write("ee" * 16, partial=True)
    module.write("ee" * 16, partial=True)  # nothing new: no file
    module.record("t::b", entry("failed"))
    module.write("ee" * 16, partial=True)
    partial = [sorted(c.payload["tests"]) for c in store.candidates(KEY)]
    assert partial == [["t::b"], ["t::a"]]  # newest first
    reader = records.ModuleResults(Store(store.directory), KEY)
    assert [e["outcome"] for n in ("t::a", "t::b") for _, e in reader.entries(n)] == ["passed", "failed"]

    module.write("ee" * 16)
    [whole] = store.candidates(KEY)
    assert sorted(whole.payload["tests"]) == ["t::a", "t::b"]
    module.write("ee" * 16)  # nothing new since
    assert [c.path for c in store.candidates(KEY)] == [whole.path]


def test_a_whole_write_after_partial_ones_with_nothing_new_still_joins_them(store):
    module = records.ModuleResults(store, KEY)
    for nodeid in ("t::a", "t::b"):
        module.record(nodeid, entry())
        module.write("ee" * 16, partial=True)
    assert len(list(store.candidates(KEY))) == 2
    module.write("ee" * 16)
    [whole] = store.candidates(KEY)
    assert sorted(whole.payload["tests"]) == ["t::a", "t::b"]
