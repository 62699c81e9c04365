"""The one exception every plugin and command raises for bad input, and the base of the core's
string enums (kept free of torch, so the command line can use them without importing torch)."""

from __future__ import annotations

import enum


class Name(enum.StrEnum):
    """A string enum whose members read as their values, in records and in messages alike."""

    def __repr__(self) -> str:
        return repr(self.value)


class PluginError(ValueError):
    """A plugin was given a bad parameter or bad input; the message says what would be valid."""
