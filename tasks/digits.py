"""The embedded digits task: scikit-learn's 1,797 handwritten 8×8 digits."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.registry import register
from disguisebench.tasks._base import ResizedTask, resize


@register("digits")
class Digits(ResizedTask):
    """1,797 real handwritten digits shipped inside scikit-learn (UCI optdigits), 10 classes.

    The originals are 8×8 with 17 grey levels. They are upscaled by default (bilinearly, to
    ``size=28``) so the block sizes of the 2019 paper's grid (2, 4, 7, 14, 28) and its 28×28 CNN
    apply unchanged, as on MNIST; upscaling adds no information, and ``size=8`` keeps the native
    pixels (block sizes must then divide 8). Alpaydin & Kaynak, "Optical Recognition of
    Handwritten Digits", UCI, 1998.
    """

    DEFAULTS = {"epochs": 8, "batch_size": 64, "n_test": 397, "n_public": 400}

    def _images(self) -> tuple[Tensor, Tensor, int]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)
        return resize(x, self.size), torch.from_numpy(bunch.target).long(), 10
