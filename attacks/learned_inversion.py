"""Learned inversion: a decoder from disguised to plaintext images, trained on the pairs a level allows."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disguisebench.attacks._common import seeded, training_pairs
from disguisebench.api import (DEFENSE, KNOWN_PAIRS, ORACLE, PUBLIC, RECONSTRUCT, TARGETS, Attack,
                               PluginError, ThreatView, check_number)
from disguisebench.registry import register

log = logging.getLogger("disguisebench")


class Ridge:
    """Linear least squares from flattened disguised images to flattened plaintext, with an
    intercept and a ridge penalty relative to the mean eigenvalue of the inputs' Gram matrix;
    solved in the dual when there are fewer pairs than input dimensions."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def fit(self, d: Tensor, p: Tensor) -> Ridge:
        d, p = d.flatten(1).double(), p.flatten(1).double()
        self.d_mean_, self.p_mean_ = d.mean(0), p.mean(0)
        d, p = d - self.d_mean_, p - self.p_mean_
        n, dim = d.shape
        lam = self.penalty * max(float((d * d).sum()) / dim, 1e-12)
        if n < dim:
            self.basis_ = d
            self.weight_ = torch.linalg.solve(d @ d.T + lam * torch.eye(n, dtype=d.dtype), p)
        else:
            self.basis_ = None
            self.weight_ = torch.linalg.solve(d.T @ d + lam * torch.eye(dim, dtype=d.dtype), d.T @ p)
        return self

    def predict(self, d: Tensor) -> Tensor:
        d = d.flatten(1).double() - self.d_mean_
        if self.basis_ is not None:
            d = d @ self.basis_.T
        return (d @ self.weight_ + self.p_mean_).float()


class Refiner(nn.Module):
    """A small residual convolutional decoder polishing the linear estimate."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


@register("learned-inversion")
class LearnedInversion(Attack):
    """Reconstruct disguised targets with a decoder trained from disguised to plaintext images.

    Threat: reconstruction at every level, on the pairs the level allows: the public images
    disguised under the attacker's own keys (level 1; exact for keyless defenses, mismatched for
    keyed ones), the owner's known pairs (level 2), and oracle disguises of the public images
    (level 3). The decoder is a closed-form ridge regression over whole images (which undoes any
    linear disguise, block permutations included, once pairs outnumber pixels) followed by a
    small convolutional refiner. Design card of DisguiseBench; learned inversion as in McPherson,
    Shokri & Shmatikov, "Defeating Image Obfuscation with Deep Learning", 2016.

    Args:
        steps: gradient steps of the convolutional refiner (0: the linear stage alone).
        keys: attacker keys whose disguises of the public images train the decoder at level 1.
        penalty: ridge penalty, relative to the mean input energy.
        width: channels of the refiner's hidden layers.
        batch_size: refiner batch size.
        lr: refiner learning rate (Adam).
    """

    goal = RECONSTRUCT
    needs = frozenset({TARGETS})
    optional = frozenset({DEFENSE, PUBLIC, KNOWN_PAIRS, ORACLE})
    budget = ("steps",)  # scaled by a plan's compute

    def __init__(self, steps: int = 150, keys: int = 2, penalty: float = 1e-3, width: int = 16,
                 batch_size: int = 32, lr: float = 3e-3) -> None:
        self.steps = steps
        self.keys = keys
        self.penalty = penalty
        self.width = width
        self.batch_size = batch_size
        self.lr = lr

    def validate(self) -> None:
        check_number(self.name, "steps", self.steps, kind=int, low=0)
        check_number(self.name, "keys", self.keys, kind=int, low=1)
        check_number(self.name, "penalty", self.penalty, low=0)
        check_number(self.name, "width", self.width, kind=int, low=1)
        check_number(self.name, "batch_size", self.batch_size, kind=int, low=1)
        check_number(self.name, "lr", self.lr, low=0)

    def _run(self, view: ThreatView, *, seed: int) -> Tensor:
        targets = view.require(TARGETS).x
        plain, disguised = training_pairs(view, seed=seed, keys=self.keys)
        if tuple(disguised.shape[1:]) != tuple(targets.shape[1:]):
            raise PluginError(f"{self.name}: training disguises have shape {tuple(disguised.shape[1:])}"
                              f", the targets {tuple(targets.shape[1:])}")
        linear = Ridge(self.penalty).fit(disguised, plain)
        shape = plain.shape[1:]
        recon = linear.predict(targets).reshape(-1, *shape)
        if self.steps:
            estimate = linear.predict(disguised).reshape(-1, *shape)
            recon = self._refine(estimate, plain, recon, seed)
        return recon.clamp(0, 1)

    def _refine(self, estimate: Tensor, plain: Tensor, recon: Tensor, seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        with seeded(seed):
            net = Refiner(plain.shape[1], self.width)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            for _ in range(self.steps):
                idx = torch.randint(0, len(plain), (self.batch_size,), generator=gen)
                loss = F.mse_loss(net(estimate[idx]), plain[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        log.debug("%s: refiner loss %.4f after %d steps", self.name, loss.item(), self.steps)
        net.eval()
        with torch.no_grad():
            return net(recon)
