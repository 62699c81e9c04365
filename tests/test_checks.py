from __future__ import annotations

import pytest
import torch

from disguisebench import checks, registry
from disguisebench.api import Data, Defense


class LoopPerImage(Defense):
    """Adds a keyed offset, one image at a time."""

    def __init__(self) -> None:
        pass

    def _fit(self, data, rng, public):
        self.offset_ = torch.rand(1, generator=rng)

    def _transform(self, data, *, epoch):
        return Data(torch.stack([img + self.offset_ for img in data.x]), data.y)


class GlobalRandom(Defense):
    """Draws noise from torch's global generator."""

    def __init__(self) -> None:
        pass

    def _transform(self, data, *, epoch):
        return Data(data.x + torch.rand(data.x.shape), data.y)


class RefitsOnTransform(Defense):
    """Re-draws its key from whatever it disguises."""

    def __init__(self) -> None:
        pass

    def _fit(self, data, rng, public):
        self.mean_ = data.x.mean()

    def _transform(self, data, *, epoch):
        self.mean_ = data.x.mean()
        return Data(data.x - self.mean_, data.y)


class ShrinksUndeclared(Defense):
    """Halves the image without declaring it."""

    keyless = True

    def __init__(self) -> None:
        pass

    def _transform(self, data, *, epoch):
        return Data(data.x[..., ::2, ::2].contiguous(), data.y)


class NaNAtScale(Defense):
    """The identity, with a NaN pixel in batches of more than 64 images."""

    keyless = True

    def __init__(self) -> None:
        pass

    def _transform(self, data, *, epoch):
        x = data.x.clone()
        if len(x) > 64:
            x[:, 0, 0, 0] = float("nan")
        return Data(x, data.y)


@pytest.mark.parametrize("name,cls,check,reason", [
    ("nan-at-scale", NaNAtScale, "batch-sizes", "NaN or infinite output in a batch of 65"),
    ("loop-per-image", LoopPerImage, "vectorised", "torch calls for 4 images but"),
    ("global-random", GlobalRandom, "deterministic", "two transforms under one key differ"),
    ("refits-on-transform", RefitsOnTransform, "fit-only-on-training", "transform changed the key"),
    ("shrinks-undeclared", ShrinksUndeclared, "shape", "differs from the declared (1, 16, 16)"),
])
def test_checks_catch_a_bad_defense(name, cls, check, reason):
    with registry.temporary(name, cls):
        results = {r.check: r for r in checks.run_checks(name)}
    assert not results[check].passed and reason in results[check].reason
