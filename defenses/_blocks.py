"""Key drawing shared by the block-wise defenses: orthogonal and full-rank matrices, permutations,
secrets and the seeded generator of fresh per-image randomness. Block geometry (cutting,
re-assembling, padding, moving and multiplying blocks) is public: ``disguisebench.blocks``."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def haar_orthogonal(count: int, size: int, rng: torch.Generator) -> Tensor:
    """``count`` Haar-random orthogonal size×size matrices with determinant +1 (float64)."""
    g = torch.randn(count, size, size, generator=rng, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    # Sign fix of R's diagonal makes Q Haar-distributed (Mezzadri 2007).
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q


def full_rank_uniform(count: int, size: int, rng: torch.Generator) -> Tensor:
    """``count`` size×size matrices of uniform [0, 1) entries, redrawn until each has full rank."""
    m = torch.rand(count, size, size, generator=rng, dtype=torch.float64)
    while True:
        bad = torch.linalg.matrix_rank(m) < size
        if not bad.any():
            return m
        m[bad] = torch.rand(int(bad.sum()), size, size, generator=rng, dtype=torch.float64)


def random_permutations(count: int, length: int, rng: torch.Generator) -> Tensor:
    """(count, length) independent uniform permutations."""
    return torch.argsort(torch.rand(count, length, generator=rng), dim=1)


def content_generator(secret: int, x: Tensor) -> torch.Generator:
    """A generator seeded by a secret and the batch's content.

    Fresh-per-image randomness (noise, per-image permutations) must still make ``transform``
    deterministic for a key: the same images under the same key give the same output.
    """
    digest = hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=8,
                             key=secret.to_bytes(8, "big")).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "big") >> 1)


def draw_secret(rng: torch.Generator) -> int:
    """A 63-bit secret integer from the key generator."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=rng))
