"""What a test's outcome depends on, as digests of files under the rootdir.

An *input group* is ``{"file": {relpath: digest}, "code": {relpath: digest}}``: whole
file contents, and import-time code (see :mod:`hashing`); a ``None`` digest means the
file must not exist. Optional parts: ``listing`` (directories listed, by their entry
names), ``env`` (environment variables read: name -> digest of the value, ``None`` for
unset) and ``external`` (see :meth:`Dependencies.external`). A test's inputs are

* its own group: the files it executed in setup, call and teardown, what its
  higher-scoped fixtures executed when they were set up, its module and conftests;
* one shared *import state*: the ``code`` digest of every library module loaded
  (library: in-tree, and neither a test module nor a conftest); for the library files
  whose functions ran at import or collection time, that digest keeping the bodies of
  those functions (part ``ran``, keyed ``relpath::qualname,qualname``); and the whole
  content of the library files read then, or that hold a memoized function whose cache
  is filled (a cache hit runs no code of its own, so the test that profits from it
  would not have traced the file).

The import state is the same for most tests, so it is stored once as an object and
verified once per run. Files outside the rootdir belong to the interpreter and the
installed distributions, which the environment fingerprint covers, except modules
loaded from elsewhere (part ``external``, see :meth:`Dependencies.external`).
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import sysconfig
import types
import weakref
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from typing import NamedTuple

from . import audit
from .hashing import Hasher, digest_bytes
from .identity import identities
from .trace import Executed

Group = dict[str, dict[str, "str | None"]]


def empty_group() -> Group:
    return {"file": {}, "code": {}}


_PARTS = {"file", "code", "ran", "listing", "env", "external"}
#: Joins a path and the functions that ran in it, in the keys of a group's ``ran`` part.
RAN_SEPARATOR = "::"


def input_path(kind: str, name: str) -> str:
    """The path an input of ``kind`` is about (a ``ran`` input is ``path::functions``)."""
    return name.rpartition(RAN_SEPARATOR)[0] if kind == "ran" else name


def is_group(value: object) -> bool:
    """Shape check for groups read back from the (untrusted) store (plain loops: it
    runs for every record a warm run reads)."""
    if type(value) is not dict or not ({"file", "code"} <= value.keys() <= _PARTS):
        return False
    for part in value.values():
        if type(part) is not dict:
            return False
        for name, digest in part.items():
            if type(name) is not str or (digest is not None and type(digest) is not str):
                return False
    return True


def is_safe_relpath(relpath: str) -> bool:
    """Relative, POSIX, no ``..``: a path read from the store stays under the rootdir.

    Also no NUL (``os.stat`` would raise), no backslash and no drive (``C:``), which
    Windows would read as a way out."""
    parts = relpath.split("/")
    return (
        bool(relpath)
        and not relpath.startswith("/")
        and ".." not in parts
        and "\\" not in relpath
        and "\0" not in relpath
        and not (relpath[1:2] == ":" and relpath[:1].isalpha())
    )


def _install_prefixes() -> tuple[str, ...]:
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, *sysconfig.get_paths().values()}
    return tuple(sorted({os.path.join(os.path.realpath(p), "") for p in paths if p}))


def warning_source(filename: str, root: str) -> str:
    """The file name under which a replayed warning is issued again.

    pytest's warning summary prints the line ``lineno`` of that file (``linecache``),
    so a stored name could make a run print a line of any file it can read. A Python
    source under the rootdir or in an install location is kept; anything else becomes
    ``<name>``, which shows where it came from and which nothing reads."""
    path = os.path.realpath(filename) if os.path.isabs(filename) else ""
    if path.endswith((".py", ".pyw")) and (
        path.startswith(os.path.join(os.path.realpath(root), "")) or path.startswith(_install_prefixes())
    ):
        return filename
    return f"<{os.path.basename(filename)}>"


class Dependencies:
    """Maps traced file names to rootdir-relative inputs, and checks inputs against the tree."""

    def __init__(self, root: Path, hasher: Hasher, excluded_prefixes: tuple[str, ...]) -> None:
        self.root = root
        self.hasher = hasher
        hasher.unlisted = frozenset(excluded_prefixes)  # the store, .pytest_cache...
        self._root_prefix = str(root) + os.sep
        self._excluded = excluded_prefixes
        self._relpaths: dict[str, str | None] = {}
        #: Relative paths of the test modules pytest collected (not library code).
        self.test_modules: set[str] = set()
        self._loaded: tuple[tuple[int, int], frozenset[str]] = ((-1, -1), frozenset())
        #: Library modules loaded once collection is over (None before); see
        #: :meth:`changed_shared`.
        self.baseline: frozenset[str] | None = None
        self._memoized: tuple[int, list] = (-1, [])
        self._holders: tuple[int, tuple[list, list]] = (-1, ([], []))
        self._holders_by_module: dict[str, tuple] = {}
        self._external: tuple[int, dict[str, str]] = (-1, {})
        #: Path -> (digest of the path, of the content) of each module file read there.
        self._external_files: dict[str, tuple[str, str]] = {}
        self.external_baseline: dict[str, str] = {}
        self._verified: dict[str, str | None] = {}
        #: Shared group name -> (what was loaded, verdict) of :meth:`_changed_loaded`.
        self._verified_loaded: dict[str, tuple[tuple[int, int], str | None]] = {}

    # -- names ----------------------------------------------------------------------
    def relpath(self, filename: str) -> str | None:
        """The input name of a traced file, or None if it is not an in-tree source file."""
        try:
            return self._relpaths[filename]
        except KeyError:
            pass
        relpath = None
        normalized = os.path.normpath(filename)
        if (
            normalized.startswith(self._root_prefix)
            and not normalized.startswith(self._excluded)
            and "__pycache__" not in normalized
            and os.path.isfile(normalized)
        ):
            relpath = normalized[len(self._root_prefix) :].replace(os.sep, "/")
        self._relpaths[filename] = relpath
        return relpath

    def relpaths(self, filenames: Iterable[str]) -> set[str]:
        return {r for r in map(self.relpath, filenames) if r is not None}

    def listings(self, directories: Iterable[str]) -> dict[str, str | None]:
        """Digests of the in-tree directories among ``directories`` (the root is ``.``)."""
        found = {}
        for directory in directories:
            normalized = os.path.normpath(directory)
            if normalized == str(self.root):
                relpath = "."
            elif normalized.startswith(self._root_prefix) and not normalized.startswith(self._excluded):
                relpath = normalized[len(self._root_prefix) :].replace(os.sep, "/")
            else:
                continue
            if "__pycache__" not in relpath and os.path.isdir(normalized):
                found[relpath] = self.hasher.digest(relpath, "listing")
        return dict(sorted(found.items()))

    def all_sources(self) -> set[str]:
        """Every in-tree Python source: the inputs of a child process nobody traced."""
        found = set()
        for directory, subdirs, files in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if d != "__pycache__" and not d.startswith(".")]
            found |= self.relpaths(os.path.join(directory, f) for f in files if f.endswith(".py"))
        return found

    def is_library(self, relpath: str) -> bool:
        return relpath not in self.test_modules and not relpath.endswith("conftest.py")

    def library_functions(self, functions: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``functions`` (file, qualified name) defined in in-tree library modules."""
        return {f for f in functions if (r := self.relpath(f[0])) is not None and self.is_library(r)}

    # -- building groups ------------------------------------------------------------
    def files(self, relpaths: Iterable[str]) -> dict[str, str | None]:
        return {r: self.hasher.digest(r, "file") for r in sorted(relpaths)}

    def loaded_library(self) -> frozenset[str]:
        """Library modules in ``sys.modules`` now (recomputed only when it grew, or
        collection found another test module: one may be loaded before it is collected)."""
        count = (len(sys.modules), len(self.test_modules))
        if self._loaded[0] != count:
            found = set()
            for module in list(sys.modules.values()):
                filename = getattr(module, "__file__", None)
                if isinstance(filename, str):
                    relpath = self.relpath(filename)
                    if relpath is not None and relpath.endswith(".py") and self.is_library(relpath):
                        found.add(relpath)
            self._loaded = (count, frozenset(found))
        return self._loaded[1]

    def import_state(self, outside: Executed, preloaded: Iterable[str],
                     late: Iterable[tuple[str, str]] = ()) -> Group:
        """The shared inputs of every test run now (see the module docstring); ``late``
        are functions that ran in tests that changed what library modules hold."""
        whole = self.relpaths(outside.read) | set(preloaded) | self.filled_caches()
        whole = {r for r in whole if self.is_library(r)}
        ran: dict[str, set[str]] = {}
        for filename, qualname in (*outside.functions, *late):
            relpath = self.relpath(filename)
            if relpath is not None and relpath not in whole and self.is_library(relpath):
                ran.setdefault(relpath, set()).add(qualname)
        ran_part = {}
        for relpath, qualnames in sorted(ran.items()):
            functions = ",".join(sorted(qualnames))
            ran_part[f"{relpath}{RAN_SEPARATOR}{functions}"] = self.hasher.digest_ran(relpath, functions)
        loaded = self.loaded_library()
        return {
            "file": self.files(whole),
            "code": {r: self.hasher.digest(r, "code") for r in sorted(loaded)},
            "ran": ran_part,
            "external": dict(self.external()),
            "listing": self.listings(outside.listed),
            "env": env_group(outside.env),
        }

    def external(self) -> dict[str, str]:
        """Modules loaded from outside both the rootdir and the install locations.

        Code on ``PYTHONPATH``, an ini ``pythonpath`` or another project installed in
        editable mode: neither the tree nor the environment fingerprint covers it, so
        its whole content counts. Keyed by a digest of the path, so that the store holds
        no absolute path and is never told what to read. Each file is read once per
        run, as a source's digest holds until its module is imported again (see
        :meth:`Hasher.code_ran`): what runs is what was loaded.
        """
        count = len(sys.modules)
        if self._external[0] != count:
            found = {}
            for module in list(sys.modules.values()):
                filename = getattr(module, "__file__", None)
                if not isinstance(filename, str):
                    continue
                path = os.path.normpath(os.path.abspath(filename))
                if path.startswith(self._root_prefix) or path.startswith(self._excluded):
                    continue
                digests = self._external_files.get(path)
                if digests is None:
                    try:
                        with open(path, "rb") as f:
                            digests = (digest_bytes(path.encode()), digest_bytes(f.read()))
                    except OSError:
                        continue
                    self._external_files[path] = digests
                found[digests[0]] = digests[1]
            self._external = (count, dict(sorted(found.items())))
        return self._external[1]

    def filled_caches(self) -> frozenset[str]:
        """Files of in-tree ``functools`` caches (module level and class level) now filled."""
        count = len(sys.modules)
        if self._memoized[0] != count:
            self._memoized = (count, list(self._find_caches()))
        return frozenset(relpath for relpath, cached in self._memoized[1] if _cache_filled(cached))

    def _find_caches(self):
        for module in list(sys.modules.values()):
            filename = getattr(module, "__file__", None)
            if not isinstance(filename, str) or self.relpath(filename) is None:
                continue
            for value in list(vars(module).values()):
                members = list(vars(value).values()) if isinstance(value, type) else [value]
                for member in members:
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if type(member) is _LRU_CACHE_WRAPPER:
                        code = getattr(member.__wrapped__, "__code__", None)
                        relpath = code and self.relpath(code.co_filename)
                        if relpath:
                            yield relpath, member

    def module_state(self) -> ModuleState | None:
        """A fingerprint of the mutable state library modules hold: what each of their
        globals is bound to, and the builtin containers among their globals, among
        their classes' attributes, among the attributes of module-level objects and in
        the closures of module-level functions: their sizes, and their items by
        identity (up to :data:`_SMALL` of them; above, the last one).

        A test that changes it may have left something a later test uses without
        running the code that made it: a cache filled (``tz.gettz("GMT+2")`` keeps the
        zone it loaded), a registry extended, ``global _default; _default = load()``.
        That later test would not trace the code, so the session makes what the
        earlier test ran every later test's input. Only builtin containers are looked
        into (``len`` and iteration of other types may run their own code), one level
        deep; the containers are found again when modules are added, or after a change
        (a global bound to a new container).
        """
        count = len(sys.modules)
        if self._holders[0] != count:
            known = self._holders_by_module
            modules = dict(sys.modules)
            for name in known.keys() - modules.keys():
                del known[name]
            for name in modules.keys() - known.keys():  # tests import modules (tzdata's zones...)
                known[name] = (modules[name], self._holders_of(name, modules[name]))
            for name, (module, _) in list(known.items()):
                if modules[name] is not module:  # imported again
                    known[name] = (modules[name], self._holders_of(name, modules[name]))
            namespaces, containers = [], {}
            for module, held in known.values():
                if held is not None:
                    namespaces.append(vars(module))
                    for container in held:  # once, though several modules hold it
                        container = container.data if type(container) in _WEAK else container
                        containers.setdefault(object.__hash__(container), container)  # id() is audited
            self._holders = (count, (namespaces, list(containers.values())))
        namespaces, containers = self._holders[1]
        try:
            # One pass each, in C where it can be: this runs after every test that runs.
            bound = identities(list(chain.from_iterable(map(dict.values, namespaces))))
            sizes = tuple(map(len, containers))
            small = [c for c, size in zip(containers, sizes) if 0 < size <= _SMALL]
            items = chain(
                chain.from_iterable(small),  # the keys of a mapping
                chain.from_iterable(c.values() for c in small if isinstance(c, dict)),
                (_last(c) for c, size in zip(containers, sizes) if size > _SMALL and not isinstance(c, set)),
            )
            held = identities(list(items))
        except RuntimeError:  # changed while read (another thread): unknown
            return None
        return ModuleState(bound, sizes, held)

    def forget_module_state(self) -> None:
        """Look for the containers again at the next :meth:`module_state`."""
        self._holders = (-1, ([], []))
        self._holders_by_module = {}

    def _holders_of(self, name: str, module: object) -> list | None:
        """The builtin containers a library module holds (see :meth:`module_state`);
        None for any other module."""
        filename = getattr(module, "__file__", None)
        relpath = self.relpath(filename) if isinstance(filename, str) else None
        if relpath is None or not self.is_library(relpath):
            return None
        found = []
        try:
            namespace = vars(module)
            for key, value in list(namespace.items()):
                if key[:2] == "__":  # the interpreter's (``__warningregistry__``, ``__dict__``...)
                    continue
                if type(value) in _CONTAINERS:
                    found.append(value)
                    continue
                if isinstance(value, type):
                    if type.__getattribute__(value, "__module__") != name:
                        continue
                    attributes = dict(vars(value))
                elif isinstance(value, types.FunctionType):  # a cache in a closure
                    cells = value.__closure__ or ()
                    attributes = {i: c.cell_contents for i, c in enumerate(cells) if _filled(c)}
                elif isinstance(value, (types.ModuleType, types.BuiltinFunctionType)):
                    continue
                else:
                    try:
                        attributes = object.__getattribute__(value, "__dict__")
                    except Exception:  # no __dict__ (slots, builtins)
                        continue
                    if type(attributes) is not dict:
                        continue
                    found.append(attributes)
                found += [v for v in list(attributes.values()) if type(v) in _CONTAINERS]
        except Exception:  # an odd module: what was found so far is watched
            pass
        return found

    # -- checking groups ------------------------------------------------------------
    def current(self, kind: str, name: str) -> str | None:
        """The digest ``name`` (a path; for ``ran``, ``path::functions``) has now."""
        if kind == "ran":
            relpath, _, functions = name.rpartition(RAN_SEPARATOR)
            return self.hasher.digest_ran(relpath, functions)
        return self.hasher.digest(name, kind)  # type: ignore[arg-type]

    def changed(self, group: Group) -> str | None:
        """What in ``group`` differs now (``changed: path``, ``env: NAME``), or None."""
        for kind in ("file", "code", "ran", "listing"):
            for name, digest in group.get(kind, {}).items():
                relpath = input_path(kind, name)
                if not (is_safe_relpath(relpath) or relpath == "."):
                    return f"changed: {relpath} (not a path under the rootdir)"
                if self.current(kind, name) != digest:
                    return f"changed: {relpath}" + ("/ (its entries)" if kind == "listing" else "")
        for name, digest in group.get("env", {}).items():
            if env_digest(name) != digest:
                return "env: " + ("(every variable)" if name == audit.WHOLE_ENVIRONMENT else name)
        return None

    def changed_shared(self, name: str, group: Group) -> str | None:
        """:meth:`changed` for a shared group, remembered for the rest of the run, and
        :meth:`_changed_loaded`, remembered while no module is loaded or collected."""
        if name not in self._verified:
            self._verified[name] = self.changed(group)
        if self._verified[name] is not None:
            return self._verified[name]
        loaded = (len(sys.modules), len(self.test_modules))
        remembered = self._verified_loaded.get(name)
        if remembered is None or remembered[0] != loaded:
            remembered = self._verified_loaded[name] = (loaded, self._changed_loaded(group))
        return remembered[1]

    def _changed_loaded(self, group: Group) -> str | None:
        """What the modules loaded now say of a shared group.

        It fails when a library module is loaded that was not when it was recorded
        (one that was not there then may have changed shared state at import), and
        the same for code outside the rootdir. Once collection is over
        (:meth:`collection_finished`) against what collection loaded, before that
        against what is loaded so far: collection only adds to it, so a test module
        whose tests would not replay is not stood in for.

        Code outside the rootdir is known only by what is loaded (see :meth:`external`):
        a module it recorded that is not loaded now (a test module stood in for would
        import it, or a test imports it in its body) cannot be compared, so the group
        fails until it is.
        """
        collected = self.baseline is not None
        loaded = self.baseline if collected else self.loaded_library()
        missing = loaded - group["code"].keys()  # type: ignore[operator]
        if missing:
            return f"changed: {min(missing)} (now loaded)"
        recorded = group.get("external", {})
        current = self.external()
        if any(key not in recorded for key in (self.external_baseline if collected else current)):
            return "changed: code outside the rootdir"
        for key, digest in recorded.items():
            if key not in current:
                return "changed: code outside the rootdir (not loaded yet)"
            if current[key] != digest:
                return "changed: code outside the rootdir"
        return None

    def collection_finished(self) -> None:
        """Fix what collection loaded: shared groups are held against it from now on."""
        self.baseline = self.loaded_library()
        self.external_baseline = self.external()
        self._verified_loaded = {}


_LRU_CACHE_WRAPPER = type(functools.lru_cache(lambda: None))
#: Containers whose size and items can be read without running their own code.
_CONTAINERS = frozenset({
    dict, list, set, collections.OrderedDict, collections.defaultdict, collections.deque,
    weakref.WeakValueDictionary, weakref.WeakKeyDictionary, weakref.WeakSet,
})
#: Up to this many items a container's fingerprint names every key and value; above,
#: its size and last item (a bounded cache evicts as it adds: its size stays put).
_SMALL = 64
#: Weak containers: their items are in their ``data``.
_WEAK = (weakref.WeakValueDictionary, weakref.WeakKeyDictionary, weakref.WeakSet)


def _last(container):
    """The last key of a mapping, or item of a sequence: a bounded cache evicts as it
    adds, so its size stays put."""
    return next(reversed(container)) if isinstance(container, dict) else container[-1]


class ModuleState(NamedTuple):
    """What :meth:`Dependencies.module_state` saw: the objects bound to the globals of
    library modules (dunder names included: a module's first warning adds
    ``__warningregistry__``), and the sizes and items of the containers it watches (as
    :func:`identity.identities` gives them: no reference is kept, so nothing is kept
    alive)."""

    bound: bytes | tuple[int, ...]
    sizes: tuple[int, ...]
    held: bytes | tuple[int, ...]


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # empty
        return False
    return True


def _cache_filled(cached) -> bool:
    return cached.cache_info().currsize > 0


def env_digest(name: str, value: str | None = None, *, current: bool = True) -> str | None:
    """Digest of a variable's value (values may be secrets: the store keeps digests).

    With ``current`` the value is read now; else ``value`` is the one a test saw."""
    if current:
        value = audit.whole_environment() if name == audit.WHOLE_ENVIRONMENT else audit.get_env(name)
    return None if value is None else digest_bytes(value.encode("utf-8", "surrogateescape"))


def env_group(seen: dict[str, str | None]) -> dict[str, str | None]:
    """The ``env`` part of a group from what a window saw."""
    return {name: env_digest(name, value, current=False) for name, value in sorted(seen.items())}
