"""The one exception every plugin and command raises for bad input (kept free of torch, so the
command line can catch it without importing torch)."""

from __future__ import annotations


class PluginError(ValueError):
    """A plugin was given a bad parameter or bad input; the message says what would be valid."""
