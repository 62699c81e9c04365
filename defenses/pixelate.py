"""Pixelation: each k×k block replaced by its mean, a keyless baseline."""

from __future__ import annotations

import torch.nn.functional as F

from disguisebench.api import Data, Defense, PluginError, check_number
from disguisebench.registry import register
from disguisebench.blocks import BlockLayout


@register("pixelate")
class Pixelate(Defense):
    """Replace every k×k block by its mean intensity (mosaicing).

    Nothing is secret: the cloud can pixelate any image itself, so template matching and
    recognition trained on pixelated images defeat it (McPherson, Shokri, Shmatikov, "Defeating
    Image Obfuscation with Deep Learning", 2016).

    Args:
        block: side of the averaged blocks, in pixels; must divide the image side.
        keep_size: repeat each mean over its block to keep the image size H × W; false returns the
            H/k × W/k image of block means (the paper's CNN needs H/k, W/k >= 4).
    """

    keyless = True

    def __init__(self, block: int = 4, keep_size: bool = True) -> None:
        self.block = block
        self.keep_size = keep_size

    def validate(self) -> None:
        check_number(self.name, "block", self.block, kind=int, low=1)
        if not isinstance(self.keep_size, bool):
            raise PluginError(f"{self.name}: keep_size={self.keep_size!r} must be true or false")

    def output_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = image_shape
        return (c, h, w) if self.keep_size else (c, h // self.block, w // self.block)

    def block_layout(self, image_shape: tuple[int, int, int]) -> BlockLayout:
        return BlockLayout.of(self.name, image_shape, self.block,
                              block_out=self.block if self.keep_size else 1)

    def _transform(self, data: Data, *, epoch: int | None) -> Data:
        self.block_layout(data.image_shape)  # raises unless the block divides both sides
        means = F.avg_pool2d(data.x, self.block)
        if self.keep_size:
            means = means.repeat_interleave(self.block, 2).repeat_interleave(self.block, 3)
        return Data(means.contiguous(), data.y)
