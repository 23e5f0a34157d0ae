"""Unit tests of reading what library modules hold (``Dependencies.module_state``): the
session compares it before and after each test to learn which tests left state behind."""

from __future__ import annotations

import collections
import gc
import sys
import types
import weakref

import pytest

from pytest_cachevault.hashing import Hasher
from pytest_cachevault.inputs import Dependencies


class Thing:
    pass


@pytest.fixture
def tree(tmp_path):
    """A rootdir with a library module ``lib/zones.py`` and a test module, both in
    ``sys.modules`` while the test runs; returns (Dependencies, lib module, test module)."""
    (tmp_path / "lib").mkdir()
    made = {}
    for name, relpath in (("lib_zones_for_state", "lib/zones.py"), ("test_zones_for_state", "test_zones.py")):
        path = tmp_path / relpath
        path.write_text("")
        module = types.ModuleType(name)
        module.__file__ = str(path)
        made[name] = module
    deps = Dependencies(tmp_path, Hasher(tmp_path), ())
    deps.test_modules.add("test_zones.py")
    sys.modules.update(made)
    yield deps, made["lib_zones_for_state"], made["test_zones_for_state"]
    for name in made:
        del sys.modules[name]


@pytest.mark.parametrize(
    "change",
    [
        "add to a dict", "replace a value in a dict", "replace a key of a dict, same size",
        "append to a list", "replace an item of a list", "add to a set", "clear a deque",
        "add to an OrderedDict", "rebind a global", "add a global",
        "add to a class attribute", "add to an instance attribute", "add to a closure's dict",
    ],
)
def test_a_change_to_what_a_library_module_holds_is_seen(tree, change):
    deps, lib, _ = tree
    lib.TABLE = {"a": Thing(), "b": Thing()}
    lib.ORDER = [Thing(), Thing()]
    lib.SEEN = {"x"}
    lib.QUEUE = collections.deque([1, 2])
    lib.LRU = collections.OrderedDict(a=1)
    lib.DEFAULT = Thing()

    class Registry:
        entries: dict = {}

    Registry.__module__ = lib.__name__
    lib.Registry = Registry
    lib.getter = Thing()
    lib.getter.seen = {}

    def outer():
        cache = {}

        def get(key):
            return cache.setdefault(key, key)

        return get

    lib.get = outer()
    before = deps.module_state()
    assert deps.module_state() == before  # reading changes nothing
    {
        "add to a dict": lambda: lib.TABLE.__setitem__("c", Thing()),
        "replace a value in a dict": lambda: lib.TABLE.__setitem__("a", Thing()),
        "replace a key of a dict, same size": lambda: (lib.TABLE.pop("a"), lib.TABLE.__setitem__("z", 1)),
        "append to a list": lambda: lib.ORDER.append(1),
        "replace an item of a list": lambda: lib.ORDER.__setitem__(0, Thing()),
        "add to a set": lambda: lib.SEEN.add("y"),
        "clear a deque": lambda: lib.QUEUE.clear(),
        "add to an OrderedDict": lambda: lib.LRU.__setitem__("b", 2),
        "rebind a global": lambda: setattr(lib, "DEFAULT", Thing()),
        "add a global": lambda: setattr(lib, "LATE", 1),
        "add to a class attribute": lambda: Registry.entries.__setitem__("k", 1),
        "add to an instance attribute": lambda: lib.getter.seen.__setitem__("k", 1),
        "add to a closure's dict": lambda: lib.get("k"),
    }[change]()
    assert deps.module_state() != before


def test_what_test_modules_hold_is_not_library_state(tree):
    deps, _, test_module = tree
    test_module.CACHE = {}
    before = deps.module_state()
    test_module.CACHE["k"] = 1
    test_module.OTHER = 2
    assert deps.module_state() == before


def test_a_container_two_modules_hold_is_read_once(tree):
    deps, lib, test_module = tree
    lib.TABLE = {"a": 1}
    alone = deps.module_state()
    deps.test_modules.clear()  # the second module is now library code too, holding the same dict
    test_module.TABLE = lib.TABLE
    deps.forget_module_state()
    shared = deps.module_state()
    assert len(shared.held) == len(alone.held)
    lib.TABLE["b"] = 2
    assert deps.module_state() != shared


def test_reading_keeps_nothing_alive(tree):
    """A cache's evicted entry must die when the test drops it (dateutil's tests of its
    weak zone cache check exactly that)."""
    deps, lib, _ = tree
    lib.STRONG = [Thing()]
    lib.WEAK = weakref.WeakValueDictionary()
    kept = Thing()
    lib.WEAK["k"] = kept
    deps.module_state()
    evicted = weakref.ref(lib.STRONG.pop())
    del kept
    gc.collect()
    assert evicted() is None
    assert len(lib.WEAK) == 0


def test_library_functions_leave_out_tests_conftests_and_outside_files(tree, tmp_path):
    deps, lib, test_module = tree
    (tmp_path / "conftest.py").write_text("")
    functions = {
        (lib.__file__, "load"),
        (test_module.__file__, "test_load"),
        (str(tmp_path / "conftest.py"), "fixture"),
        (sys.modules["json"].__file__, "dumps"),
        (str(tmp_path / "gone.py"), "f"),
    }
    assert deps.library_functions(functions) == {(lib.__file__, "load")}
