"""Helpers shared by several attacks: seeded training, own-key disguises, the pairs a level allows."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from disguisebench.api import Data, Defense, PluginError, Task, ThreatView

log = logging.getLogger("disguisebench")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Fix torch's global generator (weight init, dropout) to ``seed`` without leaking the change."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        yield


def sub_seed(seed: int, index: int) -> int:
    """The ``index``-th independent seed drawn from ``seed`` (own keys, shadow models, splits)."""
    gen = torch.Generator().manual_seed(seed)
    return int(torch.randint(0, 2**62, (index + 1,), generator=gen)[index])


def subsample(x: Any, limit: int, seed: int) -> Any:
    """At most ``limit`` rows of ``x`` (a tensor or Data), drawn by ``seed`` (all of them when
    ``limit`` is 0)."""
    if not limit or len(x) <= limit:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]]


def regularised_inverse(gram: Tensor, scale: float = 1e-9) -> Tensor:
    """Inverses of a batch of Gram matrices with a ridge of ``scale`` times their mean diagonal."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    size = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
    return torch.linalg.inv(gram + scale * size[..., None, None] * eye)


def own_key(defense: Defense, data: Data, *, seed: int) -> Defense:
    """A fresh copy of the defense keyed by the attacker (the view's own copy stays unfitted)."""
    return defense.clone().fit(data, seed=seed, public=data)


def per_source(disguised: Data, n: int) -> Tensor:
    """(n, C, H, W) one disguised row per plaintext input of ``disguised``'s batch of ``n``: the
    first row made from it. A mixing defense (InstaHide) returns T rows per input, its own first;
    ``Data.source`` says which, so an attack never has to assume one row per input."""
    first = disguised.sources()[:, 0]
    rows = torch.full((n,), len(disguised), dtype=torch.long)
    keep = first >= 0
    rows.scatter_reduce_(0, first[keep], torch.arange(len(disguised))[keep], "amin")
    if bool((rows == len(disguised)).any()):
        raise PluginError(f"{int((rows == len(disguised)).sum())} of {n} inputs have no "
                          "disguised row made from them")
    return disguised.x[rows]


def pair_up(plain: Data, disguised: Data) -> tuple[Tensor, Tensor]:
    """(plaintext, disguised) image pairs, one row per disguised image and its first original."""
    first = disguised.sources()[:, 0]
    keep = first >= 0
    return plain.x[first[keep]], disguised.x[keep]


def within_budget(view: ThreatView, n: int) -> ThreatView:
    """``view``, without its oracle when the query budget does not cover ``n`` images (an attack
    that needs whole sets through the oracle then takes its own-key path instead)."""
    if view.oracle is None or view.queries is None or n <= view.queries:
        return view
    return dataclasses.replace(view, oracle=None)


def owner_pairs(view: ThreatView) -> list[tuple[Tensor, Tensor]]:
    """Pairs under the owner's key: the known pairs (level 2) and oracle disguises of the public
    images (level 3, the first ``view.queries`` of them under a query budget), each where
    granted."""
    out = []
    if view.known_pairs is not None:
        out.append(pair_up(*view.known_pairs))
    if view.oracle is not None and view.public is not None and view.queries != 0:
        public = view.public.without_labels()
        if view.queries is not None:
            public = public[:view.queries]
        out.append(pair_up(public, view.oracle(public)))
    return out


def training_pairs(view: ThreatView, *, seed: int, keys: int) -> tuple[Tensor, Tensor]:
    """The (plaintext, disguised) pairs a level allows an inversion or matching attack to learn on.

    Owner-key pairs when the level grants any (known pairs, oracle disguises of public images);
    otherwise, or when the defense has no key (so any key is the owner's), the public images
    disguised under ``keys`` keys of the attacker's own.
    """
    pairs = owner_pairs(view)
    defense = view.defense
    if defense is not None and (not pairs or defense.keyless) and view.public is not None:
        public = view.public.without_labels()
        for i in range(1 if defense.keyless else keys):
            pairs.append(pair_up(public, own_key(defense, public, seed=sub_seed(seed, i))
                                 .transform(public)))
    if not pairs:
        raise PluginError("no training pairs: the view grants neither pairs nor defense and public")
    shapes = {tuple(d.shape[1:]) for _, d in pairs}
    if len(shapes) > 1:
        raise PluginError(f"disguised pairs of different shapes {sorted(shapes)}")
    plain = torch.cat([p for p, _ in pairs])
    disguised = torch.cat([d for _, d in pairs])
    log.debug("%s: %d training pairs", view.level, len(plain))
    return plain, disguised


# Models trained by attacks in this process, by what determines them (see ``train_model``).
_TRAINED: collections.OrderedDict[str, nn.Module] = collections.OrderedDict()
_TRAINED_MAX = 8


def _fingerprint(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            part = part.detach().cpu().contiguous()
            digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
            digest.update(part.view(torch.uint8).numpy().tobytes() if part.numel() else b"")
        else:
            digest.update(repr(part).encode())
        digest.update(b"|")
    return digest.hexdigest()


def train_model(task: Task, data: Data, *, seed: int, epochs: int, num_classes: int) -> nn.Module:
    """Train the task's architecture with its recipe for ``epochs`` epochs (0 keeps the task's).

    Training is deterministic given the recipe, the data and the seed, so a model this process
    already trained on exactly the same inputs is returned again instead of retrained (the
    plaintext model of ``visual-reid``, say, is the same for every defense of a task). Callers
    must not modify the model they get.
    """
    task = task.clone()
    if epochs:
        task.epochs = epochs
    key = _fingerprint(json.dumps(task.spec(), sort_keys=True, default=str), data.x, data.y, seed,
                       num_classes)
    if key in _TRAINED:
        _TRAINED.move_to_end(key)
        log.debug("reusing a model this process trained on the same data and seed")
        return _TRAINED[key]
    model = task.train(data, seed=seed, num_classes=num_classes)
    _TRAINED[key] = model
    while len(_TRAINED) > _TRAINED_MAX:
        _TRAINED.popitem(last=False)
    return model


@torch.no_grad()
def log_probs(task: Task, model: nn.Module, x: Tensor) -> Tensor:
    """(N, K) log class probabilities of ``model`` on ``x`` (clamped, so always finite)."""
    return task.predict(model, x).clamp_min(1e-12).log()


def target_rows(view: ThreatView) -> Tensor:
    """(n,) row of each target in ``view.upload`` (the targets are rows of the upload).

    Rows are compared by their exact bytes through an integer fingerprint, so no float
    arithmetic can blur two images together; a target not found raises.
    """
    targets, upload = view.targets, view.upload
    if targets is None or upload is None:
        raise PluginError("target_rows needs both the targets and the upload")
    if targets.x.shape[1:] != upload.x.shape[1:]:
        raise PluginError(f"targets of shape {tuple(targets.x.shape[1:])} are not rows of an "
                          f"upload of shape {tuple(upload.x.shape[1:])}")

    def fingerprint(x: Tensor) -> Tensor:
        bits = x.float().contiguous().view(torch.int32).flatten(1).long()
        mult = torch.arange(1, bits.shape[1] + 1, dtype=torch.long) * 2654435761 + 97
        return (bits * mult).sum(1)  # wraps modulo 2^64

    keys = fingerprint(upload.x)
    order = torch.argsort(keys)
    wanted = fingerprint(targets.x)
    pos = torch.searchsorted(keys[order], wanted).clamp_max(len(keys) - 1)
    rows = order[pos]
    same = (upload.x[rows].flatten(1) == targets.x.flatten(1)).all(1)
    if not bool(same.all()):
        raise PluginError(f"{int((~same).sum())} targets are not rows of the upload")
    return rows
