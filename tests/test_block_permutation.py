from __future__ import annotations

import pytest
import torch

from disguisebench import registry
from disguisebench.api import Data, PluginError
from disguisebench.blocks import permute_blocks, to_blocks


def images(n=4, c=1, side=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.rand(n, c, side, side, generator=gen), torch.arange(n))


def perm(**params):
    return registry.create("defense", "block-permutation", params)


def test_blocks_move_unchanged_to_the_secret_positions():
    data = images(c=3)
    d = perm(block=3).fit(data, seed=0)
    out = d.transform(data).x
    assert torch.equal(to_blocks(out, 3), to_blocks(data.x, 3)[:, :, d.permutation_])
    assert not torch.equal(out, data.x)


def test_permute_blocks_per_image_and_its_inverse():
    x = images(n=3, side=8).x
    p = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    out = permute_blocks(x, p, 2)
    for i in range(3):
        assert torch.equal(to_blocks(out, 2)[i], to_blocks(x, 2)[i][:, p[i]])
    assert torch.equal(permute_blocks(out, torch.argsort(p, dim=1), 2), x)


def test_per_image_permutations_differ_between_images():
    same = Data(images(n=1).x.expand(6, 1, 12, 12).contiguous())
    out = perm(block=2, permutation="image").fit(same, seed=0).transform(same).x
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 6))
    # ... while every image keeps its multiset of blocks.
    flat = to_blocks(out, 2).flatten(3)
    ref = to_blocks(same.x, 2).flatten(3)
    key = lambda b: b.sum(-1).sort(-1).values  # noqa: E731
    assert torch.allclose(key(flat), key(ref).expand_as(key(flat)))


def test_same_key_same_output_different_keys_differ():
    data = images()
    a = perm().fit(data, seed=0).transform(data).x
    assert torch.equal(perm().fit(data, seed=0).transform(data).x, a)
    assert not torch.equal(perm().fit(data, seed=1).transform(data).x, a)


def test_owner_recovers_images_exactly():
    data = images(c=3)
    d = perm(block=4).fit(data, seed=2)
    assert torch.equal(d.inverse(d.transform(data)).x, data.x)
    padded = perm(block=5, padding="edge").fit(data, seed=2)
    assert padded.transform(data).x.shape == (4, 3, 15, 15)
    assert torch.equal(padded.inverse(padded.transform(data)).x, data.x)


def test_block_not_dividing_the_image_is_a_clear_error():
    with pytest.raises(PluginError, match=r"block-permutation: block=5 does not divide the image "
                                          r"side 12; choose a divisor of 12 .* or set padding='edge'"):
        perm(block=5).fit(images(), seed=0)


def test_bad_scope_names_the_choices():
    with pytest.raises(PluginError, match=r"permutation='none' is not one of 'dataset', 'image'"):
        perm(permutation="none")
