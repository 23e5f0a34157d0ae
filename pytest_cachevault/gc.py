"""Pruning the store: by age, then least recently used first until it fits a size.

A record's mtime is its last use. A test module's result files go oldest made first
(a file counts as used when an older one of its module was): removing a newer file
while keeping an older one could let the older result (a pass) stand in for the newer
(a failure). Objects are removed once no record refers to them;
an unreferenced object or temp file younger than :data:`GRACE_SECONDS` is left alone
because a concurrent writer may be about to refer to it (it writes objects before the
record). One collector at a time, under a file lock; readers and writers never wait.
A record of a newer schema is kept (its refs unknown) and ages like the others. The
directory of an older layout (what an earlier version of the plugin wrote) goes whole
once nothing in it has been used for the age limit: that version may still be in use.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections import Counter
from pathlib import Path

import filelock

from .records import tests_of
from .store import COLLECTIONS, RESULTS, Store, StoreError, is_name, made_order, record_key_and_name

GRACE_SECONDS = 3600.0


@dataclasses.dataclass
class Collected:
    records_removed: int = 0
    objects_removed: int = 0
    temp_removed: int = 0
    #: The older layouts removed (``v3``...), and those kept because still in use.
    layouts_removed: list[str] = dataclasses.field(default_factory=list)
    layouts_kept: list[str] = dataclasses.field(default_factory=list)
    bytes_removed: int = 0
    records_kept: int = 0
    bytes_kept: int = 0
    busy: bool = False
    #: Damaged files found (and removed) on the way, one line each.
    problems: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        if self.busy:
            return "vault gc: another garbage collection is running on this store; nothing done"
        line = (
            f"vault gc: removed {self.records_removed} records, {self.objects_removed} objects"
            f" and {self.temp_removed} temp files ({format_size(self.bytes_removed)}); kept"
            f" {self.records_kept} records ({format_size(self.bytes_kept)})"
        )
        lines = [line]
        if self.layouts_removed:
            lines.append(f"vault gc: removed the store of older versions (layout {', '.join(self.layouts_removed)}),"
                         " which this version does not read")
        if self.layouts_kept:
            lines.append(f"vault gc: kept the store of older versions (layout {', '.join(self.layouts_kept)}),"
                         " used within the age limit; this version does not read it")
        return "\n".join([*lines, *(f"vault warning: {problem}" for problem in self.problems)])


def format_size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError


def _references(payload: dict) -> list[str]:
    """The objects a record names: its environment and shared input sets (its tests' too)."""
    names = [payload.get("env")]
    for holder in (payload, *_entries(payload)):
        shared = holder.get("shared")
        if isinstance(shared, list):
            names.extend(shared)
    return list({n for n in names if is_name(n)})


def _entries(payload: dict) -> list[dict]:
    return [entry for entry in tests_of(payload).values() if isinstance(entry, dict)]


def _older(path: Path, damaged: dict[str, tuple[int, str]]) -> bool:
    """Whether ``path`` is a result file made before a damaged one of its key (``damaged``:
    key → the newest damaged file's :func:`made_order`): it must not outlive it (the
    reader does the same)."""
    found = damaged.get(record_key_and_name(path)[0]) if damaged else None
    return found is not None and made_order(path) < found


def _in_making_order(live: list[tuple[float, Path, int, list[str], bool]]) -> None:
    """Give each result file the latest use of the files of its key made up to it, so
    that a key's newer files never look less used than its older ones."""
    by_key: dict[str, list[int]] = {}
    for index, (_, path, _, _, is_result) in enumerate(live):
        if is_result:
            by_key.setdefault(record_key_and_name(path)[0], []).append(index)
    for indexes in by_key.values():
        latest_use = 0.0
        for index in sorted(indexes, key=lambda i: made_order(live[i][1])):
            mtime, *rest = live[index]
            latest_use = max(latest_use, mtime)
            live[index] = (latest_use, *rest)  # type: ignore[assignment]


def _newest_and_size(directory: Path) -> tuple[float, int]:
    """The latest mtime of the files under ``directory`` (their last use) and their bytes;
    links are not followed."""
    newest, size = 0.0, 0
    for parent, _, files in os.walk(directory):
        for name in files:
            try:
                st = os.lstat(os.path.join(parent, name))
            except OSError:
                continue
            newest, size = max(newest, st.st_mtime), size + st.st_size
    return newest, size


def collect(store: Store, max_size: int, max_age: float, now: float | None = None) -> Collected:
    """Prune ``store`` to records used within ``max_age`` seconds and ``max_size`` bytes."""
    now = time.time() if now is None else now
    grace = min(GRACE_SECONDS, max_age)
    result = Collected()
    store.ensure()
    lock_path = store.base / "gc.lock"
    try:
        mode = os.lstat(lock_path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        store._problem(lock_path, "not a regular file where the gc lock should be")
    lock = filelock.FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        result.busy = True
        return result
    except OSError as exc:
        raise StoreError(f"cannot lock {lock_path}: {exc.strerror or exc}") from exc
    try:
        _collect(store, max_size, max_age, now, grace, result)
    finally:
        lock.release()
    result.problems = list(store.problems)
    return result


def _collect(store: Store, max_size: int, max_age: float, now: float, grace: float, result: Collected) -> None:
    def remove(path: Path, size: int) -> None:
        store.remove(path)
        result.bytes_removed += size

    for path, st in store.iter_tmp():
        if st.st_mtime < now - grace:
            remove(path, st.st_size)
            result.temp_removed += 1

    for path, st in store.iter_runs():
        if st.st_mtime < now - max_age:
            remove(path, st.st_size)

    for directory in store.old_layouts():
        newest, size = _newest_and_size(directory)
        if newest < now - max_age:
            remove(directory, size)
            result.layouts_removed.append(directory.name)
        else:
            result.layouts_kept.append(directory.name)

    # Records, oldest use first (a key's oldest made first on ties); unreadable ones,
    # result files made before an unreadable one of their key, and those past
    # max_age go now.
    # Collection records are pruned alike but not counted: they are worth nothing
    # without the test results they list.
    live: list[tuple[float, Path, int, list[str], bool]] = []
    damaged: dict[str, tuple[int, str]] = {}
    for area in (RESULTS, COLLECTIONS):
        for path, st in store.iter_records(area):
            found = store.read_record(path)
            if found.status == "missing":
                continue
            if found.status == "bad":
                remove(path, st.st_size)
                result.records_removed += area == RESULTS
                if area == RESULTS:
                    key, order = record_key_and_name(path)[0], made_order(path)
                    damaged[key] = max(order, damaged.get(key, order))
            else:
                live.append((st.st_mtime, path, st.st_size, _references(found.payload or {}), area == RESULTS))
    _in_making_order(live)
    kept_live = []
    for entry in live:
        _, path, size, _, is_result = entry
        if entry[0] < now - max_age or _older(path, damaged):
            remove(path, size)
            result.records_removed += is_result
        else:
            kept_live.append(entry)
    live = sorted(kept_live)

    refcount: Counter[str] = Counter(name for *_, refs, _ in live for name in refs)
    objects = {name: (path, st) for name, path, st in store.iter_objects()}

    def drop_object(name: str) -> None:
        path, st = objects.pop(name)
        remove(path, st.st_size)
        result.objects_removed += 1

    for name, (_, st) in list(objects.items()):
        if refcount[name] == 0 and st.st_mtime < now - grace:
            drop_object(name)

    total = sum(size for _, _, size, _, _ in live) + sum(st.st_size for _, st in objects.values())
    kept = []
    for index, (mtime, path, size, refs, is_result) in enumerate(live):
        if total <= max_size:
            kept = live[index:]
            break
        remove(path, size)
        total -= size
        result.records_removed += is_result
        for name in refs:
            refcount[name] -= 1
            if refcount[name] == 0 and name in objects:
                total -= objects[name][1].st_size
                drop_object(name)
    result.records_kept = sum(is_result for *_, is_result in kept)
    result.bytes_kept = total
