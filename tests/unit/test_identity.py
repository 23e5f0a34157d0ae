"""Unit tests of reading many objects' identities at once (``identity.identities``)."""

from __future__ import annotations

import gc
import platform
import sysconfig
import weakref

import pytest

from pytest_cachevault import identity


class Thing:
    pass


@pytest.fixture(params=["array", "one by one"])
def identities(request, monkeypatch):
    """``identities`` both ways: reading the list's array, and its fallback."""
    if request.param == "one by one":
        monkeypatch.setattr(identity, "_layout", False)
    return identity.identities


def test_the_same_objects_give_the_same_identities(identities):
    things = [Thing(), "text", 10**30, None, Thing()]
    assert identities(list(things)) == identities(things[:])
    assert identities([]) == identities([])


@pytest.mark.parametrize("where", [0, 2, 4])
def test_another_object_anywhere_gives_other_identities(identities, where):
    things = [Thing(), Thing(), Thing(), Thing(), Thing()]
    before = identities(things)
    things[where] = Thing()
    assert identities(things) != before


def test_order_and_length_count(identities):
    a, b = Thing(), Thing()
    assert identities([a, b]) != identities([b, a])
    assert identities([a]) != identities([a, a])


def test_equal_but_distinct_objects_differ(identities):
    first, second = [1.5], [1.5]
    assert identities([first]) != identities([second])


def test_nothing_is_kept_alive(identities):
    thing = Thing()
    seen = identities([thing])
    gone = weakref.ref(thing)
    del thing
    gc.collect()
    assert gone() is None
    assert seen  # still usable as a value


@pytest.mark.skipif(platform.python_implementation() != "CPython" or sysconfig.get_config_var("Py_GIL_DISABLED"),
                    reason="the list layout read is that of CPython's default build")
def test_cpython_lists_are_read_as_one_array():
    """If this fails after a Python upgrade, identities still work, one by one (slower):
    the layout check in ``identity._checked_layout`` needs a look."""
    identity.identities([object()])
    assert identity._layout not in (None, False)
    assert isinstance(identity.identities([object()]), bytes)
