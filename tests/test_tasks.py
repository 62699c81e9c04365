from __future__ import annotations

import torch

from benchmark import registry


def test_mnist_loads_real_embedded_digits_into_disjoint_splits():
    task = registry.create("task", "mnist")
    s = task.load(seed=0)
    assert s.train.x.shape == (3000, 1, 28, 28) and s.num_classes == 10
    assert len(s.test) == 1000 and len(s.public) == 1000
    assert 0.0 <= float(s.train.x.min()) and float(s.train.x.max()) <= 1.0
    rows = {tuple(v) for v in s.train.x.flatten(1).tolist()}
    assert not any(tuple(v) in rows for v in s.test.x.flatten(1).tolist())
    assert set(torch.bincount(s.train.y).tolist()) != {0}
    assert torch.equal(task.load(seed=0).train.x, s.train.x)
    assert not torch.equal(task.load(seed=1).train.x, s.train.x)
