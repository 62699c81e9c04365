"""Template matching: disguise every gallery image and match each target to the nearest."""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.api import (DEFENSE, GALLERY, ORACLE, REIDENTIFY, TARGETS, Attack, Data,
                           ThreatView, check_choice)
from benchmark.registry import register


@register("template-match")
class TemplateMatch(Attack):
    """Re-identify disguised targets by nearest neighbour against disguised gallery candidates.

    Without the oracle the attacker disguises the gallery under a key of its own, which is exact
    for keyless defenses and near chance for a keyed one; with the level-3 oracle it disguises the
    gallery under the owner's key. ``feature="sorted-pixels"`` compares the multiset of pixel
    values, which any pixel or block permutation leaves unchanged. Design card of DisguiseBench;
    the threat named by Sharma & Chen, "Disguised-Nets", 2019 (visual re-identification).

    Args:
        feature: "pixels" (the disguised images themselves) or "sorted-pixels" (per-image sorted
            values, permutation-invariant).
    """

    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY, DEFENSE})
    optional = frozenset({ORACLE})

    def __init__(self, feature: str = "pixels") -> None:
        self.feature = feature

    def validate(self) -> None:
        check_choice(self.name, "feature", self.feature, ("pixels", "sorted-pixels"))

    def _features(self, x: Tensor) -> Tensor:
        flat = x.flatten(1).double()
        return flat.sort(1).values if self.feature == "sorted-pixels" else flat

    def run(self, view: ThreatView, *, seed: int) -> Tensor:
        gallery = Data(view.require(GALLERY))
        if view.oracle is not None:
            disguised = view.oracle(gallery)
        else:
            disguised = view.require(DEFENSE).fit(gallery, seed=seed).transform(gallery)
        targets = self._features(view.require(TARGETS).x)
        candidates = self._features(disguised.x)
        # A mixing defense yields several encodings per gallery image; map back to their sources.
        owner = disguised.sources()[:, 0]
        return owner[torch.cdist(targets, candidates).argmin(1)]
