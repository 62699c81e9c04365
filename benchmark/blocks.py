"""Block geometry: cutting images into k×k blocks and back, padding, grid positions, sizes.

Public, for defenses and attacks alike (an attack plugin outside this repository gets block
geometry here). Nothing here is secret: moving blocks by a given permutation or multiplying them
by given matrices is geometry, while drawing the permutation or the matrices is a defense's key
(``disguisebench.defenses._blocks``). A block-wise defense describes how it cuts images with
``Defense.block_layout``, a ``BlockLayout`` computed from its hyperparameters.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from disguisebench.errors import PluginError

# How a block-wise disguise moves blocks between positions.
MOVES = ("none", "dataset", "image")


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """How a block-wise defense cuts images of one size, from its hyperparameters alone.

    Args:
        block: side k of a plaintext block, in pixels.
        grid: (blocks down, blocks across), after padding.
        block_out: side of one block once disguised (k, unless the defense changes the size:
            a patch encoder writes a patch as one cell, block AES as a ciphertext square).
        moves: "none" (blocks stay at their positions), "dataset" (one permutation of block
            positions for every image) or "image" (a fresh permutation per image).
        padding: "error" (k divides the image sides) or "edge" (edge pixels replicated up to
            whole blocks).
    """

    block: int
    grid: tuple[int, int]
    block_out: int
    moves: str = "none"
    padding: str = "error"

    @classmethod
    def of(cls, owner: str, image_shape: tuple[int, ...], block: int, *, padding: str = "error",
           block_out: int | None = None, moves: str = "none",
           param: str = "block") -> BlockLayout:
        """The layout of ``block``×``block`` blocks on images of ``image_shape`` (C, H, W);
        raises PluginError, naming ``owner`` and ``param``, when the block does not fit."""
        if moves not in MOVES:
            raise PluginError(f"{owner}: block moves {moves!r} is not one of "
                              f"{', '.join(map(repr, MOVES))}")
        h, w = image_shape[-2:]
        grid = (padded_size(owner, h, block, padding, param) // block,
                padded_size(owner, w, block, padding, param) // block)
        return cls(block, grid, block if block_out is None else block_out, moves, padding)

    @property
    def positions(self) -> int:
        """The number of block positions."""
        return self.grid[0] * self.grid[1]

    @property
    def padded_size(self) -> tuple[int, int]:
        """Height and width of the plaintext once padded to whole blocks."""
        return self.grid[0] * self.block, self.grid[1] * self.block

    @property
    def disguised_size(self) -> tuple[int, int]:
        """Height and width of the disguised images."""
        return self.grid[0] * self.block_out, self.grid[1] * self.block_out


def padded_size(owner: str, side: int, block: int, padding: str, param: str = "block") -> int:
    """``side`` rounded up to whole blocks with edge padding; with padding "error", ``side``
    itself when ``block`` divides it, else a PluginError naming ``owner``, ``param`` and the
    divisors that would do."""
    if side % block == 0:
        return side
    if padding == "edge":
        return side + (-side) % block
    raise PluginError(
        f"{owner}: {param}={block} does not divide the image side {side}; choose a divisor of "
        f"{side} ({', '.join(str(d) for d in range(1, side + 1) if side % d == 0)}) "
        "or set padding='edge'"
    )


def pad_to_blocks(x: Tensor, block: int, owner: str, padding: str, param: str = "block") -> Tensor:
    """(N, C, H, W) padded at the bottom and right, edge pixels replicated, to whole blocks."""
    h, w = x.shape[-2:]
    ph = padded_size(owner, h, block, padding, param)
    pw = padded_size(owner, w, block, padding, param)
    if (ph, pw) == (h, w):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")


def grid_positions(owner: str, h: int, w: int, block: int, padding: str) -> int:
    """The number of k×k block positions of an h×w image (after edge padding, when asked)."""
    return (padded_size(owner, h, block, padding) // block) * \
        (padded_size(owner, w, block, padding) // block)


def check_image_size(owner: str, x: Tensor, image_shape: tuple[int, ...]) -> None:
    """Raise unless ``x`` has the height and width the key was drawn for."""
    if tuple(x.shape[2:]) != tuple(image_shape[1:]):
        raise PluginError(
            f"{owner}: the key was drawn for images of size {tuple(image_shape[1:])}, "
            f"got {tuple(x.shape[2:])}"
        )


def disguised_size(owner: str, image_shape: tuple[int, ...], block: int, padding: str,
                   side: int | None = None) -> tuple[int, int]:
    """Height and width of disguised images whose k×k blocks each become ``side``×``side``
    (default: stay k×k), after padding."""
    out = block if side is None else side
    return tuple((padded_size(owner, s, block, padding) // block) * out  # type: ignore[return-value]
                 for s in image_shape[1:])


def check_disguised_size(owner: str, x: Tensor, image_shape: tuple[int, ...], block: int,
                         padding: str, side: int | None = None) -> None:
    """Raise unless ``x`` has the (padded) size of the key's images once disguised."""
    size = disguised_size(owner, image_shape, block, padding, side)
    if tuple(x.shape[2:]) != size:
        raise PluginError(f"{owner}: expected disguised images of size {size}, "
                          f"got {tuple(x.shape[2:])}")


def to_blocks(x: Tensor, block: int) -> Tensor:
    """(N, C, H, W) -> (N, C, P, k, k): non-overlapping k×k blocks in raster order."""
    n, c, h, w = x.shape
    return (x.reshape(n, c, h // block, block, w // block, block)
             .permute(0, 1, 2, 4, 3, 5).reshape(n, c, (h // block) * (w // block), block, block))


def from_blocks(blocks: Tensor, h: int, w: int) -> Tensor:
    """Inverse of ``to_blocks``."""
    n, c, _, k, _ = blocks.shape
    return (blocks.reshape(n, c, h // k, w // k, k, k)
                  .permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w))


def block_source_index(perm: Tensor, h: int, w: int, block: int, *,
                       segments: bool = False) -> Tensor:
    """Where each output pixel comes from when output block j takes input block ``perm[..., j]``.

    ``perm`` is (P,) for one permutation or (N, P) for one per image. The result indexes flat
    pixels, (..., h*w), or with ``segments`` the k-pixel row pieces of blocks, (..., h*w/k), so
    that a block permutation becomes one gather.
    """
    k, across = block, w // block
    src = perm.reshape(*perm.shape[:-1], h // k, 1, across, 1)
    rows = (src // across) * k + torch.arange(k).view(k, 1, 1)
    if segments:
        return (rows * across + src % across).reshape(*perm.shape[:-1], h * across)
    cols = (src % across) * k + torch.arange(k)
    return (rows * w + cols).reshape(*perm.shape[:-1], h * w)


def permute_blocks(x: Tensor, perm: Tensor, block: int) -> Tensor:
    """Output block position j holds input block ``perm[j]``; ``perm`` (N, P) permutes per image.

    The inverse is ``permute_blocks(y, torch.argsort(perm, dim=-1), block)``.
    """
    n, c, h, w = x.shape
    if perm.dim() == 1:
        index = block_source_index(perm, h, w, block)
        return x.reshape(n * c, h * w).index_select(1, index).view(n, c, h, w)
    # Per image: gather whole k-pixel segments, with an index k times smaller than per pixel.
    pieces = h * w // block
    index = block_source_index(perm, h, w, block, segments=True)
    index = index.view(n, 1, pieces, 1).expand(n, c, pieces, block)
    return torch.gather(x.reshape(n, c, pieces, block), 2, index).view(n, c, h, w)


# Widest strip, in pixels, multiplied at once by ``multiply_blocks``: a strip of g blocks costs g
# times the arithmetic of the blocks alone but turns many tiny products into few large ones.
_STRIP = 32


def multiply_blocks(x: Tensor, matrices: Tensor, block: int) -> Tensor:
    """Right-multiply each k×k block by its position's matrix: block p becomes B_p · M_p.

    ``matrices`` is (P, k, k) in raster order of positions. The product runs in ``x``'s dtype as
    one batched matmul over image rows: each row of a horizontal strip of g adjacent blocks
    (g·k ≤ 32 pixels) is multiplied by the block-diagonal matrix of its g positions, which reads
    the image in place instead of cutting it into blocks first.
    """
    n, c, h, w = x.shape
    k = block
    down, across = h // k, w // k
    g = max(d for d in range(1, across + 1) if across % d == 0 and d * k <= max(k, _STRIP))
    strips = across // g
    mats = matrices.to(x.dtype).reshape(down, strips, g, k, k)
    diag = torch.einsum("asgij,gh->asgihj", mats, torch.eye(g, dtype=x.dtype))
    # Every pixel row of a block row uses the same strip matrices.
    diag = diag.reshape(down, 1, strips, g * k, g * k).expand(down, k, strips, g * k, g * k)
    rows = x.reshape(n * c, h, strips, g * k)
    out = torch.einsum("nrst,rstu->nrsu", rows, diag.reshape(h, strips, g * k, g * k))
    return out.reshape(n, c, h, w)
