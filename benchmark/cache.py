"""Trained-model cache: one safetensors file per cell, so a new attack never retrains a model.

Each file stores the state dict and, in its metadata, a SHA-256 of the tensors' bytes; a file
that fails to parse or whose digest differs is reported, removed and the model retrained.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("disguisebench")


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ModelCache:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str, build: Callable[[], nn.Module]) -> nn.Module | None:
        """The cached model for ``key``, or None when absent or corrupt (then it is removed)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                expected = (f.metadata() or {}).get("sha256")
            state = load_file(str(path))
            if expected != _digest(state):
                raise ValueError("checksum mismatch")
            model = build()
            model.load_state_dict(state, strict=True)
        except (SafetensorError, ValueError, RuntimeError, OSError) as err:
            log.warning("cached model %s is corrupt (%s); retraining", path.name, err)
            path.unlink(missing_ok=True)
            return None
        return model.eval()

    def save(self, key: str, model: nn.Module) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tmp = self.path(key).with_suffix(".tmp")
        save_file(state, str(tmp), metadata={"sha256": _digest(state)})
        os.replace(tmp, self.path(key))  # atomic: a killed run never leaves half a file
