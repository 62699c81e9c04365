from __future__ import annotations

import pytest
import torch

from disguisebench.api import Data, PluginError
from disguisebench.blocks import to_blocks
from disguisebench.defenses.block_scramble import BlockScramble

LE = dict(block_scramble=False, pixel_shuffle=True, split_bits=True, negative_positive="pixel",
          key_scope="shared")
ELE = dict(LE, block_scramble=True, key_scope="block")
ETC = dict(block_scramble=True, pixel_shuffle=False, split_bits=False, rotate_flip=True,
           negative_positive="block", channel_shuffle=True, key_scope="block")


def images(n: int = 4, c: int = 1, side: int = 8, seed: int = 0) -> Data:
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.rand(n, c, side, side, generator=gen))


def quantised(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255) / 255


def test_defaults_are_the_ele_setting():
    assert BlockScramble().get_params() == {**ELE, "block": 4, "rotate_flip": False,
                                            "channel_shuffle": False, "padding": "error"}


@pytest.mark.parametrize("setting", [LE, ELE, ETC], ids=["LE", "ELE", "EtC"])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_owner_decrypts_every_setting(setting, channels):
    data = images(c=channels)
    d = BlockScramble(**setting).fit(data, seed=3)
    out = d.transform(data)
    assert out.x.shape == data.x.shape
    assert float(out.x.min()) >= 0 and float(out.x.max()) <= 1
    assert (out.x - data.x).abs().mean() > 0.1
    back = d.inverse(out).x
    expected = quantised(data.x) if setting["split_bits"] else data.x
    assert torch.allclose(back, expected, atol=1e-6)


def test_edge_padding_keeps_the_padded_size_and_inverts():
    data = images(side=10)
    with pytest.raises(PluginError, match="block=4 does not divide the image side 10"):
        BlockScramble().fit(data, seed=0)
    d = BlockScramble(padding="edge").fit(data, seed=0)
    out = d.transform(data)
    assert out.x.shape == (4, 1, 12, 12)
    assert torch.allclose(d.inverse(out).x, quantised(data.x), atol=1e-6)


def test_split_bits_outputs_8_bit_values():
    out = BlockScramble().fit(images(), seed=0).transform(images())
    assert torch.allclose(out.x * 255, torch.round(out.x * 255), atol=1e-4)


def tiled(c: int = 1) -> Data:
    """Images made of one 4×4 block repeated at every block position."""
    gen = torch.Generator().manual_seed(9)
    return Data(torch.rand(2, c, 4, 4, generator=gen).repeat(1, 1, 2, 2))


def test_le_uses_one_key_for_every_block_and_ele_one_per_block():
    le = to_blocks(BlockScramble(**LE).fit(tiled(), seed=1).transform(tiled()).x, 4)
    assert all(torch.equal(le[:, :, 0], le[:, :, p]) for p in range(1, 4))
    ele = to_blocks(BlockScramble(**ELE).fit(tiled(), seed=1).transform(tiled()).x, 4)
    assert not any(torch.equal(ele[:, :, 0], ele[:, :, p]) for p in range(1, 4))


def test_block_scrambling_alone_moves_whole_blocks():
    data = images()
    plain = dict(pixel_shuffle=False, negative_positive="none", split_bits=False)
    d = BlockScramble(**plain).fit(data, seed=2)
    out = to_blocks(d.transform(data).x, 4)
    src = to_blocks(data.x, 4)
    assert torch.equal(out, src[:, :, d.block_perm_])
    assert not torch.equal(d.block_perm_, torch.arange(4))


def test_negative_positive_inverts_a_keyed_half_of_the_values_in_every_block():
    data = images(c=3)
    d = BlockScramble(block_scramble=False, pixel_shuffle=False, split_bits=False,
                      negative_positive="pixel").fit(data, seed=4)
    out = to_blocks(d.transform(data).x, 4)
    src = to_blocks(data.x, 4)
    inverted = torch.isclose(out, 1 - src) & ~torch.isclose(out, src)
    per_block = inverted.permute(0, 2, 1, 3, 4).flatten(2).sum(2)
    assert (per_block == 3 * 16 // 2).all()


def test_etc_blocks_are_rotated_flipped_inverted_and_recoloured_copies():
    import itertools

    data = images(n=3, c=3)
    d = BlockScramble(**ETC).fit(data, seed=5)
    out = to_blocks(d.transform(data).x, 4)  # (N, C, P, 4, 4)
    src = to_blocks(data.x, 4)[:, :, d.block_perm_]
    inverted = 0
    for p in range(4):
        a, b = out[:, :, p], src[:, :, p]
        candidates = []
        for flip, quarter, order in itertools.product((False, True), range(4),
                                                      itertools.permutations(range(3))):
            base = torch.rot90((1 - b if flip else b)[:, list(order)], quarter, (2, 3))
            candidates += [(flip, base), (flip, base.flip(2)), (flip, base.flip(3))]
        # The same keyed rotation, flip, inversion and channel order map every image's block.
        hits = [flip for flip, c in candidates if torch.allclose(a, c, atol=1e-6)]
        assert hits, f"block {p} is no rotated, flipped, recoloured copy of its source block"
        inverted += hits[0]
    assert inverted == 2  # a keyed half of the 4 block positions


def test_channel_shuffle_is_a_no_op_on_grayscale_but_not_on_colour():
    setting = dict(block_scramble=False, pixel_shuffle=False, split_bits=False,
                   negative_positive="none", channel_shuffle=True)
    gray = images()
    assert torch.equal(BlockScramble(**setting).fit(gray, seed=0).transform(gray).x, gray.x)
    colour = images(c=3)
    outs = [BlockScramble(**setting).fit(colour, seed=s).transform(colour).x for s in range(6)]
    assert any(not torch.equal(o, colour.x) for o in outs)


def test_fitted_shape_is_enforced_and_bad_values_named():
    d = BlockScramble().fit(images(), seed=0)
    with pytest.raises(PluginError, match=r"fitted on images of shape \(1, 8, 8\)"):
        d.transform(images(c=3))
    with pytest.raises(PluginError, match="negative_positive='half' is not one of"):
        BlockScramble(negative_positive="half").fit(images(), seed=0)
    with pytest.raises(PluginError, match="rotate_flip=1 must be true or false"):
        BlockScramble(rotate_flip=1).fit(images(), seed=0)
