"""Aggregate stored records into boards: one per (task, level), rows per defense (docs/design.md, "Scoring").

privacy(defense, task, level) = 1 - max over attacks of the mean advantage over seeds;
utility = accuracy(defense) / accuracy(none). Records that failed or were not applicable are
excluded from privacy and counted separately so a reader sees them.

This is the one aggregation path: ``render_text`` prints it (``disguisebench show``) and
``benchmark.report`` writes it to files (``disguisebench leaderboard``).

Intervals (95 %):

- privacy: a bootstrap over targets. Each resample draws the targets again, with replacement,
  within each seed (the same draw for every attack of that seed, so the attacks stay paired), then
  recomputes each attack's advantage from its per-target outcomes, averages over seeds and takes
  the worst attack. The chance level is held at the record's value. Membership attacks resample
  members and non-members separately and recompute the AUC.
- accuracy and utility: the test images are a sample too; each seed's accuracy k/n is drawn from
  its Jeffreys posterior Beta(k + 1/2, n - k + 1/2) (Brown, Cai & DasGupta, "Interval estimation
  for a binomial proportion", 2001), then averaged over seeds, or divided by the draw of the
  ``none`` model first for utility. Drawing the two models independently ignores that they share
  the test images, so the utility interval errs on the wide side.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable
from statistics import mean
from typing import Any

import numpy as np

from benchmark.store import FAILED, NOT_APPLICABLE, OK, Record

RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
# Record meta that describes one record rather than the software and machine that produced it.
_PER_RECORD_META = frozenset({"wall_seconds", "granted", "missing", "artifact", "date"})

Interval = tuple[float, float]


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
class AttackResult:
    """One attack against one defense at one level, over the plan's seeds."""

    label: str
    spec: dict
    goal: str | None
    advantage: float | None = None  # mean over the seeds where it ran; None if it never did
    interval: Interval | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # scalar means
    seeds: list[int] = dataclasses.field(default_factory=list)  # seeds where it ran
    failed: int = 0
    not_applicable: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)  # capabilities the level lacks
    artifacts: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> gallery file

    @property
    def status(self) -> str:
        if self.seeds:
            return OK
        return FAILED if self.failed else NOT_APPLICABLE


@dataclasses.dataclass
class Row:
    defense: str
    spec: dict
    accuracy: float | None
    utility: float | None
    privacy: float | None
    worst_attack: str | None
    advantages: dict[str, float]  # attacks that ran: label -> mean advantage over seeds
    failed: int = 0
    not_applicable: int = 0
    seeds: int = 0
    accuracy_interval: Interval | None = None
    utility_interval: Interval | None = None
    privacy_interval: Interval | None = None
    baseline_accuracy: float | None = None  # the `none` model's accuracy
    attacks: dict[str, AttackResult] = dataclasses.field(default_factory=dict)
    pareto: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Board:
    task: str
    level: str
    rows: list[Row]
    task_spec: dict = dataclasses.field(default_factory=dict)

    def attack_labels(self) -> list[str]:
        """Every attack recorded on this board, in a stable order."""
        return sorted({a for row in self.rows for a in row.attacks})


def _interval(draws: np.ndarray | None) -> Interval | None:
    if draws is None:
        return None
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def pareto_front(points: list[tuple[float | None, float | None]]) -> list[bool]:
    """Whether each (privacy, utility) point is on the front: no other point is at least as good
    in both and better in one. Points missing either number are never on it."""
    front = []
    for i, (p, u) in enumerate(points):
        if p is None or u is None:
            front.append(False)
            continue
        dominated = any(
            q is not None and v is not None and q >= p and v >= u and (q > p or v > u)
            for j, (q, v) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


class _Resampler:
    """Bootstrap draws of target indices, shared by every attack of one seed."""

    def __init__(self, rng: np.random.Generator, resamples: int) -> None:
        self.rng, self.resamples, self._cache = rng, resamples, {}

    def indices(self, *sizes: int) -> tuple[np.ndarray, ...]:
        if sizes not in self._cache:
            self._cache[sizes] = tuple(self.rng.integers(0, n, (self.resamples, n)) for n in sizes)
        return self._cache[sizes]


def _advantage(success: np.ndarray, chance: float) -> np.ndarray:
    if chance >= 1.0:
        return np.zeros_like(success)
    return np.maximum(0.0, (success - chance) / (1.0 - chance))


def _auc(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """Mann-Whitney AUC per row of ``scores``, whose first ``n_pos`` columns are the members."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)  # ties get their average rank, so count half
    n_neg = scores.shape[1] - n_pos
    return (ranks[:, :n_pos].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _resampled_advantage(metrics: dict[str, Any], draw: _Resampler) -> np.ndarray | None:
    """The attack's advantage on each bootstrap resample of its targets, or None if the record
    keeps no per-target outcomes."""
    if "per_target" in metrics and len(metrics["per_target"]):
        hits = np.asarray(metrics["per_target"], dtype=float)
        (idx,) = draw.indices(len(hits))
        return _advantage(hits[idx].mean(1), float(metrics["chance"]))
    if "scores" in metrics and "member" in metrics:
        scores = np.asarray(metrics["scores"], dtype=float)
        member = np.asarray(metrics["member"], dtype=bool)
        pos, neg = scores[member], scores[~member]
        if len(pos) == 0 or len(neg) == 0:
            return None
        ip, ineg = draw.indices(len(pos), len(neg))
        auc = _auc(np.concatenate([pos[ip], neg[ineg]], axis=1), len(pos))
        return _advantage(auc, 0.5)
    return None


@dataclasses.dataclass
class _Attack:
    """What the records say about one attack in one (task, level, defense)."""

    spec: dict
    label: str
    goal: str | None = None
    ok: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # seed -> metrics
    artifacts: dict[int, str] = dataclasses.field(default_factory=dict)
    failed: int = 0
    not_applicable: int = 0
    errors: set[str] = dataclasses.field(default_factory=set)
    missing: set[str] = dataclasses.field(default_factory=set)


def _attack_results(collected: dict[str, _Attack], resamples: int
                    ) -> tuple[dict[str, AttackResult], Interval | None, list[str]]:
    """Per-attack results with intervals, and the privacy interval of the worst case."""
    results: dict[str, AttackResult] = {}
    for a in collected.values():
        label = a.label
        seeds = sorted(a.ok)
        scalars = defaultdict(list)
        for s in seeds:
            for name, value in a.ok[s].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    scalars[name].append(float(value))
        results[label] = AttackResult(
            label=label, spec=a.spec, goal=a.goal,
            advantage=mean(a.ok[s]["advantage"] for s in seeds) if seeds else None,
            metrics={k: mean(v) for k, v in sorted(scalars.items())},
            seeds=seeds, failed=a.failed, not_applicable=a.not_applicable,
            errors=sorted(a.errors), missing=sorted(a.missing),
            artifacts=dict(sorted(a.artifacts.items())))

    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws: dict[str, list[np.ndarray]] = defaultdict(list)
    notes = []
    by_label = {a.label: a for a in collected.values()}
    all_seeds = sorted({s for a in collected.values() for s in a.ok})
    fixed = set()
    for s in all_seeds:
        draw = _Resampler(rng, resamples)
        for label in sorted(by_label):
            metrics = by_label[label].ok.get(s)
            if metrics is None:
                continue
            resampled = _resampled_advantage(metrics, draw)
            if resampled is None:
                fixed.add(label)
                resampled = np.full(resamples, float(metrics["advantage"]))
            draws[label].append(resampled)
    per_attack = {label: np.mean(d, axis=0) for label, d in draws.items()}
    for label, d in per_attack.items():
        results[label].interval = _interval(d) if label not in fixed else None
    if fixed:
        notes.append("no per-target outcomes stored for " + ", ".join(sorted(fixed)) +
                     "; the privacy interval holds their advantage fixed")
    privacy = _interval(1.0 - np.max(np.stack(list(per_attack.values())), axis=0)) \
        if per_attack else None
    return results, privacy, notes


def _jeffreys(accuracy: float, n: int | None, rng: np.random.Generator,
              resamples: int) -> np.ndarray | None:
    if not n:
        return None
    k = round(accuracy * n)
    return rng.beta(k + 0.5, n - k + 0.5, size=resamples)


def _summarise_meta(metas: list[dict[str, Any]], seeds: Iterable[int]) -> dict[str, Any]:
    """One manifest for an entry: each provenance field with its single value, or the sorted
    distinct values where the records disagree; the seeds; the date of the latest record; the
    compute time of all records together."""
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    for meta in metas:
        for key, value in meta.items():
            if key not in _PER_RECORD_META and value is not None:
                values[key][json.dumps(value, sort_keys=True)] = value
    out: dict[str, Any] = {}
    for key in sorted(values):
        distinct = [values[key][k] for k in sorted(values[key])]
        out[key] = distinct[0] if len(distinct) == 1 else distinct
    out["seeds"] = sorted(set(seeds))
    dates = [m["date"] for m in metas if m.get("date")]
    out["date"] = max(dates) if dates else None
    out["wall_seconds"] = round(sum(float(m.get("wall_seconds") or 0.0) for m in metas), 3)
    return out


def aggregate(records: Iterable[Record], *, resamples: int = RESAMPLES) -> list[Board]:
    """Boards of rows, each row one defense with its utility, privacy and every attack."""
    specs: dict[str, dict] = {}
    # accuracy[t][d][seed] = (accuracy, number of test images or None)
    accuracy: dict[str, dict[str, dict[int, tuple[float, int | None]]]] = defaultdict(
        lambda: defaultdict(dict))
    utility_meta: dict[tuple[str, str], list[dict]] = defaultdict(list)
    utility_errors: dict[tuple[str, str], set[str]] = defaultdict(set)
    cells: dict[tuple[str, str, str], dict[str, _Attack]] = defaultdict(dict)
    cell_meta: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    cell_seeds: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    levels: dict[str, set[str]] = defaultdict(set)
    defenses: dict[str, set[str]] = defaultdict(set)
    labels: dict[str, str] = {}

    for rec in records:
        t, d = _key(rec.task), _key(rec.defense)
        specs[t], specs[d] = rec.task, rec.defense
        defenses[t].add(d)
        if rec.attack is None:
            utility_meta[(t, d)].append(rec.meta)
            if rec.status == OK:
                accuracy[t][d][rec.seed] = (float(rec.metrics["accuracy"]),
                                            rec.metrics.get("n_test"))
            elif rec.error:
                utility_errors[(t, d)].add(rec.error)
            continue
        levels[t].add(rec.level)
        cell = (t, rec.level, d)
        key = _key(rec.attack)
        a = cells[cell].get(key)
        if a is None:
            if key not in labels:
                label = spec_label("attack", rec.attack)
                if label in labels.values():  # two specs, one display name: keep both apart
                    from benchmark.plan import spec_hash

                    label = f"{label} #{spec_hash(rec.attack)[:6]}"
                labels[key] = label
            a = cells[cell][key] = _Attack(spec=rec.attack, label=labels[key])
        a.goal = a.goal or rec.goal
        if rec.status == OK:
            a.ok[rec.seed] = rec.metrics
            cell_meta[cell].append(rec.meta)
            cell_seeds[cell].add(rec.seed)
            if rec.meta.get("artifact"):
                a.artifacts[rec.seed] = rec.meta["artifact"]
        elif rec.status == FAILED:
            a.failed += 1
            if rec.error:
                a.errors.add(rec.error)
        elif rec.status == NOT_APPLICABLE:
            a.not_applicable += 1
            a.missing.update(rec.meta.get("missing", []))

    boards = []
    for t in sorted(levels, key=lambda k: (spec_label("task", specs[k]), k)):
        utility = _utility(accuracy[t], specs, resamples)
        for level in sorted(levels[t]):
            rows = []
            for d in defenses[t]:
                collected = cells.get((t, level, d), {})
                attacks, privacy_interval, notes = _attack_results(collected, resamples)
                advs = {label: r.advantage for label, r in attacks.items() if r.advantage is not None}
                worst = max(sorted(advs), key=advs.get) if advs else None
                u = utility.get(d, {})
                errors = sorted(utility_errors.get((t, d), ()))
                if errors:
                    notes.insert(0, "training failed: " + "; ".join(errors))
                seeds = set(accuracy[t][d]) | cell_seeds[(t, level, d)]
                rows.append(Row(
                    defense=spec_label("defense", specs[d]), spec=specs[d],
                    accuracy=u.get("accuracy"), utility=u.get("utility"),
                    privacy=None if worst is None else 1.0 - advs[worst],
                    worst_attack=worst, advantages=advs,
                    failed=sum(r.failed for r in attacks.values()),
                    not_applicable=sum(r.not_applicable for r in attacks.values()),
                    seeds=len(accuracy[t][d]),
                    accuracy_interval=u.get("accuracy_interval"),
                    utility_interval=u.get("utility_interval"),
                    privacy_interval=privacy_interval,
                    baseline_accuracy=u.get("baseline"),
                    attacks=dict(sorted(attacks.items())),
                    notes=notes + u.get("notes", []),
                    manifest=_summarise_meta(utility_meta[(t, d)] + cell_meta[(t, level, d)],
                                             seeds),
                ))
            rows.sort(key=lambda r: (-(r.privacy if r.privacy is not None else -1),
                                     -(r.utility if r.utility is not None else -1), r.defense))
            for row, on_front in zip(rows, pareto_front([(r.privacy, r.utility) for r in rows])):
                row.pareto = on_front
            boards.append(Board(task=spec_label("task", specs[t]), level=level, rows=rows,
                                task_spec=specs[t]))
    return boards


def _utility(accuracy: dict[str, dict[int, tuple[float, int | None]]], specs: dict[str, dict],
             resamples: int) -> dict[str, dict[str, Any]]:
    """Accuracy, utility and their intervals for every defense of one task."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = {(d, s): _jeffreys(acc, n, rng, resamples)
             for d in sorted(accuracy) for s, (acc, n) in sorted(accuracy[d].items())}
    base = next((d for d in sorted(accuracy) if specs[d]["name"] == "none"), None)
    out: dict[str, dict[str, Any]] = {}
    for d, by_seed in accuracy.items():
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        acc_draws = [draws[(d, s)] for s in seeds]
        entry: dict[str, Any] = {
            "accuracy": mean(by_seed[s][0] for s in seeds),
            "accuracy_interval": (None if any(x is None for x in acc_draws)
                                  else _interval(np.mean(acc_draws, axis=0))),
            "notes": [],
        }
        if entry["accuracy_interval"] is None:
            entry["notes"].append("no test-set size stored; accuracy and utility carry no interval")
        if base is not None:
            paired = [s for s in seeds if s in accuracy[base] and accuracy[base][s][0] > 0]
            if paired:
                entry["baseline"] = mean(accuracy[base][s][0] for s in paired)
                entry["utility"] = mean(by_seed[s][0] / accuracy[base][s][0] for s in paired)
                ratio = [draws[(d, s)] / draws[(base, s)] for s in paired
                         if draws[(d, s)] is not None and draws[(base, s)] is not None]
                if len(ratio) == len(paired):
                    entry["utility_interval"] = _interval(np.mean(ratio, axis=0))
        out[d] = entry
    return out


def _fmt(value: float | None, interval: Interval | None = None) -> str:
    if value is None:
        return "-"
    if interval is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def render_text(boards: list[Board]) -> str:
    """One plain-text table per (task, level), as `disguisebench show` prints."""
    from tabulate import tabulate

    parts = []
    for board in boards:
        table = [["*" if r.pareto else "", r.defense, _fmt(r.accuracy, r.accuracy_interval),
                  _fmt(r.utility, r.utility_interval), _fmt(r.privacy, r.privacy_interval),
                  "-" if r.worst_attack is None
                  else f"{r.worst_attack} ({r.advantages[r.worst_attack]:.3f})",
                  r.failed or "", r.not_applicable or ""]
                 for r in board.rows]
        parts.append(f"{board.task} / {board.level}\n" + tabulate(
            table, headers=["", "defense", "accuracy", "utility", "privacy",
                            "worst attack (advantage)", "failed", "n/a"]))
    if not parts:
        return "no results yet"
    return "\n\n".join(parts) + (
        f"\n\n* on the Pareto front of privacy and utility; [..] {CONFIDENCE:.0%} intervals")
