"""Trust: ``--vault-readonly`` writes nothing; ``PYTEST_VAULT_KEY`` signs records and
ignores the others; paths in records never lead outside the rootdir."""

from __future__ import annotations

import json
import re

import pytest

from pytest_cachevault.hashing import digest_bytes
from pytest_cachevault.store import COLLECTIONS, LAYOUT, RESULTS, SUFFIX, Store, record_key_and_name

from conftest import (
    BASIC_IDS,
    no_traceback,
    record_of,
    replayed,
    store_snapshot,
    unpacked,
    vault_counts,
    vault_reasons,
    vault_warnings,
    write_files,
    write_packed,
)

NEW_TEST = {"test_new.py": "from ranlog import ran\n\n\ndef test_new():\n    ran()\n"}


def explanations(result) -> dict[str, str]:
    section = result.stdout.str().split(" vault explain ", 1)[1]
    return dict(re.findall(r"^(test_\S+::\S+): (.+)$", section, re.MULTILINE))


def replace_results(store_dir, record, payload) -> None:
    """Put ``payload`` (checksum right, no signature) in place of every result file of
    ``record``'s key: older files would otherwise be read for a test it holds changed."""
    key, _ = record_key_and_name(record)
    for path in record.parent.glob(f"{key}.*"):
        path.unlink()
    Store(store_dir).put_record(key, None, payload)


# -- --vault-readonly --------------------------------------------------------------------
@pytest.mark.parametrize(
    "how",
    [pytest.param(["--vault-readonly"], id="option"), pytest.param(["-n", "2", "--vault-readonly"], id="xdist"),
     pytest.param([], id="ini")],
)
def test_read_only_replays_and_writes_nothing(how, basic_project, pytester, run_vault, ran_log):
    """Hits replay, misses run, and not a byte nor an mtime of the store changes."""
    if "-n" in how:
        pytest.importorskip("xdist")
    pytester.makeini("[pytest]\n" + ("vault_readonly = true\n" if not how else ""))
    # vault_* settings do not enter the keys: this run's records are the read-only run's.
    run_vault("-o", "vault_readonly=false").assert_outcomes(passed=3)
    ran_log.take()
    write_files(basic_project, NEW_TEST)
    before = store_snapshot(run_vault.store)

    result = run_vault("-v" if "-n" not in how else "-q", *how)
    no_traceback(result)
    result.assert_outcomes(passed=4)
    assert vault_counts(result) == (3, 1)
    assert ran_log.take() == ["test_new.py::test_new"]
    assert vault_warnings(result) == []
    assert store_snapshot(run_vault.store) == before  # no record, no run summary, no mtime

    again = run_vault(*how)
    assert vault_counts(again) == (3, 1), "the new test was not stored"


def test_read_only_without_a_store_runs_everything_and_creates_nothing(basic_project, run_vault, ran_log):
    result = run_vault("--vault-readonly")
    no_traceback(result)
    result.assert_outcomes(passed=3)
    assert vault_counts(result) == (0, 3)
    assert set(ran_log.take()) == BASIC_IDS
    assert vault_warnings(result) == []
    assert not run_vault.store.exists() and not run_vault.store.parent.joinpath("CACHEDIR.TAG").exists()


def test_read_only_reports_a_damaged_record_and_leaves_it(basic_project, run_vault, ran_log):
    run_vault().assert_outcomes(passed=3)
    ran_log.take()
    # The result file holding test_add holds the whole module's: all three re-run.
    damaged = record_of(run_vault.store, "test_basic.py::test_add")
    damaged.write_bytes(b"garbage")

    for _ in range(2):
        result = run_vault("--vault-readonly")
        no_traceback(result)
        result.assert_outcomes(passed=3)
        assert vault_counts(result) == (0, 3)
        assert set(ran_log.take()) == BASIC_IDS
        [warning] = vault_warnings(result)
        assert warning.startswith(f"record that is not gzip-compressed JSON: {LAYOUT}/records/")
        assert damaged.read_bytes() == b"garbage"


# -- PYTEST_VAULT_KEY ----------------------------------------------------------------------
KEY = {"PYTEST_VAULT_KEY": "main-branch secret"}
OTHER_KEY = {"PYTEST_VAULT_KEY": "someone else's secret"}


def test_signed_records_replay_with_the_key_and_without_it(basic_project, run_vault, ran_log):
    run_vault(env=KEY).assert_outcomes(passed=3)
    ran_log.take()
    records = list((run_vault.store / LAYOUT / RESULTS).rglob(f"*{SUFFIX}"))
    assert records
    for record in records:
        assert b'"hmac":"' in unpacked(record)
        assert b"secret" not in unpacked(record)
    assert vault_counts(run_vault(env=KEY)) == (3, 0)
    # A job without the key cannot verify, and takes the store as it is.
    assert vault_counts(run_vault("--vault-readonly")) == (3, 0)
    assert ran_log.take() == []


def test_with_a_key_unsigned_records_are_ignored_and_explained(basic_project, run_vault, ran_log):
    run_vault().assert_outcomes(passed=3)
    ran_log.take()

    result = run_vault("--vault-explain", env=KEY)
    no_traceback(result)
    result.assert_outcomes(passed=3)
    assert vault_counts(result) == (0, 3)
    assert vault_reasons(result) == {"new": 3}
    assert explanations(result) == {nodeid: "unsigned record ignored" for nodeid in BASIC_IDS}
    assert vault_warnings(result) == [
        "unsigned records were ignored: with PYTEST_VAULT_KEY set, only records signed with "
        "that key are replayed"
    ]
    assert set(ran_log.take()) == BASIC_IDS

    signed = run_vault(env=KEY)  # the run rewrote them, signed
    assert vault_counts(signed) == (3, 0)
    assert vault_warnings(signed) == []


@pytest.mark.parametrize("workers", [pytest.param([], id="serial"), pytest.param(["-n", "2"], id="xdist")])
def test_records_signed_with_another_key_are_ignored(workers, basic_project, run_vault, ran_log):
    if workers:
        pytest.importorskip("xdist")
    run_vault(env=OTHER_KEY).assert_outcomes(passed=3)
    ran_log.take()
    result = run_vault("--vault-explain", *workers, env=KEY)
    no_traceback(result)
    assert vault_counts(result) == (0, 3)
    assert explanations(result) == {nodeid: "record with a wrong signature ignored" for nodeid in BASIC_IDS}
    assert vault_warnings(result) == [
        "records with a wrong signature were ignored (signed with another PYTEST_VAULT_KEY, or altered)"
    ]
    explained = run_vault(
        "--vault-readonly", "--vault-explain=test_basic.py::test_add", *workers, env={"PYTEST_VAULT_KEY": "a third"}
    )
    explained.stdout.fnmatch_lines(
        ["inputs recorded for test_basic.py::test_add:", "  record with a wrong signature ignored (PYTEST_VAULT_KEY*"]
    )


POISON_PROJECT = {
    "test_poison.py": """
        def test_good():
            assert True


        def test_bad():
            assert 1 + 1 == 3
    """,
}


def _rewrite_payload(record, payload) -> None:
    """Put ``payload`` in the result file ``record`` with a right checksum, keeping the
    signature the file had (if any)."""
    data = unpacked(record)
    header = re.match(rb'\{"schema":(\d+),"checksum":"[0-9a-f]+"(,"hmac":"[0-9a-f]+")?,"payload":', data)
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    write_packed(
        record,
        b'{"schema":%s,"checksum":"%s"%s,"payload":%s}'
        % (header[1], digest_bytes(body).encode(), header[2] or b"", body),
    )


def _plant_good_record_as_bad(store) -> None:
    """What someone who can write the store, but has no key, can do: put the passing
    test's result where the failing test's result is, in the file holding both (its
    checksum made right, its signature left as it was)."""
    record = record_of(store, "test_poison.py::test_bad")
    payload = Store(store).read_record(record).payload
    payload["tests"]["test_poison.py::test_bad"] = payload["tests"]["test_poison.py::test_good"]
    _rewrite_payload(record, payload)


def test_without_a_key_the_store_is_trusted(pytester, run_vault):
    """The attack that signing stops: without a key, a planted record hides a failure."""
    write_files(pytester.path, POISON_PROJECT)
    assert run_vault().ret == pytest.ExitCode.TESTS_FAILED
    _plant_good_record_as_bad(run_vault.store)
    poisoned = run_vault()
    assert poisoned.ret == pytest.ExitCode.OK
    assert vault_counts(poisoned) == (2, 0)


def test_with_a_key_a_planted_record_is_ignored(pytester, run_vault):
    write_files(pytester.path, POISON_PROJECT)
    assert run_vault(env=KEY).ret == pytest.ExitCode.TESTS_FAILED
    _plant_good_record_as_bad(run_vault.store)
    result = run_vault("--vault-explain", env=KEY)
    no_traceback(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    # The planted file is the module's: both its tests are ignored, and run.
    assert vault_counts(result) == (0, 2)
    assert explanations(result) == {
        nodeid: "record with a wrong signature ignored"
        for nodeid in ("test_poison.py::test_good", "test_poison.py::test_bad")
    }


def test_a_forged_payload_is_ignored_with_a_key(pytester, run_vault):
    """Editing the failing test's record into a pass (checksum recomputed) does not verify."""
    write_files(pytester.path, POISON_PROJECT)
    assert run_vault(env=KEY).ret == pytest.ExitCode.TESTS_FAILED
    record = record_of(run_vault.store, "test_poison.py::test_bad")
    forged = Store(run_vault.store).read_record(record).payload
    forged["tests"]["test_poison.py::test_bad"] = forged["tests"]["test_poison.py::test_good"]
    key, _ = record_key_and_name(record)
    record.unlink()
    written = Store(run_vault.store).put_record(key, None, forged)  # a right checksum, no signature
    data = unpacked(written)
    signed = data.replace(b',"payload":', b',"hmac":"' + b"0" * 64 + b'","payload":', 1)
    assert signed != data  # a wrong signature, not an unsigned record (ignored for that)
    write_packed(written, signed)

    assert run_vault("--vault-readonly").ret == pytest.ExitCode.OK  # no key: fooled
    result = run_vault(env=KEY)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert vault_counts(result) == (0, 2)  # the forged file is the module's: both tests run


# -- paths in records ------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_a_record_naming_a_file_outside_the_rootdir_is_never_read(form, basic_project, run_vault, ran_log, tmp_path):
    """The record names a file outside with its true digest: reading it would make a hit."""
    run_vault().assert_outcomes(passed=3)
    ran_log.take()
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    name = "../" * len(basic_project.parts) + str(outside).lstrip("/") if form == "relative" else str(outside)
    record = record_of(run_vault.store, "test_basic.py::test_add")
    store = Store(run_vault.store)
    payload = store.read_record(record).payload
    payload["tests"]["test_basic.py::test_add"]["inputs"]["file"][name] = digest_bytes(outside.read_bytes())
    replace_results(run_vault.store, record, payload)

    result = run_vault("--vault-explain")
    no_traceback(result)
    result.assert_outcomes(passed=3)
    assert ran_log.take() == ["test_basic.py::test_add"]
    assert explanations(result)["test_basic.py::test_add"] == f"changed: {name} (not a path under the rootdir)"

    replace_results(run_vault.store, record, payload)  # the run superseded it for test_add
    described = run_vault("--vault-readonly", "--vault-explain=test_basic.py::test_add", "-v")
    described.stdout.fnmatch_lines([f"*file*{name}*not a path under the rootdir: never read"])
    assert replayed(described) == BASIC_IDS - {"test_basic.py::test_add"}


@pytest.mark.parametrize("where", ["outside", "in-tree-not-python"])
def test_a_replayed_warning_cannot_show_a_line_of_another_file(where, pytester, run_vault, tmp_path):
    """pytest prints the source line of each warning; a record names the file. Only a
    Python source of the project or of an install location is shown."""
    pytester.makepyfile(
        test_warns="""
            import warnings


            def test_warns():
                warnings.warn("old api", DeprecationWarning)
        """
    )
    secret = tmp_path / "secret.txt" if where == "outside" else pytester.path / ".env"
    secret.write_text("TOKEN=hunter2\n")
    first = run_vault()
    first.assert_outcomes(passed=1, warnings=1)
    first.stdout.fnmatch_lines(["*test_warns.py:5: DeprecationWarning: old api", "*warnings.warn(*"])

    record = record_of(run_vault.store, "test_warns.py::test_warns")
    store = Store(run_vault.store)
    payload = store.read_record(record).payload
    entry = payload["tests"]["test_warns.py::test_warns"]
    warning = json.loads(entry["warnings"][0])
    warning.update(filename=str(secret), lineno=1)
    entry["warnings"] = [json.dumps(warning)]
    replace_results(run_vault.store, record, payload)

    result = run_vault()
    no_traceback(result)
    assert vault_counts(result) == (1, 0)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([f"*<{secret.name}>:1: DeprecationWarning: old api"])
    assert "hunter2" not in result.stdout.str()


def _drop_from_collection(store_dir, nodeid: str) -> None:
    """Rewrite the collection record of ``nodeid``'s module without that test (its
    checksum right, no signature): what someone without the key could do."""
    store = Store(store_dir)
    module = nodeid.split("::")[0]
    [path] = [p for p, _ in store.iter_records(COLLECTIONS) if store.read_record(p).payload["nodeid"] == module]
    payload = store.read_record(path).payload
    payload["items"] = [item for item in payload["items"] if f"{module}::{item[0]}" != nodeid]
    path.unlink()
    store.put_record(*record_key_and_name(path), payload, COLLECTIONS)


def test_with_a_key_a_forged_collection_cannot_hide_a_test(pytester, run_vault):
    """A test module's stored collection, with the failing test left out, would let the
    module go unimported and the failure unseen: with a key it is ignored."""
    write_files(pytester.path, POISON_PROJECT)
    for env in (None, KEY):
        run_vault.store = run_vault.store.with_name(f"store-{bool(env)}")
        assert run_vault(env=env).ret == pytest.ExitCode.TESTS_FAILED
        _drop_from_collection(run_vault.store, "test_poison.py::test_bad")
        result = run_vault(env=env)
        no_traceback(result)
        if env is None:  # no key: the store is trusted, and the test is gone
            assert result.ret == pytest.ExitCode.OK
            result.assert_outcomes(passed=1)
        else:
            assert result.ret == pytest.ExitCode.TESTS_FAILED
            result.assert_outcomes(passed=1, failed=1)
            assert vault_warnings(result) == [
                "unsigned records were ignored: with PYTEST_VAULT_KEY set, only records signed "
                "with that key are replayed"
            ]
