"""Structure discovery: what a disguise does to images, learned by probing the keyless clone.

A Kerckhoffs attacker holds the algorithm, so it can key its own copies and feed them any images
it likes. ``discover`` does that, and never reads a hyperparameter name: it fits the clone under a
few keys of its own and probes it with constant images, impulses (one pixel changed) and pairs of
images, to learn which output positions depend on which input positions, whether the map is
pointwise, affine (superposition holds), deterministic, the same for every image of a batch or
drawn afresh per image (noise, per-image permutations, mixing), and whether it changes the image
shape. From the dependencies it reads the largest square unit (block) that the disguise keeps
whole, whether units move between positions, and how values mix inside a unit. The block attacks
take their geometry from here (``attacks._blockstats.layout``), so renaming a hyperparameter
changes nothing; a defense's declared ``block_layout()`` agrees with what probing finds
(tests/test_blocks.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import torch
from torch import Tensor

from disguisebench.attacks._common import _fingerprint, own_key, sub_seed
from disguisebench.api import Data, Defense, NotApplicable
from disguisebench.blocks import to_blocks

log = logging.getLogger("disguisebench")

# Structures this process has discovered, by what determines them (defense spec, probe images,
# seed): every attack of a cell asks for the same one.
_FOUND: dict[str, Structure] = {}
_FOUND_MAX = 32
# Impulse size and the constant image it is added to (both in [0, 1] together).
_BASE, _DELTA = 0.25, 0.5
# Largest image (values) whose affine map under noise is fitted by regression rather than probed
# by impulses (the fit costs values cubed).
_REGRESSION_MAX = 1024
_CHUNK = 1024  # impulse images disguised at once


@dataclasses.dataclass(frozen=True)
class Structure:
    """What probing a defense under the attacker's own keys revealed.

    Args:
        in_shape: (C, H, W) of the plaintext probed.
        out_shape: (C, H, W) of its disguise.
        keyed: two own keys disguise the same images differently.
        deterministic: the same batch disguises alike twice.
        shared: an image's disguise does not depend on the rest of its batch (no fresh per-image
            randomness in the structure, no mixing of images); fresh additive noise aside.
        mixing_images: outputs are made from several plaintext images (InstaHide).
        noise_var: variance per value of fresh additive noise (0 without).
        noise_mean: its mean.
        noise_stage: "after" (added to the output) or "before" (added to the input of a linear
            map).
        linear_error: relative error of superposition, T(a+b) - T(a) - T(b) + T(0) (0: affine).
        pointwise: every output position depends on the same input position only.
        global_table: pointwise with one value map at every position (a grey-level substitution).
        one_to_one: every input position reaches exactly one output position, a different one
            for each (a permutation of positions, possibly with a value map).
        unit: side of the largest square block the disguise keeps whole (the image side when
            none smaller is found).
        unit_out: the side of that block once disguised (differs when the shape changes).
        found: the disguise of a unit depends on that unit's content alone (at worst the unit
            is the whole image); False for mixing or opaque maps.
        scope: "none" (units stay in place), "dataset" (moved by one key for all images) or
            "image" (moved afresh per image).
        matrix: how values mix inside a unit: "identity" (values only move), "orthogonal" (a
            norm-preserving linear map), "projection" (another linear map) or "nonlinear".
        rotate: values move inside some units (a rotation, flip or shuffle).
        invert: some values are negated (x -> 1 - x).
        radius: the farthest (in pixels, Chebyshev) an input position reaches when the map
            keeps positions (-1 when unknown or positions move).
        probes: images disguised while probing.
    """

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    keyed: bool
    deterministic: bool
    shared: bool
    mixing_images: bool
    noise_var: float
    noise_mean: float
    noise_stage: str
    linear_error: float
    pointwise: bool
    global_table: bool
    one_to_one: bool
    unit: int
    unit_out: int
    found: bool
    scope: str
    matrix: str
    rotate: bool
    invert: bool
    radius: int
    probes: int

    @property
    def linear(self) -> bool:
        return self.linear_error < 1e-3

    @property
    def shape_changing(self) -> bool:
        return self.in_shape != self.out_shape

    def summary(self) -> dict[str, float]:
        """The discoveries as numbers, for an attack's diagnostics."""
        return {"unit": float(self.unit), "keyed": float(self.keyed),
                "shared": float(self.shared), "linear": float(self.linear),
                "pointwise": float(self.pointwise), "one_to_one": float(self.one_to_one),
                "noise_sd": math.sqrt(self.noise_var), "probes": float(self.probes)}


def discover(defense: Defense, images: Tensor, *, seed: int = 0, keys: int = 2) -> Structure:
    """Probe ``defense`` (the keyless clone; it is not modified) with plaintext like ``images``.

    ``images`` (N, C, H, W) in [0, 1] key the attacker's copies and serve as realistic probes;
    64 of them are enough. The answer is cached per defense spec, image batch and seed.
    """
    images = images[:64].float()
    cache_key = _fingerprint(json.dumps(defense.spec(), sort_keys=True, default=str), images,
                             seed, keys)
    if cache_key in _FOUND:
        return _FOUND[cache_key]
    found = _Prober(defense, images, seed, keys).run()
    while len(_FOUND) >= _FOUND_MAX:
        _FOUND.pop(next(iter(_FOUND)))
    _FOUND[cache_key] = found
    log.info("discovered %s: %s", defense.name, found)
    return found


class _Prober:
    """The attacker's own keyed copies of a defense and the probes ``discover`` sends them."""

    def __init__(self, defense: Defense, images: Tensor, seed: int, keys: int) -> None:
        self.images = images
        fit_data = Data(images, torch.zeros(len(images), dtype=torch.long))
        self.copies = [own_key(defense, fit_data, seed=sub_seed(seed, i))
                       for i in range(1 if defense.keyless else keys)]
        self.probes = 0
        self.mixing = False

    def apply(self, x: Tensor, copy: int = 0) -> Tensor:
        x = x.clamp(0, 1).float()
        out = self.copies[copy].transform(Data(x, torch.zeros(len(x), dtype=torch.long)))
        self.probes += len(x)
        if len(out) != len(x) or (out.source is not None and not torch.equal(
                out.source[:, :1], torch.arange(len(x))[:, None])) or \
                (out.source is not None and out.source.shape[1] > 1):
            self.mixing = True
            return out.x[: len(x)] if len(out) >= len(x) else out.x
        return out.x.double()

    def run(self) -> Structure:
        x = self.images
        c, h, w = x.shape[1:]
        y = self.apply(x)
        out_shape = tuple(y.shape[1:])
        if self.mixing:
            return self._opaque((c, h, w), out_shape, mixing=True)
        scale2 = float(y.var()) + 1e-12
        deterministic = torch.allclose(self.apply(x), y, atol=1e-6 * math.sqrt(scale2), rtol=0)
        # Fresh noise: the same zeros, disguised in batches of different content, differ.
        m = 16
        z_small = self.apply(torch.zeros(m, c, h, w))
        z_large = self.apply(torch.zeros(2 * m, c, h, w))
        noise_var = float((z_small - z_large[:m]).pow(2).mean()) / 2
        # Fresh structure: an image's disguise depends on its batch beyond that noise.
        half = self.apply(x[: max(1, len(x) // 2)])
        excess = float((half - y[: len(half)]).pow(2).mean()) - 2 * noise_var
        shared = excess <= 1e-3 * scale2 + 0.2 * noise_var and not self.mixing
        keyed = len(self.copies) > 1 and \
            float((self.apply(x, 1) - y).pow(2).mean()) - 2 * noise_var > 1e-3 * scale2
        linear_error = self._superposition((c, h, w), noise_var)
        if not shared:
            return self._fresh((c, h, w), out_shape, keyed, deterministic, noise_var,
                               linear_error, y)
        probe = self._regression if noise_var > 0 and linear_error < 0.05 and \
            c * h * w <= _REGRESSION_MAX else self._impulses
        deps, resp = zip(*(probe((c, h, w), i, noise_var) for i in range(len(self.copies))))
        return self._from_dependencies((c, h, w), out_shape, keyed, deterministic, noise_var,
                                       linear_error, list(deps), list(resp))

    def _opaque(self, in_shape, out_shape, *, mixing: bool, keyed: bool = True,
                deterministic: bool = False, noise_var: float = 0.0,
                linear_error: float = math.inf) -> Structure:
        return Structure(in_shape, out_shape, keyed, deterministic, False, mixing, noise_var, 0.0,
                         "after", linear_error, False, False, False, in_shape[1], out_shape[1],
                         False, "image", "nonlinear", False, False, -1, self.probes)

    def _superposition(self, shape, noise_var: float) -> float:
        """Relative error of T(a+b) - T(a) - T(b) + T(0), fresh noise (4 draws) removed."""
        gen = torch.Generator().manual_seed(1)
        a = torch.rand(16, *shape, generator=gen) * 0.5
        b = torch.rand(16, *shape, generator=gen) * 0.5
        out = self.apply(torch.cat([torch.zeros(16, *shape), a, b, a + b]))
        if self.mixing:
            return math.inf
        t0, ta, tb, tab = out.split(16)
        err = max(float((tab - ta - tb + t0).pow(2).mean()) - 4 * noise_var, 0.0)
        size = float((ta - t0).pow(2).mean() + (tb - t0).pow(2).mean()) / 2 - 2 * noise_var
        return err / max(size, 1e-12)

    def _impulses(self, shape, copy: int, noise_var: float) -> tuple[Tensor, Tensor]:
        """(H*W, Ho*Wo) which output positions each input position reaches (channel 0 changed,
        output channels pooled) and (H*W, 2) the energy of each response and whether any of it
        is negative; probed in chunks, so large images need little memory."""
        c, h, w = shape
        base = torch.full((1, c, h, w), _BASE)
        ref = self.apply(base, copy)
        co, ho, wo = ref.shape[1:]
        deps, stats = [], []
        for start in range(0, h * w, _CHUNK):
            pixels = torch.arange(start, min(start + _CHUNK, h * w))
            probes = base.repeat(len(pixels), 1, 1, 1)
            probes[:, 0].view(len(pixels), h * w)[torch.arange(len(pixels)), pixels] += _DELTA
            # The base rides along in every chunk: a batch-dependent map would show it.
            out = self.apply(torch.cat([base, probes]), copy)
            resp = (out[1:] - out[:1]).flatten(1)
            tol = 8 * math.sqrt(2 * noise_var) + 1e-5 * float(out.abs().max()) + 1e-7
            deps.append((resp.abs() > tol).view(len(pixels), co, ho * wo).any(1))
            stats.append(torch.stack([resp.pow(2).sum(1), (resp < -tol).any(1).double()], 1))
        return torch.cat(deps), torch.cat(stats)

    def _from_dependencies(self, in_shape, out_shape, keyed, deterministic, noise_var,
                           linear_error, deps: list[Tensor], resps: list[Tensor]) -> Structure:
        c, h, w = in_shape
        co, ho, wo = out_shape
        reach = torch.stack(deps)  # (keys, H*W, Ho*Wo)
        same_grid = (ho, wo) == (h, w)
        eye = torch.eye(h * w, dtype=torch.bool)
        pointwise = same_grid and bool((reach <= eye).all())
        counts = reach.sum(2)
        hits = reach.sum(1)
        one_to_one = bool((counts == 1).all() and (hits <= 1).all())
        unit, unit_out, moves = self._unit(reach, (h, w), (ho, wo))
        found = True  # a unit: at worst the whole image
        invert = bool(any(bool(r[:, 1].any()) for r in resps)) and one_to_one
        rotate = False
        if one_to_one:
            rotate = self._moves_inside(reach, (h, w), unit)
        if one_to_one:
            matrix = "identity"
        elif linear_error < (0.05 if noise_var > 0 else 1e-3):
            matrix = "orthogonal" if self._norm_preserving(reach, resps, noise_var) else \
                "projection"
        else:
            matrix = "nonlinear"
        radius = -1
        if same_grid and not moves:
            rr, cc = torch.arange(h * w) // w, torch.arange(h * w) % w
            far = torch.maximum((rr[:, None] - rr[None, :]).abs(),
                                (cc[:, None] - cc[None, :]).abs())
            radius = int((far * reach.any(0)).max())
        global_table = pointwise and self._global_table(in_shape)
        mean, stage = self._noise_mean(in_shape, noise_var, linear_error)
        return Structure(in_shape, out_shape, keyed, deterministic, True, False, noise_var, mean,
                         stage, linear_error, pointwise, global_table, one_to_one, unit, unit_out,
                         found, "dataset" if moves else "none",
                         matrix, rotate, invert, radius, self.probes)

    def _regression(self, shape, copy: int, noise_var: float) -> tuple[Tensor, Tensor]:
        """As ``_impulses`` for an affine map under fresh noise: the map fitted by least squares
        on random images, which averages the noise out (impulse-sized responses)."""
        c, h, w = shape
        gen = torch.Generator().manual_seed(2 + copy)
        n = 2 * c * h * w + 64
        x = torch.rand(n, c, h, w, generator=gen)
        y = self.apply(x, copy).flatten(1)
        a = torch.cat([x.flatten(1).double(), torch.ones(n, 1, dtype=torch.float64)], 1)
        weight = torch.linalg.lstsq(a, y).solution[:-1]  # (C*H*W, Co*Ho*Wo)
        resp = weight[: h * w] * _DELTA  # channel 0, as an impulse of _DELTA would respond
        co = y.shape[1] // (h * w) if y.shape[1] % (h * w) == 0 else 1
        tol = 8 * math.sqrt(noise_var / (n * float(x.var()))) * _DELTA + 1e-7
        dep = (resp.abs() > tol).view(h * w, co, -1).any(1)
        return dep, torch.stack([resp.pow(2).sum(1), (resp < -tol).any(1).double()], 1)

    def _unit(self, reach: Tensor, size: tuple[int, int],
              out_size: tuple[int, int]) -> tuple[int, int, bool]:
        """The square block side whose blocks the map keeps whole, its disguised side, and whether
        blocks move: the largest such side when blocks move (a block permutation also moves
        every sub-block), else the smallest (blocks left in place stay in place when grouped)."""
        (h, w), (ho, wo) = size, out_size
        kept = []
        for k in range(1, min(h, w)):
            gh, gw = -(-h // k), -(-w // k)
            if ho % gh or wo % gw or ho // gh != wo // gw:
                continue
            ko = ho // gh
            rr, cc = torch.arange(h * w) // w, torch.arange(h * w) % w
            in_block = (rr // k) * gw + cc // k
            ro, cq = torch.arange(ho * wo) // wo, torch.arange(ho * wo) % wo
            out_block = (ro // ko) * gw + cq // ko
            ok, moves = True, False
            for r in reach:  # one own key at a time (a handful)
                blocks = torch.zeros(gh * gw, gh * gw, dtype=torch.long)
                i, o = r.nonzero(as_tuple=True)
                blocks.index_put_((in_block[i], out_block[o]), torch.ones_like(i),
                                  accumulate=True)
                touched = blocks > 0
                per_in = touched.sum(1)
                if (per_in > 1).any() or (touched.sum(0) > 1).any() or not per_in.any():
                    ok = False
                    break
                src = touched.float().argmax(1)
                live = per_in == 1
                moves = moves or bool((src[live] != torch.arange(gh * gw)[live]).any())
            if ok:
                kept.append((k, ko, moves))
        if not kept:
            return min(h, w), min(ho, wo), False
        return max(kept) if any(m for _, _, m in kept) else min(kept)

    @staticmethod
    def _moves_inside(reach: Tensor, size: tuple[int, int], k: int) -> bool:
        """Whether some pixel lands at another offset inside its block."""
        h, w = size
        dest = reach.float().argmax(2)  # (keys, H*W), one destination each
        offset_in = torch.stack([torch.arange(h * w) // w % k, torch.arange(h * w) % w % k])
        offset_out = torch.stack([dest // w % k, dest % w % k])
        return bool((offset_in[:, None] != offset_out).any())

    def _norm_preserving(self, reach: Tensor, resps: list[Tensor], noise_var: float) -> bool:
        """Each impulse's response has the impulse's norm (an orthogonal map), noise removed."""
        energy = resps[0][:, 0] / _DELTA**2
        live = reach[0].any(1)
        if not bool(live.any()):
            return False
        return abs(float(energy[live].median()) - 1.0) < 0.1

    def _global_table(self, shape) -> bool:
        """A pointwise map whose constant images stay constant: the same table everywhere."""
        levels = torch.linspace(0, 1, 9).view(-1, 1, 1, 1).expand(-1, *shape)
        out = self.apply(levels.contiguous())
        spread = out.flatten(2).std(2).max()
        return float(spread) <= 1e-4 * (float(out.abs().max()) + 1e-9)

    def _noise_mean(self, shape, noise_var: float, linear_error: float) -> tuple[float, str]:
        """Mean of fresh noise and whether it enters before a linear map or after it."""
        if noise_var <= 1e-12:
            return 0.0, "after"
        c, h, w = shape
        zero = self.apply(torch.zeros(64, c, h, w)).mean(0).flatten()
        if not self._is_linear_up_to_noise(linear_error, noise_var):
            return float(zero.mean()), "after"
        grey = (self.apply(torch.full((64, c, h, w), 0.5)).mean(0).flatten() - zero) / 0.5
        flat = float(zero.std()) <= 0.2 * abs(float(zero.mean())) + 1e-6
        if flat or float(grey.pow(2).sum()) < 1e-12:
            return float(zero.mean()), "after"
        # Noise n before a linear map L arrives as L n: its mean is mean(n) times L's response
        # to a constant image.
        return float(zero @ grey / grey.pow(2).sum()), "before"

    @staticmethod
    def _is_linear_up_to_noise(error: float, noise_var: float) -> bool:
        return error < 1e-3 or (noise_var > 0 and error < 1.0)

    def _fresh(self, in_shape, out_shape, keyed, deterministic, noise_var, linear_error,
               y: Tensor) -> Structure:
        """Units moved afresh per image: the multiset of per-block invariants survives."""
        c, h, w = in_shape
        x = self.images.double()
        if out_shape != in_shape:
            return self._opaque(in_shape, out_shape, mixing=False, keyed=keyed,
                                deterministic=deterministic, noise_var=noise_var,
                                linear_error=linear_error)
        tol = 0.05
        for k in range(min(h, w) - 1, 0, -1):
            if h % k or w % k:
                continue
            for matrix, inv in (("identity", _sorted_values), ("orthogonal", _singular_values)):
                a, b = inv(x, k), inv(y, k)
                err = float((a - b).pow(2).mean()) - noise_var * (1 if matrix == "identity" else
                                                                   k)
                if err <= tol**2 * float(a.pow(2).mean()):
                    return Structure(in_shape, out_shape, keyed, deterministic, False, False,
                                     noise_var, 0.0, "after", linear_error, False, False, False,
                                     k, k, True, "image", matrix, False, False, -1, self.probes)
        return self._opaque(in_shape, out_shape, mixing=False, keyed=keyed,
                            deterministic=deterministic, noise_var=noise_var,
                            linear_error=linear_error)


def _blocks(x: Tensor, k: int) -> Tensor:
    """(N, C, H, W) -> (N, P, C, k, k): every block with its channels together."""
    return to_blocks(x, k).transpose(1, 2)


def _sorted_values(x: Tensor, k: int) -> Tensor:
    """(N, P, C*k*k) the blocks' sorted values, blocks ordered by their sum: what survives
    moving whole blocks (and shuffling values inside them)."""
    v = _blocks(x, k).flatten(2).sort(2).values
    return torch.gather(v, 1, v.sum(2).argsort(1)[..., None].expand_as(v))


def _singular_values(x: Tensor, k: int) -> Tensor:
    """(N, P, C*k) the blocks' singular values, blocks ordered by energy: what survives moving
    whole blocks and multiplying each by an orthogonal matrix."""
    s = torch.linalg.svdvals(_blocks(x, k)).flatten(2)
    return torch.gather(s, 1, s.pow(2).sum(2).argsort(1)[..., None].expand_as(s))


def require_units(structure: Structure, defense: Defense, owner: str) -> None:
    """Raise NotApplicable unless probing found a block unit (or a keyless map to leave alone)."""
    if not structure.found and not defense.keyless:
        raise NotApplicable(f"{owner}: probing defense {defense.name!r} found no block structure "
                          "(no square unit of the image that its disguise keeps whole); this "
                          "attack needs a block-wise disguise")
