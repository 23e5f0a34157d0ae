"""A run with the vault on: the hooks that trace, look up, replay and record.

Roles, as in pytest-xdist: in a serial run or an xdist worker, :class:`VaultPlugin`
traces, looks up, replays and records; in an xdist controller only the
:class:`~pytest_cachevault.report.VaultReporter` runs, counting the reports the
workers send, with :mod:`wire`'s receiver, which rebuilds those of replayed tests.
:mod:`plugin` imports this module only when the vault is on.
"""

from __future__ import annotations

import atexit
import gc as python_gc
import os
import sys
import sysconfig
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytest

from . import config as vault_config
from . import child, collect, explain, fingerprint, replay, wire
from .hashing import Hasher
from .inputs import Dependencies
from .plugin import EXPLAIN_ALL, MARKER, TRACER_KEY, is_controller
from .report import VaultReporter
from .session import BYPASS, UNCACHEABLE, VaultSession, Verdict
from .store import Store, StoreError
from .trace import TracerUnavailable, make_tracer

STAT_CACHE_KEY = "cachevault/stat"
ENVIRONMENT_CACHE_KEY = "cachevault/environment"

_verdict_key = pytest.StashKey[Verdict]()
#: Modules whose ``pytest_runtest_protocol`` implementations have nothing to do for a
#: test that is replayed (pytest's warning capture, assertion hooks, faulthandler...).
_IDLE_PROTOCOL_WRAPPERS = ("_pytest.", "pytest_cachevault.")


def _excluded_prefixes(root: str) -> tuple[str, ...]:
    """Install locations (stdlib, site-packages, venvs): covered by the environment fingerprint."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, *sysconfig.get_paths().values()}
    prefixes = {os.path.join(os.path.realpath(p), "") for p in paths if p}
    return tuple(sorted(p for p in prefixes if not os.path.join(root, "").startswith(p)))


def _tool_directories(config: pytest.Config, store: Path) -> tuple[str, ...]:
    """Where tools keep their own state during a run: what a test reads there is no input."""
    root = config.rootpath
    directories = [store, root / ".hypothesis"]
    try:
        directories.append(root / config.getini("cache_dir"))
    except ValueError:  # -p no:cacheprovider
        pass
    if config.option.basetemp:
        directories.append(Path(config.option.basetemp))
    return tuple(os.path.join(os.path.realpath(d), "") for d in directories)


def start_tracer(config: pytest.Config) -> None:
    """Trace from before the conftests are imported, so import-time code is seen."""
    try:
        tracer = make_tracer(config.rootpath, _excluded_prefixes(str(config.rootpath)))
        preloaded = {
            m.__file__
            for m in list(sys.modules.values())
            if isinstance(getattr(m, "__file__", None), str)
        }
        tracer.start()
    except TracerUnavailable as exc:
        config.stash[TRACER_KEY] = str(exc)
    else:
        config.stash[TRACER_KEY] = (tracer, preloaded)


def configure(config: pytest.Config, vault: vault_config.VaultConfig) -> None:
    """Register the reporter and, where tests run, the plugin that runs them."""
    explain_option = config.getoption("vault_explain")
    reporter = VaultReporter(explain_all=explain_option == EXPLAIN_ALL)
    if not hasattr(config, "workerinput") and not vault.readonly:  # sees every report
        reporter.store = Store(vault.directory)
    if explain_option not in (None, EXPLAIN_ALL):
        reporter.describe = lambda: _describe(config, vault, explain_option)
    config.pluginmanager.register(reporter, "cachevault-reporter")
    if is_controller(config.option):
        config.pluginmanager.register(wire.ReplayedReportReceiver(), "cachevault-receiver")
        return
    if TRACER_KEY not in config.stash:
        start_tracer(config)
    started = config.stash[TRACER_KEY]
    if isinstance(started, str):
        reporter.off = f"cannot trace: {started}"
        return
    tracer, preloaded = started
    store = Store(vault.directory, readonly=vault.readonly, key=vault.key)
    try:
        store.ensure()
    except StoreError as exc:
        reporter.off = str(exc)
        tracer.stop()
        return
    cache = getattr(config, "cache", None)
    hasher = Hasher(config.rootpath, cache.get(STAT_CACHE_KEY, None) if cache else None)
    root = str(config.rootpath)
    excluded = _excluded_prefixes(root) + _tool_directories(config, vault.directory)
    previous = cache.get(ENVIRONMENT_CACHE_KEY, None) if cache else None
    if "subprocess" in vault.allow and not vault.readonly:
        try:
            tracer.trace_children(child.Children(str(store.scratch())))
        except StoreError:
            pass  # a child's code is then unknown: its test depends on every in-tree source
    session = VaultSession(config, vault, store, tracer, hasher, excluded, preloaded, previous)
    pause = CollectorPause()
    config.pluginmanager.register(pause, "cachevault-collector")
    config.pluginmanager.register(VaultPlugin(session, reporter, pause), "cachevault-session")
    sender = None
    if wire.offered(config):
        sender = wire.ReplayedReportSender()
        config.pluginmanager.register(sender, "cachevault-sender")
    config.pluginmanager.register(Replayer(sender), "cachevault-replayer")


def _can_skip_collection(config: pytest.Config, vault: vault_config.VaultConfig) -> bool:
    """Whether unchanged test modules may stand in, unimported. ``-k``, ``-m`` and
    ``--deselect`` select among stand-ins as among real tests; node id arguments,
    ``--lf`` and ``--sw`` walk the real collection tree, which stand-ins flatten."""
    option = config.option
    selecting = ("lf", "stepwise", "stepwise_skip")
    return (
        vault.skip_collection
        and not vault.bypass
        and not any(getattr(option, name, None) for name in selecting)
        and not any("::" in str(arg) for arg in config.args)
    )


def _describe(config: pytest.Config, vault: vault_config.VaultConfig, nodeid: str) -> list[str]:
    """``--vault-explain=NODEID``, answered from the store after the run."""
    hasher = Hasher(config.rootpath)
    excluded = _excluded_prefixes(str(config.rootpath)) + _tool_directories(config, vault.directory)
    deps = Dependencies(config.rootpath, hasher, excluded)
    environment_id = fingerprint.environment_digest(fingerprint.environment(config, vault, hasher))
    store = Store(vault.directory, readonly=vault.readonly, key=vault.key)
    return explain.describe(store, deps, fingerprint.results_key(environment_id, nodeid), nodeid)


def _spare_the_exit_collection() -> None:
    """Have the interpreter's exit skip its collections of the objects still alive.

    A run that replayed tens of thousands of tests holds their items and reports (2.4
    million objects for packaging's 62,423 tests) until the process ends, and the
    collections the interpreter runs while it shuts down traverse them all: a fifth
    of a warm run. Frozen objects are not traversed; they are freed as usual when
    their module goes, except cycles among them, whose ``__del__`` Python does not
    promise to call at exit anyway. Registered last, so it runs first among the
    exit handlers, after every pytest hook."""
    atexit.unregister(python_gc.freeze)  # once per process, however many sessions
    atexit.register(python_gc.freeze)


_SESSION_FILE = os.path.join("_pytest", "main.py")
#: Where pytest's command starts a session (``console_main``; ``_console_main`` in 9.2).
_COMMAND_FILE = os.path.join("_pytest", "config", "__init__.py")


def _the_process_ends_with_this_session() -> bool:
    """Whether this session was started by pytest's command (``pytest``, ``python -m
    pytest``) and runs inside no other: the process then ends with it. Not a session
    that other code started with ``pytest.main()`` (it may go on, and start others),
    nor one inside another (``pytester``)."""
    sessions, command = 0, False
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "wrap_session" and code.co_filename.endswith(_SESSION_FILE):
            sessions += 1
        elif code.co_name.lstrip("_") == "console_main" and code.co_filename.endswith(_COMMAND_FILE):
            command = True
        frame = frame.f_back
    return command and sessions == 1


class CollectorPause:
    """Python's cyclic garbage collector, paused while tests are replayed.

    A replayed test runs no test code, yet its reports stay alive (the terminal keeps
    them), and each full collection traverses them all, with the items: a warm run of
    packaging's 62,423 tests ran 3 full collections while it replayed them, 1.7 s of
    12. While tests are replayed the collector is off. It is on again
    before a test runs for real, so test code runs with it on, and before pytest's own
    last collections at the end of the session, which then collect what the replays
    left. (Between the last test and those collections, the teardown of fixtures that
    outlive a last test that was replayed runs with it off.) A collector someone else
    switched off stays off.

    pytest ends a session with two full collections: one when it unconfigures, one in
    its cleanup. The first finds what the tests left; what survives it is then frozen,
    so the second passes over it (0.9 s of a 10 s warm run of packaging). Only where the
    process ends with the session: frozen objects are never collected.
    """

    def __init__(self) -> None:
        self._paused = False
        #: Whether any test of the session was replayed.
        self.replayed = False

    def replaying(self) -> None:
        self.replayed = True
        if not self._paused and python_gc.isenabled():
            python_gc.disable()
            self._paused = True

    def running(self) -> None:
        if self._paused:
            self._paused = False
            python_gc.enable()

    @pytest.hookimpl(tryfirst=True)  # before pytest's collections for unraisable exceptions
    def pytest_unconfigure(self) -> None:
        self.running()

    # A second implementation (pytest takes only ``pytest_*`` names); trylast: after
    # the collection of pytest's own.
    @pytest.hookimpl(trylast=True, specname="pytest_unconfigure")
    def pytest_unconfigure_frozen(self) -> None:
        if self.replayed and python_gc.isenabled() and _the_process_ends_with_this_session():
            python_gc.freeze()


class Replayer:
    """Short-circuits the run protocol of a test whose lookup hit."""

    def __init__(self, sender: wire.ReplayedReportSender | None = None) -> None:
        #: An xdist worker's way of sending replayed reports, where its controller offered it.
        self.sender = sender

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        verdict = item.stash.get(_verdict_key, None)
        if verdict is not None and verdict.reports is not None:
            sending = self.sender.replaying(verdict.reports, verdict.stored) if self.sender else nullcontext()
            with sending:
                replay.emit(item, verdict.reports, verdict.warnings)
            return True
        if isinstance(item, collect.StoredItem):  # it changed during the run: run it for real
            real = collect.realize(item)
            if real is not None:
                real.ihook.pytest_runtest_protocol(item=real, nextitem=nextitem)
                return True
        return None


class VaultPlugin:
    """Traces each live test, decides hits before the protocol, records results after."""

    def __init__(self, session: VaultSession, reporter: VaultReporter, collector: CollectorPause) -> None:
        self.session = session
        self.reporter = reporter
        self.collector = collector
        self.tracer = session.tracer
        self._reports: list[pytest.TestReport] = []
        self._warnings: list = []
        self.skip_collection = _can_skip_collection(session.config, session.vault)
        #: Test modules collected for real and what they held, to be stored.
        self._collected_items: dict[pytest.Collector, list[tuple[pytest.Item, collect.Shape]]] = {}
        self._realized = False
        #: The verdict :meth:`pytest_runtestloop` reached on the test it hands to the protocol.
        self._decided: tuple[pytest.Item, Verdict] | None = None

    # -- collection ---------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makemodule(self, module_path: Path, parent: pytest.Collector):
        """A stand-in for a test module whose stored collection and tests would all replay."""
        if not self.skip_collection or module_path.name == "__init__.py":
            return None
        with collect.collector_paused():
            return self._guard(f"looking up the collection of {module_path.name}",
                               lambda: self._stand_in(module_path, parent), None)

    def _stand_in(self, path: Path, parent: pytest.Collector) -> collect.StoredModule | None:
        relpath = self.session.deps.relpath(str(path))
        stored = None if relpath is None else self.session.stored_collection(relpath)
        if stored is None:
            return None
        module = collect.StoredModule.from_parent(parent, path=path, stored=stored)
        if not all(map(self.session.may_stand_in, module.node_ids())):
            return None
        self.session.deps.test_modules.add(relpath)  # type: ignore[arg-type]
        return module

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector):
        if not isinstance(collector, pytest.Module) or type(collector).__name__ == "DoctestModule":
            return (yield)
        self.tracer.push()
        # Warnings of the import are caught to be known, then passed on: a module whose
        # collection warns is not stored, as a stand-in would not warn.
        with warnings.catch_warnings(record=True) as caught:
            try:
                report = yield
            finally:
                executed = self.tracer.pop()
        for message in caught:
            warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)
        relpath = self.session.deps.relpath(str(collector.path))
        if relpath is not None:
            self.session.deps.test_modules.add(relpath)
            # Module bodies that ran at import count as import state; the functions the
            # collection ran (parametrize values...) are inputs of the module's tests.
            self.session.collected[relpath] = executed._replace(files=executed.function_files)
            if report.passed and not caught:
                self._collected_items[collector] = []
        return report

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        module = item.getparent(pytest.Module)
        items = self._collected_items.get(module)
        if items is not None:
            items.append((item, collect.shape(module, item)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if not report.passed:  # a class in the module failed: its tests are not all known
            for module in list(self._collected_items):
                if report.nodeid == module.nodeid or report.nodeid.startswith(module.nodeid + "::"):
                    del self._collected_items[module]

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]):
        """Should another plugin fail on a stand-in, the real tests are collected for it."""
        try:
            return (yield)
        except Exception:
            if self._realized or not any(isinstance(i, collect.StoredItem) for i in items):
                raise
        self._realized = True
        items[:] = [collect.realize(i) or i if isinstance(i, collect.StoredItem) else i for i in items]
        return config.hook.pytest_collection_modifyitems(session=session, config=config, items=items)

    def pytest_collection_finish(self) -> None:
        self.session.collection_finished()
        if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
            return  # every worker collects the same: one writes
        with collect.collector_paused():
            for module, items in self._collected_items.items():
                self._guard(f"recording the collection of {module.nodeid}",
                            lambda: self.session.record_collection(module, items), None)
        self._collected_items.clear()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        """pytest's own loop, except that a hit with nothing to warn about sends its
        reports straight to the report hooks.

        The run protocol's wrappers (warning capture, assertion rewriting's hooks) have
        nothing to do for a test that does not run, yet cost a warm run about a tenth
        of its time. Only pytest's own wrappers are known to be idle there: with
        another plugin's (or a conftest's), or under xdist, every test goes through
        the protocol as usual."""
        self.session.hasher.code_ran(imported=())  # collection hooks ran: stat data files afresh
        if not self._may_replay_directly(session):
            return None
        hook = session.config.hook
        items = session.items
        for i, item in enumerate(items):
            nextitem = items[i + 1] if i + 1 < len(items) else None
            verdict = self._verdict(item)
            if verdict.reports is not None and not verdict.warnings:
                self.collector.replaying()
                replay.emit(item, verdict.reports, verdict.warnings)
                self._leaving(item, nextitem)
            else:
                self._decided = (item, verdict)
                hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        return True

    @staticmethod
    def _may_replay_directly(session: pytest.Session) -> bool:
        config = session.config
        if config.option.collectonly or hasattr(config, "workerinput"):  # xdist's loop runs workers
            return False
        if session.testsfailed and not config.option.continue_on_collection_errors:
            return False  # pytest's loop stops the run
        return all(
            impl.function.__module__.startswith(_IDLE_PROTOCOL_WRAPPERS)
            for impl in config.hook.pytest_runtest_protocol.get_hookimpls()
        )

    # -- fixtures above function scope: what their setup ran is every user's input ------
    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef):
        if fixturedef.scope == "function":
            return (yield)
        self.tracer.push()
        try:
            return (yield)
        finally:
            self.session.fixture_setups.setdefault(fixturedef, []).append(self.tracer.pop())

    # -- the run protocol ---------------------------------------------------------------
    def _decide(self, item: pytest.Item) -> Verdict:
        if item.get_closest_marker(MARKER) is not None:
            return Verdict(None, BYPASS, f"{BYPASS} (marker {MARKER})")
        if self.session.vault.bypass:
            return Verdict(None, BYPASS, f"{BYPASS} (--vault-bypass)")
        if self.session.deps.relpath(str(item.path)) is None:
            return Verdict(None, UNCACHEABLE, f"{UNCACHEABLE}: the test file is outside the rootdir")
        return self.session.lookup(item.nodeid)

    def _guard(self, what: str, action, default):
        """Run a vault step; a failure of the vault is a warning, never a failed run."""
        try:
            return action()
        except Exception as exc:
            self.session.problems.append(f"{what}: {type(exc).__name__}: {exc}")
            return default

    def _verdict(self, item: pytest.Item) -> Verdict:
        verdict = self._guard(
            f"looking up {item.nodeid}",
            lambda: self._decide(item),
            Verdict(None, UNCACHEABLE, f"{UNCACHEABLE}: the lookup failed"),
        )
        item.stash[_verdict_key] = verdict
        return verdict

    # tryfirst: outside pytest's warning capture, which reports a test's warnings
    # after its protocol, so they are known when the record is written.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        decided, self._decided = self._decided, None
        verdict = decided[1] if decided is not None and decided[0] is item else self._verdict(item)
        try:
            if verdict.reports is not None:
                self.collector.replaying()
                return (yield)
            if isinstance(item, collect.StoredItem):  # the Replayer runs the real test instead
                return (yield)
            return (yield from self._traced(item))
        finally:
            self._leaving(item, nextitem)

    def _traced(self, item: pytest.Item):
        """The protocol of a test that runs: traced, and recorded afterwards."""
        self.collector.running()
        self._reports = []
        self._warnings = []
        self._guard("reading library module state", self.session.starting, None)
        self.tracer.push()
        try:
            return (yield)
        finally:
            with collect.collector_paused():  # what follows runs no test code
                executed = self.tracer.pop(merge=False)
                self.session.code_ran(executed)
                self._guard("reading library module state", lambda: self.session.ran(executed), None)
                if item.get_closest_marker(MARKER) is None:
                    self._guard(
                        f"recording {item.nodeid}",
                        lambda: self.session.record(item, self._reports, self._warnings, executed),
                        None,
                    )

    def _leaving(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        with collect.collector_paused():
            self._guard(f"storing the results of {item.path.name}",
                        lambda: self.session.leaving(item.nodeid, nextitem and nextitem.nodeid), None)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item):
        # A replayed test left the fixtures of the live test before it standing (pytest
        # keeps what the *next* item shares): tear down what this item does not share.
        if self.collector.replayed:
            item.session._setupstate.teardown_exact(item)
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item):
        report = yield
        verdict = item.stash.get(_verdict_key, None)
        if verdict is not None:
            setattr(report, replay.REPORT_ATTRIBUTE, verdict.reason)
            setattr(report, replay.WHY_ATTRIBUTE, verdict.why)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if getattr(report, replay.REPORT_ATTRIBUTE, replay.CACHED) != replay.CACHED:
            self._reports.append(report)

    def pytest_warning_recorded(self, warning_message, when: str, nodeid: str) -> None:
        if when == "runtest" and self._reports and nodeid == self._reports[0].nodeid:
            self._warnings.append(warning_message)

    # -- the end ------------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.tracer.trace_children(None)
        self._guard("storing the results", self.session.finish, None)
        if self.collector.replayed:
            _spare_the_exit_collection()
        for problem in self.session.problems + self.session.store.problems:
            self.reporter.add_warning(problem)
        cache = getattr(session.config, "cache", None)
        if cache is not None:
            cache.set(STAT_CACHE_KEY, self.session.hasher.export())
            cache.set(ENVIRONMENT_CACHE_KEY, self.session.environment)
