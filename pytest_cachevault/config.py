"""Resolve and validate the vault's settings (command line > ini > environment > default).

Everything a user can get wrong is checked here, once, and reported as a pytest
``UsageError`` with a sentence that names the option: the rest of the plugin can
then trust a :class:`VaultConfig`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

ENV_DIR = "PYTEST_VAULT_DIR"
#: The secret that signs records (HMAC-SHA256); never stored, never part of a key.
ENV_KEY = "PYTEST_VAULT_KEY"

#: Lockfiles looked for at the rootdir when ini ``vault_lockfiles`` is not set.
DEFAULT_LOCKFILE_GLOBS = (
    "uv.lock",
    "poetry.lock",
    "pdm.lock",
    "Pipfile.lock",
    "pylock*.toml",
    "requirements*.txt",
)

#: Environment variables whose values change how Python itself or the C library
#: behaves (time zone, locale), read where no Python code sees it; they enter every
#: key in addition to the user's ``vault_env``.
DEFAULT_ENV = (
    "PYTHONHASHSEED",
    "PYTHONPATH",
    "PYTHONOPTIMIZE",
    "PYTHONWARNINGS",
    "PYTHONDEVMODE",
    "PYTHONUTF8",
    "PYTHONSAFEPATH",
    "TZ",
    "LANG",
    "LANGUAGE",
    "LC_*",
)

#: What ini ``vault_allow`` may name: kinds of test that are stored although tracing
#: cannot see everything they depend on.
ALLOWABLE = ("subprocess", "network")

DEFAULT_MAX_SIZE = "2G"
DEFAULT_MAX_AGE = "30d"

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclasses.dataclass(frozen=True)
class VaultConfig:
    """The validated settings of one pytest run."""

    enabled: bool
    directory: Path
    bypass: bool
    gc: bool
    max_size: int
    max_age: float
    env_patterns: tuple[str, ...]
    lockfile_globs: tuple[str, ...]
    allow: frozenset[str] = frozenset()
    #: ``--vault-readonly``: replay hits, write nothing to the store.
    readonly: bool = False
    #: ``PYTEST_VAULT_KEY``: sign records, and ignore those not signed with it.
    key: bytes | None = dataclasses.field(default=None, repr=False)
    #: Replay the tests of unchanged test modules without importing them (ini
    #: ``vault_skip_collection``).
    skip_collection: bool = True


def parse_size(text: str, option: str) -> int:
    """``500M`` → bytes. Binary units (K = 1024), optional trailing ``B``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise pytest.UsageError(
            f"{option}: cannot read {text!r} as a size; write a number with an "
            f"optional unit K, M, G or T, e.g. 500M or 2G."
        )
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def parse_age(text: str, option: str) -> float:
    """``14d`` → seconds. Units s, m, h, d, w; a bare number is seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text, re.IGNORECASE)
    if not match:
        raise pytest.UsageError(
            f"{option}: cannot read {text!r} as an age; write a number with a unit "
            f"s, m, h, d or w, e.g. 12h or 14d."
        )
    number, unit = match.groups()
    return float(number) * _AGE_UNITS[(unit or "s").lower()]


def default_directory() -> Path:
    """The user cache directory, so that every checkout of a project shares results."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-cachevault"


def _check_directory(path: Path) -> None:
    """``--vault-gc``: fail now, with a sentence, if the store cannot live at ``path``.

    A test run does not stop for this: the tests run without the store, with a warning
    (see :meth:`pytest_cachevault.store.Store.ensure`)."""
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(
            f"--vault-dir: {path} exists and is not a directory; point the vault at a "
            f"directory (it is created if missing)."
        )
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise pytest.UsageError(
            f"--vault-dir: cannot write to {probe}; choose a writable directory for the "
            f"vault (ini vault_dir, or the {ENV_DIR} environment variable)."
        )


def _flag(config: pytest.Config, option: str, ini: str | None = None) -> bool:
    if config.getoption(option):
        return True
    return bool(ini and config.getini(ini))


def _setting(config: pytest.Config, option: str, ini: str) -> str | None:
    value = config.getoption(option)
    if value is None:
        value = config.getini(ini) or None
    return value


def _relative_to_inifile(config: pytest.Config, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute() and config.inipath is not None:
        path = config.inipath.parent / path
    return path.absolute()


def _check_dir_spelling(config: pytest.Config) -> None:
    """``--vault-dir DIR`` (with a space) must be ``--vault-dir=DIR``.

    pytest finds the rootdir before plugins' options are known, so it reads a separate
    ``DIR`` as a test path, and an existing store would move the rootdir to a common
    ancestor of the project and the store.
    """
    args = [str(a) for a in config.invocation_params.args]
    if "--vault-dir" in args[:-1]:
        raise pytest.UsageError(
            "--vault-dir: write --vault-dir=DIR (with '='); pytest decides the rootdir "
            "before it knows plugin options and would take DIR for a test path."
        )


def load(config: pytest.Config) -> VaultConfig:
    """Build the :class:`VaultConfig` of this run, raising ``UsageError`` on bad values."""
    _check_dir_spelling(config)
    enabled = _flag(config, "vault", "vault")
    gc = _flag(config, "vault_gc")
    bypass = _flag(config, "vault_bypass")
    readonly = _flag(config, "vault_readonly", "vault_readonly")
    if gc and readonly:
        raise pytest.UsageError(
            "--vault-gc: the store is read-only for this run (--vault-readonly or ini "
            "vault_readonly); garbage collection removes files, so run it without."
        )

    # Command line, then environment (a CI job points every checkout at its restored
    # cache), then the ini file, then the user cache directory.
    dir_value = config.getoption("vault_dir")
    if dir_value is not None:
        directory = Path(os.path.expanduser(dir_value)).absolute()
    elif os.environ.get(ENV_DIR):
        directory = Path(os.path.expanduser(os.environ[ENV_DIR])).absolute()
    elif config.getini("vault_dir"):
        directory = _relative_to_inifile(config, config.getini("vault_dir"))
    else:
        directory = default_directory()
    if gc:
        _check_directory(directory)

    # The limits matter to --vault-gc only; a bad value must not break other runs.
    max_size = parse_size(
        (gc and _setting(config, "vault_max_size", "vault_max_size")) or DEFAULT_MAX_SIZE,
        "--vault-max-size (ini vault_max_size)",
    )
    max_age = parse_age(
        (gc and _setting(config, "vault_max_age", "vault_max_age")) or DEFAULT_MAX_AGE,
        "--vault-max-age (ini vault_max_age)",
    )
    env_patterns = tuple(dict.fromkeys([*DEFAULT_ENV, *config.getini("vault_env")]))
    lockfiles = tuple(config.getini("vault_lockfiles")) or DEFAULT_LOCKFILE_GLOBS
    allow = frozenset(config.getini("vault_allow"))
    unknown = sorted(allow.difference(ALLOWABLE))
    if unknown:
        raise pytest.UsageError(
            f"ini vault_allow: unknown value {unknown[0]!r}; allowed: {', '.join(ALLOWABLE)}."
        )
    return VaultConfig(
        enabled=enabled,
        directory=directory,
        bypass=bypass,
        gc=gc,
        max_size=max_size,
        max_age=max_age,
        env_patterns=env_patterns,
        lockfile_globs=lockfiles,
        allow=allow,
        readonly=readonly,
        key=os.environ.get(ENV_KEY, "").encode("utf-8", "surrogateescape") or None,
        skip_collection=bool(config.getini("vault_skip_collection")),
    )
