"""Bad places for a store: a file, a read-only file system, a full disk.

The run completes, every test runs (or replays, where the store can still be read)
and is reported as usual, and one line says what is wrong with the store.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from pytest_cachevault.store import LAYOUT

from conftest import (
    BASIC_IDS,
    RANLOG_MODULE,
    no_traceback,
    record_files,
    store_files,
    store_snapshot,
    stored_tests,
    vault_counts,
    vault_reasons,
    vault_warnings,
    write_files,
)

XDIST = pytest.param(["-n", "2"], id="xdist")
WORKERS = [pytest.param([], id="serial"), XDIST]


def _xdist(workers):
    if workers:
        pytest.importorskip("xdist")


def _off_line(result) -> str:
    [line] = [line for line in result.stdout.lines if line.startswith("vault: ")]
    return line


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("where", ["file", "under-a-file", "env-file", "file-read-only"])
def test_store_path_that_is_a_file(where, workers, basic_project, run_pytest, ran_log, tmp_path):
    _xdist(workers)
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    target = precious / "store" if where == "under-a-file" else precious
    args = ["--vault", *workers]
    env = None
    if where == "env-file":
        env = {"PYTEST_VAULT_DIR": str(target)}
    else:
        args.append(f"--vault-dir={target}")
    if where == "file-read-only":
        args.append("--vault-readonly")

    result = run_pytest(*args, env=env)
    no_traceback(result)
    assert result.ret == 0
    result.assert_outcomes(passed=3)
    assert set(ran_log.take()) == BASIC_IDS
    assert _off_line(result) == (
        "vault: off for this run, every test ran and nothing was stored "
        f"(cannot use the vault at {target}: {'it' if target == precious else precious} is not a directory)"
    )
    assert vault_warnings(result) == []
    assert precious.read_text() == "keep me\n"


def _read_only_mount(store) -> list[str]:
    """A command prefix that runs pytest with ``store`` on a read-only file system."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a read-only file system as root")
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0"', str(store)],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {probe.stderr.decode().strip()}")
    return ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && shift && exec "$@"', str(store), "--"]


@pytest.mark.parametrize("workers", WORKERS)
def test_read_only_store(workers, basic_project, run_vault, ran_log):
    """Hits replay from a store that cannot be written; the rest runs; one warning."""
    _xdist(workers)
    run_vault().assert_outcomes(passed=3)
    ran_log.take()
    write_files(basic_project, {"test_new.py": "from ranlog import ran\n\ndef test_new():\n    ran()\n"})
    before = store_snapshot(run_vault.store)

    wrap = _read_only_mount(run_vault.store)
    if not wrap:  # not root: permissions are enough
        for path in [run_vault.store, *run_vault.store.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    try:
        result = run_vault(*workers, wrap=wrap)
    finally:
        for path in [run_vault.store, *run_vault.store.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    no_traceback(result)
    assert result.ret == 0
    result.assert_outcomes(passed=4)
    assert vault_counts(result) == (3, 1)
    assert ran_log.take() == ["test_new.py::test_new"]
    [warning] = vault_warnings(result)
    assert warning.startswith(f"cannot write to the vault at {run_vault.store}: ")
    assert warning.endswith(("Read-only file system (EROFS); results of this run are not stored",
                             "Permission denied (EACCES); results of this run are not stored"))
    assert store_snapshot(run_vault.store) == before


#: Makes the store's disk full after as many writes as the file ``<project>.capacity``
#: (outside the project) says (``N``: any files; ``N results``: test modules' result
#: files, the other writes fitting until then); the write that does not fit writes
#: half, then fails.
FULL_DISK_CONFTEST = """
    import errno
    import os
    from pathlib import Path

    from pytest_cachevault import store

    CAPACITY = Path(__file__).resolve().parent.with_name(Path(__file__).resolve().parent.name + ".capacity")
    _write_file = store._write_file
    _written = []


    def _counted(data):
        limit, _, what = CAPACITY.read_text().partition(" ")
        # A result file's payload (canonical JSON, compressed) starts with its "common" inputs.
        return int(limit) if what != "results" or b'"payload":{"common":' in _unpacked(data)[:256] else None


    def _unpacked(data):
        try:
            return store._unpack(data)
        except ValueError:  # not a record nor an object: CACHEDIR.TAG, a run summary
            return data


    def _filling_write_file(path, data):
        limit = _counted(data) if CAPACITY.exists() else None
        if limit is not None and len(_written) >= limit:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        if limit is not None:
            _written.append(path)
        _write_file(path, data)


    store._write_file = _filling_write_file
"""


def _many_tests_project(root):
    """Ten tests in five modules (a run writes a result file per module), one failing."""
    return write_files(
        root,
        {
            "ranlog.py": RANLOG_MODULE,
            "conftest.py": FULL_DISK_CONFTEST,
            **{
                f"test_many_{m}.py": f"""
                    import pytest

                    from ranlog import ran


                    @pytest.mark.parametrize("n", range({2 * m}, {2 * m + 2}))
                    def test_n(n):
                        ran()
                        assert n < 9
                """
                for m in range(5)
            },
        },
    )


def _capacity(project, writes: int | str | None) -> None:
    marker = project.resolve().with_name(project.resolve().name + ".capacity")
    if writes is None:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text(str(writes))


@pytest.mark.parametrize("workers", WORKERS)
def test_disk_fills_up_during_the_run(workers, pytester, run_vault, ran_log):
    """The first result files fit; from the write that does not, nothing more is stored."""
    _xdist(workers)
    project = _many_tests_project(pytester.path)
    # Two test modules' result files fit (per worker: each counts its own writes); five
    # are written (more if the workers split a module), so one worker runs out.
    _capacity(project, "2 results")
    result = run_vault(*workers)
    no_traceback(result)
    assert result.ret == 1
    result.assert_outcomes(passed=9, failed=1)
    assert len(ran_log.take()) == 10
    assert vault_warnings(result) == [
        f"cannot write to the vault at {run_vault.store}: No space left on device (ENOSPC); "
        "results of this run are not stored"
    ]
    assert list((run_vault.store / LAYOUT / "tmp").iterdir()) == []  # the half-written file is gone
    files = len(record_files(run_vault.store))
    assert (1 <= files <= 4) if workers else files == 2  # serially: test_many_0.py and _1.py
    stored = len(stored_tests(run_vault.store))
    assert 1 <= stored < 10

    _capacity(project, None)
    again = run_vault(*workers)
    again.assert_outcomes(passed=9, failed=1)
    assert vault_warnings(again) == []
    # What was stored replays, but for the failing test's record, which runs it again.
    assert vault_counts(again)[0] + vault_reasons(again).get("failed last time", 0) == stored
    assert vault_counts(run_vault(*workers)) == (9, 1)


def test_disk_full_from_the_start(pytester, run_vault, ran_log):
    """Not even the store's layout fits: the vault is off for the run, with one line."""
    project = _many_tests_project(pytester.path)
    _capacity(project, 0)
    result = run_vault()
    no_traceback(result)
    result.assert_outcomes(passed=9, failed=1)
    assert len(ran_log.take()) == 10
    assert _off_line(result) == (
        "vault: off for this run, every test ran and nothing was stored (cannot use the "
        f"vault at {run_vault.store}: No space left on device (ENOSPC))"
    )
    assert store_files(run_vault.store) == []

    _capacity(project, None)
    run_vault().assert_outcomes(passed=9, failed=1)
    assert vault_counts(run_vault()) == (9, 1)
