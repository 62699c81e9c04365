from __future__ import annotations

import pytest
import torch

from disguisebench import scoring
from disguisebench.api import PluginError
from disguisebench.scoring import Truth


def test_advantage_scale():
    assert scoring.advantage(1.0, 0.1) == 1.0
    assert scoring.advantage(0.1, 0.1) == 0.0
    assert scoring.advantage(0.05, 0.1) == 0.0
    assert scoring.advantage(0.55, 0.1) == pytest.approx(0.5)


def test_reidentify_counts_any_original_of_a_mixed_target():
    gallery = torch.rand(10, 1, 4, 4)
    gi = torch.tensor([[0, 3], [1, -1], [2, -1], [4, 5]])
    truth = Truth(gallery_index=gi, gallery=gallery)
    m = scoring.score("reidentify", torch.tensor([3, 1, 9, 9]), truth)
    assert m["success"] == 0.5
    # chance counts all originals: (2 + 1 + 1 + 2) / 4 / 10
    assert m["chance"] == pytest.approx(0.15)
    assert m["advantage"] == pytest.approx((0.5 - 0.15) / 0.85)


def test_reconstruct_nearest_gallery_image_and_quality():
    gallery = torch.rand(6, 1, 8, 8)
    gi = torch.tensor([[2], [5]])
    perfect = scoring.score("reconstruct", gallery[[2, 5]], Truth(gallery_index=gi, gallery=gallery))
    assert perfect["success"] == 1.0 and perfect["ssim"] == pytest.approx(1.0)
    wrong = scoring.score("reconstruct", gallery[[0, 1]], Truth(gallery_index=gi, gallery=gallery))
    assert wrong["success"] == 0.0 and wrong["ssim"] < 0.9


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 16, 16, generator=gen)
    b = (a + 0.2 * torch.rand(3, 1, 16, 16, generator=gen)).clamp(0, 1)
    ours = scoring.ssim(a, b)
    for i in range(3):
        ref = structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), data_range=1.0)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-5)


def test_label_chance_is_majority_share():
    truth = Truth(labels=torch.tensor([0, 0, 0, 1]))
    m = scoring.score("label", torch.tensor([0, 0, 0, 0]), truth)
    assert m["success"] == 0.75 and m["chance"] == 0.75 and m["advantage"] == 0.0


def test_membership_auc_and_tpr():
    member = torch.tensor([True, True, False, False])
    m = scoring.score("membership", torch.tensor([0.9, 0.8, 0.1, 0.2]), Truth(member=member))
    assert m["success"] == 1.0 and m["advantage"] == 1.0 and m["tpr_at_1pct_fpr"] == 1.0
    m = scoring.score("membership", torch.tensor([0.5, 0.5, 0.5, 0.5]), Truth(member=member))
    assert m["success"] == 0.5 and m["advantage"] == 0.0


def test_wrong_shape_and_nan_are_named():
    truth = Truth(labels=torch.tensor([0, 1, 1]))
    with pytest.raises(PluginError, match=r"returned shape \(2,\), expected \(3,\)"):
        scoring.score("label", torch.tensor([0, 1]), truth)
    gallery = torch.rand(4, 1, 2, 2)
    with pytest.raises(PluginError, match="NaN"):
        scoring.score("reconstruct", torch.full((1, 1, 2, 2), float("nan")),
                      Truth(gallery_index=torch.tensor([[0]]), gallery=gallery))
