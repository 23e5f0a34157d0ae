"""Unit tests of trust: a read-only store writes nothing; signed records; paths in records."""

from __future__ import annotations

import ast
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest

from pytest_cachevault.hashing import Hasher, digest_bytes
from pytest_cachevault.inputs import Dependencies, empty_group, is_safe_relpath
from pytest_cachevault.store import BADLY_SIGNED, SUFFIX, UNSIGNED, Store, _pack, _unpack

KEY = "ab" * 16
OTHER_KEY = "cd" * 16
SECRET = b"correct horse battery staple"


def NAME() -> None:
    """No name: the store names a result file by when it is made."""
    return None


def snapshot(directory: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under ``directory``: content (None for directories) and mtime."""
    return {
        p.relative_to(directory).as_posix(): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


@pytest.fixture
def filled(tmp_path) -> Store:
    """A store with one record, one object, one run summary and one damaged record."""
    store = Store(tmp_path / "vault")
    store.ensure()
    store.put_record(KEY, NAME(), {"shared": [store.put_object({"file": {}, "code": {}})]})
    store.put_run({"replayed": 1, "ran": 0})
    store.put_record(OTHER_KEY, NAME(), {"n": 1}).write_bytes(b"garbage")
    return store


def test_read_only_store_writes_nothing(filled):
    before = snapshot(filled.directory)
    store = Store(filled.directory, readonly=True)
    store.ensure()
    [candidate] = store.candidates(KEY)
    store.touch(candidate)
    assert store.get_object(candidate.payload["shared"][0]) == {"file": {}, "code": {}}
    assert list(store.candidates(OTHER_KEY)) == []  # damaged: reported, not removed
    assert len(store.problems) == 1
    store.put_record(KEY, NAME(), {"n": 2})
    store.put_object({"new": True})
    store.put_run({"replayed": 0, "ran": 1})
    store.remove(Path(candidate.path))
    assert snapshot(filled.directory) == before


def test_read_only_store_creates_nothing(tmp_path):
    store = Store(tmp_path / "missing" / "vault", readonly=True)
    store.ensure()
    assert list(store.candidates(KEY)) == []
    store.put_record(KEY, NAME(), {"n": 1})
    store.put_run({"replayed": 0, "ran": 1})
    assert list(tmp_path.iterdir()) == []


def test_signed_records_round_trip(tmp_path):
    store = Store(tmp_path / "vault", key=SECRET)
    store.ensure()
    path = store.put_record(KEY, NAME(), {"outcome": "passed"})
    data = _unpack(path.read_bytes())
    assert re.match(rb'\{"schema":1,"checksum":"[0-9a-f]+","hmac":"[0-9a-f]{64}","payload":', data)
    assert SECRET not in data
    assert [c.payload for c in store.candidates(KEY)] == [{"outcome": "passed"}]
    assert store.ignored == {} and store.problems == []
    # Without a key the signature is not checked: the record reads as before.
    assert [c.payload for c in Store(store.directory).candidates(KEY)] == [{"outcome": "passed"}]


def test_with_a_key_unsigned_and_badly_signed_records_are_ignored_not_removed(tmp_path):
    directory = tmp_path / "vault"
    unsigned = Store(directory)
    unsigned.ensure()
    unsigned_path = unsigned.put_record(KEY, NAME(), {"outcome": "passed"})
    other = Store(directory, key=b"another key")
    other_path = other.put_record(OTHER_KEY, NAME(), {"outcome": "passed"})

    store = Store(directory, key=SECRET)
    assert list(store.candidates(KEY)) == []
    assert list(store.candidates(OTHER_KEY)) == []
    assert store.ignored == {KEY: UNSIGNED, OTHER_KEY: BADLY_SIGNED}
    assert unsigned_path.exists() and other_path.exists()
    assert len(store.problems) == 2  # one line per kind, however many records


def test_a_signed_record_does_not_verify_under_another_key(tmp_path):
    """Copying a passing test's signed record to a failing test's key replays nothing."""
    store = Store(tmp_path / "vault", key=SECRET)
    store.ensure()
    passing = store.put_record(KEY, NAME(), {"outcome": "passed"})
    planted = store.records / OTHER_KEY[:2] / passing.name.replace(KEY, OTHER_KEY, 1)
    planted.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(passing, planted)
    assert list(store.candidates(OTHER_KEY)) == []
    assert store.ignored == {OTHER_KEY: BADLY_SIGNED}


def test_a_forged_payload_with_a_fresh_checksum_does_not_verify(tmp_path):
    """Whoever lacks the key can recompute the checksum, not the signature."""
    store = Store(tmp_path / "vault", key=SECRET)
    store.ensure()
    path = store.put_record(KEY, NAME(), {"outcome": "failed"})
    data = _unpack(path.read_bytes())
    header, _, _ = data.partition(b',"payload":')
    forged_body = json.dumps({"outcome": "passed"}, separators=(",", ":")).encode()
    header = re.sub(rb'"checksum":"[0-9a-f]+"', b'"checksum":"%s"' % digest_bytes(forged_body).encode(), header)
    path.write_bytes(_pack(header + b',"payload":' + forged_body + b"}"))
    assert list(store.candidates(KEY)) == []
    assert store.ignored == {KEY: BADLY_SIGNED}
    assert list(Store(store.directory).candidates(KEY)) != []  # (the checksum was right)


@pytest.mark.parametrize(
    "relpath",
    ["/etc/passwd", "../outside.txt", "a/../../outside.txt", "a\\..\\b", "a\0b", "C:/Windows/x", "c:x", ""],
)
def test_paths_from_records_that_leave_the_rootdir(relpath, tmp_path):
    """Never hashed, so never read: the record only misses."""
    assert not is_safe_relpath(relpath)
    asked = []

    class SpyHasher(Hasher):
        def digest(self, name, kind):
            asked.append(name)
            return super().digest(name, kind)

    (tmp_path / "root").mkdir()
    deps = Dependencies(tmp_path / "root", SpyHasher(tmp_path / "root"), ())
    group = empty_group()
    group["file"][relpath] = None
    assert deps.changed(group) == f"changed: {relpath} (not a path under the rootdir)"
    assert asked == []


@pytest.mark.parametrize("relpath", ["a.py", "src/pkg/mod.py", "data/x:y.json", ".hidden/f", "."])
def test_paths_inside_the_rootdir_are_accepted(relpath):
    assert is_safe_relpath(relpath) or relpath == "."


#: The one module that loads marshalled code: the 3.11 tracer's marked code, from the
#: checkout's own ``__pycache__`` (see the next test), never from the store.
MARSHALLED_CODE = "marked_code.py"


def test_nothing_is_unpickled_or_evaluated():
    """The plugin has no way to turn store contents into objects other than JSON: it
    imports no deserializer that runs code, and calls nothing that evaluates text."""
    package = Path(__file__).resolve().parents[2] / "pytest_cachevault"
    modules = {"pickle", "marshal", "shelve", "yaml", "dill", "cloudpickle"}
    calls = {"eval", "exec", "__import__", "import_module", "loads"}
    found = []
    for path in sorted(package.glob("*.py")):
        if path.name == MARSHALLED_CODE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [f"{path.name}: import {a.name}" for a in node.names if a.name.split(".")[0] in modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in modules:
                found.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
                if name in calls and not (name == "loads" and owner == "json"):
                    found.append(f"{path.name}:{node.lineno}: {owner + '.' if owner else ''}{name}()")
    assert found == []


def test_marshalled_code_is_read_only_beside_the_sources_never_from_the_store():
    """``marked_code`` knows nothing of the store or the options that name it: the only
    file it opens is the one ``importlib.util.cache_from_source`` names for a source."""
    package = Path(__file__).resolve().parents[2] / "pytest_cachevault"
    tree = ast.parse((package / MARSHALLED_CODE).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{n.module or ''}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"__future__", "functools", "importlib.util", "json", "marshal", "os", "sys",
                        "types", "hashing"}
    opened = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "open"]
    assert [ast.unparse(n.args[0]) for n in opened] == ["kept", "temporary", "os.path.join(os.path.dirname(__file__), module)"]


def test_a_signed_record_does_not_verify_in_the_other_area(tmp_path):
    """A test's record moved among the test modules' collection records (same key)."""
    from pytest_cachevault.store import COLLECTIONS

    store = Store(tmp_path / "vault", key=SECRET)
    store.ensure()
    result = store.put_record(KEY, NAME(), {"outcome": "passed"})
    moved = store.collections / KEY[:2] / result.name
    moved.parent.mkdir(parents=True)
    shutil.copy(result, moved)
    assert [c.payload for c in store.candidates(KEY)] == [{"outcome": "passed"}]
    assert list(store.candidates(KEY, COLLECTIONS)) == []
    assert store.ignored == {KEY: BADLY_SIGNED}


def test_a_signed_record_does_not_verify_under_another_name(tmp_path):
    """A record's name stands for its inputs: a signed record renamed (to pass for
    records of other inputs) does not verify."""
    store = Store(tmp_path / "vault", key=SECRET)
    store.ensure()
    stored = store.put_record(KEY, NAME(), {"outcome": "passed"})
    renamed = stored.rename(stored.with_name(f"{KEY}.{uuid.uuid4().hex}{SUFFIX}"))
    reader = Store(store.directory, key=SECRET)
    assert list(reader.candidates(KEY)) == []
    assert reader.ignored == {KEY: BADLY_SIGNED}
    renamed.rename(stored)  # (under its own name it verifies)
    assert [c.payload for c in Store(store.directory, key=SECRET).candidates(KEY)] == [{"outcome": "passed"}]
