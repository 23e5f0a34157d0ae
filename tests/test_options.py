"""Options: bad values are usage errors, and the bypass switches run tests for real."""

from __future__ import annotations

import os

import pytest

from conftest import (
    BASIC_IDS,
    RANLOG_MODULE,
    executed,
    replayed,
    vault_counts,
    vault_reasons,
    write_files,
)

# id: (command-line arguments, ini lines, names of which the message must mention one)
BAD_VALUES = {
    "max-size": (["--vault-gc", "--vault-max-size=abc"], "", ["--vault-max-size"]),
    "max-age": (["--vault-gc", "--vault-max-age=soon"], "", ["--vault-max-age"]),
    "ini-max-size": (
        ["--vault-gc"], "vault_max_size = lots", ["vault_max_size", "--vault-max-size"]
    ),
    "ini-max-age": (["--vault-gc"], "vault_max_age = later", ["vault_max_age", "--vault-max-age"]),
    # A test run goes on without an unusable store (tests/test_bad_places.py); the
    # garbage collector has nothing to do without one.
    "dir-is-a-file": (["--vault-gc", "--vault-dir={file}"], "", ["--vault-dir"]),
    "dir-under-a-file": (["--vault-gc", "--vault-dir={file}/store"], "", ["--vault-dir"]),
    "env-dir-is-a-file": (["--vault-gc"], "", ["PYTEST_VAULT_DIR", "--vault-dir"]),
    "read-only-dir": (["--vault-gc", "--vault-dir={readonly}/store"], "", ["--vault-dir"]),
    "gc-read-only": (["--vault-gc", "--vault-readonly"], "", ["--vault-readonly"]),
    "gc-ini-read-only": (["--vault-gc"], "vault_readonly = true", ["vault_readonly"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_value_is_a_usage_error(case, basic_project, pytester, run_pytest, ran_log, tmp_path):
    """Exit code 4, one sentence naming the option, no traceback, no test run."""
    args, ini, names = BAD_VALUES[case]
    regular_file = tmp_path / "not-a-dir"
    regular_file.write_text("precious\n")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    if case == "read-only-dir" and os.access(readonly, os.W_OK):
        pytest.skip("running as root: a read-only directory is still writable")
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    env = {"PYTEST_VAULT_DIR": str(regular_file)} if case.startswith("env-") else None

    result = run_pytest(*(a.format(file=regular_file, readonly=readonly) for a in args), env=env)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    stderr = result.stderr.str()
    assert "ERROR:" in stderr
    assert any(name in stderr for name in names), stderr
    assert "Traceback" not in stderr + result.stdout.str()
    assert ran_log.take() == []
    assert regular_file.read_text() == "precious\n"


BYPASS_TESTS = {
    "ranlog.py": RANLOG_MODULE,
    "test_bypass.py": """
        import pytest

        from ranlog import ran


        def test_plain():
            ran()


        @pytest.mark.vault_bypass
        def test_talks_to_the_network():
            ran()
    """,
}


def test_bypass_marker_is_never_replayed(pytester, run_vault, ran_log):
    """The marked test runs every time; its neighbour is replayed."""
    write_files(pytester.path, BYPASS_TESTS)
    first = run_vault("-v", "--strict-markers")
    first.assert_outcomes(passed=2)
    assert len(ran_log.take()) == 2

    for _ in range(2):
        again = run_vault("-v", "--strict-markers")
        again.assert_outcomes(passed=2)
        assert vault_counts(again) == (1, 1)
        assert vault_reasons(again) == {"bypass": 1}
        assert replayed(again) == {"test_bypass.py::test_plain"}
        assert executed(again) == {"test_bypass.py::test_talks_to_the_network"}
        assert ran_log.take() == ["test_bypass.py::test_talks_to_the_network"]


def test_bypass_option_runs_everything_and_refreshes_records(
    basic_project, pytester, run_vault, ran_log
):
    """``--vault-bypass`` runs all tests; the next normal run replays what it recorded."""
    pytester.makepyfile(
        test_greeting="""
            import os


            def test_greeting():
                print("greeting:", os.environ["GREETING"])
        """
    )
    run_vault(env={"GREETING": "hello"}).assert_outcomes(passed=4)
    ran_log.take()

    bypass = run_vault("--vault-bypass", env={"GREETING": "bonjour"})
    bypass.assert_outcomes(passed=4)
    assert vault_counts(bypass) == (0, 4)
    assert vault_reasons(bypass) == {"bypass": 4}
    assert set(ran_log.take()) == BASIC_IDS

    # The test read GREETING: the record --vault-bypass made under "bonjour" replays
    # (the first run's record, under "hello", would print "hello").
    after = run_vault("-rA", env={"GREETING": "bonjour"})
    after.assert_outcomes(passed=4)
    assert vault_counts(after) == (4, 0)
    after.stdout.fnmatch_lines(["greeting: bonjour"])
    assert ran_log.take() == []


def test_bypass_marker_is_registered(pytester, run_pytest, ran_log):
    """``--strict-markers`` accepts ``vault_bypass`` with the vault off; ``--markers`` lists it."""
    write_files(pytester.path, BYPASS_TESTS)
    run_pytest("--strict-markers").assert_outcomes(passed=2)
    markers = run_pytest("--markers")
    assert markers.ret == 0
    markers.stdout.fnmatch_lines(["@pytest.mark.vault_bypass*"])


def test_a_run_without_the_vault_loads_none_of_it(pytester, run_pytest):
    """Installed but off, the plugin adds its options and marker and nothing else: no
    tracer, no store. Nor ``filelock`` (only ``--vault-gc`` locks), whose import
    installs an audit hook that every later audited call (``id()``, ``open``...) goes
    through, with the vault on too."""
    write_files(
        pytester.path,
        {
            "test_loaded.py": """
                import sys


                def test_loaded():
                    loaded = sorted(m for m in sys.modules if m.startswith(("pytest_cachevault", "filelock")))
                    print("loaded:", loaded)
            """,
        },
    )
    off = run_pytest("-s")
    off.assert_outcomes(passed=1)
    assert "loaded: ['pytest_cachevault', 'pytest_cachevault.config', 'pytest_cachevault.plugin']\n" in off.stdout.str()
    on = run_pytest("-s", "--vault", f"--vault-dir={pytester.path / 'store'}")
    on.assert_outcomes(passed=1)
    assert "'pytest_cachevault.runner'" in on.stdout.str()
    assert "'filelock'" not in on.stdout.str()
