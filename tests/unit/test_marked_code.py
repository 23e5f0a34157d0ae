"""The 3.11 tracer's marked code kept in ``__pycache__``: used only for the very source
it was compiled from, at the same path; anything else is compiled again."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from pytest_cachevault import marked_code
from pytest_cachevault.marked_code import Marked

SOURCE = b"def double(x):\n    return x * 2\n"


def _marked(path: Path, source: bytes = SOURCE) -> Marked:
    code = compile(source, str(path), "exec")
    return Marked(code, marked_code.marks_name(str(path), source), [None, "double"])


def _kept_file(path: Path) -> Path:
    (found,) = (path.parent / "__pycache__").glob(f"{path.stem}.*-cachevault.pyc")
    return found


@pytest.fixture
def module(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "mod.py"
    path.write_bytes(SOURCE)
    return path


def test_kept_code_comes_back_whole(module):
    marked_code.save(str(module), SOURCE, _marked(module))
    loaded = marked_code.load(str(module), SOURCE)
    assert loaded is not None
    assert loaded.code == compile(SOURCE, str(module), "exec")
    assert loaded.name == marked_code.marks_name(str(module), SOURCE)
    assert loaded.owners == [None, "double"]


def test_python_never_loads_the_kept_file_as_bytecode(module):
    marked_code.save(str(module), SOURCE, _marked(module))
    kept = _kept_file(module)
    assert str(kept) != importlib.util.cache_from_source(str(module))
    assert kept.name.startswith(f"mod.{sys.implementation.cache_tag}")


def test_other_source_or_other_path_is_compiled_again(module, tmp_path):
    marked_code.save(str(module), SOURCE, _marked(module))
    assert marked_code.load(str(module), SOURCE.replace(b"* 2", b"* 3")) is None
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "__pycache__").mkdir()
    os.replace(_kept_file(module), moved / "__pycache__" / _kept_file_name(module))
    assert marked_code.load(str(moved / "mod.py"), SOURCE) is None


def _kept_file_name(module: Path) -> str:
    return f"mod.{sys.implementation.cache_tag}-cachevault.pyc"


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-7],  # cut short
        lambda data: data[:-20] + bytes([data[-20] ^ 1]) + data[-19:],  # a flipped bit
        lambda data: data.replace(b'"double"', b'"triple"'),
        lambda data: b"",
        lambda data: data.replace(b"marked code", b"marked cake"),
    ],
    ids=["cut", "flipped", "edited", "empty", "magic"],
)
def test_a_damaged_kept_file_is_compiled_again(module, damage):
    marked_code.save(str(module), SOURCE, _marked(module))
    kept = _kept_file(module)
    kept.write_bytes(damage(kept.read_bytes()))
    assert marked_code.load(str(module), SOURCE) is None


def test_kept_fields_of_the_wrong_type_are_not_used(module):
    """Even with a matching checksum: owners must be names or None."""
    marked_code.save(str(module), SOURCE, Marked(compile(SOURCE, str(module), "exec"), "__n__", [1, 2]))
    assert marked_code.load(str(module), SOURCE) is None


def test_the_name_marks_go_through_is_not_read_from_the_file(module):
    """It follows from path and source, so a kept file cannot bind any other name in
    builtins (``print``, say)."""
    marked_code.save(str(module), SOURCE, Marked(compile(SOURCE, str(module), "exec"), "print", [None]))
    loaded = marked_code.load(str(module), SOURCE)
    assert loaded is not None and loaded.name == marked_code.marks_name(str(module), SOURCE)
    assert loaded.name.startswith("__cachevault_")


def test_nothing_is_kept_when_python_keeps_no_bytecode(module, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    marked_code.save(str(module), SOURCE, _marked(module))
    assert not (module.parent / "__pycache__").exists()
    assert marked_code.load(str(module), SOURCE) is None


def test_a_directory_that_cannot_be_made_is_no_error(module):
    """Kept code is a saving, never a reason to fail: here ``__pycache__`` is a file."""
    (module.parent / "__pycache__").write_text("not a directory")
    marked_code.save(str(module), SOURCE, _marked(module))
    assert (module.parent / "__pycache__").read_text() == "not a directory"
    assert marked_code.load(str(module), SOURCE) is None
    assert set(os.listdir(module.parent)) == {"__pycache__", "mod.py"}  # no temporary file left


def test_a_module_an_earlier_tracer_marked_is_a_blind_spot_of_the_next(tmp_path, monkeypatch):
    """Its marks go to the earlier tracer's array, which the next one never harvests
    (two sessions in one process): its users must depend on it whole."""
    from pytest_cachevault.trace import MarkingTracer

    (tmp_path / "marked_once.py").write_bytes(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    first = MarkingTracer(tmp_path, ())
    first.start()
    try:
        importlib.import_module("marked_once")
    finally:
        first.stop()
    try:
        filename = str(tmp_path / "marked_once.py")
        assert filename not in first.blind_spots()
        assert filename in MarkingTracer(tmp_path, ()).blind_spots()
    finally:
        del sys.modules["marked_once"]
