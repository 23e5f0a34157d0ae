"""Unit tests of the reports Python children leave for the parent (``child.Children``):
they come from the store, so nothing in them is trusted."""

from __future__ import annotations

import json

import pytest

from pytest_cachevault.child import SCHEMA, Children, untraced_spawn
from pytest_cachevault.trace import _Windows


@pytest.fixture
def children(tmp_path):
    return Children(str(tmp_path))


def report(prefix: str, pid: int, body: object, start: bool = True) -> None:
    if start:
        open(f"{prefix}.{pid}.start", "x").close()
    if body is not None:
        with open(f"{prefix}.{pid}.json", "w") as stream:
            stream.write(body if isinstance(body, str) else json.dumps(body))


def sound(**fields) -> dict:
    return {"schema": SCHEMA, "files": ["/p/cli.py"], "read": ["/p/data.txt"], "listed": [],
            "spawned": None, "network": None, **fields}


def test_reports_of_every_child_are_taken_and_removed(children, tmp_path):
    prefix = children.prefix()
    report(prefix, 10, sound())
    report(prefix, 11, sound(files=["/p/shout.py"]))
    run = children.harvest(prefix, expected=2)
    assert run.untraced is None
    assert run.files == {"/p/cli.py", "/p/shout.py"}
    assert run.read == {"/p/data.txt"}
    assert list(tmp_path.iterdir()) == []


def test_another_windows_reports_are_not_taken(children):
    first, second = children.prefix(), children.prefix()
    report(first, 10, sound())
    run = children.harvest(second, expected=1)
    assert run.files == set()
    assert run.untraced is not None


@pytest.mark.parametrize(
    "body, start",
    [
        (None, True),  # still running, or killed before its report
        ("{not json", True),
        (sound(schema=SCHEMA + 1), True),
        (sound(files="/p/cli.py"), True),
        (sound(files=[1]), True),
        (sound(spawned="os.fork"), True),
        (sound(), False),  # fewer starts than processes started
    ],
)
def test_an_incomplete_or_malformed_report_means_untraced(children, body, start):
    prefix = children.prefix()
    report(prefix, 10, body, start=start)
    assert children.harvest(prefix, expected=1).untraced is not None


@pytest.mark.parametrize(
    "event, args, traced",
    [
        ("subprocess.Popen", ("/venv/bin/python3.12", ["python3.12", "x.py"], None, None), True),
        ("subprocess.Popen", ("/bin/sh", ["/bin/sh", "-c", "python x.py"], None, None), False),
        ("subprocess.Popen", ("python", ["python"], None, {"PATH": "/bin"}), False),
        ("subprocess.Popen", ("python", ["python"], None, {"PYTEST_VAULT_CHILD": "/s/w1"}), True),
        ("subprocess.Popen", ("python", ["python"], None, {b"PYTEST_VAULT_CHILD": b"/s/w2"}), False),
        ("os.system", ("python x.py",), False),
        ("os.fork", (), False),
        ("os.posix_spawn", ("/usr/bin/git", ["git"], None), False),
    ],
)
def test_which_processes_report(event, args, traced):
    assert (untraced_spawn(event, args, "/s/w1") is None) is traced


def test_a_process_started_while_children_are_not_followed_is_untraced(tmp_path):
    """Without a report directory (none could be made, or the window opened before),
    a window that started a process must depend on every source: nothing reports."""
    windows = _Windows(tmp_path)
    windows.push()
    windows._stack[-1].spawned = "subprocess.Popen"
    assert windows.pop(merge=False).untraced is not None
    windows.push()
    assert windows.pop(merge=False).untraced is None
