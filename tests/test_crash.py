"""Crashes: a run killed with SIGKILL at any moment leaves a store the next run uses
without error; the temp files it leaves are removed by ``--vault-gc``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pytest_cachevault import gc
from pytest_cachevault.store import LAYOUT, Store

from conftest import (
    RANLOG_MODULE,
    age,
    inner_command,
    no_traceback,
    stored_tests,
    subprocess_env,
    vault_counts,
    vault_warnings,
    write_files,
)

#: Hangs in the middle of writing the store's N-th result file (N from
#: ``<project>.hang``, outside the project; a test module's collection record does not
#: count) after writing half of it, and says so in ``<project>.hanging``.
HANGING_CONFTEST = """
    import time
    from pathlib import Path

    from pytest_cachevault import store

    _PROJECT = Path(__file__).resolve().parent
    HANG = _PROJECT.with_name(_PROJECT.name + ".hang")
    HANGING = _PROJECT.with_name(_PROJECT.name + ".hanging")
    _write_file = store._write_file
    _records = []


    def _unpacked(data):
        try:
            return store._unpack(data)
        except ValueError:  # not a record nor an object: CACHEDIR.TAG, a run summary
            return data


    def _hanging_write_file(path, data):
        body = _unpacked(data)
        if body.startswith(b'{"schema":') and b'"tests":{' in body and HANG.exists():
            _records.append(path)
            if len(_records) == int(HANG.read_text()):
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
                HANGING.write_text(path)
                time.sleep(120)
        _write_file(path, data)


    store._write_file = _hanging_write_file
"""

#: Test modules of the project, and tests in each; a run writes a module's results
#: when it leaves it. The 8th test of every other module fails.
MODULES = 6
PER_MODULE = 10
TESTS = MODULES * PER_MODULE
FAILING = MODULES // 2


def _project(root: Path) -> Path:
    modules = {
        f"test_m{m}.py": f"""
            import time

            import pytest

            from ranlog import ran


            @pytest.mark.parametrize("n", range({PER_MODULE}))
            def test_n(n):
                ran()
                time.sleep(0.01)
                assert {m % 2} or n != 7
        """
        for m in range(MODULES)
    }
    return write_files(root, {"ranlog.py": RANLOG_MODULE, "conftest.py": HANGING_CONFTEST, **modules})


def _start(project: Path, store: Path, basetemp: Path, *args: str) -> subprocess.Popen:
    """A vault run in its own process group, so that a kill takes its xdist workers too."""
    return subprocess.Popen(
        inner_command(f"--basetemp={basetemp}", "--vault", f"--vault-dir={store}", *args),
        cwd=project,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 60) -> bool:
    """Poll ``condition`` until it holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return condition()
        time.sleep(0.005)
    pytest.fail("the run neither got there nor ended")


def _stored_tests(store: Path) -> int:
    return len(stored_tests(store))


def test_killed_while_writing_a_record(pytester, run_vault, ran_log, tmp_path):
    project = _project(pytester.path).resolve()
    hang = project.with_name(project.name + ".hang")
    hanging = project.with_name(project.name + ".hanging")
    hang.write_text("3")
    process = _start(project, run_vault.store, tmp_path / "basetemp")
    try:
        assert _wait_for(hanging.exists, process), "the run ended before its 3rd result file"
    finally:
        _kill(process)
    assert process.returncode == -signal.SIGKILL
    hang.unlink()
    stray = Path(hanging.read_text())
    assert stray.parent == run_vault.store / LAYOUT / "tmp"
    assert stray.exists() and stray.stat().st_size > 0
    assert _stored_tests(run_vault.store) == 2 * PER_MODULE  # the two modules written whole
    ran_log.take()

    result = run_vault()
    no_traceback(result)
    result.assert_outcomes(passed=TESTS - FAILING, failed=FAILING)
    assert vault_warnings(result) == []
    replayed = 2 * PER_MODULE - 1  # the failure of test_m0.py runs again
    assert vault_counts(result) == (replayed, TESTS - replayed)
    assert len(ran_log.take()) == TESTS - replayed
    assert vault_counts(run_vault()) == (TESTS - FAILING, FAILING)

    fresh = run_vault("--vault-gc")
    assert fresh.ret == 0
    fresh.stdout.fnmatch_lines(["vault gc: removed 0 records, 0 objects and 0 temp files*"])
    assert stray.exists(), "a temp file younger than an hour may belong to a live writer"
    age([stray], 2 * gc.GRACE_SECONDS)
    old = run_vault("--vault-gc")
    assert old.ret == 0
    old.stdout.fnmatch_lines(["vault gc: removed 0 records, 0 objects and 1 temp files*"])
    assert list(stray.parent.iterdir()) == []
    assert vault_counts(run_vault()) == (TESTS - FAILING, FAILING)


def test_killed_at_random_moments(pytester, run_vault, ran_log, tmp_path):
    """Serial and xdist runs killed after a random number of tests ran, several times over."""
    project = _project(pytester.path)
    chance = random.Random(os.environ.get("PYTEST_XDIST_TESTRUNUID", "") + str(time.time()))
    kills = 0
    for attempt in range(6):
        args = ["-n", "2"] if attempt % 2 and _has_xdist() else []
        ran_log.take()
        target = chance.randint(1, 15)
        process = _start(project, run_vault.store, tmp_path / f"basetemp{attempt}", *args)
        try:
            reached = _wait_for(lambda: _lines(ran_log.path) >= target, process)
            time.sleep(chance.random() * 0.05)
        finally:
            _kill(process)
        kills += reached and process.returncode == -signal.SIGKILL
    assert kills >= 3, "most runs should have been killed mid-run"
    ran_log.take()

    result = run_vault()
    no_traceback(result)
    result.assert_outcomes(passed=TESTS - FAILING, failed=FAILING)
    assert vault_warnings(result) == []
    again = run_vault()
    assert vault_counts(again) == (TESTS - FAILING, FAILING)
    assert vault_warnings(again) == []

    # Whatever the kills left: every record and object reads back whole.
    store = Store(run_vault.store)
    assert all(store.read_record(path).status == "ok" for path, _ in store.iter_records())
    assert all(store.get_object(name) is not None for name, _, _ in store.iter_objects())
    assert store.problems == []
    leftovers = [path for path, _ in store.iter_tmp()]
    age(leftovers, 2 * gc.GRACE_SECONDS)
    collected = gc.collect(store, max_size=10**12, max_age=10**9)
    assert collected.temp_removed == len(leftovers)
    assert list(store.iter_tmp()) == []


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _has_xdist() -> bool:
    try:
        import xdist  # noqa: F401
    except ImportError:
        return False
    return True
