#!/usr/bin/env python3
"""Safety (mutation) harness for pytest-cachevault.

The product's first law: a cache hit must never hide a failure.  This harness
checks it on real third-party test suites:

1. prepare the suite (``benchmarks/suites.py``: sdist, venv, pytest, plugin);
2. run the suite once without the vault (baseline truth), then warm the vault on
   the unmutated source with two ``--vault`` runs;
3. for each mutant (one token of one library source file edited): run the suite
   without the vault (the truth) and with the warm vault, then restore the file;
4. per test id, a *stale result* is a test that failed/errored in the truth run
   but passed, skipped or xfailed in the vault run.  There must be none.

It also reports, per mutant, how many tests the vault re-ran (precision).

Run ``python3 benchmarks/mutate.py --help`` for the options; the results are
written to ``docs/mutation.md`` (and JSON under ``benchmarks/.work/mutate/``).
The exit status is 1 if any stale result was found, 2 on a harness error.

Mutation operators (all deterministic for a given ``--seed``), by *kind*:

* in function bodies: ``num`` (n -> n+1), ``cmp`` (< <=, > >=, == != flipped),
  ``return`` (return x -> return None), ``bool`` (True <-> False);
* module-level code: ``module-const`` (a constant in a module-level assignment),
  ``class-attr`` (a constant in a class-body assignment), ``default-arg`` (a
  constant in a default argument value), ``module-code`` (other import-time
  code: a comparison or constant in a module-level ``if``, a decorator argument...).
  The edit itself is num/bool/cmp, or for strings ``'abc'`` -> ``''``;
* inputs that are not code: ``data`` (one digit of a data file the tests read,
  ``DATA_FILES``; in a binary file one header byte), ``env`` (an environment variable
  the suite reads set to another value for both runs, ``ENV_MUTANTS``).

Candidates are limited to the library files the suite imports (not its tests) and,
for function-body kinds, to statements the unmutated suite executes (one coverage
run, ``--no-coverage-filter`` to skip).  Kinds take turns, the kind with the fewest
kills first, until ``--killed`` mutants were killed or ``--max-mutants`` were tried.

The source is edited as text, one token (or one expression for ``return``),
positions found with ``ast`` + ``tokenize``; the ``.pyc`` of the file is removed
after each write (a same-size edit within one second would otherwise be shadowed by
it).  The original is always restored (try/finally, SIGTERM handled); a journal +
backup under ``.work/mutate/journal/`` lets the next run of the same suite restore a
file if a run was killed hard.  That recovery happens only while holding the suite
directory's lock (``suites.prepare``), never for a suite another harness is running.

Outcomes come from a tiny recorder plugin (``-p cv_mutate_recorder``, written to
``.work/mutate/recorder/``) that writes one JSON line per test id: its worst phase
outcome (subtest failures included) and the vault's ``report.vault`` mark
(``cached`` for a replay).  The ``(cached)`` words of the ``-v`` output are counted as
a cross-check.  The truth and the vault run go side by side (``--serial`` to
not); the truth uses its own pytest cache dir.  The slowest tests of each suite are
deselected for mutation runs (``SUITE_ARGS``; ``--full-suites`` to keep them).
"""

from __future__ import annotations

import argparse
import ast
import bisect
import dataclasses
import datetime
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tokenize
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "mutate"
JOURNAL_DIR = WORK / "journal"
RESULTS_DIR = WORK / "results"
RECORDER_DIR = WORK / "recorder"
DEFAULT_OUTPUT = REPO / "docs" / "mutation.md"
RESULTS_SUFFIX = [""]  # set by --results-suffix
INPUTS_SUFFIX = "-inputs"  # results of a --kinds=data,env run, rendered with the main ones

DEFAULT_SUITES = ("more-itertools", "packaging", "python-dateutil")
# distribution name -> top-level import name of the library under test
IMPORT_NAMES = {
    "more-itertools": "more_itertools",
    "packaging": "packaging",
    "python-dateutil": "dateutil",
}

#: Extra pytest arguments per suite for the mutation runs (``--full-suites`` drops them):
#: the few tests that dominate a suite's run time, so that ~30 mutants x 2 runs stay
#: bounded on a 2-core machine.  Deselected tests are named in the report.
SUITE_ARGS = {
    "more-itertools": [
        # 70 s + 10 s + 10 s of a ~2 min suite
        "--deselect", "tests/test_recipes.py::PrimeFunctionTests::test_primes",
        "--deselect", "tests/test_recipes.py::PrimeFunctionTests::test_nth_prime_approximate",
        "--deselect", "tests/test_more.py::DiscreteFourierTransformTests::test_roundtrip",
    ],
    "packaging": [
        # 50,784 of its 62,423 tests: every ordered pair of ~160 versions x 6 operators
        "-k", "not test_comparison_true and not test_comparison_false",
        # its addopts has --showlocals: a mutant failing thousands of tests spent over
        # 10 minutes formatting tracebacks (tbstyle is not part of the vault's key)
        "--tb=line",
    ],
    "python-dateutil": [
        # ~30 s of a ~2 min suite: every zone of the system tz database, twice
        "-k", "not test_ambiguous_and_imaginary and not test_matches_zoneinfo",
    ],
}

#: Data files (relative to the suite root) that the suite's tests read: text files get
#: digit edits, binary files (``:bin``) single-byte edits at these header offsets.
DATA_FILES = {
    "packaging": [
        "tests/pylock/pylock.spec-example.toml",
        "tests/metadata/everything.metadata",
        "tests/manylinux/hello-world-x86_64-amd64:bin",
        "tests/musllinux/musl-x86_64:bin",
    ],
}
BINARY_OFFSETS = (4, 5, 18)  # ELF class, data encoding, machine
#: Environment variables the suite's code reads, and values to try.
ENV_MUTANTS = {
    "python-dateutil": [
        # read by the C library too: part of the environment fingerprint
        ("TZ", "Asia/Tokyo"), ("TZ", "America/St_Johns"), ("TZ", "UTC"),
        # read by its tests through os.environ (tests/_common.py): traced per test
        ("DATEUTIL_MAY_CHANGE_TZ", "1"), ("DATEUTIL_MAY_NOT_CHANGE_TZ_VAR", "1"),
    ],
}

FUNCTION_KINDS = ("num", "cmp", "return", "bool")
MODULE_KINDS = ("module-const", "class-attr", "default-arg", "module-code")
INPUT_KINDS = ("data", "env")
ALL_KINDS = FUNCTION_KINDS + MODULE_KINDS + INPUT_KINDS

CMP_FLIP = {
    ast.Lt: ("<", "<="),
    ast.LtE: ("<=", "<"),
    ast.Gt: (">", ">="),
    ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="),
    ast.NotEq: ("!=", "=="),
}

FAILED = ("failed", "error")
HIDING = ("passed", "skipped", "xfailed", "xpassed")

MEMORY_LIMIT = 6 * 1024**3  # per pytest subprocess (address space)


class HarnessError(Exception):
    pass


# --------------------------------------------------------------------------------------
# Mutant discovery
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Mutant:
    path: str  # absolute path of the file
    relpath: str  # path shown in reports (relative to the suite root)
    line: int
    col: int  # character column, 0-based
    start: int  # absolute character offsets of the replaced text
    end: int
    before: str
    after: str
    operator: str  # num / cmp / return / bool / str
    kind: str  # one of ALL_KINDS
    stmt_line: int = 0  # first line of the innermost statement holding the edit
    env: dict | None = None  # kind "env": variables set for both runs

    @property
    def label(self) -> str:
        return f"{self.relpath}:{self.line}"

    def short(self, limit: int = 40) -> str:
        def clip(s: str) -> str:
            s = " ".join(s.split())
            return s if len(s) <= limit else s[: limit - 1] + "…"

        if self.operator == "byte":
            return f"byte {self.start}: {ord(self.before):#04x} → {ord(self.after):#04x}"
        if self.operator == "env":
            return f"{clip(self.before)} → {clip(self.after)}"
        return f"{clip(self.before)} → {clip(self.after)}"


class _Finder:
    """Walk one module's AST, yielding (node, operator, kind) mutation sites."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.sites: list[tuple[ast.AST, str, str, Any]] = []

    # -- helpers ------------------------------------------------------------------
    @staticmethod
    def _is_docstring(stmt: ast.stmt) -> bool:
        return (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        )

    @staticmethod
    def _is_skipped_if(node: ast.If) -> bool:
        test = node.test
        text = ast.unparse(test)
        return "TYPE_CHECKING" in text or "__name__" in text

    @staticmethod
    def _dunder_target(stmt: ast.stmt) -> bool:
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        for t in targets:
            if isinstance(t, ast.Name) and t.id.startswith("__") and t.id.endswith("__"):
                return True
        return False

    # -- walking ------------------------------------------------------------------
    def run(self) -> list[tuple[ast.AST, str, str, Any]]:
        self._body(self.tree.body, scope="module", in_generator=False)
        return self.sites

    def _body(self, body: list[ast.stmt], scope: str, in_generator: bool) -> None:
        for i, stmt in enumerate(body):
            if i == 0 and self._is_docstring(stmt):
                continue
            self._stmt(stmt, scope, in_generator)

    def _stmt(self, stmt: ast.stmt, scope: str, in_generator: bool) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in stmt.decorator_list:
                self._expr(dec, self._code_kind(scope), scope)
            args = stmt.args
            for default in [*args.defaults, *[d for d in args.kw_defaults if d is not None]]:
                self._expr(default, "default-arg", scope)
            is_gen = any(
                isinstance(n, (ast.Yield, ast.YieldFrom))
                for n in _walk_same_function(stmt)
            )
            self._body(stmt.body, scope="function", in_generator=is_gen)
            return
        if isinstance(stmt, ast.ClassDef):
            for dec in stmt.decorator_list:
                self._expr(dec, self._code_kind(scope), scope)
            for base in [*stmt.bases, *[k.value for k in stmt.keywords]]:
                self._expr(base, self._code_kind(scope), scope)
            self._body(stmt.body, scope="class" if scope != "function" else "function",
                       in_generator=False)
            return
        if self._dunder_target(stmt):
            return
        if isinstance(stmt, ast.If) and scope != "function" and self._is_skipped_if(stmt):
            return
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            if stmt.value is None:
                return
            if scope == "module":
                kind = "module-const"
            elif scope == "class":
                kind = "class-attr"
            else:
                kind = None
            self._expr(stmt.value, kind or self._code_kind(scope), scope)
            return
        if isinstance(stmt, ast.Return):
            if scope == "function" and stmt.value is not None and not in_generator:
                v = stmt.value
                if not (isinstance(v, ast.Constant) and v.value is None):
                    self.sites.append((v, "return", "return", None))
                self._expr(v, self._code_kind(scope), scope)
            return
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal,
                             ast.Pass, ast.Break, ast.Continue)):
            return
        # generic statement: visit expressions, recurse into nested bodies
        for field, value in ast.iter_fields(stmt):
            if field in ("body", "orelse", "finalbody"):
                self._body_no_doc(value, scope, in_generator)
            elif field == "handlers":
                for h in value:
                    if h.type is not None:
                        self._expr(h.type, self._code_kind(scope), scope)
                    self._body_no_doc(h.body, scope, in_generator)
            elif field == "cases":  # match statement
                for case in value:
                    if case.guard is not None:
                        self._expr(case.guard, self._code_kind(scope), scope)
                    self._body_no_doc(case.body, scope, in_generator)
            elif field in ("annotation", "type_comment", "pattern"):
                continue
            elif isinstance(value, ast.expr):
                self._expr(value, self._code_kind(scope), scope)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.expr):
                        self._expr(item, self._code_kind(scope), scope)
                    elif isinstance(item, ast.withitem):
                        self._expr(item.context_expr, self._code_kind(scope), scope)

    def _body_no_doc(self, body: list[ast.stmt], scope: str, in_generator: bool) -> None:
        for stmt in body:
            if self._is_docstring(stmt):
                continue
            self._stmt(stmt, scope, in_generator)

    @staticmethod
    def _code_kind(scope: str) -> str:
        return "module-code" if scope in ("module", "class") else "function"

    def _expr(self, node: ast.expr, kind: str, scope: str) -> None:
        """Collect constant and comparison sites inside an expression."""
        stack: list[tuple[ast.AST, str]] = [(node, kind)]
        while stack:
            n, k = stack.pop()
            if isinstance(n, ast.JoinedStr):
                continue  # f-strings: positions of parts are unreliable
            if isinstance(n, ast.Lambda):
                for d in [*n.args.defaults, *[d for d in n.args.kw_defaults if d]]:
                    stack.append((d, "default-arg"))
                stack.append((n.body, "function"))
                continue
            if isinstance(n, (ast.Subscript,)) and _looks_like_annotation(n):
                continue
            if isinstance(n, ast.Constant):
                self._constant(n, k)
                continue
            if isinstance(n, ast.Compare):
                for i, op in enumerate(n.ops):
                    if type(op) in CMP_FLIP:
                        ck = "cmp" if k == "function" else k
                        self.sites.append((n, "cmp", ck, i))
            for child in ast.iter_child_nodes(n):
                if isinstance(child, ast.expr):
                    stack.append((child, k))
                elif isinstance(child, ast.comprehension):
                    stack.append((child.iter, k))
                    stack.append((child.target, k))
                    for cond in child.ifs:
                        stack.append((cond, k))
                elif isinstance(child, ast.keyword):
                    stack.append((child.value, k))

    def _constant(self, n: ast.Constant, kind: str) -> None:
        v = n.value
        if isinstance(v, bool):
            self.sites.append((n, "bool", "bool" if kind == "function" else kind, None))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            if isinstance(v, float) and not math.isfinite(v):
                return
            self.sites.append((n, "num", "num" if kind == "function" else kind, None))
        elif isinstance(v, (str, bytes)) and kind in MODULE_KINDS:
            self.sites.append((n, "str", kind, None))


def _looks_like_annotation(n: ast.Subscript) -> bool:
    base = n.value
    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
    return name in {"Literal", "Optional", "Union", "Callable", "TypeVar", "Annotated"}


def _walk_same_function(fn: ast.AST) -> Iterable[ast.AST]:
    """ast.walk that does not descend into nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(n))


class _Source:
    """Source text with (line, utf-8 byte column) -> character offset conversion."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self._tokens: list[tokenize.TokenInfo] | None = None
        self.token_offsets: list[int] = []

    def offset(self, lineno: int, byte_col: int) -> int:
        line = self.lines[lineno - 1]
        char_col = len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))
        return self.starts[lineno - 1] + char_col

    def char_offset(self, lineno: int, char_col: int) -> int:
        return self.starts[lineno - 1] + char_col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self.offset(node.lineno, node.col_offset),
            self.offset(node.end_lineno, node.end_col_offset),
        )

    def ensure_tokens(self) -> None:
        self.tokens  # noqa: B018 - computes token_offsets

    @property
    def tokens(self) -> list[tokenize.TokenInfo]:
        if self._tokens is None:
            self._tokens = list(tokenize.generate_tokens(io.StringIO(self.text).readline))
            self.token_offsets = [self.char_offset(*t.start) for t in self._tokens]
        return self._tokens


def _string_tokens(src: _Source, start: int, end: int) -> list[tokenize.TokenInfo]:
    """Significant tokens starting within [start, end)."""
    offsets = src.token_offsets
    i = bisect.bisect_left(offsets, start)
    out = []
    while i < len(offsets) and offsets[i] < end:
        tok = src.tokens[i]
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            out.append(tok)
        i += 1
    return out


def _edit_for(src: _Source, node: ast.AST, operator: str, extra: Any) -> tuple[int, int, str, str] | None:
    """(start, end, before, after) of the one-token edit, or None if not applicable."""
    if operator == "cmp":
        left = node.left if extra == 0 else node.comparators[extra - 1]
        right = node.comparators[extra]
        a = src.offset(left.end_lineno, left.end_col_offset)
        b = src.offset(right.lineno, right.col_offset)
        before, after = CMP_FLIP[type(node.ops[extra])]
        for tok in _string_tokens(src, a, b):
            if tok.type == tokenize.OP and tok.string == before:
                s = src.char_offset(*tok.start)
                return s, s + len(before), before, after
        return None
    start, end = src.span(node)
    before = src.text[start:end]
    if operator == "return":
        return start, end, before, "None"
    value = node.value
    if operator == "bool":
        if before not in ("True", "False"):
            return None
        return start, end, before, "False" if value else "True"
    if operator == "num":
        toks = _string_tokens(src, start, end)
        if len(toks) != 1 or toks[0].type != tokenize.NUMBER:
            return None
        after = repr(value + 1) if isinstance(value, int) else repr(value + 1.0)
        return start, end, before, after
    if operator == "str":
        toks = _string_tokens(src, start, end)
        if not toks or any(t.type != tokenize.STRING for t in toks):
            return None
        prefix = "b" if isinstance(value, bytes) else ""
        after = f"{prefix}''" if value else f"{prefix}'x'"
        return start, end, before, after
    return None


def find_mutants(path: Path, relpath: str) -> list[Mutant]:
    """Mutation sites of one file.  Edits are checked to parse only when applied
    (:func:`mutated_source`): a literal-for-literal edit always does."""
    text = path.read_bytes().decode("utf-8")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    src = _Source(text)
    src.ensure_tokens()
    stmts = sorted(
        (src.offset(n.lineno, n.col_offset), src.offset(n.end_lineno, n.end_col_offset),
         n.lineno) for n in ast.walk(tree) if isinstance(n, ast.stmt)
    )
    stmt_starts = [st[0] for st in stmts]
    mutants: list[Mutant] = []
    seen: set[tuple[int, int, str]] = set()
    for node, operator, kind, extra in _Finder(tree).run():
        try:
            edit = _edit_for(src, node, operator, extra)
        except (IndexError, UnicodeError, tokenize.TokenError):
            continue
        if edit is None:
            continue
        start, end, before, after = edit
        if (start, end, after) in seen:
            continue
        seen.add((start, end, after))
        line = text.count("\n", 0, start) + 1
        col = start - (text.rfind("\n", 0, start) + 1)
        stmt_line = line
        i = bisect.bisect_right(stmt_starts, start) - 1
        while i >= 0:  # innermost statement holding the edit
            a, b, ln = stmts[i]
            if a <= start and end <= b:
                stmt_line = ln
                break
            i -= 1
        mutants.append(Mutant(str(path), relpath, line, col, start, end, before, after,
                              operator, kind, stmt_line))
    return mutants


def find_input_mutants(suite: str, root: str) -> list[Mutant]:
    """``data`` and ``env`` mutants of a suite (see ``DATA_FILES``, ``ENV_MUTANTS``)."""
    mutants = []
    for spec in DATA_FILES.get(suite, []):
        relpath, _, mode = spec.partition(":")
        path = Path(root, relpath)
        if not path.is_file():
            continue
        data = path.read_bytes()
        if mode == "bin":
            sites = [(i, chr(data[i]), chr(data[i] ^ 1)) for i in BINARY_OFFSETS if i < len(data)]
        else:
            text = data.decode("latin-1")
            sites = [(i, c, str((int(c) + 1) % 10)) for i, c in enumerate(text) if c.isdigit()]
        for offset, before, after in sites:
            line = data.count(b"\n", 0, offset) + 1
            mutants.append(Mutant(str(path), relpath, line, offset, offset, offset + 1,
                                  before, after, "byte" if mode == "bin" else "digit", "data"))
    for name, value in ENV_MUTANTS.get(suite, []):
        before = os.environ.get(name, "(unset)")
        mutants.append(Mutant("", f"${name}", 0, 0, 0, 0, before, value, "env", "env",
                              env={name: value}))
    return mutants


def mutated_bytes(m: Mutant, data: bytes) -> bytes | None:
    """The file's bytes with the mutant applied (any file kind), or None."""
    if m.kind == "data":
        if data[m.start:m.end] != m.before.encode("latin-1"):
            return None
        return data[:m.start] + m.after.encode("latin-1") + data[m.end:]
    mutated = mutated_source(m, data.decode("utf-8"))
    return None if mutated is None else mutated.encode("utf-8")


def mutated_source(m: Mutant, text: str) -> str | None:
    """The mutated text, or None if it does not parse or is equivalent as an AST."""
    if text[m.start:m.end] != m.before:
        return None
    mutated = text[:m.start] + m.after + text[m.end:]
    try:
        if ast.dump(ast.parse(mutated)) == ast.dump(ast.parse(text)):
            return None
    except SyntaxError:
        return None
    return mutated


def is_test_file(path: Path) -> bool:
    parts = {p.lower() for p in path.parts[:-1]}
    name = path.name
    return (
        bool(parts & {"test", "tests", "testing"})
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


# --------------------------------------------------------------------------------------
# Applying and restoring (crash-safe)
# --------------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _drop_pyc(path: Path) -> None:
    """Remove compiled caches of ``path``: a same-size edit within one second would
    otherwise be shadowed by a .pyc validated on (mtime seconds, size)."""
    cache = path.parent / "__pycache__"
    if cache.is_dir():
        for pyc in cache.glob(f"{path.stem}.*.pyc"):
            try:
                pyc.unlink()
            except OSError:
                pass


class Applied:
    """Context manager: apply one mutant, always restore the original."""

    def __init__(self, mutant: Mutant) -> None:
        self.mutant = mutant
        self.path = Path(mutant.path)
        key = _sha(mutant.path.encode())[:16]
        self.journal = JOURNAL_DIR / f"{key}.json"
        self.backup = JOURNAL_DIR / f"{key}.orig"

    def __enter__(self) -> "Applied":
        if self.mutant.kind == "env":
            return self  # nothing to edit: the runs get the variable
        JOURNAL_DIR.mkdir(parents=True, exist_ok=True)
        original = self.path.read_bytes()
        m = self.mutant
        mutated = mutated_bytes(m, original)
        if mutated is None:
            raise HarnessError(f"{m.label}: mutant no longer applies (source changed?)")
        self.original = original
        self.backup.write_bytes(original)
        self.journal.write_text(json.dumps(
            {"path": str(self.path), "backup": str(self.backup), "sha256": _sha(original)}
        ))
        self.path.write_bytes(mutated)
        _drop_pyc(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mutant.kind == "env":
            return
        self.path.write_bytes(self.original)
        _drop_pyc(self.path)
        if _sha(self.path.read_bytes()) != _sha(self.original):
            raise HarnessError(f"could not restore {self.path}")
        self.journal.unlink(missing_ok=True)
        self.backup.unlink(missing_ok=True)


def recover_journal(under: str) -> list[str]:
    """Restore any file under ``under`` left mutated by a run that was killed hard.

    Called with the suite directory's lock held (``suites.prepare``), so a journal
    found there cannot belong to a harness that is still running.
    """
    restored = []
    if not JOURNAL_DIR.is_dir():
        return restored
    prefix = os.path.realpath(under) + os.sep
    for journal in sorted(JOURNAL_DIR.glob("*.json")):
        try:
            info = json.loads(journal.read_text())
            if not os.path.realpath(info["path"]).startswith(prefix):
                continue
            backup = Path(info["backup"])
            data = backup.read_bytes()
            if _sha(data) != info["sha256"]:
                raise HarnessError(f"backup {backup} does not match its journal")
            path = Path(info["path"])
            if path.exists() and path.read_bytes() != data:
                path.write_bytes(data)
                _drop_pyc(path)
                restored.append(str(path))
            backup.unlink(missing_ok=True)
            journal.unlink()
        except (OSError, ValueError, KeyError) as exc:
            raise HarnessError(f"cannot recover from {journal}: {exc}") from exc
    return restored


class _Terminated(BaseException):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise _Terminated(f"signal {signum}")


# --------------------------------------------------------------------------------------
# Running pytest and reading outcomes
# --------------------------------------------------------------------------------------

RECORDER = '''\
"""Outcome recorder for benchmarks/mutate.py (loaded with -p cv_mutate_recorder).

Writes one JSON line per test (at logfinish, so replayed tests count too), one per
failed collector, and one at session end.
"""
import json
import os
import sys

_PATH = os.environ.get("CV_MUTATE_OUTCOMES")
_PACKAGES = [p for p in os.environ.get("CV_MUTATE_PACKAGES", "").split(",") if p]
_state = {"fh": None, "tests": {}}


def _write(obj):
    if not _PATH:
        return
    if _state["fh"] is None:
        _state["fh"] = open(_PATH, "a", encoding="utf-8")
    _state["fh"].write(json.dumps(obj) + "\\n")


def _text(report):
    try:
        return str(report.longrepr)[-1500:]
    except Exception:
        return "?"


def pytest_runtest_logreport(report):
    t = _state["tests"].setdefault(report.nodeid, {"o": None, "x": False, "v": ""})
    vault = getattr(report, "vault", None)
    if vault and not t["v"]:
        t["v"] = str(vault)
    if hasattr(report, "wasxfail"):
        t["x"] = True
    if report.failed:
        if t["o"] not in ("failed", "error"):
            t["o"] = "failed" if report.when == "call" else "error"
            t["r"] = _text(report)
    elif report.skipped:
        if t["o"] is None:
            t["o"] = "skipped"
    elif report.when == "call" and t["o"] is None:
        t["o"] = "passed"


def pytest_runtest_logfinish(nodeid, location):
    t = _state["tests"].pop(nodeid, None)
    if t is None:
        return
    outcome = t["o"] or "error"
    if t["x"] and outcome == "skipped":
        outcome = "xfailed"
    elif t["x"] and outcome == "passed":
        outcome = "xpassed"
    rec = {"n": nodeid, "o": outcome, "v": t["v"]}
    if "r" in t:
        rec["r"] = t["r"]
    _write(rec)


def pytest_collectreport(report):
    if report.failed:
        _write({"collect_error": report.nodeid, "r": _text(report)})


def pytest_sessionfinish(session, exitstatus):
    for nodeid in list(_state["tests"]):  # interrupted tests
        pytest_runtest_logfinish(nodeid, None)
    modules = {}
    for name, mod in list(sys.modules.items()):
        if any(name == p or name.startswith(p + ".") for p in _PACKAGES):
            f = getattr(mod, "__file__", None)
            if f:
                modules[name] = os.path.abspath(f)
    _write({"exit": int(exitstatus), "collected": session.testscollected,
            "modules": modules})
    if _state["fh"] is not None:
        _state["fh"].flush()
'''

_VERBOSE_LINE = re.compile(
    r"^(?P<nodeid>\S.*?) (?P<word>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)"
    r"(?P<cached> \(cached\))?(?: .*)?$"
)


@dataclasses.dataclass
class Run:
    label: str
    exit: int | None  # None: timed out / killed
    seconds: float
    tests: dict[str, str]  # nodeid -> passed/failed/error/skipped/xfailed/xpassed
    cached: set[str]
    collect_errors: dict[str, str]
    longrepr: dict[str, str]
    modules: dict[str, str]
    verbose_cached: int  # "(cached)" markers counted in the -v output (cross-check)
    log: str
    reasons: dict[str, str]  # nodeid -> why the vault ran it (new, changed, ...)
    summary: str  # the plugin's "vault: N replayed, M run ..." line

    @property
    def failed(self) -> set[str]:
        return {t for t, o in self.tests.items() if o in FAILED}

    @property
    def counts(self) -> Counter:
        return Counter(self.tests.values())


def _aggregate(records: list[dict]) -> tuple[dict, set, dict, dict, dict, int | None, dict]:
    collect_errors: dict[str, str] = {}
    modules: dict[str, str] = {}
    exit_code: int | None = None
    tests: dict[str, str] = {}
    cached: set[str] = set()
    longrepr: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for rec in records:
        if "n" in rec:
            nodeid = rec["n"]
            # a test id reported twice (rare: a re-run plugin) keeps its worst outcome
            if tests.get(nodeid) in FAILED:
                continue
            tests[nodeid] = rec["o"]
            if "r" in rec:
                longrepr[nodeid] = rec["r"]
            # the plugin marks replayed reports with report.vault == "cached"
            if rec.get("v") == "cached":
                cached.add(nodeid)
            else:
                cached.discard(nodeid)
                if rec.get("v"):
                    reasons[nodeid] = rec["v"]
        elif "collect_error" in rec:
            collect_errors[rec["collect_error"]] = rec.get("r", "")
        elif "exit" in rec:
            exit_code = rec["exit"]
            modules = rec.get("modules", {})
    return tests, cached, collect_errors, longrepr, modules, exit_code, reasons


def _preexec() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def kill_live() -> None:
    """Kill every pytest process group still running (interrupt, error)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _run_logged(cmd: list[str], cwd: str, env: dict, log, timeout: float) -> int | None:
    """Run ``cmd`` in its own session, output to ``log``; its exit code, None on timeout.

    The process group is killed on timeout or interruption, and the process is known
    to :func:`kill_live` while it runs."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_preexec)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        with _LIVE_LOCK:
            _LIVE.discard(proc)


def run_pytest(suite: "SuiteAdapter", label: str, vault: bool, store: Path, timeout: float,
               extra: list[str] | None = None, logdir: Path | None = None,
               extra_env: dict | None = None) -> Run:
    logdir = logdir or (suite.workdir / "logs")
    logdir.mkdir(parents=True, exist_ok=True)
    outcomes = logdir / f"{label}.jsonl"
    logfile = logdir / f"{label}.log"
    outcomes.unlink(missing_ok=True)
    args = [*suite.pytest_cmd, "-v", "-p", "cv_mutate_recorder"]
    if vault:
        args += ["--vault", f"--vault-dir={store}"]
    else:
        # the truth has its own pytest cache dir: it may run beside a vault run
        args += ["-p", "no:cachevault", "-o", f"cache_dir={suite.workdir / 'truth-cache'}"]
    args += suite.extra_args
    args += extra or []
    env = dict(suite.env, **(extra_env or {}))
    env["CV_MUTATE_OUTCOMES"] = str(outcomes)
    env["CV_MUTATE_PACKAGES"] = suite.import_name
    env["PYTHONPATH"] = os.pathsep.join(
        [str(RECORDER_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("PYTHONHASHSEED", "0")
    env["COLUMNS"] = "100"
    t0 = time.monotonic()
    with open(logfile, "w", encoding="utf-8", errors="replace") as log:
        log.write("$ " + " ".join(args) + "\n")
        log.flush()
        exit_code = _run_logged(args, suite.cwd, env, log, timeout)
    seconds = time.monotonic() - t0
    records = []
    if outcomes.exists():
        for line in outcomes.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    tests, cached, collect_errors, longrepr, modules, _, reasons = _aggregate(records)
    text = logfile.read_text(encoding="utf-8", errors="replace")
    verbose_cached = sum(
        1 for line in text.splitlines()
        if (m := _VERBOSE_LINE.match(line)) and m.group("cached")
    )
    summary = next((line.strip() for line in reversed(text.splitlines())
                    if line.startswith("vault: ")), "")
    return Run(label, exit_code, seconds, tests, cached, collect_errors, longrepr, modules,
               verbose_cached, str(logfile), reasons, summary)


# --------------------------------------------------------------------------------------
# Suites (benchmarks/suites.py)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class SuiteAdapter:
    name: str
    import_name: str
    cwd: str
    python: str
    pytest_cmd: list[str]
    extra_args: list[str]
    env: dict[str, str]
    root: str
    version: str
    workdir: Path  # harness scratch (store, logs) for this suite and interpreter
    release: Any = None  # lets other processes use the suite directory again


def prepare_suite(name: str, python: str | None, full: bool = False) -> SuiteAdapter:
    sys.path.insert(0, str(HERE))
    try:
        import suites  # type: ignore[import-not-found]
    except ImportError as exc:
        raise HarnessError(f"benchmarks/suites.py is missing or broken: {exc}") from exc
    finally:
        sys.path.remove(str(HERE))
    if name not in suites.SUITES:
        raise HarnessError(f"unknown suite {name!r}; known: {', '.join(suites.SUITES)}")
    env = suites.prepare(name, python or "python3")
    root = Path(env.src_root)
    return SuiteAdapter(
        name=name,
        import_name=IMPORT_NAMES.get(name, name.replace("-", "_")),
        cwd=str(root),
        python=str(env.python),
        pytest_cmd=[str(env.python), "-m", "pytest"],
        extra_args=[str(a) for a in env.test_args] + ([] if full else SUITE_ARGS.get(name, [])),
        env=env.run_env(),
        root=str(root),
        version=env.suite.version,
        workdir=Path(env.state_dir) / "mutate",
        release=getattr(env, "release", None),
    )


# --------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class MutantResult:
    mutant: Mutant
    status: str  # killed / survived / timeout / broken-run
    killed: list[str]  # test ids failing in truth but not in the baseline
    truth_failed: int
    collect_errors: int
    rerun: int
    cached: int
    total: int
    stale: list[dict]
    flaky: list[dict]
    truth_seconds: float
    vault_seconds: float
    note: str = ""
    reasons: dict = dataclasses.field(default_factory=dict)  # why tests re-ran, counted
    vault_summary: str = ""
    plugin: str = ""  # plugin revision when the mutant ran (the plugin is installed editable)


def _stale(truth: Run, vault: Run) -> list[dict]:
    out = []
    for nodeid in sorted(truth.failed):
        v = vault.tests.get(nodeid)
        if v is None:
            # a failing test that the vault run did not report at all
            # (a vault run that crashed or was interrupted hides nothing: it fails)
            if vault.exit == 0 or (vault.exit == 1 and not vault.collect_errors):
                out.append({"test": nodeid, "truth": truth.tests[nodeid], "vault": "missing",
                            "cached": False})
        elif v in HIDING:
            out.append({"test": nodeid, "truth": truth.tests[nodeid], "vault": v,
                        "cached": nodeid in vault.cached})
    for nodeid in sorted(set(truth.collect_errors) - set(vault.collect_errors)):
        hidden = [t for t in vault.tests if t.startswith(nodeid + "::") or t == nodeid]
        if hidden and all(vault.tests[t] in HIDING for t in hidden):
            out.append({"test": nodeid, "truth": "collection error", "vault": "collected",
                        "cached": any(t in vault.cached for t in hidden)})
    if not out and truth.exit not in (0, 5, None) and vault.exit == 0:
        out.append({"test": "(session)", "truth": f"exit {truth.exit}", "vault": "exit 0",
                    "cached": bool(vault.cached)})
    return out


def choose_mutants(candidates: list[Mutant], seed: int) -> dict[str, list[Mutant]]:
    """Per kind, a deterministic order: files round-robin (shuffled), sites shuffled."""
    rng = random.Random(seed)
    by_kind: dict[str, dict[str, list[Mutant]]] = defaultdict(lambda: defaultdict(list))
    for m in sorted(candidates, key=lambda m: (m.relpath, m.start, m.after)):
        by_kind[m.kind][m.relpath].append(m)
    ordered: dict[str, list[Mutant]] = {}
    for kind in ALL_KINDS:
        files = by_kind.get(kind)
        if not files:
            continue
        queues = {}
        for f in sorted(files):
            lst = list(files[f])
            rng.shuffle(lst)
            queues[f] = lst
        order: list[Mutant] = []
        names = sorted(queues)
        while queues:
            rng.shuffle(names)
            for f in list(names):
                if queues.get(f):
                    order.append(queues[f].pop())
                if f in queues and not queues[f]:
                    del queues[f]
                    names.remove(f)
        ordered[kind] = order
    return ordered


def coverage_lines(suite: SuiteAdapter, files: list[str], timeout: float) -> dict[str, set[int]] | None:
    """Lines of the library executed by the suite (unmutated), or None if unavailable."""
    probe = subprocess.run([suite.python, "-c", "import coverage"], capture_output=True,
                           cwd=suite.cwd, env=suite.env)
    if probe.returncode != 0:
        return None
    logdir = suite.workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    data = logdir / "coverage.data"
    out = logdir / "coverage.json"
    data.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    env = dict(suite.env, COVERAGE_FILE=str(data), PYTHONHASHSEED="0")
    include = ",".join(files)
    cmd = [suite.python, "-m", "coverage", "run", "--include", include, "-m", "pytest", "-q",
           "-p", "no:cachevault", *suite.extra_args]
    cmd += ["-o", f"cache_dir={suite.workdir / 'coverage-cache'}"]
    with open(logdir / "coverage.log", "w") as log:
        if _run_logged(cmd, suite.cwd, env, log, timeout) is None:
            return None
    rc = subprocess.run([suite.python, "-m", "coverage", "json", "-o", str(out)], cwd=suite.cwd,
                        env=env, capture_output=True)
    if rc.returncode != 0 or not out.exists():
        return None
    report = json.loads(out.read_text())
    lines: dict[str, set[int]] = {}
    for fname, info in report.get("files", {}).items():
        path = os.path.realpath(os.path.join(suite.cwd, fname))
        lines[path] = set(info.get("executed_lines", []))
    return lines


def run_suite(name: str, args: argparse.Namespace, log: "Logger") -> dict:
    log(f"[{name}] preparing (waits while another harness holds the suite)")
    suite = prepare_suite(name, args.python, full=args.full_suites)
    log(f"[{name}] suite ready: {suite.cwd} (python {suite.python})")
    try:
        for f in recover_journal(suite.root):
            log(f"[{name}] restored {f} from an interrupted run")
        return _run_suite(name, suite, args, log)
    finally:
        if suite.release is not None:
            suite.release()


def _run_suite(name: str, suite: SuiteAdapter, args: argparse.Namespace,
               log: "Logger") -> dict:
    RECORDER_DIR.mkdir(parents=True, exist_ok=True)
    (RECORDER_DIR / "cv_mutate_recorder.py").write_text(RECORDER)
    store = suite.workdir / "store"
    if store.exists():
        shutil.rmtree(store)
    logdir = suite.workdir / "logs"
    if logdir.exists():
        shutil.rmtree(logdir)
    pyver = subprocess.run([suite.python, "-c", "import sys; print(sys.version.split()[0])"],
                           capture_output=True, text=True).stdout.strip()

    # (0) baseline truth, unmutated
    base = run_pytest(suite, "baseline-truth", vault=False, store=store, timeout=args.timeout)
    if base.exit is None or not base.tests:
        raise HarnessError(f"[{name}] baseline run failed or ran no test; see {base.log}")
    log(f"[{name}] baseline (no vault): {len(base.tests)} tests, {dict(base.counts)}, "
        f"exit {base.exit}, {base.seconds:.1f}s")
    timeout = max(args.timeout_min, base.seconds * args.timeout_factor)

    # library files actually imported by the suite, excluding tests
    root = os.path.realpath(suite.root)
    files = sorted({os.path.realpath(f) for f in base.modules.values() if f.endswith(".py")})
    lib_files = [f for f in files
                 if not is_test_file(Path(os.path.relpath(f, root)))]
    outside = [f for f in lib_files if not f.startswith(root + os.sep)]
    if outside and not args.allow_outside:
        raise HarnessError(
            f"[{name}] the suite imports {suite.import_name} from outside the extracted "
            f"source ({outside[0]}); the harness only mutates the project's own tree")
    if not lib_files:
        raise HarnessError(f"[{name}] could not find imported {suite.import_name} files")
    log(f"[{name}] library files imported: {len(lib_files)}")

    # (1) warm the vault twice; meanwhile, find which library lines the suite executes
    covered = None
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        fcov = None if args.no_coverage_filter else pool.submit(
            coverage_lines, suite, lib_files, timeout * 4)
        warm1 = run_pytest(suite, "warm-1", vault=True, store=store, timeout=timeout * 3)
        warm2 = run_pytest(suite, "warm-2", vault=True, store=store, timeout=timeout * 3)
        for w in (warm1, warm2):
            log(f"[{name}] {w.label}: {len(w.tests)} tests, {len(w.cached)} cached "
                f"(-v markers: {w.verbose_cached}), exit {w.exit}, {w.seconds:.1f}s; {w.summary}")
            if w.exit is None or not w.tests:
                raise HarnessError(f"[{name}] vault warm-up run failed; see {w.log}")
        if len(warm2.cached) != warm2.verbose_cached:
            log(f"[{name}] WARNING: recorder saw {len(warm2.cached)} cached tests but the -v "
                f"output shows {warm2.verbose_cached} '(cached)' markers")
        warm_note = ""
        if set(warm2.tests) != set(base.tests):
            warm_note = (f"test ids differ between baseline and warm run: "
                         f"{len(set(base.tests) ^ set(warm2.tests))} ids")
            log(f"[{name}] WARNING: {warm_note}")

        if fcov is not None:
            covered = fcov.result()
            log(f"[{name}] coverage filter: " + (
                "unavailable" if covered is None else f"{sum(map(len, covered.values()))} lines"))
    except BaseException:
        kill_live()
        raise
    finally:
        pool.shutdown(wait=True)

    candidates: list[Mutant] = []
    for f in lib_files:
        for m in find_mutants(Path(f), os.path.relpath(f, root)):
            if covered is not None and m.kind in FUNCTION_KINDS:
                # statements never executed by the suite cannot kill a mutant
                if m.stmt_line not in covered.get(f, set()):
                    continue
            candidates.append(m)
    candidates += find_input_mutants(name, suite.root)
    if args.kinds:
        wanted_kinds = {k.strip() for k in args.kinds.split(",")}
        candidates = [m for m in candidates if m.kind in wanted_kinds]
    per_kind_available = Counter(m.kind for m in candidates)
    log(f"[{name}] candidate mutants: {len(candidates)} {dict(per_kind_available)}")
    if args.mutant:
        # targeted run: exactly the named sites, in the order given
        wanted = []
        for spec in args.mutant:
            parts = spec.rsplit(":", 2)
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                rel, line, nth = parts[0], int(parts[1]), int(parts[2])
            else:
                rel, line = spec.rsplit(":", 1)
                line, nth = int(line), 0
            every = [m for f in lib_files for m in find_mutants(Path(f), os.path.relpath(f, root))]
            here = [m for m in every if m.relpath == rel and m.line == line]
            if nth >= len(here):
                raise HarnessError(f"no mutant #{nth} at {rel}:{line} "
                                   f"({len(here)} there: {[m.short() for m in here]})")
            wanted.append(here[nth])
        queues = {"targeted": wanted}
    else:
        queues = choose_mutants(candidates, args.seed)

    results: list[MutantResult] = []
    killed_by_kind: Counter = Counter()
    tried_by_kind: Counter = Counter()
    # A kind whose mutants keep surviving yields its turn: the next kind is the one
    # with the fewest kills, a miss counting as half a kill; each kind gets at most
    # --kind-misses survivors in a row before it is skipped.
    misses_in_row: Counter = Counter()
    per_kind_cap = max(3, math.ceil(args.max_mutants / max(1, len(queues)) * 2))
    index = 0
    while True:
        n_killed = sum(1 for r in results if r.status == "killed")
        if n_killed >= args.killed or len(results) >= args.max_mutants:
            break
        eligible = [k for k in queues if queues[k] and tried_by_kind[k] < per_kind_cap
                    and misses_in_row[k] < args.kind_misses]
        if args.mutant:
            eligible = [k for k in queues if queues[k]]
        if not eligible:
            break
        kind = min(eligible, key=lambda k: (
            killed_by_kind[k] + 0.5 * (tried_by_kind[k] - killed_by_kind[k]),
            tried_by_kind[k], list(queues).index(k)))
        mutant = queues[kind].pop(0)
        if mutant.kind != "env" and mutated_bytes(mutant, Path(mutant.path).read_bytes()) is None:
            continue  # does not parse, or equivalent as an AST: not a mutant
        tried_by_kind[kind] += 1
        index += 1
        res = run_mutant(suite, mutant, index, base, store, timeout, args, log)
        results.append(res)
        if res.status == "killed":
            killed_by_kind[kind] += 1
            misses_in_row[kind] = 0
        else:
            misses_in_row[kind] += 1
        _save(name, suite, pyver, base, warm1, warm2, warm_note, candidates, results)

    return _save(name, suite, pyver, base, warm1, warm2, warm_note, candidates, results)


def truth_and_vault(suite: SuiteAdapter, label: str, store: Path, timeout: float,
                    serial: bool, env: dict | None = None) -> tuple[Run, Run]:
    """The truth run (no vault) and the vault run of the current source tree.

    By default the two run side by side (they only read the tree; the truth has its
    own pytest cache dir), which halves the wall time on a machine shared with
    other work; ``--serial`` runs them one after the other.
    """
    if serial:
        truth = run_pytest(suite, f"{label}-truth", vault=False, store=store, timeout=timeout,
                           extra_env=env)
        vault = run_pytest(suite, f"{label}-vault", vault=True, store=store, timeout=timeout,
                           extra_env=env)
        return truth, vault
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        ft = pool.submit(run_pytest, suite, f"{label}-truth", False, store, timeout, extra_env=env)
        fv = pool.submit(run_pytest, suite, f"{label}-vault", True, store, timeout, extra_env=env)
        return ft.result(), fv.result()
    except BaseException:
        kill_live()
        raise
    finally:
        pool.shutdown(wait=True)


def run_mutant(suite: SuiteAdapter, m: Mutant, index: int, base: Run, store: Path,
               timeout: float, args: argparse.Namespace, log: "Logger") -> MutantResult:
    label = f"m{index:03d}"
    plugin = plugin_revision()
    with Applied(m):
        truth, vault = truth_and_vault(suite, label, store, timeout, args.serial, m.env)
        stale = _stale(truth, vault) if truth.exit is not None and vault.exit is not None else []
        flaky: list[dict] = []
        # a failing test that really re-ran under the vault and passed: re-check it
        rerun_passes = [s for s in stale if not s["cached"] and s["test"] in truth.tests]
        if rerun_passes:
            ids = [s["test"] for s in rerun_passes][:50]
            check = run_pytest(suite, f"{label}-recheck", vault=False, store=store,
                               timeout=timeout, extra=ids, extra_env=m.env)
            for s in rerun_passes:
                if check.tests.get(s["test"]) not in FAILED:
                    stale.remove(s)
                    flaky.append(s)
        cached_stale = [s for s in stale if s["cached"]]
        if cached_stale:
            ids = [s["test"] for s in cached_stale if s["test"] in truth.tests][:50]
            if ids:
                check = run_pytest(suite, f"{label}-confirm", vault=False, store=store,
                                   timeout=timeout, extra=ids, extra_env=m.env)
                for s in cached_stale:
                    s["confirmed"] = check.tests.get(s["test"]) in FAILED
    if truth.exit is None:
        status, note = "timeout", "truth run timed out"
    elif vault.exit is None:
        status, note = "timeout", "vault run timed out"
    else:
        new_failures = truth.failed - base.failed
        new_collect = set(truth.collect_errors) - set(base.collect_errors)
        killed_flag = bool(new_failures or new_collect or
                           (truth.exit not in (0, 5) and base.exit in (0, 5) and not truth.tests))
        status, note = ("killed" if killed_flag else "survived"), ""
        if vault.exit not in (0, 1, 5) and truth.exit in (0, 1, 5):
            note = f"the vault run ended with exit {vault.exit} (the truth: {truth.exit})"
    killed = sorted(truth.failed - base.failed) + sorted(
        set(truth.collect_errors) - set(base.collect_errors))
    rerun = len([t for t in vault.tests if t not in vault.cached])
    res = MutantResult(
        mutant=m, status=status, killed=killed, truth_failed=len(truth.failed),
        collect_errors=len(truth.collect_errors), rerun=rerun, cached=len(vault.cached),
        total=len(vault.tests), stale=stale, flaky=flaky, truth_seconds=truth.seconds,
        vault_seconds=vault.seconds, note=note,
        reasons=dict(Counter(vault.reasons.values())), vault_summary=vault.summary,
        plugin=plugin,
    )
    if stale:
        for s in stale:
            s["longrepr"] = truth.longrepr.get(s["test"], truth.collect_errors.get(s["test"], ""))[-800:]
    flag = f" STALE×{len(stale)}" if stale else ""
    log(f"  {label} {m.kind:<12} {m.label} {m.short()}: {status}, killed {len(killed)}, "
        f"re-ran {rerun}/{len(vault.tests)}{flag} "
        f"[{truth.seconds:.0f}s+{vault.seconds:.0f}s]")
    return res


def _save(name: str, suite: SuiteAdapter, pyver: str, base: Run, warm1: Run, warm2: Run,
          warm_note: str, candidates: list[Mutant], results: list[MutantResult]) -> dict:
    data = {
        "suite": name,
        "version": suite.version,
        "pytest_args": suite.extra_args,
        "python": pyver,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "plugin": plugin_revision(),
        "tests": len(base.tests),
        "baseline": {"counts": dict(base.counts), "exit": base.exit,
                     "seconds": round(base.seconds, 1), "failed": sorted(base.failed)},
        "warm": [
            {"tests": len(w.tests), "cached": len(w.cached), "verbose_cached": w.verbose_cached,
             "exit": w.exit, "seconds": round(w.seconds, 1), "counts": dict(w.counts),
             "summary": w.summary}
            for w in (warm1, warm2)
        ],
        "warm_note": warm_note,
        "candidates": dict(Counter(m.kind for m in candidates)),
        "mutants": [
            {**dataclasses.asdict(r), "mutant": dataclasses.asdict(r.mutant)} for r in results
        ],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}{RESULTS_SUFFIX[0]}.json").write_text(json.dumps(data, indent=1))
    return data


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def plugin_revision() -> str:
    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "--short=12", "HEAD") or "no-commit"
    dirty = git("status", "--porcelain", "--", "pytest_cachevault")
    h = hashlib.sha256()
    for f in sorted((REPO / "pytest_cachevault").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"{head}{'+dirty' if dirty else ''} (sources sha256 {h.hexdigest()[:12]})"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("`", "'")


def killed_cell(r: dict) -> str:
    if r["status"] == "timeout":
        return f"({len(r['killed'])} before the timeout)" if r["killed"] else "—"
    return str(len(r["killed"]))


def stale_cell(r: dict) -> str:
    if r["status"] == "invalid":
        return f"({len(r['stale'])})"
    return f"**{len(r['stale'])}**" if r["stale"] else "0"


def render(datas: list[dict]) -> str:
    out: list[str] = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pythons = sorted({d["python"] for d in datas})
    plugins = sorted({d["plugin"] for d in datas}
                     | {r["plugin"] for d in datas for r in d["mutants"] if r.get("plugin")})
    total_stale = sum(len(r["stale"]) for d in datas for r in d["mutants"]
                      if r["status"] != "invalid")
    total_killed = sum(1 for d in datas for r in d["mutants"] if r["status"] == "killed")
    out += [
        "# Mutation safety results",
        "",
        "Generated by `benchmarks/mutate.py` (do not edit by hand). It checks the first law, "
        "*a cache hit must never hide a failure*, on real third-party suites. Each mutant "
        "edits one token of the library's own source (never its tests). The suite then runs "
        "once without the vault (the truth) and once with a warm vault. The store is never "
        "reset between mutants.",
        "",
        "- **killed**: at least one test fails in the truth run that passed before the "
        "mutation.",
        "- **stale**: a test that fails or errors in the truth run but passes, skips or "
        "xfails in the vault run. It must be 0. A failing test that the vault re-ran "
        "(not replayed) and that passed, and that passes again on an uncached re-check, "
        "is counted as flaky, not stale.",
        "- **re-run by vault**: tests the vault did not replay (`re-run/total`). This is "
        "precision: ideally only the tests that reach the edited code.",
        "",
        f"- date: {now}",
        f"- python: {', '.join(pythons)}",
        f"- plugin: {', '.join(plugins)}"
        + (" (the plugin is installed editable and changed while these runs went on: each "
           "run used the code of its moment; the revisions are those seen when the results "
           "were saved)" if len(plugins) > 1 else ""),
        f"- suites: {', '.join(d['suite'] + ' ' + d['version'] for d in datas)}",
        f"- **killed mutants: {total_killed}; stale results: {total_stale}**",
        "",
        "Reproduce: `python3 benchmarks/mutate.py "
        + "".join(f"--python python{'.'.join(p.split('.')[:2])} " for p in pythons[:1] if not p.startswith("3.11."))
        + f"--suites {','.join(d['suite'] for d in datas if d['suite'] in IMPORT_NAMES)} --seed "
        f"{datas[0].get('seed', 0) if datas else 0}"
        + "".join(f" {option}" for option in (datas[0].get("options", []) if datas else []))
        + "`"
        + (f" with `--results-suffix={RESULTS_SUFFIX[0]}`" if RESULTS_SUFFIX[0] else "")
        + ("" if all(d["suite"] in IMPORT_NAMES for d in datas) else
           "; the data and environment mutants of a suite alone: `python3 benchmarks/mutate.py "
           f"--suites SUITE --kinds data,env --results-suffix={INPUTS_SUFFIX}`")
        + " (options: `--help`). Raw results: "
        "`benchmarks/.work/mutate/results/<suite>.json`; every run's output: "
        "`benchmarks/.work/<python-tag>/<suite>/state/mutate/logs/`.",
        "",
    ]
    summary = ["| suite | tests | warm run 1 cached | warm run 2 cached | mutants tried | "
               "killed | killed tests | re-run (killed mutants) | stale |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in datas:
        ms = d["mutants"]
        killed = [r for r in ms if r["status"] == "killed"]
        summary.append(
            f"| {d['suite']} {d['version']} | {d['tests']} | {d['warm'][0]['cached']} | "
            f"{d['warm'][1]['cached']}/{d['warm'][1]['tests']} | {len(ms)} | {len(killed)} | "
            f"{sum(len(r['killed']) for r in killed)} | "
            f"{sum(r['rerun'] for r in killed)} | "
            f"{sum(len(r['stale']) for r in ms if r['status'] != 'invalid')} |")
    out += ["## Totals", "", *summary, ""]
    for d in datas:
        ms = d["mutants"]
        out += [f"## {d['suite']} {d['version']}", ""]
        b = d["baseline"]
        out.append(
            f"Baseline without the vault: {d['tests']} tests "
            f"({', '.join(f'{v} {k}' for k, v in sorted(b['counts'].items()))}) in "
            f"{b['seconds']}s. Warm-up with the vault: run 1 {d['warm'][0]['cached']} cached "
            f"({d['warm'][0]['seconds']}s), run 2 {d['warm'][1]['cached']} of "
            f"{d['warm'][1]['tests']} cached ({d['warm'][1]['seconds']}s).")
        if d.get("pytest_args"):
            out.append(f"pytest arguments: `{_md(' '.join(d['pytest_args']))}`.")
        if b["failed"]:
            out.append(f"Tests already failing without a mutant (ignored for *killed*): "
                       f"{len(b['failed'])}.")
        if d.get("note"):
            out.append(d["note"])
        if d.get("warm_note"):
            out.append(f"Note: {d['warm_note']}.")
        kinds = Counter(r["mutant"]["kind"] for r in ms)
        kkinds = Counter(r["mutant"]["kind"] for r in ms if r["status"] == "killed")
        out.append("Killed/tried by kind: " + ", ".join(
            f"{k} {kkinds.get(k, 0)}/{kinds[k]}" for k in ALL_KINDS if kinds.get(k)) + ".")
        out += ["", "| # | mutant (file:line:column) | kind (operator) | edit | status | killed tests (truth) | "
                "re-run by vault | stale |", "|---:|---|---|---|---|---:|---:|---:|"]
        for i, r in enumerate(ms, 1):
            m = r["mutant"]
            edit = Mutant(**m).short(32)
            out.append(
                f"| {i} | `{_md(m['relpath'])}:{m['line']}:{m['col'] + 1}` | "
                f"{m['kind'] if m['kind'] == m['operator'] else m['kind'] + ' (' + m['operator'] + ')'} | "
                f"`{_md(edit)}` | "
                f"{r['status']} | {killed_cell(r)} | {r['rerun']}/{r['total']} | "
                f"{stale_cell(r)} |")
        killed = [r for r in ms if r["status"] == "killed"]
        full = [r for r in killed if r["total"] and r["rerun"] == r["total"]]
        out += ["", f"Killed mutants after which the vault re-ran every test: {len(full)} of "
                f"{len(killed)}."]
        out += ["", f"Totals for killed mutants: {len(killed)} mutants, "
                f"{sum(len(r['killed']) for r in killed)} killed tests, "
                f"{sum(r['rerun'] for r in killed)} tests re-run "
                f"(of {sum(r['total'] for r in killed)} test executions), "
                f"{sum(len(r['stale']) for r in ms if r['status'] != 'invalid')} stale.", ""]
        noted = [(i, r) for i, r in enumerate(ms, 1) if r.get("note")]
        if noted:
            out += ["Notes (rows marked *invalid* count in no total):", ""]
            out += [f"- #{i} ({r['status']}): {r['note']}" for i, r in noted]
            out.append("")
        stale_rows = [(r, s) for r in ms for s in r["stale"] if r["status"] != "invalid"]
        if stale_rows:
            out += ["### Stale results", ""]
            for r, s in stale_rows:
                m = r["mutant"]
                out.append(f"- `{_md(m['relpath'])}:{m['line']}` {m['kind']} "
                           f"`{_md(Mutant(**m).short(60))}`: `{_md(s['test'])}` "
                           f"{s['truth']} without the vault, {s['vault']}"
                           f"{' (cached)' if s['cached'] else ''} with it"
                           f"{'; confirmed on re-run' if s.get('confirmed') else ''}.")
            out.append("")
        flaky_rows = [(r, s) for r in ms for s in r.get("flaky", [])]
        if flaky_rows:
            out += ["Flaky (failed in truth, re-ran and passed under the vault, passed again "
                    "on an uncached re-check; not a cache hit):", ""]
            for r, s in flaky_rows:
                out.append(f"- `{_md(r['mutant']['relpath'])}:{r['mutant']['line']}`: "
                           f"`{_md(s['test'])}`")
            out.append("")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


class Logger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        self.fh.write(line + "\n")
        self.fh.flush()


def list_candidates(paths: list[str], seed: int) -> int:
    cands: list[Mutant] = []
    for p in paths:
        root = Path(p)
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for f in files:
            rel = f.relative_to(root.parent if root.is_dir() else root.parent)
            if is_test_file(rel):
                continue
            cands += find_mutants(f, str(rel))
    print(f"{len(cands)} candidates: {dict(Counter(m.kind for m in cands))}")
    for kind, ms in choose_mutants(cands, seed).items():
        print(f"== {kind}")
        for m in ms[:12]:
            print(f"   {m.label:<40} {m.operator:<6} {m.short()}")
    return 0


#: Options that change which mutants a run tries: the report's "Reproduce" line
#: repeats those a run set to other than their defaults.
SELECTION_OPTIONS = ("killed", "max_mutants", "kind_misses", "kinds", "full_suites",
                     "no_coverage_filter", "allow_outside")


def selection_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The mutant-selecting options of this run that differ from their defaults."""
    found = []
    for name in SELECTION_OPTIONS:
        value = getattr(args, name)
        if value != parser.get_default(name):
            flag = "--" + name.replace("_", "-")
            found.append(flag if value is True else f"{flag} {value}")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", default=",".join(DEFAULT_SUITES),
                   help="comma-separated suites (default: %(default)s)")
    p.add_argument("--python", default=None,
                   help="interpreter for the suite venvs (passed to suites.prepare)")
    p.add_argument("--killed", type=int, default=15,
                   help="stop a suite after this many killed mutants (default %(default)s)")
    p.add_argument("--max-mutants", type=int, default=45,
                   help="cap on mutants tried per suite (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="mutant selection seed")
    p.add_argument("--timeout", type=float, default=1200,
                   help="seconds for the baseline run (default %(default)s)")
    p.add_argument("--timeout-factor", type=float, default=6.0,
                   help="per-run timeout = baseline seconds x this (default %(default)s)")
    p.add_argument("--timeout-min", type=float, default=90.0)
    p.add_argument("--kind-misses", type=int, default=4,
                   help="skip a mutation kind after this many survivors in a row "
                        "(default %(default)s)")
    p.add_argument("--serial", action="store_true",
                   help="run the truth and the vault run one after the other, not side by side")
    p.add_argument("--full-suites", action="store_true",
                   help="do not deselect the slowest tests (see SUITE_ARGS)")
    p.add_argument("--no-coverage-filter", action="store_true",
                   help="also try mutants on lines the suite never executes")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow mutating library files outside the extracted sdist")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown report path")
    p.add_argument("--results-suffix", default="",
                   help="save/read results as <suite><SUFFIX>.json (e.g. for a targeted "
                        "--mutant re-check that must not overwrite the main results)")
    p.add_argument("--report-only", action="store_true",
                   help="re-render the report from saved results of --suites")
    p.add_argument("--mutant", action="append", metavar="FILE:LINE[:N]",
                   help="run only this mutant (path relative to the sdist root, line, and "
                        "the N-th candidate on that line, default 0); repeatable")
    p.add_argument("--kinds", default="",
                   help="comma-separated mutation kinds to try (default: all); e.g. "
                        "'data,env' with --results-suffix=-inputs for a run of input "
                        "mutants, shown as its own section of the report")
    p.add_argument("--list-candidates", nargs="+", metavar="PATH",
                   help="print the mutation candidates of source files/dirs and exit")
    args = p.parse_args(argv)
    RESULTS_SUFFIX[0] = args.results_suffix

    if args.list_candidates:
        return list_candidates(args.list_candidates, args.seed)

    names = [s.strip() for s in args.suites.split(",") if s.strip()]
    WORK.mkdir(parents=True, exist_ok=True)
    log = Logger(WORK / "mutate.log")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        datas = []
        if args.report_only:
            for n in names:
                path = RESULTS_DIR / f"{n}{RESULTS_SUFFIX[0]}.json"
                if not path.exists():
                    raise HarnessError(f"no saved results for {n} ({path})")
                datas.append(json.loads(path.read_text()))
                inputs = RESULTS_DIR / f"{n}{INPUTS_SUFFIX}.json"
                if not RESULTS_SUFFIX[0] and inputs.exists():
                    data = json.loads(inputs.read_text())
                    data["suite"] += " (data and environment mutants)"
                    datas.append(data)
        else:
            for n in names:
                data = run_suite(n, args, log)
                data["seed"] = args.seed
                data["options"] = selection_options(p, args)
                (RESULTS_DIR / f"{n}{RESULTS_SUFFIX[0]}.json").write_text(
                    json.dumps(data, indent=1))
                datas.append(data)
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(datas))
        log(f"report written to {out}")
    except HarnessError as exc:
        log(f"ERROR: {exc}")
        return 2
    except (_Terminated, KeyboardInterrupt) as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}); sources restored")
        return 130
    stale = sum(len(r["stale"]) for d in datas for r in d["mutants"] if r["status"] != "invalid")
    killed = sum(1 for d in datas for r in d["mutants"] if r["status"] == "killed")
    log(f"done: {killed} killed mutants, {stale} stale results")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
