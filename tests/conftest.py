from __future__ import annotations

import hashlib
import itertools

import pytest

from disguisebench import plan as plan_mod
from disguisebench import store as store_mod

TOY_PLAN = {
    "name": "toy",
    "seeds": [0],
    "n_targets": 30,
    "n_known": 30,
    "levels": ["level-1", "level-2", "level-3"],
    "tasks": [{"toy": {"epochs": 3}}],
    "defenses": ["none", "pixelate", {"block-rmt": {"block": 4}}],
    "attacks": ["visual-reid", "template-match"],
}


@pytest.fixture
def toy_plan() -> plan_mod.Plan:
    return plan_mod.from_dict(dict(TOY_PLAN))


@pytest.fixture(autouse=True)
def reproducible_salts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """New databases in a test draw their salts from the test's name, not the operating system.

    Keys, splits and targets derive from the salt, so a test that trains or attacks gets the same
    numbers on every run of the suite; each new database of a test still gets its own salt.
    """
    counter = itertools.count()

    class Secrets:
        @staticmethod
        def token_bytes(n: int) -> bytes:
            seed = f"{request.node.nodeid}:{next(counter)}".encode()
            return hashlib.shake_256(seed).digest(n)

    monkeypatch.setattr(store_mod, "secrets", Secrets)
