"""Attacks: what the cloud can learn from disguised data, one per module.

The helpers several attacks share live in the modules whose names start with ``_`` (see
attacks/README.md); the ones an attack written outside this repository may want are
re-exported here.
"""

from disguisebench.attacks._common import (  # noqa: F401 (re-exported)
    own_key, pair_up, per_source, seeded, sub_seed, target_rows, train_model,
)
from disguisebench.attacks._discovery import Structure, discover  # noqa: F401 (re-exported)

__all__ = ["Structure", "discover", "own_key", "pair_up", "per_source", "seeded", "sub_seed",
           "target_rows", "train_model"]
