"""Full-size datasets read from a local folder: where to look, readers, and one clear error.

Nothing is downloaded unless a task is given ``download=True``. ``data_dir`` (default: the
``DISGUISEBENCH_DATA`` environment variable, else ``./data``) is the folder one would pass to
torchvision as ``root`` (or to scikit-learn as ``data_home``); each dataset keeps the layout
those libraries use inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor

from disguisebench.api import PluginError, Splits
from disguisebench.tasks._base import ClassificationTask, split, split_official

ENV = "DISGUISEBENCH_DATA"

Pool = tuple[Tensor, Tensor]


def data_root(data_dir: str | None) -> Path:
    """The data folder: ``data_dir`` when given, else $DISGUISEBENCH_DATA, else ./data."""
    return Path(data_dir or os.environ.get(ENV) or "data").expanduser().absolute()


def not_found(name: str, folder: Path, expected: str, obtain: str) -> PluginError:
    return PluginError(
        f"{name}: dataset not found in {folder} (expected {expected}). {obtain} Point the "
        f"task's data_dir parameter or the {ENV} environment variable at the folder that holds it."
    )


class LocalTask(ClassificationTask):
    """Base for tasks whose images sit in a local folder; subclasses implement ``_pools``.

    Args:
        data_dir: data folder (null: $DISGUISEBENCH_DATA, else ./data).
        download: fetch the files with torchvision (or scikit-learn) when they are missing.
    """

    def __init__(self, *, data_dir: str | None = None, download: bool = False,
                 model: str = "paper-cnn", epochs: int = 10, batch_size: int = 128,
                 lr: float = 1e-3, optimizer: str = "rmsprop", weight_decay: float = 5e-4,
                 n_train: int = 1000, n_test: int = 500, n_public: int = 500) -> None:
        self.data_dir = data_dir
        self.download = download
        super().__init__(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, n_train=n_train,
                         n_test=n_test, n_public=n_public)

    def validate(self) -> None:
        if self.data_dir is not None and not (isinstance(self.data_dir, str) and self.data_dir):
            raise PluginError(f"{self.name}: data_dir={self.data_dir!r} must be a folder path "
                              f"or null (null reads ${ENV}, else ./data)")
        if not isinstance(self.download, bool):
            raise PluginError(f"{self.name}: download={self.download!r} must be true or false")
        super().validate()

    def folder(self) -> Path:
        return data_root(self.data_dir)

    def _pools(self) -> tuple[Pool, Pool | None, int]:
        """(training pool, published test pool or None, number of classes); images may be uint8.

        With a published test set, owner-test images come from it and owner-train and public
        images from the training pool; without one, all three are drawn from the single pool.
        """
        raise NotImplementedError

    def load(self, *, seed: int) -> Splits:
        self.validate()
        train, test, k = self._pools()
        sizes = dict(n_train=self.n_train, n_test=self.n_test, n_public=self.n_public)
        if test is None:
            return split(*train, **sizes, num_classes=k, seed=seed, name=self.name)
        return split_official(train, test, **sizes, num_classes=k, seed=seed, name=self.name)


def read_idx(task: LocalTask, dataset: str, source: str) -> tuple[Pool, Pool, int]:
    """MNIST-format idx files through torchvision: ``<root>/<dataset>/raw/*-idx?-ubyte``."""
    from torchvision import datasets

    root = task.folder()
    raw = root / dataset / "raw"
    files = [f"{part}-{kind}-idx{dims}-ubyte" for part in ("train", "t10k")
             for kind, dims in (("images", 3), ("labels", 1))]
    if not task.download and not all((raw / f).is_file() for f in files):
        raise not_found(
            task.name, root, f"the uncompressed idx files {', '.join(files)} in {dataset}/raw/",
            f"Obtain them with download=true (torchvision fetches them from {source}) or with "
            f"torchvision.datasets.{dataset}(root=<that folder>, download=True).")
    cls = getattr(datasets, dataset)
    try:
        pools = [cls(str(root), train=train, download=task.download) for train in (True, False)]
    except (RuntimeError, OSError, AssertionError, ValueError, TypeError) as err:
        raise PluginError(f"{task.name}: cannot read {raw}: {err}") from err
    return (pools[0].data.unsqueeze(1), pools[0].targets), \
        (pools[1].data.unsqueeze(1), pools[1].targets), 10
