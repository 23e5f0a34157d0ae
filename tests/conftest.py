"""Shared machinery of the end-to-end suite.

Every test builds a small project with ``pytester``, runs the real pytest in a
subprocess (the plugin installs a process-wide tracer, so never in-process) and looks
only at what a user sees: outcomes, the ``vault:`` summary line, ``(cached)`` on
``-v`` lines, and files on disk.

Test modules import the plain helpers below (``from conftest import ...``); the
runners are fixtures:

* ``run_pytest(*args, cwd=None, env=None, wrap=())``: pytest with no vault option
  added (``wrap``: a command that runs it, e.g. in another mount namespace);
* ``run_vault(*args, ...)``: the same with ``--vault --vault-dir=<this test's store>``;
  it also has ``.store`` and ``.record_and_replay(**outcomes)``;
* ``ran_log``: which tests of the sample projects really executed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

#: Plugins found on developer machines that the inner runs never need; blocking them
#: keeps a subprocess start under a second (hypothesis alone costs one more).
BLOCKED_PLUGINS = ("hypothesispytest", "benchmark")

#: Inner runs must end well before this; a hang is a failure, not a stuck suite.
RUN_TIMEOUT = 120

_SUMMARY_RE = re.compile(r"^vault: (\d+) replayed, (\d+) run(?: \(([^)]*)\))?", re.MULTILINE)
_VERBOSE_RE = re.compile(
    r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b(.*)$", re.MULTILINE
)

_PROGRESS_RE = re.compile(r"\s+\[\s*\d+%\]\s*$")

CACHEDIR_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"


# -- reading a run's output ----------------------------------------------------------
def _summary(result: pytest.RunResult) -> re.Match[str]:
    text = result.stdout.str()
    found = list(_SUMMARY_RE.finditer(text))
    assert len(found) == 1, f"expected exactly one 'vault: ...' line in:\n{text}"
    return found[0]


def vault_counts(result: pytest.RunResult) -> tuple[int, int]:
    """``(replayed, run)`` from the ``vault: N replayed, M run`` line."""
    match = _summary(result)
    return int(match[1]), int(match[2])


def vault_reasons(result: pytest.RunResult) -> dict[str, int]:
    """Why tests ran, from ``(... run (1 new, 2 changed)``: ``{"new": 1, "changed": 2}``."""
    detail = _summary(result)[3]
    reasons: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (detail or "").split(","))):
        count, _, reason = part.partition(" ")
        reasons[reason] = int(count)
    return reasons


def verbose_statuses(result: pytest.RunResult) -> dict[str, str]:
    """``{nodeid: "PASSED (cached)"...}`` from the ``-v`` lines of a run."""
    statuses = {
        nodeid: _PROGRESS_RE.sub("", word + rest).strip()
        for nodeid, word, rest in _VERBOSE_RE.findall(result.stdout.str())
    }
    assert statuses, "no per-test lines in the output: was the run made with -v?"
    return statuses


def replayed(result: pytest.RunResult) -> set[str]:
    """Node ids shown as ``(cached)`` by a ``-v`` run."""
    return {n for n, status in verbose_statuses(result).items() if "(cached)" in status}


def executed(result: pytest.RunResult) -> set[str]:
    """Node ids that a ``-v`` run shows without ``(cached)``: they really ran."""
    return {n for n, status in verbose_statuses(result).items() if "(cached)" not in status}


def skip_lines(result: pytest.RunResult) -> list[str]:
    """The ``SKIPPED [1] file.py:3: reason`` lines of an ``-rs`` run.

    A replayed skip reads ``SKIPPED (cached) [1] ...``; the tag is dropped so that a
    live and a replayed run can be compared.
    """
    return [
        line.replace("SKIPPED (cached) [", "SKIPPED [", 1)
        for line in result.stdout.lines
        if line.startswith(("SKIPPED [", "SKIPPED (cached) ["))
    ]


# -- writing projects ----------------------------------------------------------------
def write_files(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``{relative path: dedented text}`` under ``root``; return ``root``."""
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in ``path``, as an editor would (no mtime games)."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur once in {path}:\n{text}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def copy_project(source: Path, target: Path) -> Path:
    """A fresh checkout of ``source`` at ``target``: new mtimes, no caches."""
    shutil.copytree(
        source,
        target,
        copy_function=shutil.copy,
        ignore=shutil.ignore_patterns(".pytest_cache", "__pycache__"),
    )
    return target


#: Imported by the sample projects' tests: appends the running test's node id to the
#: file named by $RAN_LOG (outside the project), so replayed tests leave no line.
RANLOG_MODULE = '''
    import os


    def ran():
        nodeid = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        with open(os.environ["RAN_LOG"], "a", encoding="utf-8") as log:
            log.write(nodeid + "\\n")
'''


def basic_project_files(module: str = "test_basic") -> dict[str, str]:
    """Three passing tests in ``<module>.py``, each noting in the run log that it ran."""
    return {
        "ranlog.py": RANLOG_MODULE,
        f"{module}.py": '''
            from ranlog import ran


            def test_add():
                ran()
                assert 1 + 1 == 2


            def test_upper():
                ran()
                assert "vault".upper() == "VAULT"


            def test_sorted():
                ran()
                assert sorted([3, 1, 2]) == [1, 2, 3]
        ''',
    }


BASIC_IDS = {"test_basic.py::test_add", "test_basic.py::test_upper", "test_basic.py::test_sorted"}

#: Every outcome a replay must reproduce, and the counts pytest reports for them.
OUTCOMES_FILES = {
    "test_outcomes.py": '''
        import sys

        import pytest


        def test_passes():
            assert [1, 2] == [1, 2]


        def test_prints():
            print("hello from stdout")
            print("hello from stderr", file=sys.stderr)


        def test_skips_at_runtime():
            pytest.skip("needs a GPU")


        @pytest.mark.skip(reason="not on this platform")
        def test_skipped_by_marker():
            pass


        @pytest.mark.xfail(reason="bug 12")
        def test_known_bug():
            assert 1 + 1 == 3


        @pytest.mark.xfail(reason="bug 7, maybe fixed")
        def test_maybe_fixed():
            assert 1 + 1 == 2
    ''',
}
OUTCOMES = {"passed": 2, "skipped": 2, "xfailed": 1, "xpassed": 1}
OUTCOMES_TOTAL = sum(OUTCOMES.values())


@pytest.fixture
def basic_project(pytester: pytest.Pytester, ran_log: RunLog) -> Path:
    """The three-test project (``BASIC_IDS``) in ``pytester.path``; its tests write ``ran_log``."""
    return write_files(pytester.path, basic_project_files())


@pytest.fixture
def outcomes_project(pytester: pytest.Pytester) -> Path:
    """The one-of-each-outcome project (``OUTCOMES``) in ``pytester.path``."""
    return write_files(pytester.path, OUTCOMES_FILES)


# -- the store -----------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path):
    """For the store's unit tests (``tests/unit``): an empty store, laid out and ready,
    in this test's temporary directory. It lives here, not in a conftest of its own, so
    that ``conftest`` names this module whichever tests a run selects."""
    from pytest_cachevault.store import Store

    store = Store(tmp_path / "vault")
    store.ensure()
    return store


def store_files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file())


def store_snapshot(store: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the store: relative path → (content, mtime_ns)."""
    return {
        p.relative_to(store).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in store_files(store)
    }


def age(paths: Iterable[Path], seconds: float) -> None:
    """Make ``paths`` look last modified ``seconds`` ago."""
    past = time.time() - seconds
    for path in paths:
        os.utime(path, (past, past))


def store_size(store: Path) -> int:
    return sum(p.stat().st_size for p in store_files(store))


def vault_warnings(result: pytest.RunResult) -> list[str]:
    """The ``vault warning: ...`` lines of a run, without the prefix."""
    prefix = "vault warning: "
    return [line[len(prefix) :] for line in result.stdout.lines if line.startswith(prefix)]


def no_traceback(result: pytest.RunResult) -> None:
    """Nothing crashed: no traceback, no internal error, in either stream."""
    text = result.stdout.str() + "\n" + result.stderr.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text, text


def record_of(store: Path, nodeid: str) -> Path:
    """The one result file holding ``nodeid`` in ``store`` (a file holds a test module's
    results of one run)."""
    from pytest_cachevault.store import Store

    vault = Store(store)
    found = [
        path
        for path, _ in vault.iter_records()
        if nodeid in (vault.read_record(path).payload or {}).get("tests", {})
    ]
    assert len(found) == 1, f"{len(found)} result files hold {nodeid} in {store}"
    return found[0]


def stored_tests(store: Path) -> list[str]:
    """The node ids of the results in a store, once per file holding one."""
    from pytest_cachevault.store import Store

    vault = Store(store)
    return sorted(
        nodeid
        for path, _ in vault.iter_records()
        for nodeid in (vault.read_record(path).payload or {}).get("tests", {})
    )


def record_files(store: Path) -> list[str]:
    """The result files of a store, relative to it."""
    from pytest_cachevault.store import LAYOUT, RESULTS, SUFFIX

    records = store / LAYOUT / RESULTS
    return sorted(p.relative_to(store).as_posix() for p in records.rglob(f"*{SUFFIX}")) if records.exists() else []


def unpacked(path: Path) -> bytes:
    """The JSON a record or object file holds (the file is gzip-compressed): for a
    record, ``{"schema":1,"checksum":"...",["hmac":"...",]"payload":...}``."""
    from pytest_cachevault.store import _unpack

    return _unpack(path.read_bytes())


def write_packed(path: Path, data: bytes) -> None:
    """Put ``data`` (JSON, or damaged JSON) in a record or object file, compressed as the
    store compresses it: a reader gets past decompression to the checks behind it."""
    from pytest_cachevault.store import _pack

    path.write_bytes(_pack(data))


# -- the environment and the runners -------------------------------------------------
@pytest.fixture(autouse=True)
def xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Keep inner runs away from the real user cache and from the outer run's settings.

    Bytecode writing is off because Python validates a ``.pyc`` by size and mtime in
    whole seconds: an edit of the same length within the same second would run stale
    code, whatever the plugin does.
    """
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    for name in list(os.environ):
        if name.startswith(("PYTEST_XDIST", "PYTEST_VAULT")) or name in {
            "PYTEST_ADDOPTS",
            "PYTEST_PLUGINS",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
        }:
            monkeypatch.delenv(name)
    return cache


class RunLog:
    """The file the sample projects' ``ranlog.ran()`` appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def take(self) -> list[str]:
        """Node ids that really ran since the last ``take()`` (in order), then forget them."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        self.path.unlink()
        return lines


@pytest.fixture
def ran_log(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> RunLog:
    path = tmp_path_factory.mktemp("ran-log") / "ran.log"
    monkeypatch.setenv("RAN_LOG", str(path))
    return RunLog(path)


def inner_command(*args: str | os.PathLike[str]) -> list[str]:
    """The command line of an inner pytest run."""
    blocked = [arg for name in BLOCKED_PLUGINS for arg in ("-p", f"no:{name}")]
    return [sys.executable, "-m", "pytest", *blocked, *map(os.fspath, args)]


def subprocess_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with ``env`` applied (a ``None`` value removes)."""
    merged = os.environ.copy()
    for name, value in (env or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def as_run_result(ret: int, stdout: str, stderr: str, duration: float) -> pytest.RunResult:
    print(stdout)
    print(stderr, file=sys.stderr)
    return pytest.RunResult(ret, stdout.splitlines(), stderr.splitlines(), duration)


@pytest.fixture
def run_pytest(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory):
    """Run pytest in a subprocess (in ``pytester.path`` unless ``cwd``); return its RunResult.

    ``--basetemp`` points outside the project, so that the project tree holds only the
    files the test wrote.
    """

    def run(
        *args: str | os.PathLike[str],
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        wrap: Sequence[str] = (),
    ) -> pytest.RunResult:
        basetemp = tmp_path_factory.mktemp("basetemp")
        command = [*wrap, *inner_command(f"--basetemp={basetemp}", *args)]
        cwd = Path(cwd or pytester.path)
        print("running:", *command, "\n     in:", cwd)
        start = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=cwd,
            env=subprocess_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        duration = time.perf_counter() - start
        return as_run_result(done.returncode, done.stdout, done.stderr, duration)

    return run


class VaultRunner:
    """``run_vault(*args)``: pytest with the vault on and this test's private store."""

    def __init__(self, run_pytest, store: Path) -> None:
        self._run_pytest = run_pytest
        #: The store directory (created by the plugin on first use).
        self.store = store

    def __call__(self, *args: str | os.PathLike[str], **kwargs) -> pytest.RunResult:
        return self._run_pytest("--vault", f"--vault-dir={self.store}", *args, **kwargs)

    def record_and_replay(self, *args: str, **kwargs) -> pytest.RunResult:
        """Run twice with nothing changed: the first run records, the second replays all.

        Keyword arguments other than ``cwd``/``env`` are the expected outcomes of both
        runs, e.g. ``record_and_replay(passed=2)``.
        """
        run_kwargs = {k: kwargs.pop(k) for k in ("cwd", "env") if k in kwargs}
        total = sum(kwargs.values())
        first = self(*args, **run_kwargs)
        first.assert_outcomes(**kwargs)
        assert vault_counts(first)[1] == total, "the first run must run every test"
        second = self(*args, **run_kwargs)
        second.assert_outcomes(**kwargs)
        assert vault_counts(second) == (total, 0), "an unchanged rerun must replay every test"
        return second


@pytest.fixture
def vault_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test's store: outside the project, not created yet."""
    return tmp_path_factory.mktemp("vault") / "store"


@pytest.fixture
def run_vault(run_pytest, vault_store: Path) -> VaultRunner:
    return VaultRunner(run_pytest, vault_store)
