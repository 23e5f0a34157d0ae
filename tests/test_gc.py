"""Garbage collection: ``--vault-gc`` prunes by age and by size, least recently used first."""

from __future__ import annotations

import re

from conftest import age, store_size, vault_counts, write_files

GC_LINE = re.compile(r"^vault gc: removed (\d+) records", re.MULTILINE)


def _removed_records(gc) -> int:
    match = GC_LINE.search(gc.stdout.str())
    assert match, f"no 'vault gc: removed N records' line in:\n{gc.stdout.str()}"
    return int(match[1])


def test_max_age_removes_records_older_than_it(basic_project, run_vault):
    """A generous age keeps fresh records; ``0s`` removes them all, so the next run reruns."""
    run_vault().assert_outcomes(passed=3)

    keep = run_vault("--vault-gc", "--vault-max-age=14d")
    assert keep.ret == 0
    assert _removed_records(keep) == 0
    assert vault_counts(run_vault()) == (3, 0)

    prune = run_vault("--vault-gc", "--vault-max-age=0s")
    assert prune.ret == 0
    assert _removed_records(prune) == 1  # the module's one result file, holding the 3 tests
    result = run_vault()
    result.assert_outcomes(passed=3)
    assert vault_counts(result) == (0, 3)


def test_gc_reports_what_it_removed_and_runs_no_test(basic_project, run_vault, ran_log):
    """gc prints its removals and exits 0 without collecting or running anything."""
    run_vault().assert_outcomes(passed=3)
    ran_log.take()

    gc = run_vault("--vault-gc", "--vault-max-age=0s")
    assert gc.ret == 0
    assert _removed_records(gc) == 1  # the module's one result file, holding the 3 tests
    assert ran_log.take() == []
    assert not re.search(r"\d+ (passed|failed)", gc.stdout.str())
    assert "vault: " not in gc.stdout.str()


def test_ini_limits(basic_project, pytester, run_vault):
    """``vault_max_age`` in the ini file applies to ``--vault-gc``."""
    pytester.makeini("[pytest]\nvault_max_age = 0s\nvault_max_size = 2G\n")
    run_vault().assert_outcomes(passed=3)
    gc = run_vault("--vault-gc")
    assert gc.ret == 0
    assert _removed_records(gc) == 1  # the module's one result file, holding the 3 tests
    assert vault_counts(run_vault()) == (0, 3)


def _chatty_project(name: str) -> dict[str, str]:
    """Four tests printing ~8 KB each, so that records dominate the store's size."""
    return {
        f"test_{name}.py": f"""
            import hashlib

            import pytest


            @pytest.mark.parametrize("n", range(4))
            def test_output(n):
                for i in range(128):
                    print(hashlib.sha256(f"{name}-{{n}}-{{i}}".encode()).hexdigest())
        """,
    }


def test_max_size_evicts_the_least_recently_used(pytester, run_vault):
    """Records of two projects; the one used last survives a size that fits only one."""
    project_a = write_files(pytester.path / "a", _chatty_project("a"))
    project_b = write_files(pytester.path / "b", _chatty_project("b"))
    run_vault(cwd=project_a).assert_outcomes(passed=4)
    size_a = store_size(run_vault.store)
    run_vault(cwd=project_b).assert_outcomes(passed=4)
    size_ab = store_size(run_vault.store)
    assert size_ab - size_a > 16 * 1024, "project b's records should be large"
    # Two hours later (a hit marks a record used only if its last use is an hour old),
    # using project a makes b the least recently used.
    age([p for p in run_vault.store.rglob("*") if p.is_file()], 2 * 3600)
    assert vault_counts(run_vault(cwd=project_a)) == (4, 0)

    limit_k = (size_a + (size_ab - size_a) // 8) // 1024
    gc = run_vault("--vault-gc", f"--vault-max-size={limit_k}K")
    assert gc.ret == 0
    assert _removed_records(gc) == 1  # project b's one result file, holding its 4 tests
    assert store_size(run_vault.store) <= limit_k * 1024

    assert vault_counts(run_vault(cwd=project_a)) == (4, 0)
    assert vault_counts(run_vault(cwd=project_b)) == (0, 4)
