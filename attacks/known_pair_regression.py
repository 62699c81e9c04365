"""Known-pair regression: recover a block-wise linear disguise from known (plaintext, disguised) pairs."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from disguisebench.attacks._common import owner_pairs, regularised_inverse
from disguisebench.attacks._discovery import discover
from disguisebench.api import (
    DEFENSE, KNOWN_PAIRS, ORACLE, PUBLIC, RECONSTRUCT, TARGETS, Attack, NotApplicable, Outcome,
    PluginError, ThreatView, check_number)
from disguisebench.blocks import from_blocks, pad_to_blocks, to_blocks
from disguisebench.registry import register

log = logging.getLogger("disguisebench")


def block_rows(x: Tensor, k: int) -> Tensor:
    """(N, C, H, W) -> (P, N*C*k, k): the rows of every block, stacked per block position."""
    b = to_blocks(x.double(), k)
    n, c, p = b.shape[:3]
    return b.permute(2, 0, 1, 3, 4).reshape(p, n * c * k, k)


def with_intercept(rows: Tensor) -> Tensor:
    return torch.cat([rows, torch.ones(*rows.shape[:-1], 1, dtype=rows.dtype)], -1)


@register("known-pair-regression")
class KnownPairRegression(Attack):
    """Recover each block position's secret matrix by least squares on known pairs, then invert.

    Threat: reconstruction at level 2 (and 3) against block-wise linear disguises (block RMT,
    with or without noise). Per block position, disguised block rows are regressed on plaintext
    block rows (with an intercept, which absorbs the mean of added noise); when the block
    permutation is unknown, every (disguised, plaintext) position pair is fitted and the
    one-to-one alignment with the least total residual is chosen (scipy's
    linear_sum_assignment). The inverse regression then maps each target block back. Reports
    ``positions_recovered``, the fraction of disguised positions whose plaintext block is
    identifiable (full rank over the pairs) and whose fit is unambiguous (its residual below
    ``margin`` times that of the next-best plaintext position), and ``fit``, the mean share of
    disguised block variance the chosen fits explain. Sharma & Chen,
    "Disguised-Nets: Image Disguising for Privacy-preserving Outsourced Deep Learning", 2019,
    and Sharma, Gu & Chen, 2023 (the authors' level-2 attack).

    Args:
        block: block side k (0: the unit found by probing the defense, or 1 without one).
        n_pairs: known pairs used (0 uses every pair granted, plus oracle pairs at level 3).
        align: search for the block permutation (false assumes none).
        margin: residual ratio to the next-best position under which a position counts as
            recovered.
    """

    goal = RECONSTRUCT
    needs = frozenset({TARGETS, KNOWN_PAIRS})
    optional = frozenset({DEFENSE, PUBLIC, ORACLE})

    def __init__(self, block: int = 0, n_pairs: int = 0, align: bool = True,
                 margin: float = 0.5) -> None:
        self.block = block
        self.n_pairs = n_pairs
        self.align = align
        self.margin = margin

    def validate(self) -> None:
        check_number(self.name, "block", self.block, kind=int, low=0)
        check_number(self.name, "n_pairs", self.n_pairs, kind=int, low=0)
        if not isinstance(self.align, bool):
            raise PluginError(f"{self.name}: align={self.align!r} must be true or false")
        check_number(self.name, "margin", self.margin, low=0, high=1)

    def _block_size(self, view: ThreatView) -> int:
        if self.block:
            return self.block
        if view.defense is None:
            return 1
        plain = view.require(KNOWN_PAIRS)[0].x
        found = discover(view.defense, plain)
        # No unit smaller than the image: fit every pixel position on its own.
        return found.unit if found.found and found.unit < min(plain.shape[-2:]) else 1

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        view.require(KNOWN_PAIRS)
        k = self._block_size(view)
        pairs = owner_pairs(view)
        plain = torch.cat([p for p, _ in pairs])
        disguised = torch.cat([d for _, d in pairs])
        if self.n_pairs:
            plain, disguised = plain[: self.n_pairs], disguised[: self.n_pairs]
        targets = view.require(TARGETS).x
        h, w = plain.shape[-2:]
        padded = pad_to_blocks(plain, k, self.name, "edge")
        if padded.shape[1:] != disguised.shape[1:] or disguised.shape[1:] != targets.shape[1:]:
            raise NotApplicable(f"{self.name}: plaintext of shape {tuple(plain.shape[1:])} in "
                                f"blocks of {k} does not line up with disguised images of shape "
                                f"{tuple(disguised.shape[1:])}")
        a = with_intercept(block_rows(padded, k))  # (P, R, k+1) plaintext rows
        d = block_rows(disguised, k)  # (P, R, k) disguised rows
        # residual[p, j] of fitting disguised position j from plaintext position p
        cross = torch.einsum("pra,jrb->pjab", a, d)
        fitted = torch.einsum("pjab,pac,pjcb->pj", cross, regularised_inverse(a.mT @ a), cross)
        centred = ((d - d.mean(1, keepdim=True)) ** 2).sum((1, 2))
        residual = (d * d).sum((1, 2))[None, :] - fitted
        if self.align:
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(residual.numpy())
            source = torch.empty(len(cols), dtype=torch.long)
            source[torch.as_tensor(cols)] = torch.as_tensor(rows)
        else:
            source = torch.arange(d.shape[0])
        # Inverse regression per disguised position j: plaintext rows of position source[j].
        b = with_intercept(d)
        weight = regularised_inverse(b.mT @ b) @ (b.mT @ a[source, :, :k])
        t = with_intercept(block_rows(targets, k)) @ weight  # (P, n*C*k, k) at positions source
        n, c = targets.shape[:2]
        blocks = torch.empty_like(t)
        blocks[source] = t
        blocks = blocks.reshape(-1, n, c, k, k).permute(1, 2, 0, 3, 4)
        recon = from_blocks(blocks, *padded.shape[-2:])[..., :h, :w].float()

        self.alignment_ = source
        report = {**self._diagnostics(a[source, :, :k], residual, source, centred),
                  "pairs": float(len(plain))}
        log.info("%s: %.2f of %d block positions recovered from %d pairs", self.name,
                 report["positions_recovered"], len(source), len(plain))
        return Outcome(recon, report)

    def _diagnostics(self, plain_rows: Tensor, residual: Tensor, source: Tensor,
                     centred: Tensor) -> dict[str, float]:
        k = plain_rows.shape[-1]
        rank = torch.linalg.matrix_rank(plain_rows - plain_rows.mean(1, keepdim=True))
        positions = torch.arange(len(source))
        chosen = residual[source, positions].clamp_min(0)
        others = residual.clamp_min(0).clone()
        others[source, positions] = torch.inf
        runner_up = others.min(0).values if len(source) > 1 else torch.full_like(chosen, torch.inf)
        recovered = (rank == k) & (chosen <= self.margin * runner_up)
        explained = (1 - chosen / centred.clamp_min(1e-12)).clamp(0, 1)
        return {"positions_recovered": float(recovered.double().mean()),
                "fit": float(explained.mean())}
