"""The statistics behind the boards' intervals and ranks (docs/design.md, "Scoring").

- Seeds are the outer sample: each seed is a new key, a new training run and a new draw of
  targets, so a resample first draws the seeds with replacement (``seed_weights``), then the
  targets within each drawn seed (a two-stage, cluster bootstrap; it errs on the wide side).
- Where a seed's proportion sits at 0 or 1 (100 hits of 100) the target bootstrap cannot vary;
  there the proportion is drawn from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2) (Brown,
  Cai & DasGupta, "Interval estimation for a binomial proportion", Statistical Science 2001),
  so 100 of 100 gives an interval reaching down to about 0.975, never [1.00, 1.00].
- Entries whose intervals overlap share a rank: an entry's rank is one more than the number of
  entries whose whole interval lies above its own.
"""

from __future__ import annotations

from collections.abc import Sequence

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
