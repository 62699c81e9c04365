"""NeuraCrypt: a random convolutional patch encoder whose output patches are shuffled per image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from disguisebench.api import Data, Defense, PluginError, check_choice, check_number
from disguisebench.registry import register
from disguisebench.blocks import BlockLayout, pad_to_blocks
from disguisebench.defenses._blocks import content_generator, draw_secret, random_permutations

_EPS = 1e-5  # BatchNorm's default


def _uniform(shape: tuple[int, ...], fan_in: int, rng: torch.Generator) -> Tensor:
    """PyTorch's default initialisation of convolutions and linear layers: U(±1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=rng) * 2 - 1) * bound


@register("neuracrypt")
class NeuraCrypt(Defense):
    """Encode images with a secret random patch network, then shuffle the patches of every image.

    The network, known only to the owner: a patch convolution, depth 1×1 convolution +
    normalisation + ReLU layers, a random positional embedding, a ReLU and a linear mixer; then
    a fresh random order of the patches for every image.

    Secret: the network's weights and positional embedding, drawn from the key (the owner keeps
    the network; the cloud sees encodings and labels), and the per-image patch orders. Targets
    recovery, re-identification and model reuse by the cloud. Yala, Esfahanizadeh, D'Oliveira,
    Duffy, Ghobadi, Jaakkola, Vaikuntanathan, Barzilay, Médard, "NeuraCrypt: Hiding Private Health
    Data via Random Neural Networks for Public Training", arXiv 2106.02484, 2021; reference code
    github.com/yala/NeuraCrypt.
    Layout: the reference encoder hands a ViT an unordered set of patch vectors (N, P, D). Our
    tasks train an unmodified image model built from ``data.image_shape``, so the encoding is
    returned as an image (N, D, H/p, W/p): the D features of each patch are channels and the
    shuffled patches fill the patch grid. A CNN thus sees per-patch features at random grid
    positions (the positional embedding added before the shuffle is what tells patches apart);
    the paper's CNN needs H/p, W/p >= 4, so p <= 7 on 28×28 MNIST (p = 4 gives a 7×7 grid).
    Normalisation: the reference uses BatchNorm with the statistics of each batch; here each
    layer's per-channel mean and variance are measured once on the images given to ``fit`` and
    frozen, so an image's encoding does not depend on the batch it is encoded with.

    Args:
        patch: patch side p in pixels, kernel and stride of the first convolution (the reference
            configuration uses 16 on 256×256 x-rays; 4 divides both 28 and 32).
        width: feature channels D of every layer (the reference configuration uses 2048).
        depth: number of 1×1 convolution + normalisation + ReLU layers (the reference uses 4).
        shuffle: "image" (a fresh patch order per image, the paper) or "none".
        padding: "error" when p does not divide the image side, or "edge" (replicate edge pixels).
    """

    def __init__(self, patch: int = 4, width: int = 64, depth: int = 4, shuffle: str = "image",
                 padding: str = "error") -> None:
        self.patch = patch
        self.width = width
        self.depth = depth
        self.shuffle = shuffle
        self.padding = padding

    def validate(self) -> None:
        check_number(self.name, "patch", self.patch, kind=int, low=1)
        check_number(self.name, "width", self.width, kind=int, low=1)
        check_number(self.name, "depth", self.depth, kind=int, low=0)
        check_choice(self.name, "shuffle", self.shuffle, ("image", "none"))
        check_choice(self.name, "padding", self.padding, ("error", "edge"))

    def output_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return (self.width, *self.block_layout(image_shape).grid)

    def block_layout(self, image_shape: tuple[int, int, int]) -> BlockLayout:
        """Patches of p×p pixels, each written as one cell of the patch grid (its D features
        as channels), shuffled per image or left in place."""
        return BlockLayout.of(self.name, image_shape, self.patch, padding=self.padding,
                              block_out=1, moves=self.shuffle, param="patch")

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        c, h, w = data.image_shape
        p, d = self.patch, self.width
        grid = self.output_shape(data.image_shape)[1:]
        self.image_shape_ = (c, h, w)
        self.patch_weight_ = _uniform((d, c, p, p), c * p * p, rng)
        self.patch_bias_ = _uniform((d,), c * p * p, rng)
        self.layer_weights_ = _uniform((self.depth, d, d), d, rng)
        self.layer_biases_ = _uniform((self.depth, d), d, rng)
        self.position_ = torch.randn(d, *grid, generator=rng)
        self.mixer_weight_ = _uniform((d, d), d, rng)
        self.mixer_bias_ = _uniform((d,), d, rng)
        self.secret_ = draw_secret(rng)
        self.norm_mean_ = torch.zeros(self.depth, d)
        self.norm_std_ = torch.ones(self.depth, d)
        self._encode(data.x, fit=True)

    @torch.no_grad()
    def _encode(self, x: Tensor, *, fit: bool = False) -> Tensor:
        """(N, C, H, W) -> (N, D, H/p, W/p) before the shuffle; with ``fit``, measure the norms."""
        x = pad_to_blocks(x, self.patch, self.name, self.padding, "patch")
        z = F.relu(F.conv2d(x, self.patch_weight_, self.patch_bias_, stride=self.patch))
        for layer in range(self.depth):
            z = torch.einsum("ndhw,ed->nehw", z, self.layer_weights_[layer]) \
                + self.layer_biases_[layer].view(1, -1, 1, 1)
            if fit:
                self.norm_mean_[layer] = z.mean(dim=(0, 2, 3))
                self.norm_std_[layer] = torch.sqrt(z.var(dim=(0, 2, 3), unbiased=False) + _EPS)
            z = F.relu((z - self.norm_mean_[layer].view(1, -1, 1, 1))
                       / self.norm_std_[layer].view(1, -1, 1, 1))
        z = F.relu(z + self.position_)
        return torch.einsum("ndhw,ed->nehw", z, self.mixer_weight_) \
            + self.mixer_bias_.view(1, -1, 1, 1)

    def _transform(self, data: Data, *, epoch: int | None) -> Data:
        if data.image_shape != self.image_shape_:
            raise PluginError(f"{self.name}: fitted on images of shape {self.image_shape_}, "
                              f"got {data.image_shape}")
        z = self._encode(data.x)
        if self.shuffle == "image":
            n, d, gh, gw = z.shape
            order = random_permutations(n, gh * gw, content_generator(self.secret_, data.x))
            tokens = z.reshape(n, d, gh * gw)
            z = torch.gather(tokens, 2, order.unsqueeze(1).expand(n, d, gh * gw))
            z = z.reshape(n, d, gh, gw)
        return Data(z.contiguous(), data.y)
