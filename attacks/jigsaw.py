"""Jigsaw-puzzle solver: reassemble each image's scrambled blocks by edge compatibility."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from disguisebench.attacks._blockstats import blocks_of, layout
from disguisebench.attacks._common import subsample
from disguisebench.attacks._discovery import Structure, discover
from disguisebench.api import (
    DEFENSE, PUBLIC, RECONSTRUCT, TARGETS, UPLOAD, Attack, NotApplicable, Outcome, ThreatView,
    check_choice, check_number)
from disguisebench.blocks import from_blocks, padded_size
from disguisebench.registry import register

log = logging.getLogger("disguisebench")

_CHUNK = 16  # images solved at once (the compatibility tables grow with the pieces squared)


def dihedral(x: Tensor) -> Tensor:
    """(..., k, k) -> (..., 8, k, k): the four rotations, each with and without a flip."""
    turns = [torch.rot90(x, r, dims=(-2, -1)) for r in range(4)]
    return torch.stack(turns + [t.flip(-1) for t in turns], -3)


def variants(blocks: Tensor, rotate: bool, invert: bool) -> Tensor:
    """(N, C, P, k, k) -> (N, P * O, C, k, k): every piece in each orientation the defense may
    have applied (O = 1, 2, 8 or 16), piece q's variants at q * O ... q * O + O - 1."""
    x = blocks.permute(0, 2, 1, 3, 4).unsqueeze(2)  # (N, P, 1, C, k, k)
    if rotate:
        x = dihedral(x.squeeze(2)).transpose(2, 3)  # (N, P, 8, C, k, k)
    if invert:
        x = torch.cat([x, 1.0 - x], 2)
    n, p, o = x.shape[:3]
    return x.reshape(n, p * o, *x.shape[3:])


def compatibility(pieces: Tensor) -> tuple[Tensor, Tensor]:
    """(N, A, A) dissimilarities of piece a left of piece b, and of a above b.

    The squared difference of the touching edges plus, for k >= 2, that of each edge with its
    linear prediction from the other piece (prediction-based compatibility, Pomeranz, Shemesh,
    Ben-Shahar, "A fully automated greedy square jigsaw puzzle solver", CVPR 2011)."""
    def sq(u: Tensor, v: Tensor) -> Tensor:
        return torch.cdist(u, v, compute_mode="use_mm_for_euclid_dist").pow_(2)

    def side(first: Tensor, second: Tensor, first_in: Tensor | None,
             second_in: Tensor | None) -> Tensor:
        # first: right edge of a; second: left edge of b (N, A, F)
        d = sq(first, second)
        if first_in is not None:
            d += 0.5 * sq(2 * first - first_in, second)
            d += 0.5 * sq(first, 2 * second - second_in)
        return d.clamp_min_(0)

    n, a = pieces.shape[:2]
    k = pieces.shape[-1]
    flat = lambda t: t.reshape(n, a, -1)  # noqa: E731
    inner = k >= 2
    lr = side(flat(pieces[..., :, -1]), flat(pieces[..., :, 0]),
              flat(pieces[..., :, -2]) if inner else None,
              flat(pieces[..., :, 1]) if inner else None)
    tb = side(flat(pieces[..., -1, :]), flat(pieces[..., 0, :]),
              flat(pieces[..., -2, :]) if inner else None,
              flat(pieces[..., 1, :]) if inner else None)
    return lr, tb


def neighbours(gh: int, gw: int) -> list[tuple[Tensor, bool, bool]]:
    """For each direction: (S,) the neighbouring slot (-1 off the grid), whether the
    compatibility is horizontal, and whether the neighbour comes first (left of / above)."""
    r, c = torch.arange(gh * gw) // gw, torch.arange(gh * gw) % gw
    out = []
    for dr, dc in ((0, -1), (0, 1), (-1, 0), (1, 0)):
        rr, cc = r + dr, c + dc
        inside = (rr >= 0) & (rr < gh) & (cc >= 0) & (cc < gw)
        out.append((torch.where(inside, rr * gw + cc, -1), dr == 0, dr + dc < 0))
    return out


def neighbour_cost(lr: Tensor, tb: Tensor, placed: Tensor, links: list) -> tuple[Tensor, Tensor]:
    """(N, S, A) summed dissimilarity of every piece to the pieces placed around each slot, and
    (N, S) how many neighbours each slot has placed."""
    n, a, _ = lr.shape
    rows = torch.arange(n)
    cost = torch.zeros(n, placed.shape[1], a, dtype=lr.dtype)
    count = torch.zeros(n, placed.shape[1], dtype=lr.dtype)
    for slot, horizontal, first in links:
        table = lr if horizontal else tb
        table = table if first else table.mT  # rows: the neighbour's piece
        piece = torch.where(slot >= 0, placed[:, slot.clamp_min(0)], -1)  # (N, S)
        has = piece >= 0
        cost += torch.where(has[..., None], table[rows[:, None], piece.clamp_min(0)], 0.0)
        count += has
    return cost, count


def greedy_solve(lr: Tensor, tb: Tensor, unary: Tensor, gh: int, gw: int, orientations: int,
                 prior_weight: float) -> Tensor:
    """(N, S) the oriented piece placed in each slot of a gh×gw frame.

    One piece per step, in every image at once: the first by its position prior alone, then the
    (slot, piece) with the least mean dissimilarity to the placed neighbours plus the weighted
    prior, among empty slots next to placed ones and pieces not yet placed in any orientation."""
    n, a, _ = lr.shape
    s = gh * gw
    rows = torch.arange(n)
    placed = torch.full((n, s), -1, dtype=torch.long)
    used = torch.zeros(n, a // orientations, dtype=torch.bool)
    links = neighbours(gh, gw)
    for step in range(s):
        cost, count = neighbour_cost(lr, tb, placed, links)
        score = (cost + prior_weight * unary) / (count + prior_weight)[..., None]
        blocked = placed >= 0
        if step > 0:
            blocked = blocked | (count == 0)
        score = score.masked_fill(used.repeat_interleave(orientations, 1)[:, None, :], torch.inf)
        # The slot whose best piece beats its runner-up by the largest ratio goes first: a
        # stroke continuing across an edge is placed before interchangeable blank blocks.
        two = score.topk(min(2, a), dim=2, largest=False)
        best = two.values[..., 0]
        runner = two.values[..., -1]
        scale = float(best[torch.isfinite(best)].mean()) if bool(torch.isfinite(best).any()) \
            else 1.0
        eps = 1e-3 * scale + 1e-12
        priority = torch.where(torch.isfinite(runner), (runner + eps) / (best + eps),
                               torch.full_like(best, 1e12))
        priority = priority.masked_fill(blocked | ~torch.isfinite(best), -1.0)
        slot = priority.argmax(1)
        piece = two.indices[rows, slot, 0]
        placed[rows, slot] = piece
        used[rows, piece // orientations] = True
    return placed


def assignment_solve(unary: Tensor, orientations: int) -> Tensor:
    """(N, S) pieces placed by the position prior alone: per image, the one-to-one assignment of
    pieces (each in its best orientation for the slot) to slots of least prior cost."""
    from scipy.optimize import linear_sum_assignment

    n, s, a = unary.shape
    per_piece = unary.view(n, s, a // orientations, orientations)
    best, turn = per_piece.min(3)  # (N, S, Q)
    placed = torch.empty(n, s, dtype=torch.long)
    for i in range(n):  # scipy solves one assignment at a time
        slots, pieces = linear_sum_assignment(best[i].numpy())
        q = torch.as_tensor(pieces)
        placed[i, torch.as_tensor(slots)] = q * orientations + turn[i, torch.as_tensor(slots), q]
    return placed


def local_search(placed: Tensor, lr: Tensor, tb: Tensor, unary: Tensor, gh: int, gw: int,
                 orientations: int, prior_weight: float, steps: int) -> Tensor:
    """Improve solved grids by the best single move, ``steps`` times at most: swapping the
    pieces of two slots, or turning one piece to another orientation. The objective is the
    summed dissimilarity of all joined edges plus the weighted prior; every move's change is
    computed at once."""
    n, s = placed.shape
    rows = torch.arange(n)
    links = neighbours(gh, gw)
    placed = placed.clone()
    for _ in range(steps):
        cost, _ = neighbour_cost(lr, tb, placed, links)
        total = cost + prior_weight * unary  # (N, S, A)
        here = total.gather(2, placed[..., None]).squeeze(2)  # (N, S)
        cross = total.gather(2, placed[:, None, :].expand(n, s, s))  # [s1, s2]: s2's piece at s1
        delta = cross + cross.mT - here[:, :, None] - here[:, None, :]
        # Two adjacent slots share an edge, counted above as if each kept its old neighbour.
        for table, step in ((lr, 1), (tb, gw)):
            first = torch.arange(s)
            ok = first + step < s
            if step == 1:
                ok &= (first % gw) != gw - 1
            a_slot, b_slot = first[ok], first[ok] + step
            p1, p2 = placed[:, a_slot], placed[:, b_slot]
            fix = (table[rows[:, None], p1, p2] + table[rows[:, None], p2, p1]
                   - table[rows[:, None], p2, p2] - table[rows[:, None], p1, p1])
            delta[:, a_slot, b_slot] += fix
            delta[:, b_slot, a_slot] += fix
        delta[:, torch.arange(s), torch.arange(s)] = torch.inf
        swap_gain, swap_at = delta.flatten(1).min(1)
        # Re-orienting the piece in one slot.
        base = placed - placed % orientations
        options = base[..., None] + torch.arange(orientations)  # (N, S, O)
        turn = total.gather(2, options) - here[..., None]
        turn_gain, turn_at = turn.flatten(1).min(1)
        better = torch.minimum(swap_gain, turn_gain) < -1e-9
        if not bool(better.any()):
            break
        do_swap = better & (swap_gain <= turn_gain)
        s1, s2 = swap_at // s, swap_at % s
        i = rows[do_swap]
        a_piece, b_piece = placed[i, s1[do_swap]], placed[i, s2[do_swap]]
        placed[i, s1[do_swap]], placed[i, s2[do_swap]] = b_piece, a_piece
        do_turn = better & ~do_swap
        j = rows[do_turn]
        slot = turn_at[do_turn] // orientations
        placed[j, slot] = options[j, slot, turn_at[do_turn] % orientations]
    return placed


@register("jigsaw")
class Jigsaw(Attack):
    """Solve disguised images as jigsaw puzzles: reassemble their blocks by edge compatibility.

    Threat: reconstruction at level 1 against block scrambling. Each block may also be tried in
    every rotation and flip and inverted (negative-positive), as the extended solver does, when
    probing the defense shows it applies those (block-scramble's rotate_flip and
    negative_positive="block").
    Blocks are first assigned to positions by a public position prior (the Hungarian algorithm;
    or placed greedily, the most confident edge first), then a local search swaps two blocks or
    turns one while that lowers the summed dissimilarity of the joined edges (the touching edges
    and their linear predictions) plus the weighted prior. With a block permutation drawn per
    image (block-rmt or block-permutation with permutation="image") every image is its own
    puzzle, as in the literature. When one key scrambles every image (block-scramble, or
    permutation="dataset"), the edge and prior costs are averaged over the disguised set the
    cloud holds and one puzzle is solved for all, which is far more robust. Blocks mixed by a
    matrix or shuffled inside (block-rmt's orthogonal matrices, block-scramble's pixel shuffle)
    have no matching edges left; the attack then fails, as expected. Reports ``edge_cost``, the
    mean dissimilarity of the edges the solution joins, and ``shared_key`` (1 when one puzzle
    was solved for the whole set). Chuman, Kurihara, Kiya, "On the Security of Block
    Scrambling-Based EtC Systems against Extended Jigsaw Puzzle Solver Attacks", IEICE Trans.
    Inf. & Syst. 2018; compatibility after Pomeranz, Shemesh, Ben-Shahar, "A fully automated
    greedy square jigsaw puzzle solver", CVPR 2011.

    Args:
        scope: "image" (one puzzle per image), "dataset" (one puzzle for the whole disguised
            set, when one key scrambles every image) or "auto" (from the probed structure).
        solver: the start of the local search: "assignment" (each image's blocks assigned to
            positions by the public prior, Hungarian algorithm) or "greedy" (edge-driven
            placement).
        orientations: "auto" (what probing the defense shows: values moved inside blocks, values
            negated), "none", "rotate", "invert"
            or "both" (rotations, flips and inversion).
        prior_weight: weight of the public position prior against one neighbour's edge.
        search_steps: moves of the local search after the first placement (swaps of two
            blocks or turns of one).
        max_images: disguised images averaged into the dataset-scope puzzle (0: all).
    """

    goal = RECONSTRUCT
    needs = frozenset({TARGETS, DEFENSE, PUBLIC})
    optional = frozenset({UPLOAD})

    def __init__(self, scope: str = "auto", solver: str = "assignment",
                 orientations: str = "auto", prior_weight: float = 0.1, search_steps: int = 300,
                 max_images: int = 200) -> None:
        self.scope = scope
        self.solver = solver
        self.orientations = orientations
        self.prior_weight = prior_weight
        self.search_steps = search_steps
        self.max_images = max_images

    def validate(self) -> None:
        check_choice(self.name, "scope", self.scope, ("auto", "image", "dataset"))
        check_choice(self.name, "solver", self.solver, ("assignment", "greedy"))
        check_choice(self.name, "orientations", self.orientations,
                     ("auto", "none", "rotate", "invert", "both"))
        check_number(self.name, "prior_weight", self.prior_weight, low=0)
        check_number(self.name, "search_steps", self.search_steps, kind=int, low=0)
        check_number(self.name, "max_images", self.max_images, kind=int, low=0)

    def _moves(self, found: Structure) -> tuple[bool, bool]:
        if self.orientations == "auto":  # values moved inside blocks, or negated
            return found.rotate, found.invert
        return self.orientations in ("rotate", "both"), self.orientations in ("invert", "both")

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        defense = view.require(DEFENSE)
        public = view.require(PUBLIC).x
        lay = layout(defense, self.name, public)
        k = lay.block
        rotate, invert = self._moves(discover(defense, public))
        targets = view.require(TARGETS).x
        pub = blocks_of(public, k, self.name)  # (N, C, S, k, k)
        tb = blocks_of(targets, k, self.name)
        if tb.shape[1:] != pub.shape[1:]:
            raise NotApplicable(f"{self.name}: disguised images of shape "
                                f"{tuple(targets.shape[1:])} do not split into the "
                                f"{tuple(pub.shape[1:3])} blocks of {k}×{k} the plaintext does")
        h, w = public.shape[-2:]
        ph, pw = (padded_size(self.name, s, k, "edge") for s in (h, w))
        gh, gw = ph // k, pw // k
        # Position prior: squared z-scores of a piece against each slot's public pixels, per
        # pixel on the scale of one edge's dissimilarity (k * C values).
        mean = pub.mean(0).permute(1, 0, 2, 3)  # (S, C, k, k)
        std = pub.std(0).permute(1, 0, 2, 3)
        std = std.clamp_min(0.1 * float(std.mean()) + 1e-6)
        orient = (8 if rotate else 1) * (2 if invert else 1)

        def tables(part: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            pieces = variants(part, rotate, invert)  # (B, A, C, k, k)
            lr, td = compatibility(pieces)
            z = (pieces.unsqueeze(2) - mean) / std  # (B, A, S, C, k, k)
            unary = z.pow(2).flatten(3).mean(-1).transpose(1, 2) * (k * part.shape[1])
            return pieces, lr, td, unary

        def solve(lr: Tensor, td: Tensor, unary: Tensor) -> Tensor:
            if self.solver == "greedy":
                placed = greedy_solve(lr, td, unary, gh, gw, orient, self.prior_weight)
            else:
                placed = assignment_solve(unary, orient)
            return local_search(placed, lr, td, unary, gh, gw, orient, self.prior_weight,
                                self.search_steps)

        scope = self.scope if self.scope != "auto" else \
            ("dataset" if lay.scope in ("dataset", "none") else "image")
        shared = None
        if self.scope == "auto" and lay.scope == "none" and orient == 1:
            shared = torch.arange(gh * gw)[None]  # nothing moved: the blocks stay in place
            shared_cost = None
        elif scope == "dataset":
            # One key for every image: one puzzle whose edge and prior costs are averaged over
            # the disguised set, solved once and applied to every target.
            pool = view.upload.x if view.upload is not None else targets
            pool = blocks_of(subsample(pool, self.max_images, seed), k, self.name)
            sums = None
            for part in pool.split(_CHUNK):
                _, lr, td, unary = tables(part)
                part_sums = [t.sum(0, keepdim=True) for t in (lr, td, unary)]
                sums = part_sums if sums is None else [a + b for a, b in zip(sums, part_sums)]
            lr, td, unary = (t / len(pool) for t in sums)
            shared = solve(lr, td, unary)
            shared_cost = float(self._edge_cost(lr, td, shared, gh, gw).mean())
        out, edge = [], []
        for part in tb.split(_CHUNK):
            if shared is None:
                pieces, lr, td, unary = tables(part)
                placed = solve(lr, td, unary)
                edge.append(self._edge_cost(lr, td, placed, gh, gw))
            else:
                pieces, placed = variants(part, rotate, invert), shared.expand(len(part), -1)
            rows = torch.arange(len(part))[:, None]
            image = pieces[rows, placed]  # (B, S, C, k, k)
            out.append(from_blocks(image.permute(0, 2, 1, 3, 4), ph, pw)[..., :h, :w])
        report = {"orientations": float(orient), "shared_key": float(shared is not None)}
        cost = shared_cost if shared is not None else float(torch.cat(edge).mean())
        if cost is not None:
            report["edge_cost"] = cost
        if shared is not None:
            self.solution_ = shared[0]
        log.info("%s: %s", self.name, report)
        return Outcome(torch.cat(out).clamp(0, 1).float(), report)

    @staticmethod
    def _edge_cost(lr: Tensor, tb: Tensor, placed: Tensor, gh: int, gw: int) -> Tensor:
        rows = torch.arange(len(placed))[:, None]
        grid = placed.view(-1, gh, gw)
        horiz = lr[rows, grid[:, :, :-1].flatten(1), grid[:, :, 1:].flatten(1)]
        vert = tb[rows, grid[:, :-1, :].flatten(1), grid[:, 1:, :].flatten(1)]
        return torch.cat([horiz, vert], 1).mean(1)
