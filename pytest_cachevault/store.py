"""The content-addressed result store: a directory of immutable JSON files.

Knows nothing of pytest. Layout::

    <dir>/CACHEDIR.TAG
    <dir>/v4/records/<key[:2]>/<key>.<name>.json.gz      results of a key, one file per run
    <dir>/v4/collections/<key[:2]>/<key>.<name>.json.gz  what a test module held, by inputs
    <dir>/v4/objects/<id[:2]>/<id>.json.gz               shared input sets, named by content
    <dir>/v4/runs/<ms>-<random>.json                     one line of counts per finished run
    <dir>/v4/tmp/                                        staging for write-then-rename

Records and objects are gzip-compressed JSON (``zcat`` shows them): stored reports and
inputs repeat the same paths and field names test after test, and compress 12 to 17
times at the fastest level, for a few milliseconds per megabyte. Their checksums and
names are digests of the JSON itself, checked after decompression, which stops at
:data:`MAX_UNPACKED_BYTES`.

A key has several records (candidates). In ``collections`` a record is named by its
inputs, and the most recently used is read first. In ``records`` a record is named by
when it was made (:func:`sequence_name`), and the newest made is read first: a newer
result (a failure) must not be shadowed by an older one that a later run merely used.
For the same reason a record there that fails a check hides the older ones of its key
(and goes with them, if it is removed), and pruning removes the oldest made first.

A run lists each shard of records it needs once (256 directories at most) rather
than one directory per key.

Every file is written to ``tmp/`` and renamed into place, so readers see whole files
or nothing, a killed writer leaves at most a stray temp file, and two writers of the
same name simply replace one whole file by an equal one. Two stores merge by copying
one over the other. A record's mtime is its last use (bumped on a hit): garbage
collection evicts the least recently used. No lock is taken for reading or writing;
a collector running meanwhile may remove a directory a writer is about to use, so a
write that finds its directory gone makes it again.

Everything read back is untrusted: JSON only (never pickle, never code), a schema
version, a checksum over the payload (records) or the name (objects), names checked
to be hex digests before they become paths, and only regular files read (a link is
not followed, a pipe not waited on). A file that fails a check is a miss, is removed
(or, for a record of a newer schema, left for the version that wrote it) and is
reported once in :attr:`Store.problems`. With a ``key``, records also carry an
HMAC-SHA256 of their key and payload, and records without a valid one are ignored:
then whoever can write the store but lacks the key cannot make a test replay.

A read-only store (``readonly=True``) never writes, renames, deletes nor touches a
file, whatever its callers ask.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

from .hashing import digest_bytes

SCHEMA = 1
#: The directory layout; bumped when files move or change meaning. This version
#: neither reads nor writes an older layout's directory; ``--vault-gc`` removes it once
#: it has gone unused for the age limit (see :meth:`Store.old_layouts`).
LAYOUT = "v4"
_LAYOUT_NAME = re.compile(r"v(?P<number>[0-9]{1,4})")
#: How stale a record's last-use time may get before a hit updates it.
TOUCH_INTERVAL_NS = 3600 * 10**9
#: The areas records live in: test results, and test modules' collections.
RESULTS = "records"
COLLECTIONS = "collections"
#: Records kept per key: test modules' results (one per run that ran some of its
#: tests, read only as far as needed), and collections (one per version of a module).
MAX_CANDIDATES = {RESULTS: 32, COLLECTIONS: 8}
#: The end of the names of record and object files: gzip-compressed JSON.
SUFFIX = ".json.gz"
#: A record or object that decompresses to more than this is damaged (or built to
#: exhaust memory): more than ten times what a test module of 60,000 tests stores.
MAX_UNPACKED_BYTES = 1 << 30
#: gzip's fastest level: 12 to 17 times smaller on packaging's and python-dateutil's
#: stores, in less than half the time of the default level 6, which made them 16 to
#: 23 times smaller.
_GZIP_LEVEL = 1
#: Run summaries kept (for ``--vault-stats``); older ones go at the next write.
MAX_RUNS = 100
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by pytest-cachevault.\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/\n"
)
_NAME = re.compile(r"[0-9a-f]{16,64}")
_SCHEMA_PREFIX = re.compile(rb'\{"schema":(?P<schema>\d{1,9}),')
_RECORD_HEADER = re.compile(
    rb'\{"schema":(?P<schema>\d{1,9}),"checksum":"(?P<checksum>[0-9a-f]{1,64})"'
    rb'(?:,"hmac":"(?P<hmac>[0-9a-f]{64})")?,"payload":'
)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)

#: Why a record was passed over when a key is set (the ``--vault-explain`` line).
UNSIGNED = "unsigned record ignored"
BADLY_SIGNED = "record with a wrong signature ignored"
_IGNORED_WARNINGS = {
    UNSIGNED: "unsigned records were ignored: with PYTEST_VAULT_KEY set, only records "
    "signed with that key are replayed",
    BADLY_SIGNED: "records with a wrong signature were ignored (signed with another "
    "PYTEST_VAULT_KEY, or altered)",
}


class StoreError(Exception):
    """The store cannot be used (not a directory, not writable, disk full...)."""


class _NotAFile(OSError):
    """A directory, a pipe or a device where the store keeps regular files."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One stored result for a key, as found on disk."""

    path: str
    payload: dict
    #: When it was last used (its mtime), in nanoseconds.
    used_ns: int = 0
    #: Its name: the digest of its inputs, so records of one name have the same inputs.
    name: str = ""


@dataclasses.dataclass(frozen=True)
class ReadRecord:
    """A record file as read back: ``status`` says why ``payload`` is None."""

    #: "ok", "missing", "bad" (removed), "newer" (left in place), or, with a key,
    #: "unsigned" / "badly signed" (left in place, ignored).
    status: str
    payload: dict | None = None
    used_ns: int = 0


def _canonical(payload: object) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _pack(body: bytes) -> bytes:
    """A record's or an object's bytes as stored: gzip, with no time in the header, so
    that equal contents make equal files."""
    return gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)


def _unpack(data: bytes) -> bytes:
    """What :func:`_pack` packed; ValueError unless ``data`` is one whole gzip stream
    of at most :data:`MAX_UNPACKED_BYTES`."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    try:
        body = inflater.decompress(data, MAX_UNPACKED_BYTES)
    except zlib.error as exc:
        raise ValueError(f"not gzip: {exc}") from exc
    if not inflater.eof or inflater.unused_data:  # cut short, too large, or followed by more
        raise ValueError("not one whole gzip stream of a bounded size")
    return body


def is_name(text: object) -> bool:
    """True for the hex digests the store uses as file names (and nothing else)."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def _write_file(path: str, data: bytes) -> None:
    """Create the new file ``path`` holding ``data``: the one place bytes reach the disk.

    Kept apart so that a test can make it fail as a full disk does, mid-file."""
    fd = os.open(path, _CREATE_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _read_file(path: str | Path, limit: int = -1) -> tuple[bytes, int]:
    """The bytes of the regular file ``path`` and its mtime; :class:`_NotAFile` for
    anything else.

    A symbolic link is not followed (``ELOOP``) and a pipe is not waited on: nothing
    planted in the store makes the plugin read elsewhere or hang. Plain ``os`` calls:
    a warm run reads one record per test."""
    fd = os.open(path, _READ_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotAFile(errno.EISDIR, "not a regular file", str(path))
        remaining = None if limit < 0 else limit
        chunks = []
        while remaining is None or remaining > 0:
            chunk = os.read(fd, st.st_size + 1 if remaining is None else remaining)
            if not chunk:
                break
            chunks.append(chunk)
            if remaining is not None:
                remaining -= len(chunk)
        return b"".join(chunks), st.st_mtime_ns
    finally:
        os.close(fd)


def _not_a_file(exc: OSError) -> bool:
    return isinstance(exc, _NotAFile) or exc.errno in (errno.ELOOP, errno.EISDIR)


def _reason(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: the same words for every file and process,
    so that one problem makes one warning."""
    code = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or type(exc).__name__
    return f"{text} ({code})" if code else text


class Store:
    def __init__(self, directory: Path, *, readonly: bool = False, key: bytes | None = None) -> None:
        self.directory = directory
        self.base = directory / LAYOUT
        self.records = self.base / RESULTS
        self.collections = self.base / COLLECTIONS
        self.objects = self.base / "objects"
        self.runs = self.base / "runs"
        self.tmp = self.base / "tmp"
        #: Read hits, write nothing (no record, object, run summary, mtime, directory).
        self.readonly = readonly
        #: Records are signed with this key, and unsigned or badly signed ones ignored.
        self.key = key or None
        #: Files found unreadable or tampered with during this run (reported once).
        self.problems: list[str] = []
        #: Keys whose records were passed over for their signature, and why.
        self.ignored: dict[str, str] = {}
        #: (area, shard) -> key -> record paths, listed once per run.
        self._listings: dict[tuple[str, str], dict[str, list[str]]] = {}
        #: Shards this run made sure exist.
        self._made: set[Path] = set()

    # -- setup --------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the layout and ``CACHEDIR.TAG``; raise :class:`StoreError` if impossible.

        A read-only store creates nothing: a missing store is simply empty."""
        blocker = self._blocker(self.directory)
        if blocker is not None:
            what = "it" if blocker == self.directory else str(blocker)
            raise StoreError(f"cannot use the vault at {self.directory}: {what} is not a directory")
        if self.readonly:
            return
        try:
            for path in (self.records, self.collections, self.objects, self.runs, self.tmp):
                self._mkdir(path)
            tag = self.directory / "CACHEDIR.TAG"
            if not os.path.lexists(tag):
                self._write(tag, CACHEDIR_TAG.encode())
        except StoreError as exc:
            raise StoreError(str(exc).replace("cannot write to", "cannot use", 1)) from exc

    @staticmethod
    def _blocker(path: Path) -> Path | None:
        """The first existing path at or above ``path`` if it is not a directory."""
        probe = path
        while not os.path.lexists(probe):
            if probe == probe.parent:
                return None
            probe = probe.parent
        return None if probe.is_dir() else probe

    # -- records ------------------------------------------------------------------
    def _shard(self, key: str, area: str) -> Path:
        return self.base / area / key[:2]

    def _listed(self, key: str, area: str) -> list[str]:
        """The record files of ``key``, from one listing of its shard per run.

        Records another process writes after the listing are not seen: a miss."""
        shard = (area, key[:2])
        listing = self._listings.get(shard)
        if listing is None:
            listing = self._listings[shard] = {}
            directory = self._shard(key, area)
            try:
                entries = list(os.scandir(directory))
            except NotADirectoryError:
                self._problem(directory, "a file where a directory of records should be")
                entries = []
            except OSError:
                entries = []
            for entry in entries:
                listing.setdefault(entry.name.partition(".")[0], []).append(entry.path)
        return listing.setdefault(key, [])

    def candidates(self, key: str, area: str = RESULTS) -> Iterator[Candidate]:
        """Stored records of ``key``, in the order they are to be tried (see the module
        docstring); bad files are skipped, and in ``records`` end the list.

        Plain ``os`` calls on strings, and no ordering ``stat`` when there is one
        candidate (the common case) or when names give the order."""
        listed = self._listed(key, area)
        if len(listed) == 1:
            paths = listed
        elif area == RESULTS:
            paths = _newest_made_first(listed)
        else:
            paths = self._by_use(listed)
        for index, path in enumerate(paths[: MAX_CANDIDATES[area]]):
            found = self._read_record(path, key, area)
            if found.payload is not None:
                yield Candidate(path, found.payload, found.used_ns, _name_of(path))
            elif area == RESULTS and found.status != "missing":
                if found.status == "bad":  # removed: the older results must not show through
                    for older in paths[index + 1 :]:
                        self._clear(older)
                return

    @staticmethod
    def _by_use(paths: list[str]) -> list[str]:
        """``paths`` most recently used first; those gone meanwhile are left out."""
        stamped = []
        for path in paths:
            try:
                stamped.append((os.lstat(path).st_mtime_ns, path))
            except OSError:
                continue
        return [path for _, path in sorted(stamped, reverse=True)]

    def _read_record(self, path: str | Path, key: str, area: str) -> ReadRecord:
        """A record file, checked against its checksum (and signature) before parsing.

        The file is ``{"schema":N,"checksum":"…"[,"hmac":"…"],"payload":BODY}``, gzip-
        compressed, with BODY the exact bytes the checksum was taken of, so checking
        needs no re-serialization."""
        try:
            packed, used_ns = _read_file(path)
        except FileNotFoundError:
            return ReadRecord("missing")  # collected by gc meanwhile
        except OSError as exc:
            what = "not a regular file where a record should be" if _not_a_file(exc) else "unreadable record"
            self._problem(path, what)
            return ReadRecord("bad")
        try:
            data = _unpack(packed)
        except ValueError:
            self._problem(path, "record that is not gzip-compressed JSON")
            return ReadRecord("bad")
        header = _RECORD_HEADER.match(data)
        schema = _SCHEMA_PREFIX.match(data)
        if schema is not None and int(schema["schema"]) > SCHEMA:
            self._problem(
                path,
                f"record written by a newer pytest-cachevault (schema {int(schema['schema'])}), left in place",
                remove=False,
            )
            return ReadRecord("newer")
        if header is None or int(header["schema"]) != SCHEMA:
            self._problem(path, "record of an unknown schema or layout")
            return ReadRecord("bad")
        body = data[header.end() : -1]
        if data[-1:] != b"}" or digest_bytes(body) != header["checksum"].decode():
            self._problem(path, "record whose checksum does not match")
            return ReadRecord("bad")
        if self.key is not None:
            signature = header["hmac"]
            if signature is None:
                return self._ignore(key, UNSIGNED)
            if not hmac.compare_digest(signature.decode(), self._signature(area, key, _name_of(path), body)):
                return self._ignore(key, BADLY_SIGNED)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            self._problem(path, "unreadable record")
            return ReadRecord("bad")
        return ReadRecord("ok", payload, used_ns)

    def _signature(self, area: str, key: str, name: str, body: bytes) -> str:
        """HMAC-SHA256 over the schema, the record's area, key and name, and its payload.

        The key binds a record to its test (or test module) and environment: a signed
        record copied under another key or into the other area does not verify there.
        The name stands for its inputs (a run checks each name's inputs once): a signed
        record renamed does not verify either."""
        assert self.key is not None
        message = b"pytest-cachevault record %d\0%s\0%s\0%s\0" % (
            SCHEMA, area.encode(), key.encode(), name.encode()) + body
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def _ignore(self, key: str, why: str) -> ReadRecord:
        self.ignored.setdefault(key, why)
        self._note(_IGNORED_WARNINGS[why])
        return ReadRecord("unsigned" if why == UNSIGNED else "badly signed")

    def put_record(self, key: str, name: str | None, payload: dict, area: str = RESULTS) -> Path:
        """Store ``payload`` as the record ``name`` of ``key``, replacing one of that name.

        In ``collections`` callers name a record by its inputs, so that recording a
        module again with the same inputs refreshes its record instead of adding one. In
        ``records`` they pass None, and the store names it by when it is made."""
        if not is_name(key) or not (name is None or is_name(name)):
            raise ValueError("record keys and names are hex digests")
        directory = self._shard(key, area)
        body = _canonical(payload)
        if name is None:
            name = sequence_name(self._listed(key, area), body)
        path = directory / f"{key}.{name}{SUFFIX}"
        if self.readonly:
            return path
        signature = b',"hmac":"%s"' % self._signature(area, key, name, body).encode() if self.key else b""
        data = _pack(b'{"schema":%d,"checksum":"%s"%s,"payload":%s}' % (
            SCHEMA, digest_bytes(body).encode(), signature, body,
        ))
        if directory not in self._made:  # once per run: a shard removed later is made again by _write
            self._mkdir(directory)
            self._made.add(directory)
        self._write(path, data)
        listed = self._listed(key, area)
        if str(path) not in listed:
            listed.append(str(path))
            self._trim(listed, area)
        return path

    def remove_record(self, key: str, path: str | Path, area: str = RESULTS) -> None:
        """Remove a record of ``key`` this run wrote and has since superseded."""
        listed = self._listed(key, area)
        if str(path) in listed:
            listed.remove(str(path))
            self.remove(Path(path))

    def _trim(self, listed: list[str], area: str) -> None:
        """Keep at most :data:`MAX_CANDIDATES` records per key: the newest made, or
        the most recently used."""
        limit = MAX_CANDIDATES[area]
        if len(listed) <= limit:
            return
        ordered = _newest_made_first(listed) if area == RESULTS else self._by_use(listed)
        for path in ordered[limit:]:
            self._clear(path)
        listed[:] = ordered[:limit]

    def keep_record(self, key: str, name: str, area: str = RESULTS) -> bool:
        """If a sound record ``name`` of ``key`` is stored (and signed, with a key), mark
        it used and say so: then it need not be written again."""
        path = str(self._shard(key, area) / f"{key}.{name}{SUFFIX}")
        if path not in self._listed(key, area) or self._read_record(path, key, area).payload is None:
            return False
        self._touch(path)
        return True

    def touch(self, candidate: Candidate) -> None:
        """Mark a record as just used (LRU order for garbage collection); one used
        within the last :data:`TOUCH_INTERVAL_NS` is left alone, which spares a warm
        run one write per test."""
        if time.time_ns() - candidate.used_ns >= TOUCH_INTERVAL_NS:
            self._touch(candidate.path)

    def _touch(self, path: str) -> None:
        if self.readonly:
            return
        try:
            os.utime(path, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass

    # -- objects ------------------------------------------------------------------
    def _object_path(self, name: str) -> Path:
        return self.objects / name[:2] / f"{name}{SUFFIX}"

    def put_object(self, value: object) -> str:
        """Store ``value`` (JSON-able) once; return its name, the digest of its bytes."""
        body = _canonical(value)
        name = digest_bytes(body)
        if self.readonly:
            return name
        path = self._object_path(name)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISREG(mode):
            try:
                os.utime(path)  # in use again: not garbage for a collector running now
                return name
            except OSError:
                pass
        elif mode is not None:
            self._problem(path, "not a regular file where an object should be")
        self._mkdir(path.parent)
        self._write(path, _pack(body))
        return name

    def get_object(self, name: str) -> object | None:
        """The object called ``name``, or None if absent, unreadable or not matching its name."""
        if not is_name(name):
            return None
        path = self._object_path(name)
        try:
            body = _unpack(_read_file(path)[0])
        except FileNotFoundError:
            return None
        except OSError as exc:
            what = "not a regular file where an object should be" if _not_a_file(exc) else "unreadable object"
            self._problem(path, what)
            return None
        except ValueError:
            self._problem(path, "object that is not gzip-compressed JSON")
            return None
        if digest_bytes(body) != name:
            self._problem(path, "object whose content does not match its name")
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            self._problem(path, "unreadable object")
            return None

    # -- scratch space ---------------------------------------------------------------
    def scratch(self) -> Path:
        """A new empty directory under ``tmp/`` for helpers of this run to write into;
        its owner removes it, garbage collection if it is left behind."""
        if self.readonly:
            raise StoreError(f"the vault at {self.directory} is read-only")
        path = self.tmp / f"{uuid.uuid4().hex}.d"
        self._mkdir(path)
        return path

    # -- run summaries --------------------------------------------------------------
    def put_run(self, counts: dict[str, int]) -> None:
        """Remember the counts of a finished run; keep the newest :data:`MAX_RUNS`."""
        if self.readonly:
            return
        body = _canonical({"schema": SCHEMA, "finished": int(time.time()), **counts})
        self._mkdir(self.runs)
        self._write(self.runs / f"{time.time_ns() // 1_000_000}-{uuid.uuid4().hex[:8]}.json", body)
        for entry in sorted(_scandir(self.runs), key=lambda e: e.name)[:-MAX_RUNS]:
            self._clear(entry.path)

    def recent_runs(self) -> list[dict[str, int]]:
        """The run summaries kept, oldest first; malformed ones are skipped."""
        runs = []
        for entry in sorted(_scandir(self.runs), key=lambda e: e.name):
            try:
                value = json.loads(_read_file(entry.path, 4096)[0])
            except (OSError, ValueError, RecursionError):
                continue
            if isinstance(value, dict) and value.get("schema") == SCHEMA and all(
                isinstance(v, int) for v in value.values()
            ):
                runs.append(value)
        return runs

    # -- listing, for garbage collection -----------------------------------------
    def old_layouts(self) -> list[Path]:
        """The directories of earlier layouts (``v2``, ``v3``...) in the store: what
        earlier versions of the plugin wrote, and may still be using."""
        current = int(LAYOUT[1:])
        return sorted(
            Path(entry.path) for entry in _scandirs(self.directory)
            if (found := _LAYOUT_NAME.fullmatch(entry.name)) and int(found["number"]) < current
        )

    def iter_records(self, area: str = RESULTS) -> Iterator[tuple[Path, os.stat_result]]:
        for shard in _scandirs(self.base / area):
            for entry in _scandir(Path(shard.path)):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    self._problem(entry.path, "not a regular file where a record should be")
                    continue
                yield Path(entry.path), st

    def iter_objects(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        for shard in _scandirs(self.objects):
            for entry in _scandir(Path(shard.path)):
                name = entry.name.removesuffix(SUFFIX)
                try:
                    yield name, Path(entry.path), entry.stat(follow_symlinks=False)
                except OSError:
                    continue

    def iter_runs(self) -> Iterator[tuple[Path, os.stat_result]]:
        return self._files_in(self.runs)

    def iter_tmp(self) -> Iterator[tuple[Path, os.stat_result]]:
        return self._files_in(self.tmp)

    def _files_in(self, directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
        for entry in _scandir(directory):
            try:
                yield Path(entry.path), entry.stat(follow_symlinks=False)
            except OSError:
                continue

    def read_record(self, path: Path) -> ReadRecord:
        """A record file found by :meth:`iter_records`."""
        key, _ = record_key_and_name(path)
        return self._read_record(path, key, path.parent.parent.name)

    def remove(self, path: Path) -> None:
        """Delete a file of the store."""
        if self.readonly:
            return
        self._clear(path)

    # -- low level ----------------------------------------------------------------
    def _note(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def _problem(self, path: str | Path, what: str, remove: bool = True) -> None:
        """Report a bad file once and remove it (a read-only store only reports)."""
        path = Path(path)
        self._note(f"{what}: {path.relative_to(self.directory).as_posix()}")
        if remove:
            self._clear(path)

    def _clear(self, path: str | Path) -> None:
        """Remove whatever is at ``path`` in the store: a file, a link, a directory tree."""
        if self.readonly:
            return
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass

    def _mkdir(self, path: Path) -> None:
        """Make ``path`` a directory, removing a file of the store that stands in the way."""
        if self.readonly:
            return
        for attempt in range(2):
            try:
                path.mkdir(parents=True, exist_ok=True)
                return
            except (FileExistsError, NotADirectoryError) as exc:
                obstacle = self._obstacle(path)
                if obstacle is None or attempt:
                    raise self._cannot_write(exc) from exc
                self._problem(obstacle, "a file where a directory should be")
            except OSError as exc:
                raise self._cannot_write(exc) from exc

    def _obstacle(self, path: Path) -> Path | None:
        """The file inside the store (not the store itself) that blocks making ``path``."""
        try:
            parts = path.relative_to(self.directory).parts
        except ValueError:
            return None
        probe = self.directory
        for part in parts:
            probe = probe / part
            if os.path.islink(probe) or (os.path.lexists(probe) and not probe.is_dir()):
                return probe
        return None

    def _cannot_write(self, exc: OSError) -> StoreError:
        return StoreError(f"cannot write to the vault at {self.directory}: {_reason(exc)}")

    def _write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to a temp file and rename it to ``path``.

        A directory that vanished meanwhile (someone removed a shard or ``tmp/``) is
        made again; a directory standing where the file
        goes is removed. Any other failure (full disk, read-only) is a StoreError."""
        if self.readonly:
            return
        for attempt in range(3):
            last = attempt == 2
            tmp = self.tmp / f"{uuid.uuid4().hex}.tmp"
            try:
                _write_file(str(tmp), data)
            except (FileNotFoundError, NotADirectoryError) as exc:
                _unlink(tmp)
                if last:
                    raise self._cannot_write(exc) from exc
                self._mkdir(self.tmp)
                continue
            except OSError as exc:
                _unlink(tmp)
                raise self._cannot_write(exc) from exc
            try:
                os.replace(tmp, path)
                return
            except (FileNotFoundError, NotADirectoryError) as exc:
                _unlink(tmp)
                if last:
                    raise self._cannot_write(exc) from exc
                self._mkdir(path.parent)
            except OSError as exc:
                _unlink(tmp)
                if last or exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise self._cannot_write(exc) from exc
                self._problem(path, "a directory where a file should be")


def sequence_name(listed: list[str], body: bytes) -> str:
    """A name for a new record among ``listed`` that sorts after theirs: the time in
    nanoseconds (later than the newest listed even if this machine's clock is behind
    the one that wrote it) then a digest of the content, all hex."""
    newest = max((_stamp(path) for path in listed), default=-1)
    return f"{max(time.time_ns(), newest + 1):016x}{digest_bytes(body)[:32]}"


def made_order(path: str | Path) -> tuple[int, str]:
    """Sorts a key's result files in the order they were made (a name that is not a
    :func:`sequence_name` sorts as the oldest)."""
    return _stamp(str(path)), str(path)


def _newest_made_first(paths: list[str]) -> list[str]:
    return sorted(paths, key=made_order, reverse=True)


def _stamp(path: str) -> int:
    name = _name_of(path)
    try:
        return int(name[:16], 16) if len(name) == 48 else -1
    except ValueError:
        return -1


def record_key_and_name(path: str | Path) -> tuple[str, str]:
    """The key and the name a record file is stored under (``<key>.<name>.json.gz``)."""
    key, _, rest = os.path.basename(path).partition(".")
    return key, rest.removesuffix(SUFFIX)


def _name_of(path: str | Path) -> str:
    """A record file's name if it is a digest (as :meth:`Store.put_record` names them), else ""."""
    name = record_key_and_name(path)[1]
    return name if is_name(name) else ""


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
