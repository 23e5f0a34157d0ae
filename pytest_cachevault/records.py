"""Test results, one file per test module: the file's format, read lazily, written whole.

A result file holds what one run learnt of one test module's tests::

    {"env": <environment object>, "created": <unix time>,
     "common": <inputs every test below shares>, "shared": [<shared input sets>],
     "tests": {<node id>: {"outcome": …, "reports": …, "inputs": <the rest of its
               inputs>[, "shared": […] if others][, "why": …][, "warnings": […]]}}}

One file per test (the layout before) cost a cold run a third of its overhead in file
creations, and repeated the module's own inputs (the test file, its conftests, what
its collection ran) in every test's record. A test's inputs are the union of
``common`` and its own ``inputs``; a test reads as unchanged when both are.

Each file is immutable and named by when it was made (:meth:`Store.put_record`). A
module has several: runs on other branches, runs that re-ran part of it after an edit, xdist
workers that ran part of it. A test's result is looked for in them newest first, and
older files are read only for a test the newer ones lack or hold changed. A file holds
only the tests its run ran: carrying replayed or unreached tests' entries forward
would let a run that replayed a test shadow a concurrent run's newer failure of it.

A run writes a module's file when it leaves the module. While it is in the module
it also writes, every :data:`FLUSH_SECONDS`, the results recorded since the last
write, each time to a file of their own: a run killed mid-module loses only the
results since. On leaving, one file with all of them replaces those partial files.
Rewriting the whole module at every flush instead made writing a long module grow
with the square of its length: on packaging's ``test_specifiers.py`` and
``test_version.py`` (53,554 tests, about 50 s) it took 13 % of a cold run (py-spy).

Knows nothing of pytest: node ids and payloads are strings and dicts.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

from .inputs import Group, is_group
from .store import Candidate, Store

#: How often a module's results are written while it runs (seconds): a run killed
#: mid-module loses at most that much of its work.
FLUSH_SECONDS = 5.0
#: Fields of an entry that hold its inputs rather than its result.
_INPUT_FIELDS = ("inputs", "shared")


def tests_of(payload: dict | None) -> dict:
    """A result file's entries by node id; {} if it has none (the store is untrusted)."""
    tests = (payload or {}).get("tests")
    return tests if isinstance(tests, dict) else {}


def whole(payload: dict, entry: dict) -> dict | None:
    """An entry as it was recorded: its inputs joined again with the file's common
    ones; None if they are malformed (the store is untrusted)."""
    common, own = payload.get("common"), entry.get("inputs")
    shared = entry.get("shared", payload.get("shared"))
    if not (is_group(common) and is_group(own) and isinstance(shared, list)):
        return None
    joined = {kind: {**common.get(kind, {}), **own.get(kind, {})} for kind in {*common, *own}}
    return {**entry, "inputs": joined, "shared": shared}


def _common(groups: list[Group]) -> Group:
    """The inputs (kind, name and digest) that every group holds."""
    first, rest = groups[0], groups[1:]
    common: Group = {}
    for kind, part in first.items():
        common[kind] = {
            name: digest for name, digest in part.items()
            if all(name in g.get(kind, ()) and g[kind][name] == digest for g in rest)
        }
    common.setdefault("file", {})
    common.setdefault("code", {})
    return common


def pack(entries: dict[str, dict], environment: str, created: int | None = None) -> dict:
    """The payload of a result file for ``entries`` (node id → whole entry, as
    :func:`whole` gives or a run records): their common inputs written once."""
    groups = [entry["inputs"] for entry in entries.values()]
    common = _common(groups) if groups else {"file": {}, "code": {}}
    usual = collections.Counter(tuple(e["shared"]) for e in entries.values()).most_common(1)
    shared = list(usual[0][0]) if usual else []
    tests = {}
    for nodeid, entry in entries.items():
        packed = {k: v for k, v in entry.items() if k not in _INPUT_FIELDS}
        packed["inputs"] = own = {"file": {}, "code": {}}
        for kind, part in entry["inputs"].items():
            held = common.get(kind, {})
            rest = {n: d for n, d in part.items() if n not in held}
            if rest or kind in own:
                own[kind] = rest
        if entry["shared"] != shared:
            packed["shared"] = entry["shared"]
        tests[nodeid] = packed
    return {
        "env": environment,
        "created": int(time.time()) if created is None else created,
        "common": common,
        "shared": shared,
        "tests": tests,
    }


class ModuleResults:
    """The result files of one test module, read newest first as far as needed, and
    what this run adds to them."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key
        self._read: list[Candidate] = []
        self._unread: Iterator[Candidate] | None = None
        #: Node id → whole entry, of the tests this run ran; those not written yet.
        self._recorded: dict[str, dict] = {}
        self._pending: dict[str, dict] = {}
        #: The files this run wrote for the module: the next whole write supersedes them.
        self._written: list[str] = []
        #: When the current visit's first result was recorded, or the last write.
        self._flushed = 0.0
        self._touched: set[str] = set()

    def files(self) -> Iterator[Candidate]:
        """The module's sound files, newest first; each read once, when first needed."""
        index = 0
        while True:
            if index < len(self._read):
                yield self._read[index]
                index += 1
                continue
            if self._unread is None:
                self._unread = self.store.candidates(self.key)
            candidate = next(self._unread, None)
            if candidate is None:
                return
            if tests_of(candidate.payload):
                self._read.append(candidate)

    def entries(self, nodeid: str) -> Iterator[tuple[Candidate, dict]]:
        """The stored entries of ``nodeid``, newest file first."""
        for candidate in self.files():
            entry = tests_of(candidate.payload).get(nodeid)
            if isinstance(entry, dict):
                yield candidate, entry

    def replayed(self, candidate: Candidate) -> None:
        """An entry of ``candidate`` was replayed: mark the file used (once per run)."""
        if candidate.path not in self._touched:
            self._touched.add(candidate.path)
            self.store.touch(candidate)

    def record(self, nodeid: str, entry: dict) -> bool:
        """Add what a test that ran gave; True when it is time to write (see
        :data:`FLUSH_SECONDS`)."""
        if not self._recorded:  # the first of a visit: the clock starts now
            self._flushed = time.monotonic()
        self._recorded[nodeid] = entry
        self._pending[nodeid] = entry
        return time.monotonic() - self._flushed >= FLUSH_SECONDS

    def write(self, environment: str, *, partial: bool = False) -> None:
        """Write what this run recorded of the module since its last write, if anything.

        A whole write puts all this visit recorded in one file and removes the files
        it wrote before; a ``partial`` one writes only the tests recorded since the
        last write, to a file of their own (see the module docstring).
        """
        if partial:
            if self._pending:
                self._written.append(self._put(self._pending, environment))
                self._pending = {}
            return
        if not self._pending and len(self._written) <= 1:
            return
        path = self._put(self._recorded, environment)
        for earlier in self._written:
            if earlier != path:
                self.store.remove_record(self.key, earlier)
        self._written = [path]
        self._pending = {}

    def _put(self, entries: dict[str, dict], environment: str) -> str:
        path = str(self.store.put_record(self.key, None, pack(entries, environment)))
        self._flushed = time.monotonic()
        return path

    def release(self) -> None:
        """Forget what was read and recorded (written already): the run has left the
        module. Should it come back (xdist sends tests in chunks, ``--ff`` reorders),
        files are read again, and what it then records goes to a file of its own."""
        self._read.clear()
        self._unread = None
        self._recorded.clear()
        self._pending = {}
        self._written = []
