"""Result files: one per test module and run, holding the tests that run ran, read
newest made first."""

from __future__ import annotations

import os
import time

from conftest import edit, record_files, stored_tests, vault_counts, vault_reasons, write_files

PROJECT = {
    "src/lib.py": """
        def one():
            return 1


        def two():
            return 2
    """,
    "test_one.py": """
        import sys

        sys.path.insert(0, "src")
        import lib


        def test_one():
            assert lib.one() == 1


        def test_both():
            assert lib.one() + lib.two() == 3
    """,
    "test_two.py": """
        import os
        import sys

        sys.path.insert(0, "src")
        import lib


        def test_two():
            assert lib.two() == 2


        def test_flaky():
            # Reads nothing the vault sees: a flag outside the rootdir, like a flaky
            # service. Its inputs are the same whether it passes or fails.
            assert not os.path.exists(os.environ["FLAKY_FLAG"])
    """,
}


def test_a_run_writes_one_file_per_module_with_the_tests_it_ran(pytester, run_vault, tmp_path):
    write_files(pytester.path, PROJECT)
    env = {"FLAKY_FLAG": str(tmp_path / "flag")}
    assert vault_counts(run_vault(env=env)) == (0, 4)
    assert len(record_files(run_vault.store)) == 2
    edit(pytester.path / "src/lib.py", "return 2", "return 1 + 1")
    assert vault_counts(run_vault(env=env)) == (1, 3)  # test_flaky ran no code of lib.py
    files = record_files(run_vault.store)
    assert len(files) == 4
    assert stored_tests(run_vault.store) == sorted([
        "test_one.py::test_one", "test_one.py::test_one", "test_one.py::test_both",
        "test_one.py::test_both", "test_two.py::test_two", "test_two.py::test_two",
        "test_two.py::test_flaky",
    ])
    # Each test replays from the newest file that holds it unchanged: test_flaky from
    # the first run's file, the others from the second's.
    assert vault_counts(run_vault(env=env)) == (4, 0)
    assert record_files(run_vault.store) == files  # a run that ran nothing writes nothing


def test_a_later_failure_is_not_shadowed_by_an_older_pass_used_since(pytester, run_vault, tmp_path):
    write_files(pytester.path, PROJECT)
    flag = tmp_path / "flag"
    env = {"FLAKY_FLAG": str(flag)}
    run_vault(env=env).assert_outcomes(passed=4)
    first = set(record_files(run_vault.store))
    flag.touch()
    run_vault("--vault-bypass", env=env).assert_outcomes(passed=3, failed=1)
    flag.unlink()
    # The first run's files were used after the failure was recorded (a later run
    # replayed from them, on another branch say): their pass, recorded with the same
    # inputs, must still not stand in for the newer failure.
    future = time.time() + 3600
    for relpath in first:
        os.utime(run_vault.store / relpath, (future, future))
    result = run_vault("-v", env=env)
    result.assert_outcomes(passed=4)
    assert vault_counts(result) == (3, 1)
    assert vault_reasons(result) == {"failed last time": 1}


def test_a_run_that_leaves_a_module_and_comes_back_keeps_both_visits(pytester, run_vault, tmp_path):
    write_files(pytester.path, PROJECT)
    env = {"FLAKY_FLAG": str(tmp_path / "flag")}
    order = ["test_one.py::test_one", "test_two.py", "test_one.py::test_both"]
    assert vault_counts(run_vault(*order, env=env)) == (0, 4)
    assert vault_counts(run_vault(*order, env=env)) == (4, 0)
