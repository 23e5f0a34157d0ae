"""Collection skipping: test modules that are not imported, their tests replayed.

Importing and collecting the test modules is most of what a run that replays every
test costs. A *collection record* keeps what one test module held (the node ids,
names, locations, marks and keywords of its tests) under the inputs that shaped it
(the module's text, its conftests, what its import ran, read and listed, and the
shared import state). When those are unchanged and every test it held would replay
or never ran (deselected until now), the module is not imported: a
:class:`StoredModule` stands in for it and yields one :class:`StoredItem` per test
(inside a :class:`StoredClass` per test class), which is only ever replayed
(pytest's own ``--lf`` skips files the same way). ``-m`` and ``-k`` select among
stand-ins as among the real tests: they see the same marks and names. Should a
stored item fail to replay after all (a live test changed a file it reads, or a
test that never ran is selected), :func:`realize` collects the real module then.
"""

from __future__ import annotations

import contextlib
import gc as python_gc
import itertools
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from . import fingerprint

#: Marks whose arguments pytest consumes while collecting: a stand-in keeps the name
#: (``-m parametrize`` selects) but not the values.
_CONSUMED_MARKS = frozenset({"parametrize"})


def collection_key(environment_id: str, relpath: str) -> str:
    """The store key of a test module's collection (a NUL never occurs in a node id)."""
    return fingerprint.key_of(environment_id, f"\0collection\0{relpath}")


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back, or its ``repr`` where JSON has no form."""
    return json.loads(json.dumps(value, default=repr))


class Shape(NamedTuple):
    """What ``-m`` and ``-k`` look at on a test, taken when it is collected (before any
    ``pytest_collection_modifyitems``, which a stand-in goes through like the real test)."""

    marks: list[pytest.Mark]
    #: Names ``-k`` matches beyond those of the test and its classes: extra keywords,
    #: attributes of the test function.
    words: list[str]


def shape(module: pytest.Collector, item: pytest.Item) -> Shape:
    chain = item.listchain()
    inner = chain[chain.index(module) + 1 :] if module in chain else [item]
    words: set[str] = set()
    for node in (module, *inner):  # the stand-in module has none of the real one's
        words.update(node.extra_keyword_matches)
    words.update(getattr(getattr(item, "function", None), "__dict__", ()))
    return Shape(list(item.iter_markers()), sorted(words))


def _parts(suffix: str) -> list[str]:
    """The names in a node id after the module's (``TestX::test_y[a::b]`` → class,
    test); a parameter id may hold ``::`` itself."""
    head, bracket, params = suffix.partition("[")
    parts = head.split("::")
    parts[-1] += bracket + params
    return parts


def stored_items(module: pytest.Collector, items: list[tuple[pytest.Item, Shape]]) -> dict | None:
    """What a collection record keeps of ``module``'s tests, or None if it cannot stand in.

    Only test functions (unittest methods included) can: their node ids extend the
    module's and their locations are under the rootdir. Each test is ``[node id
    suffix, line, shape]`` (plus its name if its node id does not end with it, and its
    whole location if not in the module under its dotted suffix): a shape (marks and
    words) is written once in ``shapes`` for all the tests that have it."""
    prefix = module.nodeid + "::"
    stored = []
    #: Each distinct shape, by its JSON text, and its index in ``shapes``.
    indexes: dict[str, int] = {}
    shapes: list = []
    for item, (marks, words) in items:
        location = item.location
        if (
            not isinstance(item, pytest.Function)
            or not item.nodeid.startswith(prefix)
            or location[0].startswith(("/", ".."))
        ):
            return None
        stored_marks = [
            [mark.name, [], {}] if mark.name in _CONSUMED_MARKS
            else [mark.name, _jsonable(list(mark.args)), _jsonable(mark.kwargs)]
            for mark in marks
        ]
        shape = [stored_marks, words]
        index = indexes.setdefault(json.dumps(shape), len(shapes))
        if index == len(shapes):
            shapes.append(shape)
        suffix = item.nodeid[len(prefix) :]
        parts = _parts(suffix)
        usual = location[0] == module.nodeid and location[2] == ".".join(parts)
        entry = [suffix, location[1] if usual else list(location), index]
        if item.name != parts[-1]:
            entry.append(item.name)
        stored.append(entry)
    return {"items": stored, "shapes": shapes}


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


def _ends_with(suffix: str, name: str) -> bool:
    """Whether the node id part ``suffix`` names no empty class and ends with ``name``."""
    parts = _parts(suffix)
    return all(parts) and parts[-1] == name


def _is_shape(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], list)
        and all(_is_mark(mark) for mark in value[0])
        and isinstance(value[1], list)
        and all(isinstance(word, str) for word in value[1])
    )


def valid_items(payload: dict) -> list | None:
    """A collection record's tests as ``[suffix, name, location, marks, words]``, if the
    record has the shape :func:`stored_items` gives (the store is untrusted)."""
    items, shapes, module = payload.get("items"), payload.get("shapes"), payload.get("nodeid")
    if not (isinstance(items, list) and items and isinstance(shapes, list) and isinstance(module, str)
            and all(_is_shape(shape) for shape in shapes)):
        return None
    expanded = []
    for entry in items:
        if not (isinstance(entry, list) and len(entry) in (3, 4) and isinstance(entry[0], str)):
            return None
        suffix, location, shape = entry[:3]
        parts = _parts(suffix)
        name = entry[3] if len(entry) == 4 else parts[-1]
        if location is None or type(location) is int:
            location = [module, location, ".".join(parts)]
        if not (isinstance(name, str) and _ends_with(suffix, name) and _is_location(location)
                and type(shape) is int and 0 <= shape < len(shapes)):
            return None
        expanded.append([suffix, name, location, *shapes[shape]])
    return expanded


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector, off while the plugin does its own work: it
    builds stand-ins, and stores what a live test did or what a module held.

    That runs no test code, yet it makes many objects, some of which (stand-ins) live
    as long as the session, and each full collection the collector starts meanwhile
    traverses all the session made before: a warm run of packaging ran 6 of them while
    it built stand-ins (1.3 s of 10). Paused there, the collector catches up afterwards
    in one collection where it would have run several. A collector someone else
    switched off stays off."""
    if not python_gc.isenabled():
        yield
        return
    python_gc.disable()
    try:
        yield
    finally:
        python_gc.enable()


class StoredItem(pytest.Item):
    """A test of a module that was not imported: it has the node id, name, location,
    marks and keywords of the real test, and is replayed from the store; it never runs."""

    def __init__(self, *, location: list, marks: list[pytest.MarkDecorator], words: list[str],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stored_location = location
        # What ``Item.location`` would compute from ``reportinfo``, at a cost per test.
        self.location = (location[0], location[1], location[2])
        for mark in marks:
            self.add_marker(mark)
        self.extra_keyword_matches.update(words)
        self.keywords.update(dict.fromkeys(words, True))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        relpath, lineno, domain = self._stored_location
        return self.config.rootpath / relpath, lineno, domain

    def runtest(self) -> None:
        raise RuntimeError(
            "pytest-cachevault: a test of a module that was not imported reached runtest; "
            "run with --vault-bypass and please report this"
        )


class _StoredCollector(pytest.Collector):
    """Yields stand-ins for ``stored`` entries (tests ``depth`` names below the module):
    a :class:`StoredItem` for each test at this depth, a :class:`StoredClass` for each
    run of tests inside one class, in the stored order."""

    def __init__(self, *, stored: list, depth: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stored = stored
        self._depth = depth

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        depth = self._depth
        children: list[pytest.Item | pytest.Collector] = []
        decorators: dict[str, pytest.MarkDecorator] = {}

        def enclosing(entry: list) -> str | None:
            """The class at this depth that holds the test, None if it is at this depth."""
            parts = _parts(entry[0])
            return parts[depth] if len(parts) > depth + 1 else None

        with collector_paused(), warnings.catch_warnings():  # marks only a plugin registers, at run time
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            for class_name, group in itertools.groupby(self._stored, enclosing):
                if class_name is not None:
                    children.append(StoredClass.from_parent(
                        self, name=class_name, stored=list(group), depth=depth + 1
                    ))
                    continue
                for _, name, location, marks, words in group:
                    decorated = []
                    for mark_name, args, mark_kwargs in marks:
                        if mark_name not in decorators:
                            decorators[mark_name] = getattr(pytest.mark, mark_name)
                        decorated.append(decorators[mark_name].with_args(*args, **mark_kwargs))
                    children.append(StoredItem.from_parent(
                        self, name=name, location=location, marks=decorated, words=words
                    ))
        return children


class StoredClass(_StoredCollector):
    """Stands in for a test class of a module that was not imported."""


class StoredModule(_StoredCollector, pytest.File):
    """Stands in for a test module whose collection is stored."""

    def __init__(self, *, stored: list, **kwargs: Any) -> None:
        super().__init__(stored=stored, **kwargs)
        #: The real tests by node id, once :func:`realize` collected them.
        self.real: dict[str, pytest.Item] | None = None

    def node_ids(self) -> list[str]:
        return [f"{self.nodeid}::{suffix}" for suffix, *_ in self._stored]


def realize(stand_in: StoredItem) -> pytest.Item | None:
    """The real test ``stand_in`` stands for, its module imported and collected now
    (once per module; reports and errors go through pytest's hooks as in any collection)."""
    module = stand_in.getparent(StoredModule)
    assert module is not None
    if module.real is None:
        real_module = pytest.Module.from_parent(module.parent, path=module.path)
        module.real = {item.nodeid: item for item in module.session.genitems(real_module)}
    return module.real.get(stand_in.nodeid)
