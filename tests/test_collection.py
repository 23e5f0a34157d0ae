"""Collection skipping: an unchanged test module whose tests all replay is not imported.

Each test module below notes its import in the run log (``imported <name>``), so a
run shows which modules pytest really imported; what the user sees (outcomes, ``-v``
lines, skip reasons, selection counts) must be the same either way.
"""

from __future__ import annotations

import textwrap

import pytest

from pytest_cachevault.store import COLLECTIONS, LAYOUT, SUFFIX

from conftest import (
    edit,
    executed,
    replayed,
    skip_lines,
    vault_counts,
    verbose_statuses,
    write_files,
)

IMPORT_NOTE = """
    import os

    with open(os.environ["RAN_LOG"], "a", encoding="utf-8") as log:
        log.write("imported " + __name__ + "\\n")
"""


def _module(body: str) -> str:
    """A test module's text that first notes its import in the run log."""
    return textwrap.dedent(IMPORT_NOTE) + textwrap.dedent(body)


def imported(lines: list[str]) -> list[str]:
    return sorted(line.removeprefix("imported ") for line in lines if line.startswith("imported "))


SAMPLE = {
    "test_params.py": _module(
        """
        import pytest


        @pytest.mark.parametrize("n", [1, 2])
        def test_positive(n):
            assert n > 0


        class TestWords:
            @pytest.mark.skip(reason="not today")
            def test_skipped(self):
                pass

            def test_upper(self):
                assert "a".upper() == "A"
        """
    ),
    "test_other.py": _module(
        """
        def test_other():
            assert True
        """
    ),
}


def test_unchanged_modules_are_not_imported(pytester, run_vault, ran_log):
    write_files(pytester.path, SAMPLE)
    first = run_vault("-v", "-rs")
    assert imported(ran_log.take()) == ["test_other", "test_params"]

    second = run_vault("-v", "-rs")
    assert imported(ran_log.take()) == []
    assert vault_counts(second) == (5, 0)
    second.assert_outcomes(passed=4, skipped=1)
    plain = {nodeid: status.replace(" (cached)", "") for nodeid, status in verbose_statuses(second).items()}
    assert plain == verbose_statuses(first)
    assert list(verbose_statuses(second)) == list(verbose_statuses(first)), "same order"
    assert skip_lines(second) == skip_lines(first)


def test_an_edited_module_is_imported_and_its_new_test_found(pytester, run_vault, ran_log):
    write_files(pytester.path, SAMPLE)
    run_vault()
    run_vault()
    ran_log.take()
    edit(pytester.path / "test_other.py", "def test_other():", "def test_added():\n    pass\n\n\ndef test_other():")

    result = run_vault("-v")
    assert imported(ran_log.take()) == ["test_other"]
    assert executed(result) == {"test_other.py::test_added", "test_other.py::test_other"}
    assert vault_counts(result) == (4, 2)


def test_a_new_case_in_a_data_file_read_at_import_is_collected(pytester, run_vault, ran_log):
    """Parametrize values read from a file while the module is imported."""
    write_files(
        pytester.path,
        {
            "cases.json": "[1, 2]",
            "test_data.py": _module(
                """
                import json

                import pytest

                CASES = json.load(open("cases.json"))


                @pytest.mark.parametrize("n", CASES)
                def test_small(n):
                    assert n < 3
                """
            ),
        },
    )
    run_vault().assert_outcomes(passed=2)
    run_vault().assert_outcomes(passed=2)
    (pytester.path / "cases.json").write_text("[1, 2, 3]")

    result = run_vault("-v")
    result.assert_outcomes(passed=2, failed=1)
    assert "test_data.py::test_small[3] FAILED" in result.stdout.str()


def test_a_library_constant_behind_parametrize_is_followed(pytester, run_vault, ran_log):
    write_files(
        pytester.path,
        {
            "limits.py": "LIMITS = [1, 2]\n",
            "test_limits.py": _module(
                """
                import pytest

                from limits import LIMITS


                @pytest.mark.parametrize("n", LIMITS)
                def test_limit(n):
                    assert n != 5
                """
            ),
        },
    )
    run_vault().assert_outcomes(passed=2)
    run_vault().assert_outcomes(passed=2)
    edit(pytester.path / "limits.py", "[1, 2]", "[1, 2, 5]")

    result = run_vault("-v")
    result.assert_outcomes(passed=2, failed=1)
    assert "test_limits.py::test_limit[5] FAILED" in result.stdout.str()


def test_environment_read_at_import_is_an_input(pytester, run_vault, ran_log, monkeypatch):
    """A skip condition computed from a variable when the module is imported."""
    write_files(
        pytester.path,
        {
            "test_env.py": _module(
                """
                import os

                import pytest


                @pytest.mark.skipif(os.environ.get("SLOW_OK") != "1", reason="slow")
                def test_slow():
                    assert False, "slow test ran and failed"
                """
            ),
        },
    )
    monkeypatch.delenv("SLOW_OK", raising=False)
    run_vault().assert_outcomes(skipped=1)
    run_vault().assert_outcomes(skipped=1)
    monkeypatch.setenv("SLOW_OK", "1")

    result = run_vault("--vault-explain")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["test_env.py::test_slow: env: SLOW_OK"])


def _warm_beside_plain(pytester, run_vault, run_pytest, ran_log, files, selection):
    """A warm ``-v`` run with ``selection``, checked to import no test module, and a
    plain run (no vault) with the same selection."""
    write_files(pytester.path, files)
    run_vault()
    ran_log.take()
    result = run_vault("-v", *selection)
    assert imported(ran_log.take()) == []
    return result, run_pytest("-v", "-p", "no:cachevault", *selection)


@pytest.mark.parametrize(
    "selection",
    [
        ["-k", "upper or other"],
        ["-k", "Words"],  # a class name: the stand-ins keep it among their keywords
        ["-k", "not positive and not skipped"],
        ["-m", "skip"],
        ["-m", "not skip"],
        ["-m", "parametrize"],  # kept by name, though its values are consumed
        ["--deselect", "test_params.py::TestWords"],
    ],
)
def test_selection_among_stand_ins_is_pytests_own(pytester, run_vault, run_pytest, ran_log, selection):
    """``-k``, ``-m`` and ``--deselect`` pick the same tests among stand-ins as pytest
    picks among the real ones, and the modules stay unimported."""
    result, plain = _warm_beside_plain(pytester, run_vault, run_pytest, ran_log, SAMPLE, selection)
    assert replayed(result) == set(verbose_statuses(plain)) != set()
    assert result.parseoutcomes().get("deselected") == plain.parseoutcomes().get("deselected")


NESTED = {
    "test_nested.py": _module(
        """
        import pytest


        class TestOuter:
            class TestInner:
                @pytest.mark.parametrize("n", [pytest.param(1, id="a::b"), 2])
                def test_deep(self, n):
                    assert n

            def test_outer(self):
                pass


        def test_after():
            pass
        """
    ),
}


@pytest.mark.parametrize("selection", [[], ["-k", "Inner"], ["-k", "a::b"], ["-k", "Outer and not Inner"]])
def test_nested_classes_and_ids_with_colons(pytester, run_vault, run_pytest, ran_log, selection):
    """Stand-ins rebuild the classes around their tests (a parameter id may hold
    ``::``): the same node ids, order and ``-k`` matches as the real collection."""
    result, plain = _warm_beside_plain(pytester, run_vault, run_pytest, ran_log, NESTED, selection)
    assert list(verbose_statuses(result)) == list(verbose_statuses(plain))
    assert executed(result) == set()


def test_a_test_deselected_until_now_runs_when_selected(pytester, run_vault, ran_log):
    """A test that never ran has no record: its module may still stand in while it is
    deselected, and the real module is imported when it is selected."""
    write_files(
        pytester.path,
        {
            "pytest.ini": "[pytest]\nmarkers =\n    slow: a slow test\n",
            "test_marked.py": _module(
                """
                import pytest


                def test_quick():
                    pass


                @pytest.mark.slow
                def test_slow():
                    assert False, "the slow one ran"
                """
            ),
        },
    )
    run_vault("-m", "not slow")
    ran_log.take()
    quiet = run_vault("-m", "not slow")
    assert imported(ran_log.take()) == []
    quiet.assert_outcomes(passed=1, deselected=1)

    result = run_vault("-m", "slow")
    assert imported(ran_log.take()) == ["test_marked"]
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*AssertionError: the slow one ran*"])


def test_a_file_changed_by_a_live_test_is_run_for_real(pytester, run_vault, ran_log):
    """The stand-in is chosen at collection; the file changes later in the same run, so
    the test must run from its real module, and fail as it does without the vault."""
    write_files(
        pytester.path,
        {
            "counter.txt": "0",
            "test_a_writer.py": """
                import pytest


                @pytest.mark.vault_bypass
                def test_count():
                    with open("counter.txt") as f:
                        count = int(f.read())
                    with open("counter.txt", "w") as f:
                        f.write(str(count + 1))
            """,
            "test_b_reader.py": _module(
                """
                def test_once():
                    with open("counter.txt") as f:
                        assert int(f.read()) < 2
                """
            ),
        },
    )
    run_vault().assert_outcomes(passed=2)
    ran_log.take()

    result = run_vault("-v")
    result.assert_outcomes(passed=1, failed=1)
    assert "test_b_reader.py::test_once FAILED" in result.stdout.str()
    result.stdout.fnmatch_lines(["E*assert 2 < 2"])  # the real test's own failure
    assert imported(ran_log.take()) == ["test_b_reader"]


def test_a_module_that_warns_at_import_is_imported_every_time(pytester, run_vault, ran_log):
    """A stand-in could not repeat the warning, so such a module is not stood in for."""
    write_files(
        pytester.path,
        {
            "test_warns.py": _module(
                """
                import warnings

                warnings.warn("old configuration style", DeprecationWarning)


                def test_fine():
                    pass
                """
            ),
        },
    )
    run_vault()
    ran_log.take()
    result = run_vault()
    assert imported(ran_log.take()) == ["test_warns"]
    assert vault_counts(result) == (1, 0)
    result.stdout.fnmatch_lines(["*DeprecationWarning: old configuration style*"])


def test_a_conftest_hook_that_needs_real_tests_gets_them(pytester, run_vault, ran_log):
    """``item.function`` is no attribute of a stand-in: the hook fails on one, the real
    tests are collected for it, and the run goes on as without the vault."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                def pytest_collection_modifyitems(items):
                    for item in items:
                        if item.function.__doc__:
                            item.add_marker("documented")
            """,
            **SAMPLE,
        },
    )
    run_vault().assert_outcomes(passed=4, skipped=1)
    ran_log.take()

    result = run_vault()
    result.assert_outcomes(passed=4, skipped=1)
    assert vault_counts(result) == (5, 0)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_the_ini_switch_turns_it_off(pytester, run_vault, ran_log):
    write_files(pytester.path, {**SAMPLE, "pytest.ini": "[pytest]\nvault_skip_collection = false\n"})
    run_vault()
    ran_log.take()
    assert vault_counts(run_vault()) == (5, 0)
    assert imported(ran_log.take()) == ["test_other", "test_params"]


def test_an_unchanged_collection_record_is_kept_not_rewritten(pytester, run_vault, ran_log):
    """A module imported again (here: stand-ins are off) holds what its record says:
    the record is kept as it is, not written once per run."""
    write_files(pytester.path, {**SAMPLE, "pytest.ini": "[pytest]\nvault_skip_collection = false\n"})
    run_vault()

    def collection_records() -> dict[str, int]:
        area = run_vault.store / LAYOUT / COLLECTIONS
        return {path.name: path.stat().st_ino for path in area.glob(f"*/*{SUFFIX}")}

    before = collection_records()
    assert len(before) == 2
    run_vault().assert_outcomes(passed=4, skipped=1)
    assert collection_records() == before


def test_without_the_cacheprovider(pytester, run_vault, ran_log):
    write_files(pytester.path, SAMPLE)
    run_vault("-p", "no:cacheprovider").assert_outcomes(passed=4, skipped=1)
    assert vault_counts(run_vault("-p", "no:cacheprovider")) == (5, 0)


GC_WATCH = """
    import gc
    import os
    import sys

    import pytest

    seen = {"building stand-ins": 0, "recording": 0,
            "elsewhere in collection": 0, "elsewhere in the run": 0}
    phase = "elsewhere in collection"
    PLUGIN = os.sep + "pytest_cachevault" + os.sep
    # the plugin's bookkeeping of a live test and of a module it collected
    RECORDING = {"record", "leaving", "ran", "code_ran", "record_collection"}


    def _watch(step, info):
        if step != "start":
            return
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if PLUGIN in code.co_filename:
                # the constructors of the stand-in module, classes and items
                if code.co_filename.endswith("collect.py") and code.co_name == "__init__":
                    seen["building stand-ins"] += 1
                    return
                if code.co_filename.endswith("session.py") and code.co_name in RECORDING:
                    seen["recording"] += 1
                    return
            frame = frame.f_back
        seen[phase] += 1


    usual = gc.get_threshold()


    def pytest_collection(session):
        gc.set_threshold(1)  # a collection at nearly every allocation
        gc.callbacks.append(_watch)


    def pytest_runtest_logstart(nodeid, location):
        global phase
        phase = "elsewhere in the run"


    def pytest_sessionfinish(session):
        gc.callbacks.remove(_watch)
        gc.set_threshold(*usual)


    def pytest_terminal_summary(terminalreporter):
        for where, count in seen.items():
            terminalreporter.write_line(f"collector runs {where}: {count}")
"""


def collector_runs(result: pytest.RunResult) -> dict[str, int]:
    """``{where: count}`` from the ``collector runs WHERE: COUNT`` lines GC_WATCH prints."""
    return {
        line.partition(":")[0].removeprefix("collector runs "): int(line.partition(":")[2])
        for line in result.outlines
        if line.startswith("collector runs ")
    }


def test_the_collector_is_paused_while_stand_ins_are_built(pytester, run_vault, ran_log):
    """Building stand-ins runs no test code but makes objects that live as long as the
    session, so Python's garbage collector is off meanwhile (each full collection
    would go through all the items made before). Here the collector is asked to run at
    nearly every allocation: it runs elsewhere in the collection, never in there."""
    write_files(pytester.path, {**SAMPLE, "conftest.py": GC_WATCH})
    run_vault("-s")
    second = run_vault("-s")
    assert vault_counts(second) == (5, 0)
    assert imported(ran_log.take()) == ["test_other", "test_params"]  # the first run only
    runs = collector_runs(second)
    assert runs["building stand-ins"] == 0
    assert runs["elsewhere in collection"] > 0


def test_the_collector_is_paused_while_live_tests_are_recorded(pytester, run_vault, ran_log):
    """Storing what a live test did (and what a module held) runs no test code, yet
    each full collection the collector would start there goes through everything the
    session made so far; the collector is off meanwhile and catches up between tests."""
    write_files(pytester.path, {**SAMPLE, "conftest.py": GC_WATCH})
    first = run_vault("-s")
    assert vault_counts(first) == (0, 5)
    runs = collector_runs(first)
    assert runs["recording"] == 0
    assert runs["elsewhere in collection"] > 0
    assert runs["elsewhere in the run"] > 0
