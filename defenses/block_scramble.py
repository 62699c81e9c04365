"""Kiya-style block-wise scrambling: the LE, ELE and EtC encryptions as settings of one scheme."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.api import Data, Defense, PluginError, check_choice, check_number
from disguisebench.registry import register
from disguisebench.blocks import BlockLayout, from_blocks, pad_to_blocks, to_blocks
from disguisebench.defenses._blocks import random_permutations


def _keyed_half(count: int, length: int, rng: torch.Generator) -> Tensor:
    """(count, length) masks, each marking a key-chosen half (rounded down) of the positions."""
    return random_permutations(count, length, rng) < length // 2


def _rotations_and_flips(k: int) -> Tensor:
    """(12, k*k) index maps: rotation by 0/90/180/270 degrees, then no, vertical or horizontal
    flip."""
    base = torch.arange(k * k).view(k, k)
    maps = []
    for quarter in range(4):
        turned = torch.rot90(base, quarter, dims=(0, 1))
        maps += [turned, turned.flip(0), turned.flip(1)]
    return torch.stack(maps).reshape(12, k * k)


@register("block-scramble")
class BlockScramble(Defense):
    """Scramble block positions, then shuffle, invert and recolour the values inside each block.

    Secret: the block permutation and, per block position (or one for all positions), the
    in-block value permutation, the set of inverted values and the colour-channel permutation;
    one key for all images, as in the published schemes. Targets visual re-identification by the
    cloud (level 1) while a model can still learn from the encrypted images.
    Settings of the published schemes:
    LE, Tanaka, "Learnable Image Encryption", ICCE-TW 2018: ``block_scramble=False,
    pixel_shuffle=True, split_bits=True, negative_positive="pixel", key_scope="shared"``.
    ELE (the default), Madono, Tanaka, Onishi, Ogawa, "Block-wise Scrambled Image Recognition
    Using Adaptation Network", AAAI-WS 2020: as LE with ``block_scramble=True, key_scope="block"``.
    EtC, Kurihara, Kikuchi, Imaizumi, Shiota, Kiya, "An Encryption-then-Compression System for
    JPEG/Motion JPEG Standard", IEICE Trans. Fundamentals 2015 (block scrambling, rotation and
    inversion, negative-positive transform and colour component shuffling per block, as analysed
    by Chuman, Kurihara, Kiya, "On the Security of Block Scrambling-Based EtC Systems against
    Extended Jigsaw Puzzle Solver Attacks", IEICE Trans. Inf. & Syst. 2018):
    ``block_scramble=True, pixel_shuffle=False, split_bits=False, rotate_flip=True,
    negative_positive="block", channel_shuffle=True, key_scope="block"``.
    The per-position operations are applied at the output block positions after scrambling; the
    reference code applies them before, which is the same scheme with the keys relabelled. LE's
    code inverts a keyed half before and after its shuffle; here a keyed half is inverted once.

    Args:
        block: block side M in pixels; must divide the image side unless padding="edge".
        block_scramble: permute the block positions.
        pixel_shuffle: permute the values inside each block (positions, channels and, with
            split_bits, 4-bit halves together, as LE does).
        negative_positive: "none", "pixel" (invert a keyed half of the values in a block, LE/ELE)
            or "block" (invert a keyed half of the blocks whole, EtC).
        split_bits: split each 8-bit value into its upper and lower 4 bits before the in-block
            operations and merge them after (LE/ELE); pixels are quantised to 8 bits.
        rotate_flip: rotate each block by a keyed multiple of 90 degrees and flip it (EtC).
        channel_shuffle: permute the colour channels of each block (EtC); nothing for grayscale.
        key_scope: "shared" (one in-block key for every block position, LE) or "block" (a key per
            block position, ELE and EtC).
        padding: "error" when M does not divide the image side, or "edge" (replicate edge pixels).
    """

    def __init__(self, block: int = 4, block_scramble: bool = True, pixel_shuffle: bool = True,
                 negative_positive: str = "pixel", split_bits: bool = True,
                 rotate_flip: bool = False, channel_shuffle: bool = False,
                 key_scope: str = "block", padding: str = "error") -> None:
        self.block = block
        self.block_scramble = block_scramble
        self.pixel_shuffle = pixel_shuffle
        self.negative_positive = negative_positive
        self.split_bits = split_bits
        self.rotate_flip = rotate_flip
        self.channel_shuffle = channel_shuffle
        self.key_scope = key_scope
        self.padding = padding

    def validate(self) -> None:
        check_number(self.name, "block", self.block, kind=int, low=1)
        for flag in ("block_scramble", "pixel_shuffle", "split_bits", "rotate_flip",
                     "channel_shuffle"):
            if not isinstance(getattr(self, flag), bool):
                value = getattr(self, flag)
                raise PluginError(f"{self.name}: {flag}={value!r} must be true or false")
        check_choice(self.name, "negative_positive", self.negative_positive,
                     ("none", "pixel", "block"))
        check_choice(self.name, "key_scope", self.key_scope, ("shared", "block"))
        check_choice(self.name, "padding", self.padding, ("error", "edge"))

    def block_layout(self, image_shape: tuple[int, int, int]) -> BlockLayout:
        return BlockLayout.of(self.name, image_shape, self.block, padding=self.padding,
                              moves="dataset" if self.block_scramble else "none")

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        c, h, w = data.image_shape
        k = self.block
        positions = self.block_layout(data.image_shape).positions
        planes = 2 if self.split_bits else 1
        length = planes * c * k * k
        keys = positions if self.key_scope == "block" else 1
        self.image_shape_ = (c, h, w)
        self.block_perm_ = (torch.randperm(positions, generator=rng) if self.block_scramble
                            else torch.arange(positions))
        # Compose the in-block moves into one index map over the block's values, laid out as
        # (bit plane, channel, pixel): output value l of a block is input value index_[p, l].
        spatial = torch.arange(k * k).expand(keys, k * k)
        if self.rotate_flip:
            spatial = _rotations_and_flips(k)[torch.randint(0, 12, (keys,), generator=rng)]
        channels = torch.arange(c).expand(keys, c)
        if self.channel_shuffle:
            channels = random_permutations(keys, c, rng)
        plane = torch.arange(planes).view(1, planes, 1, 1)
        index = (plane * c * k * k + channels.view(keys, 1, c, 1) * k * k
                 + spatial.view(keys, 1, 1, k * k)).reshape(keys, length)
        if self.pixel_shuffle:
            index = torch.gather(index, 1, random_permutations(keys, length, rng))
        self.index_ = index.contiguous()
        if self.negative_positive == "pixel":
            self.invert_ = _keyed_half(keys, length, rng)
        elif self.negative_positive == "block":
            # Whole blocks are inverted, a keyed half of the block positions whatever key_scope.
            self.invert_ = _keyed_half(1, positions, rng).view(positions, 1)
        else:
            self.invert_ = torch.zeros(1, 1, dtype=torch.bool)

    def _check_shape(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.image_shape_:
            raise PluginError(f"{self.name}: fitted on images of shape {self.image_shape_}, "
                              f"got {tuple(x.shape[1:])}")

    def _values(self, x: Tensor) -> tuple[Tensor, float]:
        """(N, P, L) block values and the maximum a value can take (for inversion)."""
        blocks = to_blocks(x, self.block)  # (N, C, P, k, k)
        n, c, p, k, _ = blocks.shape
        v = blocks.permute(0, 2, 1, 3, 4).reshape(n, p, 1, c * k * k)
        if not self.split_bits:
            return v.reshape(n, p, -1), 1.0
        q = torch.round(v.clamp(0, 1) * 255).to(torch.int32)
        return torch.cat([q & 15, q >> 4], dim=2).reshape(n, p, -1).to(x.dtype), 15.0

    def _image(self, v: Tensor, c: int, h: int, w: int) -> Tensor:
        n, p, _ = v.shape
        k = self.block
        if self.split_bits:
            planes = v.reshape(n, p, 2, -1)
            v = (planes[:, :, 1] * 16 + planes[:, :, 0]) / 255.0
        blocks = v.reshape(n, p, c, k, k).permute(0, 2, 1, 3, 4)
        return from_blocks(blocks, h, w)

    def _gather(self, v: Tensor, index: Tensor) -> Tensor:
        rows = torch.arange(index.shape[0]).unsqueeze(1)
        return v[:, rows, index] if index.shape[0] > 1 else v[:, :, index[0]]

    def _transform(self, data: Data, *, epoch: int | None) -> Data:
        x = data.x
        self._check_shape(x)
        x = pad_to_blocks(x, self.block, self.name, self.padding)
        c, h, w = x.shape[1:]
        v, top = self._values(x)
        v = v[:, self.block_perm_]
        v = self._gather(v, self.index_)
        v = torch.where(self.invert_, top - v, v)
        return Data(self._image(v, c, h, w).contiguous(), data.y)

    def _inverse(self, data: Data) -> Data:
        """The owner's decryption (exact up to the 8-bit quantisation that split_bits applies)."""
        x = data.x
        c, h, w = x.shape[1:]
        v, top = self._values(x)
        v = torch.where(self.invert_, top - v, v)
        v = self._gather(v, torch.argsort(self.index_, dim=1))
        v = v[:, torch.argsort(self.block_perm_)]
        _, oh, ow = self.image_shape_
        return Data(self._image(v, c, h, w)[..., :oh, :ow].contiguous(), data.y)
