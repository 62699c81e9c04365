"""One leaderboard entry per (task, level, defense) as JSON, and where each board's files go."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from disguisebench.leaderboard import (
    BREAK, CONFIDENCE, RESAMPLES, AttackResult, Board, Curve, Interval, Row,
)

SCHEMA_VERSION = 1

_PRIVACY_METHOD = (f"{CONFIDENCE:.0%} percentile bootstrap ({RESAMPLES} resamples) over seeds "
                   "(each a new key, training run and draw of targets) and over the targets "
                   "within each drawn seed, the same draws for every attack and level; worst "
                   "attack per resample, then the minimum over this level and the levels below; "
                   "a seed whose hits are all or none is drawn from the Jeffreys posterior "
                   "Beta(k+1/2, n-k+1/2) instead, so 100 of 100 never gives [1.00, 1.00]")
_CURVE_METHOD = ("this level's privacy (1 - the worst attack's advantage) at each value of the "
                 "resource, every attack at its largest point with that value, and never above "
                 "the privacy at a smaller value (this_value: the value's own); to_break: the "
                 f"smallest value with privacy below {BREAK:g} (null with broken false: no "
                 f"value tried; a null value in points: unlimited queries), its interval the "
                 f"{CONFIDENCE:.0%} range of that value over the privacy bootstrap's resamples, "
                 "as indices into points (the number of points: not broken in those resamples) "
                 "and as text")
_UTILITY_METHOD = (f"{CONFIDENCE:.0%} interval from Jeffreys Beta(k+1/2, n-k+1/2) draws of each "
                   "seed's test accuracy, seeds resampled as for privacy (utility: divided by "
                   "the none model's draw of the same seed first)")


def slug(text: str) -> str:
    """A file-name-safe form of a label: ``block-rmt(block=4)`` -> ``block-rmt-block-4``."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "x"


def _number(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _interval(value: Interval | None) -> list[float] | None:
    return None if value is None else [_number(value[0]), _number(value[1])]


@dataclasses.dataclass
class _Paths:
    """Where one board's files go, relative to the output folder."""

    task: str
    level: str
    entries: dict[str, str]  # defense label -> entry path

    @property
    def plot(self) -> str:
        return f"plots/{self.task}/{self.level}.png"

    @property
    def gallery(self) -> str:
        return f"gallery/{self.task}/{self.level}.png"

    @property
    def curves(self) -> str:
        """Privacy against the swept resources (boards of plans with sweeps only)."""
        return f"plots/{self.task}/{self.level}-curves.png"


def board_paths(board: Board) -> _Paths:
    task, level = slug(board.task), slug(board.level)
    entries: dict[str, str] = {}
    taken: set[str] = set()
    for row in board.rows:
        name = slug(row.defense)
        if name in taken:  # two labels that differ only in punctuation
            from disguisebench.plan import spec_hash

            name = f"{name}-{spec_hash(row.spec)[:8]}"
        taken.add(name)
        entries[row.defense] = f"entries/{task}/{level}/{name}.json"
    return _Paths(task, level, entries)


def _attack_json(result: AttackResult) -> dict[str, Any]:
    return {
        "spec": result.spec,
        "goal": result.goal,
        "status": result.status,
        "advantage": _number(result.advantage),
        "interval": _interval(result.interval),
        "metrics": {k: _number(v) for k, v in result.metrics.items()},
        "seeds": result.seeds,
        "refused": result.refused,
        "failed": result.failed,
        "not_applicable": result.not_applicable,
        "refusals": result.refusals,
        "errors": result.errors,
        "missing": result.missing,
        "reasons": result.reasons,
    }


def _curve_json(curve: Curve) -> dict[str, Any]:
    return {
        "name": curve.name,
        "points": [{"value": p.value, "privacy": _number(p.privacy),
                    "interval": _interval(p.interval), "worst_attack": p.worst_attack,
                    "this_value": _number(p.own)}
                   for p in curve.points],
        "to_break": {"below": BREAK, "value": curve.cost, "broken": curve.broken,
                     "broken_at_lower_level": curve.broken_below,
                     "interval_index": None if curve.broken_below else list(curve.cost_interval),
                     "interval": None if curve.broken_below else [
                         curve.end_text(j) for j in curve.cost_interval],
                     "text": curve.cost_text()},
        "method": _CURVE_METHOD,
    }


def entry(board: Board, row: Row) -> dict[str, Any]:
    """The JSON leaderboard entry of one (task, level, defense): numbers as JSON numbers; with
    ``curves`` (resource -> privacy at each value, cost to break) where a resource was swept."""
    worst = row.attacks.get(row.worst_attack) if row.worst_attack else None
    out = {
        "schema": SCHEMA_VERSION,
        "task": {"label": board.task, "spec": board.task_spec},
        "level": board.level,
        "defense": {"label": row.defense, "spec": row.spec},
        "rank": row.rank,  # null: incomplete or without privacy, never ranked
        "rank_shared": row.rank_shared,
        "pareto": row.pareto,
        "privacy": {
            "value": _number(row.privacy),
            "interval": _interval(row.privacy_interval),
            "seeds": row.seeds,
            "complete": row.complete,
            "upper_bound": not row.complete,  # an attack failed: the value may be lower
            "set_at_level": row.worst_level,
            "this_level": _number(row.level_privacy),
            "this_level_interval": _interval(row.level_privacy_interval),
            "method": _PRIVACY_METHOD,
        },
        "utility": {
            "ratio": _number(row.utility),
            "ratio_interval": _interval(row.utility_interval),
            "accuracy": _number(row.accuracy),
            "accuracy_interval": _interval(row.accuracy_interval),
            "baseline_accuracy": _number(row.baseline_accuracy),
            "seeds": row.utility_seeds,
            "method": _UTILITY_METHOD,
        },
        "worst_attack": None if row.worst_attack is None else {
            "label": row.worst_attack, "level": row.worst_level,
            "goal": None if worst is None else worst.goal,
            "advantage": _number(row.worst_advantage),
            "interval": _interval(row.worst_interval)},
        "attacks": {label: _attack_json(a) for label, a in row.attacks.items()},
        "records": {"refused": row.refused, "failed": row.failed,
                    "not_applicable": row.not_applicable},
        "notes": row.notes,
        "manifest": row.manifest,
    }
    if row.curves:
        out["curves"] = {resource: _curve_json(c) for resource, c in row.curves.items()}
    return out


def _dump(obj: Any) -> str:
    # allow_nan=False: a NaN would be written as a bare token no JSON parser accepts.
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"
