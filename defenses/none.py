"""The identity defense: the cloud sees the plaintext; the baseline every utility is relative to."""

from __future__ import annotations

from disguisebench.api import Data, Defense
from disguisebench.registry import register


@register("none")
class NoDefense(Defense):
    """No disguise: images are uploaded as they are.

    Nothing is secret; every attack should succeed. Utility ratios divide by this defense's
    accuracy.
    """

    keyless = True

    def __init__(self) -> None:
        pass

    def _transform(self, data: Data, *, epoch: int) -> Data:
        return Data(data.x.clone(), data.y)
