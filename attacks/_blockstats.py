"""Statistics of disguised blocks shared by the key-recovery attacks.

A block-wise disguise (block-rmt, block-permutation, block-scramble) cuts every image into k×k
blocks, may multiply the block at each position by a secret matrix, and moves blocks to other
positions under a secret permutation. Its keys are the same for every image, so the statistics
of the disguised set at one position are those of the plaintext at another position, seen
through that position's matrix. This module takes the block layout from the structure found
by probing the defense (attacks._discovery), computes per-block features that the secret
matrix leaves unchanged, and matches disguised block positions to plaintext positions
(permutation-recovery, rmt-moment-attack, jigsaw).
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import Tensor

from disguisebench.attacks._discovery import discover, require_units
from disguisebench.api import Defense
from disguisebench.blocks import pad_to_blocks, to_blocks

log = logging.getLogger("disguisebench")

# Ridge added to a position's second-moment matrix before whitening, relative to its mean
# eigenvalue: positions that are blank in every image have no second moment to whiten by.
_WHITEN_RIDGE = 1e-3


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a block-wise defense cuts and keys images, as probing its keyless clone found it.

    Args:
        block: block side k.
        matrix: "identity", "orthogonal" or "projection", the kind of per-position matrix.
        scope: "none", "dataset" (one block permutation for all images) or "image".
        noise_mean: mean of the noise added to every disguised value, in pixel units [0, 1].
        noise_var: variance of that noise.
        noise_stage: "before" or "after" the matrices.
    """

    block: int
    matrix: str = "identity"
    scope: str = "none"
    noise_mean: float = 0.0
    noise_var: float = 0.0
    noise_stage: str = "after"


def layout(defense: Defense, owner: str, images: Tensor, *, seed: int = 0) -> Layout:
    """The block layout of ``defense``, found by probing its keyless clone with plaintext like
    ``images`` (attacks._discovery); a keyless defense without blocks reads as 1×1 blocks left in
    place, a keyed one without blocks raises."""
    found = discover(defense, images, seed=seed)
    if not found.found and defense.keyless:
        return Layout(1)  # no key and no blocks (none, blur): nothing to undo
    require_units(found, defense, owner)
    # Values that only move (or change beyond any linear model) are compared as they are; a
    # keyless map has no secret matrix to undo.
    matrix = found.matrix if found.matrix in ("orthogonal", "projection") and \
        not defense.keyless else "identity"
    return Layout(found.unit, matrix, found.scope, found.noise_mean, found.noise_var,
                  found.noise_stage)


def blocks_of(x: Tensor, k: int, owner: str) -> Tensor:
    """(N, C, H, W) -> (N, C, P, k, k) float64 blocks, plaintext edge-padded to whole blocks."""
    return to_blocks(pad_to_blocks(x.double(), k, owner, "edge"), k)


def second_moments(blocks: Tensor) -> Tensor:
    """(P, k, k) column second moments E[B^T B] per position, over images and channels."""
    n, c, p, k, _ = blocks.shape
    rows = blocks.permute(2, 0, 1, 3, 4).reshape(p, n * c * k, k)
    return rows.mT @ rows / max(n * c, 1)


def whitener(blocks: Tensor) -> Tensor:
    """(P, k, k) inverse square roots of each position's second moment (ridge-regularised)."""
    s = second_moments(blocks)
    k = s.shape[-1]
    size = s.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
    s = s + (_WHITEN_RIDGE * size)[:, None, None] * torch.eye(k, dtype=s.dtype)
    vals, vecs = torch.linalg.eigh(s)
    return vecs @ torch.diag_embed(vals.clamp_min(1e-12).rsqrt()) @ vecs.mT


def invariant_grams(blocks: Tensor, matrix: str, white: Tensor | None = None) -> Tensor:
    """(N, C, P, k, k) per-block matrices that the position's secret matrix R leaves unchanged.

    identity: the block itself. orthogonal: B B^T, since (B R)(B R)^T = B B^T. projection:
    B W W^T B^T with W the inverse square root of the position's second moment over the set
    (``white``), since whitening B R by its own population equals whitening B by its own up to an
    orthogonal factor.
    """
    if matrix == "identity":
        return blocks
    if matrix == "projection":
        if white is None:
            white = whitener(blocks)
        blocks = torch.einsum("ncpij,pjk->ncpik", blocks, white)
    return blocks @ blocks.mT


def features(blocks: Tensor, matrix: str, white: Tensor | None = None) -> Tensor:
    """(N, P, F) invariant features of each block: the entries of ``invariant_grams`` (the
    upper triangle for symmetric ones), all channels together."""
    return _features(invariant_grams(blocks, matrix, white), matrix)


def _features(g: Tensor, matrix: str) -> Tensor:
    n, c, p, k, _ = g.shape
    if matrix == "identity":
        f = g.reshape(n, c, p, k * k)
    else:
        iu = torch.triu_indices(k, k)
        f = g[..., iu[0], iu[1]]
    return f.permute(0, 2, 1, 3).reshape(n, p, -1)


def energies(blocks: Tensor, matrix: str, white: Tensor | None = None) -> Tensor:
    """(N, P) invariant energy of every block: the trace of its invariant Gram matrix."""
    return _energies(invariant_grams(blocks, matrix, white), matrix)


def _energies(g: Tensor, matrix: str) -> Tensor:
    if matrix == "identity":  # the "Gram" is the block itself: its squared norm
        return g.pow(2).sum((1, 3, 4))
    return g.diagonal(dim1=-2, dim2=-1).sum((1, -1))


def correlation(e: Tensor) -> Tensor:
    """(P, P) correlation across images of per-position values e (N, P)."""
    e = e - e.mean(0)
    s = e.norm(dim=0).clamp_min(1e-12)
    return (e.T @ e) / (s[:, None] * s[None, :])


def unary_cost(dis_feats: Tensor, pub_feats: Tensor) -> Tensor:
    """(P, P) cost of disguised position j holding plaintext position p: squared distance of the
    per-position means and standard deviations of the features, each scaled by its spread over
    positions in the public set."""
    sd = torch.cat([dis_feats.mean(0), dis_feats.std(0)], -1)
    sp = torch.cat([pub_feats.mean(0), pub_feats.std(0)], -1)
    scale = sp.std(0, keepdim=True).clamp_min(1e-9)
    cost = torch.cdist(sd / scale, sp / scale).pow(2)
    return cost / cost.mean().clamp_min(1e-12)


def swap_refine(src: Tensor, unary: Tensor, dis_corr: Tensor, pub_corr: Tensor, *,
                steps: int) -> tuple[Tensor, int]:
    """Improve an assignment by the best pairwise swap, ``steps`` times at most.

    Minimises sum_j unary[j, src[j]] + sum_{j, j'} (dis_corr[j, j'] - pub_corr[src[j], src[j']])^2,
    a quadratic assignment whose second term asks positions that co-vary in the disguised set
    to be positions that co-vary in plaintext. The change of every swap is computed at once.
    """
    src = src.clone()
    d = dis_corr
    dd = d.diagonal()
    for step in range(steps):
        m = pub_corr[src][:, src]
        md = m.diagonal()
        dm = d @ m.T
        g = dm.diagonal()
        # Swapping a, b changes row/column terms by 4 * sum_{j != a, b} (D_aj - D_bj)(M_aj - M_bj)
        cross = g[:, None] + g[None, :] - dm - dm.T
        cross -= (dd[:, None] - d.T) * (md[:, None] - m.T) + (d - dd[None, :]) * (m - md[None, :])
        delta = 4 * cross + 2 * (dd[:, None] - dd[None, :]) * (md[:, None] - md[None, :])
        u = unary[:, src]  # u[a, b] = unary[a, src[b]]
        own = u.diagonal()
        delta += u + u.T - own[:, None] - own[None, :]
        delta.fill_diagonal_(0.0)
        best, flat = delta.flatten().min(0)
        if float(best) >= -1e-12:
            return src, step
        a, b = divmod(int(flat), len(src))
        src[[a, b]] = src[[b, a]]
    return src, steps


def assignment_cost(src: Tensor, unary: Tensor, dis_corr: Tensor, pub_corr: Tensor) -> float:
    """The objective ``swap_refine`` minimises, per position."""
    pair = (dis_corr - pub_corr[src][:, src]).pow(2).sum()
    return float((unary[torch.arange(len(src)), src].sum() + pair) / len(src))


def match_positions(dis: Tensor, pub: Tensor, matrix: str, *, steps: int,
                    dis_white: Tensor | None = None,
                    pub_white: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Which plaintext position each disguised position holds, from statistics alone.

    ``dis`` and ``pub`` are (N, C, P, k, k) blocks of the disguised set and of public plaintext.
    A linear assignment (Hungarian algorithm) of the per-position feature statistics starts the
    search; pairwise swaps then match the correlation of block energies between positions.
    Returns src (P,) with disguised position j holding plaintext position src[j], and
    diagnostics.
    """
    from scipy.optimize import linear_sum_assignment

    if dis.shape[2] == 1:  # one block per image: nothing to permute
        return torch.zeros(1, dtype=torch.long), {"swaps": 0.0, "cost_hungarian": 0.0, "cost": 0.0}
    if matrix == "projection":
        dis_white = whitener(dis) if dis_white is None else dis_white
        pub_white = whitener(pub) if pub_white is None else pub_white
    gd = invariant_grams(dis, matrix, dis_white)  # computed once for features and energies
    gp = invariant_grams(pub, matrix, pub_white)
    unary = unary_cost(_features(gd, matrix), _features(gp, matrix))
    _, cols = linear_sum_assignment(unary.numpy())
    src = torch.as_tensor(cols, dtype=torch.long)
    dc = correlation(_energies(gd, matrix))
    pc = correlation(_energies(gp, matrix))
    start = assignment_cost(src, unary, dc, pc)
    src, swaps = swap_refine(src, unary, dc, pc, steps=steps)
    return src, {"swaps": float(swaps), "cost_hungarian": start,
                 "cost": assignment_cost(src, unary, dc, pc)}


def assign_per_image(dis: Tensor, pub: Tensor, matrix: str) -> Tensor:
    """(N, P) plaintext position of every block of every image, when each image has its own
    block permutation: per image, a linear assignment of its blocks to positions by the
    Gaussian negative log-likelihood of their features under each position's public
    statistics."""
    from scipy.optimize import linear_sum_assignment

    fp = features(pub, matrix)
    mu, sd = fp.mean(0), fp.std(0)
    sd = sd.clamp_min(0.05 * float(sd.mean()) + 1e-9)
    fd = features(dis, matrix)  # (N, P, F)
    z = (fd.unsqueeze(2) - mu) / sd  # (N, P blocks, P positions, F)
    cost = z.pow(2).sum(-1) + 2 * sd.log().sum(-1)
    out = torch.empty(cost.shape[:2], dtype=torch.long)
    for i, c in enumerate(cost.numpy()):  # scipy solves one assignment at a time
        out[i] = torch.as_tensor(linear_sum_assignment(c)[1])
    return out


def place(blocks: Tensor, src: Tensor) -> Tensor:
    """Undo a block permutation: output position src[j] receives disguised block j; ``src`` is
    (P,) for one permutation or (N, P) for one per image."""
    out = torch.empty_like(blocks)
    if src.dim() == 1:
        out[:, :, src] = blocks
        return out
    n, c, p, k, _ = blocks.shape
    index = src[:, None, :, None, None].expand(n, c, p, k, k)
    return out.scatter_(2, index, blocks)
