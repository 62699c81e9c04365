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

    Args:
        model: architecture, "paper-cnn" or "mlp".
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate.
        optimizer: "rmsprop", "adam" or "sgd".
        weight_decay: L2 penalty on the fully connected layers.
        n_train: owner training images.
        n_test: owner test images.
        n_public: public images for the attacker.
    """

    def __init__(self, *, model: str = "mlp", epochs: int = 5, batch_size: int = 64,
                 lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0,
                 n_train: int = 400, n_test: int = 200, n_public: int = 200) -> None:
        super().__init__(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, n_train=n_train,
                         n_test=n_test, n_public=n_public)

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
