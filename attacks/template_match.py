"""Template matching: disguise every gallery image and match each target to the nearest."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from disguisebench.attacks._common import own_key, sub_seed, within_budget
from disguisebench.attacks._discovery import discover
from disguisebench.api import (
    DEFENSE, GALLERY, ORACLE, REIDENTIFY, TARGETS, Attack, Data, Defense, NotApplicable, Outcome,
    ThreatView, check_choice)
from disguisebench.blocks import to_blocks
from disguisebench.registry import register

log = logging.getLogger("disguisebench")

FEATURES = ("pixels", "block-norms", "sorted-block-norms", "sorted-pixels", "block-repeats")


def features(x: Tensor, kind: str, block: int | None) -> Tensor | None:
    """(N, F) features of disguised images, or None where ``kind`` does not apply to them.

    "block-norms" are the norms of every row of every k×k block, which right-multiplying a block
    by an orthogonal matrix leaves unchanged; the "sorted" kinds forget positions, so block or
    pixel permutations leave them unchanged too. "block-repeats" marks the blocks equal to the
    most frequent block of the whole set ``x``: a deterministic block cipher under one key (AES
    in ECB mode) maps every blank block to one ciphertext, so the mark traces the image's
    silhouette whatever the key.
    """
    x = x.double()
    if kind == "pixels":
        return x.flatten(1)
    if kind == "sorted-pixels":
        return x.flatten(2).sort(2).values.flatten(1)
    h, w = x.shape[-2:]
    if not block or h % block or w % block:
        return None
    if kind == "block-repeats":
        blocks = to_blocks(x, block).flatten(3)  # (N, C, P, k*k)
        if not len(blocks):
            return blocks.flatten(1)[:, :0]
        values, counts = torch.unique(blocks.reshape(-1, blocks.shape[-1]), dim=0,
                                      return_counts=True)
        return (blocks == values[counts.argmax()]).all(-1).flatten(1).double()
    norms = to_blocks(x, block).norm(dim=-1).flatten(2)  # (N, C, P*k)
    return (norms.sort(2).values if kind == "sorted-block-norms" else norms).flatten(1)


def disguised_block(block: int | None, plain_side: int, disguised_side: int) -> int | None:
    """The side of one block in the disguised images: ``block`` unless the defense changes the
    image size (``block-aes`` writes each block as a 16-byte ciphertext square), in which case
    the disguised side over the number of blocks per side."""
    if not block or plain_side % block or disguised_side % (plain_side // block):
        return block
    return disguised_side // (plain_side // block)


def nearest(targets: Tensor, candidates: Tensor) -> Tensor:
    return torch.cdist(targets, candidates).argmin(1)


@register("template-match")
class TemplateMatch(Attack):
    """Re-identify disguised targets by nearest neighbour against disguised gallery candidates.

    Threat: re-identification at every level. The attacker disguises the gallery itself, under a
    key of its own (exact for keyless defenses) or, with the level-3 oracle, under the owner's
    key, and compares features that the unknown key cannot change: the pixels for an exact
    re-disguise, the multiset of pixel values under a permutation, the norms of block rows under
    orthogonal block matrices (sorted when blocks are permuted), which blocks repeat the most
    common block under a deterministic block cipher. ``feature="auto"`` picks the
    feature empirically: it disguises the gallery under two keys of its own (or twice through the
    oracle, in different batches) and keeps the feature that re-identifies best between them,
    reported as ``calibration``. Design card of DisguiseBench; the threat named by Sharma &
    Chen, "Disguised-Nets", 2019 (visual re-identification).

    Args:
        feature: "auto", "pixels", "block-norms", "sorted-block-norms", "sorted-pixels" or
            "block-repeats".
    """

    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY, DEFENSE})
    optional = frozenset({ORACLE})

    def __init__(self, feature: str = "auto") -> None:
        self.feature = feature

    def validate(self) -> None:
        check_choice(self.name, "feature", self.feature, ("auto", *FEATURES))

    def _calibrate(self, view: ThreatView, gallery: Data, block: int | None, seed: int
                   ) -> tuple[str, float]:
        """The feature that best re-identifies the gallery between two disguises of it."""
        n = len(gallery)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        if view.oracle is not None:
            first, second = view.oracle(gallery), view.oracle(gallery[order])
        else:
            defense: Defense = view.require(DEFENSE)
            first = own_key(defense, gallery, seed=sub_seed(seed, 1)).transform(gallery)
            second = own_key(defense, gallery, seed=sub_seed(seed, 2)).transform(gallery[order])
        truth = order[second.sources()[:, 0]]
        block = disguised_block(block, gallery.x.shape[-1], first.x.shape[-1])
        best, best_score = "pixels", -1.0
        for kind in FEATURES:
            a, b = features(second.x, kind, block), features(first.x, kind, block)
            if a is None or a.shape[1] != b.shape[1]:
                continue
            owner = first.sources()[:, 0]
            score = float((owner[nearest(a, b)] == truth).double().mean())
            if score > best_score:
                best, best_score = kind, score
        log.info("%s: feature %s re-identifies %.2f between two disguises", self.name, best,
                 best_score)
        return best, best_score

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        gallery = Data(view.require(GALLERY))
        defense: Defense = view.require(DEFENSE)
        view = within_budget(view, (3 if self.feature == "auto" else 1) * len(gallery))
        found = discover(defense, gallery.x)
        block = found.unit if found.found and found.unit < min(gallery.x.shape[-2:]) else None
        kind, report = self.feature, {}
        if kind == "auto":
            kind, report["calibration"] = self._calibrate(view, gallery, block, seed)
        if view.oracle is not None:
            disguised = view.oracle(gallery)
        else:
            disguised = own_key(defense, gallery, seed=seed).transform(gallery)
        block = disguised_block(block, gallery.x.shape[-1], disguised.x.shape[-1])
        targets = features(view.require(TARGETS).x, kind, block)
        candidates = features(disguised.x, kind, block)
        if targets is None or candidates is None:
            raise NotApplicable(f"{self.name}: feature={kind!r} needs a defense whose probed "
                                "block unit divides the disguised image side")
        # A mixing defense yields several encodings per gallery image; map back to their sources.
        owner = disguised.sources()[:, 0]
        return Outcome(owner[nearest(targets, candidates)], report)
