"""Garbage collection of what earlier versions of the plugin wrote (older store layouts)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pytest_cachevault import gc
from pytest_cachevault.store import LAYOUT, Store

DAY = 86400.0


def old_layout(store: Store, name: str, age_days: float) -> Path:
    """A directory of layout ``name`` holding one file last used ``age_days`` ago."""
    path = store.directory / name / "records" / "ab" / "ab.cd.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 1000)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return store.directory / name


def test_an_older_layout_unused_for_the_age_limit_is_removed_and_reported(tmp_path):
    store = Store(tmp_path / "vault")
    store.ensure()
    v2, v3 = old_layout(store, "v2", 30), old_layout(store, "v3", 20)
    result = gc.collect(store, max_size=10**9, max_age=14 * DAY)
    assert not v2.exists() and not v3.exists()
    assert result.layouts_removed == ["v2", "v3"]
    assert result.bytes_removed >= 2000
    assert "removed the store of older versions (layout v2, v3)" in result.describe()
    assert (store.directory / LAYOUT).is_dir()


def test_an_older_layout_still_in_use_is_kept_and_reported(tmp_path):
    store = Store(tmp_path / "vault")
    store.ensure()
    v3 = old_layout(store, "v3", 1)
    result = gc.collect(store, max_size=10**9, max_age=14 * DAY)
    assert (v3 / "records" / "ab" / "ab.cd.json").exists()
    assert result.layouts_kept == ["v3"] and result.layouts_removed == []
    assert "kept the store of older versions (layout v3)" in result.describe()


def test_only_older_layout_directories_count(tmp_path):
    """The current layout, a newer one, other names and a link to a directory outside
    the store are none of gc's business here."""
    store = Store(tmp_path / "vault")
    store.ensure()
    outside = tmp_path / "outside"
    (outside / "records").mkdir(parents=True)
    (outside / "records" / "keep.json").write_text("keep me")
    long_ago = time.time() - 100 * DAY
    os.utime(outside / "records" / "keep.json", (long_ago, long_ago))
    (store.directory / "v1").symlink_to(outside, target_is_directory=True)
    newer = old_layout(store, f"v{int(LAYOUT[1:]) + 1}", 100)
    other = old_layout(store, "vendor", 100)
    assert store.old_layouts() == []
    result = gc.collect(store, max_size=10**9, max_age=14 * DAY)
    assert (outside / "records" / "keep.json").read_text() == "keep me"
    assert newer.is_dir() and other.is_dir()
    assert result.layouts_removed == [] and result.layouts_kept == []
