from __future__ import annotations

import pytest
import torch

from disguisebench import registry
from disguisebench.api import PluginError


def test_mnist_loads_real_embedded_digits_into_disjoint_splits():
    task = registry.create("task", "mnist")
    s = task.load(seed=0)
    assert s.train.x.shape == (3000, 1, 28, 28) and s.num_classes == 10
    assert len(s.test) == 1000 and len(s.public) == 1000
    assert 0.0 <= float(s.train.x.min()) and float(s.train.x.max()) <= 1.0
    rows = {v.numpy().tobytes() for v in s.train.x.flatten(1)}
    assert not any(v.numpy().tobytes() in rows for v in s.test.x.flatten(1))
    assert set(torch.bincount(s.train.y).tolist()) != {0}
    assert torch.equal(task.load(seed=0).train.x, s.train.x)
    assert not torch.equal(task.load(seed=1).train.x, s.train.x)


def all_images(s) -> torch.Tensor:
    return torch.cat([s.train.x, s.test.x, s.public.x])


def test_digits_are_scikit_learns_upscaled_by_default():
    task = registry.create("task", "digits")
    s = task.load(seed=0)
    assert s.train.x.shape == (1000, 1, 28, 28) and s.num_classes == 10
    assert len(s.test) + len(s.public) + len(s.train) == 1797
    assert 0.0 <= float(s.train.x.min()) and float(s.train.x.max()) <= 1.0
    native = registry.create("task", "digits", {"size": 8}).load(seed=0)
    assert native.train.x.shape == (1000, 1, 8, 8)
    # native pixels are the 17 grey levels of the originals
    assert torch.equal(torch.unique(native.train.x * 16).round(), torch.arange(17.0))
    assert torch.equal(native.train.y, s.train.y)
    rows = {tuple(v) for v in native.train.x.flatten(1).tolist()}
    assert sum(tuple(v) in rows for v in native.test.x.flatten(1).tolist()) < 5  # a few duplicates


def test_faces_are_100_faces_and_100_non_faces():
    task = registry.create("task", "faces")
    s = task.load(seed=0)
    assert s.train.x.shape == (100, 1, 28, 28) and s.num_classes == 2
    y = torch.cat([s.train.y, s.test.y, s.public.y])
    assert torch.bincount(y).tolist() == [100, 100]
    native = registry.create("task", "faces", {"size": 25}).load(seed=0)
    assert native.train.x.shape == (100, 1, 25, 25)
    assert len({tuple(v) for v in all_images(native).flatten(1).tolist()}) == 200
    with pytest.raises(PluginError, match=r"faces: size=4 is outside \[8, inf\]"):
        registry.create("task", "faces", {"size": 4})


def test_resnet_is_adapted_to_32x32_and_downloads_nothing():
    task = registry.create("task", "toy", {"model": "resnet"})
    torch.manual_seed(0)
    model = task.build_model((3, 32, 32), 10)
    assert model.net.conv1.kernel_size == (3, 3) and model.net.conv1.stride == (1, 1)
    assert isinstance(model.net.maxpool, torch.nn.Identity)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    gray = task.build_model((1, 28, 28), 4)
    assert gray(torch.rand(2, 1, 28, 28)).shape == (2, 4)


def test_every_task_accepts_every_model_name():
    for name in registry.names("task"):
        for model in ("paper-cnn", "mlp", "resnet"):
            registry.create("task", name, {"model": model})
        with pytest.raises(PluginError, match=rf"{name}: model='resnet50' is not one of"):
            registry.create("task", name, {"model": "resnet50"})
