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

    Args:
        data_dir: data folder (null: $DISGUISEBENCH_DATA, else ./data).
        download: fetch the files with torchvision when they are missing.
        model: architecture, "paper-cnn", "mlp" or "resnet".
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate.
        optimizer: "rmsprop", "adam" or "sgd".
        weight_decay: L2 penalty (the paper CNN: on its fully connected layers).
        n_train: owner training images.
        n_test: owner test images.
        n_public: public images for the attacker.
    """

    def __init__(self, *, data_dir: str | None = None, download: bool = False,
                 model: str = "paper-cnn", epochs: int = 10, batch_size: int = 128,
                 lr: float = 1e-3, optimizer: str = "rmsprop", weight_decay: float = 5e-4,
                 n_train: int = 50000, n_test: int = 10000, n_public: int = 10000) -> None:
        super().__init__(data_dir=data_dir, download=download, model=model, epochs=epochs,
                         batch_size=batch_size, lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, n_train=n_train, n_test=n_test,
                         n_public=n_public)

    def _pools(self) -> tuple[Pool, Pool, int]:
        return read_idx(self, "FashionMNIST",
                        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
