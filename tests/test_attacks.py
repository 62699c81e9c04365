"""The attack battery on the toy task: each beats chance against no defense, and the key facts
each attack rests on (block norms survive orthogonal RMT, known pairs recover it) hold."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from disguisebench import plan as plan_mod
from disguisebench import registry, runner, scoring, threat
from disguisebench.api import GALLERY, LABEL, MODEL, TARGETS, Attack, Data, Outcome, PluginError
from disguisebench.store import FAILED, OK, Store
from disguisebench.tasks.toy import Toy
from tests.conftest import TOY_PLAN


class Memorize(Toy):
    """Uniform noise images with random labels: a model can only memorise them, so membership
    shows in its confidence."""

    def _images(self):
        gen = torch.Generator().manual_seed(7)
        n = self.n_train + self.n_test + self.n_public
        return torch.rand(n, 1, 12, 12, generator=gen), torch.randint(0, 4, (n,), generator=gen), 4


@functools.cache
def cell(defense: str = "none", params: tuple = (), task: str = "toy"):
    """A trained toy cell: (task, splits, fitted defense, model, scenario), cached per defense."""
    if task == "memorize":
        toy = Memorize(n_train=100, n_public=200, epochs=60)
    else:
        toy = registry.create("task", "toy", {"epochs": 3})
    splits = toy.load(seed=0)
    d = registry.create("defense", defense, dict(params)).fit(splits.train, seed=11,
                                                              public=splits.public)
    disguised = d.transform(splits.train)
    model = toy.train(disguised, seed=0, num_classes=splits.num_classes)
    sc = threat.build_scenario(splits, disguised, n_targets=30, n_known=30, seed=3)
    return toy, splits, d, model, sc


def attack_on(name: str, level: str, defense: str = "none", params: tuple = (),
              attack_params: dict | None = None, task: str = "toy") -> tuple[Attack, dict]:
    toy, splits, d, model, sc = cell(defense, params, task)
    attack = registry.create("attack", name, attack_params or {})
    return attack, threat.evaluate(attack, level, task=toy, splits=splits, defense=d, model=model,
                                   scenario=sc, seed=5)


CHEAP = {"learned-inversion": {"steps": 60}, "feature-reid": {"steps": 120},
         "shadow-membership": {"epochs": 60}}


@pytest.mark.parametrize("name,level", [
    ("class-membership", "level-1"), ("shadow-label", "level-1"),
    ("shadow-membership", "level-1"), ("learned-inversion", "level-1"),
    ("feature-reid", "level-1"), ("known-pair-regression", "level-2"),
    ("template-match", "level-1"),
])
def test_attack_beats_chance_against_no_defense(name, level):
    task = "memorize" if name == "shadow-membership" else "toy"
    _, m = attack_on(name, level, attack_params=CHEAP.get(name), task=task)
    assert m["advantage"] >= 0.5, m
    if name == "shadow-membership":
        assert m["tpr_at_1pct_fpr"] > 0.1


def test_known_pair_regression_recovers_block_rmt_at_level_2():
    attack, m = attack_on("known-pair-regression", "level-2", "block-rmt", (("block", 4),))
    _, _, d, _, _ = cell("block-rmt", (("block", 4),))
    assert torch.equal(attack.alignment_, d.permutation_)  # the secret permutation, found
    assert m["attack.positions_recovered"] == 1.0 and m["attack.fit"] > 0.999
    assert m["success"] == 1.0 and m["psnr"] > 60 and m["ssim"] > 0.999
    # The first few pairs already pin the key down; one pair cannot align the blocks.
    few = attack_on("known-pair-regression", "level-2", "block-rmt", (("block", 4),),
                    {"n_pairs": 3})[1]
    assert few["attack.pairs"] == 3 and few["success"] == 1.0
    one = attack_on("known-pair-regression", "level-2", "block-rmt", (("block", 4),),
                    {"n_pairs": 1})[1]
    assert one["attack.positions_recovered"] < 0.5


def test_known_pair_regression_with_noise_still_reconstructs():
    _, m = attack_on("known-pair-regression", "level-2", "block-rmt",
                     (("block", 4), ("sigma", 50)))
    assert m["success"] >= 0.9 and 20 < m["psnr"] < 60


def test_template_match_block_norms_see_through_orthogonal_rmt_without_the_key():
    rmt = (("block", 4),)
    _, auto = attack_on("template-match", "level-1", "block-rmt", rmt)
    _, pixels = attack_on("template-match", "level-1", "block-rmt", rmt, {"feature": "pixels"})
    assert auto["attack.calibration"] >= 0.9 and auto["success"] >= 0.9
    assert pixels["advantage"] < 0.2


def test_learned_inversion_linear_stage_inverts_rmt_from_oracle_pairs():
    _, m = attack_on("learned-inversion", "level-3", "block-rmt", (("block", 4),), {"steps": 0})
    assert m["success"] == 1.0 and m["psnr"] > 40
    # Its own keys teach it nothing about the owner's.
    _, own = attack_on("learned-inversion", "level-1", "block-rmt", (("block", 4),), {"steps": 0})
    assert own["advantage"] < 0.2


def test_class_membership_reports_spread_against_its_baseline():
    _, m = attack_on("class-membership", "level-1")
    assert m["attack.max_entropy"] == 2.0
    assert m["attack.entropy"] < 0.5  # a plaintext-trained model concentrates each class
    # The baseline is trained with the task's recipe: it classifies, not just concentrates.
    assert m["attack.baseline_accuracy"] > 0.8 and m["attack.baseline_entropy"] < 1.0
    with pytest.raises(PluginError, match="baseline='no' must be true or false"):
        registry.create("attack", "class-membership", {"baseline": "no"}).validate()


def test_spread_of_concentrated_and_uniform_histograms():
    from disguisebench.attacks.class_membership import spread

    concentrated = torch.tensor([[12.0, 0, 0, 0], [0, 12.0, 0, 0]])
    assert spread(concentrated) == (0.0, pytest.approx(12 * 3 / 4))
    uniform = torch.full((3, 4), 5.0)
    entropy, fano = spread(uniform)
    assert entropy == pytest.approx(2.0) and fano == 0.0


def test_attack_parameters_are_validated():
    with pytest.raises(PluginError, match="margin=2"):
        registry.create("attack", "known-pair-regression", {"margin": 2})
    attack = registry.create("attack", "known-pair-regression")
    attack.margin = 2  # run validates before the attack's own code sees the view
    with pytest.raises(PluginError, match="margin=2"):
        attack.run(None, seed=0)
    with pytest.raises(PluginError, match="mapping='best'"):
        registry.create("attack", "class-membership", {"mapping": "best"})
    with pytest.raises(PluginError, match="feature='edges'"):
        registry.create("attack", "template-match", {"feature": "edges"})


class GalleryLabels(Attack):
    """Labels the plaintext gallery with the owner's model; reports a number (NaN when not
    ``finite``)."""

    goal = LABEL
    label_of = "gallery"
    needs = frozenset({MODEL, GALLERY, TARGETS})

    def __init__(self, finite: bool = True) -> None:
        self.finite = finite

    def _run(self, view, *, seed):
        assert view.targets.y is None  # labels stay withheld
        prediction = view.task.predict(view.model, view.gallery).argmax(1)
        return Outcome(prediction, {"answer": 1.5 if self.finite else math.nan})


def test_runner_scores_gallery_labels_and_stores_reports(tmp_path):
    raw = {**TOY_PLAN, "defenses": ["none"], "levels": ["level-1"],
           "attacks": ["gallery-labels", {"gallery-labels": {"finite": False}}]}
    with registry.temporary("gallery-labels", GalleryLabels):
        with Store(tmp_path / "r.db") as store:
            runner.run(plan_mod.from_dict(raw), store)
            recs = {r.attack["params"]["finite"]: r for r in store.records() if r.attack}
    good, bad = recs[True], recs[False]
    assert good.status == OK and good.metrics["attack.answer"] == 1.5
    # 30 targets; the gallery holds their originals and as many distractors
    assert good.metrics["success"] >= 0.9
    assert bad.status == FAILED and "not a finite number" in bad.error


class Legacy(Attack):
    goal = LABEL

    def _run(self, view, *, seed):
        self.report_ = {"answer": 2}
        return torch.zeros(3, dtype=torch.long)


def test_an_outcome_carries_the_prediction_and_finite_diagnostics():
    attack = Legacy()
    # An attack written before outcomes: a bare prediction, diagnostics left in report_.
    outcome = attack.run(None, seed=0)
    assert isinstance(outcome, Outcome) and outcome.diagnostics == {"answer": 2.0}
    assert Outcome.of(attack, outcome) == outcome  # checking twice changes nothing
    assert Outcome.of(attack, (torch.ones(2), {})).diagnostics == {}
    with pytest.raises(PluginError, match="Legacy.run returned list, not a tensor"):
        Outcome.of(attack, [0, 1])
    with pytest.raises(PluginError, match="diagnostic 'x' = 'high' is not a finite number"):
        Outcome.of(attack, (torch.ones(2), {"x": "high"}))
    with pytest.raises(PluginError, match="diagnostics are list"):
        Outcome.of(attack, (torch.ones(2), [1.0]))
    with pytest.raises(PluginError, match="diagnostic name 3 is not a string"):
        Outcome.of(attack, (torch.ones(2), {3: 1.0}))
    with pytest.raises(PluginError, match="65 diagnostics; at most 64"):
        Outcome.of(attack, (torch.ones(2), {f"d{i}": 0.0 for i in range(65)}))


def test_gallery_truth_has_one_label_per_gallery_image():
    _, _, _, _, sc = cell()
    truth = threat.truth(sc, "gallery")
    assert truth.labels.shape == (len(sc.gallery),)
    with pytest.raises(PluginError, match="label_of='plaintext'"):
        threat.truth(sc, "plaintext")
    with pytest.raises(PluginError, match=r"expected \(60,\)"):
        scoring.score("label", torch.zeros(30, dtype=torch.long), truth)


def test_shadow_label_reports_its_probe_against_an_untrained_network():
    _, plain = attack_on("shadow-label", "level-1", attack_params={"shadows": 0})
    assert plain["attack.probe_owner"] >= 0.9
    # any network's outputs carry some class information; the owner's model adds to it
    assert plain["attack.probe_untrained"] < plain["attack.probe_owner"]


def test_a_model_trained_on_the_same_data_and_seed_is_reused_not_retrained(monkeypatch):
    from disguisebench.attacks import train_model

    task = registry.create("task", "toy", {"epochs": 1})
    public = task.load(seed=0).public
    calls = []
    real = type(task).train

    def counting(self, *args, **kwargs):
        calls.append(kwargs["seed"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(task), "train", counting)
    first = train_model(task, public, seed=1, epochs=0, num_classes=4)
    assert train_model(task, public, seed=1, epochs=0, num_classes=4) is first
    assert train_model(task, public, seed=2, epochs=0, num_classes=4) is not first
    changed = Data(public.x.flip(-1), public.y)
    assert train_model(task, changed, seed=1, epochs=0, num_classes=4) is not first
    assert train_model(task, public, seed=1, epochs=2, num_classes=4) is not first
    assert calls == [1, 2, 1, 1]
