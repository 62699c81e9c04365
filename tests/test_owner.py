from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from disguisebench import owner, registry
from disguisebench.api import Data, PluginError
from disguisebench.cli import main


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
        assert np.array_equal(np.asarray(Image.open(tmp_path / "back" / "photos" / f"{i}.png")),
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
    assert owner.read_images(tmp_path)[0].x.shape == (1, 1, 12, 12)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    x = owner.read_images(tmp_path)[0].x
    assert x.shape == (2, 3, 12, 12)
    assert torch.equal(x[0, 2], torch.from_numpy(grey).float() / 255)


def test_sub_folders_are_read_and_names_restored_by_undisguise(tmp_path, capsys):
    rng = np.random.default_rng(2)
    src = tmp_path / "train"
    files = ["a.png", "cats/b.png", "cats/deep/c.jpg", "dogs/d.PNG"]
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
            src / name, **({"quality": 100} if name.endswith("jpg") else {}))
    (src / "notes.txt").write_text("not an image")
    key = tmp_path / "k"
    assert main(["disguise", "--defense", "block-permutation", "--set", "block=4", "--in",
                 str(src), "--out", str(tmp_path / "up"), "--key", str(key)]) == 0
    up = np.load(tmp_path / "up" / "train.npz")
    assert up["x"].shape == (4, 1, 8, 8)
    assert up["names"].tolist() == files
    assert main(["undisguise", "--in", str(tmp_path / "up" / "train.npz"), "--out",
                 str(tmp_path / "back"), "--key", str(key), "--png"]) == 0
    back = tmp_path / "back" / "train"
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*.png")) == [
        "a.png", "cats/b.png", "cats/deep/c.png", "dogs/d.png"]
    for name in ("a.png", "cats/b.png"):
        assert np.array_equal(np.asarray(Image.open(back / name)), np.asarray(Image.open(src / name)))


def test_undisguise_refuses_another_key_of_the_same_defense(tmp_path, npz, capsys):
    mine, other = tmp_path / "mine.key", tmp_path / "other.key"
    args = ["--defense", "block-rmt", "--set", "block=3"]
    assert main(["disguise", *args, "--in", str(npz), "--out", str(tmp_path / "a"),
                 "--key", str(mine)]) == 0
    assert main(["disguise", *args, "--in", str(npz), "--out", str(tmp_path / "b"),
                 "--key", str(other)]) == 0
    upload = np.load(tmp_path / "a" / "train.npz")
    fp = str(upload["key_fingerprint"])
    assert len(fp) == 64 and fp == owner.fingerprint(mine) != owner.fingerprint(other)
    assert fp.encode() not in mine.read_bytes()  # a keyed hash of the key, not the key
    capsys.readouterr()
    code = main(["undisguise", "--in", str(tmp_path / "a" / "train.npz"), "--out",
                 str(tmp_path / "back"), "--key", str(other), "--png"])
    assert code == 2
    assert "was disguised with another key than" in capsys.readouterr().err
    assert not (tmp_path / "back").exists()
    assert main(["undisguise", "--in", str(tmp_path / "a" / "train.npz"), "--out",
                 str(tmp_path / "back"), "--key", str(mine)]) == 0


def test_mixed_sizes_name_the_odd_file_and_a_failed_disguise_leaves_nothing(tmp_path, capsys,
                                                                           monkeypatch):
    src = tmp_path / "imgs"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(src / f"{i}.png")
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(src / "sub" / "odd.png")
    out, key = tmp_path / "out" / "deeper", tmp_path / "k"
    code = main(["disguise", "--defense", "block-rmt", "--set", "block=4", "--in", str(src),
                 "--out", str(out), "--key", str(key)])
    err = capsys.readouterr().err
    assert code == 2
    assert "sub/odd.png" in err and "12×10 pixels" in err and "3 of the 4 images are 12×12" in err
    assert not (tmp_path / "out").exists() and not key.exists()
    # a failure after the key was drawn and the output folder made: the disk fills up
    (src / "sub" / "odd.png").unlink()

    def full(file, **arrays):
        file.write(b"PK")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    code = main(["disguise", "--defense", "block-rmt", "--set", "block=4", "--in", str(src),
                 "--out", str(out), "--key", str(key)])
    assert code == 1 and "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not key.exists()
