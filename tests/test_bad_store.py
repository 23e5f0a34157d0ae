"""Bad store contents: each is a miss, is removed (or left for a newer version), and is
reported once as a ``vault warning:`` line; the run is never broken by it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_cachevault.hashing import digest_bytes
from pytest_cachevault.store import COLLECTIONS, LAYOUT, SUFFIX, Store, record_key_and_name

from conftest import (
    BASIC_IDS,
    executed,
    no_traceback,
    record_of,
    replayed,
    unpacked,
    vault_counts,
    vault_warnings,
    write_packed,
)

DAMAGED_ID = "test_basic.py::test_add"


def _import_state(record: Path) -> Path:
    """The shared import-state object a result file refers to."""
    name = json.loads(unpacked(record))["payload"]["shared"][0]
    return record.parents[2] / "objects" / name[:2] / f"{name}{SUFFIX}"


def _truncate(record: Path) -> None:
    """Cut the end of the record's JSON (and compress what is left)."""
    write_packed(record, unpacked(record)[:-30])


def _garbage(record: Path) -> None:
    """Bytes that are not gzip at all."""
    record.write_bytes(bytes(range(256)) * 3)


def _garbage_inside_gzip(record: Path) -> None:
    """Well-compressed bytes that are not a record."""
    write_packed(record, bytes(range(256)) * 3)


def _tamper(record: Path) -> None:
    """Change the payload without fixing the checksum."""
    write_packed(record, unpacked(record).replace(b'"outcome":"passed"', b'"outcome":"failed"'))


def _future_schema(record: Path) -> None:
    body = b'{"nodeid":"x"}'
    write_packed(record, b'{"schema":7,"checksum":"%s","payload":%s}' % (digest_bytes(body).encode(), body))


def _directory_for_record(record: Path) -> None:
    record.unlink()
    (record / "nested").mkdir(parents=True)


def _file_for_shard_directory(record: Path) -> None:
    shutil.rmtree(record.parent)
    record.parent.write_text("not a directory")


def _object_mismatch(record: Path) -> None:
    write_packed(_import_state(record), b'{"file": {}, "code": {}}')


def _directory_for_object(record: Path) -> None:
    state = _import_state(record)
    state.unlink()
    state.mkdir()


# id: (damage, the warning's start). Whatever is damaged, every test of the module
# loses its result: a result file holds the whole module's results of a run.
DAMAGE = {
    "truncated-record": (_truncate, f"record whose checksum does not match: {LAYOUT}/records/"),
    "garbage-record": (_garbage, f"record that is not gzip-compressed JSON: {LAYOUT}/records/"),
    "garbage-inside-gzip": (_garbage_inside_gzip, f"record of an unknown schema or layout: {LAYOUT}/records/"),
    "tampered-record": (_tamper, f"record whose checksum does not match: {LAYOUT}/records/"),
    "future-schema": (_future_schema, "record written by a newer pytest-cachevault (schema 7), left in place"),
    "directory-for-record": (_directory_for_record, "not a regular file where a record should be"),
    "file-for-shard-directory": (_file_for_shard_directory, "a file where a directory of records should be"),
    "object-not-matching-its-name": (_object_mismatch, f"object whose content does not match its name: {LAYOUT}/objects/"),
    "directory-for-object": (_directory_for_object, "not a regular file where an object should be"),
}
#: Damage to a shared object, not to the result file: a worker that re-ran a test may
#: write the object again, after which the other worker may replay from the intact file.
OBJECT_DAMAGE = {"object-not-matching-its-name", "directory-for-object"}


CASES = [pytest.param(case, [], id=case) for case in DAMAGE] + [
    # Under xdist one worker finds a damaged record, both may find a damaged object.
    pytest.param(case, ["-n", "2"], id=f"{case}-xdist")
    for case in ("truncated-record", "object-not-matching-its-name")
]


@pytest.mark.parametrize("case, workers", CASES)
def test_damaged_store_is_a_miss_and_one_warning(case, workers, basic_project, run_vault, ran_log):
    if workers:
        pytest.importorskip("xdist")
    damage, warning = DAMAGE[case]
    run_vault().assert_outcomes(passed=3)
    ran_log.take()
    # The result file holding DAMAGED_ID holds the whole module's results: all re-run.
    damage(record_of(run_vault.store, DAMAGED_ID))

    result = run_vault("-v", *workers)
    no_traceback(result)
    assert result.ret == 0
    result.assert_outcomes(passed=3)
    [line] = vault_warnings(result)
    assert line.startswith(warning), line
    ran = set(ran_log.take())
    if case in OBJECT_DAMAGE and workers:
        # The worker that found the damaged object rewrote it when it recorded its
        # test (same content, same name); the other worker may then verify and use it.
        assert ran and vault_counts(result) == (3 - len(ran), len(ran))
    else:
        assert ran == BASIC_IDS
        assert vault_counts(result) == (0, 3)
    if not workers:
        assert executed(result) == ran

    # Gone, or superseded by the module's new result file: the next run neither warns nor runs.
    after = run_vault("-v", *workers)
    assert vault_warnings(after) == []
    assert vault_counts(after) == (3, 0)
    assert ran_log.take() == []
    if not workers:
        assert replayed(after) == BASIC_IDS


@pytest.mark.parametrize("mark", ["__class__", "_private", ""])
def test_a_stored_collection_with_an_impossible_mark(mark, basic_project, run_vault, ran_log):
    """A test module's collection record whose mark pytest cannot make: the module is
    imported as usual, its tests replay, the run does not fail."""
    run_vault().assert_outcomes(passed=3)
    ran_log.take()
    store = Store(run_vault.store)
    [path] = [p for p, _ in store.iter_records(COLLECTIONS)]
    payload = store.read_record(path).payload
    payload["shapes"][payload["items"][0][2]][0] = [[mark, [], {}]]  # the first test's marks
    path.unlink()
    store.put_record(*record_key_and_name(path), payload, COLLECTIONS)

    result = run_vault("-v")
    no_traceback(result)
    assert result.ret == 0
    result.assert_outcomes(passed=3)
    assert vault_counts(result) == (3, 0)
    assert ran_log.take() == []
