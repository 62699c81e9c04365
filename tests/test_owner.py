from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark import owner, registry
from benchmark.api import Data, PluginError
from benchmark.cli import main


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return images


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "train.npz"
    np.savez(path, x=rng.integers(0, 256, (5, 12, 12), dtype=np.uint8), y=np.arange(5) % 2)
    return path


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_folder_round_trip_through_the_cli(tmp_path, folder, capsys):
    key = tmp_path / "owner.key"
    assert main(["disguise", "--defense", "block-rmt", "--set", "block=4", "--in", str(folder),
                 "--out", str(tmp_path / "up"), "--key", str(key)]) == 0
    assert mode(key) == 0o600
    disguised = np.load(tmp_path / "up" / "photos.npz")
    assert disguised["x"].dtype == np.float32 and disguised["x"].shape == (3, 3, 12, 12)
    assert "y" not in disguised
    assert main(["undisguise", "--in", str(tmp_path / "up" / "photos.npz"), "--out",
                 str(tmp_path / "back"), "--key", str(key), "--png"]) == 0
    for i in range(3):
        original = np.asarray(Image.open(folder / f"{i}.png"))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "back" / "photos" / f"{i:06d}.png")),
                              original)
    recovered = np.load(tmp_path / "back" / "photos.npz")["x"]
    original = np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in range(3)])
    assert np.abs(recovered - original.transpose(0, 3, 1, 2) / 255).max() < 1e-5


def test_npz_round_trip_reuses_the_key_for_test_images(tmp_path, npz):
    key = tmp_path / "k"
    assert main(["disguise", "--defense", "block-rmt", "--set", "block=3", "--set", "noise_stage=before",
                 "--in", str(npz), "--out", str(tmp_path / "a"), "--key", str(key)]) == 0
    first = np.load(tmp_path / "a" / "train.npz")
    assert first["y"].tolist() == [0, 1, 0, 1, 0]
    # The same images again (as test images would be) under the stored key: the same output.
    assert main(["disguise", "--in", str(npz), "--out", str(tmp_path / "b"), "--key", str(key)]) == 0
    assert np.array_equal(np.load(tmp_path / "b" / "train.npz")["x"], first["x"])
    assert main(["undisguise", "--in", str(tmp_path / "a" / "train.npz"), "--out",
                 str(tmp_path / "c"), "--key", str(key)]) == 0
    back = np.load(tmp_path / "c" / "train.npz")
    assert np.abs(back["x"][:, 0] - np.load(npz)["x"] / 255).max() < 1e-5
    assert back["y"].tolist() == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("name,params", [("block-aes", {"block": 2, "key_scope": "per-position"}),
                                         ("block-permutation", {"permutation": "dataset"})])
def test_key_file_round_trip_restores_the_same_disguise(tmp_path, name, params):
    data = Data(torch.rand(4, 1, 8, 8))
    defense = registry.create("defense", name, params).fit(data, seed=5)
    owner.write_key(tmp_path / "k", defense)
    restored = owner.defense_for_key(tmp_path / "k", name, params)
    assert torch.equal(restored.transform(data).x, defense.transform(data).x)
    assert restored.get_params() == defense.get_params()


def test_key_file_is_safetensors_with_json_metadata_and_no_pickle(tmp_path):
    from safetensors import safe_open

    data = Data(torch.rand(2, 1, 8, 8))
    owner.write_key(tmp_path / "k", registry.create("defense", "block-rmt").fit(data, seed=0))
    with safe_open(tmp_path / "k", framework="pt") as f:
        assert set(f.keys()) == {"matrices_", "permutation_"}
        assert f.metadata()["format"] == "disguisebench-key/1"


def test_an_existing_key_of_another_defense_is_refused(tmp_path, npz):
    key = tmp_path / "k"
    owner.disguise(npz, tmp_path / "a", key, "block-rmt", {"block": 4})
    with pytest.raises(PluginError, match=r"belongs to defense 'block-rmt', not 'block-aes'"):
        owner.disguise(npz, tmp_path / "b", key, "block-aes", {})
    with pytest.raises(PluginError, match=r"belongs to block-rmt with block=4, not block=3"):
        owner.disguise(npz, tmp_path / "b", key, "block-rmt", {"block": 3})


def test_a_key_file_others_can_read_is_refused(tmp_path, npz):
    key = tmp_path / "k"
    owner.disguise(npz, tmp_path / "a", key, "block-permutation", {})
    os.chmod(key, 0o640)
    with pytest.raises(PluginError, match=r"has mode 0640: group or others may access it"):
        owner.undisguise(tmp_path / "a" / "train.npz", tmp_path / "b", key)


def test_keys_are_never_printed(tmp_path, npz, capsys, caplog):
    key = tmp_path / "k"
    caplog.set_level("DEBUG")
    assert main(["disguise", "--defense", "block-aes", "--in", str(npz), "--out",
                 str(tmp_path / "a"), "--key", str(key)]) == 0
    _, state = owner.read_key(key)
    secret = state["keys_"][0].numpy()
    said = capsys.readouterr()
    text = said.out + said.err + caplog.text
    assert secret.tobytes().hex() not in text and str(secret.tolist()) not in text


def test_undisguise_refuses_a_defense_without_inverse(tmp_path, npz):
    key = tmp_path / "k"
    owner.disguise(npz, tmp_path / "a", key, "pixelate", {})
    with pytest.raises(PluginError, match="pixelate: this defense has no inverse"):
        owner.undisguise(tmp_path / "a" / "train.npz", tmp_path / "b", key)


def test_outputs_are_not_overwritten(tmp_path, npz):
    owner.disguise(npz, tmp_path / "a", tmp_path / "k", "block-rmt", {})
    with pytest.raises(PluginError, match=r"train.npz' already exists"):
        owner.disguise(npz, tmp_path / "a", tmp_path / "k")


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    assert main(["disguise", "--defense", "block-rmt", "--in", str(tmp_path / "nothing"),
                 "--out", str(tmp_path), "--key", str(tmp_path / "k")]) == 2
    assert "is neither an image folder nor an .npz file" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()
    np.savez(tmp_path / "odd.npz", x=np.zeros((2, 12, 12)), y=np.zeros(2))
    assert main(["disguise", "--defense", "block-rmt", "--set", "block=5", "--in",
                 str(tmp_path / "odd.npz"), "--out", str(tmp_path / "o"), "--key",
                 str(tmp_path / "k")]) == 2
    assert "block=5 does not divide the image side 12" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_grey_folders_give_one_channel_and_mixed_folders_three(tmp_path):
    grey = np.arange(144, dtype=np.uint8).reshape(12, 12)
    Image.fromarray(grey).save(tmp_path / "a.png")
    assert owner.read_images(tmp_path).x.shape == (1, 1, 12, 12)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    x = owner.read_images(tmp_path).x
    assert x.shape == (2, 3, 12, 12)
    assert torch.equal(x[0, 2], torch.from_numpy(grey).float() / 255)
