"""Defenses: image disguising schemes, one per module.

Key drawing shared by the block-wise defenses (``_blocks``) is re-exported here for defenses
written outside this repository.
"""

from disguisebench.defenses._blocks import (  # noqa: F401 (re-exported)
    content_generator, draw_secret, full_rank_uniform, haar_orthogonal, random_permutations,
)

__all__ = ["content_generator", "draw_secret", "full_rank_uniform", "haar_orthogonal",
           "random_permutations"]
