"""The plugin's face: its options, ini settings and marker, and the hooks that start
the vault when it is on.

The rest is in :mod:`runner`, imported only then (as pytest-xdist imports its
scheduler): a run without the vault loads neither the tracer nor the store. What
only ``--vault-gc`` and ``--vault-stats`` need is imported for them: ``filelock``,
which gc locks with, installs at import an audit hook that every later audited
call (``id()``, ``open``...) goes through.
"""

from __future__ import annotations

import os

import pytest

from . import config as vault_config

MARKER = "vault_bypass"
EXPLAIN_ALL = "*"
#: ``(tracer, files of the modules loaded before it started)``, or why none runs.
TRACER_KEY = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cachevault", "test-result cache (pytest-cachevault)")
    group.addoption(
        "--vault", action="store_true", default=False,
        help="replay the stored results of tests whose inputs are unchanged (ini: vault).",
    )
    group.addoption(
        "--vault-dir", default=None, metavar="DIR",
        help=f"the store (ini: vault_dir; env: {vault_config.ENV_DIR}; "
        "default: ~/.cache/pytest-cachevault).",
    )
    group.addoption(
        "--vault-bypass", action="store_true", default=False,
        help="run every test for real and refresh its stored result.",
    )
    group.addoption(
        "--vault-readonly", action="store_true", default=False,
        help="replay hits but write nothing to the store: no record, no mtime, no summary "
        "(ini: vault_readonly). For jobs that run untrusted code.",
    )
    group.addoption(
        "--vault-explain", nargs="?", const=EXPLAIN_ALL, default=None, metavar="NODEID",
        help="say why each test ran instead of replaying; with =NODEID, list the inputs "
        "recorded for that test.",
    )
    group.addoption(
        "--vault-stats", action="store_true", default=False,
        help="show the store's entries, size, oldest and newest use and recent hit rates, then exit.",
    )
    group.addoption(
        "--vault-gc", action="store_true", default=False,
        help="prune the store to --vault-max-size and --vault-max-age, then exit.",
    )
    group.addoption(
        "--vault-max-size", default=None, metavar="SIZE",
        help=f"size limit for --vault-gc, e.g. 500M, 2G (ini: vault_max_size; "
        f"default {vault_config.DEFAULT_MAX_SIZE}).",
    )
    group.addoption(
        "--vault-max-age", default=None, metavar="AGE",
        help=f"drop results unused for longer, e.g. 12h, 14d (ini: vault_max_age; "
        f"default {vault_config.DEFAULT_MAX_AGE}).",
    )
    parser.addini("vault", type="bool", default=False, help="turn the vault on (like --vault).")
    parser.addini("vault_dir", default="", help="the store directory (relative to the ini file).")
    parser.addini(
        "vault_readonly", type="bool", default=False,
        help="replay hits but write nothing to the store (like --vault-readonly).",
    )
    parser.addini(
        "vault_env", type="args", default=[],
        help="environment variable names or globs whose values enter every key.",
    )
    parser.addini(
        "vault_lockfiles", type="args", default=[],
        help="lockfiles (globs, relative to the rootdir) whose content enters every key; "
        "default: " + " ".join(vault_config.DEFAULT_LOCKFILE_GLOBS),
    )
    parser.addini(
        "vault_allow", type="args", default=[],
        help="store tests that start processes (subprocess) or reach other hosts (network) "
        "anyway; a subprocess test then depends on every in-tree source file.",
    )
    parser.addini(
        "vault_skip_collection", type="bool", default=True,
        help="replay the tests of an unchanged test module without importing it (default true).",
    )
    parser.addini("vault_max_size", default="", help="size limit for --vault-gc.")
    parser.addini("vault_max_age", default="", help="age limit for --vault-gc.")


def is_controller(namespace: object) -> bool:
    """True in an xdist controller: it schedules tests, its workers run them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    numprocesses = getattr(namespace, "numprocesses", None)
    dist = getattr(namespace, "dist", "no")
    return bool(numprocesses) or dist not in (None, "no")


def _wants_tracer(config: pytest.Config) -> bool:
    namespace = config.known_args_namespace
    if getattr(namespace, "vault_gc", False) or getattr(namespace, "collectonly", False):
        return False
    try:
        enabled = namespace.vault or config.getini("vault")
    except (ValueError, AttributeError):
        enabled = getattr(namespace, "vault", False)
    return bool(enabled) and not is_controller(namespace)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config):
    if _wants_tracer(early_config):
        from .runner import start_tracer

        start_tracer(early_config)
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config):
    """``--vault-gc`` and ``--vault-stats``: work on the store, run no test."""
    if config.getoption("vault_gc"):
        from . import gc
        from .store import Store, StoreError

        vault = vault_config.load(config)
        try:
            result = gc.collect(Store(vault.directory), vault.max_size, vault.max_age)
        except StoreError as exc:
            raise pytest.UsageError(f"--vault-gc: {exc}") from exc
        print(result.describe())
        return 0
    if config.getoption("vault_stats"):
        from . import stats
        from .store import Store

        vault = vault_config.load(config)
        store = Store(vault.directory, readonly=True)
        if not store.base.is_dir():
            print(f"vault stats: no store at {vault.directory} yet")
            return 0
        print("\n".join(stats.gather(store).describe(store)))
        return 0
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: always run this test for real; never replay nor store its result."
    )
    vault = vault_config.load(config)
    if not vault.enabled or vault.gc or config.option.collectonly:
        return
    from .runner import configure

    configure(config, vault)


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(TRACER_KEY, None)
    if isinstance(started, tuple):
        started[0].stop()
