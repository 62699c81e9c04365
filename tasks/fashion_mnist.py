"""The Fashion-MNIST task: 70,000 clothing images read from a local folder in torchvision's layout."""

from __future__ import annotations

from disguisebench.registry import register
from disguisebench.tasks._local import LocalTask, Pool, read_idx


@register("fashion-mnist")
class FashionMNIST(LocalTask):
    """Fashion-MNIST (60,000 training and 10,000 test images, 28×28 grayscale, 10 clothing classes).

    Reads ``<data_dir>/FashionMNIST/raw/`` as torchvision does; owner-train and public images are
    drawn from the published training set, owner-test images from the published test set. Xiao,
    Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
    Algorithms", 2017; the default model is the Disguised-Nets CNN (Sharma & Chen, 2019).
    """

    DEFAULTS = {"n_train": 50000, "n_test": 10000, "n_public": 10000}

    def _pools(self) -> tuple[Pool, Pool, int]:
        return read_idx(self, "FashionMNIST",
                        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
