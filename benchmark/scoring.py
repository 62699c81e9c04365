"""Turn an attack's prediction into success, chance and advantage (docs/design.md, "Scoring").

The truth never enters the attack: the runner keeps it and hands it here with the prediction.
Besides the scalar metrics, each scorer returns what the leaderboard needs to bootstrap over
targets: ``per_target`` (1 where the attack succeeded on that target, else 0) for the hit-counting
goals, and the ``scores`` with their ``member`` flags for ``membership``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from disguisebench.api import LABEL, MEMBERSHIP, RECONSTRUCT, REIDENTIFY, PluginError


@dataclasses.dataclass(frozen=True)
class Truth:
    """What the runner knows about the targets.

    Args:
        gallery_index: (n, m) gallery indices of each target's originals, -1 padding (a mixing
            defense gives a target several originals; matching any of them succeeds).
        gallery: (G, C, H, W) the plaintext gallery.
        labels: (n,) true classes of the targets (for the ``label`` goal).
        member: (n,) booleans, whether each queried image was a training member (``membership``).
        chance_hits: (n,) for ``label``, 1 where an attacker without the owner's model labels the
            image right (benchmark.baselines: a classifier trained on public data alone; all 1
            for the targets, whose labels the cloud holds). None falls back to the majority
            class's share.
    """

    gallery_index: Tensor | None = None
    gallery: Tensor | None = None
    labels: Tensor | None = None
    member: Tensor | None = None
    chance_hits: Tensor | None = None


def advantage(success: float, chance: float) -> float:
    """How far above chance, on a 0 (chance or worse) to 1 (perfect) scale."""
    if chance >= 1.0:
        return 0.0
    return max(0.0, (success - chance) / (1.0 - chance))


def _check(prediction: Tensor, shape: tuple[int, ...], what: str) -> Tensor:
    if not isinstance(prediction, Tensor):
        raise PluginError(f"{what}: the attack returned {type(prediction).__name__}, expected a tensor")
    if tuple(prediction.shape) != shape:
        raise PluginError(
            f"{what}: the attack returned shape {tuple(prediction.shape)}, expected {shape}"
        )
    if prediction.is_floating_point() and not torch.isfinite(prediction).all():
        raise PluginError(f"{what}: the attack returned NaN or infinite values")
    return prediction.detach().cpu()


def _hits(pred_index: Tensor, gallery_index: Tensor) -> Tensor:
    return (pred_index.unsqueeze(1) == gallery_index).any(1)


def _chance(gallery_index: Tensor, gallery_size: int) -> float:
    return float((gallery_index >= 0).sum(1).float().mean()) / gallery_size


def score_reidentify(prediction: Tensor, truth: Truth) -> dict[str, Any]:
    gi, g = truth.gallery_index, truth.gallery
    pred = _check(prediction, (gi.shape[0],), "reidentify")
    if pred.is_floating_point():
        raise PluginError("reidentify: the attack must return integer gallery indices")
    if len(pred) and (int(pred.min()) < 0 or int(pred.max()) >= len(g)):
        raise PluginError(f"reidentify: gallery indices must lie in [0, {len(g) - 1}]")
    hits = _hits(pred, gi)
    success = float(hits.float().mean())
    chance = _chance(gi, len(g))
    return {"success": success, "chance": chance, "advantage": advantage(success, chance),
            "per_target": hits.int().tolist()}


def ssim(a: Tensor, b: Tensor, *, window: int = 7) -> Tensor:
    """Mean structural similarity per image pair, as scikit-image's default (7×7 uniform window,
    sample covariance, data range 1), vectorised over the batch."""
    c1, c2 = 0.01**2, 0.03**2
    win = min(window, a.shape[-1], a.shape[-2])
    win -= 1 - win % 2
    pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    a, b = a.double(), b.double()
    mu_a, mu_b = pool(a), pool(b)
    cov_norm = win * win / (win * win - 1)
    var_a = cov_norm * (pool(a * a) - mu_a**2)
    var_b = cov_norm * (pool(b * b) - mu_b**2)
    cov = cov_norm * (pool(a * b) - mu_a * mu_b)
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).float()


def psnr(a: Tensor, b: Tensor) -> Tensor:
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def score_reconstruct(prediction: Tensor, truth: Truth) -> dict[str, Any]:
    gi, g = truth.gallery_index, truth.gallery
    pred = _check(prediction, (gi.shape[0], *g.shape[1:]), "reconstruct").float()
    nearest = torch.cdist(pred.flatten(1), g.flatten(1)).argmin(1)
    hits = _hits(nearest, gi)
    success = float(hits.float().mean())
    chance = _chance(gi, len(g))
    # Quality against the best-matching original of each target.
    clipped = pred.clamp(0, 1)
    ssims, psnrs = [], []
    for j in range(gi.shape[1]):
        valid = gi[:, j] >= 0
        original = g[gi[:, j].clamp_min(0)]
        ssims.append(torch.where(valid, ssim(clipped, original), -math.inf))
        psnrs.append(torch.where(valid, psnr(clipped, original), -math.inf))
    return {
        "success": success, "chance": chance, "advantage": advantage(success, chance),
        "ssim": float(torch.stack(ssims).max(0).values.mean()),
        "psnr": float(torch.stack(psnrs).max(0).values.mean()),
        "per_target": hits.int().tolist(),
    }


def score_label(prediction: Tensor, truth: Truth) -> dict[str, Any]:
    labels = truth.labels
    pred = _check(prediction, (labels.shape[0],), "label")
    if pred.is_floating_point():
        raise PluginError("label: the attack must return integer class indices")
    hits = pred == labels
    success = float(hits.float().mean())
    majority = float(torch.bincount(labels).max()) / len(labels)
    out: dict[str, Any] = {"majority": majority}
    if truth.chance_hits is None:
        chance = majority
    else:
        base = truth.chance_hits.int().cpu()
        if base.shape != labels.shape:
            raise PluginError(f"label: {tuple(base.shape)} baseline outcomes for "
                              f"{len(labels)} images")
        chance = float(base.float().mean())
        out["chance_per_target"] = base.tolist()  # resampled with per_target for the interval
    return {"success": success, "chance": chance, "advantage": advantage(success, chance),
            "per_target": hits.int().tolist(), **out}


def roc_auc(scores: Tensor, member: Tensor) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    pos, neg = scores[member], scores[~member]
    if len(pos) == 0 or len(neg) == 0:
        raise PluginError("membership: needs both members and non-members")
    greater = (pos.unsqueeze(1) > neg.unsqueeze(0)).double().mean()
    ties = (pos.unsqueeze(1) == neg.unsqueeze(0)).double().mean()
    return float(greater + 0.5 * ties)


def tpr_at_fpr(scores: Tensor, member: Tensor, fpr: float = 0.01) -> float:
    neg = scores[~member].double().sort(descending=True).values
    allowed = int(math.floor(fpr * len(neg)))
    # The threshold admits at most `allowed` non-members.
    threshold = neg[allowed] if allowed < len(neg) else -math.inf
    return float((scores[member].double() > threshold).double().mean())


def score_membership(prediction: Tensor, truth: Truth) -> dict[str, Any]:
    member = truth.member.bool()
    pred = _check(prediction, (member.shape[0],), "membership").double()
    auc = roc_auc(pred, member)
    return {"success": auc, "chance": 0.5, "advantage": advantage(auc, 0.5),
            "tpr_at_1pct_fpr": tpr_at_fpr(pred, member),
            "scores": pred.tolist(), "member": member.int().tolist()}


SCORERS = {
    REIDENTIFY: score_reidentify,
    RECONSTRUCT: score_reconstruct,
    LABEL: score_label,
    MEMBERSHIP: score_membership,
}


def score(goal: str, prediction: Tensor, truth: Truth) -> dict[str, Any]:
    if goal not in SCORERS:
        raise PluginError(f"unknown goal {goal!r}; expected one of {', '.join(SCORERS)}")
    return SCORERS[goal](prediction, truth)
