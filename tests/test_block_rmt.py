from __future__ import annotations

import pytest
import torch

from disguisebench import registry
from disguisebench.api import Data, PluginError
from disguisebench.blocks import from_blocks, to_blocks
from disguisebench.defenses import haar_orthogonal


def digits(n=5, c=1, side=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.rand(n, c, side, side, generator=gen), torch.zeros(n, dtype=torch.long))


def rmt(**params):
    return registry.create("defense", "block-rmt", params)


def test_haar_matrices_are_orthogonal_with_determinant_one():
    q = haar_orthogonal(50, 4, torch.Generator().manual_seed(0))
    eye = torch.eye(4, dtype=torch.float64).expand(50, 4, 4)
    assert torch.allclose(q @ q.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(q), torch.ones(50, dtype=torch.float64))


@pytest.mark.parametrize("matrix", ["orthogonal", "projection", "identity"])
def test_owner_recovers_images_without_noise(matrix):
    data = digits(c=3)
    d = rmt(block=4, matrix=matrix).fit(data, seed=0)
    back = d.inverse(d.transform(data))
    assert (back.x - data.x).abs().max() < 1e-5


def test_orthogonal_rmt_keeps_block_norms_and_permutes_positions():
    data = digits()
    d = rmt(block=3).fit(data, seed=0)
    out = d.transform(data).x
    norms_in = to_blocks(data.x, 3).flatten(3).norm(dim=3)
    norms_out = to_blocks(out, 3).flatten(3).norm(dim=3)
    assert torch.allclose(norms_out, norms_in[:, :, d.permutation_], atol=1e-5)


def test_uniform_noise_after_in_0_255_units():
    data = digits()
    clean = rmt(block=4).fit(data, seed=0)
    noisy = rmt(block=4, sigma=51.0).fit(data, seed=0)
    diff = noisy.transform(data).x - clean.transform(data).x
    assert 0 <= float(diff.min()) and float(diff.max()) < 51 / 255
    assert float(diff.mean()) == pytest.approx(25.5 / 255, abs=0.01)


def test_per_image_permutations_differ_between_images():
    data = Data(torch.ones(2, 1, 8, 8) * torch.arange(64.0).reshape(1, 1, 8, 8) / 64)
    d = rmt(block=2, matrix="identity", permutation="image").fit(data, seed=0)
    out = d.transform(data).x
    assert not torch.equal(out[0], out[1])


def test_block_not_dividing_the_image_is_a_clear_error():
    with pytest.raises(PluginError, match=r"block=5 does not divide the image side 12; choose a "
                                          r"divisor of 12 \(1, 2, 3, 4, 6, 12\) or set padding='edge'"):
        rmt(block=5).fit(digits(), seed=0)


def test_edge_padding_when_asked():
    d = rmt(block=5, padding="edge").fit(digits(), seed=0)
    assert d.transform(digits()).x.shape == (5, 1, 15, 15)
    assert (d.inverse(d.transform(digits())).x - digits().x).abs().max() < 1e-5


def test_pixelate_keeps_size_and_block_means():
    data = digits(side=8)
    out = registry.create("defense", "pixelate", {"block": 4}).fit(data, seed=0).transform(data).x
    assert out.shape == data.x.shape
    assert float(out[0, 0, :4, :4].std()) == 0.0
    assert float(out[0, 0, 0, 0]) == pytest.approx(float(data.x[0, 0, :4, :4].mean()), abs=1e-6)


def test_out_of_range_input_is_rejected():
    bad = Data(torch.full((2, 1, 4, 4), 2.0))
    with pytest.raises(PluginError, match=r"pixel values span \[2, 2\]; expected \[0, 1\]"):
        rmt(block=2).fit(bad, seed=0)


def reference_rmt(x, d):
    """Block by block, as the paper states it: B_p · R_p, then output position j takes block perm[j]."""
    blocks = torch.einsum("ncpij,pjk->ncpik", to_blocks(x, d.block).double(), d.matrices_)
    if d.permutation == "dataset":
        blocks = blocks[:, :, d.permutation_]
    return from_blocks(blocks, *x.shape[-2:]).float()


@pytest.mark.parametrize("block,side", [(1, 8), (2, 12), (3, 12), (4, 64), (6, 12), (12, 12)])
@pytest.mark.parametrize("permutation", ["none", "dataset"])
def test_transform_matches_the_block_by_block_definition(block, side, permutation):
    data = digits(n=3, c=2, side=side)
    d = rmt(block=block, permutation=permutation, matrix="projection").fit(data, seed=0)
    assert torch.allclose(d.transform(data).x, reference_rmt(data.x, d), atol=1e-5)


def test_same_key_same_output_and_different_keys_differ():
    data = digits()
    for params in ({}, {"sigma": 25.0}, {"permutation": "image"}):
        a = rmt(**params).fit(data, seed=0).transform(data).x
        assert torch.equal(rmt(**params).fit(data, seed=0).transform(data).x, a)
        assert (rmt(**params).fit(data, seed=1).transform(data).x - a).abs().max() > 0.1


def test_owner_recovers_permuted_rgb_images_with_dataset_permutation():
    data = digits(c=3, side=12)
    d = rmt(block=3, permutation="dataset", noise_stage="before").fit(data, seed=4)
    assert (d.inverse(d.transform(data)).x - data.x).abs().max() < 1e-5


def test_per_image_permutations_cannot_be_inverted():
    data = digits()
    d = rmt(block=4, permutation="image").fit(data, seed=0)
    with pytest.raises(PluginError, match="per-image permutations are drawn afresh"):
        d.inverse(d.transform(data))


def test_noise_before_rmt_is_spread_by_the_matrices():
    data = digits()
    clean = rmt(block=4).fit(data, seed=0)
    noisy = rmt(block=4, sigma=51.0, noise_stage="before").fit(data, seed=0)
    diff = clean.inverse(noisy.transform(data)).x - data.x
    # Undone matrices leave exactly the noise that went in: uniform on [0, 51/255).
    assert 0 <= float(diff.min()) + 1e-5 and float(diff.max()) < 51 / 255 + 1e-5
    assert float(diff.mean()) == pytest.approx(25.5 / 255, abs=0.01)


def test_gaussian_noise_has_sigma_in_0_255_units():
    data = digits(n=20, side=12)
    clean = rmt(block=4).fit(data, seed=0).transform(data).x
    noisy = rmt(block=4, noise="gaussian", sigma=25.5).fit(data, seed=0).transform(data).x
    assert float((noisy - clean).std()) == pytest.approx(0.1, rel=0.05)
    assert float((noisy - clean).mean()) == pytest.approx(0.0, abs=0.01)


def test_orthogonal_output_is_real_valued_and_not_clipped():
    data = digits()
    out = rmt(block=4).fit(data, seed=0).transform(data).x
    assert float(out.min()) < 0 and out.dtype == torch.float32


def test_inverse_checks_the_disguised_size():
    data = digits()
    d = rmt(block=4).fit(data, seed=0)
    with pytest.raises(PluginError, match=r"expected disguised images of size \(12, 12\), got \(8, 8\)"):
        d.inverse(Data(torch.zeros(1, 1, 8, 8)))


def test_transform_checks_the_image_size_of_the_key():
    d = rmt(block=4).fit(digits(), seed=0)
    with pytest.raises(PluginError,
                       match=r"the key was drawn for images of size \(12, 12\), got \(8, 8\)"):
        d.transform(digits(side=8))
