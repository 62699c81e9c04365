"""Auto: the parameter-free ensemble every defense faces, adaptive to what probing reveals."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disguisebench.attacks._common import _fingerprint, own_key, pair_up, seeded, sub_seed, subsample
from disguisebench.attacks._discovery import Structure, discover
from disguisebench.attacks._ensemble import (distances, fit_forward, from_nibbles, is_8bit,
                                             isometry_matches, level_substitution, mode_silhouette,
                                             mutual_rate, nibbles, pair_geometry,
                                             position_permutation, quantile_inverse)
from disguisebench.attacks.template_match import FEATURES
from disguisebench.attacks.template_match import features as template_features
from disguisebench.api import (
    DEFENSE, GALLERY, KNOWN_PAIRS, ORACLE, PUBLIC, REIDENTIFY, TARGETS, UPLOAD, Attack, Data,
    Defense, Outcome, PluginError, ThreatView, check_number)
from disguisebench.registry import register

log = logging.getLogger("disguisebench")

# Every component, in the order the diagnostic ``winner`` numbers them.
COMPONENTS = ("pairs-forward", "block-regression", "oracle-gallery", "template", "quantile",
              "level-table", "unit-permutation", "moment-inversion", "jigsaw", "inversion-net",
              "pair-geometry", "silhouette", "isometry", "plane-permutation")
_LEVEL_1_RESULTS: collections.OrderedDict[str, list] = collections.OrderedDict()


def _per_gallery(dist: Tensor, owner: Tensor, size: int) -> Tensor:
    """(targets, gallery) distances from distances to disguised rows made from gallery images
    ``owner`` (several rows per image for a mixing defense): the nearest row of each image."""
    out = torch.full((len(dist), size), torch.inf, dtype=dist.dtype)
    keep = owner >= 0
    return out.scatter_reduce_(1, owner[keep].expand(len(dist), -1), dist[:, keep], "amin")


class _Decoder(nn.Module):
    """A small convolutional decoder from disguised to plaintext images; it works at the
    disguised resolution (cheap when a defense shrinks the image) and resamples its output to
    the plaintext grid."""

    def __init__(self, channels_in: int, channels_out: int, size: tuple[int, int],
                 width: int) -> None:
        super().__init__()
        self.size = size
        self.net = nn.Sequential(
            nn.Conv2d(channels_in, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels_out, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.net(x)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


@register("auto")
class Auto(Attack):
    """Run a standard ensemble, adapted to the structure probing reveals, and keep the best.

    Threat: re-identification at every level, without knowledge of the scheme. The defense's
    keyless clone is probed under the attacker's own keys (attacks._discovery); then, under a
    fixed budget, the components the level allows run in order, strongest knowledge first, and
    the first whose confidence reaches ``stop_at`` ends the run; the costly ciphertext-only
    components run at level 1 only (privacy at a level is never above that at a lower one).
    Level 3 (chosen plaintext): system identification from at most ``queries`` oracle queries
    (every grey level as a constant image, then public images) fitted in the discovered class,
    and the gallery disguised through the oracle. Level 2 (known pairs): forward maps (a global
    value table, a value table per position reading the input position that explains it, an
    affine map) chosen on held-out pairs, the pattern of distances to the known pairs (kept by
    any isometry), and per-block least squares. Level 1 (ciphertext only): template matching
    against the gallery disguised under an own key (pixels, and features invariant to the
    discovered moves); exact recurrences of the distances between targets among the
    distances between gallery images (kept by any isometry); the silhouette of values equal to their position's most frequent value
    (any value map per position keeps it); quantile matching of the upload against public data
    per position; frequency analysis of grey levels; recovery of a shared permutation of the
    discovered unit, or of 4-bit halves of 8-bit values, from position statistics; moment inversion of block-linear maps; jigsaw
    solving; and a decoder trained on public images disguised under ``keys`` own keys, which can
    learn only what is invariant to the key. Confidence is the fraction of targets whose nearest
    gallery image has them as its nearest target (no truth, no key). Reports ``winner`` (index
    into COMPONENTS), its ``confidence``, ``queries`` and ``pairs`` used, ``held_out`` (the
    chosen forward model's re-identification of held-out pairs) and ``pairs_needed`` (the fewest
    pairs with which it does as well), components that ``failed``
    (each is skipped, the others run), the confidence of each component run and what discovery
    found (``found_*``). After AutoAttack: Croce & Hein, "Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks", ICML 2020.

    Args:
        queries: oracle queries for system identification at level 3.
        stop_at: confidence that ends the run early.
        keys: own keys whose disguises train the inversion decoder (at least 32).
        steps: gradient steps of the inversion decoder.
        refine_steps: pairwise swaps refining a recovered unit permutation.
        budget_s: wall-clock seconds after which no further component starts.
    """

    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY, DEFENSE, PUBLIC})
    optional = frozenset({UPLOAD, KNOWN_PAIRS, ORACLE})
    budget = ("budget_s",)  # scaled by a plan's compute

    def __init__(self, queries: int = 1024, stop_at: float = 0.95, keys: int = 32,
                 steps: int = 300, refine_steps: int = 100, budget_s: float = 60.0) -> None:
        self.queries = queries
        self.stop_at = stop_at
        self.keys = keys
        self.steps = steps
        self.refine_steps = refine_steps
        self.budget_s = budget_s

    def validate(self) -> None:
        check_number(self.name, "queries", self.queries, kind=int, low=0)
        check_number(self.name, "stop_at", self.stop_at, low=0, high=1)
        check_number(self.name, "keys", self.keys, kind=int, low=1)
        check_number(self.name, "steps", self.steps, kind=int, low=0)
        check_number(self.name, "refine_steps", self.refine_steps, kind=int, low=0)
        check_number(self.name, "budget_s", self.budget_s, low=0)

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        start = time.perf_counter()
        defense: Defense = view.require(DEFENSE)
        public = view.require(PUBLIC)
        found = discover(defense, public.x)
        self.used_ = {"queries": 0.0, "pairs": 0.0, "failed": 0.0}
        best: tuple[float, int, Tensor] | None = None
        confidences: dict[str, float] = {}
        for name, component in self._plan(view):
            if best is not None and time.perf_counter() - start > self.budget_s:
                log.info("%s: budget of %.0f s spent; %s not run", self.name, self.budget_s, name)
                break
            dist = self._attempt(name, component, view, found, seed)
            if dist is None:
                continue
            conf = mutual_rate(dist)
            confidences[name] = conf
            log.info("%s: %s confidence %.3f", self.name, name, conf)
            if best is None or conf > best[0]:
                best = (conf, COMPONENTS.index(name), dist)
            if conf >= self.stop_at:
                break
        if best is None:
            raise PluginError(f"{self.name}: no component applies to defense {defense.name!r}")
        conf, winner, dist = best
        report = {"winner": float(winner), "confidence": conf, **self.used_,
                  "components": float(len(confidences)),
                  "seconds": time.perf_counter() - start,
                  **{f"confidence_{n.replace('-', '_')}": c
                     for n, c in confidences.items()},
                  **{f"found_{k}": v for k, v in found.summary().items()}}
        log.info("%s: %s won (%.3f)", self.name, COMPONENTS[winner], conf)
        return Outcome(dist.argmin(1), report)

    def _attempt(self, name: str, component: Callable, view: ThreatView, found: Structure,
                 seed: int) -> Tensor | None:
        """One component's (targets, gallery) distances, or None where it does not apply."""
        level1 = name not in ("pairs-forward", "pair-geometry", "block-regression",
                              "oracle-gallery")
        key = _fingerprint(name, json.dumps(view.defense.spec(), sort_keys=True, default=str),
                           view.targets.x, view.gallery, seed, repr(self.get_params())) \
            if level1 else None
        if key is not None and key in _LEVEL_1_RESULTS:
            return _LEVEL_1_RESULTS[key][0]
        try:
            dist = component(view, found, seed)
        except (PluginError, RuntimeError, ValueError) as err:
            # The component's assumptions do not hold for this defense (a shape it cannot cut,
            # a singular fit): the others still run, and the report counts the failure.
            log.warning("%s: %s failed: %s", self.name, name, err)
            self.used_["failed"] += 1.0
            dist = None
        if dist is not None and dist.shape != (len(view.targets), len(view.gallery)):
            raise PluginError(f"{self.name}: {name} gave distances of shape {tuple(dist.shape)}")
        if key is not None:
            _LEVEL_1_RESULTS[key] = [dist]
            while len(_LEVEL_1_RESULTS) > 64:
                _LEVEL_1_RESULTS.popitem(last=False)
        return dist

    def _plan(self, view: ThreatView) -> list[tuple[str, Callable]]:
        steps: list[tuple[str, Callable]] = []
        if view.known_pairs is not None or view.oracle is not None:
            steps += [("pairs-forward", self._pairs_forward),
                      ("pair-geometry", self._pair_geometry),
                      ("block-regression", self._block_regression)]
        if view.oracle is not None:
            steps.append(("oracle-gallery", self._oracle_gallery))
        steps += [("template", self._template), ("isometry", self._isometry),
                  ("silhouette", self._silhouette),
                  ("quantile", self._quantile), ("level-table", self._level_table)]
        # The costly ciphertext-only components run at level 1 alone: privacy at a level is
        # never above the privacy at a lower one, so their record there counts for every level.
        if view.known_pairs is None and view.oracle is None:
            steps += [("unit-permutation", self._unit_permutation),
                      ("plane-permutation", self._plane_permutation),
                      ("moment-inversion", self._moment_inversion), ("jigsaw", self._jigsaw),
                      ("inversion-net", self._inversion_net)]
        return steps

    # Level 3 and 2: the owner's key seen through pairs.

    def _probes(self, view: ThreatView, found: Structure) -> tuple[Tensor, Tensor] | None:
        """Designed oracle probes within the query budget: every grey level as a constant
        image, then public images."""
        budget = self.queries if view.queries is None else min(
            self.queries, view.queries - int(self.used_["queries"]))
        if view.oracle is None or budget <= 0:
            return None
        c, h, w = found.in_shape
        levels = torch.linspace(0, 1, min(256, budget)).view(-1, 1, 1, 1).expand(-1, c, h, w)
        rest = max(budget - len(levels), 0)
        plain = torch.cat([levels, subsample(view.public.x, rest, 7)[:rest]]).contiguous()
        out = view.oracle(Data(plain))
        self.used_["queries"] += float(len(plain))
        return pair_up(Data(plain), out)

    def _pairs(self, view: ThreatView, found: Structure) -> tuple[Tensor, Tensor] | None:
        pairs = []
        if view.known_pairs is not None:
            pairs.append(pair_up(*view.known_pairs))
        probes = self._probes(view, found)
        if probes is not None:
            pairs.append(probes)
        if not pairs:
            return None
        return torch.cat([p for p, _ in pairs]), torch.cat([d for _, d in pairs])

    def _pairs_forward(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        pairs = self._pairs(view, found)
        if pairs is None:
            return None
        plain, disguised = pairs
        if disguised.shape[1:] != view.targets.x.shape[1:]:
            return None
        model, info = fit_forward(plain, disguised, found, seed=seed)
        if model is None:
            return None
        self.used_["pairs"] = float(len(plain))
        self.used_.update(info)
        simulated = model.predict(view.gallery).reshape(len(view.gallery), -1)
        return distances(view.targets.x, simulated)

    def _pair_geometry(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if view.known_pairs is None:
            return None
        plain, disguised = pair_up(*view.known_pairs)
        if disguised.shape[1:] != view.targets.x.shape[1:]:
            return None
        return pair_geometry(view.targets.x, view.gallery, plain, disguised)

    def _block_regression(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if view.known_pairs is None or not (found.linear or found.noise_var > 0):
            return None
        from disguisebench.attacks.known_pair_regression import KnownPairRegression

        # The known pairs only: oracle queries are spent within the budget elsewhere.
        recon = KnownPairRegression().run(dataclasses.replace(view, oracle=None),
                                          seed=seed).prediction
        return distances(recon, view.gallery)

    def _oracle_gallery(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        gallery = Data(view.gallery)
        out = view.oracle(gallery)
        self.used_["queries"] += float(len(gallery))
        return self._match(view, found, out)

    # Level 1: the ciphertext, public data and the algorithm.

    def _template(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        gallery = Data(view.gallery)
        return self._match(view, found, own_key(view.defense, gallery, seed=seed)
                           .transform(gallery))

    @staticmethod
    def _match(view: ThreatView, found: Structure, out: Data) -> Tensor | None:
        """Targets against a disguise of the gallery, on whichever template-match feature
        (pixels, or one that per-image moves leave unchanged) is the most confident."""
        gallery = view.gallery
        side = min(found.in_shape[1:])
        block = found.unit_out if found.found and found.unit < side else None
        owner = out.sources()[:, 0]
        best, best_conf = None, -1.0
        for kind in FEATURES:
            a = template_features(view.targets.x, kind, block)
            b = template_features(out.x, kind, block)
            if a is None or b is None or a.shape[1] != b.shape[1]:
                continue
            dist = _per_gallery(distances(a, b), owner, len(gallery))
            conf = mutual_rate(dist)
            if conf > best_conf:
                best, best_conf = dist, conf
        return best

    def _upload(self, view: ThreatView) -> Tensor:
        return (view.upload if view.upload is not None else view.targets).x

    def _isometry(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if len(view.targets) < 3 or len(view.gallery) < 3:
            return None
        return isometry_matches(view.targets.x, view.gallery)

    def _silhouette(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if found.out_shape != found.in_shape or not found.shared:
            return None
        return distances(mode_silhouette(view.targets.x, self._upload(view)),
                         mode_silhouette(view.gallery, view.public.x))

    def _quantile(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if found.out_shape != found.in_shape or not found.shared:
            return None
        recon = quantile_inverse(view.targets.x, self._upload(view), view.public.x)
        return distances(recon, view.gallery)

    def _level_table(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if not found.pointwise:
            return None
        recon = level_substitution(view.targets.x, self._upload(view), view.public.x)
        return None if recon is None else distances(recon, view.gallery)

    def _unit_permutation(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if found.scope == "none" or not found.found:
            return None
        if found.unit == 1 and found.in_shape == found.out_shape and found.scope == "dataset":
            return self._position_permutation(view, seed)
        from disguisebench.attacks.permutation_recovery import PermutationRecovery

        dist, _ = PermutationRecovery(refine_steps=self.refine_steps).distances(view, seed=seed)
        return dist

    def _position_permutation(self, view: ThreatView, seed: int) -> Tensor:
        """Single positions permuted by one key: the permutation from position statistics of
        the values themselves, or of the silhouettes (when values are also mapped), the better
        by confidence."""
        upload = subsample(self._upload(view), 3000, seed)
        public, targets, gallery = view.public.x, view.targets.x, view.gallery
        views = [(upload, public, targets, gallery),
                 tuple(mode_silhouette(x, ref) for x, ref in
                       ((upload, upload), (public, public), (targets, upload),
                        (gallery, public)))]
        best, best_conf = None, -1.0
        for up, pub, tar, gal in views:
            dist = self._unpermute(up, pub, tar.flatten(1).double(), lambda t: distances(t, gal))
            conf = mutual_rate(dist)
            if conf > best_conf:
                best, best_conf = dist, conf
        return best

    def _unpermute(self, up: Tensor, pub: Tensor, tar: Tensor,
                   score: Callable[[Tensor], Tensor]) -> Tensor:
        """Targets' distances to the gallery once a permutation of their values' positions,
        recovered from statistics of the upload and public data, is undone; the swaps stop
        as soon as the confidence reaches ``stop_at``."""
        def place(src: Tensor) -> Tensor:
            out = torch.empty_like(tar)
            out[:, src] = tar
            return out

        src = position_permutation(up, pub, steps=self.refine_steps,
                                   good_enough=lambda s: mutual_rate(score(place(s)))
                                   >= self.stop_at)
        return score(place(src))

    def _plane_permutation(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        """8-bit values cut into 4-bit halves that a key moves to other positions and may
        negate (15 - v), as learnable image encryption does: the halves' positions are
        recovered like pixels', after flipping each disguised half whose most frequent value
        is the negation of public halves' most frequent value."""
        upload = subsample(self._upload(view), 3000, seed)
        if found.in_shape != found.out_shape or found.linear or not found.keyed or \
                not found.shared or not is_8bit(upload):
            return None
        up, pub, tar = nibbles(upload), nibbles(view.public.x), nibbles(view.targets.x)
        common = int(pub.flatten().mode().values)
        flip = up.mode(0).values == 15 - common
        up, tar = torch.where(flip, 15 - up, up), torch.where(flip, 15 - tar, tar)
        return self._unpermute(up, pub, tar,
                               lambda t: distances(from_nibbles(t), view.gallery))

    def _moment_inversion(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if found.matrix not in ("orthogonal", "projection") or not found.found:
            return None
        from disguisebench.attacks.rmt_moment_attack import RMTMomentAttack

        recon = RMTMomentAttack(refine_steps=self.refine_steps).run(view, seed=seed).prediction
        return distances(recon, view.gallery)

    def _jigsaw(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        if found.scope == "none" or found.matrix != "identity" or found.unit < 2:
            return None
        from disguisebench.attacks.jigsaw import Jigsaw

        return distances(Jigsaw().run(view, seed=seed).prediction, view.gallery)

    def _inversion_net(self, view: ThreatView, found: Structure, seed: int) -> Tensor | None:
        """A decoder trained on public images disguised under many own keys."""
        if not self.steps:
            return None
        public = view.public.without_labels()
        per_key = max(len(public) // self.keys, 16)
        plain, disguised = [], []
        for i in range(self.keys):
            part = subsample(public, per_key, sub_seed(seed, 1000 + i))
            out = own_key(view.defense, part, seed=sub_seed(seed, i)).transform(part)
            p, d = pair_up(part, out)
            plain.append(p)
            disguised.append(d)
        plain, disguised = torch.cat(plain), torch.cat(disguised)
        targets = view.targets.x
        if disguised.shape[1:] != targets.shape[1:]:
            return None
        # Standardise the disguised values (a defense may output any real numbers).
        shift, scale = disguised.mean(), disguised.std().clamp_min(1e-6)
        gen = torch.Generator().manual_seed(seed)
        with seeded(seed):
            net = _Decoder(disguised.shape[1], plain.shape[1], tuple(plain.shape[-2:]), 16)
            opt = torch.optim.Adam(net.parameters(), lr=2e-3)
            for _ in range(self.steps):
                idx = torch.randint(0, len(plain), (32,), generator=gen)
                loss = F.mse_loss(net((disguised[idx] - shift) / scale), plain[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            recon = net((targets - shift) / scale)
        return distances(recon, view.gallery)
