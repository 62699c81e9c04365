"""A user's own images, one sub-folder per class, resized to a declared size."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from disguisebench.api import PluginError, Splits, check_choice, check_number
from disguisebench.registry import register
from disguisebench.tasks._base import split
from disguisebench.tasks._local import LocalTask, Pool, data_root, not_found


class _Images:
    """Decodes only the images a split selects (a folder may hold far more than a run uses)."""

    def __init__(self, dataset, transform, shape: tuple[int, int, int], name: str) -> None:
        self.dataset, self.transform, self.shape, self.name = dataset, transform, shape, name

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def __getitem__(self, index: Tensor) -> Tensor:
        out = torch.empty(len(index), *self.shape, dtype=torch.uint8)
        for row, i in enumerate(index.tolist()):
            path = self.dataset.samples[i][0]
            try:
                out[row] = self.transform(self.dataset.loader(path))
            except OSError as err:
                raise PluginError(f"{self.name}: cannot read the image {path}: {err}") from err
        return out


@register("image-folder")
class ImageFolder(LocalTask):
    """Your own images, one sub-folder per class (torchvision ``ImageFolder``), resized.

    Each image is scaled so its shorter side is ``size`` and centre-cropped to size×size, in
    grayscale or RGB. ``data_dir`` is the folder holding the class sub-folders (null:
    ``$DISGUISEBENCH_DATA/image-folder``, else ``./data/image-folder``); classes are numbered
    in sorted order of their folder names. Owner-train, owner-test and public images are disjoint
    draws from all images: by default half, a quarter and a quarter of the folder; a number below
    1 is a share of the folder, an integer a count.

    Args:
        data_dir: folder of class sub-folders (null: $DISGUISEBENCH_DATA/image-folder).
        size: side of the square images, in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        model: architecture, "paper-cnn", "mlp" or "resnet".
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate.
        optimizer: "adam", "rmsprop" or "sgd".
        weight_decay: L2 penalty (the paper CNN: on its fully connected layers).
        n_train: owner training images: a count, or a share of the folder (default 0.5).
        n_test: owner test images: a count, or a share of the folder (default 0.25).
        n_public: public images for the attacker: a count, or a share (default 0.25).
    """

    def __init__(self, *, data_dir: str | None = None, size: int = 32, channels: int = 3,
                 model: str = "paper-cnn", epochs: int = 10, batch_size: int = 64,
                 lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 5e-4,
                 n_train: int | float = 0.5, n_test: int | float = 0.25,
                 n_public: int | float = 0.25) -> None:
        self.size = size
        self.channels = channels
        super().__init__(data_dir=data_dir, model=model, epochs=epochs, batch_size=batch_size,
                         lr=lr, optimizer=optimizer, weight_decay=weight_decay, n_train=n_train,
                         n_test=n_test, n_public=n_public)

    def validate(self) -> None:
        check_number(self.name, "size", self.size, kind=int, low=4)
        check_choice(self.name, "channels", self.channels, (1, 3))
        super().validate()

    def _validate_sizes(self) -> None:
        for param in ("n_train", "n_test", "n_public"):
            value = getattr(self, param)
            if isinstance(value, float):
                check_number(self.name, param, value, low=0)
                if not 0 < value < 1:
                    raise PluginError(f"{self.name}: {param}={value!r} must be a share of the "
                                      "folder between 0 and 1, or an integer count of images")
            else:
                check_number(self.name, param, value, kind=int, low=1)
        shares = [v for v in (self.n_train, self.n_test, self.n_public) if isinstance(v, float)]
        if sum(shares) > 1 + 1e-9:
            raise PluginError(f"{self.name}: the shares n_train, n_test and n_public add up to "
                              f"{sum(shares):g}, more than the whole folder")

    def sizes(self, n_images: int) -> dict[str, int]:
        """The split sizes for a folder of ``n_images`` images (shares rounded down)."""
        out = {}
        for param in ("n_train", "n_test", "n_public"):
            value = getattr(self, param)
            out[param] = int(value * n_images) if isinstance(value, float) else value
            if out[param] < 1:
                raise PluginError(f"{self.name}: {param}={value!r} of {n_images} images in "
                                  f"{self.folder()} is no image; add images or give a count")
        return out

    def load(self, *, seed: int) -> Splits:
        self.validate()
        (images, labels), _, k = self._pools()
        return split(images, labels, **self.sizes(len(labels)), num_classes=k, seed=seed,
                     name=self.name)

    def folder(self) -> Path:
        return Path(self.data_dir).expanduser().absolute() if self.data_dir \
            else data_root(None) / "image-folder"

    def _pools(self) -> tuple[Pool, None, int]:
        from torchvision import datasets, transforms

        root = self.folder()
        steps = [transforms.Resize(self.size), transforms.CenterCrop(self.size)]
        if self.channels == 1:
            steps.append(transforms.Grayscale())
        steps.append(transforms.PILToTensor())
        try:
            found = datasets.ImageFolder(str(root))
        except (FileNotFoundError, NotADirectoryError) as err:
            raise not_found(
                self.name, root, "one sub-folder per class holding its images (.png, .jpg, ...)",
                "Arrange your images as <folder>/<class>/<image>.") from err
        images = _Images(found, transforms.Compose(steps), (self.channels, self.size, self.size),
                         self.name)
        return (images, torch.tensor(found.targets, dtype=torch.long)), None, len(found.classes)
