"""Building blocks of the ``auto`` ensemble: forward models fitted in a discovered class, value
statistics matched without pairs, and a confidence that needs no truth.

Every component ends in the same form, a (targets × gallery) distance matrix, so that one
key-free confidence (``mutual_rate``) can compare components working in different spaces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from disguisebench.attacks._discovery import Structure

log = logging.getLogger("disguisebench")

LEVELS = 256  # grey levels of 8-bit images: the resolution of value tables
_ETA_BINS = 8  # coarse bins that locate where an output value comes from


def distances(a: Tensor, b: Tensor) -> Tensor:
    """(len(a), len(b)) Euclidean distances between flattened rows."""
    return torch.cdist(a.flatten(1).double(), b.flatten(1).double())


def mutual_rate(dist: Tensor) -> float:
    """Fraction of targets whose nearest gallery image has them as its nearest target.

    A component that sees through the disguise pairs each target with its original both ways;
    one that does not pairs them at random, and few of those pairs are mutual. The rate needs
    no truth and no key, and compares components whose distances live in different spaces.
    """
    if dist.numel() == 0 or not bool(torch.isfinite(dist).all()):
        return 0.0
    t2g = dist.argmin(1)
    g2t = dist.argmin(0)
    return float((g2t[t2g] == torch.arange(len(dist))).double().mean())


def reid_accuracy(predicted: Tensor, actual: Tensor) -> float:
    """How often each actual disguise is nearest to its own predicted disguise (held-out pairs)."""
    return float((distances(actual, predicted).argmin(1) == torch.arange(len(actual)))
                 .double().mean())


def _levels(x: Tensor) -> Tensor:
    return (x.double() * (LEVELS - 1)).round().long().clamp(0, LEVELS - 1)


def _fill(table: Tensor, seen: Tensor) -> Tensor:
    """Rows of ``table`` (R, L) with unseen entries taken from the nearest seen entry."""
    r, n = table.shape
    idx = torch.arange(n).expand(r, n)
    last = torch.where(seen, idx, torch.full_like(idx, -1)).cummax(1).values
    nxt = torch.where(seen, idx, torch.full_like(idx, n)).flip(1).cummin(1).values.flip(1)
    use_last = (last >= 0) & ((nxt >= n) | (idx - last <= nxt - idx))
    src = torch.where(use_last, last, nxt).clamp(0, n - 1)
    out = torch.gather(table, 1, src)
    return torch.where(seen.any(1, keepdim=True), out, torch.zeros_like(out))


class GlobalTable:
    """One value map for every position and channel: output = table[grey level of input]."""

    name = "global-table"

    def fit(self, plain: Tensor, disguised: Tensor) -> GlobalTable:
        lv = _levels(plain).flatten()
        d = disguised.double().flatten()
        sums = torch.zeros(LEVELS, dtype=torch.float64).index_add_(0, lv, d)
        counts = torch.zeros(LEVELS, dtype=torch.float64).index_add_(0, lv, torch.ones_like(d))
        seen = counts > 0
        self.table_ = _fill((sums / counts.clamp_min(1))[None], seen[None])[0]
        return self

    def predict(self, plain: Tensor) -> Tensor:
        return self.table_[_levels(plain)]


class PositionTable:
    """A value map per output position, reading one input position: the same one (pointwise)
    or the one whose value best explains it (correlation ratio over the pairs), which recovers
    a permutation of positions composed with any value maps."""

    name = "position-table"

    def __init__(self, search: bool) -> None:
        self.search = search

    def fit(self, plain: Tensor, disguised: Tensor) -> PositionTable:
        p = plain.flatten(1).double()
        d = disguised.flatten(1).double()
        n, size = d.shape
        self.shape_ = disguised.shape[1:]
        if self.search:
            self.source_ = correlation_ratio(p, d).argmax(0)
        else:
            self.source_ = torch.arange(size)
        lv = _levels(p[:, self.source_])  # (N, P_out)
        flat = (torch.arange(size) * LEVELS)[None] + lv
        sums = torch.zeros(size * LEVELS, dtype=torch.float64).index_add_(0, flat.flatten(),
                                                                          d.flatten())
        counts = torch.zeros(size * LEVELS, dtype=torch.float64).index_add_(
            0, flat.flatten(), torch.ones(n * size, dtype=torch.float64))
        table = (sums / counts.clamp_min(1)).view(size, LEVELS)
        self.table_ = _fill(table, counts.view(size, LEVELS) > 0)
        return self

    def predict(self, plain: Tensor) -> Tensor:
        lv = _levels(plain.flatten(1)[:, self.source_])
        return torch.gather(self.table_.expand(len(lv), -1, -1), 2, lv[..., None])[..., 0]


def correlation_ratio(plain: Tensor, disguised: Tensor) -> Tensor:
    """(P_in, P_out) share of each output position's variance explained by the (binned) value of
    each input position: 1 when the output is any function of that input, whatever its shape."""
    n = len(plain)
    bins = (plain * _ETA_BINS).long().clamp(0, _ETA_BINS - 1)  # (N, P_in)
    onehot = torch.nn.functional.one_hot(bins, _ETA_BINS).double().flatten(1)  # (N, P_in*B)
    d = disguised - disguised.mean(0)
    sums = onehot.T @ d  # (P_in*B, P_out)
    counts = onehot.sum(0)[:, None]
    between = (sums.pow(2) / counts.clamp_min(1)).view(plain.shape[1], _ETA_BINS, -1).sum(1)
    total = d.pow(2).sum(0).clamp_min(1e-12)
    eta = between / total
    # Few pairs per bin inflate the ratio of positions with many occupied bins; compare fairly.
    occupied = (counts.view(plain.shape[1], _ETA_BINS) > 0).sum(1, keepdim=True).double()
    return eta - (occupied - 1) / max(n - 1, 1)


class LinearMap:
    """An affine map over whole images, by ridge regression (dual with fewer pairs than values)."""

    name = "linear"

    def __init__(self, penalty: float = 1e-4) -> None:
        self.penalty = penalty

    def fit(self, plain: Tensor, disguised: Tensor) -> LinearMap:
        from disguisebench.attacks.learned_inversion import Ridge

        self.ridge_ = Ridge(self.penalty).fit(plain, disguised)
        return self

    def predict(self, plain: Tensor) -> Tensor:
        return self.ridge_.predict(plain).double()


def forward_models(structure: Structure) -> list:
    """Forward-model classes worth fitting for what discovery found, cheapest first."""
    models: list = []
    same = structure.in_shape == structure.out_shape
    if same:
        models.append(GlobalTable())
        models.append(PositionTable(search=not structure.pointwise))
    if structure.linear or not structure.shared:
        models.append(LinearMap())
    return models


def fit_forward(plain: Tensor, disguised: Tensor, structure: Structure, *,
                seed: int) -> tuple[object | None, dict[str, float]]:
    """The forward model that re-identifies held-out pairs best, refitted on all pairs.

    Also reports ``pairs_needed``: the fewest fitting pairs (doubling from 1) with which the
    chosen class already re-identifies the held-out pairs as well as with all of them."""
    n = len(plain)
    if n < 4:
        return None, {}
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = order[: max(2, n // 5)]
    fit = order[len(held):]
    best, best_key = None, None
    for model in forward_models(structure):
        try:
            model.fit(plain[fit], disguised[fit])
            pred = model.predict(plain[held]).reshape(len(held), -1)
        except (RuntimeError, ValueError) as err:  # a singular fit: this class does not apply
            log.debug("forward model %s: %s", model.name, err)
            continue
        actual = disguised[held].flatten(1).double()
        key = (reid_accuracy(pred, actual),
               -float((pred - actual).pow(2).mean() / actual.var().clamp_min(1e-12)))
        log.debug("forward model %s: held-out re-identification %.3f", model.name, key[0])
        if best_key is None or key > best_key:
            best, best_key = model, key
    if best is None:
        return None, {}
    actual = disguised[held].flatten(1).double()
    needed = len(fit)
    for count in (2**i for i in range(max(len(fit) - 1, 1).bit_length())):
        try:
            best.fit(plain[fit[:count]], disguised[fit[:count]])
            score = reid_accuracy(best.predict(plain[held]).reshape(len(held), -1), actual)
        except (RuntimeError, ValueError):
            continue
        if score >= best_key[0]:
            needed = count
            break
    best.fit(plain, disguised)
    return best, {"held_out": best_key[0], "pairs_needed": float(needed)}


def quantile_inverse(targets: Tensor, upload: Tensor, public: Tensor) -> Tensor:
    """Undo an unknown monotone value map per position by matching quantiles of the upload to
    those of public plaintext; the direction at each position (increasing or decreasing) is the
    one that keeps the skew of public values there."""
    u = upload.flatten(1).double()
    pub = public.flatten(1).double()
    t = targets.flatten(1).double()
    us, _ = u.sort(0)
    ps, _ = pub.sort(0)
    # Rank of each target value among the upload's values at its position, as a quantile.
    rank = torch.searchsorted(us.T.contiguous(), t.T.contiguous(), right=False).double()
    upper = torch.searchsorted(us.T.contiguous(), t.T.contiguous(), right=True).double()
    q = ((rank + upper) / 2 / len(u)).clamp(0, 1)  # (P, n), ties at their middle rank
    increasing = torch.sign(_skew(u)) == torch.sign(_skew(pub))
    q = torch.where(increasing[:, None], q, 1 - q)
    idx = (q * (len(pub) - 1)).round().long()
    out = torch.gather(ps.T, 1, idx).T
    return out.reshape(targets.shape).float()


def _skew(x: Tensor) -> Tensor:
    c = x - x.mean(0)
    return c.pow(3).mean(0) / c.pow(2).mean(0).clamp_min(1e-12).pow(1.5)


def level_substitution(targets: Tensor, upload: Tensor, public: Tensor) -> Tensor | None:
    """Undo a substitution of grey levels (one table for every position, any order) by
    frequency analysis: each disguised value is matched to the plaintext level whose frequency
    at every position is most alike (Hungarian algorithm on the per-position profiles)."""
    from scipy.optimize import linear_sum_assignment

    values, inverse = torch.unique(upload.double(), return_inverse=True)
    if len(values) > 4 * LEVELS:
        return None  # not a table of grey levels
    u = inverse.flatten(1)
    pub = _levels(public).flatten(1)
    size = u.shape[1]

    def profile(codes: Tensor, count: int) -> Tensor:
        flat = codes + (torch.arange(size) * count)[None]
        hist = torch.zeros(size * count, dtype=torch.float64).index_add_(
            0, flat.flatten(), torch.ones(codes.numel(), dtype=torch.float64))
        return hist.view(size, count).T / len(codes)  # (count, P): frequency per position

    pu, pp = profile(u, len(values)), profile(pub, LEVELS)
    # Compare profiles on a square-root scale (variance-stabilising for counts).
    cost = torch.cdist(pu.sqrt(), pp.sqrt())
    rows, cols = linear_sum_assignment(cost.numpy())
    table = torch.zeros(len(values), dtype=torch.float64)
    table[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.float64) / (LEVELS - 1)
    codes = torch.searchsorted(values, targets.double().flatten().contiguous()).clamp(
        0, len(values) - 1)
    return table[codes].view(targets.shape).float()


def mode_silhouette(x: Tensor, reference: Tensor) -> Tensor:
    """(N, P) which values of ``x`` equal the most frequent value at their position in
    ``reference`` (the background, for digits): any keyed value map per position, however
    irregular, sends the background to one value per position, so the mark keeps the shape."""
    ref = reference.flatten(1).double()
    mode = ref.mode(0).values
    scale = ref.abs().max().clamp_min(1e-12)
    return ((x.flatten(1).double() - mode).abs() <= 1e-6 * scale).double()


def position_permutation(dis: Tensor, pub: Tensor, *, steps: int, profile: int = 32,
                         good_enough: Callable[[Tensor], bool] | None = None,
                         every: int = 20) -> Tensor:
    """(P,) the plaintext position each disguised position holds, for one permutation of
    single positions shared by every image, from statistics alone.

    A position is described by its mean, its spread and its sorted correlations with all other
    positions (its ``profile`` strongest), which a permutation leaves unchanged: a pixel in the
    middle of a digit co-varies strongly with many, one at the border with few. The Hungarian
    algorithm assigns positions on that description; pairwise swaps then match the whole
    correlation matrix (attacks._blockstats.swap_refine), ``every`` at a time until
    ``good_enough(src)`` holds or ``steps`` are spent."""
    from scipy.optimize import linear_sum_assignment

    from disguisebench.attacks._blockstats import correlation, swap_refine

    dis, pub = dis.flatten(1).double(), pub.flatten(1).double()
    cd = torch.nan_to_num(correlation(dis))
    cp = torch.nan_to_num(correlation(pub))

    def describe(x: Tensor, c: Tensor) -> Tensor:
        top = c.sort(1, descending=True).values[:, 1: profile + 1]
        return torch.cat([x.mean(0)[:, None], x.std(0)[:, None], top], 1)

    unary = torch.cdist(describe(dis, cd), describe(pub, cp)).pow(2)
    unary = unary / unary.mean().clamp_min(1e-12)
    _, cols = linear_sum_assignment(unary.numpy())
    src = torch.as_tensor(cols, dtype=torch.long)
    done = 0
    while done < steps and not (good_enough is not None and good_enough(src)):
        src, taken = swap_refine(src, unary, cd, cp, steps=min(every, steps - done))
        done += every
        if taken < min(every, steps - done + every):  # no swap improves any more
            break
    return src


def nibbles(x: Tensor) -> Tensor:
    """(N, 2P) the upper then the lower 4 bits of every 8-bit value, as numbers 0-15."""
    lv = _levels(x.flatten(1))
    return torch.cat([lv >> 4, lv & 15], 1).double()


def from_nibbles(v: Tensor) -> Tensor:
    """Inverse of ``nibbles``: (N, 2P) -> (N, P) values in [0, 1]."""
    half = v.shape[1] // 2
    return (v[:, :half] * 16 + v[:, half:]) / (LEVELS - 1)


def is_8bit(x: Tensor) -> bool:
    """Whether every value of ``x`` is a multiple of 1/255 in [0, 1]."""
    scaled = x.double() * (LEVELS - 1)
    return bool(((scaled - scaled.round()).abs() < 1e-3).all() and (x >= 0).all() and (x <= 1).all())


def isometry_matches(targets: Tensor, gallery: Tensor, *, tol: float = 1e-5) -> Tensor:
    """(targets, gallery) minus how many of a target's distances to the other targets recur,
    to within ``tol`` relative, among a gallery image's distances to the other gallery images.

    A map that keeps distances (a permutation of positions, an orthogonal map, an offset) keeps
    every distance between two targets equal to the distance between their originals, which
    are in the gallery; distances are real numbers, so chance coincidences are rare. Needs no
    key and no pairs."""
    dt = distances(targets, targets)
    dg = distances(gallery, gallery)
    n, g = len(dt), len(dg)
    off_t = ~torch.eye(n, dtype=torch.bool)
    off_g = ~torch.eye(g, dtype=torch.bool)
    v = dt[off_t].view(n, n - 1)  # each target's distances to the others
    w = dg[off_g].view(g, g - 1).sort(1).values.contiguous()  # sorted, per gallery image
    scale = float(dg.median()) * tol + 1e-12
    queries = v.flatten()[None].expand(g, -1).contiguous()  # (G, n*(n-1))
    pos = torch.searchsorted(w, queries).clamp(1, g - 2)
    near = torch.minimum((w.gather(1, pos) - queries).abs(),
                         (w.gather(1, pos - 1) - queries).abs())
    hits = (near <= scale).view(g, n, n - 1).sum(2).T  # (n, G)
    return -hits.double()


def pair_geometry(targets: Tensor, gallery: Tensor, plain: Tensor, disguised: Tensor) -> Tensor:
    """(targets, gallery) distances between each image's distances to the known pairs: a target's
    distances to the disguised known images equal its original's to their plaintext under any
    isometry (permutations of positions, orthogonal maps, offsets), whatever the key."""
    dt = distances(targets, disguised)
    dg = distances(gallery, plain)
    # Compare shapes, not scales: a map that scales distances keeps their pattern.
    dt = (dt - dt.mean(1, keepdim=True)) / dt.std(1, keepdim=True).clamp_min(1e-12)
    dg = (dg - dg.mean(1, keepdim=True)) / dg.std(1, keepdim=True).clamp_min(1e-12)
    return torch.cdist(dt, dg)


