"""RMT moment attack: estimate each block position's secret matrix from statistics, invert it."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from disguisebench.attacks._blockstats import (Layout, assign_per_image, blocks_of, layout,
                                               match_positions, place, second_moments, whitener)
from disguisebench.attacks._common import subsample
from disguisebench.api import (
    DEFENSE, PUBLIC, RECONSTRUCT, TARGETS, UPLOAD, Attack, NotApplicable, Outcome, PluginError,
    ThreatView, check_number)
from disguisebench.blocks import from_blocks, padded_size
from disguisebench.registry import register

log = logging.getLogger("disguisebench")


def polar(m: Tensor) -> Tensor:
    """The orthogonal matrix nearest to each m (the orthogonal Procrustes solution)."""
    u, _, vh = torch.linalg.svd(m)
    return u @ vh


def _weights(blocks: Tensor, labels: Tensor | None, classes: list[int],
             invariant: Tensor | None, higher: bool) -> list[Tensor]:
    """(N, P) weights, one list entry per moment: all images, each of ``classes`` (labels are
    sent in the clear, so class-conditional moments correspond), and, with ``higher``,
    standardised invariant per-block quantities whose weighted first moments carry higher-order
    statistics."""
    n, _, p = blocks.shape[:3]
    out = [torch.ones(n, p, dtype=blocks.dtype)]
    if labels is not None:
        for c in classes:
            hit = (labels == c).to(blocks.dtype)
            out.append((hit / hit.mean())[:, None].expand(n, p))
    if higher and invariant is not None:
        for w in invariant.unbind(-1):  # (N, P) each
            sd = w.std(0, keepdim=True)
            out.append(torch.where(sd > 1e-9, (w - w.mean(0)) / sd.clamp_min(1e-9),
                                   torch.zeros_like(w)))
    return out


def moments(blocks: Tensor, weights: list[Tensor], second: int) -> tuple[Tensor, Tensor]:
    """Weighted first moments (P, M, C*k, k) and second moments (P, ``second``, k, k).

    First moments E[w B] for every weight; second moments E[B^T B] for the first ``second``
    weights (the constant and class weights)."""
    n, c, p, k, _ = blocks.shape
    w = torch.stack(weights).permute(2, 0, 1).contiguous()  # (P, M, N)
    flat = blocks.permute(2, 0, 1, 3, 4).reshape(p, n, c * k * k)
    first = (w @ flat / n).reshape(p, len(weights), c * k, k)
    outer = torch.einsum("ncqji,ncqjl->qnil", blocks, blocks).reshape(p, n, k * k)  # B^T B
    return first, (w[:, :second] @ outer / (n * c)).reshape(p, second, k, k)


def solve(first_x: Tensor, first_y: Tensor, second_x: Tensor, second_y: Tensor, *,
          orthogonal_weight: float) -> Tensor:
    """(P, k, k) R minimising ||A R - B||^2 + lam * sum_m ||S_x,m R - R S_y,m||^2 per position.

    A, B stack the first moments of plaintext and disguised blocks (E[w B] R = E[w Y] for Y = B R
    and weights the matrix leaves unchanged); S_x,m R = R S_y,m holds for orthogonal R since
    S_y = R^T S_x R. Both terms are scaled by their plaintext size; solved in closed form through
    the normal equations on vec(R) (column-major), with a small ridge for blank positions."""
    p, _, _, k = first_x.shape
    a = first_x.reshape(p, -1, k)
    b = first_y.reshape(p, -1, k)
    eye = torch.eye(k, dtype=a.dtype)
    fa = a.pow(2).mean((1, 2)).clamp_min(1e-12)
    gram = torch.einsum("ij,pab->piajb", eye, a.mT @ a).reshape(p, k * k, k * k) / fa[:, None, None]
    rhs = (a.mT @ b).mT.reshape(p, k * k) / fa[:, None]
    if orthogonal_weight > 0:
        fs = second_x.pow(2).mean((1, 2, 3)).clamp_min(1e-12)
        for m in range(second_x.shape[1]):
            kron = (torch.einsum("ij,pab->piajb", eye, second_x[:, m])
                    - torch.einsum("pji,ab->piajb", second_y[:, m], eye)).reshape(p, k * k, k * k)
            gram = gram + orthogonal_weight * kron.mT @ kron / fs[:, None, None]
    size = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
    gram = gram + 1e-9 * size[:, None, None] * torch.eye(k * k, dtype=a.dtype)
    # The normal equations are symmetric positive definite: Cholesky, not LU (batched LU of
    # matrices this size hangs with several threads in some CPU builds of torch).
    factor, info = torch.linalg.cholesky_ex(gram)
    if bool((info > 0).any()):
        factor = torch.linalg.cholesky(gram + 1e-6 * size[:, None, None] * torch.eye(k * k, dtype=a.dtype))
    vec = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    return vec.reshape(p, k, k).mT


@register("rmt-moment-attack")
class RMTMomentAttack(Attack):
    """Estimate every block position's secret RMT matrix from moments of the disguised set.

    Threat: reconstruction at level 1 against block-rmt (no known pairs). The block permutation
    is recovered first from statistics the matrices leave unchanged (as permutation-recovery
    does); then per position, with Y = B R: first moments of the disguised blocks must equal
    those of public plaintext blocks times R, for the whole set, for each class (labels travel in
    the clear) and, as higher-order ICA-style statistics, weighted by per-block quantities the
    matrix leaves unchanged (the Gram matrix B B^T of an orthogonal block); for orthogonal R the
    second moments must commute with it (S_x R = R S_y). The least-squares solution is projected
    onto the orthogonal matrices; general ("projection") matrices are estimated the same way
    between whitened blocks, which an orthogonal matrix relates. Known noise is corrected for in
    the first and second moments. The targets are then unpermuted and multiplied by the inverse
    estimates. Reports ``split_half_error``, how far the matrices estimated on two halves
    of the disguised set disagree (the relative difference of public blocks multiplied by
    either: a key-free estimate of the estimation error), and ``assignment_cost`` of the
    recovered block permutation. Attack of DisguiseBench on Sharma & Chen, "Disguised-Nets: Image
    Disguising for Privacy-preserving Outsourced Deep Learning", 2019, whose level-1 claim it
    tests; moment and ICA-style estimation as in Hyvärinen & Oja, "Independent Component
    Analysis: Algorithms and Applications", 2000.

    Args:
        higher_order: add the first moments weighted by invariant block quantities.
        orthogonal_weight: weight of the second-moment commutation equations (0: first moments).
        refine_steps: pairwise swaps refining the recovered block permutation.
        max_images: disguised images used for statistics (0: every image the cloud holds).
    """

    goal = RECONSTRUCT
    needs = frozenset({TARGETS, DEFENSE, PUBLIC})
    optional = frozenset({UPLOAD})

    def __init__(self, higher_order: bool = True, orthogonal_weight: float = 1.0,
                 refine_steps: int = 500, max_images: int = 5000) -> None:
        self.higher_order = higher_order
        self.orthogonal_weight = orthogonal_weight
        self.refine_steps = refine_steps
        self.max_images = max_images

    def validate(self) -> None:
        if not isinstance(self.higher_order, bool):
            raise PluginError(f"{self.name}: higher_order={self.higher_order!r} must be true or "
                              "false")
        check_number(self.name, "orthogonal_weight", self.orthogonal_weight, low=0)
        check_number(self.name, "refine_steps", self.refine_steps, kind=int, low=0)
        check_number(self.name, "max_images", self.max_images, kind=int, low=0)

    def _estimate(self, lay: Layout, dis: Tensor, dis_y: Tensor | None, pub: Tensor,
                  pub_y: Tensor | None) -> Tensor:
        """(P, k, k) matrices from aligned disguised and plaintext blocks (noise corrected)."""
        k = lay.block
        if lay.matrix == "identity":
            return torch.eye(k, dtype=dis.dtype).expand(dis.shape[2], k, k).clone()
        rows = lay.noise_var * k * torch.eye(k, dtype=dis.dtype)  # E[E^T E] of centred noise
        if lay.noise_stage == "after":
            dis = dis - lay.noise_mean
        else:
            pub = pub + lay.noise_mean
        if lay.matrix == "projection":
            # Whitened blocks are related by an orthogonal matrix Q = W_x^-1 R W_y.
            wx = whitener(pub) if lay.noise_stage == "after" else \
                _whiten_with(second_moments(pub) + rows)
            wy = _whiten_with(second_moments(dis) - rows) if lay.noise_stage == "after" else \
                whitener(dis)
            q = self._orthogonal(torch.einsum("ncpij,pjk->ncpik", dis, wy), dis_y,
                                 torch.einsum("ncpij,pjk->ncpik", pub, wx), pub_y, 0.0)
            return wx @ q @ torch.linalg.inv(wy)
        # Either stage leaves S_y = R^T S_x R + k v I for orthogonal R.
        return self._orthogonal(dis, dis_y, pub, pub_y, rows)

    def _orthogonal(self, dis: Tensor, dis_y: Tensor | None, pub: Tensor, pub_y: Tensor | None,
                    noise_rows: Tensor | float) -> Tensor:
        def invariant(b: Tensor) -> Tensor:
            g = b @ b.mT  # (N, C, P, k, k), unchanged by an orthogonal R
            k = g.shape[-1]
            iu = torch.triu_indices(k, k) if k <= 8 else torch.arange(k).expand(2, k)
            return g[..., iu[0], iu[1]].sum(1)  # (N, P, F), channels pooled

        classes = []
        if dis_y is not None and pub_y is not None:  # classes seen on both sides
            classes = sorted(set(dis_y.tolist()) & set(pub_y.tolist()))
        wy = _weights(dis, dis_y, classes, invariant(dis), self.higher_order)
        wx = _weights(pub, pub_y, classes, invariant(pub), self.higher_order)
        fx, sx = moments(pub, wx, 1 + len(classes))
        fy, sy = moments(dis, wy, 1 + len(classes))
        sy = sy - noise_rows if isinstance(noise_rows, Tensor) else sy
        return polar(solve(fx, fy, sx, sy, orthogonal_weight=self.orthogonal_weight))

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        lay = layout(view.require(DEFENSE), self.name, view.require(PUBLIC).x)
        k = lay.block
        targets = view.require(TARGETS)
        public = view.require(PUBLIC)
        pool = view.upload if view.upload is not None else targets
        pool = subsample(pool, self.max_images, seed)
        pub = blocks_of(public.x, k, self.name)
        dis = blocks_of(pool.x, k, self.name)
        tb = blocks_of(targets.x, k, self.name)
        if tb.shape[1:] != pub.shape[1:]:
            raise NotApplicable(f"{self.name}: disguised images of shape "
                                f"{tuple(targets.x.shape[1:])} do not split into the "
                                f"{tuple(pub.shape[1:3])} blocks of {k}×{k} the plaintext does")
        statistic = lay.matrix
        report = {"images": float(len(pool))}
        if lay.scope == "dataset":
            src, info = match_positions(dis, pub, statistic, steps=self.refine_steps)
            report["assignment_cost"] = info["cost"]
            dis, target_src = place(dis, src), src
        elif lay.scope == "image":
            dis = place(dis, assign_per_image(dis, pub, statistic))
            target_src = assign_per_image(tb, pub, statistic)
        else:
            target_src = torch.arange(tb.shape[2])
        dis_y = None if pool.y is None else pool.hard_labels()
        pub_y = None if public.y is None else public.hard_labels()
        matrices = self._estimate(lay, dis, dis_y, pub, pub_y)
        self.matrices_ = matrices
        report.update(self._split_half(lay, dis, dis_y, pub, pub_y, seed))

        blocks = place(tb, target_src)
        if lay.noise_stage == "after":
            blocks = blocks - lay.noise_mean
        blocks = torch.einsum("ncpij,pjk->ncpik", blocks, torch.linalg.pinv(matrices))
        if lay.noise_stage == "before":
            blocks = blocks - lay.noise_mean
        h, w = public.x.shape[-2:]
        ph, pw = (padded_size(self.name, s, k, "edge") for s in (h, w))
        recon = from_blocks(blocks, ph, pw)[..., :h, :w]
        log.info("%s: %s", self.name, {n: round(v, 4) for n, v in report.items()})
        return Outcome(recon.clamp(0, 1).float(), report)

    def _split_half(self, lay: Layout, dis: Tensor, dis_y: Tensor | None, pub: Tensor,
                    pub_y: Tensor | None, seed: int) -> dict[str, float]:
        """How far the matrices estimated on two halves of the disguised set disagree where it
        matters: the relative difference of public blocks multiplied by either estimate."""
        if lay.matrix == "identity" or len(dis) < 4:
            return {"split_half_error": 0.0}
        order = torch.randperm(len(dis), generator=torch.Generator().manual_seed(seed))
        halves = order[: len(dis) // 2], order[len(dis) // 2:]
        first, second = (self._estimate(lay, dis[h], None if dis_y is None else dis_y[h], pub,
                                        pub_y) for h in halves)
        apart = torch.einsum("ncpij,pjk->ncpik", pub, first - second).pow(2).sum()
        size = torch.einsum("ncpij,pjk->ncpik", pub, first).pow(2).sum().clamp_min(1e-12)
        return {"split_half_error": float((apart / size).sqrt())}


def _whiten_with(s: Tensor) -> Tensor:
    """Inverse square roots of given (P, k, k) second moments (eigenvalues floored)."""
    vals, vecs = torch.linalg.eigh(s)
    floor = 1e-3 * vals.clamp_min(0).mean(-1, keepdim=True) + 1e-12
    return vecs @ torch.diag_embed(vals.clamp_min(0).clamp_min(floor).rsqrt()) @ vecs.mT
