"""YAML plans: which tasks, defenses, attacks, threat levels and seeds a run crosses.

A plan file looks like::

    name: default
    seeds: [0]
    n_targets: 100          # disguised training images attacked per cell
    n_known: 100            # known (plaintext, disguised) pairs granted at level 2 and above
    queries: null           # the level-3 oracle's query budget (null: unlimited)
    compute: 1              # multiplies the compute budget of attacks that declare one
    levels: [level-1, level-2, level-3]
    tasks: [mnist]
    defenses:
      - none
      - pixelate: {block: 4}
      - block-rmt: {block: [4, 7]}   # a list sweeps: two specs, block=4 and block=7
    attacks: [visual-reid, template-match]

Each plugin entry is a registry name, or a one-key mapping from the name to its parameters. A
parameter whose value is a list is a sweep; the cross product of all swept parameters expands
into one spec each. Wrap a literal list parameter as ``{value: [...]}``. ``attacks: all`` (or
``defenses: all``) names every registered plugin of that kind with its defaults.

``n_known``, ``queries`` and ``compute`` are what the attacker is given; a list sweeps it
(``n_known: [1, 10, 100]``, ``queries: [10, 100, null]``). A resource multiplies only the jobs
where it matters (:func:`points`): pairs at levels granting known pairs, queries where the
oracle is granted, compute for attacks whose class names its ``budget`` hyperparameters.
``n_known`` may also be given per level, ``{level-2: [1, 10, 100], level-3: 1}``, so that
level 3 sweeps queries at a fixed number of pairs instead of crossing both.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from disguisebench import registry
from disguisebench.api import KNOWN_PAIRS, LEVELS, ORACLE, PluginError

TOP_LEVEL_KEYS = ("name", "seeds", "n_targets", "n_known", "queries", "compute", "levels", "tasks",
                  "defenses", "attacks")
# Plans are package data: plans/ in a checkout, disguisebench/plans/ when installed.
DEFAULT_PLAN = Path(str(resources.files("disguisebench.plans").joinpath("default.yaml")))


class PlanError(PluginError):
    """A plan that cannot be run; the message names the bad entry and what would be valid."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """One plugin with every hyperparameter spelled out (defaults included)."""

    kind: str
    name: str
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, kind: str, name: str, params: dict[str, Any] | None = None) -> Spec:
        plugin = registry.create(kind, name, params)
        full = plugin.get_params()
        try:
            json.dumps(full)
        except TypeError as err:
            raise PlanError(f"{kind} {name!r}: parameters must be JSON values ({err})") from None
        return cls(kind, name, tuple(sorted(full.items(), key=lambda kv: kv[0])))

    def build(self) -> Any:
        return registry.create(self.kind, self.name, self.param_dict())

    def param_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dict(self.params)))

    def canonical(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.param_dict()}

    def label(self) -> str:
        return self.build().label()

    def __str__(self) -> str:
        return self.label()


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    tasks: tuple[Spec, ...]
    defenses: tuple[Spec, ...]
    attacks: tuple[Spec, ...]
    levels: tuple[str, ...]
    seeds: tuple[int, ...]
    n_targets: int = 100
    # A tuple of counts sweeps; a tuple of (level, count or counts) gives them per level.
    n_known: int | tuple = 100
    queries: int | None | tuple[int | None, ...] = None  # None: unlimited
    compute: float | tuple[float, ...] = 1

    def digest(self) -> str:
        fields = dataclasses.asdict(self)
        # A plan that leaves the new resources at their defaults keeps the digest it had.
        for key, default in (("queries", None), ("compute", 1)):
            if fields[key] == default:
                del fields[key]
        return spec_hash(fields)

    def sweeps(self) -> bool:
        """Whether any resource takes more than one value."""
        return len(set(self.known())) > 1 or any(
            len(values(v)) > 1 for v in (self.queries, self.compute))

    def known(self, level: str | None = None) -> tuple[int, ...]:
        """The known-pair counts run at ``level`` (every count of the plan when None)."""
        if not _per_level(self.n_known):
            return values(self.n_known)
        per_level = dict(self.n_known)
        if level is not None and level in per_level:
            return values(per_level[level])
        return tuple(v for counts in per_level.values() for v in values(counts))


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one attack job is given: known pairs, oracle queries (None: unlimited) and the
    multiplier of its compute budget."""

    n_known: int = 100
    queries: int | None = None
    compute: float = 1

    def key_fields(self) -> dict[str, Any]:
        """The non-default queries and compute, as a record key and its meta hold them."""
        out: dict[str, Any] = {}
        if self.queries is not None:
            out["queries"] = self.queries
        if self.compute != 1:
            out["compute"] = float(self.compute)
        return out


def _per_level(value: Any) -> bool:
    """Whether ``n_known`` is given per level, as (level, count or counts) pairs."""
    return isinstance(value, tuple) and bool(value) and isinstance(value[0], tuple)


def values(value: Any) -> tuple:
    """A resource's values: the swept tuple, or its one value."""
    return value if isinstance(value, tuple) else (value,)


def points(plan: Plan, level: str, attack: Any) -> list[Resources]:
    """The resource points ``attack`` (an Attack) is run with at ``level``: each swept resource
    only where it matters (pairs and queries where the attack is granted them, compute for an
    attack with ``budget`` hyperparameters); elsewhere the largest count of pairs (the level's,
    or the plan's at a level without pairs: its scenario is drawn with them), unlimited queries
    and compute 1."""
    grants, uses = LEVELS[level], attack.needs | attack.optional
    counts = plan.known(level) if KNOWN_PAIRS in grants else (max(plan.known()),)
    known = counts if KNOWN_PAIRS in grants and KNOWN_PAIRS in uses else (max(counts),)
    oracle = ORACLE in grants and ORACLE in uses
    queries = values(plan.queries) if oracle else (None,)
    compute = values(plan.compute) if attack.budget else (1,)
    return [Resources(k, q, c) for k, q, c in itertools.product(known, queries, compute)]


def spec_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _expand(kind: str, entry: Any, where: str) -> list[Spec]:
    if isinstance(entry, str):
        return [Spec.of(kind, entry)]
    if not isinstance(entry, dict) or len(entry) != 1:
        raise PlanError(
            f"{where}: each {kind} entry must be a name or a one-key mapping "
            f"{{name: {{param: value}}}}, got {entry!r}"
        )
    (name, params), = entry.items()
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise PlanError(f"{where}: parameters of {kind} {name!r} must be a mapping, got {params!r}")
    keys = list(params)
    axes = []
    for key in keys:
        value = params[key]
        if isinstance(value, dict) and set(value) == {"value"}:
            axes.append([value["value"]])
        elif isinstance(value, list):
            if not value:
                raise PlanError(f"{where}: {kind} {name!r} sweeps {key!r} over an empty list")
            axes.append(value)
        else:
            axes.append([value])
    return [Spec.of(kind, str(name), dict(zip(keys, combo))) for combo in itertools.product(*axes)]


def _specs(kind: str, entries: Any, where: str) -> tuple[Spec, ...]:
    if entries == "all":
        entries = registry.names(kind)
    if isinstance(entries, (str, dict)):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"{where}: the plan needs at least one {kind}")
    specs: list[Spec] = []
    for entry in entries:
        for spec in _expand(kind, entry, where):
            if spec in specs:
                raise PlanError(f"{where}: {kind} {spec.label()!r} is listed twice")
            specs.append(spec)
    return tuple(specs)


def _int_list(value: Any, key: str, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise PlanError(f"{where}: {key} must be an integer or a list of integers, got {value!r}")
    if len(set(values)) != len(values):
        raise PlanError(f"{where}: {key} lists a value twice: {value!r}")
    return tuple(values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sweep(raw: dict, key: str, default: Any, valid: Any, expected: str, where: str) -> Any:
    """A resource: one value, or a list of distinct values (a tuple) that sweeps it."""
    value = raw.get(key, default)
    values = value if isinstance(value, list) else [value]
    if not values or not all(valid(v) for v in values):
        raise PlanError(f"{where}: {key}={value!r}: expected {expected}, or a non-empty list of "
                        "them")
    if len(set(values)) != len(values):
        raise PlanError(f"{where}: {key}={value!r} lists a value twice")
    return tuple(values) if isinstance(value, list) else value


def _known(raw: dict, where: str) -> Any:
    """``n_known``: a count, a list of counts, or either per level that grants known pairs."""
    def valid(v: Any) -> bool:
        return _is_int(v) and v >= 0

    value = raw.get("n_known", 100)
    if not isinstance(value, dict):
        return _sweep(raw, "n_known", 100, valid, "integers >= 0", where)
    granting = [lv for lv in LEVELS if KNOWN_PAIRS in LEVELS[lv]]
    if not value or any(level not in granting for level in value):
        raise PlanError(f"{where}: n_known={value!r}: expected a count or a list of counts per "
                        f"level, levels among {', '.join(granting)}")
    return tuple((str(level), _sweep(value, level, None, valid, "integers >= 0",
                                     f"{where}: n_known"))
                 for level in sorted(value))


def _resources(raw: dict, where: str) -> dict[str, Any]:
    """``n_known``, ``queries`` and ``compute`` of a raw plan, validated."""
    import math

    return {
        "n_known": _known(raw, where),
        "queries": _sweep(raw, "queries", None, lambda v: v is None or (_is_int(v) and v >= 0),
                          "integers >= 0 or null (unlimited)", where),
        "compute": _sweep(raw, "compute", 1, lambda v: isinstance(v, (int, float))
                          and not isinstance(v, bool) and math.isfinite(v) and v > 0,
                          "numbers > 0", where),
    }


def from_dict(raw: Any, *, where: str = "plan") -> Plan:
    if not isinstance(raw, dict) or not raw:
        raise PlanError(f"{where}: empty plan; expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise PlanError(f"{where}: unknown key {key!r}{hint} Keys: {', '.join(TOP_LEVEL_KEYS)}")
    levels = raw.get("levels", list(LEVELS))
    levels = [levels] if isinstance(levels, str) else levels
    if not isinstance(levels, list) or not levels:
        raise PlanError(f"{where}: levels must be a non-empty list of {', '.join(LEVELS)}")
    for level in levels:
        if level not in LEVELS:
            raise PlanError(f"{where}: unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    value = raw.get("n_targets", 100)
    if not _is_int(value) or value < 1:
        raise PlanError(f"{where}: n_targets must be an integer >= 1, got {value!r}")
    counts = {"n_targets": value, **_resources(raw, where)}
    defenses = _specs("defense", raw.get("defenses"), where)
    # Utility is a ratio to the undisguised model, so every plan trains the `none` defense.
    if not any(spec.name == "none" for spec in defenses):
        defenses = (Spec.of("defense", "none"),) + defenses
    return Plan(
        name=str(raw.get("name", "plan")),
        tasks=_specs("task", raw.get("tasks"), where),
        defenses=defenses,
        attacks=_specs("attack", raw.get("attacks"), where),
        levels=tuple(dict.fromkeys(levels)),
        seeds=_int_list(raw.get("seeds", [0]), "seeds", where),
        **counts,
    )


def literal(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as plan entries: a list value wrapped as ``{value: [...]}`` so it does not sweep."""
    return {k: {"value": v} if isinstance(v, list) else v for k, v in params.items()}


def load(path: str | Path | None = None) -> Plan:
    """Read a YAML plan (the default plan when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_PLAN
    return from_dict(read_raw(path), where=path.name)


def read_raw(path: Path) -> Any:
    """The parsed YAML of a plan file, unchecked; one clear error for a missing file or bad YAML."""
    if not path.is_file():
        raise PlanError(f"plan file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PlanError(f"{path.name}: invalid YAML{at}: {getattr(err, 'problem', err)}") from None
    return raw


def override(plan: Plan, **lists: str | None) -> Plan:
    """Replace the plan's tasks, defenses, attacks, levels or seeds with comma-separated lists."""
    def plain(value: Any) -> Any:
        if _per_level(value):
            return {level: plain(v) for level, v in value}
        return list(value) if isinstance(value, tuple) else value

    raw: dict[str, Any] = {
        "name": plan.name,
        "n_targets": plan.n_targets,
        "n_known": plain(plan.n_known),
        "queries": plain(plan.queries),
        "compute": plain(plan.compute),
        "levels": list(plan.levels),
        "seeds": list(plan.seeds),
    }
    for key in ("tasks", "defenses", "attacks"):
        raw[key] = [{s.name: literal(s.param_dict())} for s in getattr(plan, key)]
    for key, value in lists.items():
        if value is None:
            continue
        items = [v.strip() for v in value.split(",") if v.strip()]
        if key == "seeds":
            try:
                raw[key] = [int(v) for v in items]
            except ValueError:
                raise PlanError(f"--seeds must be comma-separated integers, got {value!r}") from None
        else:
            raw[key] = items
    return from_dict(raw, where="plan with command-line overrides")
