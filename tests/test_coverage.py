"""pytest-cov: ``pytest --cov --vault`` measures the tests that ran, as a plain run of
those tests would.

Each test compares a vault run with a run without the plugin (``-p no:cachevault``)
of the same tests: the terminal report row by row, or coverage's data file line by
line and arc by arc. Replayed tests run no code, so they add nothing to a report
(see docs/how-it-works.md, "Coverage (pytest-cov)").
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import edit, executed, replayed, vault_counts, write_files

pytest.importorskip("pytest_cov")
coverage = pytest.importorskip("coverage")

#: A library of three modules; ``label`` runs code of both ``core`` and ``text``.
PROJECT = {
    "pkg/__init__.py": "",
    "pkg/core.py": '''
        """Numbers."""

        from pkg import text


        def add(a, b):
            return a + b


        def scale(x, factor=2):
            if factor < 0:
                raise ValueError("negative factor")
            return x * factor


        def label(x):
            return text.shout(str(x))


        def unused(x):
            y = x + 1
            return y
    ''',
    "pkg/text.py": """
        def shout(s):
            if not s:
                return ""
            return s.upper() + "!"
    """,
    "pkg/extra.py": """
        def negate(x):
            return -x
    """,
    "tests/test_core.py": """
        from pkg.core import add, label, scale


        def test_add():
            assert add(1, 2) == 3


        def test_scale():
            assert scale(3) == 6


        def test_label():
            assert label(7) == "7!"
    """,
    "tests/test_text.py": """
        from pkg.text import shout


        def test_shout():
            assert shout("a") == "A!"
    """,
    "tests/test_extra.py": """
        from pkg.extra import negate


        def test_negate():
            assert negate(2) == -2
    """,
}
TESTS = 5
#: What ``label`` and ``shout`` ran: the tests an edit of ``pkg/text.py`` re-runs.
TEXT_TESTS = {"tests/test_core.py::test_label", "tests/test_text.py::test_shout"}

COV = ("--cov=pkg", "--cov-report=term-missing")
PLAIN = ("-p", "no:cachevault")

_ROW_RE = re.compile(r"^(\S+\.py|TOTAL)((?:\s+\d+)+)\s+(\d+(?:\.\d+)?%)\s*(.*)$")


def coverage_rows(result: pytest.RunResult) -> dict[str, tuple[str, ...]]:
    """``{file: (stmts, miss[, branch, brpart], cover, missing)}`` from a term report."""
    rows = {}
    for line in result.stdout.lines:
        match = _ROW_RE.match(line)
        if match:
            name, numbers, cover, missing = match.groups()
            rows[name] = (*numbers.split(), cover, missing.strip())
    assert "TOTAL" in rows, f"no coverage report in:\n{result.stdout.str()}"
    return rows


def measured(data_file: Path) -> dict[str, list]:
    """What coverage's data file holds: the arcs (or lines) executed in each file."""
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    return {
        Path(name).name: sorted((data.arcs(name) if data.has_arcs() else data.lines(name)) or [])
        for name in data.measured_files()
    }


@pytest.fixture
def cov_project(pytester: pytest.Pytester) -> Path:
    return write_files(pytester.path, PROJECT)


def test_a_cold_run_reports_what_a_plain_run_does(cov_project, run_pytest, run_vault):
    plain = run_pytest(*PLAIN, *COV)
    plain.assert_outcomes(passed=TESTS)
    rows = coverage_rows(plain)
    assert rows["pkg/core.py"][-1] == "12, 21-22", "the sample must leave lines uncovered"

    cold = run_vault(*COV)
    cold.assert_outcomes(passed=TESTS)
    assert vault_counts(cold) == (0, TESTS)
    assert coverage_rows(cold) == rows


def test_a_warm_run_reports_the_tests_that_ran(cov_project, run_pytest, run_vault):
    cold = run_vault(*COV)
    assert vault_counts(cold) == (0, TESTS)
    edit(cov_project / "pkg/text.py", 'return ""', "return str()")

    warm = run_vault("-v", *COV)
    warm.assert_outcomes(passed=TESTS)
    assert executed(warm) == TEXT_TESTS
    assert len(replayed(warm)) == TESTS - len(TEXT_TESTS)

    plain = run_pytest(*PLAIN, *COV, *sorted(TEXT_TESTS))
    plain.assert_outcomes(passed=len(TEXT_TESTS))
    assert coverage_rows(warm) == coverage_rows(plain)
    assert coverage_rows(warm) != coverage_rows(cold), "replayed tests add no coverage"


def test_bypass_gives_the_whole_report_and_a_full_replay_none(cov_project, run_pytest, run_vault):
    """The docs' advice for a complete report from a warm store: ``--vault-bypass``."""
    full = coverage_rows(run_pytest(*PLAIN, *COV))
    run_vault(*COV)

    replaying = run_vault(*COV)
    replaying.assert_outcomes(passed=TESTS)
    assert vault_counts(replaying) == (TESTS, 0)
    assert coverage_rows(replaying)["TOTAL"][-2] == "0%", "no test ran, no line was measured"

    bypass = run_vault("--vault-bypass", *COV)
    assert vault_counts(bypass) == (0, TESTS)
    assert coverage_rows(bypass) == full
    assert vault_counts(run_vault(*COV)) == (TESTS, 0), "the bypass run refreshed the store"


CHECK = {
    "pkg/__init__.py": "",
    "pkg/check.py": '''
        """Checks."""


        def positive(n):
            """Fail loudly."""
            assert n > 0, f"{n} is not positive"
            return n
    ''',
    "tests/test_check.py": """
        from pkg.check import positive


        def test_positive():
            positive(-1)
    """,
}


def _failure(result: pytest.RunResult) -> list[str]:
    """The lines of the FAILURES section, up to the next section."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "= FAILURES =" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    return [line for line in lines[start:end] if not line.startswith("vault: ")]


def test_tracebacks_point_at_the_source_lines(pytester, run_pytest, run_vault):
    write_files(pytester.path, CHECK)
    plain = run_pytest(*PLAIN, "-rf")
    plain.assert_outcomes(failed=1)
    assert "pkg/check.py:6: AssertionError" in _failure(plain)

    for _ in range(2):  # a failed test is never replayed: the second run traces it again
        vault = run_vault(*COV, "-rf")
        vault.assert_outcomes(failed=1)
        assert vault_counts(vault) == (0, 1)
        assert _failure(vault) == _failure(plain)


#: Function bodies the marking tracer (Python < 3.12) adds its mark to: its line is that
#: of the statement the interpreter reports next, so coverage's data is the same.
SHAPES = {
    "pkg/shapes.py": """
        \"\"\"Shapes of function bodies.\"\"\"
        from __future__ import annotations

        import functools

        COUNT = 0


        def only_doc():
            \"\"\"Nothing but a docstring.\"\"\"


        @functools.lru_cache
        def decorated_only_doc(): "Decorated, nothing but a docstring."


        def decorated_first(n):
            @functools.lru_cache(maxsize=None)
            def inner(k):
                return k * 2
            return inner(n)


        def decorated_class():
            @staticmethod
            class Inner:
                pass
            return Inner


        def global_first():
            global COUNT
            COUNT += 1
            return COUNT


        def nonlocal_first():
            n = 0

            def bump():
                nonlocal n
                n += 1
            bump()
            return n


        def branch_first(n):
            if n > 0:
                return "pos"
            return "neg"


        def loop_first(items):
            for item in items:
                if item:
                    return item
            return None


        def while_first(n):
            while True:
                n -= 1
                if n <= 0:
                    break
            return n


        def try_first(x):
            try:
                return 1 / x
            except ZeroDivisionError:
                return None


        def gen(n):
            \"\"\"A generator.\"\"\"
            yield from range(n)


        async def coro(x):
            return x + 1


        class Box:
            \"\"\"A class.\"\"\"

            size = 3

            def grow(self, by):
                \"\"\"Grow.\"\"\"
                self.size += by
                return self.size

            @property
            def double(self): return self.size * 2


        square = lambda x: x * x  # noqa: E731
    """,
    # First statements whose first instruction is on a later line: the mark adds one
    # event on the statement's first line, which coverage counts for the same statement.
    "pkg/multiline.py": """
        def multiline_if(x):
            if (
                x
                and x > 1
            ):
                return "big"
            return "small"


        def multiline_assign(a,
                             b):
            total = (
                a
                + b
            )
            return total
    """,
    "tests/test_shapes.py": """
        import asyncio

        from pkg import multiline, shapes


        def test_shapes():
            assert shapes.only_doc() is None
            assert shapes.decorated_only_doc() is None
            assert shapes.decorated_first(2) == 4
            assert shapes.decorated_class() is not None
            assert shapes.global_first() == 1
            assert shapes.nonlocal_first() == 1
            assert shapes.branch_first(1) == "pos"
            assert shapes.loop_first([0, 3]) == 3
            assert shapes.while_first(2) == 0
            assert shapes.try_first(0) is None
            assert list(shapes.gen(2)) == [0, 1]
            assert asyncio.run(shapes.coro(1)) == 2
            box = shapes.Box()
            assert box.grow(1) == 4 and box.double == 8
            assert shapes.square(3) == 9


        def test_multiline():
            assert multiline.multiline_if(2) == "big"
            assert multiline.multiline_assign(1, 2) == 3
    """,
}


def json_report(path: Path) -> dict:
    """A coverage JSON report without the run's own metadata (timestamp, version)."""
    report = json.loads(path.read_text(encoding="utf-8"))
    return {"files": report["files"], "totals": report["totals"]}


@pytest.mark.parametrize("branch", [False, True], ids=["lines", "branches"])
def test_coverage_measures_what_a_plain_run_does(pytester, run_pytest, run_vault, tmp_path, branch):
    """Report for report (lines, branches, functions, classes) and, where the mark sits
    exactly on a statement's line, line for line and arc for arc in the data file."""
    write_files(pytester.path, SHAPES)
    args = ["--cov=pkg", *(["--cov-branch"] if branch else [])]
    plain = run_pytest(*PLAIN, *args, f"--cov-report=json:{tmp_path / 'plain.json'}")
    plain.assert_outcomes(passed=2)
    expected = measured(pytester.path / ".coverage")
    assert len(expected["shapes.py"]) > 30

    vault = run_vault(*args, f"--cov-report=json:{tmp_path / 'vault.json'}")
    assert vault_counts(vault) == (0, 2)
    assert json_report(tmp_path / "vault.json") == json_report(tmp_path / "plain.json")
    data = measured(pytester.path / ".coverage")
    assert data["shapes.py"] == expected["shapes.py"]
    assert data.keys() == expected.keys()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is new in 3.12")
def test_coverage_on_sys_monitoring_too(cov_project, run_pytest, run_vault, tmp_path_factory):
    """coverage.py's ``sysmon`` core (the default from Python 3.14) and the vault's
    tracer are two ``sys.monitoring`` tools side by side."""
    debug = tmp_path_factory.mktemp("coverage-debug") / "core.txt"
    env = {"COVERAGE_CORE": "sysmon", "COVERAGE_DEBUG": "core", "COVERAGE_DEBUG_FILE": str(debug)}
    plain = run_pytest(*PLAIN, *COV, env=env)
    cold = run_vault(*COV, env=env)
    assert vault_counts(cold) == (0, TESTS)
    assert coverage_rows(cold) == coverage_rows(plain)
    assert debug.read_text().count("Using core=sysmon") == 2


def test_xdist_workers_measure_what_they_run(cov_project, run_pytest, run_vault):
    pytest.importorskip("xdist")
    args = ("-n", "2", "--cov=pkg", "--cov-branch", "--cov-report=term-missing")
    plain = run_pytest(*PLAIN, *args)
    cold = run_vault(*args)
    cold.assert_outcomes(passed=TESTS)
    assert vault_counts(cold) == (0, TESTS)
    assert coverage_rows(cold) == coverage_rows(plain)

    edit(cov_project / "pkg/text.py", 'return ""', "return str()")
    warm = run_vault(*args)
    warm.assert_outcomes(passed=TESTS)
    assert vault_counts(warm) == (TESTS - len(TEXT_TESTS), len(TEXT_TESTS))
    assert coverage_rows(warm) == coverage_rows(run_pytest(*PLAIN, *args, *sorted(TEXT_TESTS)))


def test_coverage_configuration_is_not_an_input(cov_project, run_vault):
    """coverage.py reads its configuration (here ``pyproject.toml``) when it starts; that
    read is not every test's input, so a version bump still replays everything."""
    write_files(cov_project, {
        "pyproject.toml": """
            [project]
            name = "sample"
            version = "1.0"

            [tool.coverage.run]
            omit = ["pkg/extra.py"]
        """,
    })
    run_vault(*COV)
    edit(cov_project / "pyproject.toml", '"1.0"', '"1.1"')
    again = run_vault(*COV, "--vault-explain")
    assert vault_counts(again) == (TESTS, 0)
    assert "pkg/extra.py" not in coverage_rows(again), "the configuration was read"


def test_report_options_do_not_change_the_environment(cov_project, run_vault):
    """Like ``-v`` or ``--junitxml``, what coverage reports and how does not change an
    outcome: another ``--cov-report`` still replays."""
    run_vault(*COV)
    other = run_vault("--cov=pkg", "--cov-report=xml:coverage.xml", "--cov-fail-under=0", "--cov-precision=1")
    assert vault_counts(other) == (TESTS, 0)
    assert (cov_project / "coverage.xml").is_file()
