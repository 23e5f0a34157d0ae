"""``--vault-stats``: what the store holds and how often recent runs replayed.

Reads the store only (no pytest, no tracing), like :mod:`gc`. Entries count test
results: a test recorded by several runs (branches, edits) counts once per run.
"""

from __future__ import annotations

import dataclasses
import time

from .gc import format_size
from .records import tests_of
from .store import Store


@dataclasses.dataclass
class Stats:
    records: int = 0
    objects: int = 0
    size: int = 0
    oldest_use: float | None = None
    newest_use: float | None = None
    runs: list[dict[str, int]] = dataclasses.field(default_factory=list)

    def describe(self, store: Store) -> list[str]:
        lines = [
            f"vault stats for {store.directory}",
            f"  entries: {self.records} test results, {self.objects} shared input sets, "
            f"{format_size(self.size)}",
        ]
        if self.oldest_use is not None and self.newest_use is not None:
            lines.append(f"  oldest use: {_when(self.oldest_use)}; newest use: {_when(self.newest_use)}")
        if not self.runs:
            lines.append("  no runs recorded yet")
            return lines
        replayed = sum(run.get("replayed", 0) for run in self.runs)
        total = replayed + sum(run.get("ran", 0) for run in self.runs)
        rate = f"{100 * replayed / total:.0f}%" if total else "-"
        lines.append(f"  hit rate of the last {len(self.runs)} runs: {rate} ({replayed} of {total} tests replayed)")
        for run in self.runs[-5:]:
            ran, hits = run.get("ran", 0), run.get("replayed", 0)
            lines.append(f"    {_when(run.get('finished', 0))}: {hits} replayed, {ran} run")
        return lines


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def gather(store: Store) -> Stats:
    stats = Stats(runs=store.recent_runs())
    for path, st in store.iter_records():
        stats.records += len(tests_of(store.read_record(path).payload))
        stats.size += st.st_size
        stats.oldest_use = min(st.st_mtime, stats.oldest_use or st.st_mtime)
        stats.newest_use = max(st.st_mtime, stats.newest_use or st.st_mtime)
    for _, _, st in store.iter_objects():
        stats.objects += 1
        stats.size += st.st_size
    return stats
