"""Imported once by the fork server of plugin processes: torch and every registered plugin."""

import torch  # noqa: F401

from disguisebench import registry

registry.names("defense")
