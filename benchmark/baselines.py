"""The chance level of a label attack: what the attacker achieves without the owner's model.

A label attack (class membership, a shadow-model probe) labels plaintext images of the owner.
Public data alone already labels most of them: a classifier of the task's architecture and recipe,
trained on the labelled public images and never touching the owner's model or the disguise, is
right on a share of the very same images. That share, measured in the same cell on the same
images, is the attack's chance; the attack's advantage is how far it gets beyond it
(docs/design.md, "Scoring"). The classifier depends only on the task and the seed, so it is
trained once per (task, seed) in a process and reused for every defense and attack.

Labelling the *targets* (``label_of = "targets"``) is no attack: the owner uploads the labels of
its training images at every level, so the cloud already holds them. Its chance is 1 and its
advantage always 0; the success rate stays in the record (the 2019 paper's visual
re-identification rate, kept for the reproduction).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn

from disguisebench.api import LABEL, Attack, Splits, Task
from disguisebench.scoring import Truth

log = logging.getLogger("disguisebench")

# Public-only classifiers trained in this process, by (task spec, seed, public set).
_MODELS: collections.OrderedDict[tuple, nn.Module] = collections.OrderedDict()
_MODELS_MAX = 4
_lock = threading.Lock()


def public_classifier(task: Task, splits: Splits, *, seed: int,
                      trainer: Callable[..., nn.Module] | None = None) -> nn.Module:
    """The task's model trained on the public images alone (cached per task and seed), by
    ``trainer(task, data, seed=..., num_classes=...)`` when given (the runner trains it in a
    process of its own), else by ``task.train``."""
    public = splits.public
    key = (json.dumps(task.spec(), sort_keys=True, default=str), seed, len(public),
           float(public.x.double().sum()))
    with _lock:  # trained once: a second caller waits for the first
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        log.debug("training the public-only label baseline of %s (seed %d)", task.name, seed)
        if trainer is None:
            model = task.clone().train(public, seed=seed, num_classes=splits.num_classes)
        else:
            model = trainer(task.clone(), public, seed=seed, num_classes=splits.num_classes)
        _MODELS[key] = model
        while len(_MODELS) > _MODELS_MAX:
            _MODELS.popitem(last=False)
    return model


def public_hits(task: Task, splits: Splits, images: Tensor, labels: Tensor, *,
                seed: int, trainer: Callable[..., nn.Module] | None = None) -> Tensor:
    """(n,) 1 where the public-only classifier labels ``images`` correctly, else 0."""
    model = public_classifier(task, splits, seed=seed, trainer=trainer)
    with torch.no_grad():
        predicted = task.predict(model, images).argmax(1).cpu()
    return (predicted == labels.cpu()).int()


def with_chance(truth: Truth, attack: Attack, task: Task, splits: Splits, *, seed: int,
                trainer: Callable[..., nn.Module] | None = None) -> Truth:
    """``truth`` with the chance a label attack is scored against (other goals: unchanged).

    The runner calls this once per attack record; ``seed`` is the cell's training seed, so the
    baseline is a fresh training run for every seed, like the owner's model.
    """
    if attack.goal != LABEL:
        return truth
    if attack.label_of == "targets":  # the cloud holds the targets' labels
        return dataclasses.replace(truth, chance_hits=torch.ones(len(truth.labels),
                                                                 dtype=torch.int))
    return dataclasses.replace(
        truth, chance_hits=public_hits(task, splits, truth.gallery, truth.labels, seed=seed,
                                       trainer=trainer))
