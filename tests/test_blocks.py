"""The public block geometry (disguisebench.blocks) and the layouts block defenses declare."""

from __future__ import annotations

import pytest
import torch

from disguisebench import registry
from disguisebench.api import PluginError
from disguisebench.attacks import discover
from disguisebench.attacks.neuracrypt_break import NeuraCryptBreak
from disguisebench.blocks import BlockLayout, from_blocks, pad_to_blocks, to_blocks


def test_blocks_round_trip_in_raster_order():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    b = to_blocks(x, 2)
    assert b[0, 0, 1].tolist() == [[2.0, 3.0], [6.0, 7.0]]  # second block: top right
    assert torch.equal(from_blocks(b, 4, 4), x)


def test_edge_padding_replicates_the_last_row_and_column():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    padded = pad_to_blocks(x, 2, "test", "edge")
    assert padded.shape == (1, 1, 4, 4)
    assert padded[0, 0, 3].tolist() == [6.0, 7.0, 8.0, 8.0]


def test_a_layout_that_does_not_fit_names_the_parameter_and_the_divisors():
    with pytest.raises(PluginError, match=r"patch=5 does not divide the image side 28; choose a "
                                          r"divisor of 28 \(1, 2, 4, 7, 14, 28\)"):
        BlockLayout.of("test", (1, 28, 28), 5, param="patch")
    lay = BlockLayout.of("test", (1, 28, 28), 5, padding="edge", block_out=1, moves="image")
    assert (lay.grid, lay.positions, lay.padded_size, lay.disguised_size) == \
        ((6, 6), 36, (30, 30), (6, 6))


@pytest.mark.parametrize("name,params,expected", [
    ("block-rmt", {"block": 4}, BlockLayout(4, (3, 3), 4, "dataset")),
    ("block-rmt", {"block": 5, "permutation": "image", "padding": "edge"},
     BlockLayout(5, (3, 3), 5, "image", "edge")),
    ("block-permutation", {"block": 3}, BlockLayout(3, (4, 4), 3, "dataset")),
    ("block-scramble", {"block": 4, "block_scramble": False}, BlockLayout(4, (3, 3), 4)),
    ("block-aes", {"block": 2}, BlockLayout(2, (6, 6), 4)),
    ("pixelate", {"block": 4, "keep_size": False}, BlockLayout(4, (3, 3), 1)),
    ("neuracrypt", {"patch": 4}, BlockLayout(4, (3, 3), 1, "image")),
    ("blur", {}, None),
])
def test_block_defenses_declare_their_layout_from_hyperparameters(name, params, expected):
    assert registry.create("defense", name, params).block_layout((1, 12, 12)) == expected


@pytest.mark.parametrize("name,params", [
    ("block-rmt", {"block": 4}), ("block-rmt", {"block": 3, "matrix": "identity"}),
    ("block-permutation", {"block": 4}), ("block-scramble", {"block": 3}),
    ("block-aes", {"block": 4}), ("pixelate", {"block": 3}),
])
def test_declared_layouts_agree_with_what_probing_finds(name, params):
    """The declared block is the unit that probing the keyless clone finds, so an attack gets
    the same geometry either way."""
    defense = registry.create("defense", name, params)
    images = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    lay, found = defense.block_layout(images.shape[1:]), discover(defense, images)
    assert found.found and (found.unit, found.unit_out) == (lay.block, lay.block_out)
    assert found.scope == lay.moves


@pytest.mark.parametrize("name,params,expected", [
    ("neuracrypt", {"patch": 4, "width": 8}, (4, True)),
    ("neuracrypt", {"patch": 4, "width": 8, "shuffle": "none"}, (4, False)),
    ("pixelate", {"block": 4, "keep_size": False}, (4, False)),
    ("block-rmt", {"block": 4}, (1, False)),  # blocks of pixels: one pixel per grid cell
])
def test_neuracrypt_break_takes_the_patch_grid_from_the_layout(name, params, expected):
    defense = registry.create("defense", name, params)
    grid = defense.output_shape((1, 28, 28))[1:]
    assert NeuraCryptBreak().patch_layout(defense, (1, 28, 28), grid) == expected
