"""Which source files ran: per test, per fixture, and outside tests (imports, collection).

Two backends behind one interface (:class:`Tracer`):

* :class:`MonitoringTracer` (Python 3.12+): ``sys.monitoring`` ``PY_START``/``PY_RESUME``
  events that return ``DISABLE``, so each code object reports once per window and then
  runs at full speed; a new window re-arms them with ``restart_events()``.
* :class:`CoverageTracer` (older Pythons): coverage.py's C tracer limited to files under
  the rootdir, harvested at each window boundary.

Windows nest (a higher-scoped fixture set up inside a test): what ran in an inner window
also counts for the windows around it. The outermost window is "outside any test":
module imports and collection.

Each window reports, besides every file in which code ran, the files in which *function*
code ran. Module bodies and class bodies are import-time code, which the ``code`` digest
of :mod:`hashing` already covers for everyone who imports the module; a function body
that ran at import time (``LIMIT = compute()``) is not, so the caller must depend on the
whole file that held it.
"""

from __future__ import annotations

import ast
import inspect
import sys
import threading
from pathlib import Path
from typing import NamedTuple, Protocol


class TracerUnavailable(Exception):
    """No tracer can run in this process (another tool holds the hook)."""


class Executed(NamedTuple):
    """Absolute file names in which code ran during one window."""

    files: frozenset[str]
    function_files: frozenset[str]


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


def make_tracer(root: Path, excluded_prefixes: tuple[str, ...]) -> Tracer:
    if sys.version_info >= (3, 12):
        return MonitoringTracer()
    return CoverageTracer(root, excluded_prefixes)


class MonitoringTracer:
    _TOOL_IDS = (4, 3, 5)

    def __init__(self) -> None:
        self._stack: list[tuple[set[str], set[str]]] = [(set(), set())]
        self._tool: int | None = None

    def start(self) -> None:
        mon = sys.monitoring
        for tool in self._TOOL_IDS:
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, "pytest-cachevault")
                self._tool = tool
                break
        else:
            raise TracerUnavailable("every sys.monitoring tool id is in use")
        disable = mon.DISABLE
        optimized = inspect.CO_OPTIMIZED
        stack = self._stack

        def on_start(code, offset):  # the hot path: once per code object per window
            files, function_files = stack[-1]
            name = code.co_filename
            files.add(name)
            if code.co_flags & optimized and code.co_name[0] != "<":
                function_files.add(name)
            return disable

        events = mon.events
        mon.register_callback(self._tool, events.PY_START, on_start)
        mon.register_callback(self._tool, events.PY_RESUME, on_start)
        mon.set_events(self._tool, events.PY_START | events.PY_RESUME)

    def stop(self) -> None:
        if self._tool is None:
            return
        mon = sys.monitoring
        mon.set_events(self._tool, 0)
        mon.register_callback(self._tool, mon.events.PY_START, None)
        mon.register_callback(self._tool, mon.events.PY_RESUME, None)
        mon.free_tool_id(self._tool)
        self._tool = None

    def push(self) -> None:
        self._stack.append((set(), set()))
        sys.monitoring.restart_events()

    def pop(self, merge: bool = True) -> Executed:
        files, function_files = self._stack.pop()
        if merge:
            parent_files, parent_function_files = self._stack[-1]
            parent_files |= files
            parent_function_files |= function_files
        return Executed(frozenset(files), frozenset(function_files))

    def outside(self) -> Executed:
        files, function_files = self._stack[0]
        return Executed(frozenset(files), frozenset(function_files))


class CoverageTracer:
    """coverage.py's C tracer, read directly between windows.

    Reading ``Coverage._collector.data`` (file → set of lines since the last clear) is
    the one private access: coverage's public API would flush to SQLite at each test.
    Lines are classified as function code by the def-body line ranges of the file.
    """

    def __init__(self, root: Path, excluded_prefixes: tuple[str, ...]) -> None:
        self._root = root
        self._excluded = excluded_prefixes
        self._stack: list[dict[str, set[int]]] = [{}]
        self._body_lines: dict[str, frozenset[int] | None] = {}
        self._cov = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if sys.gettrace() is not None:
            raise TracerUnavailable("another trace function is active (a debugger or pytest-cov)")
        try:
            import coverage
        except ImportError as exc:  # pragma: no cover - coverage is a dependency below 3.12
            raise TracerUnavailable("coverage.py is not installed") from exc
        cov = coverage.Coverage(
            data_file=None,
            config_file=False,
            branch=False,
            include=[str(self._root / "*")],
            omit=[prefix + "*" for prefix in self._excluded],
        )
        cov.start()
        collector = getattr(cov, "_collector", None)
        if not isinstance(getattr(collector, "data", None), dict):
            cov.stop()
            raise TracerUnavailable(f"coverage {coverage.__version__} has an unknown layout")
        self._cov = cov
        self._data = collector.data

    def stop(self) -> None:
        if self._cov is not None:
            self._cov.stop()
            self._cov = None

    def _harvest(self) -> None:
        """Move what the C tracer gathered into the innermost window."""
        window = self._stack[-1]
        with self._lock:
            for name, lines in list(self._data.items()):
                if lines:
                    window.setdefault(name, set()).update(lines)
                    lines.clear()  # in place: the C tracer holds this very set

    def push(self) -> None:
        self._harvest()
        self._stack.append({})

    def pop(self, merge: bool = True) -> Executed:
        self._harvest()
        window = self._stack.pop()
        if merge:
            parent = self._stack[-1]
            for name, lines in window.items():
                parent.setdefault(name, set()).update(lines)
        return self._executed(window)

    def outside(self) -> Executed:
        if len(self._stack) == 1:
            self._harvest()
        return self._executed(self._stack[0])

    def _executed(self, window: dict[str, set[int]]) -> Executed:
        function_files = frozenset(
            name for name, lines in window.items() if self._ran_function(name, lines)
        )
        return Executed(frozenset(window), function_files)

    def _ran_function(self, filename: str, lines: set[int]) -> bool:
        if filename not in self._body_lines:
            self._body_lines[filename] = _function_body_lines(filename)
        bodies = self._body_lines[filename]
        return bodies is None or not lines.isdisjoint(bodies)


def _function_body_lines(filename: str) -> frozenset[int] | None:
    """Line numbers inside function bodies; None (all of them) if the file cannot be parsed."""
    try:
        with open(filename, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            lines.update(range(node.body[0].lineno, (node.end_lineno or 0) + 1))
    return frozenset(lines)
