"""``--vault-explain=NODEID``: the inputs recorded for one test, and which differ now.

Reads the store the way a lookup does (same key, same checks), but reports every input
instead of stopping at the first difference. Needs no tracer and no session, so the
process that prints the terminal summary (an xdist controller too) can answer.
"""

from __future__ import annotations

import time

from . import audit, records
from .inputs import Dependencies, env_digest, input_path, is_group, is_safe_relpath
from .store import Store, is_name

_KINDS = ("file", "code", "ran", "listing", "env")


def _state(deps: Dependencies, kind: str, name: str, digest: object) -> str:
    relpath = input_path(kind, name)
    if kind == "env":
        now = env_digest(name)
    elif not (is_safe_relpath(relpath) or relpath == "."):
        return "not a path under the rootdir: never read"
    else:
        now = deps.current(kind, name)
    if now == digest:
        return "unchanged" if digest is not None else "absent, as recorded"
    return "absent now" if now is None else ("was absent" if digest is None else "changed")


def _group_lines(deps: Dependencies, group: dict, indent: str) -> list[str]:
    lines = []
    for kind in _KINDS:
        for name, digest in group.get(kind, {}).items():
            shown = "(every variable)" if name == audit.WHOLE_ENVIRONMENT else name
            lines.append(f"{indent}{kind:<8}{shown:<50} {_state(deps, kind, name, digest)}")
    return lines


def describe(store: Store, deps: Dependencies, key: str, nodeid: str) -> list[str]:
    """Lines describing every stored result of ``nodeid`` under this environment, in the
    order a lookup tries them (``key``: its module's results)."""
    lines = [f"inputs recorded for {nodeid}:"]
    stored = records.ModuleResults(store, key).entries(nodeid)
    found = [(candidate.payload, entry) for candidate, entry in stored]
    if key in store.ignored:
        lines.append(f"  {store.ignored[key]} (PYTEST_VAULT_KEY is set; only records signed with it count)")
    if not found:
        return [*lines, "  no record under this environment (new, or the environment changed)"]
    for number, (payload, entry) in enumerate(found, 1):
        created = payload.get("created")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if isinstance(created, int) else "?"
        lines.append(f"  record {number} of {len(found)}, made {when}, outcome {entry.get('outcome')}")
        joined = records.whole(payload, entry)
        if joined is None:
            lines.append("    (malformed inputs)")
            continue
        own = joined["inputs"]
        verdict = deps.changed(own)
        lines.extend(_group_lines(deps, own, "    "))
        for name in joined["shared"]:
            group = store.get_object(name) if is_name(name) else None
            if not is_group(group):
                lines.append("    shared import state: missing from the store")
                verdict = verdict or "shared import state missing"
                continue
            state = deps.changed(group) or "unchanged"
            sizes = ", ".join(f"{len(group.get(k, {}))} {k}" for k in (*_KINDS, "external"))
            lines.append(f"    shared import state ({sizes}): {state}")
            verdict = verdict or (None if state == "unchanged" else state)
        lines.append(f"    → {'would replay' if verdict is None else verdict}")
    return lines
