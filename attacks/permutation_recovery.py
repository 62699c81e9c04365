"""Permutation recovery: a block permutation from ciphertext statistics, undone to re-identify."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from disguisebench.attacks._blockstats import (assign_per_image, blocks_of, features, layout,
                                               match_positions, place, whitener)
from disguisebench.attacks._common import subsample
from disguisebench.api import (
    DEFENSE, GALLERY, PUBLIC, REIDENTIFY, TARGETS, UPLOAD, Attack, NotApplicable,
    Outcome, ThreatView, check_choice, check_number)
from disguisebench.registry import register

log = logging.getLogger("disguisebench")


@register("permutation-recovery")
class PermutationRecovery(Attack):
    """Recover a secret block permutation from ciphertext statistics alone, undo it and re-identify.

    Threat: re-identification at level 1 against block-wise disguises whose block permutation is
    one for all images (block-rmt with permutation="dataset", block-permutation, block-scramble's
    block scrambling). Per block position, statistics of the disguised set (every image the cloud
    holds) are matched against those of public plaintext with the Hungarian algorithm (scipy's
    linear_sum_assignment); pairwise swaps then match how block energies co-vary between
    positions. The statistics are ones the per-position secret matrix leaves unchanged: the
    pixels themselves without a matrix, the Gram matrix B B^T of each block under orthogonal
    matrices, the whitened Gram matrix under general ("projection") matrices. With the order
    undone, each target's per-position invariant features are matched to the gallery's (nearest
    neighbour). A permutation drawn per image cannot be seen in dataset statistics: each
    target's blocks are then assigned to positions one image at a time by their likelihood
    under each position's public statistics, which mostly fails (the jigsaw attack does better).
    Noise added after the matrices perturbs every statistic and is not modelled.
    Attack of DisguiseBench on the block permutation of Sharma & Chen, "Disguised-Nets: Image
    Disguising for Privacy-preserving Outsourced Deep Learning", 2019, whose level-1 claim it
    tests; the assignment is Kuhn's Hungarian method ("The Hungarian Method for the Assignment
    Problem", 1955).

    Args:
        statistics: "auto" (from the defense's matrix), "pixels", "gram" or "whitened".
        refine_steps: pairwise swaps after the Hungarian assignment (0: the assignment alone).
        max_images: disguised images used for statistics (0: every image the cloud holds).
    """

    goal = REIDENTIFY
    needs = frozenset({TARGETS, DEFENSE, PUBLIC, GALLERY})
    optional = frozenset({UPLOAD})
    budget = ("refine_steps",)  # scaled by a plan's compute

    def __init__(self, statistics: str = "auto", refine_steps: int = 500,
                 max_images: int = 5000) -> None:
        self.statistics = statistics
        self.refine_steps = refine_steps
        self.max_images = max_images

    def validate(self) -> None:
        check_choice(self.name, "statistics", self.statistics,
                     ("auto", "pixels", "gram", "whitened"))
        check_number(self.name, "refine_steps", self.refine_steps, kind=int, low=0)
        check_number(self.name, "max_images", self.max_images, kind=int, low=0)

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        dist, report = self.distances(view, seed=seed)
        return Outcome(dist.argmin(1), report)

    def distances(self, view: ThreatView, *, seed: int) -> tuple[Tensor, dict[str, float]]:
        """(targets, gallery) distances of the unpermuted invariant features, and diagnostics
        (``run`` validates the hyperparameters first; a caller of this method holds valid ones)."""
        lay = layout(view.require(DEFENSE), self.name, view.require(PUBLIC).x)
        matrix = {"auto": lay.matrix, "pixels": "identity", "gram": "orthogonal",
                  "whitened": "projection"}[self.statistics]
        k = lay.block
        targets = view.require(TARGETS).x
        pool = view.upload.x if view.upload is not None else targets
        pool = subsample(pool, self.max_images, seed)
        gallery = view.require(GALLERY)
        pub = blocks_of(view.require(PUBLIC).x, k, self.name)
        tb = blocks_of(targets, k, self.name)
        if tb.shape[1:] != pub.shape[1:] or pool.shape[1:] != targets.shape[1:]:
            raise NotApplicable(f"{self.name}: disguised images of shape "
                                f"{tuple(targets.shape[1:])} do not split into the "
                                f"{tuple(pub.shape[1:3])} blocks of {k}×{k} the plaintext does")
        dis = blocks_of(pool, k, self.name)
        dis_white = whitener(dis) if matrix == "projection" else None
        pub_white = whitener(pub) if matrix == "projection" else None
        report = {"images": float(len(pool))}
        if lay.scope == "dataset":
            src, info = match_positions(dis, pub, matrix, steps=self.refine_steps,
                                        dis_white=dis_white, pub_white=pub_white)
            report.update(info)
        elif lay.scope == "image":
            src = assign_per_image(tb, pub, matrix)
            dis_white = None if dis_white is None else whitener(place(tb, src))
        else:
            src = torch.arange(tb.shape[2])
        self.permutation_ = src
        # Invariant features of the targets, whitened by their disguised position's population,
        # then moved to the plaintext positions found.
        tf = features(tb, matrix, dis_white)
        if src.dim() == 1:
            tf = tf[:, torch.argsort(src)]
        else:
            tf = torch.gather(tf, 1, torch.argsort(src, dim=1)[..., None].expand_as(tf))
        gf = features(blocks_of(gallery, k, self.name), matrix, pub_white)
        # Features scaled by their public spread, floored so that positions blank in every
        # public image do not turn noise into distance.
        spread = features(pub, matrix, pub_white).flatten(1).std(0)
        scale = spread.clamp_min(0.1 * float(spread.mean()) + 1e-12)
        log.info("%s: %s statistics over %d disguised images; %s", self.name, matrix, len(pool),
                 {k: round(v, 4) for k, v in report.items()})
        return torch.cdist(tf.flatten(1) / scale, gf.flatten(1) / scale), report
