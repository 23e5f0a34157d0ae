"""Fixtures of the store's unit tests."""

from __future__ import annotations

import pytest

from pytest_cachevault.store import Store


@pytest.fixture
def store(tmp_path):
    """An empty store, laid out and ready, in this test's temporary directory."""
    store = Store(tmp_path / "vault")
    store.ensure()
    return store
