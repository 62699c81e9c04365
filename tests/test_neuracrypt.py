from __future__ import annotations

import pytest
import torch
from torch import nn

from disguisebench import registry
from disguisebench.api import Data, PluginError
from disguisebench.defenses.neuracrypt import NeuraCrypt


def images(n: int = 5, c: int = 1, side: int = 8, seed: int = 0) -> Data:
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.rand(n, c, side, side, generator=gen), torch.arange(n))


def reference_network(d: NeuraCrypt) -> nn.Module:
    """The reference encoder's layers (patch conv, 1×1 conv + BatchNorm + ReLU, mixer) loaded
    with the defense's weights, BatchNorm in eval mode with the frozen statistics."""
    width, c, p, _ = d.patch_weight_.shape
    layers = [nn.Conv2d(c, width, p, stride=p), nn.ReLU()]
    layers[0].weight.data, layers[0].bias.data = d.patch_weight_, d.patch_bias_
    for i in range(d.depth):
        conv, norm = nn.Conv2d(width, width, 1), nn.BatchNorm2d(width, eps=1e-5)
        conv.weight.data = d.layer_weights_[i].view(width, width, 1, 1)
        conv.bias.data = d.layer_biases_[i]
        norm.running_mean.copy_(d.norm_mean_[i])
        norm.running_var.copy_(d.norm_std_[i] ** 2 - 1e-5)
        layers += [conv, norm, nn.ReLU()]
    encoder = nn.Sequential(*layers).eval()
    mixer = nn.Linear(width, width)
    mixer.weight.data, mixer.bias.data = d.mixer_weight_, d.mixer_bias_

    class Reference(nn.Module):
        def forward(self, x):
            z = encoder(x)
            n, _, h, w = z.shape
            tokens = torch.relu(z + d.position_).flatten(2).transpose(1, 2)  # (N, P, D)
            return mixer(tokens).transpose(1, 2).reshape(n, width, h, w)

    return Reference()


@pytest.mark.parametrize("channels", [1, 3])
def test_matches_the_reference_layers(channels):
    data = images(c=channels)
    d = NeuraCrypt(patch=4, width=16, depth=2, shuffle="none").fit(data, seed=1)
    out = d.transform(data)
    assert out.x.shape == (5, 16, 2, 2)
    with torch.no_grad():
        expected = reference_network(d)(data.x)
    assert torch.allclose(out.x, expected, atol=1e-5)


def test_normalisation_is_frozen_at_fit_so_encodings_do_not_depend_on_the_batch():
    data = images(n=8)
    d = NeuraCrypt(width=8, shuffle="none").fit(data, seed=2)
    assert torch.allclose(d.transform(data[:3]).x, d.transform(data).x[:3], atol=1e-6)


def test_each_image_gets_its_own_patch_order():
    one = images(n=1)
    same = Data(one.x.repeat(6, 1, 1, 1))
    plain = NeuraCrypt(width=8, shuffle="none").fit(same, seed=3).transform(same).x
    shuffled = NeuraCrypt(width=8).fit(same, seed=3).transform(same).x
    tokens = shuffled.flatten(2).transpose(1, 2)  # (N, P, D)
    reference = plain[0].flatten(1).t()
    # Every image holds the same patch vectors, each in an order of its own.
    for t in tokens:
        assert torch.allclose(t[torch.argsort(t[:, 0])], reference[torch.argsort(reference[:, 0])])
    orders = {tuple(torch.argsort(t[:, 0]).tolist()) for t in tokens}
    assert len(orders) > 1


def test_grid_shape_and_padding():
    data = images(side=30)
    with pytest.raises(PluginError, match="patch=7 does not divide the image side 30"):
        NeuraCrypt(patch=7).fit(data, seed=0)
    out = NeuraCrypt(patch=7, width=4, padding="edge").fit(data, seed=0).transform(data)
    assert out.x.shape == (5, 4, 5, 5)


def test_mnist_sized_encodings_fit_the_paper_cnn():
    data = Data(torch.rand(3, 1, 28, 28))
    out = NeuraCrypt().fit(data, seed=0).transform(data)
    assert out.x.shape == (3, 64, 7, 7)
    model = registry.create("task", "mnist", {"model": "paper-cnn"}).build_model(out.image_shape, 10)
    assert model(out.x).shape == (3, 10)


def test_bad_values_are_named():
    with pytest.raises(PluginError, match="shuffle='batch' is not one of"):
        NeuraCrypt(shuffle="batch").fit(images(), seed=0)
    with pytest.raises(PluginError, match="depth=-1 is outside"):
        NeuraCrypt(depth=-1).fit(images(), seed=0)
    d = NeuraCrypt().fit(images(), seed=0)
    with pytest.raises(PluginError, match=r"fitted on images of shape \(1, 8, 8\)"):
        d.transform(images(c=3))
