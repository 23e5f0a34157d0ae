"""Collection skipping: test modules that are not imported, their tests replayed.

Importing and collecting the test modules is most of what a run that replays every
test costs. A *collection record* keeps what one test module held (the node ids, the
locations and the marks of its tests) under the inputs that shaped it (the module's
text, its conftests, what its import ran, read and listed, and the shared import
state). When those are unchanged and every test it held would replay, the module is
not imported: a :class:`StoredModule` stands in for it and yields one
:class:`StoredItem` per test, which is only ever replayed (pytest's own ``--lf``
skips files the same way). Should a stored item fail to replay after all (a live
test changed a file it reads), :func:`realize` collects the real module then.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from . import fingerprint

#: Marks pytest consumes while collecting: their arguments are values, not settings.
_CONSUMED_MARKS = frozenset({"parametrize"})


def collection_key(environment_id: str, relpath: str) -> str:
    """The store key of a test module's collection (a NUL never occurs in a node id)."""
    return fingerprint.key_of(environment_id, f"\0collection\0{relpath}")


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back, or its ``repr`` where JSON has no form."""
    return json.loads(json.dumps(value, default=repr))


def stored_items(module: pytest.Collector, items: list[pytest.Item]) -> list | None:
    """What a collection record keeps of ``module``'s tests, or None if it cannot stand in.

    Only test functions (unittest methods included) can: their node ids extend the
    module's and their locations are under the rootdir."""
    prefix = module.nodeid + "::"
    stored = []
    for item in items:
        location = item.location
        if (
            not isinstance(item, pytest.Function)
            or not item.nodeid.startswith(prefix)
            or location[0].startswith(("/", ".."))
        ):
            return None
        marks = [
            [mark.name, _jsonable(list(mark.args)), _jsonable(mark.kwargs)]
            for mark in item.iter_markers()
            if mark.name not in _CONSUMED_MARKS
        ]
        stored.append([item.nodeid[len(prefix) :], [location[0], location[1], location[2]], marks])
    return stored


def _is_location(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and not value[0].startswith(("/", ".."))
        and (value[1] is None or type(value[1]) is int)
        and isinstance(value[2], str)
    )


def _is_mark(value: object) -> bool:
    """A stored mark; its name one ``pytest.mark`` gives a decorator for (not ``''``,
    ``_x`` nor ``__class__``, which would fail the collection)."""
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and value[0].isidentifier()
        and not value[0].startswith("_")
        and isinstance(value[1], list)
        and isinstance(value[2], dict)
    )


def valid_items(value: object) -> list | None:
    """A record's items if they have the shape :func:`stored_items` gives (the store is untrusted)."""
    if not isinstance(value, list) or not value:
        return None
    for entry in value:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and entry[0]
            and _is_location(entry[1])
            and isinstance(entry[2], list)
            and all(_is_mark(mark) for mark in entry[2])
        ):
            return None
    return value


class StoredItem(pytest.Item):
    """A test of a module that was not imported: it has a node id, a location and marks,
    and is replayed from the store; it never runs."""

    def __init__(self, *, location: list, marks: list, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stored_location = location
        with warnings.catch_warnings():  # marks only a plugin registers, at run time
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            for name, args, mark_kwargs in marks:
                self.add_marker(getattr(pytest.mark, name).with_args(*args, **mark_kwargs))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        relpath, lineno, domain = self._stored_location
        return self.config.rootpath / relpath, lineno, domain

    def runtest(self) -> None:
        raise RuntimeError(
            "pytest-cachevault: a test of a module that was not imported reached runtest; "
            "run with --vault-bypass and please report this"
        )


class StoredModule(pytest.File):
    """Stands in for a test module whose collection is stored; yields :class:`StoredItem`."""

    def __init__(self, *, stored: list, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stored = stored
        #: The real tests by node id, once :func:`realize` collected them.
        self.real: dict[str, pytest.Item] | None = None

    def node_ids(self) -> list[str]:
        return [f"{self.nodeid}::{name}" for name, _, _ in self._stored]

    def collect(self) -> list[StoredItem]:
        return [
            StoredItem.from_parent(self, name=name, location=location, marks=marks)
            for name, location, marks in self._stored
        ]


def realize(stand_in: StoredItem) -> pytest.Item | None:
    """The real test ``stand_in`` stands for, its module imported and collected now
    (once per module; reports and errors go through pytest's hooks as in any collection)."""
    module = stand_in.parent
    assert isinstance(module, StoredModule)
    if module.real is None:
        real_module = pytest.Module.from_parent(module.parent, path=module.path)
        module.real = {item.nodeid: item for item in module.session.genitems(real_module)}
    return module.real.get(stand_in.nodeid)
