"""Image classification tasks: splits, model choice and the training loop they share."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disguisebench.api import Data, PluginError, Splits, Task, check_choice, check_number, device
from disguisebench.tasks import _models

log = logging.getLogger("disguisebench")

OPTIMIZERS = ("rmsprop", "adam", "sgd")


def to_unit(x: Tensor) -> Tensor:
    """Pixels as float32 in [0, 1]: uint8 images are divided by 255, float images kept."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def resize(x: Tensor, size: int) -> Tensor:
    """Square images (N, C, H, W) in [0, 1] resized to size×size, bilinearly (antialiased)."""
    if x.shape[-2:] == (size, size):
        return x
    out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def _draw(n: int, sizes: tuple[int, ...], seed: int, name: str, what: str,
          params: tuple[str, ...]) -> list[Tensor]:
    need = sum(sizes)
    if need > n:
        raise PluginError(
            f"{name}: {' + '.join(params)} = {need} exceeds the {n} images available{what}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = torch.tensor((0, *sizes)).cumsum(0).tolist()
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def split(x: Tensor, y: Tensor, *, n_train: int, n_test: int, n_public: int, num_classes: int,
          seed: int, name: str) -> Splits:
    """Disjoint owner-train, owner-test and public splits drawn from one pool by ``seed``.

    ``x`` may be uint8 (converted after selection, so a large pool is never held as floats).
    """
    parts = _draw(len(x), (n_train, n_test, n_public), seed, name, "",
                  ("n_train", "n_test", "n_public"))
    train, test, public = (Data(to_unit(x[i]).contiguous(), y[i].contiguous()) for i in parts)
    return Splits(train=train, test=test, public=public, num_classes=num_classes)


def split_official(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, n_train: int,
                   n_test: int, n_public: int, num_classes: int, seed: int, name: str) -> Splits:
    """Splits of a dataset published with its own train and test sets.

    Owner-train and public images are disjoint draws from the published training set, owner-test
    images a draw from the published test set; ``seed`` fixes both draws.
    """
    (xa, ya), (xb, yb) = train, test
    own, pub = _draw(len(xa), (n_train, n_public), seed, name, " in its training set",
                     ("n_train", "n_public"))
    (tst,) = _draw(len(xb), (n_test,), seed, name, " in its test set", ("n_test",))
    owner, public, held = (Data(to_unit(x[i]).contiguous(), y[i].contiguous())
                           for x, y, i in ((xa, ya, own), (xa, ya, pub), (xb, yb, tst)))
    return Splits(train=owner, test=held, public=public, num_classes=num_classes)


def train_classifier(model: nn.Module, data: Data, *, seed: int, epochs: int, batch_size: int,
                     lr: float, optimizer: str, weight_decay: float,
                     reencode: Callable[[int], Data] | None = None, progress: bool = False,
                     desc: str = "train") -> nn.Module:
    """Train ``model`` with cross-entropy on hard or soft labels, deterministically given ``seed``.

    ``reencode(epoch)``, when given, supplies the encoding of the training set trained on in each
    epoch, the first included (InstaHide re-encodes every epoch); ``data`` is then everything the
    owner uploaded, which fixes the input standardisation.
    """
    from tqdm import tqdm

    dev = device()
    gen = torch.Generator().manual_seed(seed)
    model.to(dev)
    if hasattr(model, "standardize"):
        model.standardize.fit(data.x.to(dev))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # L2 on the fully connected layers only, as in the Disguised-Nets code.
        (decay if name.startswith(("fc.", "net.")) and p.dim() > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if optimizer == "rmsprop":
        opt = torch.optim.RMSprop(groups, lr=lr, alpha=0.9)
    elif optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        if reencode is not None:
            data = reencode(epoch)
        x, y = data.x, data.y
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            loss = F.cross_entropy(model(xb), yb.float() if yb.dim() == 2 else yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(x):.3f}")
    model.eval()
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    model.eval()
    dev = next(model.parameters()).device
    out = [F.softmax(model(x[i:i + batch_size].to(dev)), 1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


class ClassificationTask(Task):
    """Base for tasks that classify images; subclasses implement ``_images`` and change the
    defaults below with ``DEFAULTS``.

    Args:
        model: architecture, "paper-cnn", "mlp" or "resnet".
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate.
        optimizer: "rmsprop", "adam" or "sgd" (momentum 0.9).
        weight_decay: L2 penalty on the fully connected layers (the paper CNN's; every weight
            matrix and kernel of the MLP and the ResNet).
        n_train: owner training images.
        n_test: owner test images.
        n_public: public images for the attacker.
    """

    models: tuple[str, ...] = tuple(_models.MODELS)

    def __init__(self, *, model: str = "paper-cnn", epochs: int = 5, batch_size: int = 128,
                 lr: float = 1e-3, optimizer: str = "rmsprop", weight_decay: float = 5e-4,
                 n_train: int = 1000, n_test: int = 500, n_public: int = 500) -> None:
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.n_train = n_train
        self.n_test = n_test
        self.n_public = n_public

    def validate(self) -> None:
        check_choice(self.name, "model", self.model, self.models)
        check_choice(self.name, "optimizer", self.optimizer, OPTIMIZERS)
        check_number(self.name, "epochs", self.epochs, kind=int, low=1)
        check_number(self.name, "batch_size", self.batch_size, kind=int, low=1)
        check_number(self.name, "lr", self.lr, low=0)
        check_number(self.name, "weight_decay", self.weight_decay, low=0)
        self._validate_sizes()

    def _validate_sizes(self) -> None:
        for param in ("n_train", "n_test", "n_public"):
            check_number(self.name, param, getattr(self, param), kind=int, low=1)

    def _images(self) -> tuple[Tensor, Tensor, int]:
        """All images (N, C, H, W) float32 in [0, 1], labels (N,), and the number of classes."""
        raise NotImplementedError

    def load(self, *, seed: int) -> Splits:
        self.validate()
        x, y, k = self._images()
        return split(x, y, n_train=self.n_train, n_test=self.n_test, n_public=self.n_public,
                     num_classes=k, seed=seed, name=self.name)

    def build_model(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return _models.build(self.model, image_shape, num_classes)

    def train(self, data: Data, *, seed: int, num_classes: int,
              reencode: Callable[[int], Data] | None = None, progress: bool = False) -> nn.Module:
        if data.y is None:
            raise PluginError(f"{self.name}: training needs labels")
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            # Weight initialisation and dropout draw from torch's global generator; fork it so
            # the seed fixes them without touching anyone else's randomness.
            torch.manual_seed(seed)
            model = self.build_model(data.image_shape, num_classes)
            return train_classifier(
                model, data, seed=seed, epochs=self.epochs, batch_size=self.batch_size,
                lr=self.lr, optimizer=self.optimizer, weight_decay=self.weight_decay,
                reencode=reencode, progress=progress, desc=f"train {self.name}",
            )

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        return predict_proba(model, x)


class ResizedTask(ClassificationTask):
    """Base for tasks whose square images are resized (bilinearly) to ``size``×``size`` before
    defenses and model see them; subclasses resize in ``_images``.

    Args:
        size: side of the images fed to defenses and model.
    """

    def __init__(self, *, size: int = 28, model: str = "paper-cnn", epochs: int = 5,
                 batch_size: int = 128, lr: float = 1e-3, optimizer: str = "rmsprop",
                 weight_decay: float = 5e-4, n_train: int = 1000, n_test: int = 500,
                 n_public: int = 500) -> None:
        self.size = size
        super().__init__(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, n_train=n_train,
                         n_test=n_test, n_public=n_public)

    def validate(self) -> None:
        check_number(self.name, "size", self.size, kind=int, low=8)
        super().validate()
