"""pytest-xdist: ``-n 2`` replays and runs what a serial run does, counted by the controller.

The workers trace, look up and record; the controller only sees the reports and
what each worker hands over at its end (warnings, why the vault was off).
"""

from __future__ import annotations

import collections
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_cachevault.store import LAYOUT, Store, record_key_and_name

from conftest import (
    OUTCOMES_FILES,
    RANLOG_MODULE,
    no_traceback,
    record_files,
    record_of,
    replayed,
    stored_tests,
    unpacked,
    vault_counts,
    vault_warnings,
    write_files,
    write_packed,
)

pytest.importorskip("xdist")

#: A project of several modules with every outcome, fixtures of every scope, a data
#: file and an environment variable; its conftest notes every test result written.
PROJECT = {
    "ranlog.py": RANLOG_MODULE,
    "conftest.py": """
        from pathlib import Path

        import pytest

        from pytest_cachevault import store

        WRITES = Path(__file__).resolve().parent.with_name(Path(__file__).resolve().parent.name + ".writes")
        _put_record = store.Store.put_record


        def _noting_put_record(self, key, name, payload, *args, **kwargs):
            if "tests" in payload:  # a test module's results, not its collection
                with open(WRITES, "a", encoding="utf-8") as log:
                    log.writelines(nodeid + "\\n" for nodeid in payload["tests"])
            return _put_record(self, key, name, payload, *args, **kwargs)


        store.Store.put_record = _noting_put_record


        @pytest.fixture(scope="session")
        def table():
            return {"a": 1, "b": 2}
    """,
    "src/calc.py": """
        def add(a, b):
            return a + b


        def div(a, b):
            return a / b
    """,
    "data/cases.txt": "1 2 3\n2 2 4\n",
    "tests/test_calc.py": """
        import pytest

        from ranlog import ran
        from src.calc import add, div


        @pytest.mark.parametrize("a, b", [(1, 2), (2, 3), (5, 8), (0, 0), (7, 1), (3, 3)])
        def test_add(a, b):
            ran()
            assert add(a, b) == a + b


        def test_div_by_zero():
            ran()
            assert div(1, 0) == 0


        @pytest.mark.xfail(reason="rounding", strict=False)
        def test_known_bug():
            ran()
            assert add(0.1, 0.2) == 0.3


        @pytest.mark.xfail(reason="was a bug")
        def test_fixed_bug():
            ran()
            assert add(1, 1) == 2


        class TestGroup:
            def test_one(self, table):
                ran()
                assert table["a"] == 1

            def test_skipped(self):
                ran()
                pytest.skip("not today")
    """,
    "tests/test_data.py": """
        from pathlib import Path

        import pytest

        from ranlog import ran
        from src.calc import add

        CASES = Path(__file__).parent.parent / "data" / "cases.txt"


        @pytest.fixture(scope="module")
        def cases():
            return [tuple(map(int, line.split())) for line in CASES.read_text().splitlines()]


        def test_cases(cases):
            ran()
            assert all(add(a, b) == c for a, b, c in cases)


        def test_count(cases):
            ran()
            assert len(cases) == 2


        @pytest.mark.skip(reason="by marker")
        def test_marked():
            ran()
    """,
    "tests/test_errors.py": """
        import os

        import pytest

        from ranlog import ran


        @pytest.fixture
        def broken():
            raise RuntimeError("setup broke")


        def test_setup_error(broken):
            ran()


        def test_env():
            ran()
            assert os.environ.get("APP_MODE", "dev") == "dev"


        @pytest.mark.parametrize("n", range(8))
        def test_many(n):
            ran()
            assert n != 5
    """,
}


def junit_outcomes(path: Path) -> dict[str, str]:
    """``{classname::name: outcome}`` from a junit XML file (xfail and error told apart)."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = "passed"
        if "error" in kinds:
            outcome = "error"
        elif "failure" in kinds:
            outcome = "failed"
        elif "skipped" in kinds:
            skipped = case.find("skipped")
            outcome = "xfailed" if skipped is not None and skipped.get("type") == "pytest.xfail" else "skipped"
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return outcomes


def explanations(result) -> dict[str, str]:
    text = result.stdout.str()
    if " vault explain " not in text:
        return {}
    section = text.split(" vault explain ", 1)[1]
    return dict(re.findall(r"^(tests/\S+::\S+): (.+)$", section, re.MULTILINE))


def _writes(project: Path) -> collections.Counter:
    project = project.resolve()
    log = project.with_name(project.name + ".writes")
    if not log.exists():
        return collections.Counter()
    lines = log.read_text(encoding="utf-8").splitlines()
    log.unlink()
    return collections.Counter(lines)


def test_two_workers_match_a_serial_run_outcome_for_outcome(pytester, run_pytest, ran_log, tmp_path):
    """Same outcomes, same tests replayed and run for the same reasons, same counts,
    same results stored (each written once), in a serial run and under ``-n 2``."""
    project = write_files(pytester.path, PROJECT)
    seen = {}
    for mode, extra in (("serial", []), ("xdist", ["-n", "2"])):
        store = tmp_path / f"store-{mode}"
        for run in (1, 2):
            xml = tmp_path / f"{mode}-{run}.xml"
            result = run_pytest(
                "--vault", f"--vault-dir={store}", "--vault-explain", f"--junitxml={xml}", *extra
            )
            no_traceback(result)
            assert vault_warnings(result) == []
            seen[mode, run] = {
                "ret": result.ret,
                "outcomes": junit_outcomes(xml),
                "counts": vault_counts(result),
                "pytest": result.parseoutcomes(),
                "why": explanations(result),
                "ran": collections.Counter(ran_log.take()),
                "writes": _writes(project),
            }
        seen[mode, "records"] = record_files(store)
        seen[mode, "stored"] = stored_tests(store)

    serial = seen["serial", 1]
    assert serial["ret"] == pytest.ExitCode.TESTS_FAILED
    assert serial["pytest"] == {"passed": 17, "failed": 2, "skipped": 2, "xfailed": 1, "xpassed": 1, "errors": 1}
    assert serial["counts"] == (0, 24)
    assert set(serial["why"].values()) == {"new"}
    assert all(count == 1 for count in serial["ran"].values()) and len(serial["ran"]) == 22
    assert len(serial["writes"]) == 24 and set(serial["writes"].values()) == {1}
    for run in (1, 2):
        for what in ("ret", "outcomes", "counts", "pytest", "why", "ran", "writes"):
            assert seen["xdist", run][what] == seen["serial", run][what], (run, what)

    again = seen["serial", 2]
    assert again["outcomes"] == serial["outcomes"]
    assert again["counts"] == (21, 3)
    assert again["why"] == {
        "tests/test_calc.py::test_div_by_zero": "failed last time",
        "tests/test_errors.py::test_setup_error": "failed last time",
        "tests/test_errors.py::test_many[5]": "failed last time",
    }
    assert set(again["writes"]) == set(again["why"])  # only the tests that ran are written
    # One result file per module per run (3 modules, then the 2 with a failure); under
    # xdist a module's tests may be split between the workers, each writing a file.
    assert len(seen["serial", "records"]) == 5
    modules = {mode: {record_key_and_name(path)[0] for path in seen[mode, "records"]} for mode in ("serial", "xdist")}
    assert len(modules["serial"]) == 3 and modules["xdist"] == modules["serial"]
    assert len(seen["xdist", "records"]) >= 5
    assert seen["xdist", "stored"] == seen["serial", "stored"]
    assert len(seen["serial", "stored"]) == 24 + 3


def test_explain_one_test_under_xdist(pytester, run_vault, ran_log):
    """``--vault-explain=NODEID`` is answered by the controller, from the workers' records."""
    write_files(pytester.path, PROJECT)
    run_vault("-n", "2")
    result = run_vault("-n", "2", "--vault-explain=tests/test_data.py::test_count")
    no_traceback(result)
    result.stdout.fnmatch_lines(
        [
            "inputs recorded for tests/test_data.py::test_count:",
            "*record 1 of 1*outcome passed",
            "*file*tests/test_data.py*unchanged",
            "*→ would replay",
        ]
    )


def test_a_worker_s_warning_reaches_the_controller_once(pytester, run_vault, ran_log):
    """A damaged result file is found by the worker(s) running its module; the controller says so once."""
    write_files(pytester.path, PROJECT)
    # Recorded serially: one result file per module (two workers may split a module).
    run_vault()
    damaged = record_of(run_vault.store, "tests/test_data.py::test_count")
    write_packed(damaged, unpacked(damaged)[:40])

    result = run_vault("-n", "2")
    no_traceback(result)
    result.assert_outcomes(passed=17, failed=2, skipped=2, xfailed=1, xpassed=1, errors=1)
    # The damaged file held test_data.py's 3 results: they re-run with the 3 failures.
    assert vault_counts(result) == (18, 6)
    [warning] = vault_warnings(result)
    assert warning.startswith(f"record of an unknown schema or layout: {LAYOUT}/records/")
    assert vault_warnings(run_vault("-n", "2")) == []


def test_every_worker_s_warning_is_shown_once(pytester, run_vault, ran_log):
    """Both workers fail to write the same way: one warning line, not one per worker."""
    write_files(pytester.path, PROJECT)
    write_files(
        pytester.path,
        {
            "tests/conftest.py": """
                import errno
                import os

                from pytest_cachevault import store


                def _full(path, data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


                store._write_file = _full
            """
        },
    )
    Store(run_vault.store).ensure()  # the disk filled up after the store was made
    result = run_vault("-n", "2")
    no_traceback(result)
    result.assert_outcomes(passed=17, failed=2, skipped=2, xfailed=1, xpassed=1, errors=1)
    assert vault_warnings(result) == [
        f"cannot write to the vault at {run_vault.store}: No space left on device (ENOSPC); "
        "results of this run are not stored"
    ]
    assert vault_counts(result) == (0, 24)


#: Every kind of report content a replayed test gives back (``OUTCOMES_FILES`` and
#: more), and a conftest that notes how each report a worker sent reached the controller.
WIRE_PROJECT = {
    "conftest.py": """
        import os

        import pytest

        from pytest_cachevault.wire import POSITION, STORED


        @pytest.hookimpl(wrapper=True)
        def pytest_report_from_serializable(config, data):
            report = yield
            if "worker_id" in data:  # sent by an xdist worker
                form = "record" if STORED in data else "position" if POSITION in data else "fields"
                with open(os.environ["WIRE_LOG"], "a", encoding="utf-8") as log:
                    log.write(f"{report.nodeid} {report.when} {form}\\n")
            return report
    """,
    **OUTCOMES_FILES,
    "test_more.py": """
        import logging

        import pytest


        def test_logs(record_property):
            logging.getLogger("more").warning("logged")
            record_property("answer", 42)


        @pytest.mark.parametrize("n", range(6))
        def test_many(n):
            print(f"n is {n}")
    """,
}
SUBTESTS = """
    def test_parts(subtests):
        for i in range(3):
            with subtests.test(msg="part", i=i):
                print(f"part {i}")
"""


_XDIST_VERBOSE_RE = re.compile(r"^\[gw\d+\] \[\s*\d+%\] (.+?) (\S+::\S+)\s*$", re.MULTILINE)


def _xdist_statuses(result) -> dict[str, str]:
    """``{nodeid: "PASSED (cached)"...}`` from the ``-v`` lines of an xdist run."""
    return {nodeid: status for status, nodeid in _XDIST_VERBOSE_RE.findall(result.stdout.str())}


def _junit_testcases(path: Path) -> dict[str, str]:
    """Each testcase of a junit XML file as text, keyed by name, without its times."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        case.attrib.pop("time", None)
        cases[f"{case.get('classname')}::{case.get('name')}"] = ET.tostring(case, encoding="unicode")
    return cases


def _summary_sections(result) -> str:
    """What ``-rA`` prints after the run, sorted: sections of captured output and the
    short summary, without xdist's lines naming the worker, the junit file's name and
    the run's time."""
    text = result.stdout.str()
    lines = text[text.index("= PASSES ="):].strip().splitlines()[:-1]  # not the timed last line
    return "\n".join(sorted(line for line in lines if not line.startswith(("[gw", "- generated xml file"))))


def test_a_replayed_test_crosses_to_the_controller_as_its_record(pytester, run_vault, tmp_path, monkeypatch):
    """Under ``-n 2`` a worker sends the record of a replayed test with its first report
    and only a position with each of the others, and the controller shows what a serial
    replay shows: the same ``-rA`` sections, junit XML testcases and ``(cached)`` lines."""
    files = dict(WIRE_PROJECT)
    if hasattr(pytest, "Subtests"):  # pytest 9: a subtest's reports cross too
        files["test_parts.py"] = SUBTESTS
    write_files(pytester.path, files)
    wire_log = tmp_path / "wire.log"
    monkeypatch.setenv("WIRE_LOG", str(wire_log))
    args = ("-rA", "-v", "-o", "junit_logging=all")

    first = run_vault("-n", "2", *args, f"--junitxml={tmp_path / 'first.xml'}")
    no_traceback(first)
    live_statuses = _xdist_statuses(first)
    tests = len(live_statuses)
    assert tests >= 13 and vault_counts(first) == (0, tests)
    live = wire_log.read_text(encoding="utf-8").splitlines()
    assert live and {line.split()[-1] for line in live} == {"fields"}
    wire_log.unlink()

    serial = run_vault(*args, f"--junitxml={tmp_path / 'serial.xml'}")
    replayed_n2 = run_vault("-n", "2", *args, f"--junitxml={tmp_path / 'xdist.xml'}")
    no_traceback(replayed_n2)
    assert vault_counts(serial) == vault_counts(replayed_n2) == (tests, 0)
    assert replayed_n2.parseoutcomes() == serial.parseoutcomes() == first.parseoutcomes()
    assert _xdist_statuses(replayed_n2) == {nodeid: f"{status} (cached)" for nodeid, status in live_statuses.items()}
    assert replayed(serial) == set(live_statuses)
    assert _summary_sections(replayed_n2) == _summary_sections(serial)
    assert "hello from stderr" in _summary_sections(serial)
    testcases = _junit_testcases(tmp_path / "serial.xml")
    assert len(testcases) == tests and "hello from stdout" in "".join(testcases.values())
    assert _junit_testcases(tmp_path / "xdist.xml") == testcases

    # The same reports as in the live run: each test's first with its record, the others as positions.
    crossed = wire_log.read_text(encoding="utf-8").splitlines()
    assert sorted(line.rsplit(" ", 1)[0] for line in crossed) == sorted(line.rsplit(" ", 1)[0] for line in live)
    forms = collections.defaultdict(list)
    for line in crossed:
        nodeid, when, form = line.split()
        forms[nodeid].append((when, form))
    assert set(forms) == set(live_statuses)
    for reports in forms.values():
        assert reports[0] == ("setup", "record") and {form for _, form in reports[1:]} == {"position"}
