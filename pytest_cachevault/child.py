"""What a Python child process ran and read, told to the test that started it.

A test that starts ``python tool.py`` depends on the code the child executes, which no
tracer in the parent sees. With ini ``vault_allow = subprocess`` the parent sets
:data:`VARIABLE` while a test (or fixture) runs; ``pytest-cachevault.pth``, installed
beside the package, calls :func:`start` in every interpreter that starts with it set.
The child then notes, through an audit hook that costs nothing per call:

* the files whose code it executed: the ``exec`` audit event names each module body
  as the import system runs it (and ``runpy`` for ``-m``), ``cpython.run_file`` the
  script. A function runs only from a file whose module body ran, so at the level of
  files this is what the child executed;
* the files it opened for reading and the directories it listed;
* whether it started processes of its own or connected off-host.

At exit it writes them, as JSON, to ``<prefix>.<pid>.json``; at start it leaves
``<prefix>.<pid>.start``. The parent (:class:`Children`) gives each window of its
tracer its own prefix, and after the window trusts the reports only if every process
the window started was such an interpreter, each one reported, and none was still
running or started processes itself. Otherwise the test depends on every in-tree
source file, as it did before children were traced.

This module is imported in every child: the standard library only, and little of it.
Variables the child reads are not seen: list them in ini ``vault_env``.
"""

from __future__ import annotations

import json
import os
import re
import sys

#: Set in the parent while a window is open: the path prefix of its children's reports.
VARIABLE = "PYTEST_VAULT_CHILD"
SCHEMA = 1
_START = ".start"
_DONE = ".json"
#: Program names taken for a Python interpreter (``python``, ``python3.12``, ``python3.13t``).
_PYTHON = re.compile(r"python(\d+(\.\d+)?t?)?(\.exe)?")
_READ_MODES = frozenset("rbt")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def is_loopback(address: object) -> bool:
    """Whether a socket address stays on this host (a test server on 127.0.0.1 does)."""
    host = address[0] if isinstance(address, tuple) and address else address
    if not isinstance(host, str):
        return True  # not an internet address
    if host in ("localhost", ""):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host.endswith(".localhost")


def describe_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


# -- in the child ---------------------------------------------------------------------
class _Report:
    """What this interpreter did, gathered by :meth:`audit` and written by :meth:`write`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.files: set[str] = set()
        self.read: set[str] = set()
        self.listed: set[str] = set()
        self.spawned: str | None = None
        self.network: str | None = None
        self.pid = os.getpid()
        #: The standard library and installed packages: covered by the environment.
        self._installed = (os.path.join(os.path.dirname(os.__file__), ""),)

    def _keep(self, path: object) -> str | None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(self._installed) or "site-packages" in path:
            return None
        return path

    def audit(self, event: str, args: tuple) -> None:
        if os.getpid() != self.pid:  # a fork of this child: not what this report covers
            return
        try:
            if event == "exec":
                name = getattr(args[0], "co_filename", "")
                if isinstance(name, str) and name and not name.startswith("<"):
                    self._add(self.files, name)
            elif event == "cpython.run_file":
                self._add(self.files, args[0])
            elif event == "open":
                path, mode, flags = args
                reads = set(mode) <= _READ_MODES if isinstance(mode, str) else (
                    isinstance(flags, int) and not flags & _WRITE_FLAGS)
                if reads and isinstance(path, (str, bytes, os.PathLike)):
                    if not os.fsdecode(path).endswith((".py", ".pyc")):
                        self._add(self.read, path)
            elif event in ("os.listdir", "os.scandir"):
                self._add(self.listed, "." if args[0] is None else args[0])
            elif event in ("subprocess.Popen", "os.system", "os.exec", "os.spawn",
                           "os.posix_spawn", "os.fork", "os.forkpty"):
                self.spawned = self.spawned or event
            elif event in ("socket.connect", "socket.sendto"):
                socket = sys.modules["socket"]  # loaded: a socket raised the event
                family = getattr(args[0], "family", None)
                if family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(args[-1]):
                    self.network = self.network or describe_address(args[-1])
        except Exception:  # never break the child; an unreadable event is a process unseen
            self.spawned = self.spawned or "an observation failed"

    def _add(self, into: set[str], path: object) -> None:
        kept = self._keep(path)
        if kept is not None:
            into.add(kept)

    def write(self) -> None:
        if os.getpid() != self.pid:
            return
        body = json.dumps({
            "schema": SCHEMA,
            "files": sorted(self.files),
            "read": sorted(self.read),
            "listed": sorted(self.listed),
            "spawned": self.spawned,
            "network": self.network,
        })
        final = f"{self.prefix}.{self.pid}{_DONE}"
        try:
            with open(final + ".tmp", "w", encoding="utf-8") as stream:
                stream.write(body)
            os.replace(final + ".tmp", final)
        except OSError:
            pass  # no report: the parent falls back to every in-tree source


def start() -> None:
    """Called by ``pytest-cachevault.pth`` in an interpreter started with :data:`VARIABLE`."""
    prefix = os.environ.get(VARIABLE, "")
    if not prefix or not os.path.isdir(os.path.dirname(prefix)):
        return
    try:
        report = _Report(prefix)
        with open(f"{prefix}.{report.pid}{_START}", "x"):
            pass
    except OSError:
        return
    import atexit

    sys.addaudithook(report.audit)
    atexit.register(report.write)


# -- in the parent --------------------------------------------------------------------
def untraced_spawn(event: str, args: tuple, prefix: str) -> str | None:
    """Why the process that the spawn audit event ``event`` starts will not report to
    ``prefix``; None if it will: a Python program that inherits the variable. A shell,
    a fork and any other program are not seen."""
    if event == "subprocess.Popen":
        program, env = args[0], args[3]
    elif event in ("os.posix_spawn", "os.exec"):
        program, env = args[0], args[2]
    elif event == "os.spawn":
        program, env = args[1], args[3]
    else:
        return f"a process started by {event}"
    if not isinstance(program, (str, bytes, os.PathLike)):
        return f"a process started by {event}"
    name = os.path.basename(os.fsdecode(program))
    if _PYTHON.fullmatch(name) is None:
        return f"a program other than Python ({name})"
    if env is None:
        return None  # inherits this process's environment, which holds the variable
    try:
        value = env.get(VARIABLE, env.get(VARIABLE.encode()))
    except Exception:
        value = None
    if isinstance(value, (str, bytes)) and os.fsdecode(value) == prefix:
        return None
    return f"a Python process started with an environment without {VARIABLE}"


class ChildRun:
    """What the reporting children of one window did; ``untraced`` says why the window
    must instead depend on every in-tree source (None: the reports cover it)."""

    __slots__ = ("files", "read", "listed", "network", "untraced")

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.read: set[str] = set()
        self.listed: set[str] = set()
        self.network: str | None = None
        self.untraced: str | None = None


class Children:
    """The parent's side: a directory in the store for reports, a prefix per window."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._count = 0

    def close(self) -> None:
        """Remove the directory and whatever late children still write there."""
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)

    def prefix(self) -> str:
        """A new prefix, for a window about to open."""
        self._count += 1
        return os.path.join(self.directory, f"w{self._count}")

    def harvest(self, prefix: str, expected: int) -> ChildRun:
        """Read (and remove) the reports under ``prefix`` of the ``expected`` children."""
        run = ChildRun()
        base = os.path.basename(prefix) + "."
        started, done = set(), {}
        try:
            names = [n for n in os.listdir(self.directory) if n.startswith(base)]
        except OSError:
            names = []
        for name in names:
            pid, _, kind = name[len(base):].partition(".")
            path = os.path.join(self.directory, name)
            if kind == _START[1:]:
                started.add(pid)
            elif kind == _DONE[1:]:
                done[pid] = _read_report(path)
            try:
                os.unlink(path)
            except OSError:
                pass
        if len(started) < expected:
            run.untraced = "a child process did not report (not this interpreter, or environment replaced)"
        elif started - done.keys():
            run.untraced = "a child process was still running, or exited without its report"
        for report in done.values():
            if report is None:
                run.untraced = run.untraced or "a child process's report was unreadable"
                continue
            run.files.update(report["files"])
            run.read.update(report["read"])
            run.listed.update(report["listed"])
            run.network = run.network or report["network"]
            if report["spawned"]:
                run.untraced = run.untraced or f"a child process started another ({report['spawned']})"
        return run


def _read_report(path: str) -> dict | None:
    """A child's report, or None if it is not one (the store's files are untrusted)."""
    try:
        with open(path, encoding="utf-8") as stream:
            value = json.load(stream)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or value.get("schema") != SCHEMA:
        return None
    lists = [value.get(k) for k in ("files", "read", "listed")]
    if not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in lists):
        return None
    if not all(isinstance(value.get(k), (str, type(None))) for k in ("spawned", "network")):
        return None
    return value
