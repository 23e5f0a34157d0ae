"""Unit tests of the store: round trips, atomicity, and untrusted contents."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from pytest_cachevault import gc
from pytest_cachevault.store import COLLECTIONS, MAX_CANDIDATES, RESULTS, Store

KEY = "ab" * 16


def NAME() -> None:
    """No name: the store names a result file by when it is made."""
    return None



def test_layout_and_tag(store):
    assert (store.directory / "CACHEDIR.TAG").read_text().startswith(
        "Signature: 8a477f597d28d172789f06886806bc55"
    )
    assert store.records.is_dir() and store.objects.is_dir() and store.tmp.is_dir()


def test_record_round_trip_newest_first(store):
    store.put_record(KEY, NAME(), {"n": 1})
    time.sleep(0.01)
    store.put_record(KEY, NAME(), {"n": 2})
    assert [c.payload["n"] for c in store.candidates(KEY)] == [2, 1]
    assert list(store.candidates("cd" * 16)) == []
    assert list(store.tmp.iterdir()) == []


def test_same_name_replaces(store):
    store.put_record(KEY, "cd" * 16, {"n": 1})
    store.put_record(KEY, "cd" * 16, {"n": 2})
    assert [c.payload["n"] for c in store.candidates(KEY)] == [2]


@pytest.mark.parametrize("area", [RESULTS, COLLECTIONS])
def test_candidates_are_capped_keeping_the_newest(store, area):
    limit = MAX_CANDIDATES[area]
    for n in range(limit + 3):
        path = store.put_record(KEY, NAME() if area == RESULTS else uuid.uuid4().hex, {"n": n}, area)
        os.utime(path, (time.time() - 100 + n,) * 2)  # used in the order made (collections' order)
    assert [c.payload["n"] for c in store.candidates(KEY, area)] == list(range(limit + 2, 2, -1))
    assert len(list((store.base / area / KEY[:2]).iterdir())) == limit


def test_results_are_read_newest_made_first_whatever_was_used_last(store):
    older = store.put_record(KEY, NAME(), {"outcome": "passed"})
    store.put_record(KEY, NAME(), {"outcome": "failed"})
    os.utime(older)  # a later run used the older file: it must not shadow the newer
    assert [c.payload["outcome"] for c in store.candidates(KEY)] == ["failed", "passed"]


def test_a_result_file_named_after_a_clock_ahead_still_comes_first(store):
    ahead = f"{time.time_ns() + 3600 * 10**9:016x}" + "ab" * 16  # written on a machine an hour ahead
    store.put_record(KEY, ahead, {"n": 1})
    store.put_record(KEY, NAME(), {"n": 2})
    assert [c.payload["n"] for c in store.candidates(KEY)] == [2, 1]


def test_a_damaged_result_file_takes_the_older_ones_of_its_key_with_it(store):
    older = store.put_record(KEY, NAME(), {"outcome": "passed"})
    newer = store.put_record(KEY, NAME(), {"outcome": "failed"})
    newer.write_bytes(newer.read_bytes()[:-5])
    assert list(store.candidates(KEY)) == []
    assert not older.exists() and not newer.exists()
    assert store.problems == [f"record whose checksum does not match: {newer.relative_to(store.directory)}"]


def test_object_round_trip_is_content_addressed(store):
    name = store.put_object({"file": {"a.py": "1"}, "code": {}})
    assert store.put_object({"code": {}, "file": {"a.py": "1"}}) == name
    assert store.get_object(name) == {"file": {"a.py": "1"}, "code": {}}


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"schema": 99, "payload": {}}', b'{"schema": 1, "checksum": "0", "payload": {"n": 1}}'],
    ids=["empty", "truncated", "not-an-object", "future-schema", "bad-checksum"],
)
def test_bad_records_are_misses_and_removed(store, content):
    path = store.put_record(KEY, NAME(), {"n": 1})
    path.write_bytes(content)
    assert list(store.candidates(KEY)) == []
    assert not path.exists()
    assert len(store.problems) == 1


def test_tampered_payload_is_rejected(store):
    path = store.put_record(KEY, NAME(), {"outcome": "failed"})
    data = json.loads(path.read_bytes())
    data["payload"]["outcome"] = "passed"
    path.write_text(json.dumps(data))
    assert list(store.candidates(KEY)) == []


def test_object_not_matching_its_name_is_rejected(store):
    name = store.put_object({"x": 1})
    path = store.objects / name[:2] / f"{name}.json"
    path.write_text('{"x": 2}')
    assert store.get_object(name) is None
    assert store.get_object("../../etc/passwd") is None


def test_gc_by_age_and_size(store):
    old = store.put_record("aa" * 16, NAME(), {"shared": [store.put_object({"n": "old"})]})
    new = store.put_record("bb" * 16, NAME(), {"shared": [store.put_object({"n": "new"})]})
    past = time.time() - 3 * 86400
    os.utime(old, (past, past))
    result = gc.collect(store, max_size=10**9, max_age=86400)
    assert (result.records_removed, result.records_kept) == (1, 1)
    assert not old.exists() and new.exists()
    result = gc.collect(store, max_size=0, max_age=86400)
    assert result.records_kept == 0 and not new.exists()


def test_gc_removes_stray_temp_files(store):
    stray = store.tmp / "dead.tmp"
    stray.write_bytes(b"half a record")
    past = time.time() - 2 * gc.GRACE_SECONDS
    os.utime(stray, (past, past))
    assert gc.collect(store, max_size=10**9, max_age=10**9).temp_removed == 1
    assert not stray.exists() and store.tmp.is_dir()


def test_a_hit_marks_a_record_used_at_most_once_an_hour(store):
    """Least-recently-used order for gc, without a write per test on every warm run."""
    path = store.put_record(KEY, NAME(), {"n": 1})
    recent = time.time() - 60
    os.utime(path, (recent, recent))
    store.touch(next(store.candidates(KEY)))
    assert path.stat().st_mtime == pytest.approx(recent, abs=1)

    old = time.time() - 2 * 3600
    os.utime(path, (old, old))
    store.touch(next(Store(store.directory).candidates(KEY)))
    assert path.stat().st_mtime == pytest.approx(time.time(), abs=60)


def test_keep_record_only_keeps_a_sound_record(store):
    name = "cd" * 16  # a collection record, named by its inputs
    assert not store.keep_record(KEY, name, COLLECTIONS)
    path = store.put_record(KEY, name, {"n": 1}, COLLECTIONS)
    assert store.keep_record(KEY, name, COLLECTIONS)
    path.write_bytes(path.read_bytes().replace(b'"n":1', b'"n":2'))  # checksum no longer matches
    assert not store.keep_record(KEY, name, COLLECTIONS)
