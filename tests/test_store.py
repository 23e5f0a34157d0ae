"""The store: where it lives, that it is portable across checkouts, and safe to share."""

from __future__ import annotations

import gzip
import lzma
import os
import subprocess
import time
import zlib

from conftest import (
    BASIC_IDS,
    CACHEDIR_SIGNATURE,
    OUTCOMES_FILES,
    RUN_TIMEOUT,
    as_run_result,
    basic_project_files,
    copy_project,
    inner_command,
    replayed,
    skip_lines,
    store_files,
    subprocess_env,
    vault_counts,
    write_files,
)


def test_copy_at_another_path_replays(basic_project, run_vault, ran_log, tmp_path_factory):
    """A second checkout of the same project (fresh mtimes) hits the records of the first."""
    run_vault().assert_outcomes(passed=3)
    ran_log.take()

    checkout = copy_project(basic_project, tmp_path_factory.mktemp("elsewhere") / "checkout")
    result = run_vault("-v", cwd=checkout)
    result.assert_outcomes(passed=3)
    assert vault_counts(result) == (3, 0)
    assert replayed(result) == BASIC_IDS
    assert ran_log.take() == []


def test_replayed_reports_point_into_the_checkout(outcomes_project, run_vault, tmp_path_factory):
    """Skip locations replayed in another checkout are the checkout's own (relative) paths."""
    first = run_vault("-rs")
    checkout = copy_project(outcomes_project, tmp_path_factory.mktemp("elsewhere") / "checkout")
    second = run_vault("-rs", cwd=checkout)
    assert vault_counts(second)[1] == 0
    assert skip_lines(second) == skip_lines(first)
    assert str(outcomes_project) not in second.stdout.str()


def _readable_bytes(path) -> bytes:
    """A store file's bytes, decompressed too when it is gzip, zlib or xz data."""
    data = path.read_bytes()
    for decompress in (gzip.decompress, zlib.decompress, lzma.decompress):
        try:
            return data + decompress(data)
        except Exception:
            continue
    return data


def test_store_is_tagged_and_holds_no_project_path(pytester, run_vault):
    """``CACHEDIR.TAG`` keeps backup tools out; no file mentions where the project lives."""
    write_files(pytester.path, {**OUTCOMES_FILES, **basic_project_files()})
    pytester.makepyfile(
        test_paths="""
            import os


            def test_prints_its_location():
                print("running in", os.getcwd(), "from", __file__)
        """
    )
    run_vault()
    run_vault()

    tag = run_vault.store / "CACHEDIR.TAG"
    assert tag.read_text().startswith(CACHEDIR_SIGNATURE)
    needles = {str(pytester.path).encode(), os.path.realpath(pytester.path).encode()}
    files = store_files(run_vault.store)
    assert len(files) > 1
    for path in files:
        data = _readable_bytes(path)
        for needle in needles:
            assert needle not in data, f"{path} holds the project path {needle!r}"


def test_two_processes_share_one_store(pytester, run_vault, tmp_path_factory, ran_log):
    """Two runs writing the same records at once both succeed; a third run replays all."""
    write_files(
        pytester.path,
        {
            **basic_project_files(),
            "test_many.py": """
                import pytest


                @pytest.mark.parametrize("n", range(40))
                def test_square(n):
                    assert n * n >= n
            """,
        },
    )
    parent = tmp_path_factory.mktemp("parallel")
    runs = []
    for name in ("one", "two"):
        checkout = copy_project(pytester.path, parent / name)
        command = inner_command(
            f"--basetemp={parent / ('temp-' + name)}", "--vault", f"--vault-dir={run_vault.store}"
        )
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=checkout,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs.append((process, start))
    for process, start in runs:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        result = as_run_result(process.returncode, stdout, stderr, time.perf_counter() - start)
        assert result.ret == 0
        result.assert_outcomes(passed=43)
        assert "vault warning" not in result.stdout.str()
    ran_log.take()

    third = run_vault()
    third.assert_outcomes(passed=43)
    assert vault_counts(third) == (43, 0)
    assert "vault warning" not in third.stdout.str()
    assert ran_log.take() == []


def test_store_location_from_ini(basic_project, pytester, run_pytest, vault_store):
    """ini ``vault_dir`` chooses the store when ``--vault-dir`` is not given."""
    pytester.makeini(f"[pytest]\nvault_dir = {vault_store}\n")
    run_pytest("--vault").assert_outcomes(passed=3)
    assert (vault_store / "CACHEDIR.TAG").is_file()
    assert vault_counts(run_pytest("--vault")) == (3, 0)


def test_default_store_is_in_the_user_cache(basic_project, run_pytest, xdg_cache_home):
    """With no location configured, the store goes under ``$XDG_CACHE_HOME``."""
    run_pytest("--vault").assert_outcomes(passed=3)
    tags = [p for p in store_files(xdg_cache_home) if p.name == "CACHEDIR.TAG"]
    assert len(tags) == 1
    assert vault_counts(run_pytest("--vault")) == (3, 0)
