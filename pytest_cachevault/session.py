"""One run of the vault: look a test up before it runs, record it after.

Holds the state of a run (environment, tracer, what fixtures and test modules
executed) and turns an item plus what it executed into a stored record, and a stored
record back into a verdict. The pytest hooks that call it live in :mod:`plugin`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from . import audit, collect, fingerprint, records, replay
from .config import VaultConfig
from .hashing import Hasher, digest_bytes
from .inputs import Dependencies, Group, ModuleState, empty_group, env_group, is_group
from .store import COLLECTIONS, Candidate, Store, StoreError, is_name
from .trace import Executed, Tracer

NEW = "new"
CHANGED = "changed"
FAILED_LAST_TIME = "failed last time"
BYPASS = "bypass"
UNCACHEABLE = "uncacheable"


@dataclasses.dataclass
class Verdict:
    """A lookup's answer: replayable reports, or why the test must run."""

    reports: list[pytest.TestReport] | None
    #: What the summary counts: "cached", or one of the reasons above.
    reason: str
    #: The ``--vault-explain`` line: ``new``, ``changed: src/x.py``, ``env: APP_MODE``...
    why: str = ""
    warnings: list = dataclasses.field(default_factory=list)
    #: The record's text the reports were rebuilt from (see :mod:`wire`).
    stored: str = ""


class VaultSession:
    def __init__(
        self,
        config: pytest.Config,
        vault: VaultConfig,
        store: Store,
        tracer: Tracer,
        hasher: Hasher,
        excluded_prefixes: tuple[str, ...],
        preloaded: set[str],
        previous_environment: object = None,
    ) -> None:
        self.config = config
        self.vault = vault
        self.store = store
        self.tracer = tracer
        self.hasher = hasher
        self.root: Path = config.rootpath
        self.deps = Dependencies(self.root, hasher, excluded_prefixes)
        self.preloaded = self.deps.relpaths(preloaded)
        self.writable = not vault.readonly
        self.problems: list[str] = []
        #: What each higher-scoped fixture did while being set up (ran, read, listed,
        #: started...), for every test using it: only the first user's window saw it.
        self.fixture_setups: dict[object, list[Executed]] = {}
        #: What each test module's collection ran (the files of functions only), read,
        #: listed and looked up in the environment (parametrize values, skip
        #: conditions...): an input of its tests.
        self.collected: dict[str, Executed] = {}
        #: Library functions (file, qualified name) that ran in a test that changed what
        #: library modules hold (see :meth:`ran`), which every later test may then see.
        #: Shared by every later record.
        self.state_functions: set[tuple[str, str]] = set()
        #: :meth:`Dependencies.module_state` after the last test that ran (None: unknown).
        self._module_state: ModuleState | None = None
        self._modules_seen = -1
        self._objects: dict[str, Group | None] = {}
        #: What :meth:`_changed` found of the own inputs of each collection record (by
        #: name), result file (its common inputs) and entry since code last ran.
        self._checked: dict[object, str | None] = {}
        self._checked_when = -1
        #: The result files of the test modules this run is in (or decided stand-ins for).
        self._modules: dict[str, records.ModuleResults] = {}
        self._conftests_of: dict[Path, tuple[str, ...]] = {}
        self._import_state: tuple[tuple, str | None] = ((), None)
        self.environment = fingerprint.environment(config, vault, hasher)
        self.environment_id = fingerprint.environment_digest(self.environment)
        self._environment_object: str | None = None
        #: How the environment differs from the last run in this checkout, if it does:
        #: then a test without a record here is explained by that, not as new.
        self.environment_change = fingerprint.describe_change(previous_environment, self.environment)

    # -- lookup -----------------------------------------------------------------------
    def _shared(self, name: object) -> Group | None:
        """The shared group called ``name`` (None if missing or malformed), read once."""
        if not is_name(name):
            return None
        if name not in self._objects:
            value = self.store.get_object(name)  # type: ignore[arg-type]
            self._objects[name] = value if is_group(value) else None  # type: ignore[index]
        return self._objects[name]  # type: ignore[index]

    def _remembered(self, what: object, check: Callable[[], str | None]) -> str | None:
        """``check()`` once for ``what`` while no code runs (files are not stat'ed again)."""
        if self.hasher.generation != self._checked_when:
            self._checked.clear()
            self._checked_when = self.hasher.generation
        if what not in self._checked:
            self._checked[what] = check()
        return self._checked[what]

    def _changed(self, what: object, own: object, shared: object) -> str | None:
        """The first of these inputs that differs now ("" if they are malformed): the own
        ones checked once for ``what`` while no code runs, the shared ones each time
        (:meth:`Dependencies.changed_shared` remembers them, and holds them against
        what collection loaded once it is over)."""
        changed = self._remembered(what, lambda: self.deps.changed(own) if is_group(own) else "")
        if changed is not None:
            return changed
        if not isinstance(shared, list):
            return ""
        for name in shared:
            group = self._shared(name)
            changed = "" if group is None else self.deps.changed_shared(name, group)
            if changed is not None:
                return changed
        return None

    def _entry_changed(self, candidate: Candidate, nodeid: str, entry: dict) -> str | None:
        """The first input of a stored test result that differs now: the file's common
        inputs (checked once per file), then the test's own."""
        payload = candidate.payload
        changed = self._changed(candidate.path, payload.get("common"), [])
        if changed is not None:
            return changed
        return self._changed((candidate.path, nodeid), entry.get("inputs"),
                             entry.get("shared", payload.get("shared")))

    def _module(self, nodeid: str) -> records.ModuleResults:
        module = fingerprint.module_of(nodeid)
        found = self._modules.get(module)
        if found is None:
            key = fingerprint.results_key(self.environment_id, nodeid)
            found = self._modules[module] = records.ModuleResults(self.store, key)
        return found

    def may_stand_in(self, nodeid: str) -> bool:
        """Whether a stand-in may take the test's place: it would be replayed now (its
        reports are not parsed yet), or it never ran (deselected so far: should it be
        selected now, its real module is collected when it is reached).

        The files read are kept for the test's lookup, which checks them again: a
        test that runs in between may change what they depend on."""
        module = self._module(nodeid)
        found = False
        for candidate, entry in module.entries(nodeid):
            if self._entry_changed(candidate, nodeid, entry) is None:
                return entry.get("outcome") == "passed"
            found = True
        return not found and module.key not in self.store.ignored

    def lookup(self, nodeid: str) -> Verdict:
        changes: list[str] = []
        module = self._module(nodeid)
        for candidate, entry in module.entries(nodeid):
            changed = self._entry_changed(candidate, nodeid, entry)
            if changed is not None:
                changes.append(changed)
                continue
            if entry.get("outcome") == "failed":
                return Verdict(None, FAILED_LAST_TIME, FAILED_LAST_TIME)
            if entry.get("outcome") == UNCACHEABLE:
                return Verdict(None, UNCACHEABLE, f"{UNCACHEABLE}: {entry.get('why', '')}")
            try:
                reports = replay.from_stored(self.config, entry.get("reports"), nodeid)
            except replay.BadRecord as exc:
                self.problems.append(f"unusable record for {nodeid}: {exc}")
                continue
            module.replayed(candidate)
            stored_warnings = entry.get("warnings")
            if not isinstance(stored_warnings, list):
                stored_warnings = []
            return Verdict(reports, replay.CACHED, warnings=stored_warnings, stored=entry["reports"])
        if not changes:
            if module.key in self.store.ignored:  # PYTEST_VAULT_KEY set, records not signed with it
                return Verdict(None, NEW, self.store.ignored[module.key])
            if self.environment_change:
                return Verdict(None, NEW, f"environment: {self.environment_change}")
            return Verdict(None, NEW, NEW)
        return Verdict(None, CHANGED, changes[0] or "changed: an unreadable record")

    def stored_collection(self, relpath: str) -> list | None:
        """The tests of a test module as its unchanged collection record lists them, if any."""
        key = collect.collection_key(self.environment_id, relpath)
        for candidate in self.store.candidates(key, COLLECTIONS):
            payload = candidate.payload
            changed = self._changed(candidate.name or candidate.path, payload.get("inputs"),
                                    payload.get("shared"))
            if changed is None:
                return collect.valid_items(payload)
        return None

    # -- recording --------------------------------------------------------------------
    def _uncacheable(self, executed: Executed) -> str:
        """Why a test that ran cannot be stored ("" if it can); see ini ``vault_allow``."""
        if executed.spawned == audit.BROKEN:
            return "the plugin failed to observe what it did"
        if executed.spawned and "subprocess" not in self.vault.allow:
            return f"spawned a subprocess ({executed.spawned})"
        if executed.network and "network" not in self.vault.allow:
            return f"connected to {executed.network}"
        return ""

    def _helpers(self, item: pytest.Item) -> list[Executed]:
        """What was done for ``item`` outside its own window: its module's collection
        (parametrize values, skip conditions...) and its higher-scoped fixtures' setups."""
        found = []
        module = self.deps.relpath(str(item.path))
        collected = self.collected.get(module) if module else None
        if collected is not None:
            found.append(collected)
        fixtureinfo = getattr(item, "_fixtureinfo", None)
        for fixturedefs in getattr(fixtureinfo, "name2fixturedefs", {}).values():
            for fixturedef in fixturedefs:
                found.extend(self.fixture_setups.get(fixturedef, ()))
        return found

    def _inputs(self, path: Path, executed: Executed) -> Group | None:
        """The own inputs of the tests of the module at ``path`` that did ``executed``;
        None if that module is not under the rootdir."""
        module = self.deps.relpath(str(path))
        if module is None:
            return None
        files = self.deps.relpaths(executed.files | executed.read)
        files.add(module)
        if executed.untraced and "subprocess" in self.vault.allow:
            files |= self.deps.all_sources()  # an unseen process may have run any of them
        group = empty_group()
        group["file"] = self.deps.files(files)
        if executed.listed:
            group["listing"] = self.deps.listings(executed.listed)
        if executed.env:
            group["env"] = env_group(executed.env)
        for conftest in self._conftests(path.parent):
            group["file"].setdefault(conftest, self.hasher.digest(conftest, "file"))
        return group

    def _conftests(self, directory: Path) -> tuple[str, ...]:
        """The ``conftest.py`` paths from ``directory`` up to the rootdir, whether the
        files exist or not (an absent one must stay absent); worked out once per directory."""
        found = self._conftests_of.get(directory)
        if found is None:
            paths = []
            for above in (directory, *directory.parents):
                if above.is_relative_to(self.root):
                    paths.append((above / "conftest.py").relative_to(self.root).as_posix())
                if above == self.root:
                    break
            found = self._conftests_of[directory] = tuple(paths)
        return found

    def _import_state_name(self) -> str:
        blind = self.tracer.blind_spots()
        signature = (
            self.tracer.outside_size(),
            len(self.state_functions),
            self.deps.loaded_library(),
            self.deps.external(),  # a test may import code from outside the rootdir
            self.deps.filled_caches(),
            blind,
        )
        if self._import_state[0] != signature or self._import_state[1] is None:
            outside = self.tracer.outside()
            whole = self.preloaded | self.deps.relpaths(blind)
            group = self.deps.import_state(outside, whole, self.state_functions)
            self._import_state = (signature, self.store.put_object(group))
        return self._import_state[1]  # type: ignore[return-value]

    def ran(self, executed: Executed) -> None:
        """A test ran: if what library modules hold changed since it started (see
        :meth:`Dependencies.module_state`), the library functions it ran count for every
        later test. A library module it imported is such a change: the import may have
        computed module state (``TABLE = build()``). Replayed tests run nothing, and
        code outside tests is import state already."""
        state = self.deps.module_state()
        before = self._module_state
        if state is None or state != before:
            self.state_functions |= self.deps.library_functions(executed.functions)
            if state is None or before is None or state.bound != before.bound:
                self.deps.forget_module_state()  # a global may hold a container not watched yet
                state = None
        self._start_from(state)

    def starting(self) -> None:
        """A test is about to run. Modules imported since the last test that ran (a
        stand-in's module imported outside any test, to run it) are not its doing:
        what they hold is where the comparison of :meth:`ran` starts."""
        if len(sys.modules) != self._modules_seen:
            self._start_from(None)

    def code_ran(self, executed: Executed) -> None:
        """A test ran ``executed``: stat again the files it may have changed, and the
        sources of modules it imported (see :meth:`Hasher.code_ran`). A process it
        started ran sources as they are now: then every file is stat'ed again."""
        self.hasher.code_ran(None if executed.spawned else self.deps.relpaths(executed.imported))

    def collection_finished(self) -> None:
        self.deps.collection_finished()
        self._start_from(None)

    def _start_from(self, state: ModuleState | None) -> None:
        """The next comparison of :meth:`ran` starts from ``state`` (None: read it now)."""
        self._module_state = state if state is not None else self.deps.module_state()
        self._modules_seen = len(sys.modules)

    def record(
        self,
        item: pytest.Item,
        reports: list[pytest.TestReport],
        caught: list[warnings.WarningMessage],
        executed: Executed,
    ) -> None:
        """Store what a live test did, if it completed and can be fingerprinted."""
        if not self.writable or not reports or reports[-1].when != "teardown":
            return
        executed = _combined(executed, self._helpers(item))
        own = self._inputs(item.path, executed)
        if own is None:
            return
        why = self._uncacheable(executed)
        if why:
            outcome = UNCACHEABLE
        elif any(report.failed for report in reports):
            outcome = "failed"
        else:
            outcome = "passed"
        try:
            entry = {
                "outcome": outcome,
                "reports": "[]" if outcome != "passed" else replay.to_stored(self.config, reports),
                "inputs": own,
                "shared": [self._import_state_name()],
            }
            if why:
                entry["why"] = why
            if caught:
                entry["warnings"] = [replay.warning_to_stored(self.config, w) for w in caught]
            module = self._module(item.nodeid)
            if module.record(item.nodeid, entry):
                self._write(module, partial=True)
        except StoreError as exc:
            self._unwritable(exc)

    def leaving(self, nodeid: str, next_nodeid: str | None) -> None:
        """The run is done with ``nodeid``: if ``next_nodeid`` is in another test
        module, write what it recorded of this one, and forget what it read."""
        module = fingerprint.module_of(nodeid)
        if next_nodeid is not None and fingerprint.module_of(next_nodeid) == module:
            return
        found = self._modules.get(module)
        if found is not None:
            self._write(found)
            found.release()

    def finish(self) -> None:
        """Write what the run recorded of the modules it has not left yet."""
        for module in self._modules.values():
            self._write(module)

    def _write(self, module: records.ModuleResults, partial: bool = False) -> None:
        if not self.writable:
            return
        try:
            module.write(self._environment_name(), partial=partial)
        except StoreError as exc:
            self._unwritable(exc)

    def _environment_name(self) -> str:
        """The environment, stored once per run as an object (for ``--vault-explain``
        and for a reader of the store; the key already depends on it)."""
        if self._environment_object is None:
            self._environment_object = self.store.put_object(self.environment)
        return self._environment_object

    def _unwritable(self, exc: StoreError) -> None:
        self.writable = False
        self.problems.append(f"{exc}; results of this run are not stored")

    def record_collection(self, module: pytest.Collector,
                          items: list[tuple[pytest.Item, collect.Shape]]) -> None:
        """Store what a test module held, so that an unchanged one need not be imported.

        A record already stored under the same inputs holds the same tests: it is kept."""
        relpath = self.deps.relpath(str(module.path))
        collected = self.collected.get(relpath) if relpath else None
        if not self.writable or collected is None or self._uncacheable(collected):
            return
        own = self._inputs(module.path, collected)
        if own is None:
            return
        key = collect.collection_key(self.environment_id, relpath)  # type: ignore[arg-type]
        try:
            shared = [self._import_state_name()]
            name = digest_bytes(json.dumps([own, shared], sort_keys=True).encode())
            if self.store.keep_record(key, name, COLLECTIONS):
                return
            stored = collect.stored_items(module, items)
            if stored is not None:
                record = {**stored, "nodeid": module.nodeid, "inputs": own, "shared": shared,
                          "env": self._environment_name(), "created": int(time.time())}
                self.store.put_record(key, name, record, COLLECTIONS)
        except StoreError as exc:
            self._unwritable(exc)


def _combined(executed: Executed, helpers: list[Executed]) -> Executed:
    """What a test did plus what ``helpers`` did for it; a file a helper wrote is its
    output, not an input of the test."""
    if not helpers:
        return executed
    written = frozenset().union(*(helper.written for helper in helpers))
    env = dict(executed.env)
    for helper in helpers:
        for name, value in helper.env.items():
            env.setdefault(name, value)
    return executed._replace(
        files=executed.files.union(*(helper.files for helper in helpers)),
        read=executed.read.union(*(helper.read for helper in helpers)) - written,
        listed=executed.listed.union(*(helper.listed for helper in helpers)),
        env=env,
        spawned=executed.spawned or next((h.spawned for h in helpers if h.spawned), None),
        network=executed.network or next((h.network for h in helpers if h.network), None),
        untraced=executed.untraced or next((h.untraced for h in helpers if h.untraced), None),
    )
