"""Inputs the tracer cannot see: directory listings, environment variables read,
processes started, hosts connected to (files read: see test_invalidation)."""

from __future__ import annotations

from conftest import edit, vault_counts, vault_reasons, write_files


def test_new_file_in_a_listed_directory(pytester, run_vault):
    """``os.listdir``/``glob`` of an in-tree directory: a new entry re-runs the test."""
    write_files(
        pytester.path,
        {
            "cases/one.txt": "1",
            "cases/two.txt": "2",
            "test_cases.py": """
                import glob
                import os


                def test_every_case_is_small():
                    for name in sorted(os.listdir("cases")):
                        with open(os.path.join("cases", name)) as f:
                            assert int(f.read()) < 10


                def test_two_cases():
                    assert len(glob.glob("cases/*.txt")) == 2
            """,
        },
    )
    run_vault.record_and_replay(passed=2)
    (pytester.path / "cases" / "three.txt").write_text("30")
    result = run_vault()
    result.assert_outcomes(failed=2)
    assert vault_reasons(result) == {"changed": 2}


ENV_TESTS = {
    "test_env.py": """
        import os


        def test_mode_is_dev():
            assert os.environ.get("APP_MODE", "dev") == "dev"


        def test_feature_flag_unset():
            assert "FEATURE_X" not in os.environ


        def test_getenv():
            assert os.getenv("LEVEL", "1") == "1"


        def test_unrelated():
            assert True
    """,
}


def test_variable_read_with_another_value(pytester, run_vault):
    write_files(pytester.path, ENV_TESTS)
    run_vault.record_and_replay(passed=4, env={"APP_MODE": "dev"})
    result = run_vault(env={"APP_MODE": "prod"})
    result.assert_outcomes(failed=1, passed=3)
    assert vault_counts(result) == (3, 1)


def test_variable_unset_then_set(pytester, run_vault):
    """Absence is recorded too: setting a variable that was unset is a change."""
    write_files(pytester.path, ENV_TESTS)
    unset = {"APP_MODE": None, "FEATURE_X": None, "LEVEL": None}
    run_vault.record_and_replay(passed=4, env=unset)
    result = run_vault(env={**unset, "FEATURE_X": "on", "LEVEL": "2"})
    result.assert_outcomes(failed=2, passed=2)
    assert vault_counts(result) == (2, 2)


def test_variable_read_at_import_by_project_code(pytester, run_vault):
    """``MODE = os.getenv(...)`` at module level: every test that imports it depends on it."""
    write_files(
        pytester.path,
        {
            "settings.py": """
                import os

                MODE = os.getenv("APP_MODE", "dev")
            """,
            "test_settings.py": """
                import settings


                def test_mode():
                    assert settings.MODE == "dev"
            """,
        },
    )
    run_vault.record_and_replay(passed=1, env={"APP_MODE": None})
    run_vault(env={"APP_MODE": "prod"}).assert_outcomes(failed=1)


def test_variable_the_test_sets_itself_is_no_input(pytester, run_vault):
    """``monkeypatch.setenv`` then reading it back: the outside value does not matter."""
    write_files(
        pytester.path,
        {
            "test_own.py": """
                import os


                def test_sets_then_reads(monkeypatch):
                    monkeypatch.setenv("OWN_VAR", "mine")
                    assert os.environ["OWN_VAR"] == "mine"
            """,
        },
    )
    run_vault.record_and_replay(passed=1, env={"OWN_VAR": "a"})
    assert vault_counts(run_vault(env={"OWN_VAR": "b"})) == (1, 0)


SUBPROCESS_TESTS = {
    "cli.py": """
        import sys

        from shout import shout

        print(shout(" ".join(sys.argv[1:])))
    """,
    "shout.py": """
        def shout(text):
            return text.upper()
    """,
    "other.py": """
        def whisper(text):
            return text.lower()
    """,
    "test_cli.py": """
        import subprocess
        import sys


        def test_cli_shouts():
            done = subprocess.run([sys.executable, "cli.py", "hi"], capture_output=True, text=True)
            assert done.stdout == "HI\\n"


        def test_plain():
            assert True
    """,
    "pytest.ini": "[pytest]\nvault_allow = subprocess\n",
}


def test_subprocess_test_stored_when_allowed(pytester, run_vault):
    """``vault_allow = subprocess``: stored, and re-run exactly when a file the Python
    child ran changes: its script and what it imported, not other in-tree code."""
    write_files(pytester.path, SUBPROCESS_TESTS)
    run_vault.record_and_replay(passed=2)
    edit(pytester.path / "other.py", ".lower()", ".casefold()")
    assert vault_counts(run_vault()) == (2, 0)
    # The child's imports listed the directories on its path: what a new file there
    # might change is not known, so it is an input.
    (pytester.path / "shout2.py").write_text("")
    assert vault_counts(run_vault()) == (1, 1)
    edit(pytester.path / "shout.py", ".upper()", ".title()")
    result = run_vault("--vault-explain")
    result.assert_outcomes(failed=1, passed=1)
    assert vault_counts(result) == (1, 1)
    result.stdout.fnmatch_lines(["*test_cli.py::test_cli_shouts: changed: shout.py"])
    edit(pytester.path / "shout.py", ".title()", ".upper()")
    assert vault_counts(run_vault()) == (2, 0)  # the first record is still stored
    edit(pytester.path / "cli.py", "shout(", "str(")
    result = run_vault()
    result.assert_outcomes(failed=1, passed=1)


def test_a_file_a_python_child_reads_is_an_input(pytester, run_vault):
    write_files(pytester.path, {
        **SUBPROCESS_TESTS,
        "greeting.txt": "hi",
        "test_cli.py": """
            import subprocess
            import sys


            def test_cli_reads_its_greeting():
                code = "from shout import shout; print(shout(open('greeting.txt').read()))"
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                assert done.stdout == "HI\\n"
        """,
    })
    run_vault.record_and_replay(passed=1)
    (pytester.path / "greeting.txt").write_text("hello")
    result = run_vault()
    result.assert_outcomes(failed=1)


UNTRACED_CHILDREN = {
    "test_shell.py": """
        import os
        import subprocess
        import sys


        def test_through_a_shell():
            command = f"{sys.executable} cli.py hi"
            assert subprocess.run(command, shell=True, capture_output=True).returncode == 0


        def test_environment_replaced():
            done = subprocess.run([sys.executable, "cli.py", "hi"], env={"PATH": os.environ["PATH"]})
            assert done.returncode == 0


        def test_child_left_running():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            child.terminate()


        def test_child_starts_another():
            code = "import subprocess, sys; subprocess.run([sys.executable, 'cli.py', 'hi'])"
            assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    """,
}


def test_processes_the_vault_cannot_follow_depend_on_every_source(pytester, run_vault):
    """A shell, a child without the variable, one still running at the end, one that
    starts another: what ran is unknown, so any in-tree source change re-runs them."""
    write_files(pytester.path, {**SUBPROCESS_TESTS, **UNTRACED_CHILDREN})
    run_vault.record_and_replay(passed=6)
    edit(pytester.path / "other.py", ".lower()", ".casefold()")
    result = run_vault("--vault-explain")
    assert vault_counts(result) == (2, 4)
    result.stdout.fnmatch_lines(["*test_shell.py::test_through_a_shell: changed: other.py"])


def test_bad_vault_allow_value_is_a_usage_error(pytester, run_vault):
    write_files(pytester.path, {"test_x.py": "def test_x():\n    pass\n", "pytest.ini": "[pytest]\nvault_allow = subprocesses\n"})
    result = run_vault()
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*vault_allow: unknown value 'subprocesses'; allowed: subprocess, network*"])


NETWORK_TESTS = {
    "test_net.py": """
        import socket
        import threading


        def test_loopback_server():
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            threading.Thread(target=lambda: server.accept()[0].sendall(b"hi"), daemon=True).start()
            client = socket.create_connection(server.getsockname())
            assert client.recv(2) == b"hi"
            client.close()
            server.close()


        def test_remote_host():
            sock = socket.socket()
            sock.settimeout(0.01)
            try:
                sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never answers
            except OSError:
                pass
            finally:
                sock.close()
    """,
}


def test_loopback_stays_cacheable_and_remote_hosts_do_not(pytester, run_vault):
    write_files(pytester.path, NETWORK_TESTS)
    run_vault().assert_outcomes(passed=2)
    second = run_vault("--vault-explain")
    second.assert_outcomes(passed=2)
    assert vault_counts(second) == (1, 1)
    second.stdout.fnmatch_lines(["test_net.py::test_remote_host: uncacheable: connected to 192.0.2.1:80"])


def test_network_allowed(pytester, run_vault):
    write_files(pytester.path, {**NETWORK_TESTS, "pytest.ini": "[pytest]\nvault_allow = network\n"})
    run_vault.record_and_replay(passed=2)


def test_variable_read_by_a_module_fixture_counts_for_every_user(pytester, run_vault):
    """Only the first test's window sees a module fixture's setup; the others use it too."""
    write_files(
        pytester.path,
        {
            "test_fixture_env.py": """
                import os

                import pytest


                @pytest.fixture(scope="module")
                def mode():
                    return os.environ.get("APP_MODE", "dev")


                def test_first(mode):
                    assert mode in ("dev", "prod")


                def test_second(mode):
                    assert mode == "dev"
            """,
        },
    )
    run_vault.record_and_replay(passed=2, env={"APP_MODE": None})
    result = run_vault(env={"APP_MODE": "prod"})
    result.assert_outcomes(passed=1, failed=1)
    assert vault_counts(result) == (0, 2)
