"""The SVHN task: street-view house-number digits read from a local folder."""

from __future__ import annotations

import numpy as np
import torch

from disguisebench.api import PluginError
from disguisebench.registry import register
from disguisebench.tasks._local import LocalTask, Pool, not_found

FOLDER = "svhn"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_mat(path, name: str) -> Pool:
    """One cropped-digits .mat file: ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1), 10 meaning 0.

    torchvision's SVHN checks the file's MD5 against the published one on each load, rejecting
    any other copy in the same format and hashing 180 MB; this reads the same file with scipy (as
    torchvision does) and checks its shapes instead.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x = np.asarray(mat["X"], dtype=np.uint8)
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except (OSError, KeyError, ValueError, TypeError, NotImplementedError) as err:
        raise PluginError(f"{name}: {path} is not an SVHN .mat file ({type(err).__name__}: "
                          f"{err})") from err
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise PluginError(f"{name}: {path} holds X of shape {x.shape} and {len(y)} labels; "
                          "expected X (32, 32, 3, N) and N labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise PluginError(f"{name}: labels in {path} span [{y.min()}, {y.max()}]; expected 1..10")
    y = np.where(y == 10, 0, y)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)


@register("svhn")
class SVHN(LocalTask):
    """SVHN cropped digits (73,257 training and 26,032 test images, 32×32 RGB, 10 classes).

    Reads ``<data_dir>/svhn/train_32x32.mat`` and ``test_32x32.mat`` (what torchvision downloads
    with ``root=<data_dir>/svhn``); the label 10 is the digit 0, as in torchvision. Owner-train and
    public images come from the published training set, owner-test images from the published
    test set. Netzer, Wang, Coates, Bissacco, Wu, Ng, "Reading Digits in Natural Images with
    Unsupervised Feature Learning", 2011. The default model is ResNet-18 adapted to 32×32, trained
    from scratch.
    """

    DEFAULTS = {"model": "resnet", "epochs": 15, "lr": 0.05, "optimizer": "sgd",
                "n_train": 60000, "n_test": 10000, "n_public": 10000}

    def _pools(self) -> tuple[Pool, Pool, int]:
        root = self.folder()
        folder = root / FOLDER
        if self.download:
            from torchvision.datasets import SVHN as Fetch

            for part, file in FILES.items():
                if not (folder / file).is_file():
                    try:
                        Fetch(str(folder), split=part, download=True)
                    except (RuntimeError, OSError) as err:
                        raise PluginError(f"{self.name}: download into {folder} failed: "
                                          f"{err}") from err
        if not all((folder / f).is_file() for f in FILES.values()):
            raise not_found(
                self.name, root, f"{' and '.join(FILES.values())} in {FOLDER}/",
                "Obtain them with download=true (torchvision fetches them from "
                "http://ufldl.stanford.edu/housenumbers/) or copy them there.")
        return read_mat(folder / FILES["train"], self.name), \
            read_mat(folder / FILES["test"], self.name), 10
