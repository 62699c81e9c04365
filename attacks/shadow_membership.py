"""Shadow-model membership inference against a model trained on disguised data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disguisebench.attacks._common import (log_probs, own_key, per_source, sub_seed, train_model,
                                            within_budget)
from disguisebench.api import (DEFENSE, MEMBERSHIP, MODEL, ORACLE, PUBLIC, Attack, Data, Defense,
                               NotApplicable, ThreatView, check_choice, check_number)
from disguisebench.registry import register


@register("shadow-membership")
class ShadowMembership(Attack):
    """Decide whether plaintext candidates were in the owner's training set from the model's outputs.

    Threat: membership inference at every level. Each shadow model is trained on a random half of
    the public images disguised under a key of the attacker's own, the other half serving as
    non-members; a classifier learns member vs non-member from the sorted output probabilities,
    then scores the candidates on the owner's model. The model is queried with the candidates as
    the attacker can present them: its own-key disguise (exact for a keyless defense), the
    owner's disguise through the level-3 oracle, or the plaintext. Design card of DisguiseBench;
    Shokri, Stronati, Song & Shmatikov, "Membership Inference Attacks Against Machine Learning
    Models", 2017.

    Args:
        shadows: shadow models trained under the attacker's keys.
        epochs: training epochs of each shadow model.
        query: "auto" (the oracle where granted, else "own-key"), "own-key" or "plain".
    """

    goal = MEMBERSHIP
    needs = frozenset({MODEL, PUBLIC, DEFENSE})
    optional = frozenset({ORACLE})
    budget = ("epochs",)  # scaled by a plan's compute

    def __init__(self, shadows: int = 1, epochs: int = 3, query: str = "auto") -> None:
        self.shadows = shadows
        self.epochs = epochs
        self.query = query

    def validate(self) -> None:
        check_number(self.name, "shadows", self.shadows, kind=int, low=1)
        check_number(self.name, "epochs", self.epochs, kind=int, low=1)
        check_choice(self.name, "query", self.query, ("auto", "own-key", "plain"))

    @staticmethod
    def _features(view: ThreatView, model: nn.Module, x: Tensor) -> Tensor:
        # Sorted, so the features say how confident the model is, not which class it sees.
        return log_probs(view.task, model, x).sort(1, descending=True).values

    def _run(self, view: ThreatView, *, seed: int) -> Tensor:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        public: Data = view.require(PUBLIC)
        defense: Defense = view.require(DEFENSE)
        view = within_budget(view, len(view.candidates))
        mode = self.query
        if mode == "auto":
            mode = "oracle" if view.oracle is not None else "own-key"
        plain_fits = tuple(defense.output_shape(public.image_shape)) == public.image_shape
        if mode == "plain" and not plain_fits:
            raise NotApplicable(f"{self.name}: query='plain' needs disguised images of the "
                                f"plaintext's shape; {defense.name} changes it")
        query_key = own_key(defense, public, seed=sub_seed(seed, 0))
        rows, member = [], []
        for s in range(self.shadows):
            order = torch.randperm(len(public),
                                   generator=torch.Generator().manual_seed(sub_seed(seed, 200 + s)))
            inside, outside = public[order[: len(order) // 2]], public[order[len(order) // 2:]]
            key = own_key(defense, inside, seed=sub_seed(seed, 1 + s))
            shadow = train_model(view.task, key.transform(inside), seed=sub_seed(seed, 100 + s),
                                 epochs=self.epochs, num_classes=view.num_classes)
            # The shadow is queried as the owner's model will be: under its own key for the
            # oracle, under a different (the attacker's query) key otherwise.
            present = {"oracle": key, "own-key": query_key}.get(mode)
            for part, is_member in ((inside, 1), (outside, 0)):
                x = part.x if present is None else per_source(
                    present.transform(part.without_labels()), len(part))
                rows.append(self._features(view, shadow, x))
                member.append(torch.full((len(part),), is_member))
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(torch.cat(rows).numpy(), torch.cat(member).numpy())
        candidates = Data(view.candidates)
        queries = candidates.x
        if mode == "oracle":
            queries = per_source(view.require(ORACLE)(candidates), len(candidates))
        elif mode == "own-key":
            queries = per_source(query_key.transform(candidates), len(candidates))
        scores = clf.decision_function(self._features(view, view.require(MODEL), queries).numpy())
        return torch.as_tensor(scores, dtype=torch.float64)
