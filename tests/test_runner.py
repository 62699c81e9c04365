from __future__ import annotations

import pytest
import torch

from disguisebench import plan as plan_mod
from disguisebench import registry, runner, threat
from disguisebench import cell as cell_mod
from disguisebench.api import LABEL, ORACLE, TARGETS, Attack, Data, Defense
from disguisebench.store import FAILED, NOT_APPLICABLE, OK, REFUSED, Store
from tests.conftest import TOY_PLAN

SALT = b"test salt, not secret".ljust(32, b".")


def metrics_by_key(store: Store) -> dict[str, tuple]:
    return {r.key: (r.status, r.metrics) for r in store.records()}


def test_second_run_writes_nothing_new(tmp_path, toy_plan):
    with Store(tmp_path / "r.db") as store:
        first = runner.run(toy_plan, store)
        assert first.written == 3 * (1 + 2 * 3) and first.failed == 0
        again = runner.run(toy_plan, store)
        assert again.written == 0 and again.skipped == first.written
        assert len(store) == first.written


@pytest.mark.slow  # covered by test_reliability's kill-and-resume, Ctrl-C and second-run tests
def test_interrupted_run_resumes_to_the_same_records(tmp_path, toy_plan):
    with Store(tmp_path / "whole.db") as whole:
        runner.run(toy_plan, whole)
        expected = metrics_by_key(whole)

    seen = []

    def stop_after_eight(record):
        seen.append(record)
        if len(seen) == 8:
            raise KeyboardInterrupt

    # The same salt (as --salt-file gives another machine) reproduces every record.
    with Store(tmp_path / "cut.db", salt_file=tmp_path / "whole.db.salt") as cut:
        with pytest.raises(KeyboardInterrupt):
            runner.run(toy_plan, cut, on_record=stop_after_eight)
        assert len(cut) == 8
        resumed = runner.run(toy_plan, cut)
        assert resumed.skipped == 8
        assert metrics_by_key(cut) == expected


def test_seed_canary_template_matching_against_block_rmt(tmp_path):
    # Raw pixels: the block-norm features of feature="auto" see through orthogonal RMT at level 1.
    raw = {**TOY_PLAN, "attacks": ["visual-reid", {"template-match": {"feature": "pixels"}}]}
    with Store(tmp_path / "r.db") as store:
        runner.run(plan_mod.from_dict(raw), store)
        tm = {(r.defense["name"], r.level): r.metrics for r in store.records()
              if r.attack and r.attack["name"] == "template-match"}
    # Without the owner's key, re-disguising the gallery under the attacker's key is useless ...
    assert tm[("block-rmt", "level-1")]["advantage"] < 0.2
    # ... and with the level-3 oracle it re-identifies every target.
    assert tm[("block-rmt", "level-3")]["success"] >= 0.95
    # A keyless defense falls at level 1.
    assert tm[("pixelate", "level-1")]["success"] >= 0.95


def test_attack_seeds_never_equal_the_key_seed(toy_plan):
    for cell in cell_mod.cells(toy_plan):
        key = cell.seeds(SALT)["key"]
        for attack in toy_plan.attacks:
            assert cell.attack_seed(attack, SALT) != key
    a, b = cell_mod.cells(toy_plan)[1:3]
    assert a.seeds(SALT)["data"] == b.seeds(SALT)["data"]  # defenses compared on the same splits
    assert a.seeds(SALT)["key"] != b.seeds(SALT)["key"]


class Exploding(Defense):
    """A defense that raises in fit."""

    def __init__(self) -> None:
        pass

    def _fit(self, data, rng, public):
        raise RuntimeError("boom in fit")


class NeedsOracle(Attack):
    """Reports the targets' labels it was granted; needs the oracle."""

    goal = LABEL
    needs = frozenset({TARGETS, ORACLE})

    def __init__(self) -> None:
        pass

    def _run(self, view, *, seed):
        assert view.model is None and view.public is None  # only what it declared
        return torch.zeros(len(view.targets), dtype=torch.long)


def test_failing_plugin_is_recorded_and_the_run_goes_on(tmp_path):
    raw = {**TOY_PLAN, "defenses": ["exploding-defense", "pixelate"], "levels": ["level-1"]}
    with registry.temporary("exploding-defense", Exploding):
        plan = plan_mod.from_dict(raw)
        with Store(tmp_path / "r.db") as store:
            summary = runner.run(plan, store)
            recs = list(store.records())
    failed = [r for r in recs if r.status in (FAILED, REFUSED)]
    assert {r.defense["name"] for r in failed} == {"exploding-defense"}
    assert all("RuntimeError: boom in fit" in r.error for r in failed)
    # The utility row failed; every attack counts the defense's failure as a break.
    assert [r.attack for r in failed if r.status == FAILED] == [None]
    assert all(r.metrics == {"advantage": 1.0} for r in failed if r.status == REFUSED)
    assert summary.failed == 1 and len(failed) == 3
    assert any(r.defense["name"] == "pixelate" and r.status == OK for r in recs)


def test_attack_needing_more_than_the_level_is_not_applicable(tmp_path):
    raw = {**TOY_PLAN, "defenses": ["none"], "attacks": ["needs-oracle"]}
    with registry.temporary("needs-oracle", NeedsOracle):
        plan = plan_mod.from_dict(raw)
        with Store(tmp_path / "r.db") as store:
            runner.run(plan, store)
            status = {r.level: r.status for r in store.records() if r.attack}
    assert status == {"level-1": NOT_APPLICABLE, "level-2": NOT_APPLICABLE, "level-3": OK}


def test_scenario_targets_gallery_and_known_pairs_are_consistent():
    from disguisebench.api import Splits

    gen = torch.Generator().manual_seed(0)
    train = Data(torch.rand(200, 1, 4, 4, generator=gen), torch.arange(200) % 3)
    test = Data(torch.rand(50, 1, 4, 4, generator=gen), torch.arange(50) % 3)
    splits = Splits(train, test, test, 3)
    disguised = Data(train.x * 2, train.y)
    sc = threat.build_scenario(splits, disguised, n_targets=20, n_known=30, seed=1)
    assert sc.gallery.shape == (40, 1, 4, 4)
    # every target's original sits at its gallery index
    assert torch.equal(sc.gallery[sc.gallery_index[:, 0]] * 2, sc.targets.x)
    plain, known = sc.known_pairs
    assert torch.equal(plain.x[known.source[:, 0]] * 2, known.x)
    # known pairs and gallery images never overlap
    g = {tuple(v.tolist()) for v in sc.gallery.flatten(1)}
    assert not any(tuple(v.tolist()) in g for v in plain.x.flatten(1))
    assert sc.member.sum() == 20 and len(sc.candidates) == 40


def test_scenario_sizes_shrink_only_when_the_training_set_is_too_small():
    assert threat.scenario_sizes(3000, 100, 100) == (100, 100)
    assert threat.scenario_sizes(300, 100, 100) == (100, 100)  # exactly fits
    assert threat.scenario_sizes(100, 100, 100) == (25, 50)  # the faces task
    assert threat.scenario_sizes(150, 100, 0) == (75, 0)
    assert threat.scenario_sizes(100, 10, 200) == (10, 80)


def test_level_sizes_keep_level_1_targets_when_only_known_pairs_do_not_fit():
    assert threat.level_sizes(45, 20, 100, "level-1") == (20, 0)
    assert threat.level_sizes(45, 20, 100, "level-2") == (11, 23)
    # when everything fits, every level draws the same scenario as before
    assert threat.level_sizes(3000, 100, 100, "level-1") == (100, 100)


def test_small_task_runs_with_fewer_targets_and_says_so(tmp_path, caplog):
    raw = {**TOY_PLAN, "n_targets": 100, "n_known": 100, "defenses": ["pixelate"],
           "attacks": ["template-match"], "levels": ["level-1", "level-2"],
           "tasks": [{"toy": {"epochs": 1, "n_train": 60, "n_test": 30, "n_public": 30}}]}
    plan = plan_mod.from_dict(raw)
    with caplog.at_level("WARNING", logger="disguisebench"), Store(tmp_path / "r.db") as store:
        summary = runner.run(plan, store)
        recs = [r for r in store.records() if r.attack]
    assert summary.failed == 0 and len(recs) == 4
    assert all(r.status == OK for r in recs)
    # level 1 uses no known pairs, so they never cost it targets
    sizes = {r.level: (r.meta["n_targets"], r.meta["n_known"]) for r in recs}
    assert sizes == {"level-1": (30, 0), "level-2": (15, 30)}
    warned = [m for m in caplog.messages if "too few for n_targets=100 and n_known=100" in m]
    assert len(warned) == 1  # once per task, not once per cell
    assert "level-1: n_targets=30, n_known=0; level-2: n_targets=15, n_known=30" in warned[0]
    # the record keys still name the plan's values: a re-run finds them
    with Store(tmp_path / "r.db") as store:
        assert runner.run(plan, store).written == 0
