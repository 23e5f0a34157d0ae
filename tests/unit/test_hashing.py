"""Unit tests of the digests: what changes them and what does not."""

from __future__ import annotations

from pytest_cachevault import hashing
from pytest_cachevault.hashing import Hasher, code_digest

MODULE = b'''"""Doc."""
LIMIT = 10


class Box:
    size = 3

    def grow(self, n=LIMIT):
        return self.size + n


@register
def compute():
    """Compute it."""
    return LIMIT * 2
'''


def edited(old: bytes, new: bytes) -> bytes:
    assert old in MODULE
    return MODULE.replace(old, new)


def test_code_digest_ignores_function_bodies():
    assert code_digest(edited(b"return LIMIT * 2", b"return LIMIT * 3")) == code_digest(MODULE)
    assert code_digest(edited(b"return self.size + n", b"return n")) == code_digest(MODULE)


def test_code_digest_sees_import_time_code():
    for old, new in [
        (b"LIMIT = 10", b"LIMIT = 11"),  # a constant
        (b"size = 3", b"size = 4"),  # a class attribute
        (b"n=LIMIT", b"n=1"),  # a default value
        (b"@register\n", b""),  # a decorator
        (b'"""Compute it."""', b'"""Compute that."""'),  # a docstring
        (b"def compute", b"def calculate"),  # a name
    ]:
        assert code_digest(edited(old, new)) != code_digest(MODULE), old


def test_code_digest_ignores_comments_and_layout():
    assert code_digest(MODULE.replace(b"LIMIT = 10", b"LIMIT = 10  # ten")) == code_digest(MODULE)


def test_unparsable_source_gets_a_content_digest():
    assert code_digest(b"def (") != code_digest(b"def )")


def test_hasher_follows_edits_and_absence(tmp_path):
    (tmp_path / "a.py").write_bytes(MODULE)
    hasher = Hasher(tmp_path)
    first = hasher.digest("a.py", "file")
    code = hasher.digest("a.py", "code")
    (tmp_path / "a.py").write_bytes(edited(b"LIMIT * 2", b"LIMIT * 4"))
    hasher.code_ran()
    assert hasher.digest("a.py", "file") != first
    assert hasher.digest("a.py", "code") == code
    assert hasher.digest("missing.py", "file") is None


def test_hasher_stats_a_file_once_until_code_runs(tmp_path):
    """Between replays no code runs, so one stat per file is enough; after code ran, not."""
    path = tmp_path / "a.py"
    path.write_bytes(MODULE)
    hasher = Hasher(tmp_path)
    first = hasher.digest("a.py", "file")
    path.write_bytes(MODULE + b"\n# edited\n")
    assert hasher.digest("a.py", "file") == first
    hasher.code_ran()
    assert hasher.digest("a.py", "file") != first
    path.unlink()
    assert hasher.digest("a.py", "file") is not None
    hasher.code_ran()
    assert hasher.digest("a.py", "file") is None


def test_a_source_digest_holds_until_its_module_is_imported_again(tmp_path):
    """Code runs as it was imported: a source saved after its digest was taken keeps
    that digest (the code that runs is still the old one) until it is imported again,
    while data files are stat'ed again whenever code ran."""
    source, data = tmp_path / "a.py", tmp_path / "data.txt"
    source.write_bytes(MODULE)
    data.write_text("one")
    hasher = Hasher(tmp_path)
    kept = hasher.digest("a.py", "file")
    read = hasher.digest("data.txt", "file")
    source.write_bytes(edited(b"LIMIT * 2", b"LIMIT * 4"))
    data.write_text("two")
    hasher.code_ran(imported=["b.py"])
    assert hasher.digest("a.py", "file") == kept
    assert hasher.digest("data.txt", "file") != read
    # A digest of another kind would be of the new text: none is given.
    assert hasher.digest("a.py", "code") is None
    assert hasher.digest_ran("a.py", "compute") is None
    hasher.code_ran(imported=["a.py"])
    assert hasher.digest("a.py", "file") not in (kept, None)
    assert hasher.digest("a.py", "code") is not None


def test_a_held_source_that_is_gone_gives_no_digest(tmp_path):
    source = tmp_path / "a.py"
    source.write_bytes(MODULE)
    hasher = Hasher(tmp_path)
    kept = hasher.digest("a.py", "file")
    hasher.digest("a.py", "code")
    source.unlink()
    hasher.code_ran(imported=())
    assert hasher.digest("a.py", "file") == kept
    assert hasher.digest("a.py", "code") is not None  # taken before: still the code that runs
    hasher.code_ran()  # every file: the source is gone
    assert hasher.digest("a.py", "file") is None


def test_remembered_digests_are_reused_only_for_the_same_stat(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "RACY_SECONDS", 0.0)  # ctime cannot be set back
    path = tmp_path / "a.py"
    path.write_bytes(MODULE)
    exported = Hasher(tmp_path)
    exported.digest("a.py", "code")
    remembered = exported.export()
    assert "a.py" in remembered
    # A forged digest under the same stat is believed (that is what a stat cache is)...
    forged = {"a.py": [*remembered["a.py"][:4], {"file": "f" * 32}]}
    assert Hasher(tmp_path, forged).digest("a.py", "file") == "f" * 32
    # ...but not once the file changed.
    path.write_bytes(MODULE + b"\n# edited\n")
    assert Hasher(tmp_path, forged).digest("a.py", "file") != "f" * 32


def test_racy_entries_are_not_remembered(tmp_path):
    (tmp_path / "fresh.py").write_bytes(b"x = 1\n")
    hasher = Hasher(tmp_path)
    hasher.digest("fresh.py", "file")
    assert "fresh.py" not in hasher.export()


def test_malformed_stat_cache_is_ignored(tmp_path):
    (tmp_path / "a.py").write_bytes(b"x = 1\n")
    for bad in (None, [], {"a.py": "nonsense"}, {"a.py": [1, 2, 3, 4, {"file": 5}]}):
        assert Hasher(tmp_path, bad).digest("a.py", "file") is not None


def test_a_listing_leaves_out_the_tools_directories(tmp_path):
    """A test that lists the rootdir is not re-run because ``.pytest_cache`` appeared,
    but is when a data file does."""
    (tmp_path / "data.txt").write_text("1")
    hasher = Hasher(tmp_path)
    hasher.unlisted = frozenset({str(tmp_path / ".pytest_cache") + "/"})
    before = hasher.digest(".", "listing")
    (tmp_path / ".pytest_cache").mkdir()
    (tmp_path / "__pycache__").mkdir()
    hasher.code_ran()
    assert hasher.digest(".", "listing") == before
    (tmp_path / "more.txt").write_text("2")
    hasher.code_ran()
    assert hasher.digest(".", "listing") != before


def test_a_kept_function_body_counts_and_the_others_do_not():
    """``code_digest(keep=...)``: what importers depend on when some functions ran at import."""
    keep = frozenset({"Box.grow", "compute"})
    before = code_digest(MODULE, keep)
    assert code_digest(edited(b"return LIMIT * 2", b"return LIMIT * 3"), keep) != before
    assert code_digest(edited(b"return self.size + n", b"return n + self.size"), keep) != before
    assert code_digest(edited(b"return LIMIT * 2", b"return LIMIT * 3"), frozenset({"Box.grow"})) == (
        code_digest(MODULE, frozenset({"Box.grow"}))
    )


def test_a_kept_function_not_found_makes_the_digest_whole():
    """A name that the source does not define (as the tracer saw it) keeps everything."""
    keep = frozenset({"missing"})
    assert code_digest(MODULE, keep) == hashing.digest_bytes(MODULE)
