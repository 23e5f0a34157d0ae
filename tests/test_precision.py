"""Precision: a change re-runs the tests that depend on it, and leaves the others replayed."""

from __future__ import annotations

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
