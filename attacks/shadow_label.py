"""Shadow-model label inference: learn how a disguise-trained model's outputs on plaintext reveal class."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disguisebench.attacks._common import log_probs, own_key, per_source, seeded, sub_seed, train_model
from disguisebench.api import (
    DEFENSE, GALLERY, LABEL, MODEL, PUBLIC, Attack, Data, Defense, NotApplicable, Outcome,
    ThreatView, check_choice, check_number)
from disguisebench.registry import register


@register("shadow-label")
class ShadowLabel(Attack):
    """Infer the class of the owner's plaintext images from the owner's model's outputs on them.

    Threat: model misuse at level 1. The attacker disguises half the public images under keys of
    its own, trains shadow models on them, and fits a classifier from a model's output
    probabilities on plaintext (and on the attacker's own disguise of it) to the class, on the
    other half: the shadows' outputs, and the owner's model's outputs, since the cloud may query
    it on labelled public images. The classifier then labels the plaintext gallery. A probe on
    any network's outputs labels some images, so ``probe_owner`` and ``probe_untrained`` report
    held-out public accuracy of the probe on the owner's model and on an untrained one. Design card
    of DisguiseBench; shadow models after Shokri, Stronati, Song & Shmatikov, "Membership
    Inference Attacks Against Machine Learning Models", 2017.

    Args:
        shadows: shadow models trained under the attacker's keys (0: the owner's model only).
        epochs: training epochs of each shadow model.
        query: the owner's model sees "plain" images, their "own-key" disguise, or "both".
    """

    goal = LABEL
    label_of = "gallery"
    needs = frozenset({MODEL, PUBLIC, GALLERY, DEFENSE})
    budget = ("epochs",)  # scaled by a plan's compute

    def __init__(self, shadows: int = 1, epochs: int = 2, query: str = "both") -> None:
        self.shadows = shadows
        self.epochs = epochs
        self.query = query

    def validate(self) -> None:
        check_number(self.name, "shadows", self.shadows, kind=int, low=0)
        check_number(self.name, "epochs", self.epochs, kind=int, low=1)
        check_choice(self.name, "query", self.query, ("plain", "own-key", "both"))

    def _modes(self, key: Defense, image_shape: tuple[int, int, int]) -> tuple[str, ...]:
        """The queries a model of this defense can take: plaintext only where the disguise keeps
        the image shape (NeuraCrypt's encodings are patch grids)."""
        plain_fits = tuple(key.output_shape(image_shape)) == tuple(image_shape)
        if self.query == "plain" and not plain_fits:
            raise NotApplicable(f"{self.name}: query='plain' needs disguised images of the "
                                f"plaintext's shape {tuple(image_shape)}; {key.name} makes "
                                f"{tuple(key.output_shape(image_shape))}")
        modes = {"plain": ("plain",), "own-key": ("own-key",), "both": ("plain", "own-key")}
        return tuple(m for m in modes[self.query] if m != "plain" or plain_fits)

    @staticmethod
    def _queries(x: Tensor, key: Defense, modes: tuple[str, ...]) -> list[Tensor]:
        """The inputs each model is asked about: the plaintext, its own-key disguise, or both
        (one disguised row per image, also for a defense that makes several)."""
        return [x if m == "plain" else per_source(key.transform(Data(x)), len(x)) for m in modes]

    @staticmethod
    def _features(view: ThreatView, model: nn.Module, queries: list[Tensor]) -> Tensor:
        return torch.cat([log_probs(view.task, model, q) for q in queries], 1)

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        public: Data = view.require(PUBLIC)
        defense: Defense = view.require(DEFENSE)
        owner = view.require(MODEL)
        order = torch.randperm(len(public), generator=torch.Generator().manual_seed(seed))
        shadow_set, fit_set = public[order[: len(order) // 2]], public[order[len(order) // 2:]]
        query_key = own_key(defense, public, seed=sub_seed(seed, 0))
        modes = self._modes(query_key, public.image_shape)
        queries = self._queries(fit_set.x, query_key, modes)  # disguised once, asked of every model
        rows = [self._features(view, owner, queries)]
        for s in range(self.shadows):
            key = own_key(defense, shadow_set, seed=sub_seed(seed, 1 + s))
            shadow = train_model(view.task, key.transform(shadow_set), seed=sub_seed(seed, 100 + s),
                                 epochs=self.epochs, num_classes=view.num_classes)
            rows.append(self._features(view, shadow, queries))
        y = fit_set.hard_labels().repeat(len(rows))
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(torch.cat(rows).numpy(), y.numpy())
        report = self._probe_baselines(view, rows[0], fit_set, queries, seed)
        gallery = self._features(view, owner,
                                 self._queries(view.require(GALLERY), query_key, modes))
        return Outcome(torch.as_tensor(clf.predict(gallery.numpy()), dtype=torch.long), report)

    def _probe_baselines(self, view: ThreatView, owner_rows: Tensor, fit_set: Data,
                         queries: list[Tensor], seed: int) -> dict[str, float]:
        """Held-out public accuracy of a probe on the owner's model's outputs, and of the same
        probe on an untrained network of the task's architecture: any network's outputs carry
        some class information, and the gap is what the owner's model adds."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        shape = tuple(queries[0].shape[1:])  # what the owner's model takes
        with seeded(sub_seed(seed, 300)):
            untrained = view.task.build_model(shape, view.num_classes).eval()
        if hasattr(untrained, "standardize"):
            untrained.standardize.fit(queries[0])
        y, half = fit_set.hard_labels().numpy(), len(fit_set) // 2
        out = {}
        for name, rows in (("probe_owner", owner_rows),
                           ("probe_untrained", self._features(view, untrained, queries))):
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            clf.fit(rows[:half].numpy(), y[:half])
            out[name] = float((clf.predict(rows[half:].numpy()) == y[half:]).mean())
        return out
