"""The traps: every change that can turn a passing test red must make the vault run it.

Each test records a green run, checks that an unchanged rerun is replayed (so the
record exists), then makes an edit that breaks one test. The next run must report
that failure: a cached pass would be the plugin lying.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from conftest import edit, vault_counts, vault_reasons, verbose_statuses, write_files


def test_edit_to_an_executed_function(pytester, run_vault):
    """The function body the test ran changes."""
    write_files(
        pytester.path,
        {
            "calc.py": """
                def add(a, b):
                    return a + b
            """,
            "test_calc.py": """
                from calc import add


                def test_add():
                    assert add(2, 3) == 5


                def test_unrelated():
                    assert True
            """,
        },
    )
    run_vault.record_and_replay(passed=2)
    edit(pytester.path / "calc.py", "return a + b", "return a - b")
    run_vault().assert_outcomes(failed=1, passed=1)


# -- module-level code that only ran at import time -----------------------------------
def test_constant_read_through_its_module(pytester, run_vault):
    """(a) ``settings.LIMIT`` is read at call time; the assignment ran at import."""
    write_files(
        pytester.path,
        {
            "settings.py": "LIMIT = 10\n",
            "clamp.py": """
                import settings


                def clamp(value):
                    return min(value, settings.LIMIT)
            """,
            "test_clamp.py": """
                from clamp import clamp


                def test_clamp():
                    assert clamp(99) == 10
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "settings.py", "LIMIT = 10", "LIMIT = 5")
    run_vault().assert_outcomes(failed=1)


def test_constant_copied_by_from_import(pytester, run_vault):
    """(b) ``from settings import LIMIT`` copies the value into the test module."""
    write_files(
        pytester.path,
        {
            "settings.py": "LIMIT = 10\n",
            "test_limit.py": """
                from settings import LIMIT


                def test_limit():
                    assert LIMIT == 10
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "settings.py", "LIMIT = 10", "LIMIT = 5")
    run_vault().assert_outcomes(failed=1)


def test_class_attribute(pytester, run_vault):
    """(c) A class attribute, used by a method that itself is unchanged."""
    write_files(
        pytester.path,
        {
            "shapes.py": """
                class Square:
                    SIDES = 4

                    def __init__(self, size):
                        self.size = size

                    def perimeter(self):
                        return self.SIDES * self.size
            """,
            "test_shapes.py": """
                from shapes import Square


                def test_perimeter():
                    assert Square(2).perimeter() == 8
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "shapes.py", "SIDES = 4", "SIDES = 5")
    run_vault().assert_outcomes(failed=1)


def test_registry_filled_at_import_by_another_module(pytester, run_vault):
    """(d) Only the package ``__init__`` imports the module that fills the registry."""
    write_files(
        pytester.path,
        {
            "app/__init__.py": "from app import defaults  # noqa: F401\n",
            "app/registry.py": "REGISTRY = {}\n",
            "app/defaults.py": """
                from app.registry import REGISTRY

                REGISTRY["x"] = 42
            """,
            "test_registry.py": """
                from app.registry import REGISTRY


                def test_default_registered():
                    assert REGISTRY["x"] == 42
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "app/defaults.py", 'REGISTRY["x"] = 42', 'REGISTRY["x"] = 41')
    run_vault().assert_outcomes(failed=1)


def test_package_init_constant(pytester, run_vault):
    """(e) A constant in a package ``__init__``, copied by a submodule."""
    write_files(
        pytester.path,
        {
            "app/__init__.py": "DEFAULT_RETRIES = 3\n",
            "app/client.py": """
                from app import DEFAULT_RETRIES


                def retries(extra=0):
                    return DEFAULT_RETRIES + extra
            """,
            "test_client.py": """
                from app.client import retries


                def test_retries():
                    assert retries(1) == 4
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "app/__init__.py", "DEFAULT_RETRIES = 3", "DEFAULT_RETRIES = 2")
    run_vault().assert_outcomes(failed=1)


def test_function_run_at_import_to_compute_a_constant(pytester, run_vault):
    """(f) ``LIMIT = compute()``: ``compute`` lives in another module and runs only at import."""
    write_files(
        pytester.path,
        {
            "helpers.py": """
                def compute():
                    return 6 * 7
            """,
            "config.py": """
                from helpers import compute

                LIMIT = compute()
            """,
            "test_config.py": """
                from config import LIMIT


                def test_limit():
                    assert LIMIT == 42
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "helpers.py", "return 6 * 7", "return 6 * 8")
    run_vault().assert_outcomes(failed=1)


# -- fixtures and parametrization ------------------------------------------------------
def test_conftest_fixture_change(pytester, run_vault):
    """A fixture in ``conftest.py`` runs at setup, not in the test body."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                import pytest


                @pytest.fixture
                def user():
                    return {"name": "ada"}
            """,
            "test_user.py": """
                def test_user_name(user):
                    assert user["name"] == "ada"
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "conftest.py", '"ada"', '"bob"')
    run_vault().assert_outcomes(failed=1)


def test_parametrize_value_change_with_the_same_test_id(pytester, run_vault):
    """A parameter changes but the node id (``case1``) does not."""
    write_files(
        pytester.path,
        {
            "test_square.py": """
                import pytest


                @pytest.mark.parametrize("case", [{"x": 2, "sq": 4}, {"x": 3, "sq": 9}])
                def test_square(case):
                    assert case["x"] ** 2 == case["sq"]
            """,
        },
    )
    run_vault.record_and_replay(passed=2)
    edit(pytester.path / "test_square.py", '"sq": 9', '"sq": 10')
    result = run_vault("-v")
    result.assert_outcomes(failed=1, passed=1)
    assert verbose_statuses(result)["test_square.py::test_square[case1]"] == "FAILED"


def test_session_fixture_set_up_by_an_earlier_test(pytester, run_vault):
    """The second test only reuses the session fixture: it never saw ``connect()`` run."""
    write_files(
        pytester.path,
        {
            "db.py": """
                def connect():
                    return {"users": ["ada"]}
            """,
            "conftest.py": """
                import pytest

                import db


                @pytest.fixture(scope="session")
                def database():
                    return db.connect()
            """,
            "test_a_first.py": """
                def test_connects(database):
                    assert database is not None
            """,
            "test_b_second.py": """
                def test_users(database):
                    assert database["users"] == ["ada"]
            """,
        },
    )
    run_vault.record_and_replay(passed=2)
    edit(pytester.path / "db.py", '["ada"]', '["bob"]')
    result = run_vault("-v")
    result.assert_outcomes(failed=1, passed=1)
    assert verbose_statuses(result)["test_b_second.py::test_users"] == "FAILED"


def test_new_conftest_overrides_a_fixture(pytester, run_vault):
    """A ``conftest.py`` that did not exist when the test was recorded shadows its fixture."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                import pytest


                @pytest.fixture
                def user():
                    return "ada"
            """,
            "sub/test_user.py": """
                def test_user(user):
                    assert user == "ada"
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    write_files(
        pytester.path,
        {
            "sub/conftest.py": """
                import pytest


                @pytest.fixture
                def user():
                    return "bob"
            """,
        },
    )
    run_vault().assert_outcomes(failed=1)


def test_doctest_edit(pytester, run_vault):
    """A doctest whose example calls nothing: only the docstring changes."""
    write_files(
        pytester.path,
        {
            "mathy.py": '''
                def add(a, b):
                    """Add two numbers.

                    >>> 1 + 1
                    2
                    """
                    return a + b
            ''',
        },
    )
    run_vault.record_and_replay("--doctest-modules", passed=1)
    edit(pytester.path / "mathy.py", ">>> 1 + 1", ">>> 1 + 2")
    run_vault("--doctest-modules").assert_outcomes(failed=1)


def test_command_line_option_change(pytester, run_vault):
    """A project option (``--backend``) read by a fixture changes between runs."""
    write_files(
        pytester.path,
        {
            "conftest.py": """
                import pytest


                def pytest_addoption(parser):
                    parser.addoption("--backend", default="memory")


                @pytest.fixture
                def backend(request):
                    return request.config.getoption("--backend")
            """,
            "test_backend.py": """
                def test_backend(backend):
                    assert backend == "memory"
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    run_vault("--backend=sql").assert_outcomes(failed=1)


def test_ini_setting_change(pytester, run_vault):
    """``filterwarnings = error`` added to the ini file turns a warning into a failure."""
    write_files(
        pytester.path,
        {
            "pytest.ini": "[pytest]\n",
            "test_warns.py": """
                import warnings


                def test_old_api():
                    warnings.warn("old api", DeprecationWarning)
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "pytest.ini", "[pytest]\n", "[pytest]\nfilterwarnings = error\n")
    run_vault().assert_outcomes(failed=1)


# -- what a tracer cannot see ----------------------------------------------------------
def test_data_file_read_by_the_test(pytester, run_vault):
    """A golden file under the rootdir is an input although it is read, not executed."""
    write_files(
        pytester.path,
        {
            "expected.json": '{"total": 3}\n',
            "test_golden.py": """
                import json
                from pathlib import Path


                def test_total():
                    expected = json.loads(Path(__file__).with_name("expected.json").read_text())
                    assert expected["total"] == 1 + 2
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "expected.json", '"total": 3', '"total": 4')
    run_vault().assert_outcomes(failed=1)


def test_data_file_changed_by_a_test_earlier_in_the_same_run(pytester, run_vault):
    """Files are stat'ed once between replays; a test that ran live may have written one,
    so a later lookup must look again (a replayed test before it already looked)."""
    write_files(
        pytester.path,
        {
            "data.txt": "good",
            "test_a_reads.py": """
                from pathlib import Path


                def test_first_reader():
                    assert Path("data.txt").read_text() in ("good", "bad")
            """,
            "test_b_writes.py": """
                import os
                from pathlib import Path

                import pytest


                @pytest.mark.vault_bypass
                def test_writer():
                    Path("data.txt").write_text(os.environ.get("DATA", "good"))
            """,
            "test_c_reads.py": """
                from pathlib import Path


                def test_second_reader():
                    assert Path("data.txt").read_text() == "good"
            """,
        },
    )
    run_vault().assert_outcomes(passed=3)
    second = run_vault("-v", env={"DATA": "bad"})
    second.assert_outcomes(passed=2, failed=1)
    assert verbose_statuses(second)["test_a_reads.py::test_first_reader"] == "PASSED (cached)"


def test_source_saved_while_the_run_is_under_way(pytester, run_vault):
    """An editor saves a source between two tests that run the code imported before
    the save: the later test passed with the old code, so its record must name the
    old text, and the next run (on the new text) must run it."""
    write_files(
        pytester.path,
        {
            "calc.py": """
                def add(a, b):
                    return a + b
            """,
            "test_calc.py": """
                from pathlib import Path

                import calc


                def test_before_the_save():
                    assert calc.add(2, 3) == 5


                def test_an_editor_saves():
                    path = Path(calc.__file__)
                    path.write_text(path.read_text().replace("a + b", "a - b"))


                def test_after_the_save():
                    assert calc.add(2, 3) == 5
            """,
        },
    )
    run_vault().assert_outcomes(passed=3)
    second = run_vault("-v")
    second.assert_outcomes(failed=2, passed=1)
    assert verbose_statuses(second)["test_calc.py::test_after_the_save"] == "FAILED"


def test_code_a_test_imported_again_is_recorded_as_it_then_was(pytester, run_vault):
    """A test that rewrites a source and imports it again runs the new text; it and
    the tests after it are recorded with it, so the next run replays them."""
    write_files(
        pytester.path,
        {
            "calc.py": """
                def add(a, b):
                    return a + b
            """,
            "test_calc.py": """
                import importlib
                from pathlib import Path

                import calc


                def test_rewrites_and_reloads():
                    path = Path(calc.__file__)
                    path.write_text(path.read_text().replace("a + b", "a * b"))
                    importlib.reload(calc)
                    assert calc.add(2, 3) == 6


                def test_runs_the_new_code():
                    assert calc.add(2, 3) == 6
            """,
        },
    )
    run_vault().assert_outcomes(passed=2)
    second = run_vault()
    second.assert_outcomes(passed=2)
    assert vault_counts(second) == (2, 0)


def test_project_code_run_in_a_subprocess(pytester, run_vault):
    """A CLI test runs ``cli.py`` in a child interpreter, where this run's tracer cannot
    look: such a test is not stored, so it runs every time."""
    write_files(
        pytester.path,
        {
            "cli.py": """
                import sys

                print(" ".join(sys.argv[1:]).upper())
            """,
            "test_cli.py": """
                import subprocess
                import sys


                def test_cli_shouts():
                    done = subprocess.run(
                        [sys.executable, "cli.py", "hi"], capture_output=True, text=True
                    )
                    assert done.stdout == "HI\\n"
            """,
        },
    )
    run_vault().assert_outcomes(passed=1)
    second = run_vault()
    second.assert_outcomes(passed=1)
    assert vault_counts(second) == (0, 1), "a test that starts a process is never replayed"
    assert vault_reasons(second) == {"uncacheable": 1}
    edit(pytester.path / "cli.py", ".upper()", ".lower()")
    run_vault().assert_outcomes(failed=1)


# -- the environment -------------------------------------------------------------------
MODE_TESTS = {
    "test_mode.py": """
        import os


        def test_dev_mode():
            assert os.environ["APP_MODE"] == "dev"


        def test_unrelated():
            assert True
    """,
}


@pytest.mark.parametrize("pattern", ["APP_MODE", "APP_*"])
def test_vault_env_variable_change(pytester, run_vault, monkeypatch, pattern):
    """A variable named (or matched by a glob) in ``vault_env`` enters every key."""
    write_files(pytester.path, {**MODE_TESTS, "pytest.ini": f"[pytest]\nvault_env = {pattern}\n"})
    monkeypatch.setenv("APP_MODE", "dev")
    run_vault.record_and_replay(passed=2)

    monkeypatch.setenv("APP_MODE", "prod")
    result = run_vault()
    result.assert_outcomes(failed=1, passed=1)
    assert vault_counts(result) == (0, 2)


def _install_fake_distribution(site, version: str) -> None:
    """What ``pip install fakedep==<version>`` would leave in site-packages (metadata only)."""
    for old in site.glob("fakedep-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"fakedep-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakedep\nVersion: {version}\n")


def test_dependency_upgrade_recorded_in_the_lockfile(pytester, run_vault, tmp_path_factory):
    """An installed dependency changes (no project file does) and ``requirements.txt`` says so."""
    site = tmp_path_factory.mktemp("site-packages")
    _install_fake_distribution(site, "1.0")
    write_files(
        pytester.path,
        {
            "requirements.txt": "fakedep==1.0\n",
            "test_dep.py": """
                from importlib.metadata import version


                def test_supported_fakedep():
                    assert version("fakedep").startswith("1.")
            """,
        },
    )
    env = {"PYTHONPATH": str(site)}
    run_vault.record_and_replay(passed=1, env=env)

    _install_fake_distribution(site, "2.0")
    edit(pytester.path / "requirements.txt", "fakedep==1.0", "fakedep==2.0")
    run_vault(env=env).assert_outcomes(failed=1)


@pytest.mark.parametrize(
    "lockfile",
    # one name per default pattern (requirements.txt: see the dependency upgrade above)
    ["uv.lock", "poetry.lock", "pdm.lock", "Pipfile.lock", "pylock.dev.toml",
     "requirements-dev.txt"],
)
def test_lockfile_change_reruns_everything(basic_project, run_vault, lockfile):
    """Any auto-detected lockfile at the rootdir enters every key."""
    lock = basic_project / lockfile
    lock.write_text("# locked\nfakedep==1.0\n")
    run_vault.record_and_replay(passed=3)

    edit(lock, "fakedep==1.0", "fakedep==1.1")
    result = run_vault()
    result.assert_outcomes(passed=3)
    assert vault_counts(result) == (0, 3)


def test_configured_lockfile_change_reruns_everything(basic_project, run_vault):
    """``vault_lockfiles`` names a lockfile the defaults would not find."""
    write_files(
        basic_project,
        {
            "pytest.ini": "[pytest]\nvault_lockfiles = constraints/prod.txt\n",
            "constraints/prod.txt": "fakedep==1.0\n",
        },
    )
    run_vault.record_and_replay(passed=3)

    edit(basic_project / "constraints/prod.txt", "fakedep==1.0", "fakedep==1.1")
    result = run_vault()
    result.assert_outcomes(passed=3)
    assert vault_counts(result) == (0, 3)


def test_module_first_imported_inside_an_earlier_test(pytester, run_vault):
    """``TABLE = _build()`` runs when the first test imports the module; a later test
    only reads ``TABLE``, yet it depends on ``_build``'s body."""
    write_files(
        pytester.path,
        {
            "lib/__init__.py": "",
            "lib/table.py": """
                def _build():
                    return {"a": 1, "b": 2}


                TABLE = _build()
            """,
            "lib/api.py": """
                def lookup(key):
                    from lib.table import TABLE

                    return TABLE[key]
            """,
            "test_lookup.py": """
                from lib.api import lookup


                def test_first():
                    assert lookup("a") == 1


                def test_second():
                    assert lookup("b") == 2
            """,
        },
    )
    run_vault.record_and_replay(passed=2)
    edit(pytester.path / "lib/table.py", '"b": 2', '"b": 3')
    run_vault().assert_outcomes(passed=1, failed=1)


def test_module_nested_too_deeply_for_the_marker(pytester, run_vault):
    """A library module whose expressions nest deeper than the 3.10/3.11 marker can walk
    imports unmarked, as it would without the vault; its users then depend on it whole."""
    write_files(
        pytester.path,
        {
            "deep.py": "def total():\n    return " + "+".join(["1"] * 900) + "\n",
            "test_deep.py": """
                from deep import total


                def test_total():
                    assert total() == 900
            """,
        },
    )
    run_vault.record_and_replay(passed=1)
    edit(pytester.path / "deep.py", "return 1+", "return 2+")
    result = run_vault()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 901 == 900*"])


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the marker is the tracer before 3.12")
def test_marked_code_kept_from_an_earlier_run(pytester, run_vault):
    """The 3.11 tracer keeps its marked code in ``__pycache__``. An edit is compiled
    again, never served from there; and a module's marks do not depend on what was
    imported before it, which differs from run to run (here ``b`` is imported first
    once the tests of ``a`` replay without their module being collected)."""
    write_files(
        pytester.path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """
                def fa():
                    return 1
            """,
            "pkg/b.py": """
                def fb():
                    return 2
            """,
            "test_a.py": """
                from pkg.a import fa


                def test_a():
                    assert fa() == 1
            """,
            "test_b.py": """
                from pkg.b import fb


                def test_b():
                    assert fb() == 2
            """,
        },
    )
    writing = {"env": {"PYTHONDONTWRITEBYTECODE": None}}
    run_vault.record_and_replay(passed=2, **writing)
    kept = sorted(p.name.split(".")[0] for p in (pytester.path / "pkg/__pycache__").glob("*-cachevault.pyc"))
    assert kept == ["__init__", "a", "b"]

    edit(pytester.path / "pkg/b.py", "return 2", "return 3")
    result = run_vault("-v", **writing)
    result.assert_outcomes(passed=1, failed=1)
    assert verbose_statuses(result) == {"test_a.py::test_a": "PASSED (cached)", "test_b.py::test_b": "FAILED"}

    edit(pytester.path / "pkg/b.py", "return 3", "return 2")
    edit(pytester.path / "pkg/a.py", "return 1", "return 4")
    result = run_vault("-v", **writing)
    result.assert_outcomes(passed=1, failed=1)
    assert verbose_statuses(result) == {"test_a.py::test_a": "FAILED", "test_b.py::test_b": "PASSED (cached)"}


CACHES = {
    "a module-level dict": """
        from lib.loader import load

        _CACHE = {}


        def get(name):
            if name not in _CACHE:
                _CACHE[name] = load(name)
            return _CACHE[name]
    """,
    "a global set on first use": """
        from lib import loader

        _DEFAULT = None


        def get(name):
            global _DEFAULT
            if _DEFAULT is None:
                _DEFAULT = loader.load(name)
            return _DEFAULT
    """,
    "an attribute of a module-level object": """
        from lib.loader import load


        class _Getter:
            def __init__(self):
                self._seen = {}

            def __call__(self, name):
                if name not in self._seen:
                    self._seen[name] = load(name)
                return self._seen[name]


        get = _Getter()
    """,
    "a closure": """
        from lib.loader import load


        def _getter():
            seen = {}

            def get(name):
                if name not in seen:
                    seen[name] = load(name)
                return seen[name]

            return get


        get = _getter()
    """,
}


@pytest.mark.parametrize("cache", list(CACHES))
def test_value_a_later_test_takes_from_a_cache_an_earlier_test_filled(pytester, run_vault, cache):
    """``test_b`` gets from the cache what ``test_a`` loaded: it never runs the loader,
    yet its outcome depends on it (as dateutil's ``tz.gettz`` keeps the zones it
    loaded). A test that changes what library modules hold makes what it ran every
    later test's input."""
    write_files(
        pytester.path,
        {
            "lib/__init__.py": "",
            "lib/loader.py": """
                def load(name):
                    return name.upper()
            """,
            "lib/zones.py": CACHES[cache],
            **{
                f"test_{name}.py": f"""
                    from lib.zones import get


                    def test_{name}():
                        assert get("gmt") == "GMT"
                """
                for name in "ab"
            },
        },
    )
    run_vault.record_and_replay(passed=2)
    edit(pytester.path / "lib/loader.py", "name.upper()", "name.lower()")
    result = run_vault("-v")
    result.assert_outcomes(failed=2)


@pytest.mark.parametrize("where", ["module", "test"], ids=["imported by the test module", "imported in the test"])
def test_code_outside_the_rootdir_that_changed_reruns(pytester, run_vault, tmp_path_factory, where):
    """A module on ``PYTHONPATH`` (or another project installed editable) is covered by
    what the loaded modules' files hold. One not loaded when a test is looked up (its
    test module is not imported, or the test imports it in its body) cannot be
    compared: the test runs, and fails if the module's change breaks it."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "helper.py").write_text("def value():\n    return 1\n")
    imports = {
        "module": "import helper\n\n\ndef test_value():\n    assert helper.value() == 1\n",
        "test": "def test_value():\n    import helper\n\n    assert helper.value() == 1\n",
    }
    (pytester.path / "test_helper.py").write_text(imports[where])
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(outside), os.environ.get("PYTHONPATH")]))}
    run_vault(env=env).assert_outcomes(passed=1)
    if where == "module":  # unchanged: replayed, its test module imported to compare
        assert vault_counts(run_vault(env=env)) == (1, 0)

    (outside / "helper.py").write_text("def value():\n    return 2\n")
    result = run_vault(env=env)
    result.assert_outcomes(failed=1)
    assert vault_counts(result) == (0, 1)
