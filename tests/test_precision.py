"""Precision: a change re-runs the tests that depend on it, and leaves the others replayed."""

from __future__ import annotations

import sys

import pytest
from conftest import edit, executed, replayed, vault_counts, vault_reasons, write_files


def test_function_edit_reruns_only_the_tests_that_ran_it(pytester, run_vault):
    """Tests that executed nothing in ``pkg/core.py`` stay cached, even those importing it."""
    write_files(
        pytester.path,
        {
            "pkg/__init__.py": "",
            "pkg/core.py": """
                def double(x):
                    return x * 2
            """,
            "pkg/text.py": """
                def shout(word):
                    return word.upper() + "!"
            """,
            "test_double.py": """
                from pkg.core import double


                def test_double():
                    assert double(21) == 42
            """,
            "test_imports_core.py": """
                import pkg.core  # noqa: F401  (imported, never called)
                from pkg.text import shout


                def test_shout_with_core_imported():
                    assert shout("hi") == "HI!"


                def test_imports_core_at_call_time():
                    from pkg import core  # noqa: F401

                    assert shout("yo") == "YO!"
            """,
            "test_text.py": """
                from pkg.text import shout


                def test_shout():
                    assert shout("ok") == "OK!"
            """,
        },
    )
    run_vault.record_and_replay(passed=4)

    edit(pytester.path / "pkg/core.py", "return x * 2", "return x + x")
    result = run_vault("-v")
    result.assert_outcomes(passed=4)
    assert executed(result) == {"test_double.py::test_double"}
    assert replayed(result) == {
        "test_imports_core.py::test_shout_with_core_imported",
        "test_imports_core.py::test_imports_core_at_call_time",
        "test_text.py::test_shout",
    }
    assert vault_counts(result) == (3, 1)
    assert vault_reasons(result) == {"changed": 1}


def test_only_functions_that_ran_at_import_are_every_importers_input(pytester, run_vault):
    """A module computes a constant at import with one of its functions: the tests that
    import it depend on that function's body, not on the bodies of the others."""
    write_files(
        pytester.path,
        {
            "pkg/__init__.py": "",
            "pkg/limits.py": """
                class Limits:
                    def compute(self):
                        return 40 + 2


                def helper(x):
                    return x + 1


                LIMIT = Limits().compute()
            """,
            "test_limit.py": """
                from pkg.limits import LIMIT


                def test_limit():
                    assert LIMIT == 42
            """,
            "test_helper.py": """
                from pkg.limits import helper


                def test_helper():
                    assert helper(1) == 2
            """,
        },
    )
    run_vault.record_and_replay(passed=2)

    edit(pytester.path / "pkg/limits.py", "x + 1", "1 + x")
    result = run_vault("-v")
    result.assert_outcomes(passed=2)
    assert executed(result) == {"test_helper.py::test_helper"}
    assert replayed(result) == {"test_limit.py::test_limit"}

    edit(pytester.path / "pkg/limits.py", "40 + 2", "40 + 3")
    result = run_vault("-v")
    result.assert_outcomes(failed=1, passed=1)
    assert vault_counts(result) == (0, 2)


def test_new_test_leaves_other_test_files_cached(pytester, run_vault):
    """Adding a test function to one file runs it, not the tests of the other files."""
    write_files(
        pytester.path,
        {
            "test_alpha.py": """
                def test_alpha_one():
                    assert "a" < "b"
            """,
            "test_beta.py": """
                def test_beta_one():
                    assert 1 < 2


                def test_beta_two():
                    assert [] == []
            """,
        },
    )
    run_vault().assert_outcomes(passed=3)

    with (pytester.path / "test_alpha.py").open("a") as module:
        module.write("\n\ndef test_alpha_new():\n    assert 'new'\n")
    result = run_vault("-v")
    result.assert_outcomes(passed=4)
    assert {"test_beta.py::test_beta_one", "test_beta.py::test_beta_two"} <= replayed(result)
    assert "test_alpha.py::test_alpha_new" in executed(result)
    assert vault_reasons(result).get("new") == 1


def test_file_a_module_fixture_writes_is_not_an_input_of_its_users(pytester, run_vault):
    """A fixture that writes a scratch file in the tree and removes it afterwards: the
    file is the fixture's output. Were it an input, its absence between runs would make
    every user of the fixture miss forever."""
    write_files(
        pytester.path,
        {
            "test_scratch.py": """
                from pathlib import Path

                import pytest


                @pytest.fixture(scope="module")
                def scratch():
                    path = Path("scratch.txt")
                    path.write_text("42")
                    yield path
                    path.unlink()


                def test_first(scratch):
                    assert scratch.read_text() == "42"


                def test_second(scratch):
                    assert int(scratch.read_text()) == 42
            """,
        },
    )
    run_vault.record_and_replay(passed=2)


#: Eight tests in four modules, each calling the same two library functions.
SHARED_CODE_FILES = {
    "pkg/__init__.py": "",
    "pkg/answer.py": """
        def answer():
            return 42
    """,
    "pkg/countdown.py": """
        def countdown(n):
            while n:
                yield n
                n -= 1
    """,
    **{
        f"test_user{i}.py": f"""
            from pkg.answer import answer
            from pkg.countdown import countdown


            def test_answer_{i}():
                assert answer() == 42


            def test_countdown_{i}():
                assert list(countdown(3)) == [3, 2, 1]
        """
        for i in range(4)
    },
}


def _each_user_of_shared_code_reruns(pytester, run_vault, *args: str) -> None:
    write_files(pytester.path, SHARED_CODE_FILES)
    run_vault.record_and_replay(*args, passed=8)
    edit(pytester.path / "pkg/answer.py", "return 42", "return 41")
    result = run_vault(*args)
    result.assert_outcomes(failed=4, passed=4)
    assert vault_counts(result) == (4, 4)

    edit(pytester.path / "pkg/answer.py", "return 41", "return 42")
    run_vault(*args).assert_outcomes(passed=8)
    edit(pytester.path / "pkg/countdown.py", "yield n", "yield -n")  # a generator, resumed
    result = run_vault(*args)
    result.assert_outcomes(failed=4, passed=4)
    assert vault_counts(result) == (4, 4)


def test_code_every_test_runs_is_an_input_of_each(pytester, run_vault):
    """The tracer reports a function in every test that runs it, not only in the first
    two: on 3.12+ a reported function stops reporting until the next test re-arms it."""
    _each_user_of_shared_code_reruns(pytester, run_vault)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is new in 3.12")
def test_with_one_monitoring_tool_id_free_each_test_still_sees_shared_code(pytester, run_vault):
    """Other tools hold all ``sys.monitoring`` tool ids but one: the tracer works with
    that one, re-arming every code object for each test."""
    write_files(pytester.path, {"hold_tools.py": """
        import sys

        for tool in (4, 3):
            sys.monitoring.use_tool_id(tool, "someone else")
    """})
    _each_user_of_shared_code_reruns(pytester, run_vault, "-p", "hold_tools")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is new in 3.12")
def test_code_the_tracer_cannot_watch_is_still_seen_by_each_test(pytester, run_vault):
    """Local events refused for a code object: the tracer re-arms everything instead."""
    write_files(pytester.path, {"refuse_local_events.py": """
        import sys


        def refuse(tool, code, events):
            raise ValueError("no local events here")


        sys.monitoring.set_local_events = refuse
    """})
    _each_user_of_shared_code_reruns(pytester, run_vault, "-p", "refuse_local_events")
