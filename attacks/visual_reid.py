"""Visual re-identification: a classifier trained on plaintext recognises disguised images."""

from __future__ import annotations

from torch import Tensor

from disguisebench.api import (DEFENSE, LABEL, PUBLIC, TARGETS, Attack, Data, NotApplicable,
                               ThreatView, check_choice, check_number)
from disguisebench.attacks._common import train_model
from disguisebench.registry import register


@register("visual-reid")
class VisualReID(Attack):
    """Label disguised training images with a classifier trained on public images.

    Threat: the cloud recognises what the owner's images show (level 1). The owner uploads the
    targets' labels at every level, so labelling them is no attack: it scores chance 1 and
    advantage 0 on the boards (issue 17), and its success rate is kept for the 2019
    reproduction. With
    ``train_on="plain"`` this is the paper's attack (a model of the originals applied to disguised
    images); ``"own-key"`` trains on the public set disguised under the attacker's own key, which
    defeats keyless disguises. Sharma & Chen, "Disguised-Nets: Image Disguising for
    Privacy-preserving Outsourced Deep Learning", 2019.

    Args:
        train_on: "plain" public images (the paper) or "own-key" disguised public images.
        epochs: training epochs (0 uses the task's own recipe).
    """

    goal = LABEL
    needs = frozenset({TARGETS, PUBLIC})
    optional = frozenset({DEFENSE})

    def __init__(self, train_on: str = "plain", epochs: int = 0) -> None:
        self.train_on = train_on
        self.epochs = epochs

    def validate(self) -> None:
        check_choice(self.name, "train_on", self.train_on, ("plain", "own-key"))
        check_number(self.name, "epochs", self.epochs, kind=int, low=0)

    def _run(self, view: ThreatView, *, seed: int) -> Tensor:
        public: Data = view.require(PUBLIC)
        if self.train_on == "own-key":
            defense = view.require(DEFENSE).fit(public, seed=seed)
            public = defense.transform(public)
        targets = view.require(TARGETS).x
        if tuple(targets.shape[1:]) != public.image_shape:
            raise NotApplicable(f"{self.name}: a model of images of shape {public.image_shape} "
                                "cannot label disguised images of shape "
                                f"{tuple(targets.shape[1:])}")
        model = train_model(view.task, public, seed=seed, epochs=self.epochs,
                            num_classes=view.num_classes)
        return view.task.predict(model, targets).argmax(1)
