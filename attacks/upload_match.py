"""Upload matching: a candidate was a training member if its disguise is in the upload."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.attacks._common import sub_seed, within_budget
from disguisebench.api import (DEFENSE, MEMBERSHIP, ORACLE, PUBLIC, UPLOAD, Attack, Data, Defense,
                               NotApplicable, PluginError, ThreatView)
from disguisebench.registry import register


def nearest_distance(queries: Tensor, pool: Tensor, chunk: int = 4096) -> Tensor:
    """(n,) Euclidean distance from each query row to its nearest row of ``pool``, in chunks of
    the pool so the distance matrix stays small."""
    q = queries.flatten(1).double()
    best = torch.full((len(q),), float("inf"), dtype=torch.float64)
    for start in range(0, len(pool), chunk):
        part = pool[start:start + chunk].flatten(1).double()
        best = torch.minimum(best, torch.cdist(q, part).min(1).values)
    return best


@register("upload-match")
class UploadMatch(Attack):
    """Score each membership candidate by how close its disguise comes to a row of the upload.

    Threat: membership inference at every level, from the cloud's copy of the upload. The
    attacker disguises the plaintext candidates itself: under a key of its own (a clone of the
    defense fitted on public images; for a keyless defense that is the owner's disguise, so a
    member's disguise is a row of the upload), or, with the level-3 oracle, under the owner's key.
    Each candidate scores minus the distance to its nearest upload row; for a defense that
    makes several rows per image (InstaHide) the nearest of its rows counts. Design card of
    DisguiseBench (issue 17: the membership battery must catch an undisguised upload).

    Args:
        oracle: use the level-3 oracle where it is granted (else always the attacker's own key).
    """

    goal = MEMBERSHIP
    needs = frozenset({UPLOAD, DEFENSE})
    optional = frozenset({PUBLIC, ORACLE})

    def __init__(self, oracle: bool = True) -> None:
        self.oracle = oracle

    def validate(self) -> None:
        if not isinstance(self.oracle, bool):
            raise PluginError(f"{self.name}: oracle={self.oracle!r} must be true or false")

    def _run(self, view: ThreatView, *, seed: int) -> Tensor:
        candidates = Data(view.require("candidates"))
        view = within_budget(view, len(candidates))
        upload: Data = view.require(UPLOAD)
        defense: Defense = view.require(DEFENSE)
        if self.oracle and view.oracle is not None:
            disguised = view.oracle(candidates)
        else:
            fit_on = view.public.without_labels() if view.public is not None else candidates
            key = defense.clone().fit(fit_on, seed=sub_seed(seed, 0), public=fit_on)
            disguised = key.transform(candidates)
        if disguised.x.shape[1:] != upload.x.shape[1:]:
            raise NotApplicable(f"{self.name}: disguised candidates of shape "
                                f"{tuple(disguised.x.shape[1:])} cannot be matched against an "
                                f"upload of shape {tuple(upload.x.shape[1:])}")
        distance = nearest_distance(disguised.x, upload.x)
        # The nearest of every row made from a candidate (several for a mixing defense).
        first = disguised.sources()[:, 0]
        keep = first >= 0
        best = torch.full((len(candidates),), float("inf"), dtype=torch.float64)
        best.scatter_reduce_(0, first[keep], distance[keep], "amin")
        return -best.nan_to_num(posinf=torch.finfo(torch.float64).max)
