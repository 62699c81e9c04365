"""The LFW people task: faces labelled by identity, read from a local folder through scikit-learn."""

from __future__ import annotations

import torch

from disguisebench.api import PluginError, check_number
from disguisebench.registry import register
from disguisebench.tasks._local import LocalTask, Pool, not_found

PAIRS = ("pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt")
# scikit-learn's default crop (rows 70-195, columns 78-172) widened by a few pixels to 128×96, so
# that at half size (64×48) the block sizes 2, 4, 8 and 16 divide both sides.
SLICE = (slice(68, 196), slice(77, 173))


@register("lfw-people")
class LFWPeople(LocalTask):
    """Labeled Faces in the Wild, one class per person: re-identifying people from their faces.

    Reads the funnelled images where scikit-learn keeps them (``<data_dir>/lfw_home/``, i.e.
    ``fetch_lfw_people(data_home=<data_dir>)``), keeps the people with at least
    ``min_faces_per_person`` photographs (20: 62 people, 3,023 images) and crops each to the
    centre 128×96 at half size, 64×48. Owner-train, owner-test and public images are disjoint
    draws from that pool, so the attacker's public set holds other photographs of the same
    people. Huang, Ramesh, Berg, Learned-Miller, "Labeled Faces in the Wild", 2007.

    Args:
        data_dir: data folder (null: $DISGUISEBENCH_DATA, else ./data).
        download: fetch the images with scikit-learn (about 200 MB) when they are missing.
        min_faces_per_person: keep only people with at least this many photographs.
        color: RGB images (3 channels) instead of grayscale.
        model: architecture, "paper-cnn", "mlp" or "resnet".
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate.
        optimizer: "adam", "rmsprop" or "sgd".
        weight_decay: L2 penalty (the paper CNN: on its fully connected layers).
        n_train: owner training images.
        n_test: owner test images.
        n_public: public images for the attacker.
    """

    def __init__(self, *, data_dir: str | None = None, download: bool = False,
                 min_faces_per_person: int = 20, color: bool = False, model: str = "paper-cnn",
                 epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 5e-4, n_train: int = 2000,
                 n_test: int = 500, n_public: int = 500) -> None:
        self.min_faces_per_person = min_faces_per_person
        self.color = color
        super().__init__(data_dir=data_dir, download=download, model=model, epochs=epochs,
                         batch_size=batch_size, lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, n_train=n_train, n_test=n_test,
                         n_public=n_public)

    def validate(self) -> None:
        check_number(self.name, "min_faces_per_person", self.min_faces_per_person, kind=int,
                     low=2)
        if not isinstance(self.color, bool):
            raise PluginError(f"{self.name}: color={self.color!r} must be true or false")
        super().validate()

    def _pools(self) -> tuple[Pool, None, int]:
        from sklearn.datasets import fetch_lfw_people

        root = self.folder()
        home = root / "lfw_home"
        present = (home / "lfw_funneled").is_dir() and all((home / p).is_file() for p in PAIRS)
        if not present and not self.download:
            raise not_found(
                self.name, root, f"lfw_home/lfw_funneled/<Person_Name>/*.jpg and "
                f"{', '.join(PAIRS)} in lfw_home/",
                "Obtain them with download=true (scikit-learn fetches lfw-funneled.tgz from "
                "figshare) or with sklearn.datasets.fetch_lfw_people(data_home=<that folder>).")
        try:
            faces = fetch_lfw_people(
                data_home=str(root), funneled=True, resize=0.5, color=self.color,
                min_faces_per_person=self.min_faces_per_person, slice_=SLICE,
                download_if_missing=self.download)
        except (OSError, ValueError, RuntimeError) as err:
            raise PluginError(f"{self.name}: cannot read LFW in {home}: {err}") from err
        x = torch.from_numpy(faces.images).float().clamp_(0.0, 1.0)
        x = x.permute(0, 3, 1, 2) if self.color else x.unsqueeze(1)
        return (x.contiguous(), torch.from_numpy(faces.target).long()), None, \
            len(faces.target_names)
