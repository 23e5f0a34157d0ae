"""Which source files ran: per test, per fixture, and outside tests (imports, collection).

Two backends behind one interface (:class:`Tracer`):

* :class:`MonitoringTracer` (Python 3.12+): ``sys.monitoring`` ``PY_START``/``PY_RESUME``
  events that return ``DISABLE``, so each code object reports once and then runs at full
  speed; a new window re-arms the in-tree code objects that reported in the last one.
* :class:`MarkingTracer` (older Pythons): an import hook that compiles in-tree modules
  with a mark at the top of each function body, harvested at each window boundary.

Windows nest (a higher-scoped fixture set up inside a test): what ran in an inner window
also counts for the windows around it. The outermost window is "outside any test":
module imports and collection.

Each window reports, besides every file in which code ran, the files in which *function*
code ran, and which functions (by qualified name). Module bodies and class bodies are
import-time code, which the ``code`` digest of :mod:`hashing` already covers for everyone
who imports the module; a function body that ran at import time (``LIMIT = compute()``)
is not, so importers must also depend on the bodies of the functions that ran then.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
from pathlib import Path
from types import CodeType
from typing import NamedTuple, Protocol

from . import child, marked_code
from .audit import Observer, set_quietly
from .hashing import Scopes


class TracerUnavailable(Exception):
    """No tracer can run in this process (another tool holds the hook)."""


class Executed(NamedTuple):
    """What one window did: absolute names of files in which code ran, files it opened
    for reading, and the first way it started another process (None if it did not);
    see :mod:`audit` for the fields past ``imported``."""

    files: frozenset[str]
    read: frozenset[str] = frozenset()
    spawned: str | None = None
    #: Files whose module body ran: modules imported during the window.
    imported: frozenset[str] = frozenset()
    #: Files opened for writing. A file read after its window wrote it is output, not
    #: input, and is not in :attr:`read`.
    written: frozenset[str] = frozenset()
    #: Environment variables read before the window set them: name -> value (None: unset).
    env: dict[str, str | None] = {}
    #: Directories listed.
    listed: frozenset[str] = frozenset()
    #: The first non-loopback address connected to (None if none).
    network: str | None = None
    #: (file, qualified name) of the functions that ran.
    functions: frozenset[tuple[str, str]] = frozenset()
    #: Why the processes it started were not all traced (None if they were, or it
    #: started none): then it depends on every in-tree source (see :mod:`child`).
    untraced: str | None = None

    @property
    def function_files(self) -> frozenset[str]:
        """The files in which function code (not module or class bodies) ran."""
        return frozenset(filename for filename, _ in self.functions)


class Tracer(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def push(self) -> None:
        """Open a window; until the matching :meth:`pop` execution is attributed to it."""

    def pop(self, merge: bool = True) -> Executed:
        """Close the innermost window and return what ran in it.

        With ``merge`` what ran also counts for the enclosing window: a fixture inside
        a test, a module's collection inside the session. A test's window is not merged:
        what a test runs is its own, not every later test's.
        """

    def outside(self) -> Executed:
        """What ran outside every window so far (imports, collection)."""

    def outside_size(self) -> tuple[int, ...]:
        """The sizes of what :meth:`outside` would return: cheap, to see whether it grew."""

    def blind_spots(self) -> frozenset[str]:
        """In-tree modules loaded now whose execution this tracer cannot see."""

    def trace_children(self, children: child.Children | None) -> None:
        """Have Python processes started in a window report what they ran (or stop)."""


def make_tracer(root: Path, excluded_prefixes: tuple[str, ...]) -> Tracer:
    if sys.version_info >= (3, 12):
        return MonitoringTracer(root)
    return MarkingTracer(root, excluded_prefixes)


class _Window:
    __slots__ = ("files", "read", "spawned", "imported", "written",
                 "env", "env_written", "listed", "network", "untraced", "children", "prefix", "popen", "functions")

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.functions: set[tuple[str, str]] = set()
        self.read: set[str] = set()
        self.spawned: str | None = None
        self.imported: set[str] = set()
        self.written: set[str] = set()
        self.env: dict[str, str | None] = {}
        self.env_written: set[str] = set()
        self.listed: set[str] = set()
        self.network: str | None = None
        self.untraced: str | None = None
        #: Python children expected to report under ``prefix`` (see :mod:`child`).
        self.children = 0
        self.prefix = ""
        self.popen: object = None

    def merge(self, other: _Window) -> None:
        self.files |= other.files
        self.read |= other.read
        self.imported |= other.imported
        self.written |= other.written
        self.listed |= other.listed
        for name, value in other.env.items():
            if name not in self.env_written:
                self.env.setdefault(name, value)
        self.env_written |= other.env_written
        self.spawned = self.spawned or other.spawned
        self.network = self.network or other.network
        self.untraced = self.untraced or other.untraced
        self.functions |= other.functions

    def freeze(self) -> Executed:
        return Executed(
            frozenset(self.files),
            frozenset(self.read),
            self.spawned,
            frozenset(self.imported),
            frozenset(self.written),
            dict(self.env),
            frozenset(self.listed),
            self.network,
            frozenset(self.functions),
            self.untraced,
        )


class _Windows:
    """The stack of windows both backends keep; a backend fills the innermost one with
    the code that ran, an :class:`~pytest_cachevault.audit.Observer` with what that code
    read, wrote, listed, started and connected to."""

    def __init__(self, root: Path) -> None:
        self._stack: list[_Window] = [_Window()]
        #: In-tree files start with this (absolute, ending in a separator).
        self._root_prefix = os.path.join(str(root), "")
        self._observer = Observer(lambda: self._stack[-1], root, outside=self._stack[0])
        self._children: child.Children | None = None

    def trace_children(self, children: child.Children | None) -> None:
        """From the next window on, have Python children report what they ran
        (``vault_allow = subprocess``); None stops it."""
        if children is None and self._children is not None:
            set_quietly(child.VARIABLE, None)
            self._children.close()
        self._children = children

    def _harvest(self) -> None:
        """Move what the backend gathered since the last call into the innermost window."""

    def start_auditing(self) -> None:
        self._observer.start()

    def stop_auditing(self) -> None:
        self._observer.stop()

    def push(self) -> None:
        self._harvest()
        window = _Window()
        if self._children is not None:
            window.prefix = self._children.prefix()
            set_quietly(child.VARIABLE, window.prefix)
        self._stack.append(window)

    def pop(self, merge: bool = True) -> Executed:
        self._harvest()
        window = self._stack.pop()
        if window.prefix and self._children is not None:
            set_quietly(child.VARIABLE, self._stack[-1].prefix or None)
            if window.spawned:
                self._take_children(window, self._children.harvest(window.prefix, window.children))
        elif window.spawned:
            window.untraced = window.untraced or "child processes are not followed in this run"
        if merge:
            self._stack[-1].merge(window)
        return window.freeze()

    @staticmethod
    def _take_children(window: _Window, run: child.ChildRun) -> None:
        window.files |= run.files  # a child's files count whole, like a file it imported
        window.read |= run.read - window.written
        window.listed |= run.listed
        window.network = window.network or run.network
        window.untraced = window.untraced or run.untraced

    def outside(self) -> Executed:
        if len(self._stack) == 1:
            self._harvest()
        return self._stack[0].freeze()

    def outside_size(self) -> tuple[int, ...]:
        """How much :meth:`outside` holds, without copying it (it is asked per test)."""
        if len(self._stack) == 1:
            self._harvest()
        root = self._stack[0]
        return len(root.functions), len(root.read), len(root.listed), len(root.env)


class MonitoringTracer(_Windows):
    """Python 3.12+: ``sys.monitoring`` events that disable themselves once reported.

    Two tools. The first sees every code object once, the first time it runs, and for
    good: code outside the rootdir (pytest, the standard library, installed packages) is
    not an input of any test, so it is not watched again. For code under the rootdir it
    switches on the second tool's local events, which report once per window and are
    re-armed at the next window, for those code objects only. ``restart_events()``, which
    re-arms every code object in the process, cost about half of a cold run's overhead
    when called for every test. It is what is done with one free tool id, or once a code
    object could not be watched.
    """

    _TOOL_IDS = (4, 3, 5)

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._tools: tuple[int, ...] = ()
        #: In-tree code objects the second tool watches (by address: ``id()`` raises an
        #: audit event, and the callbacks run once per code object per window), and
        #: those that reported, so disabled themselves, since the last window opened.
        self._watched: dict[int, CodeType] = {}
        self._reported: list[CodeType] = []
        #: Re-arm with ``restart_events()``: one tool id, or code the second could not watch.
        self._restart_all = False
        self._events = 0

    def start(self) -> None:
        mon = sys.monitoring
        free = [tool for tool in self._TOOL_IDS if mon.get_tool(tool) is None][:2]
        if not free:
            raise TracerUnavailable("every sys.monitoring tool id is in use")
        for tool in free:
            mon.use_tool_id(tool, "pytest-cachevault")
        self._tools = tuple(free)
        self._restart_all = len(free) == 1
        disable = mon.DISABLE
        optimized = inspect.CO_OPTIMIZED
        stack = self._stack
        events = self._events = mon.events.PY_START | mon.events.PY_RESUME

        def on_start(code, offset):  # the hot path: once per code object per window
            window = stack[-1]
            name = code.co_filename
            window.files.add(name)
            if code.co_flags & optimized and code.co_name[0] != "<":
                window.functions.add((name, code.co_qualname))
            elif code.co_name == "<module>":
                window.imported.add(name)
            return disable

        if len(free) == 1:
            first = on_start
        else:
            again_tool = free[1]
            watched, report = self._watched, self._reported.append
            prefix, normpath, set_local_events = self._root_prefix, os.path.normpath, mon.set_local_events
            address = object.__hash__

            def first(code, offset):
                if address(code) not in watched and normpath(code.co_filename).startswith(prefix):
                    try:
                        set_local_events(again_tool, code, events)
                    except Exception:  # not watched: every window must re-arm everything
                        self._restart_all = True
                    else:
                        watched[address(code)] = code
                        report(code)
                return on_start(code, offset)

            def again(code, offset):
                report(code)
                return on_start(code, offset)

            _register(again_tool, again)
        _register(free[0], first)
        mon.set_events(free[0], events)
        self.start_auditing()

    def stop(self) -> None:
        self.stop_auditing()
        mon = sys.monitoring
        for tool in self._tools[1:]:
            for code in self._watched.values():
                with contextlib.suppress(Exception):
                    mon.set_local_events(tool, code, 0)
        for tool in self._tools:
            mon.set_events(tool, 0)
            _register(tool, None)
            mon.free_tool_id(tool)
        self._tools = ()
        self._watched.clear()
        self._reported.clear()

    def push(self) -> None:
        super().push()
        self._rearm()

    def _rearm(self) -> None:
        """Have the in-tree code that reported in the last window report again."""
        if self._restart_all:
            sys.monitoring.restart_events()
            self._reported.clear()
            return
        tool, events, set_local_events = self._tools[1], self._events, sys.monitoring.set_local_events
        for code in self._reported:  # a code object may be listed twice: no harm
            # Setting the events a code object already has is a no-op; clearing them
            # first makes the interpreter re-instrument it, which undoes DISABLE.
            set_local_events(tool, code, 0)
            set_local_events(tool, code, events)
        self._reported.clear()

    def blind_spots(self) -> frozenset[str]:
        return frozenset()


def _register(tool: int, callback) -> None:
    """Have ``callback`` (None: nothing) called on the tool's PY_START and PY_RESUME events."""
    sys.monitoring.register_callback(tool, sys.monitoring.events.PY_START, callback)
    sys.monitoring.register_callback(tool, sys.monitoring.events.PY_RESUME, callback)


class MarkingTracer(_Windows):
    """Before 3.12: in-tree modules are compiled with a mark at the top of every function.

    Every trace hook of older Pythons (``settrace``, ``setprofile``, coverage.py's C
    tracer) costs a callback per call or per line; on a loop-heavy suite coverage.py made
    a run 6–10 times slower. Instead an import hook compiles each in-tree library module
    from its AST with one statement added at the top of the module and of every function
    body, ``__cachevault_<id>__[n] = 1``: a global lookup and a store, nothing when the
    function is not called. Line numbers are those of the source, so tracebacks and
    coverage reports are unchanged. The marked code is kept in ``__pycache__`` under a
    name of its own (:mod:`marked_code`), so a run without the vault never sees it.

    Each module's marks go through a name of its own, which the loader binds in
    builtins to the module's slice of the shared mark array (a ``memoryview``). Marked
    code then does not depend on what was imported before it, so it can be kept; and
    the harvest still scans one array per window.

    Modules this hook cannot see — imported before it was installed, loaded by another
    loader (pytest's assertion rewriter handles test modules and conftests), or nested
    too deeply for the marker — are reported by :meth:`blind_spots`; their callers
    depend on them whole.
    """

    #: Marks per array: a module's slice never spans two, and the array is never resized.
    CHUNK = 1 << 16

    def __init__(self, root: Path, excluded_prefixes: tuple[str, ...]) -> None:
        super().__init__(root)
        self._excluded = excluded_prefixes
        #: One flag per mark: the module body or the function of ``owners[i]`` ran;
        #: each array holds the marks from ``owners[base]`` on, ``used`` of them so far.
        self._arrays: list[tuple[bytearray, int]] = []
        self._used = 0
        #: Whose each mark is: (file, qualified name of a function, or None for the module).
        self.owners: list[tuple[str, str | None]] = []
        #: The builtins names this tracer bound (see :func:`marked_code.marks_name`).
        self._names: set[str] = set()
        #: In-tree files loaded without marks.
        self.unmarked: set[str] = set()
        self._finder: _MarkingFinder | None = None
        self._blind: tuple[int, frozenset[str]] = (-1, frozenset())

    def wants(self, filename: str) -> bool:
        return (
            filename.endswith(".py")
            and filename.startswith(self._root_prefix)
            and not filename.startswith(self._excluded)
        )

    def register(self, filename: str, marked: marked_code.Marked) -> None:
        """Give a module's marks their slice of the mark array, under the name its code
        stores them through. The same name means the same source at the same path, so
        a module loaded again shares its first load's slice."""
        if marked.name in self._names:
            return
        count = len(marked.owners)
        if not self._arrays or self._used + count > len(self._arrays[-1][0]):
            self._arrays.append((bytearray(max(self.CHUNK, count)), len(self.owners)))
            self._used = 0
        # In builtins, not in the module: its namespace stays as it was, and the loader
        # adds no frame of its own under the module's code (a frame there would shift
        # the ``stacklevel`` of warnings raised at import). It stays after :meth:`stop`:
        # marked functions may still be called.
        array = self._arrays[-1][0]
        setattr(builtins, marked.name, memoryview(array)[self._used : self._used + count])
        self._used += count
        self._names.add(marked.name)
        self.owners.extend((filename, owner) for owner in marked.owners)

    def start(self) -> None:
        self._finder = _MarkingFinder(self)
        position = 1 if sys.meta_path and "AssertionRewritingHook" in type(sys.meta_path[0]).__name__ else 0
        sys.meta_path.insert(position, self._finder)
        importlib.invalidate_caches()
        self.start_auditing()

    def stop(self) -> None:
        self.stop_auditing()
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        self._finder = None

    def _harvest(self) -> None:
        window = self._stack[-1]
        owners = self.owners
        for marks, base in self._arrays:
            index = marks.find(1)
            while index >= 0:
                name, qualname = owners[base + index]
                window.files.add(name)
                if qualname is None:
                    window.imported.add(name)
                else:
                    window.functions.add((name, qualname))
                marks[index] = 0
                index = marks.find(1, index + 1)

    def blind_spots(self) -> frozenset[str]:
        count = len(sys.modules)
        if self._blind[0] != count:
            blind = set()
            for module in list(sys.modules.values()):
                filename = getattr(module, "__file__", None)
                if isinstance(filename, str) and self.wants(filename):
                    loader = getattr(module, "__loader__", None)
                    if (
                        not isinstance(loader, _MarkingLoader)
                        or loader.tracer is not self  # an earlier session's: not harvested here
                        or filename in self.unmarked
                    ):
                        blind.add(filename)
            self._blind = (count, frozenset(blind))
        return self._blind[1]


class _MarkingFinder(importlib.abc.MetaPathFinder):
    """Asks the finders after it; takes over the in-tree source modules they find."""

    def __init__(self, tracer: MarkingTracer) -> None:
        self._tracer = tracer

    def find_spec(self, fullname, path=None, target=None):
        finders = sys.meta_path[sys.meta_path.index(self) + 1 :] if self in sys.meta_path else []
        for finder in finders:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is None:
                continue
            origin = spec.origin
            if (
                isinstance(origin, str)
                and isinstance(spec.loader, importlib.machinery.SourceFileLoader)
                and self._tracer.wants(origin)
            ):
                spec.loader = _MarkingLoader(fullname, origin, self._tracer)
            return spec
        return None


class _MarkingLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, tracer: MarkingTracer) -> None:
        super().__init__(fullname, path)
        self.tracer = tracer

    def get_code(self, fullname):
        source = self.get_data(self.path)
        marked = marked_code.load(self.path, source)
        if marked is None:
            name = marked_code.marks_name(self.path, source)
            try:
                tree = ast.parse(source, self.path)
                marker = _Marker(name)
                marker.visit(tree)
                code = compile(tree, self.path, "exec", dont_inherit=True)
            except (SyntaxError, ValueError, RecursionError):
                # Not marked (a syntax error is raised again here, as without the vault;
                # nesting too deep for the marker is compiled as it is): a blind spot.
                self.tracer.unmarked.add(self.path)
                return super().source_to_code(source, self.path)
            marked = marked_code.Marked(code, name, marker.owners)
            marked_code.save(self.path, source, marked)
        self.tracer.register(self.path, marked)
        return marked.code


class _Marker(Scopes):
    """Adds ``name[i] = 1`` to the module and to each function body, each its own ``i``
    from 0 on; :attr:`owners` says whose each is."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name
        #: The qualified name of the function of each mark, None for the module's.
        self.owners: list[str | None] = []

    def _mark(self, owner: str | None, at: ast.AST) -> ast.stmt:
        target = ast.Subscript(
            value=ast.Name(id=self._name, ctx=ast.Load()),
            slice=ast.Constant(value=len(self.owners)),
            ctx=ast.Store(),
        )
        self.owners.append(owner)
        mark = ast.Assign(targets=[target], value=ast.Constant(value=1))
        return ast.fix_missing_locations(ast.copy_location(mark, at))

    @staticmethod
    def _prologue(body: list[ast.stmt]) -> int:
        """How many leading statements must stay first: a docstring, ``__future__`` imports."""
        position = 0
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            position = 1
        while position < len(body) and isinstance(body[position], ast.ImportFrom) and body[position].module == "__future__":
            position += 1
        return position

    @staticmethod
    def _anchor(body: list[ast.stmt], position: int, owner: ast.AST) -> ast.AST:
        """Whose line the mark takes: the line the interpreter reports next without it, so
        that line tracers (coverage.py) see the same lines and arcs. That is the first
        decorator of a decorated statement; ``global`` and ``nonlocal`` run no code, so
        the statement after them; and the first line of a function with nothing else
        (its implicit ``return`` is reported there). A statement whose first instruction
        is on a later line (``if (`` and the test below it) still sees its first line
        once more, which coverage.py counts for the same statement."""
        first = next((s for s in body[position:] if not isinstance(s, (ast.Global, ast.Nonlocal))), None)
        if first is None:
            first = owner if isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef)) else body[-1]
        return (getattr(first, "decorator_list", None) or [first])[0]

    def _insert(self, owner: ast.Module | ast.FunctionDef | ast.AsyncFunctionDef, name: str | None) -> None:
        body = owner.body
        position = self._prologue(body)
        body.insert(position, self._mark(name, self._anchor(body, position, owner)))

    def visit_Module(self, node: ast.Module) -> ast.Module:
        self.generic_visit(node)
        if node.body:
            self._insert(node, None)
        return node

    def _function(self, node):
        qualname = self.qualname(node)
        self.visit_inside(node)
        self._insert(node, qualname)
        return node

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
