"""Block-wise randomized multidimensional transformation (RMT), the Disguised-Nets scheme."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.api import Data, Defense, PluginError, check_choice, check_number
from disguisebench.registry import register
from disguisebench.blocks import (
    BlockLayout, check_disguised_size, check_image_size, multiply_blocks, pad_to_blocks,
    permute_blocks,
)
from disguisebench.defenses._blocks import (
    content_generator, draw_secret, full_rank_uniform, haar_orthogonal, random_permutations,
)


@register("block-rmt")
class BlockRMT(Defense):
    """Multiply every k×k block by a secret matrix per block position, permute blocks, add noise.

    Secret: one k×k matrix per block position (shared by all images and channels), the block
    permutation, and the noise seed. Targets visual re-identification and model misuse by the
    cloud (level 1); the authors concede known plaintext pairs (level 2) break it. Outputs are
    real-valued and not clipped. Noise and per-image permutations are fresh per image, drawn from
    the key and the batch's content, so the same batch under the same key disguises alike.
    Sharma & Chen, "Disguised-Nets: Image Disguising for Privacy-preserving Outsourced Deep
    Learning", 2019; Sharma, Gu & Chen, "A Comparative Study of Image Disguising Methods for
    Confidential Outsourced Learning", 2023.

    Args:
        block: block side k in pixels; must divide the image side unless padding="edge".
        matrix: "orthogonal" (Haar, det +1), "projection" (uniform [0, 1) entries, full rank;
            often ill-conditioned, so the owner's recovery from float32 outputs loses precision)
            or "identity" (no mixing inside blocks).
        permutation: "none", "dataset" (one permutation of block positions for all images) or
            "image" (a fresh permutation per image).
        noise: "uniform" on [0, sigma) or "gaussian" with standard deviation sigma.
        sigma: noise scale in 0-255 pixel units (0 disables noise).
        noise_stage: "after" RMT and permutation (2019 paper) or "before" RMT (later code, which
            adds small integer noise / 255 there).
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

    def block_layout(self, image_shape: tuple[int, int, int]) -> BlockLayout:
        return BlockLayout.of(self.name, image_shape, self.block, padding=self.padding,
                              moves=self.permutation)

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        k = self.block
        positions = self.block_layout(data.image_shape).positions
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

    def _transform(self, data: Data, *, epoch: int) -> Data:
        x = data.x
        check_image_size(self.name, x, self.image_shape_)
        k = self.block
        # Fresh per-image randomness is seeded by the key and the batch's content; hashing the
        # batch costs about a copy of it, so it is skipped when nothing fresh is drawn.
        fresh = self.sigma > 0 or self.permutation == "image"
        gen = content_generator(self.secret_, x) if fresh else None
        x = pad_to_blocks(x, k, self.name, self.padding)
        if self.sigma > 0 and self.noise_stage == "before":
            x = x + self._noise(x, gen)
        matrices = self.matrices_
        if self.permutation == "dataset":
            # Output position j holds block perm[j] times its matrix: permuting the blocks first
            # and their matrices with them is the same map, and one pass cheaper.
            x = permute_blocks(x, self.permutation_, k)
            matrices = matrices[self.permutation_]
        x = multiply_blocks(x, matrices, k)
        if self.permutation == "image":
            x = permute_blocks(x, random_permutations(len(x), len(matrices), gen), k)
        if self.sigma > 0 and self.noise_stage == "after":
            x = x + self._noise(x, gen)
        return Data(x.contiguous(), data.y)

    def _inverse(self, data: Data) -> Data:
        """Undo the permutation and the matrices; noise stays.

        Per-image permutations are drawn afresh for every batch, like noise, so they cannot be
        undone; only the "none" and "dataset" permutation scopes are invertible.
        """
        if self.permutation == "image":
            raise PluginError(f"{self.name}: per-image permutations are drawn afresh for every "
                              "batch and cannot be inverted; only permutation='none' or "
                              "'dataset' can")
        check_disguised_size(self.name, data.x, self.image_shape_, self.block, self.padding)
        x = data.x
        if self.permutation == "dataset":
            x = permute_blocks(x, torch.argsort(self.permutation_), self.block)
        # float64: projection matrices can be ill-conditioned.
        x = multiply_blocks(x.double(), torch.linalg.inv(self.matrices_), self.block).float()
        _, h, w = self.image_shape_
        return Data(x[..., :h, :w].contiguous(), data.y)
