"""Fuzzing the record reader: whatever bytes a record file holds, reading it never raises.

Record files are gzip-compressed; most inputs here are compressed before they are
written, so that they reach the checks made on the JSON inside. Four kinds of input:
arbitrary bytes (as the JSON, and as the file itself); a valid (signed) record with
bytes flipped, cut or inserted (in its JSON, and in the compressed file); and
well-formed envelopes around arbitrary JSON, which pass the checksum and so reach
the parsing and shape checks behind it (and the report reader a hit would use).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_cachevault import collect, replay
from pytest_cachevault.hashing import Hasher, digest_bytes
from pytest_cachevault.inputs import Dependencies, is_group
from pytest_cachevault.store import SUFFIX, Store, _pack, _unpack

KEY = "ab" * 16
NAME = "cd" * 16
SECRET = b"fuzzing key"
FUZZ = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

_DIRECTORY = Path(tempfile.mkdtemp(prefix="vault-fuzz-"))
ROOT = _DIRECTORY / "root"
ROOT.mkdir()
(ROOT / "a.py").write_text("x = 1\n")


def _store(key: bytes | None = None) -> Store:
    store = Store(_DIRECTORY / "vault", key=key)
    store.ensure()
    return store


def _read(store: Store, data: bytes, *, pack: bool = True) -> list[dict]:
    """Put ``data`` where a record of KEY lives and read the key's candidates: ``data``
    is the record's JSON, compressed as the store does, or with ``pack=False`` the
    file's bytes as they are."""
    path = store.records / KEY[:2] / f"{KEY}.{NAME}{SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_pack(data) if pack else data)
    store.problems.clear()
    store.ignored.clear()
    payloads = [c.payload for c in store.candidates(KEY)]
    if payloads:
        assert store.problems == []
    elif path.exists():  # kept: a newer schema, or ignored for its signature
        assert store.problems and (b'"schema":' in _unpack(path.read_bytes()))
    else:
        assert len(store.problems) == 1
    for payload in payloads:
        assert isinstance(payload, dict)
    return payloads


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(data):
    assert _read(_store(), data) == [] or data.startswith(b'{"schema":1,')


@FUZZ
@given(data=st.binary(max_size=512) | st.binary(max_size=512).map(lambda tail: b"\x1f\x8b\x08" + tail))
def test_arbitrary_file_bytes(data):
    """Bytes that are not what the store compressed (some with a gzip magic number)."""
    assert _read(_store(), data, pack=False) == []


@FUZZ
@given(
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    cut=st.integers(min_value=0, max_value=10_000),
    flip=st.integers(min_value=0, max_value=10_000),
    insert=st.binary(min_size=1, max_size=4),
    how=st.sampled_from(["truncate", "flip", "insert"]),
    signed=st.booleans(),
    compressed=st.booleans(),
)
def test_damaged_valid_records(payload, cut, flip, insert, how, signed, compressed):
    """A changed byte of the JSON, or of the compressed file, is caught (by
    decompression or the checks behind it), or leaves the payload as written (e.g.
    ``"schema":01``, or a byte of the gzip header's time)."""
    store = _store(SECRET if signed else None)
    path = store.put_record(KEY, NAME, payload)
    data = path.read_bytes() if compressed else _unpack(path.read_bytes())
    pack = not compressed
    assert _read(store, data, pack=pack) == [payload]
    assert _read(store, _damaged(data, how, cut, flip, insert), pack=pack) in ([], [payload])


def _damaged(data: bytes, how: str, cut: int, flip: int, insert: bytes) -> bytes:
    if how == "truncate":
        return data[: cut % len(data)]
    if how == "flip":
        at = flip % len(data)
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    at = flip % (len(data) + 1)
    return data[:at] + insert + data[at:]


@FUZZ
@given(body=json_values, schema=st.integers(min_value=0, max_value=3))
def test_well_formed_envelopes_around_any_json(body, schema):
    """Past the checksum, any JSON: a dict is a candidate, the rest is a bad record.

    Candidates then go through the same checks a lookup makes, which never raise."""
    text = json.dumps(body, separators=(",", ":")).encode()
    data = b'{"schema":%d,"checksum":"%s","payload":%s}' % (schema, digest_bytes(text).encode(), text)
    payloads = _read(_store(), data)
    assert payloads == ([body] if schema == 1 and isinstance(body, dict) else [])
    deps = Dependencies(ROOT, Hasher(ROOT), ())
    for payload in payloads:
        inputs = payload.get("inputs")
        if is_group(inputs):
            deps.changed(inputs)


@FUZZ
@given(
    inputs=st.fixed_dictionaries(
        {"file": st.dictionaries(st.text(max_size=12), st.none() | st.text(max_size=4), max_size=4)},
        optional={"code": st.just({}), "env": st.dictionaries(st.text(max_size=6), st.none() | st.text(max_size=4))},
    )
)
def test_input_groups_from_records(inputs):
    """Whatever paths a record names, checking them never raises (NUL, ``..``, drives...)."""
    inputs.setdefault("code", {})
    assert is_group(inputs)
    deps = Dependencies(ROOT, Hasher(ROOT), ())
    verdict = deps.changed(inputs)
    assert verdict is None or isinstance(verdict, str)


report_dicts = st.fixed_dictionaries(
    {"$report_type": st.sampled_from(["TestReport", "CollectReport", "Other"])},
    optional={
        "nodeid": st.text(max_size=10),
        "when": st.sampled_from(["setup", "call", "teardown", "x"]),
        "outcome": st.sampled_from(["passed", "failed", "skipped", "x"]),
        "location": json_values,
        "keywords": json_values,
        "longrepr": json_values,
        "sections": json_values,
        "duration": json_values,
        "user_properties": json_values,
    },
)


@settings(FUZZ, max_examples=100)
@given(reports=st.lists(report_dicts, max_size=3) | json_values)
def test_stored_reports(reports, pytestconfig):
    """The reports of a record come back as TestReports or raise BadRecord, nothing else."""
    try:
        rebuilt = replay.from_stored(pytestconfig, json.dumps(reports), "test_x.py::test_y")
    except replay.BadRecord:
        return
    assert [r.when for r in rebuilt][0] == "setup" and rebuilt[-1].when == "teardown"


@pytest.fixture(scope="module", autouse=True)
def _clean_up():
    yield
    import shutil

    shutil.rmtree(_DIRECTORY, ignore_errors=True)


mark_entries = st.lists(
    st.tuples(
        st.text(max_size=10) | st.sampled_from(["__class__", "_private", "skip", "xfail", "slow", "with_args"]),
        st.lists(json_values, max_size=2),
        st.dictionaries(st.text(max_size=6), json_values, max_size=2),
    ).map(list),
    max_size=3,
)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")  # made-up names
@FUZZ
@given(
    name=st.text(min_size=1, max_size=12),
    location=st.tuples(st.text(max_size=10), st.none() | st.integers(), st.text(max_size=10)).map(list),
    marks=mark_entries,
)
def test_stored_collections(name, location, marks):
    """The marks of a test module's stored collection that pass the shape check can be
    put back on a stand-in (a bad name must be refused, not fail the collection)."""
    items = collect.valid_items(
        {"nodeid": "test_x.py", "items": [[f"TestX::{name}", location, 0, name]], "shapes": [[marks, ["TestX"]]]}
    )
    if items is None:
        return
    for mark_name, args, kwargs in items[0][3]:
        getattr(pytest.mark, mark_name).with_args(*args, **kwargs)
