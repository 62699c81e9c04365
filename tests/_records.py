"""Hand-built result records with known answers, for the leaderboard tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from disguisebench.plan import Spec
from disguisebench.scoring import advantage
from disguisebench.store import OK, Record

_ids = itertools.count()


def spec(kind: str, name: str, **params: Any) -> dict[str, Any]:
    return Spec.of(kind, name, params).canonical()


TASK = spec("task", "toy", epochs=1)
NONE = spec("defense", "none")
PIXELATE = spec("defense", "pixelate")
RMT = spec("defense", "block-rmt")
RMT6 = spec("defense", "block-rmt", block=6)
TEMPLATE = spec("attack", "template-match")
SORTED = spec("attack", "template-match", feature="sorted-pixels")
VISUAL = spec("attack", "visual-reid")
# An attack not registered here (from a plugin package, say): shown by its name and parameters.
INVERSE = {"name": "linear-inverse", "params": {"ridge": 0.001}}


def record(defense: dict, attack: dict | None = None, level: str | None = None, *, seed: int = 0,
           status: str = OK, metrics: dict | None = None, goal: str | None = None,
           error: str | None = None, meta: dict | None = None) -> Record:
    return Record(key=f"k{next(_ids)}", task=TASK, defense=defense, attack=attack, level=level,
                  seed=seed, status=status, metrics=metrics or {}, meta=meta or {}, goal=goal,
                  error=error)


def utility(defense: dict, accuracy: float, *, seed: int = 0, n_test: int | None = 100) -> Record:
    metrics = {"accuracy": accuracy}
    if n_test is not None:
        metrics["n_test"] = n_test
    return record(defense, seed=seed, metrics=metrics,
                  meta={"disguisebench": "0.1.0", "git_commit": "abc123", "plan_hash": "p1",
                        "date": f"2025-01-0{seed + 1}T00:00:00+00:00", "wall_seconds": 2.0})


def hits(k: int, n: int) -> dict[str, Any]:
    """Reidentify metrics for k hits out of n targets, chance 0 (so advantage = k / n)."""
    return {"success": k / n, "chance": 0.0, "advantage": advantage(k / n, 0.0),
            "per_target": [1] * k + [0] * (n - k)}


def attack(defense: dict, att: dict, level: str, k: int, n: int = 100, *, seed: int = 0,
           goal: str = "reidentify", artifact: str | None = None) -> Record:
    meta = {"wall_seconds": 1.0, "date": f"2025-01-0{seed + 1}T00:00:00+00:00"}
    if artifact:
        meta["artifact"] = artifact
    return record(defense, att, level, seed=seed, metrics=hits(k, n), goal=goal, meta=meta)


def page_records(artifacts: Path | None = None) -> list[Record]:
    """Two levels, four defenses, three attacks (one a reconstruction with gallery images, one
    not applicable at level 1, one failed once): a board whose privacy ranking differs from the
    alphabetical order of the defenses."""
    recs = [utility(d, acc) for d, acc in
            ((NONE, 0.95), (PIXELATE, 0.80), (RMT, 0.93), (RMT6, 0.90))]
    strength = {"none": 95, "pixelate": 70, "block-rmt": 10, "block-rmt(block=6)": 30}
    gen = np.random.default_rng(0)
    for d, label in ((NONE, "none"), (PIXELATE, "pixelate"), (RMT, "block-rmt"),
                     (RMT6, "block-rmt(block=6)")):
        for level in ("level-1", "level-2"):
            recs.append(attack(d, TEMPLATE, level, strength[label]))
            name = None
            if artifacts is not None:
                artifacts.mkdir(parents=True, exist_ok=True)
                name = f"{label}-{level}.npz"
                original = gen.random((4, 1, 12, 12), dtype=np.float32)
                np.savez_compressed(artifacts / name, original=original,
                                    disguised=original * 5 - 2,
                                    reconstruction=(original + 0.2 * gen.random(original.shape))
                                    .astype(np.float32))
            recs.append(attack(d, INVERSE, level, strength[label] // 2, goal="reconstruct",
                               artifact=name))
        recs.append(record(d, VISUAL, "level-1", status="not-applicable", goal="label",
                           meta={"missing": ["known_pairs"]}))
        recs.append(record(d, VISUAL, "level-2", status="failed", goal="label",
                           error="RuntimeError: out of memory"))
    return recs
