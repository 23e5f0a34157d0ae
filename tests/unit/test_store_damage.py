"""Unit tests of the store under damage: wrong kinds of file, races with gc, a full disk.

Each bad thing is a miss, is removed (or left for a newer version) and is reported
once in ``store.problems``; writing heals what it can and otherwise raises StoreError.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time

import pytest

from pytest_cachevault import gc, store as store_module
from pytest_cachevault.store import (
    COLLECTIONS, LAYOUT, SCHEMA, SUFFIX, Store, StoreError, _pack, record_key_and_name,
)

KEY = "ab" * 16


def NAME() -> None:
    """No name: the store names a result file by when it is made."""
    return None



def _payloads(store: Store, key: str = KEY) -> list[dict]:
    return [c.payload for c in store.candidates(key)]


def test_a_directory_where_a_record_should_be(store):
    path = store.put_record(KEY, NAME(), {"n": 1})
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")
    assert _payloads(store) == []
    assert not path.exists()
    assert store.problems == [f"not a regular file where a record should be: {path.relative_to(store.directory)}"]
    store.put_record(*record_key_and_name(path), {"n": 2})
    assert _payloads(store) == [{"n": 2}]


def test_a_record_that_is_a_link_is_not_followed(store, tmp_path):
    """A link to a valid record elsewhere would be a hit if followed: it is removed instead."""
    genuine = store.put_record(KEY, NAME(), {"outcome": "passed"})
    outside = tmp_path / "outside.json"
    outside.write_bytes(genuine.read_bytes())
    genuine.unlink()
    genuine.symlink_to(outside)
    assert _payloads(store) == []
    assert not os.path.lexists(genuine)
    assert outside.exists()
    assert len(store.problems) == 1


def test_a_pipe_where_a_record_should_be_does_not_hang(store):
    path = store.put_record(KEY, NAME(), {"n": 1})
    path.unlink()
    os.mkfifo(path)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading a pipe blocked"))
    signal.alarm(5)
    try:
        assert _payloads(store) == []
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not os.path.lexists(path)
    assert len(store.problems) == 1


def test_a_file_where_a_shard_directory_should_be(store):
    shard = store.records / KEY[:2]
    shard.write_text("junk")
    assert _payloads(store) == []
    assert not shard.exists()
    assert len(store.problems) == 1
    store.put_record(KEY, NAME(), {"n": 1})
    assert _payloads(store) == [{"n": 1}]


def test_writing_removes_a_file_standing_where_a_directory_goes(store):
    # A collection record: its name is given, so writing it lists no shard first.
    shard = store.collections / KEY[:2]
    shard.write_text("junk")
    store.put_record(KEY, "cd" * 16, {"n": 1}, COLLECTIONS)
    assert [c.payload for c in store.candidates(KEY, COLLECTIONS)] == [{"n": 1}]
    assert store.problems == [f"a file where a directory should be: {shard.relative_to(store.directory)}"]


def test_a_directory_where_an_object_should_be(store):
    name = store.put_object({"x": 1})
    path = store.objects / name[:2] / f"{name}{SUFFIX}"
    path.unlink()
    path.mkdir()
    assert store.get_object(name) is None
    assert not path.exists()
    path.mkdir()
    assert store.put_object({"x": 1}) == name  # does not take the directory for the object
    assert store.get_object(name) == {"x": 1}
    assert len(store.problems) == 1


def test_a_record_of_a_newer_schema_is_left_for_its_writer(store):
    path = store.put_record(KEY, NAME(), {"n": 1})
    body = b'{"n":1}'
    future = _pack(b'{"schema":%d,"checksum":"0","payload":%s,"signed":"x"}' % (SCHEMA + 1, body))
    path.write_bytes(future)
    assert _payloads(store) == []
    assert path.read_bytes() == future
    assert store.problems == [
        f"record written by a newer pytest-cachevault (schema {SCHEMA + 1}), left in place: "
        f"{path.relative_to(store.directory)}"
    ]
    # gc keeps it while it is in use, and ages it out like any other record.
    assert gc.collect(store, max_size=10**9, max_age=86400).records_removed == 0
    assert path.exists()
    past = time.time() - 2 * 86400
    os.utime(path, (past, past))
    assert gc.collect(store, max_size=10**9, max_age=86400).records_removed == 1
    assert not path.exists()


def test_layout_directories_replaced_by_files_are_rebuilt(tmp_path):
    store = Store(tmp_path / "vault")
    store.ensure()
    for path in (store.records, store.tmp):
        os.rmdir(path)
        path.write_text("junk")
    store.ensure()
    assert store.records.is_dir() and store.tmp.is_dir()
    store.put_record(KEY, NAME(), {"n": 1})
    assert _payloads(store) == [{"n": 1}]


def test_a_store_that_is_a_file_is_refused_in_a_sentence(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    for directory in (target, target / "store"):
        with pytest.raises(StoreError, match="is not a directory"):
            Store(directory).ensure()
    assert target.read_text() == "keep me"


def test_tmp_removed_meanwhile_is_made_again(store):
    os.rmdir(store.tmp)
    store.put_record(KEY, NAME(), {"n": 1})
    assert _payloads(store) == [{"n": 1}]
    assert store.problems == []


def test_shard_directory_removed_while_writing(store, monkeypatch):
    """The shard vanishes between a writer's mkdir and its rename."""
    shard = store.records / KEY[:2]
    real_write = store_module._write_file
    calls = []

    def write_then_lose_the_directory(path, data):
        real_write(path, data)
        calls.append(path)
        if len(calls) == 1:
            os.rmdir(shard)

    monkeypatch.setattr(store_module, "_write_file", write_then_lose_the_directory)
    store.put_record(KEY, NAME(), {"n": 1})
    assert len(calls) == 2
    assert _payloads(store) == [{"n": 1}]
    assert list(store.tmp.iterdir()) == []
    assert store.problems == []


def test_temp_file_removed_by_gc_while_writing(store, monkeypatch):
    real_write = store_module._write_file
    calls = []

    def write_then_lose_it(path, data):
        real_write(path, data)
        calls.append(path)
        if len(calls) == 1:
            os.unlink(path)

    monkeypatch.setattr(store_module, "_write_file", write_then_lose_it)
    store.put_record(KEY, NAME(), {"n": 1})
    assert _payloads(store) == [{"n": 1}]


def test_a_full_disk_is_one_store_error_and_leaves_no_temp_file(store, monkeypatch):
    def half_then_enospc(path, data):
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(store_module, "_write_file", half_then_enospc)
    messages = set()
    for n in range(3):
        with pytest.raises(StoreError) as raised:
            store.put_record(KEY, NAME(), {"n": n})
        messages.add(str(raised.value))
    # One sentence for every failed write, whatever the file: reported once.
    assert messages == {f"cannot write to the vault at {store.directory}: No space left on device (ENOSPC)"}
    assert list(store.tmp.iterdir()) == []
    assert _payloads(store) == []


def test_gc_with_a_directory_for_its_lock(store):
    lock = store.base / "gc.lock"
    lock.mkdir()
    stray = store.tmp / "dead.tmp"
    stray.write_bytes(b"half")
    past = time.time() - 2 * gc.GRACE_SECONDS
    os.utime(stray, (past, past))
    result = gc.collect(store, max_size=10**9, max_age=10**9)
    assert result.temp_removed == 1
    assert result.problems == [f"not a regular file where the gc lock should be: {LAYOUT}/gc.lock"]
    assert "vault warning: not a regular file where the gc lock should be" in result.describe()


@pytest.mark.parametrize("content", [_pack(b"{truncated"), b"{truncated"], ids=["bad-json", "not-gzip"])
def test_gc_removes_damaged_records_and_says_so(store, content):
    bad = store.put_record(KEY, NAME(), {"n": 1})
    bad.write_bytes(content)
    good = store.put_record("cd" * 16, NAME(), {"n": 2})
    result = gc.collect(store, max_size=10**9, max_age=10**9)
    assert (result.records_removed, result.records_kept) == (1, 1)
    assert not bad.exists() and good.exists()
    assert len(result.problems) == 1


def test_runs_that_are_not_files_are_skipped(store):
    store.put_run({"replayed": 1, "ran": 2})
    (store.runs / "0-garbage.json").mkdir()
    (store.runs / "1-garbage.json").write_text(json.dumps({"schema": SCHEMA, "ran": "x"}))
    assert [run["ran"] for run in store.recent_runs()] == [2]


def test_a_deeply_nested_payload_is_a_bad_record(store):
    """JSON nested deeper than the parser's recursion limit, behind a valid checksum."""
    from pytest_cachevault.hashing import digest_bytes

    body = b"[" * 100_000 + b"]" * 100_000
    path = store.put_record(KEY, NAME(), {"n": 1})
    path.write_bytes(_pack(b'{"schema":1,"checksum":"%s","payload":%s}' % (digest_bytes(body).encode(), body)))
    assert _payloads(store) == []
    assert not path.exists()
    assert store.problems == [f"unreadable record: {path.relative_to(store.directory)}"]


def test_a_schema_number_too_long_to_read(store):
    path = store.put_record(KEY, NAME(), {"n": 1})
    path.write_bytes(_pack(b'{"schema":' + b"9" * 5000 + b',"checksum":"0","payload":{}}'))
    assert _payloads(store) == []
    assert store.problems == [f"record of an unknown schema or layout: {path.relative_to(store.directory)}"]
