"""A keyed pixel shuffle, packaged outside DisguiseBench to show how a defense is contributed."""

from __future__ import annotations

import torch

from disguisebench.api import Data, Defense, check_choice


class PixelShuffle(Defense):
    """Move every pixel to a secret position: one permutation of all H×W positions.

    Secret: the permutation (shared by all images and channels). Targets visual
    re-identification at level 1; a permutation leaves each image's multiset of pixel values
    unchanged, which a template-matching attacker can exploit. Example plugin for DisguiseBench.

    Args:
        scope: "dataset" (one permutation for all images) or "channel" (one per channel).
    """

    def __init__(self, scope: str = "dataset") -> None:
        self.scope = scope

    def validate(self) -> None:
        check_choice(self.name, "scope", self.scope, ("dataset", "channel"))

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        c, h, w = data.image_shape
        count = c if self.scope == "channel" else 1
        self.permutation_ = torch.argsort(torch.rand(count, h * w, generator=rng), dim=1)

    def _transform(self, data: Data, *, epoch: int) -> Data:
        n, c, h, w = data.x.shape
        flat = data.x.reshape(n, c, h * w)
        index = self.permutation_.expand(c, h * w) if self.scope == "dataset" else self.permutation_
        out = torch.gather(flat, 2, index.unsqueeze(0).expand(n, c, h * w))
        return Data(out.reshape(n, c, h, w), data.y)
