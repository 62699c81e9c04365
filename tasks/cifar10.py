"""The CIFAR-10 task: 60,000 colour images read from a local folder in torchvision's layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from disguisebench.api import PluginError
from disguisebench.registry import register
from disguisebench.tasks._local import LocalTask, Pool, not_found

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses every other class.

    A CIFAR-10 batch is a dict of bytes, lists and one uint8 array, so nothing else is needed; a
    file that names any other global (the way a malicious pickle runs code) is rejected.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(text, "latin1").
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def read_batches(folder: Path, files: tuple[str, ...], name: str) -> Pool:
    """The pickled batches of the CIFAR-10 python version: ``data`` (N, 3072) uint8, ``labels``.

    torchvision's CIFAR10 checks the MD5 of every batch against the published archive on each
    load, which rejects any other copy in the same format (a subset, a re-pickled file) and re-reads
    170 MB to hash it; this reads the same files with an unpickler restricted to numpy arrays and
    checks their shapes instead.
    """
    xs, ys = [], []
    for file in files:
        path = folder / file
        try:
            with open(path, "rb") as fh:
                entry = _ArraysOnly(fh, encoding="latin1").load()
            x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(entry["labels"], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
            raise PluginError(f"{name}: {path} is not a CIFAR-10 batch ({type(err).__name__}: "
                              f"{err})") from err
        if len(x) != len(y):
            raise PluginError(f"{name}: {path} holds {len(x)} images but {len(y)} labels")
        xs.append(x)
        ys.append(y)
    y = torch.from_numpy(np.concatenate(ys))
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        raise PluginError(f"{name}: labels in {folder} span [{int(y.min())}, {int(y.max())}]; "
                          "expected 0..9")
    return torch.from_numpy(np.concatenate(xs)), y


@register("cifar10")
class CIFAR10(LocalTask):
    """CIFAR-10 (50,000 training and 10,000 test images, 32×32 RGB, 10 classes) from a local folder.

    Reads the python version's pickled batches in ``<data_dir>/cifar-10-batches-py/`` (the
    layout torchvision downloads); owner-train and public images come from the published
    training set, owner-test images from the published test set. Krizhevsky, "Learning Multiple
    Layers of Features from Tiny Images", 2009. The default model is ResNet-18 adapted to 32×32
    and trained from scratch, without data augmentation (a disguise need not commute with flips
    or crops).
    """

    DEFAULTS = {"model": "resnet", "epochs": 30, "lr": 0.05, "optimizer": "sgd",
                "n_train": 40000, "n_test": 10000, "n_public": 10000}

    def _pools(self) -> tuple[Pool, Pool, int]:
        root = self.folder()
        folder = root / FOLDER
        files = TRAIN_FILES + TEST_FILES
        if self.download and not all((folder / f).is_file() for f in files):
            from torchvision.datasets import CIFAR10 as Fetch

            try:
                Fetch(str(root), train=True, download=True)
            except (RuntimeError, OSError) as err:
                raise PluginError(f"{self.name}: download into {root} failed: {err}") from err
        if not all((folder / f).is_file() for f in files):
            raise not_found(
                self.name, root, f"{', '.join(files)} in {FOLDER}/",
                "Obtain them with download=true (torchvision fetches "
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) or unpack that archive "
                "there.")
        return read_batches(folder, TRAIN_FILES, self.name), \
            read_batches(folder, TEST_FILES, self.name), 10
