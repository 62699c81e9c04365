"""Pixelation and blur, the keyless obfuscations."""

from __future__ import annotations

import pytest
import torch

from disguisebench.api import Data, PluginError
from disguisebench.defenses.blur import Blur
from disguisebench.defenses.pixelate import Pixelate


def images(n: int = 3, c: int = 1, side: int = 8, seed: int = 0) -> Data:
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.rand(n, c, side, side, generator=gen), torch.arange(n))


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelate_without_keeping_the_size_returns_the_block_means(channels):
    data = images(c=channels)
    small = Pixelate(block=4, keep_size=False).fit(data, seed=0).transform(data).x
    assert small.shape == (3, channels, 2, 2)
    assert torch.allclose(small[:, :, 1, 0], data.x[:, :, 4:8, 0:4].mean((2, 3)))
    big = Pixelate(block=4).fit(data, seed=0).transform(data).x
    assert big.shape == data.x.shape
    assert torch.equal(big[:, :, 4:8, 0:4], small[:, :, 1:2, 0:1].expand(-1, -1, 4, 4))


def test_pixelate_names_the_divisors():
    with pytest.raises(PluginError, match=r"block=3 does not divide the image side 8; choose a "
                                          r"divisor of 8 \(1, 2, 4, 8\)"):
        Pixelate(block=3).fit(images(), seed=0).transform(images())
    with pytest.raises(PluginError, match="keep_size='no' must be true or false"):
        Pixelate(keep_size="no").fit(images(), seed=0)


@pytest.mark.parametrize("sigma", [0.7, 2.0])
def test_blur_matches_scipy_gaussian_filter(sigma):
    from scipy.ndimage import gaussian_filter

    data = images(c=3, side=12)
    out = Blur(sigma=sigma).fit(data, seed=0).transform(data).x
    # scipy's "nearest" mode replicates the edge, as the defense does; same radius for truncate=3.
    expected = gaussian_filter(data.x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest",
                               truncate=3.0)
    assert torch.allclose(out, torch.from_numpy(expected), atol=1e-5)


def test_blur_keeps_flat_images_and_smooths_noise():
    flat = Data(torch.full((2, 1, 8, 8), 0.3))
    assert torch.allclose(Blur(sigma=5.0).fit(flat, seed=0).transform(flat).x, flat.x)
    noise = images(side=16)
    out = Blur(sigma=1.5).fit(noise, seed=0).transform(noise).x
    assert out.std() < 0.5 * noise.x.std()
    with pytest.raises(PluginError, match="sigma=0 is outside"):
        Blur(sigma=0).fit(noise, seed=0)
