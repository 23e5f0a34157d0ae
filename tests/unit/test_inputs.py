"""Unit tests of checking an input group read back from the (untrusted) store."""

from __future__ import annotations

from pytest_cachevault.hashing import Hasher
from pytest_cachevault.inputs import Dependencies, empty_group

SOURCE = "def ran():\n    return 1\n\n\ndef idle():\n    return 2\n"


def group_with_ran(deps: Dependencies, key: str) -> dict:
    group = empty_group()
    group["ran"] = {key: deps.current("ran", key)}
    return group


def test_a_ran_digest_follows_the_functions_it_names(tmp_path):
    (tmp_path / "lib.py").write_text(SOURCE)
    deps = Dependencies(tmp_path, Hasher(tmp_path), ())
    group = group_with_ran(deps, "lib.py::ran")
    assert deps.changed(group) is None
    (tmp_path / "lib.py").write_text(SOURCE.replace("return 2", "return 3"))
    deps.hasher.code_ran()
    assert deps.changed(group) is None
    (tmp_path / "lib.py").write_text(SOURCE.replace("return 1", "return 4"))
    deps.hasher.code_ran()
    assert deps.changed(group) == "changed: lib.py"


def test_a_ran_key_outside_the_rootdir_is_never_read(tmp_path):
    (tmp_path / "lib.py").write_text(SOURCE)
    deps = Dependencies(tmp_path / "root", Hasher(tmp_path / "root"), ())
    for key in ("../lib.py::ran", "/etc/passwd::x", "lib.py"):
        group = empty_group()
        group["ran"] = {key: "0" * 32}
        assert deps.changed(group).endswith("(not a path under the rootdir)"), key
