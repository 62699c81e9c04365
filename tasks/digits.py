"""The embedded digits task: scikit-learn's 1,797 handwritten 8×8 digits."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.api import check_number
from disguisebench.registry import register
from disguisebench.tasks._base import ClassificationTask, resize


@register("digits")
class Digits(ClassificationTask):
    """1,797 real handwritten digits shipped inside scikit-learn (UCI optdigits), 10 classes.

    The originals are 8×8 with 17 grey levels. They are upscaled by default (bilinearly, to
    ``size=28``) so the block sizes of the 2019 paper's grid (2, 4, 7, 14, 28) and its 28×28 CNN
    apply unchanged, as on MNIST; upscaling adds no information, and ``size=8`` keeps the native
    pixels (block sizes must then divide 8). Alpaydin & Kaynak, "Optical Recognition of
    Handwritten Digits", UCI, 1998.

    Args:
        size: side of the images fed to defenses and model (8 is native; larger upscales).
        model: architecture, "paper-cnn", "mlp" or "resnet".
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate.
        optimizer: "rmsprop", "adam" or "sgd".
        weight_decay: L2 penalty on the fully connected layers.
        n_train: owner training images.
        n_test: owner test images.
        n_public: public images for the attacker.
    """

    def __init__(self, *, size: int = 28, model: str = "paper-cnn", epochs: int = 8,
                 batch_size: int = 64, lr: float = 1e-3, optimizer: str = "rmsprop",
                 weight_decay: float = 5e-4, n_train: int = 1000, n_test: int = 397,
                 n_public: int = 400) -> None:
        self.size = size
        super().__init__(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, n_train=n_train,
                         n_test=n_test, n_public=n_public)

    def validate(self) -> None:
        check_number(self.name, "size", self.size, kind=int, low=8)
        super().validate()

    def _images(self) -> tuple[Tensor, Tensor, int]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)
        return resize(x, self.size), torch.from_numpy(bunch.target).long(), 10
