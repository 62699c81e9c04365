"""InstaHide break after Carlini et al.: unsign, cluster encodings sharing an image, recover it."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from disguisebench.attacks._common import target_rows
from disguisebench.api import (
    DEFENSE, PUBLIC, RECONSTRUCT, TARGETS, UPLOAD, Attack, NotApplicable, Outcome, ThreatView,
    check_number)
from disguisebench.registry import register

log = logging.getLogger("disguisebench")

_BINS = 64  # histogram bins of the per-pixel prior over mixture values
_CHUNK = 4096  # encodings processed at once
_RANGE_MARGIN = 0.02  # share of the pixel range by which the estimated range is widened


def centring(defense_params: dict, public: Tensor) -> tuple[Tensor, Tensor]:
    """(1, C, 1, 1) shift and scale InstaHide applied before mixing, from its ``centring``
    hyperparameter and the public images (standardisation uses statistics the attacker
    estimates on its own data); no shift for a defense without the hyperparameter."""
    c = public.shape[1]
    mode = defense_params.get("centring")
    if mode == "standardize":
        mean = public.mean(dim=(0, 2, 3)).view(1, c, 1, 1)
        std = public.std(dim=(0, 2, 3), correction=0).clamp_min(1e-6).view(1, c, 1, 1)
        return mean, std
    if mode == "symmetric":
        return torch.full((1, c, 1, 1), 0.5), torch.full((1, c, 1, 1), 0.5)
    return torch.zeros(1, c, 1, 1), torch.ones(1, c, 1, 1)


class SignPrior:
    """Per-pixel histogram of mixture values, from mixtures of public images with InstaHide-like
    coefficients (|N(0, 1)| draws normalised to sum 1): which sign a magnitude more likely had."""

    def __init__(self, centred: Tensor, k: int, lo: Tensor, hi: Tensor, samples: int,
                 gen: torch.Generator) -> None:
        self.lo, self.hi = lo, hi
        idx = torch.randint(0, len(centred), (samples, k), generator=gen)
        lam = torch.randn(samples, k, generator=gen).abs()
        lam = lam / lam.sum(1, keepdim=True)
        mix = torch.einsum("sk,skd->sd", lam, centred[idx])
        dim = mix.shape[1]
        counts = torch.zeros(dim, _BINS)
        counts.scatter_add_(1, self._bin(mix).T.contiguous(), torch.ones(dim, samples))
        self.density = (counts + 0.5) / (samples + 0.5 * _BINS)

    def _bin(self, v: Tensor) -> Tensor:
        t = (v - self.lo) / (self.hi - self.lo).clamp_min(1e-9)
        return (t * _BINS).floor().clamp(0, _BINS - 1).long()

    def resolve(self, magnitude: Tensor) -> tuple[Tensor, Tensor]:
        """Signed mixtures for (n, D) magnitudes, and which values the pixel range alone fixed.

        A mixture of images lies in the range their pixels span, so where only one sign stays in
        range it is known; elsewhere the prior picks the more likely sign."""
        # The range comes from the attacker's own estimate of the centring, so it is widened by
        # a margin: a value at the estimated edge may lie just inside the owner's.
        margin = _RANGE_MARGIN * (self.hi - self.lo)
        pos_ok = magnitude <= self.hi + margin
        neg_ok = -magnitude >= self.lo - margin
        cols = torch.arange(magnitude.shape[1])
        p_pos = self.density[cols, self._bin(magnitude)]
        p_neg = self.density[cols, self._bin(-magnitude)]
        positive = pos_ok & (~neg_ok | (p_pos >= p_neg))
        return torch.where(positive, magnitude, -magnitude), pos_ok ^ neg_ok


@register("instahide-carlini")
class InstaHideCarlini(Attack):
    """Recover InstaHide's private images from the encodings alone (Carlini et al.'s attack).

    Threat: reconstruction at level 1; needs every encoding the cloud holds (``upload``), since
    a target's private images are recovered from the other encodings that mix them. Steps:
    absolute values remove the random sign mask; the sign of each value is put back where the
    pixel range allows only one (a mixture of images lies within their range) and elsewhere by a
    per-pixel prior from mixtures of public images; the similarity of two encodings (correlation
    of the standardised mixtures) scores whether they share a private image; around each target
    a greedy clique of the most mutually similar encodings is the cluster of one of its private
    images; that image is recovered from the cluster as the largest non-negative image every
    member's non-negative mixture could contain (per pixel, the minimum over members of mixture
    over coefficient, the coefficients fitted by least squares), rescaled to public brightness.
    The paper clusters the whole similarity graph with a learned similarity, assigns each
    encoding to its clusters by min-cost flow and recovers by gradient descent; here the graph is
    explored only around the targets, which fits a CPU budget.
    Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta, Tramèr, "Is Private
    Learning Possible with Instance Encoding?", IEEE S&P 2021.

    Args:
        cluster_size: encodings in each target's cluster (the target included).
        candidates: most similar encodings searched for each cluster, as a multiple of
            cluster_size.
        prior_samples: simulated public mixtures behind the sign prior.
        max_encodings: encodings of the upload searched (0: all).
    """

    goal = RECONSTRUCT
    needs = frozenset({TARGETS, UPLOAD, DEFENSE, PUBLIC})

    def __init__(self, cluster_size: int = 6, candidates: int = 4, prior_samples: int = 10000,
                 max_encodings: int = 0) -> None:
        self.cluster_size = cluster_size
        self.candidates = candidates
        self.prior_samples = prior_samples
        self.max_encodings = max_encodings

    def validate(self) -> None:
        check_number(self.name, "cluster_size", self.cluster_size, kind=int, low=1)
        check_number(self.name, "candidates", self.candidates, kind=int, low=1)
        check_number(self.name, "prior_samples", self.prior_samples, kind=int, low=1)
        check_number(self.name, "max_encodings", self.max_encodings, kind=int, low=0)

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        gen = torch.Generator().manual_seed(seed)
        params = view.require(DEFENSE).get_params()
        public = view.require(PUBLIC).x
        upload = view.require(UPLOAD).x
        if upload.shape[1:] != public.shape[1:]:
            raise NotApplicable(f"{self.name}: encodings of shape {tuple(upload.shape[1:])} are "
                                f"not mixtures of images of shape {tuple(public.shape[1:])}")
        rows = target_rows(view)
        if self.max_encodings and len(upload) > self.max_encodings:
            keep = torch.randperm(len(upload), generator=gen)[: self.max_encodings]
            keep = torch.unique(torch.cat([rows, keep]))
            rows = torch.searchsorted(keep, rows)
            upload = upload[keep]
        shift, scale = centring(params, public)
        lo = ((0 - shift) / scale).expand_as(public[:1]).flatten()
        hi = ((1 - shift) / scale).expand_as(public[:1]).flatten()
        centred = ((public - shift) / scale).flatten(1)
        k = params.get("k", 1)
        k = k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else 1
        prior = SignPrior(centred, k, lo, hi, self.prior_samples, gen)

        signed, fixed = [], 0.0
        for part in upload.flatten(1).split(_CHUNK):
            s, f = prior.resolve(part.abs().float())
            signed.append(s)
            fixed += float(f.float().sum())
        mixtures = torch.cat(signed)  # (N, D) centred mixtures
        feats = (mixtures - mixtures.mean(0)) / mixtures.std(0).clamp_min(1e-3)
        feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-9)
        groups, cohesion = self._clusters(feats, rows)
        images, fit = self._recover(mixtures[groups] - lo, centred - lo)
        self.groups_ = groups
        report = {"sign_fixed_by_range": fixed / mixtures.numel(),
                  "cluster_similarity": cohesion, "recovery_fit": fit,
                  "encodings": float(len(mixtures))}
        log.info("%s: %s", self.name, {n: round(v, 4) for n, v in report.items()})
        out = (images + lo) * scale.expand_as(public[:1]).flatten() \
            + shift.expand_as(public[:1]).flatten()
        return Outcome(out.view(-1, *public.shape[1:]).clamp(0, 1), report)

    def _clusters(self, feats: Tensor, rows: Tensor) -> tuple[Tensor, float]:
        """(n, m) rows of each target's cluster (the target first): greedily add the candidate
        most similar on average to the members so far; and the clusters' mean similarity."""
        m = min(self.cluster_size, len(feats))
        sim = feats[rows] @ feats.T  # (n, N)
        sim[torch.arange(len(rows)), rows] = -torch.inf
        count = min(len(feats) - 1, self.candidates * m)
        if m == 1 or count < 1:
            return rows[:, None], 1.0
        cand = sim.topk(count, dim=1).indices  # (n, M)
        c = feats[cand]  # (n, M, D)
        pair = c @ c.mT  # (n, M, M)
        total = torch.gather(sim, 1, cand)  # summed similarity to the members so far
        chosen = torch.zeros_like(total, dtype=torch.bool)
        picks = []
        for size in range(1, m):
            j = torch.where(chosen, -torch.inf, total / size).argmax(1)
            chosen[torch.arange(len(rows)), j] = True
            picks.append(j)
            total = total + pair[torch.arange(len(rows)), j]
        members = torch.gather(cand, 1, torch.stack(picks, 1))
        groups = torch.cat([rows[:, None], members], 1)
        g = feats[groups]
        inner = g @ g.mT
        cohesion = (inner.sum((1, 2)) - m) / (m * (m - 1))
        return groups, float(cohesion.mean())

    @staticmethod
    def _recover(mixtures: Tensor, public: Tensor) -> tuple[Tensor, float]:
        """(n, D) images from (n, m, D) non-negative mixtures (pixel minus its lowest value).

        Every member is coefficient × image + the others' non-negative share, so the image is at
        most member / coefficient everywhere: the minimum over members, with each member's
        coefficient fitted by least squares on the pixels the first estimate marks (capped by a
        low quantile of the ratios, since the others only add). Brightness, which the unknown
        coefficients leave open, is set to the public images' mean."""
        mixtures = mixtures.clamp_min(0)
        u = mixtures.min(1).values
        support = u > 0.3 * u.amax(1, keepdim=True)
        w = (u * support)[:, None, :]
        lam = (mixtures * w).sum(2) / w.pow(2).sum(2).clamp_min(1e-9)
        ratio = torch.where(support[:, None, :], mixtures / u[:, None, :].clamp_min(1e-9),
                            torch.inf)
        low = ratio.sort(2).values
        count = support.sum(1).clamp_min(1)
        q = low.gather(2, (0.1 * (count - 1)).long()[:, None, None].expand(-1, low.shape[1], 1))
        lam = torch.minimum(lam, q.squeeze(2)).clamp_min(1e-3)
        u = (mixtures / lam[..., None]).min(1).values
        residual = (mixtures - lam[..., None] * u[:, None, :]).clamp_min(0)
        fit = 1 - float(residual.pow(2).sum() / mixtures.pow(2).sum().clamp_min(1e-12))
        u = u * public.mean() / u.mean(1, keepdim=True).clamp_min(1e-9)
        return u, fit
