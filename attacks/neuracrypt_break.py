"""NeuraCrypt break after Carlini et al.: unshuffle patches, match patch statistics, re-identify."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from disguisebench.attacks._blockstats import correlation, swap_refine
from disguisebench.attacks._common import regularised_inverse, subsample
from disguisebench.api import (
    DEFENSE, GALLERY, PUBLIC, REIDENTIFY, TARGETS, UPLOAD, Attack, Defense, NotApplicable, Outcome,
    PluginError, ThreatView, check_number)
from disguisebench.blocks import pad_to_blocks, to_blocks
from disguisebench.registry import register

log = logging.getLogger("disguisebench")


def tokens(x: Tensor) -> Tensor:
    """(N, D, gh, gw) encodings -> (N, P, D) patch vectors."""
    return x.double().flatten(2).transpose(1, 2)


def assign(tok: Tensor, centroids: Tensor) -> Tensor:
    """(N, P) cluster of every patch: per image, the one-to-one assignment of its patches to the
    P clusters of least squared distance (each image has exactly one patch per position)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(tok, centroids.expand(len(tok), -1, -1)).pow(2).numpy()
    out = torch.empty(tok.shape[:2], dtype=torch.long)
    for i, c in enumerate(cost):  # scipy solves one assignment at a time
        out[i] = torch.as_tensor(linear_sum_assignment(c)[1])
    return out


def by_cluster(tok: Tensor, labels: Tensor) -> Tensor:
    """Reorder each image's patches so that column c holds its patch of cluster c."""
    return torch.empty_like(tok).scatter_(1, labels[..., None].expand_as(tok), tok)


def activity(x: Tensor, reference: Tensor) -> Tensor:
    """(N, P) distance of each patch vector to its position's reference (median) vector."""
    return (x - reference).norm(dim=-1)


def profile(act: Tensor) -> Tensor:
    """(P, 5) scale-free description of each position's activities: the share of patches that
    differ from the reference, and quantiles of activity over its mean."""
    active = (act > 1e-6 * float(act.max()) + 1e-12).double().mean(0, keepdim=True).T
    q = torch.tensor([0.5, 0.75, 0.9, 0.99], dtype=act.dtype)
    return torch.cat([active, torch.quantile(act / act.mean().clamp_min(1e-12), q, dim=0).T], 1)


@register("neuracrypt-break")
class NeuraCryptBreak(Attack):
    """Re-identify NeuraCrypt encodings: recover each image's patch order, then match patches.

    Threat: re-identification at level 1 against encodings whose patches were encoded one by one
    (plus a positional embedding) and shuffled per image. Steps: every position's embedding
    shifts its patches' encodings, so the patch vectors of the encoded set cluster by position;
    a k-means whose assignment step gives each image exactly one patch per cluster (the
    Hungarian algorithm, one image at a time) recovers every image's patch order up to one
    relabelling of the positions. That relabelling is found by matching per-position patch
    statistics (how often a patch differs from the position's typical patch, and how much)
    against public plaintext with the Hungarian algorithm, refined by matching how positions
    co-vary. Each target's per-position activity is then correlated with each gallery image's,
    targets are assigned to gallery images one to one. Boosting rounds then fit, on the more
    confident half of the matches, a ridge regression from the plaintext patches of every
    position to the encoded patches of every cluster, move each cluster to the position that
    fits it best (one to one, which repairs relabelling errors), and re-match by the encodings
    the regressions predict for the gallery. Carlini, Garg, Jha, Mahloujifar, Mahmoody, Tramèr,
    "NeuraCrypt is not private", 2021 (attack on Yala et al., NeuraCrypt, 2021).

    Args:
        kmeans_iters: rounds of the balanced k-means over patch vectors.
        boost_rounds: regression-and-rematch rounds (0: activity matching alone).
        ridge: ridge penalty of the per-position regressions, relative to the mean input energy.
        refine_steps: pairwise swaps refining the cluster-to-position relabelling.
        max_images: encoded images clustered (0: every image the cloud holds).
    """

    goal = REIDENTIFY
    needs = frozenset({TARGETS, DEFENSE, PUBLIC, GALLERY})
    optional = frozenset({UPLOAD})

    def __init__(self, kmeans_iters: int = 10, boost_rounds: int = 3, ridge: float = 0.1,
                 refine_steps: int = 500, max_images: int = 1500) -> None:
        self.kmeans_iters = kmeans_iters
        self.boost_rounds = boost_rounds
        self.ridge = ridge
        self.refine_steps = refine_steps
        self.max_images = max_images

    def validate(self) -> None:
        check_number(self.name, "kmeans_iters", self.kmeans_iters, kind=int, low=0)
        check_number(self.name, "boost_rounds", self.boost_rounds, kind=int, low=0)
        check_number(self.name, "ridge", self.ridge, low=0)
        check_number(self.name, "refine_steps", self.refine_steps, kind=int, low=0)
        check_number(self.name, "max_images", self.max_images, kind=int, low=0)

    def _patches(self, images: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
        """(N, P, C*p*p) plaintext patches in raster order on the encodings' grid."""
        x = pad_to_blocks(images.double(), patch, self.name, "edge")
        if tuple(d // patch for d in x.shape[-2:]) != grid:
            raise NotApplicable(f"{self.name}: plaintext of size {tuple(images.shape[-2:])} in "
                                f"patches of {patch} does not give the encodings' {grid} grid")
        b = to_blocks(x, patch)  # (N, C, P, p, p)
        return b.permute(0, 2, 1, 3, 4).flatten(2)

    def patch_layout(self, defense: Defense, image_shape: tuple[int, int, int],
                     grid: tuple[int, int]) -> tuple[int, bool]:
        """The patch side in pixels and whether patches are shuffled per image: from the
        defense's block layout when its blocks are the cells of the encodings' grid, else one
        patch per grid cell of the plaintext, left in place."""
        try:
            lay = defense.block_layout(image_shape)
        except PluginError:
            lay = None
        if lay is not None and lay.grid == grid:
            return lay.block, lay.moves == "image"
        h, w = image_shape[-2:]
        if h % grid[0] or w % grid[1] or h // grid[0] != w // grid[1]:
            raise NotApplicable(f"{self.name}: cannot tell the patch size of encodings on a "
                                f"{grid} grid from images of size {(h, w)}")
        return h // grid[0], False  # one pixel per patch for a defense that keeps the size

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        targets = view.require(TARGETS).x
        gallery = view.require(GALLERY)
        public = view.require(PUBLIC).x
        grid = tuple(targets.shape[-2:])
        patch, shuffled = self.patch_layout(view.require(DEFENSE), tuple(public.shape[1:]), grid)
        pool = view.upload.x if view.upload is not None else targets
        pool = tokens(subsample(pool, self.max_images, seed))
        tt = tokens(targets)
        pp = self._patches(public, grid, patch)
        gp = self._patches(gallery, grid, patch)

        if not shuffled:
            order = torch.arange(tt.shape[1])
            pool_c, target_c = pool, tt
        else:
            centroids = pool[int(torch.randint(0, len(pool), (1,),
                                               generator=torch.Generator().manual_seed(seed)))]
            for _ in range(self.kmeans_iters):
                labels = assign(pool, centroids)
                centroids = by_cluster(pool, labels).mean(0)
            pool_c = by_cluster(pool, assign(pool, centroids))
            target_c = by_cluster(tt, assign(tt, centroids))
            order = self._relabel(pool_c, pp)
        # Columns in plaintext position order: position p is cluster inverse[p].
        inverse = torch.argsort(order)
        pool_c, target_c = pool_c[:, inverse], target_c[:, inverse]
        reference = pool_c.median(0).values
        plain_ref = pp.median(0).values
        act_pool, act_pub = activity(pool_c, reference), activity(pp, plain_ref)

        def standard(a: Tensor, population: Tensor) -> Tensor:
            z = (a - population.mean(0)) / population.std(0).clamp_min(1e-9)
            return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)

        score = standard(activity(target_c, reference), act_pool) @ \
            standard(activity(gp, plain_ref), act_pub).T
        match = self._match(-score)
        for _ in range(self.boost_rounds):
            confidence = score[torch.arange(len(match)), match]
            keep = confidence >= confidence.median()
            dist = self._predicted_distance(target_c, gp, match, keep)
            score = -dist
            match = self._match(dist)
        chosen = score[torch.arange(len(match)), match]
        runner_up = score.topk(min(2, score.shape[1]), dim=1).values[:, -1]
        report = {"images": float(len(pool)),
                  "match_margin": float((chosen - runner_up).mean())}
        log.info("%s: %s", self.name, report)
        return Outcome(match, report)

    def _relabel(self, pool_c: Tensor, plain: Tensor) -> Tensor:
        """(P,) the plaintext position of each cluster, from per-position statistics."""
        from scipy.optimize import linear_sum_assignment

        act_c = activity(pool_c, pool_c.median(0).values)
        act_p = activity(plain, plain.median(0).values)
        unary = torch.cdist(profile(act_c), profile(act_p)).pow(2)
        unary = unary / unary.mean().clamp_min(1e-12)
        _, cols = linear_sum_assignment(unary.numpy())
        order, _ = swap_refine(torch.as_tensor(cols, dtype=torch.long), unary,
                                   correlation(act_c), correlation(act_p),
                                   steps=self.refine_steps)
        return order

    @staticmethod
    def _match(cost: Tensor) -> Tensor:
        """Each target's gallery index: one to one (Hungarian) when the gallery is large
        enough, else the cheapest."""
        from scipy.optimize import linear_sum_assignment

        if cost.shape[0] > cost.shape[1]:
            return cost.argmin(1)
        rows, cols = linear_sum_assignment(cost.numpy())
        match = torch.empty(cost.shape[0], dtype=torch.long)
        match[torch.as_tensor(rows)] = torch.as_tensor(cols)
        return match

    def _predicted_distance(self, target_c: Tensor, gallery_patches: Tensor, match: Tensor,
                            keep: Tensor) -> Tensor:
        """(n, G) distance of each target's encoded patches to those per-position ridge
        regressions (fitted on the kept matches) predict for every gallery image.

        Every column is regressed on the plaintext patches of every position, and columns are
        moved to the positions that fit them best (one to one, Hungarian algorithm), which
        repairs a wrong relabelling as the matches improve."""
        from scipy.optimize import linear_sum_assignment

        def design(p: Tensor) -> Tensor:
            return torch.cat([p, torch.ones(*p.shape[:-1], 1, dtype=p.dtype)], -1)

        x = design(gallery_patches[match[keep]]).transpose(0, 1)  # (P, m, F)
        y = target_c[keep].transpose(0, 1)  # (P columns, m, D)
        inv = regularised_inverse(x.mT @ x, self.ridge)  # (P, F, F)
        cross = torch.einsum("pmf,cmd->pcfd", x, y)  # position p, column c
        explained = torch.einsum("pcfd,pfg,pcgd->pc", cross, inv, cross)
        residual = y.pow(2).sum((1, 2))[None, :] - explained  # (P, columns)
        rows, cols = linear_sum_assignment(residual.numpy())
        source = torch.empty(len(cols), dtype=torch.long)
        source[torch.as_tensor(cols)] = torch.as_tensor(rows)  # column c <- position source[c]
        weight = torch.einsum("cfg,cgd->cfd", inv[source], cross[source, torch.arange(len(cols))])
        predicted = torch.einsum("gcf,cfd->gcd", design(gallery_patches[:, source]), weight)
        return torch.cdist(target_c.flatten(1), predicted.flatten(1))
