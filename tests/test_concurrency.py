"""Several pytest processes (with and without xdist) share one store while ``--vault-gc``
runs beside them: every run gets the right outcomes, no warning, and the store stays
valid. No lock is taken for reading or writing; only the collector holds one."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from pytest_cachevault.store import COLLECTIONS, RESULTS, Store

from conftest import (
    RUN_TIMEOUT,
    as_run_result,
    copy_project,
    inner_command,
    no_traceback,
    subprocess_env,
    vault_counts,
    vault_warnings,
    write_files,
)

PROJECT = {
    # Every test takes a moment, so that the runs' lookups and writes overlap.
    "conftest.py": """
        import time

        import pytest


        @pytest.fixture(autouse=True)
        def a_moment():
            time.sleep(0.03)
    """,
    "src/shapes.py": """
        import math


        def area(r):
            return math.pi * r * r
    """,
    "tests/test_shapes.py": """
        import pytest

        from src.shapes import area


        @pytest.mark.parametrize("r", range(24))
        def test_area(r):
            assert area(r) >= 0


        def test_wrong():
            assert area(1) == 3


        @pytest.mark.skip(reason="later")
        def test_later():
            pass


        @pytest.mark.xfail(reason="pi is not 3")
        def test_pi():
            assert area(1) == 3
    """,
    "tests/test_more.py": """
        import pytest


        @pytest.mark.parametrize("n", range(12))
        def test_n(n):
            assert n >= 0


        def test_broken():
            raise ValueError("broken")
    """,
}
OUTCOMES = {"passed": 36, "failed": 2, "skipped": 1, "xfailed": 1}


def _run(command: list[str], cwd: Path) -> pytest.RunResult:
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=subprocess_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    return as_run_result(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def _check(result) -> None:
    no_traceback(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(**OUTCOMES)
    assert vault_warnings(result) == []
    assert sum(vault_counts(result)) == sum(OUTCOMES.values())


def test_runs_and_gc_share_one_store(pytester, run_vault, tmp_path):
    """Phase one: a serial and an xdist run, twice each, with collectors pruning hard
    all along (every record, object and temp file is fair game). Phase two: both runs
    once more, writing at the same time; then every file of the store reads back."""
    pytest.importorskip("xdist")
    write_files(pytester.path, PROJECT)
    store = run_vault.store
    lanes = {"serial": [], "xdist": ["-n", "2"]}
    checkouts = {name: copy_project(pytester.path, tmp_path / name) for name in lanes}
    results: list = []
    gc_results: list = []
    done = threading.Event()

    def lane(name: str, args: list[str], runs: int) -> None:
        for _ in range(runs):
            command = inner_command(
                f"--basetemp={tmp_path / f'temp-{name}-{len(results)}'}", "--vault", f"--vault-dir={store}", *args
            )
            results.append(_run(command, checkouts[name]))

    def collector() -> None:
        limits = ["--vault-max-age=0s", "--vault-max-size=6K", "--vault-max-age=1s"]
        while not done.is_set():
            limit = limits[len(gc_results) % len(limits)]
            gc_results.append(_run(inner_command("--vault-gc", f"--vault-dir={store}", limit), tmp_path))

    def together(targets) -> None:
        threads = [threading.Thread(target=target, args=args) for target, args in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    together([(lane, (name, args, 2)) for name, args in lanes.items()])
    done.set()
    gc_thread.join()
    together([(lane, (name, args, 1)) for name, args in lanes.items()])

    assert len(results) == 6
    for result in results:
        _check(result)
    assert len(gc_results) >= 2
    for result in gc_results:
        no_traceback(result)
        assert result.ret == 0
        assert result.stdout.lines[0].startswith("vault gc: ")
        assert vault_warnings(result) == []

    # The store is valid: every file reads back, nothing half-written is in place.
    vault = Store(store)
    records = [
        vault.read_record(path).status for area in (RESULTS, COLLECTIONS) for path, _ in vault.iter_records(area)
    ]
    assert records and set(records) == {"ok"}
    assert all(vault.get_object(name) is not None for name, _, _ in vault.iter_objects())
    assert vault.problems == []
    assert list(vault.iter_tmp()) == []

    first = run_vault()
    _check(first)
    second = run_vault()
    _check(second)
    assert vault_counts(second) == (38, 2)
