"""The published breaks on small inputs: each recovers what it claims when the defense is weak.

No model is trained: these attacks read only the disguised images, the defense's
hyperparameters, public plaintext and the gallery.
"""

from __future__ import annotations

import functools

import pytest
import torch

from disguisebench import registry, scoring, threat
from disguisebench.api import LABEL, LEVELS, UPLOAD, Attack, Data, PluginError, ThreatView
from disguisebench.blocks import to_blocks
from disguisebench.tasks.toy import Toy


class Strokes(Toy):
    """Sparse 12×12 images, a few bright strokes on black, as handwriting is."""

    def _images(self):
        gen = torch.Generator().manual_seed(5)
        n = self.n_train + self.n_test + self.n_public
        x = torch.zeros(n, 1, 12, 12)
        for _ in range(3):
            r = torch.randint(0, 10, (n,), generator=gen)
            c = torch.randint(0, 10, (n,), generator=gen)
            across = torch.rand(n, generator=gen) < 0.5
            for step in range(3):
                rr, cc = torch.where(across, r, r + step), torch.where(across, c + step, c)
                x[torch.arange(n), 0, rr, cc] = 0.5 + 0.5 * torch.rand(n, generator=gen)
        return x, torch.arange(n) % 4, 4


@functools.cache
def cell(defense: str, params: tuple = (), task: str = "toy"):
    toy = (Strokes if task == "strokes" else Toy)(n_train=400, n_public=400)
    splits = toy.load(seed=0)
    d = registry.create("defense", defense, dict(params)).fit(splits.train, seed=11,
                                                              public=splits.public)
    disguised = d.transform(splits.train)
    sc = threat.build_scenario(splits, disguised, n_targets=30, n_known=30, seed=3)
    return toy, splits, d, sc


def attack_on(name: str, defense: str, params: tuple = (), attack_params: dict | None = None,
              task: str = "toy") -> tuple[Attack, dict, ThreatView]:
    toy, splits, d, sc = cell(defense, params, task)
    attack = registry.create("attack", name, attack_params or {})
    granted = attack.needs | (attack.optional & LEVELS["level-1"])
    view = threat.build_view("level-1", granted, attack, toy, splits, d, None, sc)
    outcome = attack.run(view, seed=5)
    metrics = scoring.score(attack.goal, outcome.prediction, threat.truth(sc, attack.label_of))
    return attack, {**metrics, **threat.attack_report(outcome.diagnostics)}, view


PERMUTATION_ONLY = (("block", 3), ("matrix", "identity"))


def test_permutation_only_disguise_recovered_exactly_from_statistics():
    attack, m, _ = attack_on("permutation-recovery", "block-rmt", PERMUTATION_ONLY)
    _, _, d, _ = cell("block-rmt", PERMUTATION_ONLY)
    assert torch.equal(attack.permutation_, d.permutation_)
    assert m["success"] == 1.0 and m["attack.images"] == 400  # the whole upload, not 30 targets


def test_permutation_recovered_through_orthogonal_matrices():
    attack, m, _ = attack_on("permutation-recovery", "block-rmt", (("block", 3),))
    _, _, d, _ = cell("block-rmt", (("block", 3),))
    assert torch.equal(attack.permutation_, d.permutation_)
    assert m["success"] == 1.0


def test_permutation_recovery_needs_a_block_defense():
    with pytest.raises(PluginError, match="found no block structure"):
        attack_on("permutation-recovery", "instahide", (("k", 2), ("encodings_per_image", 1)))


def test_rmt_moment_attack_inverts_the_paper_scheme_without_pairs():
    _, exact, _ = attack_on("rmt-moment-attack", "block-rmt", PERMUTATION_ONLY)
    assert exact["psnr"] > 60 and exact["attack.split_half_error"] == 0.0
    attack, m, _ = attack_on("rmt-moment-attack", "block-rmt", (("block", 4),))
    _, _, d, _ = cell("block-rmt", (("block", 4),))
    assert m["success"] == 1.0 and m["psnr"] > 25 and m["ssim"] > 0.9
    # Estimated and true matrices agree on the blocks the data spans.
    blocks = to_blocks(cell("block-rmt", (("block", 4),))[1].public.x.double(), 4)[:, 0]
    gap = torch.einsum("npij,pjk->npik", blocks, attack.matrices_ - d.matrices_).norm()
    assert float(gap / torch.einsum("npij,pjk->npik", blocks, d.matrices_).norm()) < 0.15
    assert 0 < m["attack.split_half_error"] < 0.5
    # First moments alone are not enough: the second-order equations carry the estimate.
    _, first, _ = attack_on("rmt-moment-attack", "block-rmt", (("block", 4),),
                            {"orthogonal_weight": 0.0, "higher_order": False})
    assert first["psnr"] < m["psnr"] - 3


def test_jigsaw_reassembles_few_blocks_per_image():
    per_image = (("block", 6), ("matrix", "identity"), ("permutation", "image"))
    _, m, _ = attack_on("jigsaw", "block-rmt", per_image)
    assert m["success"] >= 0.8 and m["psnr"] > 40
    scramble = (("block", 6), ("pixel_shuffle", False), ("negative_positive", "none"),
                ("split_bits", False))
    _, s, _ = attack_on("jigsaw", "block-scramble", scramble)
    assert s["success"] >= 0.8
    # Pixel shuffling inside blocks leaves no edges to match.
    _, ele, _ = attack_on("jigsaw", "block-scramble", (("block", 6),))
    assert ele["advantage"] < s["advantage"] - 0.5


def test_jigsaw_solves_a_shared_key_with_rotations_and_inversions_once_for_all_images():
    etc = (("block", 4), ("pixel_shuffle", False), ("split_bits", False), ("rotate_flip", True),
           ("negative_positive", "block"))
    attack, m, _ = attack_on("jigsaw", "block-scramble", etc)
    assert m["attack.orientations"] == 16.0 and m["attack.shared_key"] == 1.0
    assert m["success"] == 1.0 and m["psnr"] > 60
    # Its solution is the key: slot s holds disguised block solution // 16 (scrambled position).
    _, _, d, _ = cell("block-scramble", etc)
    assert torch.equal(attack.solution_ // 16, torch.argsort(d.block_perm_))
    # Each image alone is too small a puzzle for 16 orientations per block.
    _, alone, _ = attack_on("jigsaw", "block-scramble", etc, {"scope": "image"})
    assert alone["success"] < 0.5


def test_instahide_carlini_recovers_private_images_with_small_k_and_large_t():
    weak = (("k", 2), ("encodings_per_image", 10))
    attack, m, view = attack_on("instahide-carlini", "instahide", weak, task="strokes")
    assert m["success"] >= 0.8, m
    assert m["attack.encodings"] == len(view.upload) == 4000
    # Each target's cluster is the target and encodings sharing one of its private images.
    _, _, d, sc = cell("instahide", weak, "strokes")
    sources = d.transform(cell("instahide", weak, "strokes")[1].train).source
    groups = sources[attack.groups_]  # (n, m, k)
    shared = (groups[:, 1:, :, None] == groups[:, :1, None, :]).any(-1).any(-1)
    assert float(shared.double().mean()) > 0.8
    # One encoding per image leaves little to cluster.
    _, once, _ = attack_on("instahide-carlini", "instahide",
                           (("k", 2), ("encodings_per_image", 1)), task="strokes")
    assert once["success"] < m["success"]


def test_neuracrypt_break_reidentifies_shuffled_patches():
    # Handwritten digits (16×16 here), whose patch statistics depend on the position as in
    # the x-rays NeuraCrypt was proposed for.
    task = registry.create("task", "digits", {"size": 16})
    splits = task.load(seed=0)
    d = registry.create("defense", "neuracrypt", {"patch": 4}).fit(splits.train, seed=11)
    sc = threat.build_scenario(splits, d.transform(splits.train), n_targets=60, n_known=30, seed=3)

    def run(params: dict) -> float:
        attack = registry.create("attack", "neuracrypt-break", params)
        view = threat.build_view("level-1", attack.needs | attack.optional, attack, task, splits,
                                 d, None, sc)
        prediction = attack.run(view, seed=5).prediction
        return scoring.score("reidentify", prediction, threat.truth(sc))["success"]

    assert run({}) >= 0.9
    # Patch statistics alone are a weak start; the regression rounds turn it into a break.
    assert run({"boost_rounds": 0}) < 0.5


def test_view_grants_the_whole_upload_at_level_1_without_sources_or_withheld_labels():
    from disguisebench.attacks import target_rows

    toy, splits, d, sc = cell("instahide", (("k", 2), ("encodings_per_image", 3)))
    assert UPLOAD in LEVELS["level-1"]
    attack = registry.create("attack", "instahide-carlini")
    view = threat.build_view("level-1", attack.needs, attack, toy, splits, d, None, sc)
    assert len(view.upload) == 3 * len(splits.train) and view.upload.source is None
    assert torch.equal(view.upload.x[target_rows(view)], view.targets.x)

    class Labels(Attack):
        goal = LABEL
        needs = frozenset({UPLOAD})

    hidden = threat.build_view("level-1", Labels.needs, Labels(), toy, splits, d, None, sc)
    assert hidden.upload.y is None and hidden.targets is None
    with pytest.raises(PluginError, match="2 targets are not rows"):
        target_rows(ThreatView(level="level-1", task=toy, num_classes=4,
                               targets=Data(torch.rand(2, 1, 12, 12)), upload=view.upload))


def test_one_block_per_image_has_nothing_to_permute():
    attack, m, _ = attack_on("permutation-recovery", "block-rmt", (("block", 12),))
    assert attack.permutation_.tolist() == [0] and m.get("attack.swaps", 0.0) == 0.0
    _, moment, _ = attack_on("rmt-moment-attack", "block-rmt", (("block", 12),))
    assert moment["success"] > 0.5  # the matrix is still estimated and inverted


@pytest.mark.parametrize("block", [2, 4])
def test_ecb_repeats_trace_the_silhouette_of_aes_disguised_strokes(block):
    _, m, _ = attack_on("template-match", "block-aes", (("block", block),),
                        {"feature": "block-repeats"}, task="strokes")
    _, pixels, _ = attack_on("template-match", "block-aes", (("block", block),),
                             {"feature": "pixels"}, task="strokes")
    assert m["success"] > 0.5 and pixels["success"] < 0.2
