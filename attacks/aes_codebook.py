"""AES codebook: decrypt ECB-disguised images chunk by chunk from known plaintext pairs."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from disguisebench.api import (
    DEFENSE, KNOWN_PAIRS, RECONSTRUCT, TARGETS, Attack, Data, NotApplicable, Outcome,
    ThreatView, check_choice, check_number)
from disguisebench.registry import register

log = logging.getLogger("disguisebench")

CHUNK = 16


class RasterBytes:
    """The byte layout of a defense without one of its own: each image's values in raster order,
    rounded to bytes and cut into 16-byte chunks (the last one zero-padded)."""

    @staticmethod
    def _chunks(x: Tensor) -> Tensor:
        data = (x.clamp(0, 1) * 255).round().to(torch.uint8).flatten(1)
        data = F.pad(data, (0, -data.shape[1] % CHUNK))
        return data.view(len(x), -1, CHUNK)

    plaintext_chunks = ciphertext_chunks = _chunks

    @staticmethod
    def image_from_plaintext(chunks: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
        size = image_shape[0] * image_shape[1] * image_shape[2]
        flat = chunks.reshape(len(chunks), -1)[:, :size].float() / 255
        return flat.view(len(chunks), *image_shape)


def codebook_lookup(known_cipher: Tensor, known_plain: Tensor,
                    cipher: Tensor) -> tuple[Tensor, Tensor]:
    """Plaintext of every ciphertext chunk seen among the known ones.

    Args:
        known_cipher: (M, 16) uint8 ciphertext chunks of the known pairs.
        known_plain: (M, 16) uint8 plaintext chunks they encrypt.
        cipher: (Q, 16) uint8 ciphertext chunks to decrypt.

    Returns:
        (Q, 16) uint8 plaintext (zeros where unseen) and (Q,) booleans, whether each was seen.
    """
    # Two int64 words per chunk make equal chunks equal rows for one torch.unique.
    words = torch.cat([known_cipher, cipher]).contiguous().view(torch.int64)
    _, ids = torch.unique(words, dim=0, return_inverse=True)
    entry = torch.full((int(ids.max()) + 1 if len(ids) else 0,), -1, dtype=torch.long)
    entry[ids[:len(known_cipher)]] = torch.arange(len(known_cipher))
    row = entry[ids[len(known_cipher):]]
    hit = row >= 0
    plain = torch.zeros_like(cipher)
    plain[hit] = known_plain[row[hit]]
    return plain, hit


@register("aes-codebook")
class AESCodebook(Attack):
    """Reconstruct ECB-encrypted targets from a ciphertext -> plaintext chunk codebook of known pairs.

    Threat: known plaintext (level 2). AES-ECB encrypts equal 16-byte chunks alike under one key,
    so a chunk seen in a known (plaintext, disguised) pair decrypts wherever it recurs; a chunk
    never seen is filled with a guess for its slot. The chunk layout comes from the defense's
    public algorithm (``block-aes`` exposes it; any other defense is read as raster bytes), never
    from its key. The authors' level-2 attack on AES: Sharma, Gu & Chen, "A Comparative Study of
    Image Disguising Methods for Confidential Outsourced Learning", 2023.

    Args:
        fill: an unseen chunk becomes "unseen-mean" (the mean of the slot's known chunks whose
            ciphertext occurs once among the known pairs: what a codebook tends to miss), "mean"
            (the mean of the slot's known chunks) or "zero".
        n_pairs: known pairs the codebook is built from (0 uses every pair granted).
    """

    goal = RECONSTRUCT
    needs = frozenset({TARGETS, KNOWN_PAIRS, DEFENSE})

    def __init__(self, fill: str = "unseen-mean", n_pairs: int = 0) -> None:
        self.fill = fill
        self.n_pairs = n_pairs

    def validate(self) -> None:
        check_choice(self.name, "fill", self.fill, ("unseen-mean", "mean", "zero"))
        check_number(self.name, "n_pairs", self.n_pairs, kind=int, low=0)

    def _guess(self, known_cipher: Tensor, known_plain: Tensor) -> Tensor:
        """(*slots, 16) uint8: what an unseen chunk is taken to be in each slot."""
        if self.fill == "zero":
            return torch.zeros(known_plain.shape[1:], dtype=torch.uint8)
        plain = known_plain.float()
        guess = plain.mean(0)
        if self.fill == "unseen-mean":
            # Leave one out: a known chunk whose ciphertext occurs nowhere else is one the
            # codebook would have missed.
            words = known_cipher.reshape(-1, CHUNK).contiguous().view(torch.int64)
            _, ids, counts = torch.unique(words, dim=0, return_inverse=True, return_counts=True)
            single = (counts[ids] == 1).view(known_cipher.shape[:-1]).unsqueeze(-1).float()
            total = single.sum(0)
            guess = torch.where(total > 0, (plain * single).sum(0) / total.clamp_min(1), guess)
        return guess.round().to(torch.uint8)

    def _run(self, view: ThreatView, *, seed: int) -> Outcome:
        plain, disguised = view.require(KNOWN_PAIRS)
        if self.n_pairs:  # the first n disguised images; their sources index into ``plain``
            disguised = disguised[: self.n_pairs]
        targets: Data = view.require(TARGETS)
        defense = view.require(DEFENSE)
        layout = defense if hasattr(defense, "plaintext_chunks") else RasterBytes()
        image_shape = plain.image_shape
        known_plain = layout.plaintext_chunks(plain.x[disguised.sources()[:, 0]])
        known_cipher = layout.ciphertext_chunks(disguised.x)
        cipher = layout.ciphertext_chunks(targets.x)
        if not known_plain.shape[1:] == known_cipher.shape[1:] == cipher.shape[1:]:
            raise NotApplicable(f"{self.name}: the disguised images of {defense.name} do not carry "
                                "one ciphertext chunk per plaintext chunk")
        found, hit = codebook_lookup(known_cipher.reshape(-1, CHUNK),
                                     known_plain.reshape(-1, CHUNK), cipher.reshape(-1, CHUNK))
        found, hit = found.view(cipher.shape), hit.view(cipher.shape[:-1])
        chunks = torch.where(hit.unsqueeze(-1), found, self._guess(known_cipher, known_plain))
        report = {"hit_rate": float(hit.float().mean()), "pairs": len(disguised),
                  "known_chunks": known_cipher.numel() // CHUNK}
        log.info("%s: %d known chunk(s); %.1f %% of the target chunks found", self.name,
                 known_cipher.numel() // CHUNK, 100 * report["hit_rate"])
        return Outcome(layout.image_from_plaintext(chunks, image_shape), report)
