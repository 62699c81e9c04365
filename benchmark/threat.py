"""What a threat level grants an attack, and the truth it is scored against.

A cell's :class:`Scenario` holds both sides: the disguised targets, the upload, the gallery, known
pairs and membership candidates an attack may be shown, and where each target's originals sit in
the gallery, their labels and who was a member, which it may not (docs/design.md, "One cell").
:func:`view_fields` copies what a level grants and an attack declares; :func:`evaluate` runs an
attack in this process and scores it, for tests and notebooks (the runner seals attacks).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from disguisebench import scoring
from disguisebench.api import (
    DEFENSE, GALLERY, KNOWN_PAIRS, LABEL, LABEL_OF, LEVELS, MEMBERSHIP, MODEL, ORACLE, PUBLIC,
    TARGETS, UPLOAD, Attack, Data, Defense, Outcome, PluginError, Splits, Task, ThreatView,
    check_choice,
)


@dataclasses.dataclass
class Scenario:
    """The runner's side of a cell: what attacks may be shown, and the truth they may not."""

    targets: Data
    upload: Data
    target_labels: torch.Tensor
    gallery: torch.Tensor
    gallery_labels: torch.Tensor | None
    gallery_index: torch.Tensor
    known_pairs: tuple[Data, Data]
    candidates: torch.Tensor
    member: torch.Tensor

def _unique_sources(sources: torch.Tensor) -> torch.Tensor:
    return torch.unique(sources[sources >= 0])

def scenario_sizes(n_train: int, n_targets: int, n_known: int) -> tuple[int, int]:
    """``n_targets`` and ``n_known`` reduced, when needed, to fit ``n_train`` training images.

    Targets, as many gallery distractors and the known pairs must be distinct training images.
    When the plan's numbers do not fit (a small task), targets shrink to leave room for the known
    pairs, but not below a quarter of the training set, and the known pairs take what is left.
    """
    if 2 * n_targets + n_known <= n_train:
        return n_targets, n_known
    targets = max(1, min(n_targets, max(n_train // 4, (n_train - n_known) // 2)))
    return targets, max(0, min(n_known, n_train - 2 * targets))

def level_sizes(n_train: int, n_targets: int, n_known: int, level: str) -> tuple[int, int]:
    """The scenario sizes one level is run with. Levels that grant no known pairs keep every
    target the plan asks for when only the pairs make the numbers too large for the task."""
    sizes = scenario_sizes(n_train, n_targets, n_known)
    if sizes == (n_targets, n_known) or KNOWN_PAIRS in LEVELS[level]:
        return sizes
    return scenario_sizes(n_train, n_targets, 0)

def build_scenario(splits: Splits, disguised: Data, *, n_targets: int, n_known: int,
                   seed: int) -> Scenario:
    """Draw targets, the gallery, known pairs and membership candidates (docs/design.md, "One cell")."""
    rng = torch.Generator().manual_seed(seed)
    n_plain = len(splits.train)
    if n_targets > len(disguised):
        raise PluginError(f"n_targets={n_targets} exceeds the {len(disguised)} disguised images")
    order = torch.randperm(len(disguised), generator=rng)
    sources = disguised.sources()
    target_rows = order[:n_targets]
    originals = _unique_sources(sources[target_rows])
    used = torch.zeros(n_plain, dtype=torch.bool)
    used[originals] = True

    known_rows = _known_rows(order[n_targets:], sources, used, n_known)
    known_src = sources[known_rows]
    known_plain = _unique_sources(known_src)
    used[known_plain] = True

    # Distractors: as many untouched owner training images as there are originals.
    free = torch.nonzero(~used).squeeze(1)
    free = free[torch.randperm(len(free), generator=rng)]
    if len(free) < len(originals):
        raise PluginError(
            f"the training set ({n_plain} images) is too small for {len(originals)} gallery "
            f"originals plus as many distractors and {n_known} known pairs"
        )
    members = torch.cat([originals, free[: len(originals)]])
    shuffle = torch.randperm(len(members), generator=rng)
    gallery_plain = members[shuffle]
    position = torch.full((n_plain,), -1, dtype=torch.long)
    position[gallery_plain] = torch.arange(len(gallery_plain))
    target_src = sources[target_rows]
    gallery_index = torch.where(target_src >= 0, position[target_src.clamp_min(0)], -1)

    remap = torch.full((n_plain,), -1, dtype=torch.long)
    remap[known_plain] = torch.arange(len(known_plain))
    known_disguised = disguised[known_rows]
    known_disguised = Data(known_disguised.x, known_disguised.y,
                           torch.where(known_src >= 0, remap[known_src.clamp_min(0)], -1))

    candidates, member = _candidates(splits, originals, rng)
    targets = disguised[target_rows]
    return Scenario(
        targets=Data(targets.x, targets.y),
        upload=Data(disguised.x, disguised.y),
        target_labels=targets.hard_labels() if targets.y is not None else None,
        gallery=splits.train.x[gallery_plain],
        gallery_labels=None if splits.train.y is None else splits.train.hard_labels()[gallery_plain],
        gallery_index=gallery_index,
        known_pairs=(splits.train[known_plain], known_disguised),
        candidates=candidates,
        member=member,
    )


def _known_rows(rows: torch.Tensor, sources: torch.Tensor, used: torch.Tensor,
                n_known: int) -> torch.Tensor:
    """The first ``n_known`` of ``rows`` none of whose originals is ``used`` (a target's)."""
    known = []
    for row in rows.tolist():
        if len(known) == n_known:
            break
        src = sources[row]
        if not used[src[src >= 0]].any():
            known.append(row)
    if len(known) < n_known:
        raise PluginError(f"n_known={n_known} exceeds the {len(known)} images left after targets")
    return torch.tensor(known, dtype=torch.long)


def _candidates(splits: Splits, originals: torch.Tensor,
                rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Membership candidates, shuffled: the targets' originals (members) and as many owner test
    images; and which are members."""
    n_out = min(len(originals), len(splits.test))
    outsiders = torch.randperm(len(splits.test), generator=rng)[:n_out]
    cand = torch.cat([splits.train.x[originals], splits.test.x[outsiders]])
    member = torch.cat([torch.ones(len(originals)), torch.zeros(n_out)]).bool()
    mix = torch.randperm(len(cand), generator=rng)
    return cand[mix], member[mix]

def build_view(level: str, granted: frozenset[str], attack: Attack, task: Task,
               splits: Splits, defense: Defense, model: torch.nn.Module,
               scenario: Scenario) -> ThreatView:
    """A view built in this process, for testing an attack directly (the runner seals attacks)."""
    fields = view_fields(granted, attack, splits, model, scenario)
    return ThreatView(
        level=level, task=task.clone(),
        defense=defense.clone() if DEFENSE in granted else None,
        oracle=defense.transform if ORACLE in granted else None,
        **fields,
    )

def view_fields(granted: frozenset[str], attack: Attack, splits: Splits,
                model: torch.nn.Module | None, scenario: Scenario) -> dict[str, Any]:
    """The tensors and model of a view, as copies: what an attack's process receives."""
    targets, upload = scenario.targets, scenario.upload
    if attack.goal == LABEL:
        targets, upload = targets.without_labels(), upload.without_labels()

    def copied(data: Data | None) -> Data | None:
        if data is None:
            return None
        return Data(data.x.clone(), None if data.y is None else data.y.clone())

    pairs = None
    if KNOWN_PAIRS in granted:
        plain, disguised = scenario.known_pairs
        pairs = (copied(plain), Data(disguised.x.clone(),
                                     None if disguised.y is None else disguised.y.clone(),
                                     None if disguised.source is None else disguised.source.clone()))
    return {
        "num_classes": splits.num_classes,
        "targets": copied(targets) if TARGETS in granted else None,
        "upload": copied(upload) if UPLOAD in granted else None,
        "model": copy.deepcopy(model).cpu().eval() if MODEL in granted and model is not None
        else None,
        "public": copied(splits.public) if PUBLIC in granted else None,
        "gallery": scenario.gallery.clone() if GALLERY in granted else None,
        "known_pairs": pairs,
        "candidates": scenario.candidates.clone() if attack.goal == MEMBERSHIP else None,
    }

def truth(scenario: Scenario, label_of: str = "targets") -> scoring.Truth:
    check_choice("attack", "label_of", label_of, LABEL_OF)
    labels = scenario.gallery_labels if label_of == "gallery" else scenario.target_labels
    return scoring.Truth(gallery_index=scenario.gallery_index, gallery=scenario.gallery,
                         labels=labels, member=scenario.member)

def attack_report(diagnostics: dict[str, float]) -> dict[str, float]:
    """An attack's diagnostics (checked finite by ``Outcome.of``) as ``attack.<name>``."""
    return {f"attack.{key}": float(value) for key, value in diagnostics.items()}


def grants(attack: Attack, level: str) -> frozenset[str]:
    """What ``attack`` is shown at ``level``: what it needs and what it can use that the level
    grants (it needs nothing the level lacks; callers check ``attack.needs - LEVELS[level]``)."""
    return frozenset(attack.needs | (attack.optional & LEVELS[level]))


def evaluate(attack: Attack, level: str, *, task: Task, splits: Splits, defense: Defense,
             model: torch.nn.Module | None, scenario: Scenario, seed: int = 0) -> dict[str, float]:
    """Grant, view, run and score ``attack`` at ``level`` in this process: its metrics."""
    missing = attack.needs - LEVELS[level]
    if missing:
        raise PluginError(f"{attack.name} needs {sorted(missing)}, which {level} does not grant")
    view = build_view(level, grants(attack, level), attack, task, splits, defense, model,
                      scenario)
    outcome = Outcome.of(attack, attack.run(view, seed=seed))
    metrics = scoring.score(attack.goal, outcome.prediction, truth(scenario, attack.label_of))
    metrics.update(attack_report(outcome.diagnostics))
    return metrics
