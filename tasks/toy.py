"""A synthetic task small enough for unit tests: noisy class templates, 12×12 grayscale."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.registry import register
from disguisebench.tasks._base import ClassificationTask


@register("toy")
class Toy(ClassificationTask):
    """Synthetic 12×12 images: each of 4 classes is a random smooth template; each image adds its
    own smooth pattern and pixel noise, so images are distinct and classes learnable in seconds.
    """

    DEFAULTS = {"model": "mlp", "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0,
                "n_train": 400, "n_test": 200, "n_public": 200}

    def _images(self) -> tuple[Tensor, Tensor, int]:
        # The pool is fixed (its own constant seed); the data seed only chooses the splits.
        gen = torch.Generator().manual_seed(20190206)
        n, k, side = self.n_train + self.n_test + self.n_public, 4, 12

        def smooth(count: int) -> Tensor:
            coarse = torch.rand(count, 1, 4, 4, generator=gen)
            return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear",
                                                   align_corners=False)

        templates = smooth(k)
        y = torch.arange(n) % k
        x = 0.6 * templates[y] + 0.3 * smooth(n) + 0.1 * torch.rand(n, 1, side, side, generator=gen)
        return x.clamp(0, 1).float(), y, k
