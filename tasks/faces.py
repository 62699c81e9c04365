"""The embedded faces task: scikit-image's LFW subset, face versus non-face."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.api import check_number
from disguisebench.registry import register
from disguisebench.tasks._base import ClassificationTask, resize, to_unit


@register("faces")
class Faces(ClassificationTask):
    """200 real 25×25 grayscale crops shipped inside scikit-image: 100 faces, 100 non-faces.

    The faces are photographs of distinct people from Labeled Faces in the Wild and the non-faces
    background crops of the same photographs (Huang, Mattar, Lee, Learned-Miller, "Learning to
    Align from Scratch", 2012). The classifier tells face from non-face; for re-identification
    each face is an individual, so a re-identified target is a person recognised. Upscaled by
    default (bilinearly) to ``size=28`` so the 2019 paper's block sizes (2, 4, 7, 14, 28) divide
    the side; ``size=25`` keeps the native pixels. With 200 images the runner shrinks a plan's
    ``n_targets`` and ``n_known`` to what the training set holds, and says so.

    Args:
        size: side of the images fed to defenses and model (25 is native).
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

    def __init__(self, *, size: int = 28, model: str = "paper-cnn", epochs: int = 15,
                 batch_size: int = 16, lr: float = 1e-3, optimizer: str = "rmsprop",
                 weight_decay: float = 5e-4, n_train: int = 100, n_test: int = 50,
                 n_public: int = 50) -> None:
        self.size = size
        super().__init__(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, n_train=n_train,
                         n_test=n_test, n_public=n_public)

    def validate(self) -> None:
        check_number(self.name, "size", self.size, kind=int, low=8)
        super().validate()

    def _images(self) -> tuple[Tensor, Tensor, int]:
        from skimage.data import lfw_subset

        x = to_unit(torch.from_numpy(lfw_subset())).unsqueeze(1)
        y = (torch.arange(len(x)) >= 100).long()  # 0 = face (the first 100), 1 = non-face
        return resize(x, self.size), y, 2
