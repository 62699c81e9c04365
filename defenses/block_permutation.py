"""Block permutation: k×k blocks moved to secret positions, the pixels inside left as they are."""

from __future__ import annotations

import torch

from disguisebench.api import Data, Defense, PluginError, check_choice, check_number
from disguisebench.registry import register
from disguisebench.blocks import (
    BlockLayout, check_disguised_size, check_image_size, pad_to_blocks, permute_blocks,
)
from disguisebench.defenses._blocks import content_generator, draw_secret, random_permutations


@register("block-permutation")
class BlockPermutation(Defense):
    """Move every k×k block to another position under a secret permutation of block positions.

    Secret: the permutation (one for the whole dataset, as in 2019), or the seed of the fresh
    per-image permutations of the later code. Targets visual re-identification by the cloud
    (level 1); every block, and so the multiset of pixel values, is uploaded unchanged. The
    permutation-only ablation of Sharma & Chen, "Disguised-Nets: Image Disguising for
    Privacy-preserving Outsourced Deep Learning", 2019 (block-rmt with matrix="identity").

    Args:
        block: block side k in pixels; must divide the image side unless padding="edge".
        permutation: "dataset" (one permutation of block positions for all images) or "image"
            (a fresh permutation per image).
        padding: "error" when k does not divide the image side, or "edge" (replicate edge pixels).
    """

    def __init__(self, block: int = 4, permutation: str = "dataset", padding: str = "error") -> None:
        self.block = block
        self.permutation = permutation
        self.padding = padding

    def validate(self) -> None:
        check_number(self.name, "block", self.block, kind=int, low=1)
        check_choice(self.name, "permutation", self.permutation, ("dataset", "image"))
        check_choice(self.name, "padding", self.padding, ("error", "edge"))

    def block_layout(self, image_shape: tuple[int, int, int]) -> BlockLayout:
        return BlockLayout.of(self.name, image_shape, self.block, padding=self.padding,
                              moves=self.permutation)

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        self.permutation_ = torch.randperm(self.block_layout(data.image_shape).positions,
                                           generator=rng)
        self.secret_ = draw_secret(rng)
        self.image_shape_ = tuple(data.x.shape[1:])

    def _transform(self, data: Data, *, epoch: int) -> Data:
        check_image_size(self.name, data.x, self.image_shape_)
        x = pad_to_blocks(data.x, self.block, self.name, self.padding)
        if self.permutation == "dataset":
            return Data(permute_blocks(x, self.permutation_, self.block), data.y)
        perms = random_permutations(len(x), len(self.permutation_),
                                    content_generator(self.secret_, data.x))
        return Data(permute_blocks(x, perms, self.block), data.y)

    def _inverse(self, data: Data) -> Data:
        """Undo a dataset permutation (per-image permutations are not kept)."""
        if self.permutation == "image":
            raise PluginError(f"{self.name}: per-image permutations are drawn afresh for every "
                              "batch and cannot be inverted; only permutation='dataset' can")
        check_disguised_size(self.name, data.x, self.image_shape_, self.block, self.padding)
        x = permute_blocks(data.x, torch.argsort(self.permutation_), self.block)
        _, h, w = self.image_shape_
        return Data(x[..., :h, :w].contiguous(), data.y)
