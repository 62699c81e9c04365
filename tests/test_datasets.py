"""Every full-size loader, on tiny files written in the dataset's real on-disk format."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from disguisebench import plan as plan_mod
from disguisebench import registry, runner
from disguisebench.api import PluginError
from disguisebench.store import OK, Store


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed MNIST idx file: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, n_train: int, n_test: int) -> None:
    """Image i of each part is filled with the value i (train) or 200 + i (test); label i % 10."""
    raw = root / folder / "raw"
    for part, n, base in (("train", n_train, 0), ("t10k", n_test, 200)):
        images = np.repeat(np.arange(base, base + n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
        write_idx(raw / f"{part}-images-idx3-ubyte", images)
        write_idx(raw / f"{part}-labels-idx1-ubyte", np.arange(n) % 10)


def write_cifar(root: Path, per_batch: int = 12, n_test: int = 10) -> None:
    """The python version's pickled batches: a dict with ``data`` (N, 3072) uint8 and ``labels``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        labels = [int(v) for v in np.arange(n) % 10]
        # Class c is bright in channel c % 3, so a model can learn it.
        data = rng.integers(0, 60, size=(n, 3, 32, 32), dtype=np.uint8)
        for row, c in enumerate(labels):
            data[row, c % 3] += np.uint8(60 + 15 * c)
        entry = {"batch_label": name, "labels": labels, "data": data.reshape(n, 3072),
                 "filenames": [f"img_{j}.png" for j in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072}, fh)


def test_mnist_full_reads_torchvision_idx_layout(tmp_path):
    write_mnist(tmp_path, "MNIST", n_train=30, n_test=12)
    task = registry.create("task", "mnist-full", {"data_dir": str(tmp_path), "n_train": 20,
                                                  "n_test": 8, "n_public": 10})
    s = task.load(seed=0)
    assert s.train.x.shape == (20, 1, 28, 28) and s.num_classes == 10
    assert s.train.x.dtype == torch.float32
    value = lambda d: (d.x[:, 0, 0, 0] * 255).round().long()  # noqa: E731
    train, public, test = value(s.train), value(s.public), value(s.test)
    # owner-train and public come from the training file, disjoint and together all of it;
    # owner test from the test file
    assert sorted(torch.cat([train, public]).tolist()) == list(range(30))
    assert all(200 <= v < 212 for v in test.tolist()) and len(set(test.tolist())) == 8
    assert torch.equal(s.train.y, train % 10) and torch.equal(s.test.y, (test - 200) % 10)
    assert torch.equal(task.load(seed=0).train.x, s.train.x)
    assert not torch.equal(task.load(seed=1).train.x, s.train.x)


def test_fashion_mnist_reads_its_own_folder_from_the_environment(tmp_path, monkeypatch):
    write_mnist(tmp_path, "FashionMNIST", n_train=25, n_test=10)
    monkeypatch.setenv("DISGUISEBENCH_DATA", str(tmp_path))
    task = registry.create("task", "fashion-mnist", {"n_train": 15, "n_test": 10, "n_public": 10})
    s = task.load(seed=3)
    assert len(s.train) == 15 and len(s.test) == 10 and len(s.public) == 10
    with pytest.raises(PluginError, match=r"mnist-full: dataset not found in .*MNIST/raw/"):
        registry.create("task", "mnist-full").load(seed=0)


def test_cifar10_reads_pickled_batches(tmp_path):
    write_cifar(tmp_path)
    task = registry.create("task", "cifar10", {"data_dir": str(tmp_path), "n_train": 40,
                                               "n_test": 10, "n_public": 20})
    s = task.load(seed=0)
    assert s.train.x.shape == (40, 3, 32, 32) and s.test.x.shape == (10, 3, 32, 32)
    assert s.num_classes == 10 and float(s.train.x.max()) <= 1.0
    # pixel layout: channel-major rows of 1024, as in the published batches
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        raw = pickle.load(fh)
    rows = {tuple(r) for r in raw["data"].tolist()}
    assert all(tuple(r) in rows for r in (s.test.x * 255).round().to(torch.uint8)
               .reshape(10, 3072).tolist())


def test_cifar10_rejects_a_file_that_is_not_a_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    task = registry.create("task", "cifar10", {"data_dir": str(tmp_path)})
    with pytest.raises(PluginError, match=r"data_batch_3 is not a CIFAR-10 batch"):
        task.load(seed=0)


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    import scipy.io

    folder = tmp_path / "svhn"
    folder.mkdir()
    for name, n in (("train_32x32.mat", 30), ("test_32x32.mat", 12)):
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        x[..., :] = np.arange(n, dtype=np.uint8) * 5  # image i is the flat value 5 i
        x[0, 1, 2, :] = 255  # row 0, column 1, channel 2: checks the axis order
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10; 10 is the digit 0
        scipy.io.savemat(folder / name, {"X": x, "y": y})
    task = registry.create("task", "svhn", {"data_dir": str(tmp_path), "n_train": 20,
                                            "n_test": 12, "n_public": 10})
    s = task.load(seed=0)
    assert s.train.x.shape == (20, 3, 32, 32)
    assert torch.all(s.train.x[:, 2, 0, 1] == 1.0) and torch.all(s.train.x[:, 0, 0, 1] < 1.0)
    index = (s.train.x[:, 0, 5, 5] * 255 / 5).round().long()
    assert torch.equal(s.train.y, (index % 10 + 1) % 10)
    assert set(s.test.y.tolist()) == set(range(10))


def write_png_tree(root: Path, classes: dict[str, int], side: int = 20) -> None:
    from PIL import Image

    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((side, side + 10, 3), 40 * c + i, dtype=np.uint8)
            pixels[..., c % 3] = 250
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")


def test_image_folder_resizes_and_numbers_classes_in_sorted_order(tmp_path):
    write_png_tree(tmp_path / "photos", {"cat": 6, "dog": 5, "emu": 4})
    task = registry.create("task", "image-folder", {"data_dir": str(tmp_path / "photos"),
                                                    "size": 8, "n_train": 8, "n_test": 4,
                                                    "n_public": 3})
    s = task.load(seed=0)
    assert s.train.x.shape == (8, 3, 8, 8) and s.num_classes == 3
    x, y = torch.cat([s.train.x, s.test.x, s.public.x]), torch.cat([s.train.y, s.test.y, s.public.y])
    assert torch.bincount(y).tolist() == [6, 5, 4]
    # class c is saturated in channel c
    assert torch.equal(x[:, :, 4, 4].argmax(1), y)
    gray = registry.create("task", "image-folder", {**task.get_params(), "channels": 1}).load(seed=0)
    assert gray.train.x.shape == (8, 1, 8, 8)


def test_image_folder_defaults_under_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DISGUISEBENCH_DATA", str(tmp_path))
    with pytest.raises(PluginError, match=r"image-folder: dataset not found in "
                                          r".*image-folder \(expected one sub-folder per class"):
        registry.create("task", "image-folder").load(seed=0)
    write_png_tree(tmp_path / "image-folder", {"a": 2, "b": 2})
    s = registry.create("task", "image-folder", {"n_train": 2, "n_test": 1, "n_public": 1}).load(seed=0)
    assert s.num_classes == 2


def test_image_folder_sizes_default_to_shares_of_the_folder(tmp_path):
    write_png_tree(tmp_path / "photos", {"a": 50, "b": 40})
    task = registry.create("task", "image-folder", {"data_dir": str(tmp_path / "photos"),
                                                    "size": 8})
    s = task.load(seed=0)
    assert (len(s.train), len(s.test), len(s.public)) == (45, 22, 22)
    counted = registry.create("task", "image-folder", {**task.get_params(), "n_train": 50,
                                                       "n_test": 0.1})
    s = counted.load(seed=0)
    assert (len(s.train), len(s.test), len(s.public)) == (50, 9, 22)
    with pytest.raises(PluginError, match=r"n_train \+ n_test \+ n_public = 1044 exceeds the 90 images"):
        registry.create("task", "image-folder", {**task.get_params(), "n_train": 1000}).load(seed=0)
    with pytest.raises(PluginError, match="n_train=1.0 must be a share of the folder between 0"):
        registry.create("task", "image-folder", {**task.get_params(), "n_train": 1.0})
    with pytest.raises(PluginError, match="add up to 1.25"):
        registry.create("task", "image-folder", {**task.get_params(), "n_train": 0.75})


def test_lfw_people_reads_scikit_learn_layout_with_identity_labels(tmp_path):
    from PIL import Image

    home = tmp_path / "lfw_home"
    people = {"Ada_Lovelace": 4, "Alan_Turing": 3, "Grace_Hopper": 5, "Solo_Person": 1}
    for p, (person, count) in enumerate(people.items()):
        (home / "lfw_funneled" / person).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((250, 250, 3), 30 + 60 * p, dtype=np.uint8)
            Image.fromarray(pixels).save(home / "lfw_funneled" / person / f"{person}_{i + 1:04d}.jpg")
    for name in ("pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt"):
        (home / name).write_text("1\n")
    task = registry.create("task", "lfw-people", {"data_dir": str(tmp_path),
                                                  "min_faces_per_person": 3, "n_train": 6,
                                                  "n_test": 3, "n_public": 3})
    s = task.load(seed=0)
    assert s.train.x.shape == (6, 1, 64, 48) and s.num_classes == 3  # Solo_Person dropped
    x, y = torch.cat([s.train.x, s.test.x, s.public.x]), torch.cat([s.train.y, s.test.y, s.public.y])
    assert torch.bincount(y).tolist() == [4, 3, 5]
    # identities are the people: the brightness each person's photographs were written with
    assert torch.allclose(x[:, 0, 30, 20], (30 + 60 * y.float()) / 255, atol=0.02)
    rgb = registry.create("task", "lfw-people", {**task.get_params(), "color": True}).load(seed=0)
    assert rgb.train.x.shape == (6, 3, 64, 48)


@pytest.mark.parametrize("name", ["mnist-full", "fashion-mnist", "cifar10", "svhn", "lfw-people"])
def test_missing_dataset_is_one_clear_error_and_nothing_is_written(tmp_path, name):
    task = registry.create("task", name, {"data_dir": str(tmp_path / "empty")})
    with pytest.raises(PluginError) as err:
        task.load(seed=0)
    message = str(err.value)
    assert message.startswith(f"{name}: dataset not found in {tmp_path / 'empty'} (expected ")
    assert "download=true" in message and "DISGUISEBENCH_DATA" in message
    assert not (tmp_path / "empty").exists()


@pytest.mark.slow  # the reader: test_cifar10_reads_pickled_batches; a small task in the runner:
# test_runner's test_small_task_runs_with_fewer_targets_and_says_so
def test_cifar10_runs_through_the_runner_on_a_tiny_folder(tmp_path):
    write_cifar(tmp_path / "data")
    raw = {"name": "cifar-tiny", "seeds": [0], "n_targets": 100, "n_known": 100,
           "levels": ["level-1", "level-3"],
           "tasks": [{"cifar10": {"data_dir": str(tmp_path / "data"), "model": "mlp",
                                  "epochs": 2, "n_train": 48, "n_test": 10, "n_public": 12}}],
           "defenses": ["none", {"block-rmt": {"block": 4}}],
           "attacks": ["visual-reid", "template-match"]}
    with Store(tmp_path / "r.db") as store:
        summary = runner.run(plan_mod.from_dict(raw), store)
        recs = list(store.records())
    assert summary.failed == 0 and all(r.status == OK for r in recs)
    assert len(recs) == 2 * (1 + 2 * 2)
    # level 1 uses no known pairs, so only level 3 gives up targets for them
    assert {(r.level, r.meta["n_targets"]) for r in recs if r.attack} == {("level-1", 24),
                                                                          ("level-3", 12)}
    utility = {r.defense["name"]: r.metrics for r in recs if r.attack is None}
    assert set(utility) == {"none", "block-rmt"}
    assert all(m["n_test"] == 10 for m in utility.values())  # the published test set's draw


@pytest.mark.slow
def test_cifar10_default_resnet_recipe_trains_on_a_tiny_folder(tmp_path):
    write_cifar(tmp_path, per_batch=20)
    task = registry.create("task", "cifar10", {"data_dir": str(tmp_path), "epochs": 2,
                                               "n_train": 64, "n_test": 10, "n_public": 20})
    s = task.load(seed=0)
    model = task.train(s.train, seed=0, num_classes=10)
    probs = task.predict(model, s.test.x)
    assert probs.shape == (10, 10) and torch.allclose(probs.sum(1), torch.ones(10))
    again = task.train(s.train, seed=0, num_classes=10)
    assert torch.equal(task.predict(again, s.test.x), probs)
