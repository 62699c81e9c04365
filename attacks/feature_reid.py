"""Feature re-identification: a contrastive embedding shared by disguised images and their originals."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disguisebench.attacks._common import seeded, training_pairs
from disguisebench.api import (DEFENSE, GALLERY, KNOWN_PAIRS, ORACLE, PUBLIC, REIDENTIFY, TARGETS,
                               Attack, ThreatView, check_choice, check_number)
from disguisebench.registry import register

log = logging.getLogger("disguisebench")


class Encoder(nn.Module):
    """Standardise, flatten, one hidden layer, unit-norm embedding; global, so a block
    permutation is as learnable as a local filter."""

    def __init__(self, data: Tensor, width: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", data.mean())
        self.register_buffer("std", data.std().clamp_min(1e-6))
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(data[0].numel(), width), nn.ReLU(),
                                 nn.Linear(width, dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net((x - self.mean) / self.std), dim=1)


@register("feature-reid")
class FeatureReID(Attack):
    """Re-identify disguised targets in the gallery through an embedding learned contrastively.

    Threat: re-identification at every level. Two encoders, one for disguised and one for
    plaintext images, are trained with a symmetric InfoNCE loss so that a disguised image and its
    original land close, on the pairs the level allows (the public images under the attacker's own
    keys at level 1, known pairs at level 2, oracle disguises of the public images at level 3);
    targets are then matched to gallery images by cosine similarity. Design card of
    DisguiseBench; InfoNCE from van den Oord, Li & Vinyals, "Representation Learning with
    Contrastive Predictive Coding", 2018.

    Args:
        steps: gradient steps.
        keys: attacker keys whose disguises of the public images train the encoders at level 1.
        match: "assignment" (one-to-one, scipy's linear_sum_assignment) or "nearest".
        width: hidden units of each encoder.
        dim: embedding dimension.
        batch_size: pairs per step (the other pairs of a batch are the negatives).
        temperature: InfoNCE temperature.
        lr: learning rate (Adam).
    """

    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY})
    optional = frozenset({DEFENSE, PUBLIC, KNOWN_PAIRS, ORACLE})
    budget = ("steps",)  # scaled by a plan's compute

    def __init__(self, steps: int = 300, keys: int = 4, match: str = "assignment",
                 width: int = 256, dim: int = 64, batch_size: int = 128,
                 temperature: float = 0.1, lr: float = 1e-3) -> None:
        self.steps = steps
        self.keys = keys
        self.match = match
        self.width = width
        self.dim = dim
        self.batch_size = batch_size
        self.temperature = temperature
        self.lr = lr

    def validate(self) -> None:
        check_number(self.name, "steps", self.steps, kind=int, low=1)
        check_number(self.name, "keys", self.keys, kind=int, low=1)
        check_choice(self.name, "match", self.match, ("assignment", "nearest"))
        check_number(self.name, "width", self.width, kind=int, low=1)
        check_number(self.name, "dim", self.dim, kind=int, low=1)
        check_number(self.name, "batch_size", self.batch_size, kind=int, low=2)
        check_number(self.name, "temperature", self.temperature, low=1e-6)
        check_number(self.name, "lr", self.lr, low=0)

    def _run(self, view: ThreatView, *, seed: int) -> Tensor:
        plain, disguised = training_pairs(view, seed=seed, keys=self.keys)
        gen = torch.Generator().manual_seed(seed)
        batch = min(self.batch_size, len(plain))
        with seeded(seed):
            enc_d = Encoder(disguised, self.width, self.dim)
            enc_p = Encoder(plain, self.width, self.dim)
            params = [*enc_d.parameters(), *enc_p.parameters()]
            opt = torch.optim.Adam(params, lr=self.lr)
            labels = torch.arange(batch)
            for _ in range(self.steps):
                idx = torch.randperm(len(plain), generator=gen)[:batch]
                logits = enc_d(disguised[idx]) @ enc_p(plain[idx]).T / self.temperature
                loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        log.debug("%s: InfoNCE loss %.3f after %d steps", self.name, loss.item(), self.steps)
        with torch.no_grad():
            similarity = enc_d(view.require(TARGETS).x) @ enc_p(view.require(GALLERY)).T
        if self.match == "nearest" or similarity.shape[0] > similarity.shape[1]:
            return similarity.argmax(1)
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(similarity.double().numpy(), maximize=True)
        out = torch.empty(similarity.shape[0], dtype=torch.long)
        out[torch.as_tensor(rows)] = torch.as_tensor(cols)
        return out
