"""Conformance checks every defense must pass, as plain functions.

Each check takes a registered defense's name and returns a CheckResult; ``run_checks`` runs them
all (``disguisebench check NAME`` prints the table) and ``parametrize_with_checks`` makes one
pytest test of each (the conformance tests run every check on every registered defense).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from disguisebench import registry
from disguisebench.api import Data, Defense


@dataclasses.dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    reason: str = ""


def _images(n: int = 8, channels: int = 1, side: int = 16, seed: int = 0) -> Data:
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.rand(n, channels, side, side, generator=gen), torch.arange(n) % 2)


def _fit(name: str, data: Data, seed: int = 1) -> Defense:
    return registry.create("defense", name).fit(data, seed=seed)


def _secrets(defense: Defense) -> dict:
    return {k: v for k, v in vars(defense).items() if k.endswith("_")}


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def check_defaults(name: str) -> CheckResult:
    """Constructible with default hyperparameters, which validate."""
    plugin = registry.create("defense", name)
    if not type(plugin).summary():
        return CheckResult("defaults", False, "the class docstring needs a one-line summary")
    return CheckResult("defaults", True)


def check_params_json(name: str) -> CheckResult:
    """get_params() survives a JSON round trip and rebuilds an equal plugin."""
    params = registry.create("defense", name).get_params()
    try:
        again = json.loads(json.dumps(params))
    except TypeError as err:
        return CheckResult("params-json", False, f"parameters are not JSON values: {err}")
    if registry.create("defense", name, again).get_params() != params:
        return CheckResult("params-json", False, "parameters change through JSON")
    return CheckResult("params-json", True)


def check_clone_keyless(name: str) -> CheckResult:
    """clone() of a fitted defense has the same hyperparameters and no key attributes."""
    fitted = _fit(name, _images())
    copy = fitted.clone()
    leaked = sorted(_secrets(copy))
    if leaked:
        return CheckResult("clone-keyless", False, f"clone carries {', '.join(leaked)}")
    if copy.get_params() != fitted.get_params():
        return CheckResult("clone-keyless", False, "clone changes the hyperparameters")
    return CheckResult("clone-keyless", True)


def check_deterministic(name: str) -> CheckResult:
    """The same key gives the same output, twice from one fit and once from a refit."""
    data = _images()
    a = _fit(name, data)
    first = a.transform(data).x
    if not torch.equal(a.transform(data).x, first):
        return CheckResult("deterministic", False, "two transforms under one key differ")
    if not torch.equal(_fit(name, data).transform(data).x, first):
        return CheckResult("deterministic", False, "fit with the same seed draws another key")
    return CheckResult("deterministic", True)


def check_keys_differ(name: str) -> CheckResult:
    """Different keys give different outputs (keyless defenses are exempt)."""
    data = _images()
    a = _fit(name, data, seed=1)
    if a.keyless:
        return CheckResult("keys-differ", True, "keyless defense: nothing to differ")
    if torch.equal(a.transform(data).x, _fit(name, data, seed=2).transform(data).x):
        return CheckResult("keys-differ", False, "seeds 1 and 2 give identical outputs")
    return CheckResult("keys-differ", True)


def check_channels_and_shape(name: str) -> CheckResult:
    """Works on 1- and 3-channel images; the output shape is the input's or the declared one."""
    for channels in (1, 3):
        data = _images(channels=channels)
        out = _fit(name, data).transform(data)
        declared = registry.create("defense", name).output_shape(data.image_shape)
        if tuple(out.x.shape[1:]) != tuple(declared):
            return CheckResult("shape", False, f"{channels}-channel output {tuple(out.x.shape[1:])}"
                               f" differs from the declared {tuple(declared)}")
    return CheckResult("shape", True)


def check_finite(name: str) -> CheckResult:
    """No NaN or infinity in the output, even for constant images."""
    for data in (_images(), Data(torch.zeros(4, 1, 16, 16)), Data(torch.ones(4, 3, 16, 16))):
        out = _fit(name, data).transform(data).x
        if not torch.isfinite(out).all():
            return CheckResult("finite", False, "NaN or infinite output")
    return CheckResult("finite", True)


def check_batch_sizes(name: str) -> CheckResult:
    """Batches of 1 to 2,049 images each come out finite, in the declared shape, one row each
    (the runner checks every answer at whatever size it asks for; this finds the failure early)."""
    pool = _images(n=2049, seed=3)
    defense = _fit(name, _images())
    declared = tuple(registry.create("defense", name).output_shape(pool.image_shape))
    for n in (1, 2, 65, 257, 2049):
        out = defense.transform(pool[:n])
        if not torch.isfinite(out.x).all():
            return CheckResult("batch-sizes", False, f"NaN or infinite output in a batch of {n}")
        if tuple(out.x.shape[1:]) != declared:
            return CheckResult("batch-sizes", False, f"a batch of {n} gives shape "
                               f"{tuple(out.x.shape[1:])}, not the declared {declared}")
        if out.source is None and len(out) != n:
            return CheckResult("batch-sizes", False, f"a batch of {n} gives {len(out)} images")
    return CheckResult("batch-sizes", True)


def check_fit_only_on_training(name: str) -> CheckResult:
    """Disguising test data never refits: the key stays what fit drew from the training data."""
    train, test = _images(seed=0), _images(seed=9)
    defense = _fit(name, train)
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
              for k, v in _secrets(defense).items()}
    defense.transform(test)
    if not _same(before, _secrets(defense)):
        return CheckResult("fit-only-on-training", False, "transform changed the key")
    return CheckResult("fit-only-on-training", True)


class _CountTorchCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def torch_calls(defense: Defense, data: Data) -> int:
    with _CountTorchCalls() as counter:
        defense.transform(data)
    return counter.calls


def check_vectorised(name: str) -> CheckResult:
    """The number of torch operations does not grow with the batch (no loop per image)."""
    small, large = _images(n=4), _images(n=64)
    defense = _fit(name, small)
    few, many = torch_calls(defense, small), torch_calls(defense, large)
    if many > 2 * few + 16:
        return CheckResult("vectorised", False,
                           f"{few} torch calls for 4 images but {many} for 64: a loop per image?")
    return CheckResult("vectorised", True, f"{few} torch calls for 4 images, {many} for 64")


def transform_time_ratio(name: str, n: int = 2048) -> float:
    """Seconds to disguise ``n`` 3×32×32 images over seconds to copy them (reported, not judged)."""
    data = _images(n=n, channels=3, side=32)
    defense = _fit(name, data)
    start = time.perf_counter()
    defense.transform(data)
    spent = time.perf_counter() - start
    start = time.perf_counter()
    data.x.clone()
    return spent / max(time.perf_counter() - start, 1e-9)


CHECKS: dict[str, Callable[[str], CheckResult]] = {
    "defaults": check_defaults,
    "params-json": check_params_json,
    "clone-keyless": check_clone_keyless,
    "deterministic": check_deterministic,
    "keys-differ": check_keys_differ,
    "shape": check_channels_and_shape,
    "finite": check_finite,
    "batch-sizes": check_batch_sizes,
    "fit-only-on-training": check_fit_only_on_training,
    "vectorised": check_vectorised,
}


def parametrize_with_checks(names: Iterable[str]) -> Any:
    """A pytest decorator giving one test per (defense, check), as scikit-learn's
    ``parametrize_with_checks`` does; the test receives the defense's registry name and the
    check, and calls one on the other::

        @parametrize_with_checks(["my-defense"])
        def test_my_defense(name, check):
            result = check(name)
            assert result.passed, result.reason
    """
    import pytest

    names = list(names)
    return pytest.mark.parametrize(
        "name,check", [(name, fn) for name in names for fn in CHECKS.values()],
        ids=[f"{name}-{check}" for name in names for check in CHECKS])


def run_checks(name: str) -> list[CheckResult]:
    """Every check on defense ``name``; a check that raises fails with the error as its reason."""
    registry.get("defense", name)
    results = []
    for check, fn in CHECKS.items():
        try:
            results.append(fn(name))
        except Exception as err:  # the check reports any failure of the plugin under test
            results.append(CheckResult(check, False, f"{type(err).__name__}: {err}"))
    return results
