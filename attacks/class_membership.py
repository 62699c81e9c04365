"""Class membership: what the model trained on disguised data says about plaintext images."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from disguisebench.attacks._common import sub_seed, train_model
from disguisebench.api import (
    DEFENSE, GALLERY, LABEL, MODEL, PUBLIC, Attack, Data, NotApplicable, Outcome, PluginError,
    ThreatView, check_choice, check_number)
from disguisebench.registry import register


def confusion(truth: Tensor, predicted: Tensor, k: int) -> Tensor:
    """(k, k) counts: row = true class, column = predicted label."""
    return torch.bincount(truth * k + predicted, minlength=k * k).reshape(k, k).double()


def spread(counts: Tensor) -> tuple[float, float]:
    """Mean over classes of the entropy (bits) and the Fano factor (variance / mean over the k
    bins) of each class's predicted-label histogram; concentrated predictions give low entropy
    and a high Fano factor."""
    rows = counts[counts.sum(1) > 0].double()
    p = rows / rows.sum(1, keepdim=True)
    entropy = -torch.special.xlogy(p, p).sum(1) / math.log(2)
    fano = rows.var(1, unbiased=False) / rows.mean(1)
    return float(entropy.mean()), float(fano.mean())


@register("class-membership")
class ClassMembership(Attack):
    """Label the owner's plaintext images by feeding them to the model trained on disguised data.

    Threat: model misuse at level 1; if plaintext inputs land in class-specific outputs, the
    cloud can use the owner's model on plain images. The mapping from predicted label to class is
    learned on the labelled public images and applied to the plaintext gallery (owner training
    images). Reports the mean per-class entropy and Fano factor of the predicted-label histogram
    on public images, for the owner's model and for a plaintext-trained baseline. Sharma & Chen,
    "Disguised-Nets: Image Disguising for Privacy-preserving Outsourced Deep Learning", 2019
    (class membership attack).

    Args:
        mapping: "hungarian" (the best one-to-one map of labels to classes on the public set) or
            "majority" (each predicted label to its most frequent true class).
        baseline: also train the plaintext baseline model on half of the public images.
        epochs: the baseline's training epochs (0 uses the task's own recipe).
    """

    goal = LABEL
    label_of = "gallery"
    needs = frozenset({MODEL, PUBLIC, GALLERY})
    optional = frozenset({DEFENSE})  # only to tell whether the model takes plaintext at all

    def __init__(self, mapping: str = "hungarian", baseline: bool = True, epochs: int = 0) -> None:
        self.mapping = mapping
        self.baseline = baseline
        self.epochs = epochs

    def validate(self) -> None:
        check_choice(self.name, "mapping", self.mapping, ("hungarian", "majority"))
        if not isinstance(self.baseline, bool):
            raise PluginError(f"{self.name}: baseline={self.baseline!r} must be true or false")
        check_number(self.name, "epochs", self.epochs, kind=int, low=0)

    def _map(self, counts: Tensor) -> Tensor:
        """(k,) the class each predicted label is taken to mean."""
        if self.mapping == "majority":
            return counts.argmax(0)
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
        out = torch.empty(counts.shape[1], dtype=torch.long)
        out[torch.as_tensor(cols)] = torch.as_tensor(rows)
        return out

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        public: Data = view.require(PUBLIC)
        if view.defense is not None and \
                tuple(view.defense.output_shape(public.image_shape)) != public.image_shape:
            raise NotApplicable(f"{self.name}: feeds plaintext of shape {public.image_shape} to a "
                                f"model of {view.defense.name}'s disguised images of shape "
                                f"{tuple(view.defense.output_shape(public.image_shape))}")
        k, task = view.num_classes, view.task
        y = public.hard_labels()
        predicted = task.predict(view.require(MODEL), public.x).argmax(1)
        counts = confusion(y, predicted, k)
        # Spread is measured on the half of the public set the baseline does not train on.
        order = torch.randperm(len(public), generator=torch.Generator().manual_seed(seed))
        train, held = order[: len(order) // 2], order[len(order) // 2:]
        entropy, fano = spread(confusion(y[held], predicted[held], k))
        report = {"entropy": entropy, "fano": fano,
                  "max_entropy": math.log2(k)}
        if self.baseline:
            baseline = train_model(task, public[train], seed=sub_seed(seed, 0), epochs=self.epochs,
                                   num_classes=k)
            base_pred = task.predict(baseline, public.x[held]).argmax(1)
            b_entropy, b_fano = spread(confusion(y[held], base_pred, k))
            report.update(baseline_entropy=b_entropy, baseline_fano=b_fano,
                          baseline_accuracy=float((base_pred == y[held]).double().mean()))
        labels = task.predict(view.require(MODEL), view.require(GALLERY)).argmax(1)
        return Outcome(self._map(counts)[labels], report)
