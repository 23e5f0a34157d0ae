"""A live test sees the same program with the vault on: the tracer leaves no trace."""

from __future__ import annotations

from conftest import vault_counts, write_files

LIBRARY = {
    "pkg/__init__.py": "",
    "pkg/old.py": """
        import warnings

        warnings.warn("pkg.old is deprecated", DeprecationWarning, stacklevel=2)


        def answer():
            return 42
    """,
    "pkg/fails.py": """
        def explode():
            x = 1
            raise ValueError("boom")
    """,
}


def test_import_time_warning_points_at_the_importer(pytester, run_vault):
    """``stacklevel`` of a warning raised at import still lands on the ``import`` line."""
    write_files(
        pytester.path,
        {
            **LIBRARY,
            "test_old.py": """
                import pytest


                def test_warning_location():
                    with pytest.warns(DeprecationWarning) as record:
                        import pkg.old
                    assert record[0].filename == __file__
            """,
        },
    )
    run_vault().assert_outcomes(passed=1)


def test_module_namespace_and_line_numbers_are_unchanged(pytester, run_vault):
    write_files(
        pytester.path,
        {
            **LIBRARY,
            "test_names.py": """
                import traceback

                import pkg.old
                from pkg import fails


                STANDARD = {"__name__", "__doc__", "__package__", "__loader__", "__spec__",
                            "__file__", "__cached__", "__builtins__"}


                def test_namespace():
                    assert set(vars(pkg.old)) - STANDARD == {"warnings", "answer"}


                def test_traceback_line():
                    try:
                        fails.explode()
                    except ValueError as exc:
                        frame = traceback.extract_tb(exc.__traceback__)[-1]
                    assert (frame.lineno, frame.line) == (3, 'raise ValueError("boom")')
            """,
        },
    )
    first = run_vault("-W", "ignore::DeprecationWarning")
    first.assert_outcomes(passed=2)
    assert vault_counts(first) == (0, 2)
