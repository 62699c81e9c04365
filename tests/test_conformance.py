"""Conformance of every registered plugin: each defense check of disguisebench.checks as its own
test (parametrised per defense and check, as scikit-learn's ``parametrize_with_checks`` does),
and the contract of attacks and tasks, which the checks do not cover."""

from __future__ import annotations

import json

import pytest
import torch

from disguisebench import checks, registry, threat
from disguisebench.api import LABEL_OF, Attack, Capability, Data, Goal, Task

DEFENSES = registry.names("defense")
ATTACKS = registry.names("attack")
TASKS = registry.names("task")


def images(n: int = 6, c: int = 1, side: int = 8, seed: int = 0) -> Data:
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.rand(n, c, side, side, generator=gen), torch.arange(n) % 2)


@checks.parametrize_with_checks(DEFENSES)
def test_defense(name, check):
    result = check(name)
    assert result.passed, result.reason


@pytest.mark.parametrize("name", DEFENSES)
@pytest.mark.parametrize("channels", [1, 3])
def test_defense_outputs_name_their_sources_and_test_inputs_fit_the_model(name, channels):
    """What the checks leave to the runner: a mixing defense's source map, and test inputs of
    the shape the model is trained on."""
    data = images(c=channels)
    defense = registry.create("defense", name).fit(data, seed=1)
    out = defense.transform(data)
    if out.source is not None:  # every output names its plaintext sources, every input is used
        assert out.source.shape[0] == out.x.shape[0]
        assert int(out.source.min()) >= -1 and int(out.source.max()) < len(data)
        assert set(out.source[out.source >= 0].tolist()) == set(range(len(data)))
    assert defense.test_inputs(data).image_shape == out.image_shape


@pytest.mark.parametrize("kind,name", [("attack", n) for n in ATTACKS]
                         + [("task", n) for n in TASKS])
def test_plugin_defaults_and_params(kind, name):
    plugin = registry.create(kind, name)
    assert isinstance(plugin, {"attack": Attack, "task": Task}[kind])
    params = plugin.get_params()
    assert json.loads(json.dumps(params)) == params
    again = registry.create(kind, name, json.loads(json.dumps(params)))
    assert again.get_params() == params
    assert plugin.summary(), f"{name} needs a one-line docstring summary"
    if kind == "attack":
        assert plugin.goal in set(Goal) and plugin.label_of in LABEL_OF
        assert plugin.needs and plugin.needs | plugin.optional <= set(Capability)


@pytest.mark.parametrize("name", TASKS)
def test_task_conformance(name):
    task = registry.create("task", name)
    if name != "toy":
        pytest.skip("only the synthetic task is trained in the conformance suite")
    splits = task.load(seed=0)
    assert len(splits.train) == task.n_train and len(splits.public) == task.n_public
    model = task.train(splits.train, seed=0, num_classes=splits.num_classes)
    probs = task.predict(model, splits.test.x)
    assert probs.shape == (len(splits.test), splits.num_classes)
    model2 = task.train(splits.train, seed=0, num_classes=splits.num_classes)
    assert torch.equal(task.predict(model2, splits.test.x), probs)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_conformance(name, toy_plan):
    """Every attack runs on the toy task at level 3, deterministically, with the right shape."""
    from disguisebench.api import LEVELS

    task = registry.create("task", "toy", {"epochs": 2})
    splits = task.load(seed=0)
    defense = registry.create("defense", "pixelate").fit(splits.train, seed=1)
    disguised = defense.transform(splits.train)
    model = task.train(disguised, seed=0, num_classes=splits.num_classes)
    sc = threat.build_scenario(splits, disguised, n_targets=20, n_known=20, seed=3)
    # Budgets cut to the minimum: this checks the contract (determinism, shapes), not strength.
    defaults = registry.get("attack", name).defaults()
    small = {k: min(v, {"steps": 10, "epochs": 1}[k]) for k, v in defaults.items()
             if k in ("steps", "epochs") and v}
    attack = registry.create("attack", name, small)
    granted = attack.needs | (attack.optional & LEVELS["level-3"])

    def predict():
        view = threat.build_view("level-3", granted, attack, task, splits, defense, model, sc)
        return attack.run(view, seed=5).prediction

    first, second = predict(), predict()
    assert torch.equal(first, second)
    labelled = len(sc.gallery) if attack.label_of == "gallery" else 20
    expected = {"reidentify": (20,), "label": (labelled,), "membership": (len(sc.candidates),),
                "reconstruct": (20, *splits.train.image_shape)}[attack.goal]
    assert tuple(first.shape) == expected
