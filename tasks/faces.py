"""The embedded faces task: scikit-image's LFW subset, face versus non-face."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.registry import register
from disguisebench.tasks._base import ResizedTask, resize, to_unit


@register("faces")
class Faces(ResizedTask):
    """200 real 25×25 grayscale crops shipped inside scikit-image: 100 faces, 100 non-faces.

    The faces are photographs of distinct people from Labeled Faces in the Wild and the non-faces
    background crops of the same photographs (Huang, Mattar, Lee, Learned-Miller, "Learning to
    Align from Scratch", 2012). The classifier tells face from non-face; for re-identification
    each face is an individual, so a re-identified target is a person recognised. Upscaled by
    default (bilinearly) to ``size=28`` so the 2019 paper's block sizes (2, 4, 7, 14, 28) divide
    the side; ``size=25`` keeps the native pixels. With 200 images the runner shrinks a plan's
    ``n_targets`` and ``n_known`` to what the training set holds, and says so.
    """

    DEFAULTS = {"epochs": 15, "batch_size": 16, "n_train": 100, "n_test": 50, "n_public": 50}

    def _images(self) -> tuple[Tensor, Tensor, int]:
        from skimage.data import lfw_subset

        x = to_unit(torch.from_numpy(lfw_subset())).unsqueeze(1)
        y = (torch.arange(len(x)) >= 100).long()  # 0 = face (the first 100), 1 = non-face
        return resize(x, self.size), y, 2
