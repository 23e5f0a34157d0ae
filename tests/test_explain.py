"""``--vault-explain`` (why each test ran; one test's inputs) and ``--vault-stats``."""

from __future__ import annotations

import re

from conftest import edit, write_files

PROJECT = {
    "calc.py": """
        def add(a, b):
            return a + b
    """,
    "test_reasons.py": """
        import os
        import subprocess
        import sys

        import pytest

        from calc import add


        def test_add():
            assert add(1, 2) == 3


        def test_mode():
            assert os.environ.get("APP_MODE", "dev") in ("dev", "prod")


        def test_spawns():
            subprocess.run([sys.executable, "-c", "pass"], check=True)


        @pytest.mark.vault_bypass
        def test_marked():
            pass


        def test_fails():
            assert add(1, 1) == 3


        def test_steady():
            pass
    """,
}


def explanations(result) -> dict[str, str]:
    """``{nodeid: why}`` from the ``vault explain`` section."""
    text = result.stdout.str()
    section = text.split(" vault explain ", 1)[1]
    return dict(re.findall(r"^(test_\S+::\S+): (.+)$", section, re.MULTILINE))


def test_explain_says_why_each_test_ran(pytester, run_vault):
    write_files(pytester.path, PROJECT)
    first = run_vault("--vault-explain")
    assert explanations(first) == {
        "test_reasons.py::test_add": "new",
        "test_reasons.py::test_mode": "new",
        "test_reasons.py::test_spawns": "new",
        "test_reasons.py::test_marked": "bypass (marker vault_bypass)",
        "test_reasons.py::test_fails": "new",
        "test_reasons.py::test_steady": "new",
    }
    edit(pytester.path / "calc.py", "return a + b", "return b + a")
    second = run_vault("--vault-explain", env={"APP_MODE": "prod"})
    second.assert_outcomes(passed=5, failed=1)
    assert explanations(second) == {
        "test_reasons.py::test_add": "changed: calc.py",
        "test_reasons.py::test_mode": "env: APP_MODE",
        "test_reasons.py::test_spawns": "uncacheable: spawned a subprocess (subprocess.Popen)",
        "test_reasons.py::test_marked": "bypass (marker vault_bypass)",
        "test_reasons.py::test_fails": "changed: calc.py",
    }
    third = run_vault("--vault-explain", env={"APP_MODE": "prod"})
    assert explanations(third) == {
        "test_reasons.py::test_spawns": "uncacheable: spawned a subprocess (subprocess.Popen)",
        "test_reasons.py::test_marked": "bypass (marker vault_bypass)",
        "test_reasons.py::test_fails": "failed last time",
    }
    assert "test_reasons.py::test_steady" not in explanations(second)


def test_explain_names_an_environment_change(pytester, run_vault):
    write_files(pytester.path, {**PROJECT, "pytest.ini": "[pytest]\n"})
    run_vault()
    edit(pytester.path / "pytest.ini", "[pytest]\n", "[pytest]\njunit_family = xunit1\n")
    result = run_vault("--vault-explain")
    assert explanations(result)["test_reasons.py::test_add"] == "environment: ini: junit_family"


def test_explain_one_test_lists_its_recorded_inputs(pytester, run_vault):
    write_files(pytester.path, PROJECT)
    run_vault(env={"APP_MODE": "dev"})
    result = run_vault("--vault-explain=test_reasons.py::test_mode", env={"APP_MODE": "prod"})
    result.stdout.fnmatch_lines(
        [
            "inputs recorded for test_reasons.py::test_mode:",
            "  record 1 of *, made *, outcome passed",
            "    file    test_reasons.py * unchanged",
            "    env     APP_MODE * changed",
            "    shared import state (*): unchanged",
            "    → env: APP_MODE",
        ]
    )


def test_stats_show_entries_and_hit_rate(pytester, run_vault):
    write_files(pytester.path, {"test_a.py": "def test_a():\n    pass\n\ndef test_b():\n    pass\n"})
    run_vault.record_and_replay(passed=2)
    stats = run_vault("--vault-stats")
    assert stats.ret == 0
    stats.stdout.fnmatch_lines(
        [
            "vault stats for *",
            "  entries: 2 test results, * shared input sets, *",
            "  oldest use: *; newest use: *",
            "  hit rate of the last 2 runs: 50% (2 of 4 tests replayed)",
        ]
    )
    assert "passed" not in stats.stdout.str()
