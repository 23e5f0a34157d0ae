"""The marking tracer's code (Python 3.10 and 3.11), kept between runs beside Python's bytecode.

Marking a module means parsing it, adding the marks and compiling it again: on jinja2
that was a tenth of a warm run, paid at every run for every in-tree module. Like
pytest's rewritten test modules, the marked code is kept in ``__pycache__`` under a
name Python's own import never reads (``<module>.<cache tag>-cachevault.pyc``), and
only a run of the vault loads it.

A kept file is used only for the same source bytes at the same path, marked by the
same marker code on the same Python: all of them make its key. It also carries a
digest of its own content, so a file cut short or edited is compiled again, never
half-used. It is local to the checkout, as Python's bytecode is, and never shared
through the store: loading marshalled code runs it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import marshal
import os
import sys
from types import CodeType

from .hashing import digest_bytes

_MAGIC = b"pytest-cachevault marked code\n"
_TAIL = "-cachevault.pyc"


class Marked:
    """Code compiled with marks: the builtins name its marks are stored through, and
    whose each mark is (the qualified name of a function, None for the module's)."""

    __slots__ = ("code", "name", "owners")

    def __init__(self, code: CodeType, name: str, owners: list[str | None]) -> None:
        self.code = code
        self.name = name
        self.owners = owners


def load(path: str, source: bytes) -> Marked | None:
    """The marked code kept for ``source`` at ``path``, or None."""
    kept = _kept_path(path)
    key = _key(path, source)
    if kept is None or key is None:
        return None
    try:
        with open(kept, "rb") as f:
            data = f.read()
    except OSError:
        return None
    header = _MAGIC + key.encode() + b"\n"
    if not data.startswith(header):
        return None
    checksum, _, rest = data[len(header):].partition(b"\n")
    if checksum != digest_bytes(rest).encode():
        return None
    about, _, body = rest.partition(b"\n")
    try:
        owners = json.loads(about)
        code = marshal.loads(body)
    except (ValueError, EOFError, TypeError):
        return None
    if (
        not isinstance(code, CodeType)
        or not isinstance(owners, list)
        or not all(owner is None or isinstance(owner, str) for owner in owners)
    ):
        return None
    return Marked(code, marks_name(path, source), owners)


def save(path: str, source: bytes, marked: Marked) -> None:
    """Keep ``marked`` (compiled with :func:`marks_name`) for the next run, if Python
    may write bytecode there. Its name is not kept: it follows from path and source."""
    kept = _kept_path(path)
    key = _key(path, source)
    if kept is None or key is None or sys.dont_write_bytecode:
        return
    rest = json.dumps(marked.owners).encode() + b"\n" + marshal.dumps(marked.code)
    data = b"".join([_MAGIC, key.encode(), b"\n", digest_bytes(rest).encode(), b"\n", rest])
    temporary = f"{kept}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, kept)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def marks_name(path: str, source: bytes) -> str:
    """The builtins name the marks of ``source`` at ``path`` go through: the same for
    the same module, so marked code does not depend on what was imported before it."""
    return "__cachevault_" + digest_bytes(path.encode() + b"\0" + source)[:20] + "__"


def _kept_path(path: str) -> str | None:
    try:
        pyc = importlib.util.cache_from_source(path)
    except (NotImplementedError, ValueError):
        return None
    return pyc[: -len(".pyc")] + _TAIL


def _key(path: str, source: bytes) -> str | None:
    marker = _marker_digest()
    if marker is None:
        return None
    return digest_bytes(b"\0".join([marker.encode(), path.encode(), source]))


@functools.cache
def _marker_digest() -> str | None:
    """Of the code that marks (this package's tracer and the walk it shares with the
    digests) and of the Python that compiles: a change to either compiles again. None
    if that code cannot be read (then nothing is kept)."""
    parts = [importlib.util.MAGIC_NUMBER, sys.version.encode()]
    try:
        for module in ("trace.py", "hashing.py", "marked_code.py"):
            with open(os.path.join(os.path.dirname(__file__), module), "rb") as f:
                parts.append(f.read())
    except OSError:
        return None
    return digest_bytes(b"\0".join(parts))
