"""Model architectures shared by tasks (chosen through a task's ``model`` parameter)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disguisebench.api import PluginError


class Standardize(nn.Module):
    """Per-channel standardisation with statistics of the training inputs.

    Disguised pixels (RMT outputs, added noise) leave [0, 1]; standardising them keeps the same
    optimiser settings usable for every defense.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def fit(self, x: Tensor) -> None:
        self.mean.copy_(x.mean(dim=(0, 2, 3)))
        self.std.copy_(x.std(dim=(0, 2, 3)).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


class PaperCNN(nn.Module):
    """The 2019 Disguised-Nets MNIST network: conv 5×5×32, pool, conv 5×5×64, pool, FC 1024, FC K.

    Sharma & Chen, "Disguised-Nets: Image Disguising for Privacy-preserving Outsourced Deep
    Learning", 2019 (the authors' experiment code): ReLU, 2×2 max-pooling and dropout after each
    convolution, dropout before the output layer.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.standardize = Standardize(c)
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        )
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 1024), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(self.standardize(x)))


class MLP(nn.Module):
    """Two hidden layers of 256 units with ReLU and dropout."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.standardize = Standardize(c)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.standardize(x))


class ResNet(nn.Module):
    """ResNet-18 adapted to 32×32 inputs, trained from scratch (no pretrained weights).

    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", 2016, with the usual
    CIFAR stem: a 3×3 stride-1 first convolution and no max-pooling, so a 32×32 image keeps a 4×4
    map before the global average pool (ImageNet's 7×7 stride-2 stem and pool would leave 1×1).
    Any size works thanks to the adaptive pool.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        from torchvision.models import resnet18

        c = image_shape[0]
        self.standardize = Standardize(c)
        # Named `net` so the training loop's L2 applies to every weight matrix, as usual for ResNets.
        self.net = resnet18(weights=None, num_classes=num_classes)
        self.net.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.net.maxpool = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.standardize(x))


MODELS = {"paper-cnn": PaperCNN, "mlp": MLP, "resnet": ResNet}


def build(name: str, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise PluginError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name](image_shape, num_classes)
