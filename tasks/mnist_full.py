"""The full MNIST task: 70,000 digits read from a local folder in torchvision's layout."""

from __future__ import annotations

from disguisebench.registry import register
from disguisebench.tasks._local import LocalTask, Pool, read_idx


@register("mnist-full")
class MNISTFull(LocalTask):
    """All of MNIST (60,000 training and 10,000 test digits, 28×28 grayscale) from a local folder.

    Reads ``<data_dir>/MNIST/raw/`` as torchvision does; owner-train and public images are drawn
    from the published training set, owner-test images from the published test set. LeCun,
    Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document Recognition", 1998; the
    default model and recipe are the Disguised-Nets CNN's (Sharma & Chen, 2019).
    """

    DEFAULTS = {"n_train": 50000, "n_test": 10000, "n_public": 10000}

    def _pools(self) -> tuple[Pool, Pool, int]:
        return read_idx(self, "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/")
