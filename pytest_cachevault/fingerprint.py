"""The environment fingerprint and the per-test key.

Everything here is computed once per session. The environment is what can change a
test's outcome without changing a file under the rootdir: the interpreter, the
installed distributions, lockfiles, the pytest configuration and options, and the
environment variables the user named. Its parts are kept apart (``components``) so
that a miss can say which part moved.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import sys
from pathlib import Path

import pytest

from .config import ENV_KEY, VaultConfig
from .hashing import Hasher, digest_bytes

#: Bump when the meaning of keys or records changes: old records then simply miss.
FORMAT = 3

#: Options that only select, order, display or distribute tests. Every other option,
#: including those of plugins we do not know, is assumed to change outcomes.
NOT_OUTCOME_OPTIONS = frozenset(
    """
    basetemp cacheclear cacheshow code_highlight collectonly color
    continue_on_collection_errors debug deselect disable_warnings dist distload
    doctestreport durations durations_min failedfirst file_or_dir fold_skipped
    force_short_summary fulltrace help ignore ignore_glob junitprefix keepduplicates
    keyword last_failed_no_failures lf loadscopereorder looponfail markers markexpr
    maxfail maxprocesses maxschedchunk maxworkerrestart newfirst no_header no_summary
    numprocesses pastebin px quiet reportchars rootdir rsyncdir rsyncignore showcapture
    showfixtures show_fixtures_per_test showlocals stepwise stepwise_reset stepwise_skip
    setupshow tbstyle testrunuid trace traceconfig tx usepdb usepdb_cls verbose version
    xfail_tb xmlpath loadgroup
    """.split()
    # pytest-cov's reports and data file; what it measures (--cov, --cov-branch) counts
    + "cov_append cov_fail_under cov_precision cov_report no_cov_on_fail".split()
)


#: Options whose effect is already in the effective ini values (:func:`_ini`).
COVERED_BY_INI_VALUES = frozenset({"override_ini", "inifilename"})


def _relativize(value: object, root: str) -> object:
    """Replace the rootdir in option values, so that another checkout path agrees."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        return text.replace(root, "{rootdir}") if root in text else text
    if isinstance(value, (list, tuple)):
        return [_relativize(v, root) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return repr(value)


def _options(config: pytest.Config) -> dict:
    root = str(config.rootpath)
    return {
        name: _relativize(value, root)
        for name, value in sorted(vars(config.option).items())
        if name not in NOT_OUTCOME_OPTIONS
        and name not in COVERED_BY_INI_VALUES
        and not name.startswith("vault")
    }


def _distributions(root: Path) -> list[list[str]]:
    """Every distribution on ``sys.path``: its metadata directory and installed-files digest.

    The ``*.dist-info`` name carries name and version; the digest of ``RECORD`` (lines
    inside site-packages only: scripts carry the venv's path in their shebang) catches a
    reinstall of a changed package under the same version. Editable installs count by
    name and version: their code is in the tree. Read as plain files: parsing every
    ``METADATA`` through ``importlib.metadata`` costs half a second in a large venv.
    """
    found = set()
    # The project's own build metadata (an ``*.egg-info`` beside the sources) is not an
    # installed distribution, and ``python -m pytest`` puts the current directory first.
    skipped = {os.path.realpath(root), os.path.realpath(os.getcwd())}
    for entry in dict.fromkeys(os.path.realpath(p or ".") for p in sys.path):
        if entry in skipped:
            continue
        try:
            names = [e.name for e in os.scandir(entry) if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
        for name in names:
            meta = os.path.join(entry, name)
            if _EDITABLE.search(_read(os.path.join(meta, "direct_url.json"))):
                found.add((name, "editable"))
                continue
            record = _read(os.path.join(meta, "RECORD")) or _read(os.path.join(meta, "SOURCES.txt"))
            found.add((name, digest_bytes(_OUTSIDE_SITE_PACKAGES.sub(b"", record))))
    return [list(item) for item in sorted(found)]


_EDITABLE = re.compile(rb'"editable"\s*:\s*true')
_OUTSIDE_SITE_PACKAGES = re.compile(rb"(?m)^\.\..*\n?")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _lockfiles(root: Path, globs: tuple[str, ...], hasher: Hasher) -> dict[str, str | None]:
    paths = sorted({p for pattern in globs for p in root.glob(pattern) if p.is_file()})
    relpaths = [p.relative_to(root).as_posix() for p in paths]
    return {relpath: hasher.digest(relpath, "file") for relpath in relpaths}


def _ini(config: pytest.Config) -> dict:
    """The effective value of every registered ini setting (files, ``-o`` and defaults).

    Values rather than the file: a version bump in ``pyproject.toml`` changes no outcome.
    """
    root = str(config.rootpath)
    values = {}
    for name in sorted(config._parser._inidict):
        if name.startswith("vault") or name == "markers":  # plugins add markers as they load
            continue
        try:
            values[name] = _relativize(config.getini(name), root)
        except (ValueError, TypeError) as exc:  # a plugin's ini that cannot be read
            values[name] = f"<unreadable: {exc}>"
    return values


def _environment_variables(patterns: tuple[str, ...]) -> dict[str, str]:
    """Digests of the matching variables' values: they may be secrets, and the
    environment is stored (in the store and in pytest's cache). The signing key is
    left out whatever the patterns say: it is not part of the environment."""
    return {
        name: digest_bytes(value.encode("utf-8", "surrogateescape"))
        for name, value in sorted(os.environ.items())
        if name != ENV_KEY and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }


def environment(config: pytest.Config, vault: VaultConfig, hasher: Hasher) -> dict[str, object]:
    """The parts of the environment fingerprint, each JSON-able."""
    return {
        "format": FORMAT,
        "python": f"{sys.implementation.name} {sys.version} {sys.implementation.cache_tag}",
        "flags": repr(sys.flags),
        "platform": f"{sys.platform} {platform.machine()}",
        "distributions": digest_bytes(json.dumps(_distributions(config.rootpath)).encode()),
        "lockfiles": _lockfiles(config.rootpath, vault.lockfile_globs, hasher),
        "ini": _ini(config),
        "options": _options(config),
        "env": _environment_variables(vault.env_patterns),
    }


def environment_digest(components: dict[str, object]) -> str:
    return digest_bytes(json.dumps(components, sort_keys=True).encode())


def key_of(environment_id: str, name: str) -> str:
    """A store key: ``name`` under one environment."""
    return digest_bytes(f"{FORMAT}\0{environment_id}\0{name}".encode())


def module_of(nodeid: str) -> str:
    """The part of a node id that names its file (``tests/test_x.py``)."""
    return nodeid.split("::", 1)[0]


def results_key(environment_id: str, nodeid: str) -> str:
    """The store key of the results of the test module ``nodeid`` is in (a NUL never
    occurs in a node id)."""
    return key_of(environment_id, f"\0results\0{module_of(nodeid)}")


def describe_change(old: object, new: dict[str, object]) -> str | None:
    """What differs between two environments, in a few words (None if nothing does).

    ``old`` comes from pytest's cache (last run in this checkout): any shape; None when
    there was no earlier run."""
    if not isinstance(old, dict) or old == new:
        return None
    changes = []
    for part, value in new.items():
        before = old.get(part)
        if before == value:
            continue
        if part == "python" and isinstance(before, str) and isinstance(value, str):
            changes.append(f"python {_version(before)}→{_version(value)}")
        elif isinstance(value, dict) and isinstance(before, dict):
            names = sorted(k for k in value.keys() | before.keys() if value.get(k) != before.get(k))
            changes.append(f"{part}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}")
        else:
            changes.append(part)
    return "; ".join(changes) or None


def _version(python: str) -> str:
    """``3.11.7`` from the ``python`` part (``cpython 3.11.7 (main, ...) ...``)."""
    words = python.split()
    return words[1] if len(words) > 1 else python
