"""Aggregate stored records into boards: one per (task, level), rows per defense (docs/design.md, "Scoring").

An attack's advantage is its mean over seeds; the privacy of a defense at a level is
1 - the largest advantage of any attack there, and never above its privacy at a lower level (an
attacker can ignore what it knows): privacy(level k) = min over levels j <= k. Utility =
accuracy(defense) / accuracy(none). Every record status counts:

- ``ok``: scored.
- ``refused``: the defense raised or returned invalid output while the attack used it (its
  clone, a re-fit, the oracle); the attack counts as a complete break, advantage 1 on that
  seed, and the reason is shown.
- ``failed``: the attack's own code raised. Its seed cannot be scored, so the entry is
  *incomplete*: its privacy is only an upper bound (shown with ≤), and it is neither ranked nor
  on the Pareto front, so it never sits above a complete entry. An entry whose lower level is
  incomplete is incomplete too, since that level may set its privacy.
- ``not-applicable``: the level does not grant what the attack needs, or the defense lacks the
  structure it attacks; left out, counted.

This is the one aggregation path: ``render_text`` prints it (``disguisebench show``) and
``benchmark.report`` writes it to files (``disguisebench leaderboard``).

Intervals (95 %, see benchmark.stats):

- privacy: a two-stage bootstrap. Each resample draws the seeds with replacement, then the
  targets within each drawn seed, the same draw for every attack and level of the defense (so
  attacks and levels stay paired); recomputes each attack's advantage (a label attack's chance
  from the public-only baseline's outcomes on the same resampled images), averages over the
  drawn seeds and takes the worst attack, then the minimum over levels. Membership attacks
  resample members and non-members separately and recompute the AUC. A seed whose outcomes sit
  at 0 or 1 is drawn from the Jeffreys posterior instead (``stats``).
- accuracy and utility: each seed's accuracy k/n is drawn from its Jeffreys posterior
  Beta(k + 1/2, n - k + 1/2); the seeds are resampled as for privacy, and utility divides by the
  draw of the ``none`` model of the same seed first. Drawing the two models independently
  ignores that they share the test images, so the utility interval errs on the wide side.

Ranks: complete entries with a privacy are ranked by it; entries whose privacy intervals
overlap share a rank (``stats.shared_ranks``), shown as "=3".

Resource sweeps (a plan whose ``n_known``, ``queries`` or ``compute`` is a list): a record's
resource point is the known pairs it was granted (``meta["n_known"]`` at levels that grant
pairs), its oracle query budget (``meta["queries"]``, absent: unlimited) and its compute
multiplier (``meta["compute"]``, absent: 1). The board shows each attack at its largest point,
the strongest attacker. Where a (task, level, defense) holds several values of a resource, its
row also gets a :class:`Curve`: this level's privacy at each value (every attack at its largest
point with that value; an attack that does not vary in it, at its largest point), never above
its privacy at a smaller value (an attacker can ignore what it is given), and the cost to break, the smallest value at which privacy falls below ``BREAK``, with an interval from the
same bootstrap resamples (the smallest breaking value in each resample).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from statistics import mean
from typing import Any

import numpy as np

from disguisebench import stats
from disguisebench.api import KNOWN_PAIRS, LEVELS
from disguisebench.stats import BOOTSTRAP_SEED, CONFIDENCE, RESAMPLES, Interval, pareto_front
from disguisebench.store import FAILED, NOT_APPLICABLE, OK, REFUSED, Record

# Record meta that describes one record rather than the software and machine that produced it.
_PER_RECORD_META = frozenset({"wall_seconds", "granted", "missing", "artifact", "date"})

# A defense is broken at a resource value once its privacy there falls below this.
BREAK = 0.1
# The resources a plan may sweep, in the order of a record's resource point, with their names
# as a board says them.
RESOURCES = ("n_known", "queries", "compute")
RESOURCE_NAMES = {"n_known": "pairs", "queries": "queries", "compute": "compute"}

__all__ = ["AttackResult", "BREAK", "Board", "CONFIDENCE", "Curve", "CurvePoint", "Interval",
           "RESAMPLES", "RESOURCES", "Row", "aggregate", "level_order", "pareto_front",
           "render_text", "resource_point", "spec_label"]


def spec_label(kind: str, spec: dict) -> str:
    """The display name of a stored spec: the registry label, or every parameter if unregistered."""
    from disguisebench import registry
    from disguisebench.api import PluginError

    try:
        return registry.create(kind, spec["name"], spec["params"]).label()
    except PluginError:  # a plugin not installed here, or a spec from another version
        pass
    params = ", ".join(f"{k}={v}" for k, v in spec["params"].items())
    return f"{spec['name']}({params})" if params else spec["name"]


def _key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def level_order(level: str | None) -> tuple[int, str]:
    """Sort key of a threat level: the order of api.LEVELS (more knowledge later), then name."""
    order = list(LEVELS)
    return (order.index(level) if level in order else len(order), level or "")


@dataclasses.dataclass
class AttackResult:
    """One attack against one defense at one level, over the plan's seeds."""

    label: str
    spec: dict
    goal: str | None
    advantage: float | None = None  # mean over the seeds where it scored; None if it never did
    interval: Interval | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # scalar means (ok seeds)
    seeds: list[int] = dataclasses.field(default_factory=list)  # seeds where it scored
    failed: int = 0
    not_applicable: int = 0
    refused: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)  # the attack's own failures
    refusals: list[str] = dataclasses.field(default_factory=list)  # what the defense did
    missing: list[str] = dataclasses.field(default_factory=list)  # capabilities the level lacks
    reasons: list[str] = dataclasses.field(default_factory=list)  # why else it did not apply
    artifacts: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> gallery file

    @property
    def status(self) -> str:
        """The status that decides how it counts: refused (a break) before failed (incomplete)
        before ok; not-applicable when it neither scored nor failed."""
        if self.refused:
            return REFUSED
        if self.failed:
            return FAILED
        return OK if self.seeds else NOT_APPLICABLE


@dataclasses.dataclass
class CurvePoint:
    """This level's privacy at one value of a swept resource (None: unlimited queries): the
    minimum over it and the smaller values, as over levels; ``own``, the value's own."""

    value: float | None
    privacy: float
    interval: Interval | None
    worst_attack: str | None
    own: float | None = None


@dataclasses.dataclass
class Curve:
    """Privacy against one resource, and the cost to break: the smallest value at which privacy
    falls below ``BREAK`` (``broken`` False: it never did, "> max tried"), with the range of
    that value over the bootstrap resamples as indices into ``points`` (``len(points)``: no
    break in those resamples)."""

    resource: str
    points: list[CurvePoint]
    broken: bool
    cost: float | None
    cost_interval: tuple[int, int]
    broken_below: str | None = None  # a lower level that breaks it with none of this resource

    @property
    def name(self) -> str:
        return RESOURCE_NAMES.get(self.resource, self.resource)

    def beyond(self) -> str:
        """What "never broken" means here: "> 300", or "never" when unlimited was tried."""
        last = self.points[-1].value
        return "never" if last is None else f"> {last:g}"

    def end_text(self, index: int) -> str:
        """The value at ``index`` of the points, or "> max tried" past the last."""
        return self.beyond() if index >= len(self.points) else _value_text(
            self.points[index].value)

    def cost_text(self) -> str:
        """"pairs 30 [10, 100]", "pairs > 300" when no value tried breaks it, "pairs 0
        (level-1 breaks it)" when a lower level already does."""
        if self.broken_below is not None:
            return f"{self.name} 0 ({self.broken_below} breaks it)"
        text = f"{self.name} {_value_text(self.cost) if self.broken else self.beyond()}"
        lo, hi = self.cost_interval
        if lo != hi:
            text += f" [{self.end_text(lo)}, {self.end_text(hi)}]"
        return text


def _value_text(value: float | None) -> str:
    if value is None:
        return "unlimited"
    return f"{value:g}"


@dataclasses.dataclass
class Row:
    defense: str
    spec: dict
    accuracy: float | None
    utility: float | None
    privacy: float | None  # min over this level and the levels below it
    worst_attack: str | None  # the attack that sets ``privacy`` (at ``worst_level``)
    advantages: dict[str, float]  # this level's attacks that scored: label -> mean advantage
    failed: int = 0
    not_applicable: int = 0
    seeds: int = 0  # seeds whose attack records enter privacy
    accuracy_interval: Interval | None = None
    utility_interval: Interval | None = None
    privacy_interval: Interval | None = None
    baseline_accuracy: float | None = None  # the `none` model's accuracy
    attacks: dict[str, AttackResult] = dataclasses.field(default_factory=dict)
    pareto: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)
    refused: int = 0
    complete: bool = True  # False: an attack failed here or below; privacy is an upper bound
    worst_advantage: float | None = None
    worst_interval: Interval | None = None
    worst_level: str | None = None  # the level whose attacks set ``privacy``
    level_privacy: float | None = None  # 1 - the worst advantage at this level alone
    level_privacy_interval: Interval | None = None
    utility_seeds: int = 0
    rank: int | None = None  # None: incomplete or without privacy, so never ranked
    rank_shared: bool = False
    curves: dict[str, Curve] = dataclasses.field(default_factory=dict)  # swept resource -> curve

    @property
    def rank_label(self) -> str:
        if self.rank is None:
            return ""
        return f"={self.rank}" if self.rank_shared else str(self.rank)


@dataclasses.dataclass
class Board:
    task: str
    level: str
    rows: list[Row]
    task_spec: dict = dataclasses.field(default_factory=dict)

    def attack_labels(self) -> list[str]:
        """Every attack recorded on this board, in a stable order."""
        return sorted({a for row in self.rows for a in row.attacks})

    def resources(self) -> list[str]:
        """The resources some row of this board has a curve over, in ``RESOURCES`` order."""
        return [r for r in RESOURCES if any(r in row.curves for row in self.rows)]


@dataclasses.dataclass
class _Attack:
    """What the records say about one attack in one (task, level, defense)."""

    spec: dict
    label: str
    goal: str | None = None
    ok: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # seed -> metrics
    refused: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> reason
    artifacts: dict[int, str] = dataclasses.field(default_factory=dict)
    failed: int = 0
    not_applicable: int = 0
    errors: set[str] = dataclasses.field(default_factory=set)
    missing: set[str] = dataclasses.field(default_factory=set)
    reasons: set[str] = dataclasses.field(default_factory=set)

    def scored(self) -> list[int]:
        return sorted(set(self.ok) | set(self.refused))

    def add(self, rec: Record) -> None:
        """Count one of its records by status."""
        if rec.status in (OK, REFUSED):
            if rec.status == OK:
                self.ok[rec.seed] = rec.metrics
            else:
                self.refused[rec.seed] = rec.error or "the defense refused (no reason recorded)"
            if rec.meta.get("artifact"):
                self.artifacts[rec.seed] = rec.meta["artifact"]
        elif rec.status == FAILED:
            self.failed += 1
            if rec.error:
                self.errors.add(rec.error)
        elif rec.status == NOT_APPLICABLE:
            self.not_applicable += 1
            self.missing.update(rec.meta.get("missing", []))
            if rec.error:
                self.reasons.add(rec.error)


@dataclasses.dataclass
class _Level:
    """One (task, level, defense) before the levels below it are taken into account."""

    attacks: dict[str, AttackResult]
    draws: np.ndarray | None  # privacy at this level alone, per resample
    privacy: float | None
    worst: str | None
    complete: bool
    notes: list[str]


def _level(collected: dict[str, _Attack], draws: stats.Draws) -> _Level:
    """Per-attack results with intervals, and this level's privacy and its draws."""
    results: dict[str, AttackResult] = {}
    per_attack: dict[str, np.ndarray] = {}
    fixed = []
    for a in sorted(collected.values(), key=lambda a: a.label):
        seeds = a.scored()
        # A refusal is a complete break of that seed; the defense, not chance, decided it.
        advantage = {s: 1.0 if s in a.refused else float(a.ok[s]["advantage"]) for s in seeds}
        scalars = defaultdict(list)
        for s in sorted(a.ok):
            for name, value in a.ok[s].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    scalars[name].append(float(value))
        result = AttackResult(
            label=a.label, spec=a.spec, goal=a.goal,
            advantage=mean(advantage.values()) if seeds else None,
            metrics={k: mean(v) for k, v in sorted(scalars.items())},
            seeds=seeds, failed=a.failed, not_applicable=a.not_applicable,
            refused=len(a.refused), errors=sorted(a.errors),
            refusals=sorted(set(a.refused.values())), missing=sorted(a.missing),
            reasons=sorted(a.reasons), artifacts=dict(sorted(a.artifacts.items())))
        results[a.label] = result
        if not seeds:
            continue
        per_seed = {}
        for s in seeds:
            d = None if s in a.refused else stats.advantage_draws(a.ok[s], s, draws)
            if d is None and s not in a.refused:
                fixed.append(a.label)
            per_seed[s] = d if d is not None else np.full(draws.resamples, advantage[s])
        per_attack[a.label] = stats.seed_mean(per_seed, draws.weights, draws.column)
        if a.label not in fixed:
            result.interval = stats.percentile_interval(per_attack[a.label])
    notes = []
    if fixed:
        notes.append("no per-target outcomes stored for " + ", ".join(sorted(set(fixed))) +
                     "; the privacy interval holds their advantage fixed within a seed")
    advs = {label: r.advantage for label, r in results.items() if r.advantage is not None}
    worst = max(sorted(advs), key=advs.get) if advs else None
    level_draws = (1.0 - np.max(np.stack([per_attack[k] for k in sorted(per_attack)]), axis=0)
                   if per_attack else None)
    return _Level(attacks=results, draws=level_draws,
                  privacy=None if worst is None else 1.0 - advs[worst], worst=worst,
                  complete=not any(r.failed for r in results.values()), notes=notes)


def _rank(rows: list[Row]) -> None:
    """Sort ``rows`` and set their ranks and the Pareto front, complete entries first."""
    ranked = [r for r in rows if r.complete and r.privacy is not None]
    intervals = [r.privacy_interval or (r.privacy, r.privacy) for r in ranked]
    for row, rank in zip(ranked, stats.shared_ranks(intervals)):
        row.rank = rank
    counts = defaultdict(int)
    for row in ranked:
        counts[row.rank] += 1
    for row in ranked:
        row.rank_shared = counts[row.rank] > 1
    rows.sort(key=lambda r: (r.rank is None, r.privacy is None, r.rank or 0,
                             -(r.privacy if r.privacy is not None else -1),
                             -(r.utility if r.utility is not None else -1), r.defense))
    # Only complete entries compete for the front: an upper bound must not dominate a measurement.
    front = pareto_front([(r.privacy, r.utility) if r.complete else (None, None) for r in rows])
    for row, on_front in zip(rows, front):
        row.pareto = on_front


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


@dataclasses.dataclass
class _Collected:
    """Every record sorted into place, keyed by canonical spec JSON: ``t`` a task, ``d`` a
    defense, a cell ``(t, level, d)``."""

    specs: dict[str, dict] = dataclasses.field(default_factory=dict)
    # accuracy[t][d][seed] = (accuracy, number of test images or None)
    accuracy: dict[str, dict[str, dict[int, tuple[float, int | None]]]] = dataclasses.field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    utility_meta: dict[tuple[str, str], list[dict]] = dataclasses.field(
        default_factory=lambda: defaultdict(list))
    utility_errors: dict[tuple[str, str], set[str]] = dataclasses.field(
        default_factory=lambda: defaultdict(set))
    cells: dict[tuple[str, str, str], dict[str, _Attack]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict))
    cell_meta: dict[tuple[str, str, str], list[dict]] = dataclasses.field(
        default_factory=lambda: defaultdict(list))
    levels: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    defenses: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    labels: dict[str, str] = dataclasses.field(default_factory=dict)  # attack key -> label
    # points[cell][attack key][resource point] = its records, in the order they came
    points: dict[tuple[str, str, str], dict[str, dict[tuple, list[Record]]]] = dataclasses.field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))

    def add(self, rec: Record) -> None:
        t, d = _key(rec.task), _key(rec.defense)
        self.specs[t], self.specs[d] = rec.task, rec.defense
        self.defenses[t].add(d)
        if rec.attack is None:
            self.utility_meta[(t, d)].append(rec.meta)
            if rec.status == OK:
                self.accuracy[t][d][rec.seed] = (float(rec.metrics["accuracy"]),
                                                 rec.metrics.get("n_test"))
            elif rec.error:
                self.utility_errors[(t, d)].add(rec.error)
            return
        self.levels[t].add(rec.level)
        cell = (t, rec.level, d)
        a = self._attack(cell, rec.attack)
        a.goal = a.goal or rec.goal
        self.points[cell][_key(rec.attack)][resource_point(rec)].append(rec)

    def settle(self) -> None:
        """Count each attack's records at its largest resource point (the only one, unless a
        plan swept a resource)."""
        for cell, attacks in self.points.items():
            for key, by_point in attacks.items():
                for rec in by_point[max(by_point, key=_point_order)]:
                    if rec.status in (OK, REFUSED):
                        self.cell_meta[cell].append(rec.meta)
                    self.cells[cell][key].add(rec)

    def _attack(self, cell: tuple[str, str, str], spec: dict) -> _Attack:
        """The cell's entry for the attack ``spec``, made on its first record."""
        key = _key(spec)
        a = self.cells[cell].get(key)
        if a is None:
            if key not in self.labels:
                label = spec_label("attack", spec)
                if label in self.labels.values():  # two specs, one display name: keep both apart
                    from disguisebench.plan import spec_hash

                    label = f"{label} #{spec_hash(spec)[:6]}"
                self.labels[key] = label
            a = self.cells[cell][key] = _Attack(spec=spec, label=self.labels[key])
        return a


def resource_point(rec: Record) -> tuple[int | None, int | None, float]:
    """What an attack record's attacker was given: known pairs (None at a level that grants
    none), oracle queries (None: unlimited) and the compute multiplier."""
    pairs = rec.meta.get("n_known") if KNOWN_PAIRS in LEVELS.get(rec.level, ()) else None
    return pairs, rec.meta.get("queries"), float(rec.meta.get("compute", 1))


def _point_order(point: tuple) -> tuple:
    """Sort key of resource points and values: more of everything later, unlimited last."""
    return tuple(math.inf if v is None else v for v in point)


def aggregate(records: Iterable[Record], *, resamples: int = RESAMPLES) -> list[Board]:
    """Boards of rows, each row one defense with its utility, privacy and every attack."""
    found = _Collected()
    for rec in records:
        found.add(rec)
    found.settle()
    boards = []
    for t in sorted(found.levels, key=lambda k: (spec_label("task", found.specs[k]), k)):
        boards += _task_boards(found, t, resamples)
    return boards


def _task_boards(found: _Collected, t: str, resamples: int) -> list[Board]:
    """The boards of one task, one per level, each ranked."""
    utility = _utility(found.accuracy[t], found.specs, resamples)
    order = sorted(found.levels[t], key=level_order)
    rows: dict[str, list[Row]] = defaultdict(list)
    for d in sorted(found.defenses[t]):
        for lv, row in zip(order, _defense_rows(found, t, d, order, utility.get(d, {}), resamples)):
            rows[lv].append(row)
    boards = []
    for lv in order:
        _rank(rows[lv])
        boards.append(Board(task=spec_label("task", found.specs[t]), level=lv, rows=rows[lv],
                            task_spec=found.specs[t]))
    return boards


def _defense_rows(found: _Collected, t: str, d: str, order: list[str], utility: dict[str, Any],
                  resamples: int) -> list[Row]:
    """One defense's row at each level of ``order``: privacy at a level is the minimum over it
    and the levels below, and the entry is incomplete once an attack failed at or below it."""
    seeds = sorted({s for lv in order for a in found.cells.get((t, lv, d), {}).values()
                    for s in a.scored()}
                   | {r.seed for lv in order for by_point in found.points.get((t, lv, d), {})
                      .values() for recs in by_point.values() for r in recs
                      if r.status in (OK, REFUSED)})
    draws = stats.Draws(seeds, resamples)
    # The minimum over levels so far: what an attacker who ignores knowledge achieves.
    low: _Level | None = None
    low_level, low_draws = None, None
    complete, used = True, set()
    rows = []
    broke_at = None  # the first level whose privacy, as bounded below, fell under BREAK
    for lv in order:
        below = None if low is None else (low, broke_at, low_draws)
        collected = found.cells.get((t, lv, d), {})
        level = _level(collected, draws)
        complete = complete and level.complete
        used |= {s for a in collected.values() for s in a.scored()}
        if level.privacy is not None:
            if low is None or level.privacy <= low.privacy:  # ties: the level itself
                low, low_level = level, lv
            low_draws = level.draws if low_draws is None else np.minimum(low_draws, level.draws)
            if broke_at is None and low.privacy < BREAK:
                broke_at = lv
        row = _row(found.specs[d], level, utility, found.accuracy[t][d])
        row.curves = _curves(found, (t, lv, d), draws, below)
        if (t, lv, d) in found.cells and low is not None:
            _set_privacy(row, low, low_level, low_draws, lv)
        row.complete = complete
        if not complete:
            row.notes.insert(0, "incomplete: an attack failed in its own code here or at a "
                             "lower level, so privacy is an upper bound")
        errors = sorted(found.utility_errors.get((t, d), ()))
        if errors:
            row.notes.insert(0, "training failed: " + "; ".join(errors))
        row.seeds = len(used)
        row.manifest = _summarise_meta(found.utility_meta[(t, d)] + found.cell_meta[(t, lv, d)],
                                       set(found.accuracy[t][d]) | set(used))
        rows.append(row)
    return rows


def _curves(found: _Collected, cell: tuple[str, str, str], draws: stats.Draws,
            below: tuple[_Level, str | None, np.ndarray] | None = None) -> dict[str, Curve]:
    """The curve of each resource that takes several values in ``cell``; ``below`` is the
    weakest lower level (its privacy, the level where privacy fell below BREAK if it did, and
    its draws), which bounds every point."""
    attacks = found.points.get(cell, {})
    out = {}
    for i, resource in enumerate(RESOURCES):
        values = sorted({p[i] for by_point in attacks.values() for p in by_point},
                        key=lambda v: _point_order((v,)))
        if len(values) > 1:
            curve = _curve(found, cell, i, values, draws, below)
            if curve is not None:
                out[resource] = curve
    return out


def _curve(found: _Collected, cell: tuple[str, str, str], i: int, values: list,
           draws: stats.Draws, below: tuple[_Level, str, np.ndarray] | None = None
           ) -> Curve | None:
    """Privacy at each value of resource ``i`` and the cost to break (see the module's doc).
    As over levels, privacy at a value is never above that at a smaller one, nor above a lower
    level's (an attacker can ignore what it is given); ``own`` keeps the value's own. A lower
    level that already breaks the defense makes the cost 0."""
    points, low, low_draws, broke = [], None, None, []
    if below is not None:
        low, low_draws = below[0], below[2]
    for value, level in _value_levels(found, cell, i, values, draws):
        if low is None or level.privacy <= low.privacy:
            low = level
        low_draws = level.draws if low_draws is None else np.minimum(low_draws, level.draws)
        points.append(CurvePoint(value, low.privacy, stats.percentile_interval(low_draws),
                                 low.worst, level.privacy))
        broke.append(low_draws < BREAK)
    if not points:
        return None
    if below is not None and below[0].privacy < BREAK:
        return Curve(RESOURCES[i], points, True, 0, (0, 0), broken_below=below[1])
    first = [p.value for p in points if p.privacy < BREAK]
    # Each resample's cost: the index of its first breaking value; len(points): none broke it.
    index = np.where(np.any(broke, axis=0), np.argmax(broke, axis=0), len(points))
    tail = 100 * (1 - stats.CONFIDENCE) / 2
    lo, hi = (int(v) for v in np.percentile(index, [tail, 100 - tail], method="nearest"))
    return Curve(RESOURCES[i], points, bool(first), first[0] if first else None, (lo, hi))


def _value_levels(found: _Collected, cell: tuple[str, str, str], i: int, values: list,
                  draws: stats.Draws) -> list[tuple[Any, _Level]]:
    """Each value of resource ``i`` that some attack scored at, with that value's level: every
    attack at its largest point with the value (one that does not vary in it, at its largest)."""
    out = []
    for value in values:
        collected = {}
        for key, by_point in found.points[cell].items():
            varies = len({p[i] for p in by_point}) > 1
            here = [p for p in by_point if p[i] == value] if varies else list(by_point)
            if here:
                a = collected[key] = _Attack(spec=found.cells[cell][key].spec,
                                             label=found.labels[key])
                for rec in by_point[max(here, key=_point_order)]:
                    a.add(rec)
        level = _level(collected, draws)
        if level.privacy is not None:
            out.append((value, level))
    return out


def _set_privacy(row: Row, low: _Level, low_level: str, low_draws: np.ndarray,
                 level: str) -> None:
    """Give ``row`` (at ``level``) the privacy of ``low``, the weakest level up to it."""
    row.privacy = low.privacy
    row.privacy_interval = stats.percentile_interval(low_draws)
    row.worst_attack, row.worst_level = low.worst, low_level
    row.worst_advantage = low.attacks[low.worst].advantage
    row.worst_interval = low.attacks[low.worst].interval
    if low_level != level:
        row.notes.insert(0, f"privacy set at {low_level} by {low.worst}: an "
                         "attacker with more knowledge can ignore it")


def _row(spec: dict, level: _Level, utility: dict[str, Any],
         accuracy: dict[int, tuple[float, int | None]]) -> Row:
    """A row with this level's own numbers; the caller adds what the lower levels decide."""
    advantages = {label: r.advantage for label, r in level.attacks.items()
                  if r.advantage is not None}
    return Row(
        defense=spec_label("defense", spec), spec=spec,
        accuracy=utility.get("accuracy"), utility=utility.get("utility"),
        privacy=None, worst_attack=None, advantages=advantages,
        failed=sum(r.failed for r in level.attacks.values()),
        not_applicable=sum(r.not_applicable for r in level.attacks.values()),
        refused=sum(r.refused for r in level.attacks.values()),
        accuracy_interval=utility.get("accuracy_interval"),
        utility_interval=utility.get("utility_interval"),
        baseline_accuracy=utility.get("baseline"),
        attacks=dict(sorted(level.attacks.items())),
        notes=level.notes + utility.get("notes", []),
        level_privacy=level.privacy,
        level_privacy_interval=stats.percentile_interval(level.draws),
        utility_seeds=len(accuracy),
    )


def _utility(accuracy: dict[str, dict[int, tuple[float, int | None]]], specs: dict[str, dict],
             resamples: int) -> dict[str, dict[str, Any]]:
    """Accuracy, utility and their intervals for every defense of one task."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = {(d, s): stats.accuracy_draws(acc, n, rng, resamples)
             for d in sorted(accuracy) for s, (acc, n) in sorted(accuracy[d].items())}
    base = next((d for d in sorted(accuracy) if specs[d]["name"] == "none"), None)
    out: dict[str, dict[str, Any]] = {}
    for d, by_seed in accuracy.items():
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        # The seeds are resampled as for privacy: each is a new key and training run.
        weights = stats.seed_weights(np.random.default_rng([BOOTSTRAP_SEED, 3]), len(seeds),
                                     resamples)
        column = {s: i for i, s in enumerate(seeds)}
        has_draws = all(draws[(d, s)] is not None for s in seeds)
        entry: dict[str, Any] = {
            "accuracy": mean(by_seed[s][0] for s in seeds),
            "accuracy_interval": stats.percentile_interval(
                stats.seed_mean({s: draws[(d, s)] for s in seeds}, weights, column))
            if has_draws else None,
            "notes": [],
        }
        if entry["accuracy_interval"] is None:
            entry["notes"].append("no test-set size stored; accuracy and utility carry no interval")
        if base is not None:
            paired = [s for s in seeds if s in accuracy[base] and accuracy[base][s][0] > 0]
            if paired:
                entry["baseline"] = mean(accuracy[base][s][0] for s in paired)
                entry["utility"] = mean(by_seed[s][0] / accuracy[base][s][0] for s in paired)
                ratio = {s: draws[(d, s)] / draws[(base, s)] for s in paired
                         if draws[(d, s)] is not None and draws[(base, s)] is not None}
                if len(ratio) == len(paired):
                    entry["utility_interval"] = stats.percentile_interval(
                        stats.seed_mean(ratio, weights, column))
        out[d] = entry
    return out


def _fmt(value: float | None, interval: Interval | None = None, *, bound: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{'≤' if bound else ''}{value:.3f}"
    if interval is None:
        return text
    return f"{text} [{interval[0]:.2f}, {interval[1]:.2f}]"


def worst_text(row: Row, level: str) -> str:
    """The attack that sets a row's privacy, its advantage, and the level if a lower one."""
    if row.worst_attack is None:
        return "-"
    where = f" at {row.worst_level}" if row.worst_level and row.worst_level != level else ""
    return f"{row.worst_attack} ({row.worst_advantage:.3f}){where}"


def render_text(boards: list[Board]) -> str:
    """One plain-text table per (task, level), as `disguisebench show` prints."""
    from tabulate import tabulate

    parts = []
    for board in boards:
        swept = board.resources()
        table = [[r.rank_label or "-", "*" if r.pareto else "", r.defense,
                  _fmt(r.accuracy, r.accuracy_interval), _fmt(r.utility, r.utility_interval),
                  _fmt(r.privacy, r.privacy_interval, bound=not r.complete), r.seeds,
                  worst_text(r, board.level), r.refused or "", r.failed or "",
                  r.not_applicable or ""] + ([cost_text(r)] if swept else [])
                 for r in board.rows]
        parts.append(f"{board.task} / {board.level}\n" + tabulate(
            table, headers=["#", "", "defense", "accuracy", "utility", "privacy", "seeds",
                            "worst attack (advantage)", "refused", "failed", "n/a"]
            + ([f"to break (privacy < {BREAK:g})"] if swept else []),
            disable_numparse=True))
    if not parts:
        return "no results yet"
    sweeps = any(board.resources() for board in boards)
    return "\n\n".join(parts) + (
        f"\n\n* on the Pareto front of privacy and utility; [..] {CONFIDENCE:.0%} intervals over "
        "seeds and targets; =k: a rank shared with entries whose privacy intervals overlap; "
        "≤: incomplete (an attack failed), privacy is an upper bound and not ranked; privacy "
        "at a level is the minimum over it and the levels below") + (
        f"; to break: the smallest resource tried at which this level's privacy falls below "
        f"{BREAK:g} (attacks at their largest point otherwise; the board shows the largest), "
        "[..] its range over the resamples" if sweeps else "")


def cost_text(row: Row) -> str:
    """A row's costs to break, one per swept resource; "-" without a curve."""
    return "; ".join(curve.cost_text() for curve in row.curves.values()) or "-"
