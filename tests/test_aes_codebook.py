from __future__ import annotations

import pytest
import torch

from disguisebench.attacks.aes_codebook import codebook_lookup
from disguisebench import registry, scoring, threat
from disguisebench.api import LEVELS


def test_codebook_lookup_finds_seen_chunks_only():
    known_cipher = torch.tensor([[1] * 16, [2] * 16, [1] * 16], dtype=torch.uint8)
    known_plain = torch.tensor([[7] * 16, [8] * 16, [7] * 16], dtype=torch.uint8)
    cipher = torch.tensor([[2] * 16, [3] * 16, [1] * 16], dtype=torch.uint8)
    plain, hit = codebook_lookup(known_cipher, known_plain, cipher)
    assert hit.tolist() == [True, False, True]
    assert plain[:, 0].tolist() == [8, 0, 7]


def attack_toy(defense_params, attack_params=None, n_known=40):
    task = registry.create("task", "toy", {"epochs": 1})
    splits = task.load(seed=0)
    defense = registry.create("defense", "block-aes", defense_params).fit(splits.train, seed=1)
    disguised = defense.transform(splits.train)
    scenario = threat.build_scenario(splits, disguised, n_targets=30, n_known=n_known, seed=3)
    attack = registry.create("attack", "aes-codebook", attack_params)
    granted = attack.needs | (attack.optional & LEVELS["level-2"])
    view = threat.build_view("level-2", granted, attack, task, splits, defense, None, scenario)
    assert view.defense is not None and not hasattr(view.defense, "keys_")  # keyless clone
    outcome = attack.run(view, seed=0)
    metrics = scoring.score("reconstruct", outcome.prediction, threat.truth(scenario))
    return {**metrics, **threat.attack_report(outcome.diagnostics)}


def test_codebook_decrypts_small_aes_blocks_on_the_toy_task():
    # block=1: each pixel byte becomes one AES block, a substitution the known pairs spell out.
    metrics = attack_toy({"block": 1})
    assert metrics["advantage"] > 0.9 and metrics["psnr"] > 30
    per_position = attack_toy({"block": 1, "key_scope": "per-position"})
    assert per_position["advantage"] > 0.1


def test_fewer_known_pairs_fill_a_smaller_codebook():
    every = attack_toy({"block": 1})
    one = attack_toy({"block": 1}, {"n_pairs": 1})
    assert one["attack.pairs"] == 1 and every["attack.pairs"] == 40
    assert 0 < one["attack.hit_rate"] < every["attack.hit_rate"]
    assert one["advantage"] < every["advantage"]


def test_codebook_without_pairs_in_common_stays_near_chance():
    # 2×2 blocks of the toy task's noisy pixels never repeat: nothing to look up.
    assert attack_toy({"block": 2})["advantage"] < 0.2


def test_it_runs_on_a_defense_without_a_chunk_layout():
    task = registry.create("task", "toy", {"epochs": 1})
    splits = task.load(seed=0)
    defense = registry.create("defense", "none").fit(splits.train, seed=1)
    disguised = defense.transform(splits.train)
    scenario = threat.build_scenario(splits, disguised, n_targets=10, n_known=10, seed=3)
    attack = registry.create("attack", "aes-codebook", {"fill": "zero"})
    view = threat.build_view("level-2", attack.needs, attack, task, splits, defense, None, scenario)
    assert attack.run(view, seed=0).prediction.shape == (10, 1, 12, 12)


@pytest.mark.slow
def test_codebook_on_mnist_with_2x2_blocks():
    task = registry.create("task", "mnist")
    splits = task.load(seed=0)
    defense = registry.create("defense", "block-aes", {"block": 2}).fit(splits.train, seed=1)
    disguised = defense.transform(splits.train)
    scenario = threat.build_scenario(splits, disguised, n_targets=100, n_known=100, seed=3)
    attack = registry.create("attack", "aes-codebook")
    view = threat.build_view("level-2", attack.needs, attack, task, splits, defense, None, scenario)
    metrics = scoring.score("reconstruct", attack.run(view, seed=0).prediction,
                            threat.truth(scenario))
    assert metrics["advantage"] > 0.8
