"""Aggregate stored records into boards: one per (task, level), rows per defense (DESIGN §4).

privacy(defense, task, level) = 1 - max over attacks of the mean advantage over seeds;
utility = accuracy(defense) / accuracy(none). Records that failed or were not applicable are
excluded from privacy and counted separately so a reader sees them.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable
from statistics import mean

from benchmark.store import FAILED, NOT_APPLICABLE, OK, Record


def spec_label(kind: str, spec: dict) -> str:
    """The display name of a stored spec: the registry label, or every parameter if unregistered."""
    from benchmark import registry
    from benchmark.api import PluginError

    try:
        return registry.create(kind, spec["name"], spec["params"]).label()
    except PluginError:  # a plugin not installed here, or a spec from another version
        pass
    params = ", ".join(f"{k}={v}" for k, v in spec["params"].items())
    return f"{spec['name']}({params})" if params else spec["name"]


def _key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


@dataclasses.dataclass
class Row:
    defense: str
    spec: dict
    accuracy: float | None
    utility: float | None
    privacy: float | None
    worst_attack: str | None
    advantages: dict[str, float]
    failed: int = 0
    not_applicable: int = 0
    seeds: int = 0


@dataclasses.dataclass
class Board:
    task: str
    level: str
    rows: list[Row]


def aggregate(records: Iterable[Record]) -> list[Board]:
    records = list(records)
    # accuracy[(task, defense)][seed]
    accuracy: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    specs: dict[str, dict] = {}
    attacks: dict[tuple[str, str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict))
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    levels: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        t, d = _key(rec.task), _key(rec.defense)
        specs[t], specs[d] = rec.task, rec.defense
        if rec.attack is None:
            if rec.status == OK:
                accuracy[(t, d)][rec.seed] = rec.metrics["accuracy"]
            continue
        levels[t].add(rec.level)
        cell = (t, rec.level, d)
        if rec.status == OK:
            attacks[cell][spec_label("attack", rec.attack)][rec.seed] = rec.metrics["advantage"]
        elif rec.status == FAILED:
            counts[cell]["failed"] += 1
        elif rec.status == NOT_APPLICABLE:
            counts[cell]["not_applicable"] += 1

    none_key = {t: d for (t, d) in accuracy if specs[d]["name"] == "none"}
    boards = []
    for t in sorted(levels, key=lambda k: specs[k]["name"]):
        for level in sorted(levels[t]):
            rows = []
            defenses = {d for (tt, d) in accuracy if tt == t} | {
                d for (tt, lv, d) in list(attacks) + list(counts) if tt == t and lv == level}
            for d in defenses:
                acc = accuracy.get((t, d), {})
                base = accuracy.get((t, none_key[t]), {}) if t in none_key else {}
                ratios = [acc[s] / base[s] for s in acc if s in base and base[s] > 0]
                advs = {a: mean(by_seed.values()) for a, by_seed in attacks[(t, level, d)].items()}
                worst = max(advs, key=advs.get) if advs else None
                rows.append(Row(
                    defense=spec_label("defense", specs[d]), spec=specs[d],
                    accuracy=mean(acc.values()) if acc else None,
                    utility=mean(ratios) if ratios else None,
                    privacy=None if worst is None else 1.0 - advs[worst],
                    worst_attack=worst, advantages=advs,
                    failed=counts[(t, level, d)]["failed"],
                    not_applicable=counts[(t, level, d)]["not_applicable"],
                    seeds=len(acc),
                ))
            rows.sort(key=lambda r: (-(r.privacy if r.privacy is not None else -1),
                                     -(r.utility if r.utility is not None else -1), r.defense))
            boards.append(Board(task=spec_label("task", specs[t]), level=level, rows=rows))
    return boards


def render_text(boards: list[Board]) -> str:
    """One plain-text table per (task, level), as `disguisebench show` prints."""
    from tabulate import tabulate

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    parts = []
    for board in boards:
        table = [[r.defense, fmt(r.accuracy), fmt(r.utility), fmt(r.privacy),
                  "-" if r.worst_attack is None else f"{r.worst_attack} ({r.advantages[r.worst_attack]:.3f})",
                  r.failed or "", r.not_applicable or ""]
                 for r in board.rows]
        parts.append(f"{board.task} / {board.level}\n" + tabulate(
            table, headers=["defense", "accuracy", "utility", "privacy", "worst attack (advantage)",
                            "failed", "n/a"]))
    return "\n\n".join(parts) if parts else "no results yet"
