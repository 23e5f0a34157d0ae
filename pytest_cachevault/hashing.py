"""Content digests of the files a test depends on, with a stat cache.

Two digests per file:

* ``file`` — blake3 of the bytes: any edit changes it.
* ``code`` — blake3 of the module's *import-time code*: its AST with every function
  body blanked (docstrings kept). Editing a function body leaves it unchanged;
  editing a constant, a class attribute, a decorator, a default or a registration
  changes it. Tests that merely import a module depend on this digest only.
* ``listing`` — of a directory: its sorted entry names (``__pycache__`` and the tools'
  own directories, :attr:`Hasher.unlisted`, left out), so that a new data file re-runs
  the tests that listed the directory, but ``.pytest_cache`` appearing does not.

And, for a module whose functions ran at import or collection time, a ``code`` digest
that keeps the bodies of those functions (:meth:`Hasher.digest_ran`): importers depend
on what ran while they imported it, not on the bodies of functions that did not run.

Digests are remembered by ``(size, mtime_ns, ctime_ns, inode)`` so unchanged files
are not re-read, within a run and (through :meth:`Hasher.export`) across runs. While
no test code runs (between two replayed tests) files cannot change, so a file is
stat'ed once per such stretch, not once per test that depends on it. An
entry whose mtime is within :data:`RACY_SECONDS` of the moment it was remembered is
not carried over: a file written in the same instant could change again without its
mtime moving (the rule ccache and ``go`` follow).
"""

from __future__ import annotations

import ast
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import blake3

Kind = Literal["file", "code", "listing"]
KINDS: tuple[Kind, ...] = ("file", "code", "listing")
DIGEST_CHARS = 32  # 128 bits, hex
#: Prefix of the stat cache's keys for :meth:`Hasher.digest_ran` digests.
RAN = "ran:"
RACY_SECONDS = 2.0
#: Parsed sources a :class:`Hasher` keeps for the run: each holds a digest per function.
SHAPES_KEPT = 512


def digest_bytes(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()[:DIGEST_CHARS]


class Scopes(ast.NodeTransformer):
    """Knows the qualified name (``__qualname__``) of the function it visits.

    Walks statements only: a ``def`` or a ``class`` is a statement, found only in the
    statement lists of a module, a function, a class, a compound statement (``if``,
    ``for``, ``with``, ``try``...), an ``except`` clause or a ``match`` case. Expressions,
    most of a module's nodes, are not walked: marking jinja2's 25 modules for the 3.11
    tracer took 20 ms instead of 67 ms (on top of parsing and compiling them)."""

    #: Nodes that are, or hold, statements.
    _STATEMENTS = (ast.stmt, ast.excepthandler, ast.match_case)

    def __init__(self) -> None:
        self._scope: list[str] = []

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for _, value in ast.iter_fields(node):
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, self._STATEMENTS):
                        self.visit(item)
        return node

    def qualname(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
        return ".".join([*self._scope, node.name])

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self._scope.append(node.name)
        self.generic_visit(node)
        self._scope.pop()
        return node

    def visit_inside(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """Visit a function's body, in whose scope definitions are ``name.<locals>.*``."""
        self._scope += [node.name, "<locals>"]
        self.generic_visit(node)
        del self._scope[-2:]


class _SplitBodies(Scopes):
    """Take every function's body out of a module: its digest (with the functions
    nested in it already taken out) goes into :attr:`bodies` and a blank (its
    docstring, or ``pass``) takes its place; what is left is the module's skeleton."""

    def __init__(self) -> None:
        super().__init__()
        #: qualname -> digest of its body (of every ``def`` by that name, in order)
        self.bodies: dict[str, str] = {}
        #: qualname -> qualname of the function it is defined in ("" at the top)
        self.enclosing: dict[str, str] = {}
        self._functions: list[str] = [""]

    def _split(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        qualname = self.qualname(node)
        self.enclosing[qualname] = self._functions[-1]
        self._functions.append(qualname)
        self.visit_inside(node)
        self._functions.pop()
        body = "\n".join(ast.dump(statement) for statement in node.body)
        earlier = self.bodies.get(qualname, "")
        self.bodies[qualname] = digest_bytes(f"{earlier}\0{body}".encode())
        first = node.body[0] if node.body else None
        is_doc = (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        )
        node.body = [first] if is_doc else [ast.Pass()]
        return node

    visit_FunctionDef = _split
    visit_AsyncFunctionDef = _split


class CodeShape:
    """A Python source's import-time code, parsed once: the ``code`` digest for any
    set of kept functions follows from it without parsing again.

    A module whose functions ran at import is digested once per set of functions that
    ran while one of its importers was imported; jinja2's 29 modules were parsed 68
    times in a cold run. Now each is parsed once: the digest keeping functions ``K``
    combines the skeleton's (every function body blanked) with the bodies of ``K``,
    each with its own nested functions blanked unless they are in ``K`` too.
    """

    def __init__(self, source: bytes) -> None:
        self._whole = digest_bytes(source)
        self._skeleton: str | None = None
        try:
            tree = ast.parse(source)
            split = _SplitBodies()
            split.visit(tree)
            self._skeleton = digest_bytes(ast.dump(tree).encode())
        except (SyntaxError, ValueError, RecursionError):
            return
        self._bodies = split.bodies
        self._enclosing = split.enclosing

    def digest(self, keep: frozenset[str] = frozenset()) -> str:
        """The digest keeping the bodies of the functions ``keep`` names (qualified
        names); the whole source's if unparsable, or if one of them is not found (a
        function defined under ``global`` or by ``exec``) or is nested in a function
        not kept (whose body, where it is defined, would then not count)."""
        if self._skeleton is None:
            return self._whole
        if not keep:
            return self._skeleton
        combined = blake3.blake3(self._skeleton.encode())
        found_in = keep | {""}
        for qualname in sorted(keep):
            if qualname not in self._bodies or self._enclosing[qualname] not in found_in:
                return self._whole
            combined.update(f"\0{qualname}\0{self._bodies[qualname]}".encode())
        return combined.hexdigest()[:DIGEST_CHARS]


def code_digest(source: bytes, keep: frozenset[str] = frozenset()) -> str:
    """Digest of the import-time code of a Python source (see :class:`CodeShape`)."""
    return CodeShape(source).digest(keep)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class Hasher:
    """Digests of files under ``root``, addressed by relative POSIX paths.

    ``None`` stands for "no such file": a recorded ``None`` means the file must
    still be absent (a conftest that did not exist, say).
    """

    def __init__(self, root: Path, remembered: dict | None = None) -> None:
        self.root = root
        # relpath -> [size, mtime_ns, ctime_ns, inode, {kind: digest}]
        self._entries: dict[str, list] = {}
        #: Files stat'ed since code last ran (see :meth:`code_ran`).
        self._confirmed: set[str] = set()
        #: Python sources stat'ed since their module was last imported: their digests
        #: hold for the run (see :meth:`code_ran`).
        self._held: set[str] = set()
        #: Counts :meth:`code_ran`: a check of digests holds while it stays the same.
        self.generation = 0
        #: Directories (absolute, real, ending in a separator) no listing includes.
        self.unlisted: frozenset[str] = frozenset()
        #: Sources parsed in this run, by digest of their bytes (the oldest dropped
        #: beyond :data:`SHAPES_KEPT`).
        self._shapes: dict[str, CodeShape] = {}
        if isinstance(remembered, dict):
            for relpath, entry in remembered.items():
                if _valid_entry(entry):
                    self._entries[relpath] = [*entry[:4], dict(entry[4])]

    def code_ran(self, imported: Iterable[str] | None = None) -> None:
        """Code ran that may have changed files: stat them again before trusting a digest.

        Except Python sources not named in ``imported`` (None: all of them): code runs
        as its module was imported, whatever the file holds by now, so the digest
        taken before stands for it. A source saved while a run is under way then
        makes the next run look at the tests, where a digest taken again would have
        claimed the new text for code that never ran it."""
        self._confirmed.clear()
        if imported is None:
            self._held.clear()
        else:
            self._held.difference_update(imported)
        self.generation += 1

    def digest(self, relpath: str, kind: Kind) -> str | None:
        held = relpath in self._held
        if held or relpath in self._confirmed:
            entry = self._entries.get(relpath)
            if entry is None:
                return None
            if kind in entry[4]:
                return entry[4][kind]
        path = os.path.join(self.root, relpath)
        try:
            st = os.stat(path)
        except OSError:
            if held:
                return None  # gone since its digest was taken: a miss now
            self._entries.pop(relpath, None)
            self._confirm(relpath)
            return None
        key = _stat_key(st)
        entry = self._entries.get(relpath)
        if held and entry is not None and tuple(entry[:4]) != key:
            return None  # changed since its digest was taken: a miss now, never the new text
        self._confirm(relpath)
        if entry is None or tuple(entry[:4]) != key:
            entry = [*key, {}]
            self._entries[relpath] = entry
        digests: dict = entry[4]
        if kind == "listing" and kind not in digests:
            try:
                real = os.path.realpath(path)
                names = sorted(
                    n for n in os.listdir(path)
                    if n != "__pycache__" and os.path.join(real, n, "") not in self.unlisted
                )
            except OSError:
                return None
            digests[kind] = digest_bytes("\0".join(names).encode())
        elif kind not in digests:
            data = _read_bytes(path)
            if data is None:
                return None
            digests["file"] = digest_bytes(data)
            if kind == "code":
                digests["code"] = self._shape(data, digests["file"]).digest()
        return digests[kind]

    def _confirm(self, relpath: str) -> None:
        (self._held if relpath.endswith(".py") else self._confirmed).add(relpath)

    def digest_ran(self, relpath: str, functions: str) -> str | None:
        """The ``code`` digest of ``relpath`` keeping the bodies of ``functions``
        (qualified names joined by commas, sorted)."""
        if self.digest(relpath, "file") is None:
            return None
        digests = self._entries[relpath][4]
        kind = RAN + functions
        if kind not in digests:
            shape = self._shapes.get(digests["file"])
            if shape is None:
                data = _read_bytes(os.path.join(self.root, relpath))
                if data is None or digest_bytes(data) != digests["file"]:
                    return None  # changed since it was stat'ed: a miss now, looked at again later
                shape = self._shape(data, digests["file"])
            digests[kind] = shape.digest(frozenset(functions.split(",")))
        return digests[kind]

    def _shape(self, data: bytes, file_digest: str) -> CodeShape:
        shape = self._shapes.get(file_digest)
        if shape is None:
            if len(self._shapes) >= SHAPES_KEPT:
                del self._shapes[next(iter(self._shapes))]
            shape = self._shapes[file_digest] = CodeShape(data)
        return shape

    def export(self) -> dict:
        """The stat cache to remember for the next run, racy entries left out."""
        horizon = time.time_ns() - int(RACY_SECONDS * 1e9)
        return {
            relpath: entry
            for relpath, entry in self._entries.items()
            if entry[1] < horizon and entry[2] < horizon
        }


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _valid_entry(entry: object) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 5
        and all(isinstance(x, int) for x in entry[:4])
        and isinstance(entry[4], dict)
        and all((k in KINDS or k.startswith(RAN)) and isinstance(v, str) for k, v in entry[4].items())
    )
