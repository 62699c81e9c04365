"""Block-wise randomized multidimensional transformation (RMT), the Disguised-Nets scheme."""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.api import Data, Defense, PluginError, check_choice, check_number
from benchmark.registry import register
from defenses._blocks import (
    content_generator, draw_secret, from_blocks, full_rank_uniform, haar_orthogonal,
    pad_to_blocks, padded_size, random_permutations, to_blocks,
)


@register("block-rmt")
class BlockRMT(Defense):
    """Multiply every k×k block by a secret matrix per block position, permute blocks, add noise.

    Secret: one k×k matrix per block position (shared by all images and channels), the block
    permutation, and the noise seed. Targets visual re-identification and model misuse by the
    cloud (level 1); the authors concede known plaintext pairs (level 2) break it.
    Sharma & Chen, "Disguised-Nets: Image Disguising for Privacy-preserving Outsourced Deep
    Learning", 2019; Sharma, Gu & Chen, "A Comparative Study of Image Disguising Methods for
    Confidential Outsourced Learning", 2023.

    Args:
        block: block side k in pixels; must divide the image side unless padding="edge".
        matrix: "orthogonal" (Haar, det +1), "projection" (uniform [0, 1) entries, full rank) or
            "identity" (no mixing inside blocks).
        permutation: "none", "dataset" (one permutation of block positions for all images) or
            "image" (a fresh permutation per image).
        noise: "uniform" on [0, sigma) or "gaussian" with standard deviation sigma.
        sigma: noise scale in 0-255 pixel units (0 disables noise).
        noise_stage: "after" RMT and permutation (2019 paper) or "before" RMT (later code).
        padding: "error" when k does not divide the image side, or "edge" (replicate edge pixels).
    """

    def __init__(self, block: int = 4, matrix: str = "orthogonal", permutation: str = "dataset",
                 noise: str = "uniform", sigma: float = 0.0, noise_stage: str = "after",
                 padding: str = "error") -> None:
        self.block = block
        self.matrix = matrix
        self.permutation = permutation
        self.noise = noise
        self.sigma = sigma
        self.noise_stage = noise_stage
        self.padding = padding

    def validate(self) -> None:
        check_number(self.name, "block", self.block, kind=int, low=1)
        check_choice(self.name, "matrix", self.matrix, ("orthogonal", "projection", "identity"))
        check_choice(self.name, "permutation", self.permutation, ("none", "dataset", "image"))
        check_choice(self.name, "noise", self.noise, ("uniform", "gaussian"))
        check_number(self.name, "sigma", self.sigma, low=0)
        check_choice(self.name, "noise_stage", self.noise_stage, ("before", "after"))
        check_choice(self.name, "padding", self.padding, ("error", "edge"))

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        _, _, h, w = data.x.shape
        k = self.block
        positions = (padded_size(self.name, h, k, self.padding) // k) * \
            (padded_size(self.name, w, k, self.padding) // k)
        if self.matrix == "orthogonal":
            self.matrices_ = haar_orthogonal(positions, k, rng)
        elif self.matrix == "projection":
            self.matrices_ = full_rank_uniform(positions, k, rng)
        else:
            self.matrices_ = torch.eye(k, dtype=torch.float64).expand(positions, k, k).clone()
        self.permutation_ = torch.randperm(positions, generator=rng)
        self.secret_ = draw_secret(rng)
        self.image_shape_ = tuple(data.x.shape[1:])

    def _noise(self, x: Tensor, gen: torch.Generator) -> Tensor:
        scale = self.sigma / 255.0
        if self.noise == "uniform":
            return torch.rand(x.shape, generator=gen) * scale
        return torch.randn(x.shape, generator=gen) * scale

    def _check_shape(self, x: Tensor) -> None:
        if tuple(x.shape[2:]) != self.image_shape_[1:]:
            raise PluginError(
                f"{self.name}: fitted on images of size {self.image_shape_[1:]}, "
                f"got {tuple(x.shape[2:])}"
            )

    def _transform(self, data: Data, *, epoch: int) -> Data:
        x = data.x
        self._check_shape(x)
        gen = content_generator(self.secret_, x)
        x = pad_to_blocks(x, self.block, self.name, self.padding)
        if self.sigma > 0 and self.noise_stage == "before":
            x = x + self._noise(x, gen)
        h, w = x.shape[-2:]
        blocks = torch.einsum("ncpij,pjk->ncpik", to_blocks(x, self.block),
                              self.matrices_.to(x.dtype))
        blocks = self._permute(blocks, gen)
        x = from_blocks(blocks, h, w)
        if self.sigma > 0 and self.noise_stage == "after":
            x = x + self._noise(x, gen)
        return Data(x.contiguous(), data.y)

    def _permute(self, blocks: Tensor, gen: torch.Generator) -> Tensor:
        """Output block position j holds input block perm[j]."""
        if self.permutation == "none":
            return blocks
        if self.permutation == "dataset":
            return blocks[:, :, self.permutation_]
        n, c, p, k, _ = blocks.shape
        perms = random_permutations(n, p, gen)
        index = perms[:, None, :, None, None].expand(n, c, p, k, k)
        return torch.gather(blocks, 2, index)

    def inverse(self, data: Data) -> Data:
        """The owner's recovery: undo the permutation and the matrices (noise stays).

        Per-image permutations are re-derived from the disguised batch's content, so they cannot
        be undone; only "none" and "dataset" permutation scopes are invertible here.
        """
        if not self.is_fitted():
            raise PluginError(f"{self.name}: call fit() before inverse()")
        if self.permutation == "image":
            raise PluginError(f"{self.name}: per-image permutations cannot be inverted by the owner")
        x = data.x
        h, w = x.shape[-2:]
        blocks = to_blocks(x, self.block)
        if self.permutation == "dataset":
            blocks = blocks[:, :, torch.argsort(self.permutation_)]
        inv = torch.linalg.inv(self.matrices_).to(x.dtype)
        blocks = torch.einsum("ncpij,pjk->ncpik", blocks, inv)
        x = from_blocks(blocks, h, w)
        c, oh, ow = self.image_shape_
        return Data(x[..., :oh, :ow].contiguous(), data.y)
