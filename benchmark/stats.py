"""The statistics behind the boards' intervals and ranks (docs/design.md, "Scoring").

- Seeds are the outer sample: each seed is a new key, a new training run and a new draw of
  targets, so a resample first draws the seeds with replacement (``seed_weights``), then the
  targets within each drawn seed (a two-stage, cluster bootstrap; it errs on the wide side).
- Where a seed's proportion sits at 0 or 1 (100 hits of 100) the target bootstrap cannot vary;
  there the proportion is drawn from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2) (Brown,
  Cai & DasGupta, "Interval estimation for a binomial proportion", Statistical Science 2001),
  so 100 of 100 gives an interval reaching down to about 0.975, never [1.00, 1.00].
- One (task, defense) draws once (``Draws``) and every attack and level reuses the draws, so
  attacks and levels stay paired; ``advantage_draws`` recomputes an attack's advantage on each
  resample of one seed's targets, ``accuracy_draws`` a test accuracy from its posterior.
- Entries whose intervals overlap share a rank: an entry's rank is one more than the number of
  entries whose whole interval lies above its own. ``pareto_front`` marks the entries no other
  beats in both privacy and utility.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

Interval = tuple[float, float]


def percentile_interval(draws: np.ndarray | None) -> Interval | None:
    """The central CONFIDENCE percentile interval of bootstrap draws."""
    if draws is None:
        return None
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def seed_weights(rng: np.random.Generator, n_seeds: int, resamples: int) -> np.ndarray:
    """(resamples, n_seeds) how often each seed is drawn in each resample (with replacement)."""
    if n_seeds == 0:
        return np.zeros((resamples, 0))
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples).astype(float)


def seed_mean(per_seed: dict[int, np.ndarray], weights: np.ndarray,
              column: dict[int, int]) -> np.ndarray:
    """(R,) the mean over drawn seeds of per-seed draws (R,) each, weighted by how often each seed
    was drawn; a resample that drew none of these seeds falls back to the plain mean of them."""
    seeds = sorted(per_seed)
    values = np.stack([per_seed[s] for s in seeds], axis=1)  # (R, k)
    w = weights[:, [column[s] for s in seeds]]
    total = w.sum(1)
    weighted = (w * values).sum(1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, weighted, values.mean(1))


def jeffreys(k: float, n: float, uniform: np.ndarray) -> np.ndarray:
    """Draws of a binomial proportion from its Jeffreys posterior, by inverse transform of the
    given uniforms (shared uniforms keep draws of equal outcomes equal). At k = 0 or k = n the
    tail beyond the observation is set to it, as Brown, Cai & DasGupta modify the interval
    there, so its outer end is exactly 0 or 1."""
    from scipy.stats import beta

    draws = beta.ppf(uniform, k + 0.5, n - k + 0.5)
    tail = (1 - CONFIDENCE) / 2
    if k <= 0:
        draws = np.where(uniform < tail, 0.0, draws)
    if k >= n:
        draws = np.where(uniform > 1 - tail, 1.0, draws)
    return draws


def at_boundary(outcomes: np.ndarray) -> bool:
    """Whether 0/1 outcomes are all 0 or all 1, so that resampling them cannot vary."""
    return len(outcomes) > 0 and bool(np.all(outcomes == outcomes[0]))


def advantage(success: np.ndarray, chance: np.ndarray | float) -> np.ndarray:
    """``max(0, (success - chance) / (1 - chance))``, element-wise; 0 wherever chance is 1."""
    chance = np.broadcast_to(np.asarray(chance, dtype=float), np.shape(success))
    room = 1.0 - chance
    safe = np.where(room > 0, room, 1.0)
    return np.where(room > 0, np.maximum(0.0, (success - chance) / safe), 0.0)


def auc(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """Mann-Whitney AUC per row of ``scores``, whose first ``n_pos`` columns are the members."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)  # ties get their average rank, so count half
    n_neg = scores.shape[1] - n_pos
    return (ranks[:, :n_pos].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def shared_ranks(intervals: Sequence[Interval]) -> list[int]:
    """Rank of each entry: 1 + the number of entries whose interval lies wholly above its own.

    Entries whose intervals overlap cannot be told apart, so they share a rank; a rank is never
    better than that of an entry clearly above it.
    """
    return [1 + sum(lo_other > hi for lo_other, _ in intervals) for _, hi in intervals]


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


class Draws:
    """Bootstrap draws shared by every attack and level of one (task, defense): the seed weights
    of each resample, per seed one uniform per resample (for Jeffreys draws at a boundary), and
    per seed and sample size the target indices. Each comes from its own generator, keyed by
    what it is for, so no draw depends on which other records are in the store."""

    def __init__(self, seeds: list[int], resamples: int) -> None:
        self.resamples = resamples
        self.column = {s: i for i, s in enumerate(seeds)}
        self.weights = seed_weights(np.random.default_rng([BOOTSTRAP_SEED, 0]), len(seeds),
                                    resamples)
        self._uniform: dict[int, np.ndarray] = {}
        self._indices: dict[tuple[int, ...], np.ndarray] = {}

    def uniform(self, seed: int) -> np.ndarray:
        if seed not in self._uniform:
            rng = np.random.default_rng([BOOTSTRAP_SEED, 1, seed % 2**32])
            self._uniform[seed] = rng.random(self.resamples)
        return self._uniform[seed]

    def indices(self, seed: int, n: int, part: int = 0) -> np.ndarray:
        """(resamples, n) indices into ``n`` targets (``part`` tells members from non-members)."""
        key = (seed, n, part)
        if key not in self._indices:
            rng = np.random.default_rng([BOOTSTRAP_SEED, 2, seed % 2**32, n, part])
            self._indices[key] = rng.integers(0, n, (self.resamples, n))
        return self._indices[key]


def advantage_draws(metrics: dict[str, Any], seed: int, draws: Draws) -> np.ndarray | None:
    """The attack's advantage on each resample of one seed's targets, or None if the record
    keeps no per-target outcomes."""
    if "per_target" in metrics and len(metrics["per_target"]):
        hits = np.asarray(metrics["per_target"], dtype=float)
        idx = draws.indices(seed, len(hits))
        if at_boundary(hits):
            success = jeffreys(hits.sum(), len(hits), draws.uniform(seed))
        else:
            success = hits[idx].mean(1)
        base = metrics.get("chance_per_target")
        if base is not None and len(base) == len(hits):  # a label attack's public baseline
            chance = np.asarray(base, dtype=float)[idx].mean(1)
        else:
            chance = float(metrics["chance"])
        return advantage(success, chance)
    if "scores" in metrics and "member" in metrics:
        scores = np.asarray(metrics["scores"], dtype=float)
        member = np.asarray(metrics["member"], dtype=bool)
        pos, neg = scores[member], scores[~member]
        if len(pos) == 0 or len(neg) == 0:
            return None
        observed = float(auc(np.concatenate([pos, neg])[None], len(pos))[0])
        if observed in (0.0, 1.0):  # perfectly separated: no resample can differ
            n = min(len(pos), len(neg))
            return advantage(jeffreys(observed * n, n, draws.uniform(seed)), 0.5)
        ip, ineg = draws.indices(seed, len(pos), 1), draws.indices(seed, len(neg), 2)
        return advantage(auc(np.concatenate([pos[ip], neg[ineg]], axis=1), len(pos)),
                               0.5)
    return None


def accuracy_draws(accuracy: float, n: int | None, rng: np.random.Generator,
                   resamples: int) -> np.ndarray | None:
    """(resamples,) draws of a test accuracy k/n from its Jeffreys posterior
    Beta(k + 1/2, n - k + 1/2); None when the test-set size is unknown."""
    if not n:
        return None
    k = round(accuracy * n)
    return rng.beta(k + 0.5, n - k + 0.5, size=resamples)
