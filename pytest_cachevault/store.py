"""The content-addressed result store: a directory of immutable JSON files.

Knows nothing of pytest. Layout::

    <dir>/CACHEDIR.TAG
    <dir>/v1/records/<key[:2]>/<key>/<name>.json   candidate results of one test key
    <dir>/v1/collections/<key[:2]>/<key>/<name>.json   the same for what a test module held
    <dir>/v1/objects/<id[:2]>/<id>.json            shared input sets, named by content
    <dir>/v1/runs/<ms>-<random>.json               one line of counts per finished run
    <dir>/v1/tmp/                                  staging for write-then-rename

Every file is written to ``tmp/`` and renamed into place, so readers see whole files
or nothing, a killed writer leaves at most a stray temp file, and two writers of the
same name simply replace one whole file by an equal one. Two stores merge by copying
one over the other. A record's mtime is its last use (bumped on a hit): garbage
collection evicts the least recently used.

Everything read back is untrusted: JSON only, a schema version, a checksum over the
payload (records) or the name (objects), and names checked to be hex digests before
they become paths.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .hashing import digest_bytes

SCHEMA = 1
LAYOUT = f"v{SCHEMA}"
MAX_CANDIDATES = 8
#: The areas records live in: test results, and test modules' collections.
RESULTS = "records"
COLLECTIONS = "collections"
#: Run summaries kept (for ``--vault-stats``); older ones go at the next write.
MAX_RUNS = 100
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by pytest-cachevault.\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/\n"
)
_NAME = re.compile(r"[0-9a-f]{16,64}")
_RECORD_HEADER = re.compile(rb'\{"schema":(?P<schema>\d+),"checksum":"(?P<checksum>[0-9a-f]+)","payload":')


class StoreError(Exception):
    """The store cannot be used (not a directory, not writable, disk full...)."""


@dataclass(frozen=True)
class Candidate:
    """One stored result for a key, as found on disk."""

    path: str
    payload: dict


def _canonical(payload: object) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def is_name(text: object) -> bool:
    """True for the hex digests the store uses as file names (and nothing else)."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.base = directory / LAYOUT
        self.records = self.base / RESULTS
        self.collections = self.base / COLLECTIONS
        self.objects = self.base / "objects"
        self.runs = self.base / "runs"
        self.tmp = self.base / "tmp"
        #: Files found unreadable or tampered with during this run (reported once).
        self.problems: list[str] = []

    # -- setup --------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the layout and ``CACHEDIR.TAG``; raise :class:`StoreError` if impossible."""
        try:
            for path in (self.records, self.collections, self.objects, self.runs, self.tmp):
                path.mkdir(parents=True, exist_ok=True)
            tag = self.directory / "CACHEDIR.TAG"
            if not tag.exists():
                self._write(tag, CACHEDIR_TAG.encode())
        except OSError as exc:
            raise StoreError(f"cannot use the vault at {self.directory}: {exc}") from exc

    # -- records ------------------------------------------------------------------
    def _key_dir(self, key: str, area: str) -> Path:
        return self.base / area / key[:2] / key

    def candidates(self, key: str, area: str = RESULTS) -> Iterator[Candidate]:
        """Stored results for ``key``, most recently used first; bad files are skipped.

        Called once per test on every run: plain ``os`` calls on strings, and no
        ordering ``stat`` when there is one candidate (the common case)."""
        try:
            entries = list(os.scandir(self._key_dir(key, area)))
        except OSError:
            return
        if len(entries) == 1:
            paths = [entries[0].path]
        else:
            stamped = []
            for entry in entries:
                try:
                    stamped.append((entry.stat().st_mtime_ns, entry.path))
                except OSError:
                    continue
            paths = [path for _, path in sorted(stamped, reverse=True)]
        for path in paths[:MAX_CANDIDATES]:
            payload = self._read_record(path)
            if payload is not None:
                yield Candidate(path, payload)

    def _read_record(self, path: str | Path) -> dict | None:
        """The payload of a record file, checked against its checksum before parsing.

        The file is ``{"schema":N,"checksum":"…","payload":BODY}`` with BODY the exact
        bytes the checksum was taken of, so checking needs no re-serialization."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None  # collected by gc meanwhile
        except OSError:
            self._problem(path, "unreadable record")
            return None
        header = _RECORD_HEADER.match(data)
        if header is None or int(header["schema"]) != SCHEMA:
            self._problem(path, "record of an unknown schema or layout")
            return None
        body = data[header.end() : -1]
        if data[-1:] != b"}" or digest_bytes(body) != header["checksum"].decode():
            self._problem(path, "record whose checksum does not match")
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._problem(path, "unreadable record")
            return None
        return payload

    def put_record(self, key: str, name: str, payload: dict, area: str = RESULTS) -> Path:
        """Store ``payload`` as the candidate ``name`` of ``key``, replacing one of that name.

        Callers name a record by its inputs, so that recording a test again with the same
        inputs refreshes its record instead of adding one."""
        if not (is_name(key) and is_name(name)):
            raise ValueError("record keys and names are hex digests")
        body = _canonical(payload)
        checksum = digest_bytes(body)
        data = b'{"schema":%d,"checksum":"%s","payload":%s}' % (SCHEMA, checksum.encode(), body)
        directory = self._key_dir(key, area)
        path = directory / f"{name}.json"
        self._mkdir(directory)
        self._write(path, data)
        self._trim(directory)
        return path

    def _trim(self, directory: Path) -> None:
        """Keep at most :data:`MAX_CANDIDATES` records per key (the newest)."""
        try:
            entries = [(e.stat().st_mtime_ns, e.path) for e in os.scandir(directory)]
        except OSError:
            return
        for _, path in sorted(entries, reverse=True)[MAX_CANDIDATES:]:
            _unlink(Path(path))

    def touch(self, candidate: Candidate) -> None:
        """Mark a record as just used (LRU order for garbage collection)."""
        try:
            os.utime(candidate.path)
        except OSError:
            pass

    # -- objects ------------------------------------------------------------------
    def _object_path(self, name: str) -> Path:
        return self.objects / name[:2] / f"{name}.json"

    def put_object(self, value: object) -> str:
        """Store ``value`` (JSON-able) once; return its name, the digest of its bytes."""
        body = _canonical(value)
        name = digest_bytes(body)
        path = self._object_path(name)
        try:
            os.utime(path)  # in use again: not garbage for a collector running now
        except OSError:
            self._mkdir(path.parent)
            self._write(path, body)
        return name

    def get_object(self, name: str) -> object | None:
        """The object called ``name``, or None if absent, unreadable or not matching its name."""
        if not is_name(name):
            return None
        path = self._object_path(name)
        try:
            body = path.read_bytes()
        except OSError:
            return None
        if digest_bytes(body) != name:
            self._problem(path, "object whose content does not match its name")
            return None
        try:
            return json.loads(body)
        except ValueError:
            self._problem(path, "unreadable object")
            return None

    # -- run summaries --------------------------------------------------------------
    def put_run(self, counts: dict[str, int]) -> None:
        """Remember the counts of a finished run; keep the newest :data:`MAX_RUNS`."""
        body = _canonical({"schema": SCHEMA, "finished": int(time.time()), **counts})
        self._mkdir(self.runs)
        self._write(self.runs / f"{time.time_ns() // 1_000_000}-{uuid.uuid4().hex[:8]}.json", body)
        for entry in sorted(_scandir(self.runs), key=lambda e: e.name)[:-MAX_RUNS]:
            _unlink(Path(entry.path))

    def recent_runs(self) -> list[dict[str, int]]:
        """The run summaries kept, oldest first; malformed ones are skipped."""
        runs = []
        for entry in sorted(_scandir(self.runs), key=lambda e: e.name):
            try:
                with open(entry.path, "rb") as f:
                    value = json.loads(f.read(4096))
            except (OSError, ValueError):
                continue
            if isinstance(value, dict) and value.get("schema") == SCHEMA and all(
                isinstance(v, int) for v in value.values()
            ):
                runs.append(value)
        return runs

    # -- listing, for garbage collection -----------------------------------------
    def iter_records(self, area: str = RESULTS) -> Iterator[tuple[Path, os.stat_result]]:
        for shard in _scandirs(self.base / area):
            for key_dir in _scandirs(Path(shard.path)):
                for entry in _scandir(Path(key_dir.path)):
                    try:
                        yield Path(entry.path), entry.stat()
                    except OSError:
                        continue

    def iter_objects(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        for shard in _scandirs(self.objects):
            for entry in _scandir(Path(shard.path)):
                name = entry.name.removesuffix(".json")
                try:
                    yield name, Path(entry.path), entry.stat()
                except OSError:
                    continue

    def iter_runs(self) -> Iterator[tuple[Path, os.stat_result]]:
        return self._files_in(self.runs)

    def iter_tmp(self) -> Iterator[tuple[Path, os.stat_result]]:
        return self._files_in(self.tmp)

    def _files_in(self, directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
        for entry in _scandir(directory):
            try:
                yield Path(entry.path), entry.stat()
            except OSError:
                continue

    def read_record(self, path: Path) -> dict | None:
        return self._read_record(path)

    def remove(self, path: Path) -> None:
        """Delete a file of the store; a record's key directory goes with its last record."""
        _unlink(path)
        if path.parent.parent.parent in (self.records, self.collections):
            try:
                path.parent.rmdir()
            except OSError:
                pass

    # -- low level ----------------------------------------------------------------
    def _problem(self, path: str | Path, what: str) -> None:
        path = Path(path)
        self.problems.append(f"{what}: {path.relative_to(self.directory).as_posix()}")
        _unlink(path)

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write to the vault at {self.directory}: {exc}") from exc

    def _write(self, path: Path, data: bytes) -> None:
        tmp = self.tmp / f"{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            raise StoreError(f"cannot write to the vault at {self.directory}: {exc}") from exc


def _scandir(path: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(path))
    except OSError:
        return []


def _scandirs(path: Path) -> list[os.DirEntry]:
    return [e for e in _scandir(path) if e.is_dir(follow_symlinks=False)]


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
