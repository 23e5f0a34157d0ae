"""Unit tests of the store: round trips, atomicity, and untrusted contents."""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
import zlib

import pytest

from pytest_cachevault import gc
from pytest_cachevault import store as store_module
from pytest_cachevault.hashing import digest_bytes
from pytest_cachevault.store import COLLECTIONS, MAX_CANDIDATES, RESULTS, SUFFIX, Store, _pack, _unpack

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
    newer.write_bytes(_pack(_unpack(newer.read_bytes())[:-5]))
    assert list(store.candidates(KEY)) == []
    assert not older.exists() and not newer.exists()
    assert store.problems == [f"record whose checksum does not match: {newer.relative_to(store.directory)}"]


def test_object_round_trip_is_content_addressed(store):
    name = store.put_object({"file": {"a.py": "1"}, "code": {}})
    assert store.put_object({"code": {}, "file": {"a.py": "1"}}) == name
    assert store.get_object(name) == {"file": {"a.py": "1"}, "code": {}}


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "record of an unknown schema or layout"),
        (b"{", "record of an unknown schema or layout"),
        (b"[]", "record of an unknown schema or layout"),
        (b'{"schema": 99, "payload": {}}', "record of an unknown schema or layout"),  # not the store's spelling
        (b'{"schema": 1, "checksum": "0", "payload": {"n": 1}}', "record of an unknown schema or layout"),
        (b'{"schema":1,"checksum":"0","payload":{"n":1}}', "record whose checksum does not match"),
    ],
    ids=["empty", "truncated", "not-an-object", "future-schema", "bad-checksum", "bad-checksum-compact"],
)
def test_bad_records_are_misses_and_removed(store, content, problem):
    """Well compressed, the JSON inside is bad: the checks behind decompression catch it."""
    path = store.put_record(KEY, NAME(), {"n": 1})
    path.write_bytes(_pack(content))
    assert list(store.candidates(KEY)) == []
    assert not path.exists()
    assert store.problems == [f"{problem}: {path.relative_to(store.directory)}"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[:-1],  # the end of the gzip stream (its length and CRC) is cut
        lambda data: data[:10],  # only the gzip header
        lambda data: b'{"schema":1,' + data,  # plain JSON-looking bytes before the gzip
        lambda data: data[:20] + bytes([data[20] ^ 0xFF]) + data[21:],  # a changed byte
        lambda data: zlib.compress(_unpack(data)),  # zlib framing, not gzip
        lambda data: _unpack(data),  # the JSON itself, uncompressed
    ],
    ids=["empty", "cut-short", "header-only", "prefixed", "flipped", "zlib", "uncompressed"],
)
def test_a_record_file_that_is_not_gzip_is_a_miss_and_removed(store, damage):
    path = store.put_record(KEY, NAME(), {"n": 1})
    path.write_bytes(damage(path.read_bytes()))
    assert list(store.candidates(KEY)) == []
    assert not path.exists()
    assert store.problems == [f"record that is not gzip-compressed JSON: {path.relative_to(store.directory)}"]


def test_a_record_file_is_gzip_of_the_checksummed_json(store):
    """What ``zcat`` shows: the envelope, its checksum over the payload's exact bytes."""
    path = store.put_record(KEY, NAME(), {"outcome": "passed"})
    assert path.name.endswith(".json.gz") and SUFFIX == ".json.gz"
    data = path.read_bytes()
    assert data.startswith(b"\x1f\x8b")
    body = b'{"outcome":"passed"}'
    assert gzip.decompress(data) == b'{"schema":1,"checksum":"%s","payload":%s}' % (digest_bytes(body).encode(), body)
    # No time in the gzip header: equal contents make equal files.
    assert data[4:8] == bytes(4)


def test_an_object_file_is_gzip_of_the_json_its_name_is_the_digest_of(store):
    name = store.put_object({"file": {"a.py": "1"}, "code": {}})
    path = store.objects / name[:2] / f"{name}{SUFFIX}"
    data = path.read_bytes()
    assert data.startswith(b"\x1f\x8b")
    assert gzip.decompress(data) == b'{"code":{},"file":{"a.py":"1"}}'
    assert digest_bytes(gzip.decompress(data)) == name


@pytest.mark.parametrize(
    "extra",
    [
        lambda data: _pack(b"{}"),  # a second gzip member
        lambda data: data,  # the same member twice
        lambda data: b"\0",  # one byte after the stream
        lambda data: b"junk" * 100,
    ],
    ids=["second-member", "member-repeated", "one-trailing-byte", "trailing-junk"],
)
def test_bytes_after_the_gzip_stream_make_a_bad_record(store, extra):
    """One whole gzip stream, nothing after it: gzip.decompress would read a second
    member (and return the two JSON texts joined) or ignore trailing zeros."""
    path = store.put_record(KEY, NAME(), {"n": 1})
    data = path.read_bytes()
    path.write_bytes(data + extra(data))
    assert list(store.candidates(KEY)) == []
    assert not path.exists()
    assert store.problems == [f"record that is not gzip-compressed JSON: {path.relative_to(store.directory)}"]


def test_a_record_that_decompresses_to_more_than_the_limit_is_bad(store, monkeypatch):
    """Decompression stops at MAX_UNPACKED_BYTES: a small file that would inflate to
    gigabytes (a gzip bomb) costs no more memory than that, and is a bad record."""
    path = store.put_record(KEY, NAME(), {"n": "x" * 10_000})
    size = len(gzip.decompress(path.read_bytes()))
    assert path.stat().st_size < size // 10  # the limit is on what it inflates to
    monkeypatch.setattr(store_module, "MAX_UNPACKED_BYTES", size)
    assert [c.payload for c in Store(store.directory).candidates(KEY)] == [{"n": "x" * 10_000}]  # at the limit
    monkeypatch.setattr(store_module, "MAX_UNPACKED_BYTES", size - 1)
    assert list(store.candidates(KEY)) == []
    assert not path.exists()
    assert store.problems == [f"record that is not gzip-compressed JSON: {path.relative_to(store.directory)}"]


def test_an_object_that_decompresses_to_more_than_the_limit_is_bad(store, monkeypatch):
    name = store.put_object({"file": {"a.py": "x" * 1000}, "code": {}})
    path = store.objects / name[:2] / f"{name}{SUFFIX}"
    size = len(gzip.decompress(path.read_bytes()))
    monkeypatch.setattr(store_module, "MAX_UNPACKED_BYTES", size - 1)
    assert store.get_object(name) is None
    assert not path.exists()
    assert store.problems == [f"object that is not gzip-compressed JSON: {path.relative_to(store.directory)}"]


def test_an_object_that_is_not_gzip_is_bad(store):
    name = store.put_object({"x": 1})
    path = store.objects / name[:2] / f"{name}{SUFFIX}"
    path.write_bytes(gzip.decompress(path.read_bytes()))  # the right JSON, uncompressed
    assert store.get_object(name) is None
    assert not path.exists()
    assert store.problems == [f"object that is not gzip-compressed JSON: {path.relative_to(store.directory)}"]


def test_tampered_payload_is_rejected(store):
    path = store.put_record(KEY, NAME(), {"outcome": "failed"})
    data = json.loads(_unpack(path.read_bytes()))
    data["payload"]["outcome"] = "passed"
    path.write_bytes(_pack(json.dumps(data).encode()))
    assert list(store.candidates(KEY)) == []
    assert len(store.problems) == 1


def test_object_not_matching_its_name_is_rejected(store):
    name = store.put_object({"x": 1})
    path = store.objects / name[:2] / f"{name}{SUFFIX}"
    path.write_bytes(_pack(b'{"x": 2}'))
    assert store.get_object(name) is None
    assert store.problems == [f"object whose content does not match its name: {path.relative_to(store.directory)}"]
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
    path.write_bytes(_pack(_unpack(path.read_bytes()).replace(b'"n":1', b'"n":2')))  # checksum no longer matches
    assert not store.keep_record(KEY, name, COLLECTIONS)
