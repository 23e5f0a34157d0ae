"""Replay: an unchanged test is not run again, and its stored outcome reads like a live one."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import (
    BASIC_IDS,
    OUTCOMES,
    OUTCOMES_TOTAL,
    RANLOG_MODULE,
    RUN_TIMEOUT,
    executed,
    replayed,
    skip_lines,
    store_files,
    store_snapshot,
    subprocess_env,
    vault_counts,
    vault_reasons,
    write_files,
)


def test_unchanged_rerun_replays_every_test(basic_project, run_vault, ran_log):
    """The second run executes nothing, shows ``(cached)`` and reports the same counts."""
    first = run_vault("-v")
    first.assert_outcomes(passed=3)
    assert vault_counts(first) == (0, 3)
    assert vault_reasons(first) == {"new": 3}
    assert executed(first) == BASIC_IDS
    assert set(ran_log.take()) == BASIC_IDS

    second = run_vault("-v")
    second.assert_outcomes(passed=3)
    assert vault_counts(second) == (3, 0)
    assert replayed(second) == BASIC_IDS
    second.stdout.fnmatch_lines(
        [
            "test_basic.py::test_add PASSED (cached)*",
            "test_basic.py::test_upper PASSED (cached)*",
            "test_basic.py::test_sorted PASSED (cached)*",
            "*= 3 passed in *",
        ]
    )
    assert ran_log.take() == []


def test_failing_test_runs_every_time(pytester, run_vault, ran_log):
    """A failure is never stored: the test fails again, for real, on every run."""
    write_files(
        pytester.path,
        {
            "ranlog.py": RANLOG_MODULE,
            "test_mixed.py": """
                from ranlog import ran


                def test_good():
                    ran()
                    assert 2 * 2 == 4


                def test_broken():
                    ran()
                    assert 2 * 2 == 5
            """,
        },
    )
    first = run_vault("-v")
    first.assert_outcomes(passed=1, failed=1)
    assert ran_log.take() == ["test_mixed.py::test_good", "test_mixed.py::test_broken"]

    for _ in range(2):
        again = run_vault("-v")
        again.assert_outcomes(passed=1, failed=1)
        assert vault_counts(again) == (1, 1)
        assert vault_reasons(again) == {"failed last time": 1}
        assert replayed(again) == {"test_mixed.py::test_good"}
        assert executed(again) == {"test_mixed.py::test_broken"}
        again.stdout.fnmatch_lines(["FAILED test_mixed.py::test_broken - assert*"])
        assert ran_log.take() == ["test_mixed.py::test_broken"]


def test_skip_reasons_are_replayed(outcomes_project, run_vault):
    """``-rs`` lists the same skips, with the same locations and reasons."""
    first = run_vault("-rs")
    first.assert_outcomes(**OUTCOMES)

    second = run_vault("-rs", "-v")
    second.assert_outcomes(**OUTCOMES)
    assert vault_counts(second) == (OUTCOMES_TOTAL, 0)
    second.stdout.fnmatch_lines(["test_outcomes.py::test_skips_at_runtime SKIPPED (cached)*"])
    assert skip_lines(second) == skip_lines(first)
    assert any("needs a GPU" in line for line in skip_lines(second))
    assert any("not on this platform" in line for line in skip_lines(second))


def test_xfail_and_xpass_are_replayed(outcomes_project, run_vault):
    """Expected failures and unexpected passes come back as XFAIL/XPASS with their reasons."""
    first = run_vault("-rxX")
    first.assert_outcomes(**OUTCOMES)

    second = run_vault("-rxX", "-v")
    second.assert_outcomes(**OUTCOMES)
    second.stdout.fnmatch_lines(
        [
            "test_outcomes.py::test_known_bug XFAIL (cached)*",
            "test_outcomes.py::test_maybe_fixed XPASS (cached)*",
        ]
    )
    second.stdout.fnmatch_lines(
        [
            "XFAIL* test_outcomes.py::test_known_bug - bug 12",
            "XPASS* test_outcomes.py::test_maybe_fixed - bug 7, maybe fixed",
        ]
    )


def test_captured_output_is_replayed(outcomes_project, run_vault):
    """``-rA`` shows what a replayed test printed, stdout and stderr."""
    run_vault().assert_outcomes(**OUTCOMES)

    second = run_vault("-rA", "-v")
    second.assert_outcomes(**OUTCOMES)
    assert "test_outcomes.py::test_prints" in replayed(second)
    second.stdout.fnmatch_lines(
        [
            "*_ test_prints _*",
            "*- Captured stdout call -*",
            "hello from stdout",
            "*- Captured stderr call -*",
            "hello from stderr",
        ]
    )


def _junit_cases(path) -> dict[str, list[tuple[str, str | None]]]:
    """``{"classname.name": [(child tag, message)]}`` for every testcase of a report."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        children = [
            (child.tag, child.get("message"))
            for child in case
            if child.tag in {"skipped", "failure", "error"}
        ]
        cases[f"{case.get('classname')}.{case.get('name')}"] = children
    return cases


def test_junitxml_lists_replayed_tests(outcomes_project, run_vault, pytester):
    """A replayed run writes the same testcases (and skip/xfail messages) to ``--junitxml``."""
    run_vault(f"--junitxml={pytester.path / 'first.xml'}").assert_outcomes(**OUTCOMES)
    second = run_vault(f"--junitxml={pytester.path / 'second.xml'}")
    second.assert_outcomes(**OUTCOMES)
    assert vault_counts(second) == (OUTCOMES_TOTAL, 0)

    first_cases = _junit_cases(pytester.path / "first.xml")
    assert len(first_cases) == OUTCOMES_TOTAL
    assert _junit_cases(pytester.path / "second.xml") == first_cases
    suite = ET.parse(pytester.path / "second.xml").getroot().find("testsuite")
    assert suite.get("tests") == str(OUTCOMES_TOTAL)
    assert suite.get("failures") == "0"


def test_runs_without_the_vault_leave_the_store_alone(
    basic_project, run_vault, run_pytest, ran_log, xdg_cache_home
):
    """Without ``--vault``, or with ``-p no:cachevault``, all tests run and no store is touched."""
    run_vault().assert_outcomes(passed=3)
    ran_log.take()
    before = store_snapshot(run_vault.store)
    assert before

    env = {"PYTEST_VAULT_DIR": str(run_vault.store)}
    for args in ([], ["-p", "no:cachevault"]):
        result = run_pytest(*args, env=env)
        result.assert_outcomes(passed=3)
        assert "vault:" not in result.stdout.str()
        assert set(ran_log.take()) == BASIC_IDS, args

    assert store_snapshot(run_vault.store) == before
    assert store_files(xdg_cache_home) == []


def test_ini_switch_in_pyproject(basic_project, pytester, run_pytest, vault_store, ran_log):
    """``vault = true`` in ``[tool.pytest.ini_options]`` turns the vault on without ``--vault``."""
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        vault = true
        """
    )
    first = run_pytest(f"--vault-dir={vault_store}")
    first.assert_outcomes(passed=3)
    assert vault_counts(first) == (0, 3)
    ran_log.take()

    second = run_pytest(f"--vault-dir={vault_store}")
    second.assert_outcomes(passed=3)
    assert vault_counts(second) == (3, 0)
    assert ran_log.take() == []


def test_store_location_from_environment(basic_project, run_pytest, vault_store, xdg_cache_home):
    """``PYTEST_VAULT_DIR`` chooses the store when ``--vault-dir`` is not given."""
    env = {"PYTEST_VAULT_DIR": str(vault_store)}
    first = run_pytest("--vault", env=env)
    first.assert_outcomes(passed=3)
    assert (vault_store / "CACHEDIR.TAG").is_file()
    assert store_files(xdg_cache_home) == []

    second = run_pytest("--vault", env=env)
    second.assert_outcomes(passed=3)
    assert vault_counts(second) == (3, 0)


def test_replay_under_xdist(basic_project, run_vault, ran_log):
    """With ``-n 2`` the records are written and replayed by the workers, and counted once."""
    pytest.importorskip("xdist")
    first = run_vault("-n", "2")
    first.assert_outcomes(passed=3)
    assert vault_counts(first) == (0, 3)
    assert set(ran_log.take()) == BASIC_IDS

    second = run_vault("-n", "2")
    second.assert_outcomes(passed=3)
    assert vault_counts(second) == (3, 0)
    assert ran_log.take() == []


def test_warnings_are_replayed(pytester, run_vault):
    """A replayed test's warning still shows in the warnings summary and the counts."""
    pytester.makepyfile(
        test_old_api="""
            import warnings


            def test_old_api():
                warnings.warn("old_api() is deprecated", DeprecationWarning)
        """
    )
    first = run_vault()
    first.assert_outcomes(passed=1, warnings=1)

    second = run_vault()
    assert vault_counts(second) == (1, 0)
    second.assert_outcomes(passed=1, warnings=1)
    second.stdout.fnmatch_lines(
        ["*= warnings summary =*", "*DeprecationWarning: old_api() is deprecated"]
    )


def test_another_plugins_protocol_wrapper_sees_replayed_tests(pytester, run_vault):
    """Replayed tests skip pytest's own protocol wrappers, never another plugin's."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                import pytest


                @pytest.hookimpl(wrapper=True)
                def pytest_runtest_protocol(item):
                    print("\\nwrapped", item.name)
                    return (yield)
            """,
            "test_two.py": """
                def test_one():
                    pass


                def test_two():
                    pass
            """,
        },
    )
    run_vault("-s").assert_outcomes(passed=2)
    second = run_vault("-s")
    second.assert_outcomes(passed=2)
    assert vault_counts(second) == (2, 0)
    second.stdout.fnmatch_lines(["wrapped test_one", "wrapped test_two"])


def test_another_plugins_report_decoding_sees_replayed_reports(pytester, run_vault):
    """Stored reports are rebuilt directly only while pytest's is the one
    ``pytest_report_from_serializable``; another implementation is asked for each."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                seen = []


                def pytest_report_from_serializable(data):
                    seen.append(data.get("when"))


                def pytest_terminal_summary(terminalreporter):
                    terminalreporter.write_line(f"decoded by conftest: {seen}")
            """,
            "test_one.py": """
                def test_one():
                    pass
            """,
        },
    )
    run_vault().stdout.fnmatch_lines(["decoded by conftest: []"])
    second = run_vault()
    assert vault_counts(second) == (1, 0)
    second.stdout.fnmatch_lines(["decoded by conftest: ['setup', 'call', 'teardown']"])


def test_the_exit_of_a_replaying_run_skips_collecting_its_objects(pytester, run_vault):
    """A run that replayed has the interpreter's exit leave its objects untraversed
    (frozen); a run that replayed nothing leaves the exit as it is."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                import atexit
                import gc

                # Python 3.12 starts with some objects frozen already
                frozen_at_start = gc.get_freeze_count()
                # registered before the vault's handler, so it runs after it
                atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > frozen_at_start))
            """,
            "test_one.py": """
                def test_one():
                    pass
            """,
        },
    )
    first = run_vault()
    assert vault_counts(first) == (0, 1)
    first.stdout.fnmatch_lines(["frozen at exit: False"])
    second = run_vault()
    assert vault_counts(second) == (1, 0)
    second.stdout.fnmatch_lines(["frozen at exit: True"])


FREEZE_WATCH = """
    import gc

    import pytest

    frozen_at_start = gc.get_freeze_count()  # Python 3.12 starts with some frozen


    class Cycle:
        def __init__(self):
            self.me = self

        def __del__(self):
            raise RuntimeError("raised by a cycle the session left")


    @pytest.fixture(scope="session")
    def leaves_a_cycle():
        yield
        Cycle()  # garbage only pytest's last collections find


    def pytest_configure(config):
        config.add_cleanup(
            lambda: print("frozen before pytest's cleanup:", gc.get_freeze_count() > frozen_at_start)
        )
"""


def test_what_survives_pytests_last_collection_is_frozen(pytester, run_vault):
    """pytest ends a session with two full collections. In a run that replayed, what
    survives the first is frozen, so the second passes over it; the first still finds
    the garbage the session left (here an exception its ``__del__`` raises is
    reported as pytest reports it)."""
    write_files(
        pytester.path,
        {
            "conftest.py": FREEZE_WATCH,
            "test_a.py": """
                def test_replayed():
                    pass
            """,
            "test_b.py": """
                import pytest


                @pytest.mark.vault_bypass
                def test_live(leaves_a_cycle):
                    pass
            """,
        },
    )
    first = run_vault("-s")
    first.stdout.fnmatch_lines(["frozen before pytest's cleanup: False"])
    second = run_vault("-s")
    assert vault_counts(second) == (1, 1)
    second.stdout.fnmatch_lines(["frozen before pytest's cleanup: True"])
    for run in (first, second):
        assert "RuntimeError: raised by a cycle the session left" in run.stdout.str() + run.stderr.str()


def test_a_session_the_process_outlives_freezes_nothing(pytester, run_pytest, vault_store):
    """A session started by other code (``pytest.main()``), or inside another session,
    leaves the collector as it was: the process goes on, and frozen objects would never
    be freed."""
    write_files(
        pytester.path,
        {
            "inner/test_inner.py": """
                def test_inner():
                    pass
            """,
            "test_outer.py": f"""
                import gc

                import pytest


                def test_sessions_inside_this_one():
                    frozen_at_start = gc.get_freeze_count()
                    for _ in range(2):  # the second replays
                        assert pytest.main(["-q", "-p", "no:cacheprovider", "--vault",
                                            "--vault-dir={vault_store}", "inner"]) == 0
                    assert gc.get_freeze_count() == frozen_at_start
            """,
            "main.py": f"""
                import gc

                import pytest

                frozen_at_start = gc.get_freeze_count()
                for _ in range(2):
                    assert pytest.main(["-q", "-p", "no:cacheprovider", "--vault",
                                        "--vault-dir={vault_store}", "inner"]) == 0
                print("frozen after pytest.main():", gc.get_freeze_count() > frozen_at_start)
            """,
        },
    )
    run_pytest("test_outer.py").assert_outcomes(passed=1)
    script = subprocess.run([sys.executable, "main.py"], cwd=pytester.path, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT, env=subprocess_env())
    assert "vault: 1 replayed" in script.stdout  # the vault was on, and replayed
    assert "frozen after pytest.main(): False" in script.stdout, script.stdout + script.stderr


PROTOCOL_WRAPPER = """
    import pytest


    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(item):
        return (yield)
"""


@pytest.mark.parametrize("wrapper", ["", PROTOCOL_WRAPPER], ids=["direct", "through the protocol"])
def test_the_collector_is_paused_while_tests_replay_and_only_then(pytester, run_vault, wrapper):
    """Python's garbage collector is off while tests are replayed (their reports stay
    alive, and each full collection would go through them all again), and on whenever
    test code runs: a live test between replayed ones, and pytest's last collections."""
    write_files(
        pytester.path,
        {
            "wrapper.py": wrapper,
            "conftest.py": """
                import gc

                pytest_plugins = ["wrapper"]


                def pytest_runtest_logreport(report):
                    if report.when == "call":
                        print(f"collector during {report.nodeid}: {gc.isenabled()}")


                def pytest_unconfigure():
                    print(f"collector at the end: {gc.isenabled()}")
            """,
            "test_a.py": """
                def test_first():
                    pass
            """,
            "test_b.py": """
                import gc

                import pytest


                @pytest.mark.vault_bypass
                def test_live():
                    assert gc.isenabled()
            """,
            "test_c.py": """
                def test_last():
                    pass
            """,
        },
    )
    run_vault("-s").assert_outcomes(passed=3)
    second = run_vault("-s")
    second.assert_outcomes(passed=3)
    assert vault_counts(second) == (2, 1)
    second.stdout.fnmatch_lines(
        [
            "*collector during test_a.py::test_first: False",
            "*collector during test_b.py::test_live: True",
            "*collector during test_c.py::test_last: False",
            "collector at the end: True",
        ]
    )


def test_a_collector_the_project_switched_off_stays_off(pytester, run_vault):
    """The vault neither pauses nor resumes a collector the project switched off: the
    live test after a replayed one, and after a module's stand-in was built, still
    finds it off (its failure is the expected outcome), and so does the end of the
    session."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                import gc

                gc.disable()


                def pytest_unconfigure():
                    print(f"collector at the end: {gc.isenabled()}")
            """,
            "test_a.py": """
                import gc


                def test_replayed():
                    pass


                def test_failing_runs_again():
                    assert gc.isenabled()
            """,
            "test_b.py": """
                def test_stood_in():
                    pass
            """,
        },
    )
    run_vault("-s").assert_outcomes(passed=2, failed=1)
    second = run_vault("-s")
    second.assert_outcomes(passed=2, failed=1)
    assert vault_counts(second) == (2, 1)
    second.stdout.fnmatch_lines(["collector at the end: False"])


def test_exitfirst_stops_among_replayed_tests(pytester, run_vault):
    """``-x`` stops at a live failure; the replayed tests after it are not reported."""
    pytester.makepyfile(
        test_order="""
            def test_before():
                pass


            def test_broken():
                assert False


            def test_after():
                pass
        """
    )
    run_vault().assert_outcomes(passed=2, failed=1)
    second = run_vault("-x", "-v")
    second.assert_outcomes(passed=1, failed=1)
    assert replayed(second) == {"test_order.py::test_before"}
    assert "test_after" not in second.stdout.str()
    second.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_a_file_a_live_test_changes_is_checked_again(pytester, run_vault):
    """A lookup's check of a test's inputs holds only until the next live test: it may
    have edited them. Here a failing test (always live) edits the data file a helper
    reads, between two tests with the same inputs; the second runs again. (A source's
    digest holds until its module is imported again: the code that runs is still the
    one imported; see test_invalidation.)"""
    write_files(
        pytester.path,
        {
            "value.txt": "1",
            "helper.py": """
                from pathlib import Path


                def value():
                    return int((Path(__file__).parent / "value.txt").read_text())
            """,
            "test_edit.py": """
                import os
                from pathlib import Path

                import helper


                def test_uses_the_helper_before():
                    assert helper.value() in (1, 2)


                def test_edits_the_helper():
                    if os.environ.get("EDIT_HELPER"):
                        (Path(__file__).parent / "value.txt").write_text("2")
                    assert False


                def test_uses_the_helper_after():
                    assert helper.value() in (1, 2)
            """,
        },
    )
    run_vault().assert_outcomes(passed=2, failed=1)
    assert vault_counts(run_vault()) == (2, 1)
    third = run_vault("-v", "--vault-explain", env={"EDIT_HELPER": "1"})
    third.assert_outcomes(passed=2, failed=1)
    assert replayed(third) == {"test_edit.py::test_uses_the_helper_before"}
    third.stdout.fnmatch_lines(["*test_edit.py::test_uses_the_helper_after*changed: value.txt*"])
