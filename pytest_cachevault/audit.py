"""What code does besides executing: files it reads and writes, directories it lists,
environment variables it reads and sets, processes it starts, hosts it connects to.

A tracer sees which code ran; a test's outcome also depends on what that code read.
Files and directories under the rootdir (nothing else is an input), processes and
connections are seen by one audit hook (``sys.addaudithook``: the ``open`` event
covers ``open()``, ``Path.read_text`` and ``io.open``, ``os.listdir``/``os.scandir``
cover ``glob`` and ``os.walk``, and the events fire from threads too). ``os.environ`` raises no audit event, so it is given a subclass
of its own class that reports ``[]``, ``get``, ``in``, ``os.getenv`` and iteration.

Everything goes into the innermost window of the tracer (see :mod:`trace`). Reads by
pytest, pluggy, pytest-xdist and this plugin (the terminal width, ``PYTEST_CURRENT_TEST``,
collection listing a directory, the vault hashing a data file) are not the test's:
the first caller outside the standard library decides. Outside any test (imports,
plugins' start-up) only in-tree code's variable reads count: installed plugins copy the
whole environment to start helper processes, and a dependency of every test on every
variable would make nothing replay. What installed code reads at start-up is the
environment fingerprint's business (ini ``vault_env``). Files coverage.py reads outside
any test are its configuration, not inputs. Audit hooks cannot be removed,
so the hook stays installed and idle once stopped.
"""

from __future__ import annotations

import os
import socket
import sys
import sysconfig
from collections.abc import Callable, Iterator
from typing import Any

from .child import VARIABLE as CHILD_VARIABLE
from .child import describe_address, is_loopback, untraced_spawn
from .config import ENV_KEY

#: Audit events by which a test starts another process, whose code no tracer here sees.
SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty"}
)
#: Name under which a read of the whole environment (iteration, ``copy()``) is kept.
WHOLE_ENVIRONMENT = "*"
_SOURCE_SUFFIXES = (".py", ".pyc")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_LISTING_EVENTS = frozenset({"os.listdir", "os.scandir"})
_NETWORK_EVENTS = frozenset({"socket.connect", "socket.sendto"})
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_TOOLING_PACKAGES = ("_pytest", "pytest", "pluggy", "xdist", "execnet", "pytest_cachevault")
#: Coverage measurement: the configuration it reads as it starts (``pyproject.toml``,
#: ``setup.cfg``, ``tox.ini``, ``.coveragerc``) decides what is measured, not an outcome.
_MEASURING_PACKAGES = ("coverage", "pytest_cov")
#: Every event the hook acts on; the others (most of them) leave after one set lookup.
_WATCHED = frozenset({"open"}) | _LISTING_EVENTS | SPAWN_EVENTS | _NETWORK_EVENTS


def _stdlib_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.join(paths[key], "") for key in ("stdlib", "platstdlib")})


def _package_dirs(names: tuple[str, ...]) -> tuple[str, ...]:
    dirs = []
    for name in names:
        module = sys.modules.get(name)
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str):
            dirs.append(os.path.join(os.path.dirname(os.path.abspath(filename)), ""))
    return tuple(dirs)


def whole_environment() -> str:
    """The whole environment as one text (for a read of every variable).

    Without the signing key: even its digest must not reach the store, where it
    could be guessed at offline, and a job with the key must hit a job's records
    without it."""
    return "\0".join(
        f"{k}={v}" for k, v in sorted(_Environ.items(os.environ)) if k not in _OWN_VARIABLES
    )


_Environ: Any = type(os.environ)
#: Variables the vault itself sets or reads: never part of a test's environment.
_OWN_VARIABLES = frozenset({ENV_KEY, CHILD_VARIABLE})


class _ObservedEnviron(_Environ):
    """``os.environ`` reporting which variables are read and set (see module docstring)."""

    __slots__ = ()

    def __getitem__(self, key):
        try:
            value = _Environ.__getitem__(self, key)
        except KeyError:
            _report_env(key, None)
            raise
        _report_env(key, value)
        return value

    def __setitem__(self, key, value) -> None:
        _Environ.__setitem__(self, key, value)
        _report_env(key, None, written=True)

    def __delitem__(self, key) -> None:
        _Environ.__delitem__(self, key)
        _report_env(key, None, written=True)

    def __iter__(self) -> Iterator:
        _report_env(WHOLE_ENVIRONMENT, None)
        return _Environ.__iter__(self)


_THIS_FILE = __file__
_env_listener: Callable[..., None] | None = None
_mark_broken: Callable[[], None] = lambda: None
#: Stands in for a process started when an observation itself failed: the test is then
#: not stored (something it did went unseen).
BROKEN = "an observation failed"


def _report_env(name: object, value: str | None, written: bool = False) -> None:
    listener = _env_listener
    if listener is not None and isinstance(name, str):
        try:
            listener(name, value, written)
        except Exception:  # never break the code under test; the window is marked
            _mark_broken()


def get_env(name: str) -> str | None:
    """A variable's value, without reporting the read (the vault's own lookups)."""
    try:
        return _Environ.__getitem__(os.environ, name)
    except KeyError:
        return None


def set_quietly(name: str, value: str | None) -> None:
    """Set (or, with None, remove) a variable without reporting it as the test's doing."""
    if value is not None:
        _Environ.__setitem__(os.environ, name, value)
    elif _Environ.__contains__(os.environ, name):
        _Environ.__delitem__(os.environ, name)


class Observer:
    """Feeds what code reads, lists, sets, starts and connects to into ``window()``."""

    def __init__(self, window: Callable[[], Any], root: os.PathLike, outside: Any) -> None:
        self._window = window
        self._root = os.path.join(os.fspath(root), "")
        self._outside = outside
        self._active = False
        self._hooked = False
        self._stdlib = _stdlib_prefixes()
        self._tooling: tuple[str, ...] = ()
        self._own = os.path.join(os.path.dirname(_THIS_FILE), "")  # this plugin's package

    def start(self) -> None:
        global _env_listener, _mark_broken
        self._tooling = _package_dirs(_TOOLING_PACKAGES)
        if not self._hooked:
            sys.addaudithook(self._audit)
            self._hooked = True
        if type(os.environ) is _Environ:
            os.environ.__class__ = _ObservedEnviron
        _env_listener = self._env
        _mark_broken = self._mark_broken
        self._active = True

    def stop(self) -> None:
        global _env_listener
        self._active = False
        _env_listener = None
        if type(os.environ) is _ObservedEnviron:
            os.environ.__class__ = _Environ

    def _mark_broken(self) -> None:
        window = self._window()
        window.spawned = window.spawned or BROKEN

    # -- who is asking ----------------------------------------------------------------
    def _caller_file(self) -> str:
        """The file of the first caller outside this module and the standard library."""
        frame = sys._getframe(1)
        while frame is not None:
            filename = frame.f_code.co_filename
            in_stdlib = filename.startswith("<frozen") or (
                filename.startswith(self._stdlib) and "site-packages" not in filename
            )
            if filename != _THIS_FILE and not in_stdlib:
                return filename
            frame = frame.f_back
        return ""

    def _in_tree(self, filename: str) -> bool:
        return filename.startswith(self._root) and "site-packages" not in filename

    # -- environment ------------------------------------------------------------------
    def _env(self, name: str, value: str | None, written: bool) -> None:
        if not self._active:
            return
        window = self._window()
        if written:  # by anyone (pytest sets PYTEST_CURRENT_TEST): no longer the outside's value
            window.env_written.add(name)
            return
        if name in window.env_written or name in window.env:
            return
        caller = self._caller_file()
        if caller.startswith(self._tooling):
            return
        if window is not self._outside or self._in_tree(caller):
            if name == WHOLE_ENVIRONMENT:
                value = whole_environment()
            window.env[name] = value

    # -- the audit hook ---------------------------------------------------------------
    def _audit(self, event: str, args: tuple) -> None:
        if event not in _WATCHED or not self._active:
            return
        try:
            self._dispatch(event, args)
        except Exception:  # an exception here would fail the audited call itself
            self._window().spawned = self._window().spawned or BROKEN

    def _dispatch(self, event: str, args: tuple) -> None:
        if event == "open":
            self._open(*args)
        elif event in _LISTING_EVENTS:
            path = args[0]
            if path is None:
                path = "."
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(path))
                window = self._window()
                if not (path + os.sep).startswith(self._root) or path in window.listed:
                    return  # only in-tree directories are inputs
                caller = self._caller_file()
                if not caller.startswith(self._tooling) and (
                    window is not self._outside or self._in_tree(caller)
                ):
                    window.listed.add(path)
        elif event in SPAWN_EVENTS:
            window = self._window()
            window.spawned = window.spawned or event
            if window.prefix:
                self._count_child(window, event, args)
        elif event in _NETWORK_EVENTS:
            sock, address = args[0], args[-1]
            if getattr(sock, "family", None) in _INET_FAMILIES and not is_loopback(address):
                window = self._window()
                window.network = window.network or describe_address(address)

    @staticmethod
    def _count_child(window: Any, event: str, args: tuple) -> None:
        """Expect a report from a Python child, or note why this process goes unseen.
        ``subprocess`` may start one process with two events (``subprocess.Popen``, then
        ``os.posix_spawn`` of the same program): it is counted once."""
        popen = window.popen
        window.popen = args[0] if event == "subprocess.Popen" else None
        if event == "os.posix_spawn" and popen is not None and popen == args[0]:
            return
        why = untraced_spawn(event, args, window.prefix)
        if why is None:
            window.children += 1
        else:
            window.untraced = window.untraced or why

    def _open(self, path: object, mode: object, flags: object) -> None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a file descriptor
        path = os.fsdecode(path)
        if path.endswith(_SOURCE_SUFFIXES):
            return  # imports and tracebacks read sources; executed code is traced
        path = os.path.abspath(path)
        if not path.startswith(self._root):
            return  # only in-tree files are inputs (the cheap test first: this is hot)
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            not mode and isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        window = self._window()
        if writes:
            window.written.add(path)
        elif path not in window.written and path not in window.read:
            caller = self._caller_file()
            if caller.startswith(self._own):  # the vault hashing an input
                return
            if window is self._outside and caller.startswith(_package_dirs(_MEASURING_PACKAGES)):
                return  # imported after start(): looked up when it reads, which is rare
            window.read.add(path)

