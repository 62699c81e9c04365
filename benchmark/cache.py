"""Trained-model cache: one safetensors file per cell, so a new attack never retrains a model.

Each file stores the state dict and, in its metadata, an HMAC (keyed by the results database's
salt, which no plugin process holds) of the tensors' bytes and of the digest of the exact upload the
model was trained on. A file that fails to parse, whose tag differs (corrupt, or written by someone
without the salt) or whose upload differs from the one the defense produces now is reported,
removed and the model retrained.
"""

from __future__ import annotations

import hashlib
import hmac
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


def data_digest(*tensors: torch.Tensor | None) -> str:
    """SHA-256 of tensors' dtypes, shapes and bytes (None counts as absent)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ModelCache:
    def __init__(self, folder: str | Path, key: bytes) -> None:
        self.folder = Path(folder)
        self._key = key

    def _tag(self, state: dict[str, torch.Tensor], bound: str) -> str:
        text = (_digest(state) + "/" + bound).encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str, build: Callable[[], nn.Module], bound: str = "") -> nn.Module | None:
        """The cached model for ``key`` trained on the data digested as ``bound``, or None when
        absent, corrupt or made for other data (then it is removed)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                expected = (f.metadata() or {}).get("hmac")
            state = load_file(str(path))
            if expected is None or not hmac.compare_digest(expected, self._tag(state, bound)):
                raise ValueError("its tag does not verify for this database and upload")
            model = build()
            model.load_state_dict(state, strict=True)
        except (SafetensorError, ValueError, RuntimeError, OSError) as err:
            log.warning("cached model %s is corrupt (%s); retraining", path.name, err)
            path.unlink(missing_ok=True)
            return None
        return model.eval()

    def save(self, key: str, model: nn.Module, bound: str = "") -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tmp = self.path(key).with_suffix(".tmp")
        save_file(state, str(tmp), metadata={"hmac": self._tag(state, bound)})
        os.replace(tmp, self.path(key))  # atomic: a killed run never leaves half a file
