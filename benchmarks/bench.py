#!/usr/bin/env python3
"""Speed benchmark of pytest-cachevault on real third-party test suites.

For each suite (see ``benchmarks/suites.py``) this times whole pytest
processes, wall clock, for these variants, interleaved across repetitions
(rep 1 of every variant, then rep 2, ...):

  plain         pytest, plugin disabled (-p no:cachevault)
  collect       pytest --collect-only -q, plugin disabled
  vault-cold    pytest --vault, empty store, no .pytest_cache
  vault-warm    pytest --vault again, nothing changed
  vault-edit    pytest --vault --vault-explain after a one-line edit of one library
                function (the explanation names the tests that re-ran)
  affected      plain pytest with the edit, on only the tests vault-edit re-ran (same
                repetition), given to pytest in an @file
  testmon-cold  pytest --testmon, no .testmondata, no .pytest_cache
  testmon-warm  pytest --testmon again, nothing changed
  vault-cold-blind  vault-cold with the audit observer switched off
  report-floor  collect, then send prebuilt passed reports of every test through
                pytest's report hooks: the least a replay at full fidelity costs
  with --xdist also: plain-n2, vault-cold-n2, vault-warm-n2 (-n 2)

With several interpreters (``--python python3.11 python3.12``) each one is a lane
of its own, and the lanes run side by side, one pytest process each at a time.

It parses each run's final summary line (and the vault's ``vault: ...``
line), checks that vault and plain runs report the same outcome counts,
measures the store a cold run leaves, prints a markdown report (each figure
judged against issue 5's target) and writes it to ``docs/benchmarks.md``.  Stdlib
only; everything third-party goes into per-suite venvs under
``benchmarks/.work/``.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suites  # noqa: E402

DOC = suites.REPO_ROOT / "docs" / "benchmarks.md"
META = suites.WORK_DIR / "bench-last.json"  # the last benchmark's options and machine info
SLOT = "bench"  # own copy of each suite (see suites.prepare), apart from mutate.py's
#: Issue 5's targets: the most each figure may be (the cold one by Python version).
COLD_TARGET = {"3.12+": 1.10, "older": 1.40}
WARM_TARGET = 0.5           # vault warm / collect-only
TESTMON_TARGET = 0.9        # vault warm / testmon warm
EDIT_TARGET = 1.25          # vault after one edit / (collect-only + the affected tests alone)
BYTES_TARGET = 1500         # store bytes per test

NO_VAULT = ("-p", "no:cachevault")
#: Loaded with ``-p`` for the "blind" variant: the vault as it would be without its
#: audit observer (files read, listings, variables, processes), to price that part.
BLIND_PLUGIN = """
from pytest_cachevault import audit

audit.Observer.start = lambda self: None
audit.Observer.stop = lambda self: None
"""
#: Loaded with ``-p`` for the "report-floor" variant: what any replay that sends every
#: test's three reports through pytest's report hooks costs at least. The suite is
#: collected as usual; then each test gets prebuilt passed reports, with no store,
#: no lookup and no parsing (and the exit's collections skipped, as the vault does).
#: Subtests are not counted: a suite whose tests report subtests (more-itertools)
#: replays more reports than this sends, so its real floor is higher.
FLOOR_PLUGIN = """
import atexit
import gc

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    if session.config.option.collectonly:
        return None
    for item in session.items:
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for when in ("setup", "call", "teardown"):
            report = pytest.TestReport(item.nodeid, item.location, {}, "passed", None, when,
                                       [], 0.0001)
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    atexit.register(gc.freeze)
    return True
"""
#: Plugins a variant may load with ``-p`` (written next to the suite's state).
BENCH_PLUGINS = {"cv_bench_blind": BLIND_PLUGIN, "cv_bench_floor": FLOOR_PLUGIN}
NO_TESTMON = ("-p", "no:pytest-testmon")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running a suite."""

    name: str
    tool: str                   # "none", "vault" or "testmon"
    args: tuple[str, ...] = ()  # extra pytest args
    fresh: bool = False         # wipe the tool's data and .pytest_cache first
    edit: bool = False          # run with the suite's one-line edit applied
    compare_to: str = ""        # variant whose outcome counts must match
    store: str = "vault"        # vault store name (separate for -n 2)
    plugin: str = ""            # one of BENCH_PLUGINS, loaded with -p
    tests: str = ""             # run only the tests this variant re-ran (same rep)


VARIANTS = [
    Variant("plain", "none"),
    Variant("collect", "none", ("--collect-only", "-q")),
    Variant("vault-cold", "vault", fresh=True, compare_to="plain"),
    Variant("vault-warm", "vault", compare_to="vault-cold"),
    Variant("vault-edit", "vault", ("--vault-explain",), edit=True, compare_to="vault-cold"),
    Variant("affected", "none", edit=True, tests="vault-edit"),
    Variant("vault-cold-blind", "vault", fresh=True, compare_to="plain", store="vault-blind",
            plugin="cv_bench_blind"),
    Variant("report-floor", "none", plugin="cv_bench_floor"),
    Variant("testmon-cold", "testmon", fresh=True, compare_to="plain"),
    Variant("testmon-warm", "testmon"),
]
XDIST_VARIANTS = [
    Variant("plain-n2", "none", ("-n", "2"), compare_to="plain"),
    Variant("vault-cold-n2", "vault", ("-n", "2"), fresh=True,
            compare_to="plain-n2", store="vault-n2"),
    Variant("vault-warm-n2", "vault", ("-n", "2"),
            compare_to="vault-cold-n2", store="vault-n2"),
]
ALL_VARIANTS = {v.name: v for v in VARIANTS + XDIST_VARIANTS}

SUMMARY_RE = re.compile(r"^=*\s*(?P<body>\S.*?)\s+in\s+[\d.]+s\b.*$")
COUNT_RE = re.compile(r"(\d+)\s+([a-z][a-z ]*?)(?:\s*\(.*\))?$")
VAULT_RE = re.compile(r"vault:\s*(\d+) replayed, (\d+) run\b.*")
#: A line of the ``--vault-explain`` section: the node id of a test that ran, and why.
EXPLAINED_RE = re.compile(r"^(?P<nodeid>\S.*?::.*?): (?:new|changed|failed last time|bypass|uncacheable)\b")
BAD_EXITS = {-1, 2, 3, 4}  # timeout (ours), interrupted, internal error, usage error


@dataclasses.dataclass
class Run:
    """The outcome of one timed pytest process."""

    variant: str
    rep: int
    seconds: float
    exit: int
    counts: dict[str, int]
    summary: str
    vault: str
    log: str
    cpu: float = 0.0  # user + system seconds of the pytest process (less noisy than wall)
    #: After a cold vault run: the tests its store recorded, the median bytes per test of
    #: their result files, and the store's total bytes.
    store: dict[str, int] = dataclasses.field(default_factory=dict)


#: pytest processes running now, killed when the benchmark is stopped.
RUNNING: set[subprocess.Popen] = set()
#: Set when the benchmark is stopped (SIGTERM): lanes start no new run.
STOPPING = threading.Event()


class Stopped(Exception):
    """The benchmark was stopped while a pytest process ran: that run is not kept."""


def now() -> str:
    """The local date and time, for the report."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def log(msg: str) -> None:
    """Progress message on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_output(text: str) -> tuple[dict[str, int], str, str]:
    """(outcome counts, summary line, vault line) from pytest's output.

    Counts come from the final ``N passed, M failed ... in Xs`` line, or for
    --collect-only from ``N tests collected``; "warnings" is not an outcome
    and is dropped.
    """
    lines = text.splitlines()
    vault = next((m.group(0) for line in reversed(lines)
                  if (m := VAULT_RE.search(line))), "")
    for line in reversed(lines):
        m = SUMMARY_RE.match(line.strip())
        if not m:
            continue
        counts: dict[str, int] = {}
        for part in m.group("body").strip("= ").split(", "):
            part = re.sub(r"^(\d+)/\d+", r"\1", part.strip())  # "62423/62850 tests"
            cm = COUNT_RE.match(part)
            if cm:
                what = cm.group(2).strip()
                what = {"error": "errors", "warning": "warnings",
                        "test collected": "collected",
                        "tests collected": "collected"}.get(what, what)
                counts[what] = int(cm.group(1))
        counts.pop("warnings", None)
        return counts, m.group(0).strip("= "), vault
    return {}, "", vault


def outcomes(counts: dict[str, int]) -> dict[str, int]:
    """The counts that must match between two runs of the same tests: not "deselected",
    which pytest-xdist's controller does not report."""
    return {what: n for what, n in counts.items() if what != "deselected"}


def fmt_counts(counts: dict[str, int]) -> str:
    """Counts as ``765 passed, 3 failed`` (stable order); "none" if no test ran."""
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "none"


def run_process(cmd: list[str], *, cwd: Path, env: dict[str, str], stdout,
                timeout: float) -> tuple[int, float]:
    """Run one pytest process to its end: its exit status (-1 if it timed out, the
    signal's negative number if the benchmark was stopped meanwhile) and its CPU
    seconds, user and system.

    The CPU time is the process's own (``wait4``), not that of every child that ended
    meanwhile: with lanes side by side, other lanes' processes end at any time."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.STDOUT)
    RUNNING.add(proc)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        RUNNING.discard(proc)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    code = -1 if timed_out.is_set() else proc.returncode
    return code, usage.ru_utime + usage.ru_stime


def store_size(directory: Path) -> dict[str, int]:
    """The tests recorded in a vault store, the median bytes of one test's share of its
    result file, and the bytes of every file in the store (objects, collections and run
    summaries included). A result file holds one run's results of one test module."""
    tests, shares, total = 0, [], 0
    for path in directory.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            if path.parent.parent.name == "records":
                try:
                    data = path.read_bytes()
                    if path.name.endswith(".gz"):  # layout v4 on: gzip-compressed JSON
                        data = gzip.decompress(data)
                    held = len(json.loads(data)["payload"]["tests"])
                except (OSError, EOFError, ValueError, KeyError, TypeError):
                    continue
                tests += held
                shares.extend([size // held] * held if held else [])
    if not tests:
        return {}
    return {"records": tests, "median": int(statistics.median(shares)), "bytes": total}


class Bench:
    """Runs the variants of one prepared suite and keeps the results."""

    def __init__(self, env: suites.SuiteEnv, timeout: float, version: str, label: str = ""):
        self.env = env
        self.timeout = timeout
        #: The interpreter's version ("3.12.1"), and the suite's name in the report.
        self.version = version
        self.label = label or env.suite.name
        self.dir = env.state_dir / "bench"
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.testmon_data = self.dir / "testmondata"
        self.runs: list[Run] = []

    def command(self, v: Variant, rep: int = 0) -> list[str]:
        """The pytest command line of variant ``v`` (repetition ``rep``)."""
        tool_args = {
            "none": (*NO_VAULT, *NO_TESTMON),
            "vault": (*NO_TESTMON, "--vault", f"--vault-dir={self.dir / v.store}"),
            "testmon": (*NO_VAULT, "--testmon"),
        }[v.tool]
        plugin = ("-p", v.plugin) if v.plugin else ()
        cmd = self.env.pytest_cmd(*tool_args, *plugin, *v.args)
        if v.tests:  # the suite's test paths give way to the list of tests
            paths = len(self.env.suite.test_paths)
            cmd[3 : 3 + paths] = [f"@{self.test_list(v.tests, rep)}"]
        return cmd

    def test_list(self, source: str, rep: int) -> Path:
        """A file naming the tests that variant ``source`` re-ran in repetition ``rep``
        (from its ``--vault-explain`` section), one node id per line."""
        run = next(r for r in self.of(source) if r.rep == rep)
        lines = Path(run.log).read_text().splitlines()
        start = next((i for i, line in enumerate(lines) if " vault explain " in line), len(lines))
        nodeids = [m["nodeid"] for line in lines[start + 1 :] if (m := EXPLAINED_RE.match(line))]
        path = self.dir / f"{source}-r{rep}.tests"
        path.write_text("".join(f"{nodeid}\n" for nodeid in nodeids))
        return path

    def reset(self, v: Variant) -> None:
        """Give a cold variant an empty store and no .pytest_cache."""
        shutil.rmtree(self.env.src_root / ".pytest_cache", ignore_errors=True)
        if v.tool == "vault":
            shutil.rmtree(self.dir / v.store, ignore_errors=True)
        elif v.tool == "testmon":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.testmon_data}{suffix}").unlink(missing_ok=True)

    def run(self, v: Variant, rep: int) -> Run:
        """Time one process of variant ``v`` and parse its output."""
        if v.fresh:
            self.reset(v)
        cmd = self.command(v, rep)
        logfile = self.logs / f"{v.name}-r{rep}.log"
        env = self.env.run_env(TESTMON_DATAFILE=str(self.testmon_data))
        if v.plugin:
            (self.dir / f"{v.plugin}.py").write_text(BENCH_PLUGINS[v.plugin])
            env["PYTHONPATH"] = str(self.dir)
        edit = self.env.edit_one_line() if v.edit else contextlib.nullcontext()
        with edit, open(logfile, "w+") as out:
            out.write(f"$ cd {self.env.src_root} && {' '.join(cmd)}\n")
            out.flush()
            start = time.perf_counter()
            code, cpu = run_process(cmd, cwd=self.env.src_root, env=env, stdout=out,
                                    timeout=self.timeout)
            seconds = time.perf_counter() - start
            if STOPPING.is_set():
                raise Stopped
            out.seek(0)
            text = out.read()
        counts, summary, vault = parse_output(text)
        store = store_size(self.dir / v.store) if v.fresh and v.tool == "vault" else {}
        run = Run(v.name, rep, seconds, code, counts, summary, vault, str(logfile), cpu, store)
        self.runs.append(run)
        flag = f"  !! exit {code}, see {logfile}" if code in BAD_EXITS else ""
        log(f"{self.label} r{rep} {v.name:14s} {seconds:8.2f}s  "
            f"{fmt_counts(counts)}{'  | ' + vault if vault else ''}{flag}")
        return run

    def of(self, name: str) -> list[Run]:
        """All runs of one variant, in rep order."""
        return [r for r in self.runs if r.variant == name]

    def median(self, name: str) -> float | None:
        """Median seconds of a variant (None if it was not run)."""
        runs = self.of(name)
        return statistics.median(r.seconds for r in runs) if runs else None

    def median_store(self, name: str, what: str) -> float | None:
        """Median over repetitions of one store figure of a cold variant: "records",
        "median" (record bytes), "bytes" or "per test" (bytes per record)."""
        values = [r.store["bytes"] / r.store["records"] if what == "per test" else r.store[what]
                  for r in self.of(name) if r.store.get("records")]
        return statistics.median(values) if values else None

    def cold_target(self) -> float:
        """The cold ÷ plain target for this bench's Python version."""
        major_minor = tuple(int(x) for x in self.version.split(".")[:2])
        return COLD_TARGET["3.12+" if major_minor >= (3, 12) else "older"]

    def median_cpu(self, name: str) -> float | None:
        """Median CPU seconds of a variant (None if not run or not measured)."""
        runs = [r for r in self.of(name) if r.cpu]
        return statistics.median(r.cpu for r in runs) if runs else None

    def problems(self) -> list[str]:
        """Count mismatches, failed processes and vault oddities, in words."""
        out = []
        for r in self.runs:
            if r.exit in BAD_EXITS:
                out.append(f"{r.variant} rep {r.rep}: exit {r.exit}"
                           f"{' (timeout)' if r.exit == -1 else ''}, log {r.log}")
            v = ALL_VARIANTS[r.variant]
            if not r.summary:
                out.append(f"{r.variant} rep {r.rep}: no pytest summary line, log {r.log}")
            if v.tool == "vault" and not r.vault:
                out.append(f"{r.variant} rep {r.rep}: no 'vault:' summary line")
            if r.variant.startswith("vault-warm") and r.vault:
                replayed = int(VAULT_RE.search(r.vault).group(1))
                changed = re.search(r"(\d+) changed", r.vault)
                if replayed == 0:
                    out.append(f"{r.variant} rep {r.rep}: replayed nothing ({r.vault})")
                if changed:
                    out.append(f"**{r.variant} rep {r.rep}: {changed.group(1)} tests re-run as "
                               f"changed although nothing changed** ({r.vault})")
            source = next((x for x in self.of(v.tests) if x.rep == r.rep and x.vault), None)
            if source is not None:
                rerun = int(VAULT_RE.search(source.vault).group(2))
                if sum(n for what, n in r.counts.items() if "subtest" not in what) != rerun:
                    out.append(f"**{r.variant} rep {r.rep}: {fmt_counts(r.counts)}, but "
                               f"{v.tests} re-ran {rerun} tests** ({source.vault})")
            ref = next((x for x in self.of(v.compare_to) if x.rep == r.rep), None)
            if ref is not None and (outcomes(ref.counts) != outcomes(r.counts) or ref.exit != r.exit):
                out.append(f"**MISMATCH** {r.variant} rep {r.rep}: "
                           f"{fmt_counts(r.counts)} (exit {r.exit}) vs {v.compare_to}: "
                           f"{fmt_counts(ref.counts)} (exit {ref.exit})")
        return out


# ----------------------------------------------------------------------- report

def quotient(a: float | None, b: float | None) -> float | None:
    """``a/b``, or None if either is unknown (or ``b`` is zero)."""
    return a / b if a is not None and b else None


def ratio(a: float | None, b: float | None) -> str:
    """``a/b`` formatted, or an em dash."""
    q = quotient(a, b)
    return "—" if q is None else f"{q:.2f}"


def judged(value: float | None, target: float, form: str = "{:.2f}") -> str:
    """``value`` formatted, in bold if it is over ``target``; an em dash if unknown."""
    if value is None:
        return "—"
    text = form.format(value)
    return f"**{text}**" if value > target else text


def secs(x: float | None) -> str:
    """Seconds formatted, or an em dash."""
    return "—" if x is None else f"{x:.2f}"


def python_version(python: str) -> str:
    """An interpreter's version, e.g. ``3.12.1``."""
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True).stdout.strip()


def machine_info() -> dict[str, str]:
    """nproc, CPU, memory, OS and plugin commit."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    git = ["git", "-C", str(suites.REPO_ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "no commit yet"
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "pytest_cachevault"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{int(mem) / 2**20:.0f} GiB",
        "os": platform.platform(),
        "plugin commit": commit + (" + uncommitted changes" if dirty else ""),
        "plugin hash": plugin_fingerprint(),
    }


def plugin_fingerprint() -> str:
    """Short hash of the plugin's source files (installed editable: they are live)."""
    h = hashlib.sha256()
    for path in sorted((suites.REPO_ROOT / "pytest_cachevault").rglob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def tool_versions(env: suites.SuiteEnv) -> str:
    """Versions of pytest and friends in a suite venv."""
    code = ("import importlib.metadata as m\n"
            "for d in ('pytest', 'pytest-cachevault', 'pytest-testmon', 'pytest-xdist'):\n"
            "    print(f'{d} {m.version(d)}')")
    out = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True)
    return ", ".join(out.stdout.split("\n")).strip(", ")


def render(benches: list[Bench], meta: dict, args: argparse.Namespace) -> str:
    """The markdown report; ``meta`` holds the machine info, dates and loads."""
    info, load = meta["info"], (meta["load_start"], meta["load_end"])
    out = [
        "# Speed benchmarks",
        "",
        f"Measured {meta['start']} to {meta['end']} with `python3 benchmarks/bench.py {' '.join(args.argv)}`".rstrip()
        + f" ({args.runs} run(s) per variant, medians).",
        "",
        f"- machine: {info['nproc']} cores ({info['cpu']}), {info['memory']}, {info['os']}; "
        f"load average {load[0]} at start, {load[1]} at end",
        *(f"- python {version}: {tool_versions(env)}" for version, env in
          {b.version: b.env for b in benches}.items()),
        f"- plugin commit: {info['plugin commit']}; source hash {info['plugin hash']}"
        + ("" if info["plugin hash"] == meta["plugin hash end"]
           else f" at start, **{meta['plugin hash end']} at end: the plugin (installed "
                "editable) changed during the run**"),
        "- suites: " + ", ".join(dict.fromkeys(f"{b.env.suite.name} {b.env.suite.version}"
                                               for b in benches)),
        *([] if len({b.version for b in benches}) < 2 else [
            "- the interpreters ran side by side, one pytest process each at a time "
            "(this machine has two cores)"]),
        "",
        "## Median wall-clock seconds",
        "",
        "| suite | tests (plain run) | plain | collect-only | vault cold | vault warm "
        "| vault edit | affected alone | testmon cold | testmon warm |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in benches:
        plain = b.of("plain")
        m = b.median
        out.append(f"| {b.label} | {fmt_counts(plain[0].counts) if plain else '?'} "
                   f"| {secs(m('plain'))} | {secs(m('collect'))} | {secs(m('vault-cold'))} "
                   f"| {secs(m('vault-warm'))} | {secs(m('vault-edit'))} | {secs(m('affected'))} "
                   f"| {secs(m('testmon-cold'))} | {secs(m('testmon-warm'))} |")
        if b.of("plain-n2"):
            out.append(f"| {b.label} `-n 2` | {fmt_counts(b.of('plain-n2')[0].counts)} "
                       f"| {secs(m('plain-n2'))} | {secs(m('collect'))} "
                       f"| {secs(m('vault-cold-n2'))} | {secs(m('vault-warm-n2'))} "
                       "| — | — | — | — |")
    audit_rows: list[str] = []
    floor_rows: list[str] = []
    out += [
        "",
        "## Ratios and targets",
        "",
        "Issue 5's targets in brackets; a figure in **bold** misses its target. Store "
        "bytes per test: every file of the store after a cold run, divided by the tests "
        "it recorded; beside it, the median bytes per test of the result files (a file "
        "holds a test module's results).",
        "",
        f"| suite | cold / plain (≤ {COLD_TARGET['3.12+']:.2f} on 3.12+, ≤ "
        f"{COLD_TARGET['older']:.2f} before) | warm / collect-only (≤ {WARM_TARGET}) "
        f"| warm / testmon warm (≤ {TESTMON_TARGET}) | edit / (collect-only + affected) "
        f"(≤ {EDIT_TARGET}) "
        f"| store bytes per test (≤ {BYTES_TARGET:,}) | median result bytes per test | edit / plain "
        "| outcome counts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for b in benches:
        m = b.median
        if m("vault-cold-blind"):
            cpu = b.median_cpu
            audit_rows.append(f"| {b.label} | {secs(m('vault-cold'))} "
                              f"| {secs(m('vault-cold-blind'))} "
                              f"| {ratio(m('vault-cold'), m('vault-cold-blind'))} "
                              f"| {secs(cpu('vault-cold'))} | {secs(cpu('vault-cold-blind'))} "
                              f"| {ratio(cpu('vault-cold'), cpu('vault-cold-blind'))} |")
        if m("report-floor"):
            floor_rows.append(f"| {b.label} | {secs(m('collect'))} "
                              f"| {secs(m('report-floor'))} | {ratio(m('report-floor'), m('collect'))} "
                              f"| {secs(m('vault-warm'))} | {ratio(m('vault-warm'), m('report-floor'))} |")
        problems = b.problems()
        counts_ok = "**MISMATCH**" if any("MISMATCH" in p for p in problems) else (
            "⚠ see notes" if problems else "same")
        rows = [("", "plain", "vault-cold", "vault-warm", "testmon-warm", "vault-edit")]
        if b.of("plain-n2"):
            rows.append((" `-n 2`", "plain-n2", "vault-cold-n2", "vault-warm-n2", "", ""))
        for tag, plain, cold, warm, tm_warm, edit in rows:
            w, c = m(warm), m("collect")
            alone = m("affected") if edit else None
            least = c + alone if alone and c else None  # collect-only + the affected tests
            per_test, record = b.median_store(cold, "per test"), b.median_store(cold, "median")
            out.append(f"| {b.label}{tag} | {judged(quotient(m(cold), m(plain)), b.cold_target())} "
                       f"| {judged(quotient(w, c), WARM_TARGET)} "
                       f"| {judged(quotient(w, m(tm_warm) if tm_warm else None), TESTMON_TARGET)} "
                       f"| {judged(quotient(m(edit), least), EDIT_TARGET)} "
                       f"| {judged(per_test, BYTES_TARGET, '{:,.0f}')} "
                       f"| {'—' if record is None else f'{record:,.0f}'} "
                       f"| {ratio(m(edit) if edit else None, m(plain))} | {counts_ok} |")
    if floor_rows:
        out += [
            "",
            "What reporting every test through pytest's hooks costs at least (variant "
            "`report-floor`: the suite collected as `--collect-only` does, then three "
            "prebuilt passed reports per test sent to the report hooks, nothing read or "
            "parsed). A replay that every plugin sees as a live run cannot be faster.",
            "",
            "| suite | collect-only | report floor | floor / collect-only | vault warm "
            "| warm / floor |",
            "|---|---:|---:|---:|---:|---:|",
            *floor_rows,
        ]
    if audit_rows:
        out += [
            "",
            "What watching files read, directories listed, variables read, processes and "
            "connections costs: vault cold runs with the audit observer on and off "
            "(variant `vault-cold-blind`), wall-clock and CPU seconds (user + system of "
            "the pytest process: less disturbed by other load). Target: ≤ 1.05.",
            "",
            "| suite | vault cold | observer off | ratio | CPU, cold | CPU, observer off "
            "| CPU ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *audit_rows,
        ]
    out += [
        "",
        "## Every run",
        "",
        "Seconds of each repetition, the outcome counts of pytest's final line "
        "(repetition 1; \"varies\" if later ones differ) and the vault's summary line.",
        "",
        "| suite | variant | seconds per rep | counts | vault line |",
        "|---|---|---|---|---|",
    ]
    for b in benches:
        for name in ALL_VARIANTS:
            runs = b.of(name)
            if not runs:
                continue
            varies = " (varies)" if any(r.counts != runs[0].counts for r in runs) else ""
            exits = {r.exit for r in runs} & BAD_EXITS
            bad = f" **exit {sorted(exits)}**" if exits else ""
            out.append(f"| {b.label} | {name} "
                       f"| {' / '.join(f'{r.seconds:.2f}' for r in runs)} "
                       f"| {fmt_counts(runs[0].counts)}{varies}{bad} | {runs[0].vault or ''} |")
    done = min((len(b.of(v.name)) for b in benches for v in selected_variants(args, b.env.suite)),
               default=0)
    if done < args.runs:
        out[4:4] = [f"**Incomplete: stopped before every variant had {args.runs} runs; "
                    "a missing figure is shown as —, and medians are of the runs made "
                    "(see \"seconds per rep\").**", ""]
    out[4:4] = [line for n in meta.get("notes", []) for line in (f"Note: {n}", "")]
    notes = [f"- {b.label}: {p}" for b in benches for p in b.problems()]
    out += ["", "## Checks", ""] + (notes or ["- all runs finished; vault and plain runs "
                                              "reported the same outcome counts."])
    out += ["", "## Method", "", METHOD.strip(), ""]
    return "\n".join(out)


METHOD = """
Each suite is a pinned sdist from PyPI, extracted under `benchmarks/.work/` and
installed editable into its own venv with pytest, its test dependencies,
pytest-testmon, pytest-xdist and the plugin (editable, from this checkout);
see `benchmarks/suites.py`.  Every figure is the wall-clock time of a whole
`python -m pytest` process (`time.perf_counter` around `subprocess.run`), run
from the extracted sdist with the same test paths and `-p no:randomly`; the
plugin is disabled with `-p no:cachevault` where it is not under test, and
pytest-testmon with `-p no:pytest-testmon`.  Before timing, one untimed
`--collect-only` run compiles the bytecode.  Runs are interleaved (rep 1
of every suite and variant, then rep 2, ...) and the median is reported;
with several interpreters, each one has its own lane of runs, and the lanes
run side by side.  Cold runs
start from an empty store (`--vault-dir` under `benchmarks/.work/`) or no
`.testmondata`, and `.pytest_cache` is removed before each cold run;
`__pycache__` is kept, with Python's bytecode and the 3.11 tracer's marked code.
"Warm" re-runs with nothing changed; "edit" inserts one assignment in one
library function (`SuiteEnv.edit_one_line`) after the warm run, and the file is
restored right after; it runs with `--vault-explain`, whose list of the tests
that re-ran is what "affected" then runs alone, with plain pytest and the same
edit (the node ids in a file given as `@file`).  Outcome counts of each run are parsed from pytest's
final line; vault cold must match plain, and vault warm and edit must match
vault cold (same repetition) — any difference is listed under Checks.
"""


# ------------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suites", nargs="+", default=suites.DEFAULT_SUITES,
                   metavar="SUITE", help=f"any of {', '.join(suites.SUITES)} (default: all)")
    p.add_argument("--python", nargs="+", default=["python3"], metavar="PYTHON",
                   help="interpreter(s) for the venvs, e.g. python3.11 python3.12; several "
                        "run side by side, one pytest process each at a time (default: python3)")
    p.add_argument("--runs", type=int, default=3, help="repetitions per variant (default 3)")
    p.add_argument("--xdist", action="store_true", help="also time -n 2 variants")
    p.add_argument("--variants", nargs="+", metavar="VARIANT",
                   help=f"only these variants, of: {', '.join(ALL_VARIANTS)}")
    p.add_argument("--testmon-suites", nargs="+", metavar="SUITE",
                   help="run pytest-testmon's variants on these suites only (default: every "
                        "suite it can run; its cold runs take up to tens of minutes)")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds before one pytest process is killed (default 3600)")
    p.add_argument("--output", type=Path, default=DOC,
                   help=f"markdown file to write (default {DOC.relative_to(suites.REPO_ROOT)})")
    p.add_argument("--no-write", action="store_true",
                   help="print the report only (and keep the last benchmark's for --rerender)")
    p.add_argument("--note", action="append", default=[],
                   help="a remark printed at the top of the report (repeatable)")
    p.add_argument("--rerender", action="store_true",
                   help="run nothing: re-render the report of the last benchmark "
                        f"from {META.relative_to(suites.REPO_ROOT)} and its runs.json files")
    args = p.parse_args(argv)
    args.argv = argv
    bad = set(args.suites) - set(suites.SUITES)
    bad |= set(args.testmon_suites or ()) - set(suites.SUITES)
    bad |= set(args.variants or ()) - set(ALL_VARIANTS)
    if bad:
        p.error(f"unknown suite/variant: {', '.join(sorted(bad))}")
    chosen = {v.name for v in selected_variants(args)}
    if len(args.python) > 1 and chosen & {v.name for v in XDIST_VARIANTS}:
        p.error("-n 2 variants are timed with one --python at a time: side by side, the "
                "interpreters' processes would share the workers' cores")
    if "vault-edit" in chosen and "vault-cold" not in chosen and args.runs > 1:
        # The first edit run stores results for the edited sources: without a cold run
        # to empty the store, later repetitions replay them and re-run nothing.
        p.error("vault-edit needs vault-cold in the same run when --runs is over 1")
    return args


def selected_variants(args: argparse.Namespace, suite: suites.Suite | None = None) -> list[Variant]:
    """The variants to run, in run order (on ``suite``, if given)."""
    chosen = VARIANTS + (XDIST_VARIANTS if args.xdist else [])
    if args.variants:
        chosen = [v for v in ALL_VARIANTS.values() if v.name in args.variants]
    if suite is not None:
        wanted = suite.testmon if args.testmon_suites is None else suite.name in args.testmon_suites
        if not wanted:
            chosen = [v for v in chosen if v.tool != "testmon"]
    return chosen


def check_plugin(env: suites.SuiteEnv) -> None:
    """Exit unless the plugin's --vault option is registered in the venv."""
    out = subprocess.run([str(env.python), "-m", "pytest", "--help"], cwd=env.src_root,
                         capture_output=True, text=True, env=env.run_env())
    if "--vault-dir" not in out.stdout:
        sys.exit(f"pytest-cachevault is not active in {env.python}:\n{out.stderr[-3000:]}")


def locate(name: str, python: str) -> suites.SuiteEnv:
    """The bench copy of a suite as it was prepared, without locking it (--rerender)."""
    base = suites.suite_dir(suites.SUITES[name], python, SLOT)
    return suites.SuiteEnv(suite=suites.SUITES[name], base=base,
                           python=base / "venv" / "bin" / "python",
                           src_root=next((base / "src").iterdir()),
                           sdist=next((base / "sdist").glob("*.tar.gz")), test_args=[])


def warm_up(bench: Bench) -> None:
    """One untimed collect-only run, so every variant finds compiled bytecode."""
    log(f"{bench.label}: warm-up (untimed collect-only)")
    subprocess.run(bench.command(ALL_VARIANTS["collect"]), cwd=bench.env.src_root,
                   env=bench.env.run_env(), capture_output=True)


def stop(*_: object) -> None:
    """Stop the benchmark (SIGTERM): kill the running pytest processes, start no more."""
    STOPPING.set()
    for proc in list(RUNNING):
        proc.kill()


def run_lanes(lanes: list[list[Bench]], args: argparse.Namespace, report) -> None:
    """Run every lane's benches, the lanes side by side (one thread per interpreter).

    Within a lane, repetitions are the outer loop (rep 1 of every suite and variant,
    then rep 2, ...)."""
    errors: list[BaseException] = []

    def lane(benches: list[Bench]) -> None:
        try:
            for rep in range(1, args.runs + 1):
                for bench in benches:
                    for v in selected_variants(args, bench.env.suite):
                        if STOPPING.is_set():
                            return
                        bench.run(v, rep)
                        report()
        except Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)
            stop()

    threads = [threading.Thread(target=lane, args=(group,)) for group in lanes]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C: stop the lanes, let them restore their edits
        stop()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]


def main(argv: list[str] | None = None) -> int:
    """Prepare suites, run the benchmark, print and write the report.

    The report is rewritten after every run, so an interrupted benchmark still
    leaves the medians of what it measured."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop)
    if args.rerender:
        meta = json.loads(META.read_text())
        run_args = parse_args(meta["argv"])
        run_args.output, run_args.no_write, run_args.rerender = args.output, args.no_write, True
        if args.note:
            meta["notes"] = meta.get("notes", []) + args.note
            META.write_text(json.dumps(meta, indent=1))
        args = run_args
    else:
        pythons = [suites.resolve_python(spec) for spec in args.python]
        meta = {"argv": argv, "python": pythons, "start": now(), "notes": args.note,
                "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                "info": machine_info(), "versions": {py: python_version(py) for py in pythons}}
    # A report of an older bench.py: one interpreter, its version in the machine info.
    pythons = meta["python"] if isinstance(meta["python"], list) else [meta["python"]]
    versions = meta.get("versions") or {pythons[0]: meta["info"]["python"]}
    lanes: list[list[Bench]] = []
    for python in pythons:
        lanes.append([])
        for name in args.suites:
            label = f"{name} ({versions[python]})" if len(pythons) > 1 else name
            if args.rerender:
                bench = Bench(locate(name, python), args.timeout, versions[python], label)
                runs_file = bench.dir / "runs.json"
                if runs_file.exists():
                    bench.runs = [Run(**r) for r in json.loads(runs_file.read_text())]
            else:
                env = suites.prepare(name, python, slot=SLOT)
                check_plugin(env)
                bench = Bench(env, args.timeout, versions[python], label)
                warm_up(bench)
            lanes[-1].append(bench)
    benches = [bench for lane in lanes for bench in lane]
    writing = threading.Lock()

    def report() -> str:
        with writing:
            if not args.rerender:
                meta.update(end=now(), load_end=" ".join(f"{x:.2f}" for x in os.getloadavg()))
                meta["plugin hash end"] = plugin_fingerprint()
            if not (args.rerender or args.no_write):  # save what --rerender needs
                META.write_text(json.dumps(meta, indent=1))
                for b in benches:
                    (b.dir / "runs.json").write_text(
                        json.dumps([dataclasses.asdict(r) for r in b.runs], indent=1))
            text = render(benches, meta, args)
            if not args.no_write:
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(text)
            return text

    if not args.rerender:
        run_lanes(lanes, args, report)
    print(report())
    if STOPPING.is_set():
        return 143
    return 1 if any("MISMATCH" in p for b in benches for p in b.problems()) else 0


if __name__ == "__main__":
    sys.exit(main())
