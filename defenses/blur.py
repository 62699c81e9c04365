"""Gaussian blur: a keyless low-pass baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from disguisebench.api import Data, Defense, check_number
from disguisebench.registry import register


def gaussian_kernel(sigma: float, truncate: float) -> Tensor:
    """The normalised 1-d Gaussian of standard deviation ``sigma``, cut at ``truncate`` sigmas
    (radius rounded as scipy.ndimage.gaussian_filter does)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


@register("blur")
class Blur(Defense):
    """Gaussian blur: convolve every channel with a Gaussian of standard deviation sigma.

    The filter is separable and the edges are replicated, so the output keeps the image size
    and stays in [0, 1].

    Nothing is secret: the cloud can blur any image itself, so template matching and
    recognition trained on blurred images defeat it (McPherson, Shokri, Shmatikov, "Defeating
    Image Obfuscation with Deep Learning", 2016).

    Args:
        sigma: standard deviation of the Gaussian, in pixels.
        truncate: kernel radius in standard deviations (radius = round(truncate * sigma)).
    """

    keyless = True

    def __init__(self, sigma: float = 2.0, truncate: float = 3.0) -> None:
        self.sigma = sigma
        self.truncate = truncate

    def validate(self) -> None:
        check_number(self.name, "sigma", self.sigma, low=1e-3)
        check_number(self.name, "truncate", self.truncate, low=0.5)

    def _transform(self, data: Data, *, epoch: int | None) -> Data:
        self.validate()
        x = data.x
        n, c, h, w = x.shape
        k = gaussian_kernel(self.sigma, self.truncate).to(x.device)
        r = len(k) // 2
        # One grouped convolution per axis; the channels are folded into the batch.
        flat = x.reshape(n * c, 1, h, w)
        flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
        return Data(flat.reshape(n, c, h, w).clamp(0.0, 1.0).contiguous(), data.y)
