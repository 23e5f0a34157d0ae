"""Third-party test suites used by the benchmark and mutation harnesses.

Stdlib only.  Shared by ``benchmarks/bench.py`` (speed) and
``benchmarks/mutate.py`` (mutation); keep this interface stable:

    SUITES: dict[str, Suite]         # pinned suites, by short name
    DEFAULT_SUITES: list[str]
    resolve_python(spec) -> str      # "python3.12" -> an interpreter path
    suite_dir(suite, interp, slot="") -> Path   # where prepare() puts a suite
    prepare(suite, python="python3", *, plugin=True, slot="") -> SuiteEnv
    env.python        venv interpreter (Path)
    env.src_root      extracted sdist = pytest rootdir and cwd (Path)
    env.test_args     test paths + fixed pytest args (list[str])
    env.state_dir     scratch dir outside the source tree, for stores (Path)
    env.pytest_cmd(*extra) -> list[str]   [python, -m, pytest, *test_args, *extra]
    env.run_env(**overrides) -> dict      environment to run pytest with
    env.edit_one_line() (context manager) one harmless edit, restored on exit
    env.restore_sources() -> list[Path]   undo any edit to the sdist's files
    env.release()     let other processes use this suite before we exit

``slot`` (optional) gives a separate copy of everything (venv, sources,
state) in ``<suite>@<slot>/``, so harnesses that may run at the same time
(bench.py uses slot "bench") do not wait for each other.

Locking: prepare() takes an exclusive lock on ``<base>/.lock`` and keeps it
until the process exits (or ``env.release()``), so bench.py and mutate.py
never run (or edit sources) in the same suite directory at once: a second
process's prepare() waits for the first to finish.

Layout (gitignored): ``benchmarks/.work/<python-tag>/<suite>/`` holds
``sdist/`` (the downloaded archive), ``src/`` (its extraction), ``venv/`` and
``state/``.  The package under test is installed *editable* from
``src/``, so editing files there changes what the tests import.  The
plugin is installed editable from the repository root, so the latest plugin
code is always used; its dependencies are re-installed when pyproject.toml
changes.

Command line: ``python3 benchmarks/suites.py [--python X] [suite ...]``
prepares the environments and prints their paths.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"

#: Installed into every venv besides the suite and its own test dependencies.
COMMON_DEPS = ("pytest", "pytest-testmon", "pytest-xdist")

#: Arguments given to every pytest run, whatever the variant.  Besides these,
#: ``--rootdir=. -c <suite.config>`` pin the rootdir and config file: the
#: work dir is inside this repository, whose own pyproject.toml would
#: otherwise be picked up for suites whose config has no pytest section.
COMMON_PYTEST_ARGS = ("-p", "no:randomly")

#: Statement inserted by :meth:`SuiteEnv.edit_one_line`.  An assignment (not
#: ``pass``) so that the function's bytecode really changes.
EDIT_STATEMENT = "_cachevault_bench_edit = 1  # inserted by benchmarks/suites.py"


@dataclasses.dataclass(frozen=True)
class Suite:
    """A pinned PyPI project whose own test suite we run."""

    name: str                       # PyPI distribution name
    version: str                    # pinned version (sdist)
    test_paths: tuple[str, ...]     # relative to the source root
    test_deps: tuple[str, ...]      # extra requirements of its tests
    edit_file: str                  # library file for the one-line edit
    edit_function: str              # top-level function in edit_file
    pytest_args: tuple[str, ...] = ()
    config: str = "pyproject.toml"  # pytest config file, relative to the source root
    testmon: bool = True            # pytest-testmon can run this suite

    @property
    def spec(self) -> str:
        """The pip requirement pinning this suite."""
        return f"{self.name}=={self.version}"


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            name="more-itertools",
            version="11.2.1",
            test_paths=("tests",),
            test_deps=(),
            edit_file="more_itertools/more.py",
            edit_function="chunked",
        ),
        Suite(
            name="packaging",
            version="26.3",
            test_paths=("tests",),
            # [dependency-groups] test, minus coverage
            test_deps=("hypothesis", "pip", "pretend", "tomli_w"),
            edit_file="src/packaging/utils.py",
            edit_function="canonicalize_name",
        ),
        Suite(
            name="python-dateutil",
            version="4.0.0",
            test_paths=("tests",),
            # requirements-dev.txt minus build tooling; pytest-cov registers
            # the no_cover mark its conftest adds (unknown marks are errors)
            test_deps=("freezegun", "hypothesis", "attrs", "tzdata", "pytest-cov"),
            edit_file="src/dateutil/easter.py",
            edit_function="easter",
        ),
        Suite(
            name="jinja2",
            version="3.1.6",
            test_paths=("tests",),
            test_deps=("trio",),  # requirements/tests.in
            edit_file="src/jinja2/filters.py",
            edit_function="do_truncate",
            # pytest-testmon 2.2.0 stops with an internal error after 750 tests (an
            # IndexError in testmon_core.get_file, on a file name without an extension)
            testmon=False,
        ),
    )
}
DEFAULT_SUITES = list(SUITES)


def log(msg: str) -> None:
    """Progress message on stderr."""
    print(f"[suites] {msg}", file=sys.stderr, flush=True)


def resolve_python(spec: str = "python3") -> str:
    """Return a working interpreter path for ``spec`` (a name or a path).

    pyenv shims such as ``python3.12`` fail unless PYENV_VERSION enables that
    version, so fall back to ``~/.pyenv/versions/<X.Y.*>/bin/python3``.
    """
    candidates = [spec]
    found = shutil.which(spec)
    if found:
        candidates.append(found)
    m = re.fullmatch(r"(?:.*/)?python(\d+\.\d+)", spec)
    if m:
        pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates += sorted(
            glob.glob(f"{pyenv_root}/versions/{m.group(1)}.*/bin/python3"),
            reverse=True,
        )
    for cand in candidates:
        try:
            out = subprocess.run(
                [cand, "-c", "import sys; print(sys.executable)"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            continue
        if out:
            return out
    raise SystemExit(f"no working interpreter for {spec!r}")


def python_tag(python: str) -> str:
    """``cp311``-style tag of an interpreter, used to separate work dirs."""
    return subprocess.run(
        [python, "-c",
         "import sys; print(sys.implementation.cache_tag.replace('cpython-', 'cp'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def run(cmd: list[str], **kw) -> None:
    """Run a setup command quietly; show its output if it fails."""
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode:
        sys.stderr.write(res.stdout[-5000:] + res.stderr[-5000:])
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(map(str, cmd))}")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@dataclasses.dataclass
class SuiteEnv:
    """A prepared suite: venv with everything installed, extracted sources."""

    suite: Suite
    base: Path          # benchmarks/.work/<tag>/<suite>
    python: Path        # venv interpreter
    src_root: Path      # extracted sdist; pytest rootdir and cwd
    sdist: Path         # the downloaded archive
    test_args: list[str]

    @property
    def state_dir(self) -> Path:
        """Scratch directory outside the source tree (vault stores, testmon data)."""
        path = self.base / "state"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pytest_cmd(self, *extra: str) -> list[str]:
        """Command line running this suite's tests with extra pytest args."""
        return [str(self.python), "-m", "pytest", *self.test_args, *extra]

    def run_env(self, **overrides: str) -> dict[str, str]:
        """Environment for pytest runs: no stray PYTEST_*/PYTHONPATH, fixed hash seed.

        PYTHONDONTWRITEBYTECODE is dropped: a developer's machine keeps .pyc
        files (and pytest's rewritten-assert cache), so runs should too.
        """
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_", "PYTHONPATH", "VIRTUAL_ENV",
                                    "PYTHONDONTWRITEBYTECODE"))}
        env.update(PYTHONHASHSEED="0", **overrides)
        return env

    def _members(self) -> Iterator[tuple[Path, bytes]]:
        """(path under src_root, original bytes) of every file in the sdist."""
        with tarfile.open(self.sdist) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                rel = Path(*Path(member.name).parts[1:])
                yield self.src_root / rel, tar.extractfile(member).read()

    def restore_sources(self) -> list[Path]:
        """Rewrite every file that differs from the sdist; return those paths."""
        restored = []
        for path, data in self._members():
            try:
                same = path.read_bytes() == data
            except FileNotFoundError:
                same = False
            if not same:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                restored.append(path)
        return restored

    def release(self) -> None:
        """Release the suite directory lock taken by :func:`prepare`."""
        _unlock(self.base)

    @contextlib.contextmanager
    def edit_one_line(self) -> Iterator[Path]:
        """Insert one harmless statement in ``suite.edit_function``; restore after.

        The statement goes before the first statement after the docstring, at
        the body's indentation, so docstrings (and doctests) are untouched.
        """
        path = self.src_root / self.suite.edit_file
        original = path.read_bytes()
        text = original.decode()
        func = next(
            (n for n in ast.parse(text).body
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.name == self.suite.edit_function),
            None,
        )
        if func is None:
            raise SystemExit(f"{self.suite.edit_function} not found in {path}")
        body = func.body
        first = body[1] if (len(body) > 1 and isinstance(body[0], ast.Expr)
                            and isinstance(body[0].value, ast.Constant)
                            and isinstance(body[0].value.value, str)) else body[0]
        lines = text.splitlines(keepends=True)
        lines.insert(first.lineno - 1, " " * first.col_offset + EDIT_STATEMENT + "\n")
        try:
            path.write_text("".join(lines))
            yield path
        finally:
            path.write_bytes(original)


_LOCKS: dict[Path, int] = {}


def _lock(base: Path) -> None:
    """Hold an exclusive lock on ``base/.lock`` (re-entrant within a process)."""
    path = base / ".lock"
    if path in _LOCKS:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        log(f"{base} is in use by pid {holder or '?'}; waiting for it")
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _LOCKS[path] = fd


def _unlock(base: Path) -> None:
    fd = _LOCKS.pop(base / ".lock", None)
    if fd is not None:
        os.close(fd)


def _venv_pip(venv_python: Path, *args: str) -> None:
    run([str(venv_python), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", *args])


def suite_dir(suite: Suite, interp: str, slot: str = "") -> Path:
    """``benchmarks/.work/<python-tag>/<suite>[@<slot>]`` for a resolved interpreter."""
    return WORK_DIR / python_tag(interp) / (f"{suite.name}@{slot}" if slot else suite.name)


def prepare(suite: Suite | str, python: str = "python3", *, plugin: bool = True,
            slot: str = "") -> SuiteEnv:
    """Download, extract and install ``suite`` into its own venv; idempotent.

    ``python`` is an interpreter name or path (see :func:`resolve_python`).
    Steps already done (recorded in ``<base>/installed.json``) are skipped.
    Waits for, then holds, the suite directory's lock (see module docstring);
    ``slot`` selects a separate suite directory.
    Any leftover edit to the extracted sources is undone.  With ``plugin``,
    pytest-cachevault is installed editable from the repository root.
    """
    suite = SUITES[suite] if isinstance(suite, str) else suite
    interp = resolve_python(python)
    base = suite_dir(suite, interp, slot)
    sdist_dir, src_parent, venv = base / "sdist", base / "src", base / "venv"
    base.mkdir(parents=True, exist_ok=True)
    _lock(base)

    archives = sorted(sdist_dir.glob("*.tar.gz"))
    if not archives:
        log(f"downloading {suite.spec} sdist")
        run([interp, "-m", "pip", "download", "-q", "--no-binary", ":all:",
             "--no-deps", "-d", str(sdist_dir), suite.spec])
        archives = sorted(sdist_dir.glob("*.tar.gz"))
    sdist = archives[0]

    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        src_root = src_parent / top
        if not src_root.is_dir():
            log(f"extracting {sdist.name}")
            src_parent.mkdir(parents=True, exist_ok=True)
            tar.extractall(src_parent, filter="data") if hasattr(tarfile, "data_filter") \
                else tar.extractall(src_parent)

    vpy = venv / "bin" / "python"
    if not vpy.exists():
        log(f"creating venv {venv}")
        run([interp, "-m", "venv", str(venv)])

    state_file = base / "installed.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    want_suite = _digest(interp, suite.spec, *suite.test_deps, *COMMON_DEPS)
    if state.get("suite") != want_suite:
        log(f"installing {suite.spec} (editable) and test deps into {venv}")
        _venv_pip(vpy, "--upgrade", "pip")
        _venv_pip(vpy, *COMMON_DEPS, *suite.test_deps)
        _venv_pip(vpy, "-e", str(src_root))
        state = {"suite": want_suite}
        state_file.write_text(json.dumps(state))
    if plugin:
        want_plugin = _digest((REPO_ROOT / "pyproject.toml").read_text())
        if state.get("plugin") != want_plugin:
            log(f"installing pytest-cachevault (editable) from {REPO_ROOT}")
            _venv_pip(vpy, "-e", str(REPO_ROOT))
            state["plugin"] = want_plugin
            state_file.write_text(json.dumps(state))

    env = SuiteEnv(suite=suite, base=base, python=vpy, src_root=src_root,
                   sdist=sdist,
                   test_args=[*suite.test_paths, "--rootdir=.", "-c", suite.config,
                              *COMMON_PYTEST_ARGS, *suite.pytest_args])
    for path in env.restore_sources():
        log(f"restored modified source {path}")
    return env


def main(argv: list[str] | None = None) -> None:
    """Prepare suites from the command line and print where they are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", default=DEFAULT_SUITES,
                        help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--python", default="python3")
    parser.add_argument("--no-plugin", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites: {', '.join(sorted(unknown))}")
    for name in args.suites:
        env = prepare(name, args.python, plugin=not args.no_plugin)
        print(f"{name}: python={env.python} src_root={env.src_root} "
              f"cmd={' '.join(env.pytest_cmd())}")


if __name__ == "__main__":
    main()
