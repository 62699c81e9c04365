"""Where a cell's time goes: the owner's training and each attack's share, read from the records.

Every record keeps the seconds it took (``meta.wall_seconds``; the utility record also
``train_seconds``). An attack whose granted capabilities are the same at several levels is
computed once and recorded at each (docs/design.md, "One cell"): its seconds count once here.
A cell runs several attacks at once, so their seconds add up to more than the wall time of the
cell's attacks, which each attack record also keeps (``meta.phase_seconds``: from the start of
the attacks to that record). ``disguisebench show --profile`` prints the table.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable

from disguisebench.leaderboard import spec_label
from disguisebench.store import Record


@dataclasses.dataclass
class CellTime:
    """One cell's seconds: the owner's model (training, then the rest of the cell's own work)
    and each attack's computations."""

    task: str
    defense: str
    seed: int
    train: float = 0.0
    owner: float = 0.0
    attacks: dict[str, float] = dataclasses.field(default_factory=dict)
    runs: dict[str, int] = dataclasses.field(default_factory=dict)
    attack_wall: float = 0.0  # the wall time of the attacks, run several at once
    lanes: int = 1

    @property
    def attack_total(self) -> float:
        return sum(self.attacks.values())

    @property
    def total(self) -> float:
        return self.owner + self.attack_total

    @property
    def ratio(self) -> float:
        """The attacks' seconds, summed over runs, over the training's (nan without training)."""
        return self.attack_total / self.train if self.train else math.nan

    @property
    def wall_ratio(self) -> float:
        """The attacks' wall time over the training's (nan without training)."""
        return self.attack_wall / self.train if self.train else math.nan


def cell_times(records: Iterable[Record]) -> list[CellTime]:
    """Seconds per cell, attacks summed over their distinct computations."""
    cells: dict[tuple, CellTime] = {}
    seen: set[tuple] = set()
    labels: dict[str, str] = {}

    def label(kind: str, spec: dict) -> str:  # each spec built once, not once a record
        key = kind + json.dumps(spec, sort_keys=True)
        if key not in labels:
            labels[key] = spec_label(kind, spec)
        return labels[key]

    for r in records:
        defense = label("defense", r.defense)
        key = (label("task", r.task), defense, r.seed)
        cell = cells.setdefault(key, CellTime(key[0], defense, r.seed))
        seconds = float(r.meta.get("wall_seconds", 0.0) or 0.0)
        if r.attack is None:
            cell.train = float(r.meta.get("train_seconds", 0.0) or 0.0)
            cell.owner = seconds
            continue
        cell.attack_wall = max(cell.attack_wall, float(r.meta.get("phase_seconds", 0.0) or 0.0))
        cell.lanes = max(cell.lanes, int(r.meta.get("lanes", 1) or 1))
        name = label("attack", r.attack)
        # The same computation recorded at several levels: same attack, grants and seconds.
        once = (key, name, tuple(r.meta.get("granted", ())), seconds)
        if once in seen:
            continue
        seen.add(once)
        cell.attacks[name] = cell.attacks.get(name, 0.0) + seconds
        cell.runs[name] = cell.runs.get(name, 0) + 1
    return sorted(cells.values(), key=lambda c: (c.task, c.defense, c.seed))


def render(cells: list[CellTime]) -> str:
    """One block per cell: training, each attack's seconds and share, and attack/training."""
    from tabulate import tabulate

    if not cells:
        return "no records"
    blocks = []
    for c in cells:
        rows = [[f"owner (training {c.train:.1f} s)", f"{c.owner:.1f}",
                 f"{100 * c.owner / c.total:.0f} %" if c.total else "-", ""]]
        for name, seconds in sorted(c.attacks.items(), key=lambda kv: -kv[1]):
            rows.append([name, f"{seconds:.1f}",
                         f"{100 * seconds / c.total:.0f} %" if c.total else "-", c.runs[name]])
        ratio = f"{c.ratio:.2f}" if c.train else "-"
        head = (f"{c.task} / {c.defense} / seed {c.seed}: {c.total:.1f} s; "
                f"attacks / training = {ratio}")
        if c.attack_wall:
            wall = f"{c.wall_ratio:.2f}" if c.train else "-"
            head += (f"; the attacks, {c.lanes} at a time, took {c.attack_wall:.1f} s of wall "
                     f"time: {wall} of the training's")
        blocks.append(head + "\n" + tabulate(rows, headers=["", "seconds", "share", "runs"],
                                             colalign=("left", "right", "right", "right"),
                                             disable_numparse=True))
    return "\n\n".join(blocks)
