"""Block-wise AES: each k×k block's pixel bytes encrypted with AES-128 in ECB mode."""

from __future__ import annotations

import torch
from torch import Tensor

from disguisebench.api import Data, Defense, check_choice, check_number
from disguisebench.registry import register
from disguisebench.blocks import (
    BlockLayout, check_disguised_size, check_image_size, disguised_size, from_blocks,
    pad_to_blocks, to_blocks,
)

CHUNK = 16  # bytes in one AES block


def _to_bytes(x: Tensor) -> Tensor:
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


@register("block-aes")
class BlockAES(Defense):
    """Encrypt every k×k block's pixel bytes with AES-128-ECB under a secret key.

    Secret: one 16-byte AES key for all blocks, or one per block position. Targets visual
    re-identification and known-pair (level 2) attacks, which the authors find only this variant
    resists, at a cost in model quality. Pixels become bytes (round(255·x)); each channel's
    k×k block is nearest-upsampled to m×m with m = 4·ceil(k/4), the smallest side ≥ k whose byte
    count is a multiple of 16 (the authors upsample blocks under 16 bytes to one AES block; for
    k = 7, say, we extend the same rule to 8×8 rather than pad bytes with constants), encrypted,
    and the ciphertext bytes / 255 form an m×m output block, so the output side is (side/k)·m.
    Known weakness: ECB maps equal 16-byte plaintext chunks to equal ciphertext chunks under one
    key (a blank background block always encrypts the same way), so a codebook of known pairs
    decrypts every chunk it has seen (the ``aes-codebook`` attack). The key is drawn from the
    seed's generator, so it holds at most the seed's 63 bits of entropy.
    Sharma, Gu & Chen, "A Comparative Study of Image Disguising Methods for Confidential
    Outsourced Learning", 2023, and "DisguisedNets: Secure Image Outsourcing for Confidential Model
    Training in Clouds", ACM TOIT 2023.

    Args:
        block: block side k in pixels; must divide the image side unless padding="edge".
        key_scope: "shared" (one key for all blocks) or "per-position" (one key per block
            position).
        padding: "error" when k does not divide the image side, or "edge" (replicate edge pixels).
    """

    def __init__(self, block: int = 4, key_scope: str = "shared", padding: str = "error") -> None:
        self.block = block
        self.key_scope = key_scope
        self.padding = padding

    def validate(self) -> None:
        check_number(self.name, "block", self.block, kind=int, low=1)
        check_choice(self.name, "key_scope", self.key_scope, ("shared", "per-position"))
        check_choice(self.name, "padding", self.padding, ("error", "edge"))

    @property
    def cipher_side(self) -> int:
        """m: the side of one encrypted block (m·m bytes, a multiple of 16)."""
        return -(-self.block // 4) * 4

    def block_layout(self, image_shape: tuple[int, int, int]) -> BlockLayout:
        return BlockLayout.of(self.name, image_shape, self.block, padding=self.padding,
                              block_out=self.cipher_side)

    # The byte layout below needs no key: an attacker knowing the algorithm has it too.

    def plaintext_chunks(self, x: Tensor) -> Tensor:
        """Plaintext images (N, C, H, W) in [0, 1] -> the AES input, uint8 (N, C, P, m·m/16, 16)."""
        self.validate()
        x = pad_to_blocks(x, self.block, self.name, self.padding)
        k, m = self.block, self.cipher_side
        blocks = to_blocks(_to_bytes(x), k)
        if m != k:
            up = (torch.arange(m) * k) // m  # nearest neighbour, k -> m
            blocks = blocks[..., up, :][..., up]
        return blocks.reshape(*blocks.shape[:3], m * m // CHUNK, CHUNK)

    def image_from_plaintext(self, chunks: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
        """Inverse of ``plaintext_chunks``: pixels (N, C, H, W) = bytes / 255."""
        k, m = self.block, self.cipher_side
        n, c, p = chunks.shape[:3]
        blocks = chunks.reshape(n, c, p, m, m)
        if m != k:
            down = (torch.arange(k) * m + k - 1) // k  # one upsampled copy of each source pixel
            blocks = blocks[..., down, :][..., down]
        h, w = disguised_size(self.name, image_shape, k, self.padding)
        x = from_blocks(blocks, h, w)[..., :image_shape[1], :image_shape[2]]
        return x.float().div_(255)

    def ciphertext_chunks(self, x: Tensor) -> Tensor:
        """Disguised images -> their ciphertext bytes, uint8 (N, C, P, m·m/16, 16)."""
        m = self.cipher_side
        blocks = to_blocks(_to_bytes(x), m)
        return blocks.reshape(*blocks.shape[:3], m * m // CHUNK, CHUNK)

    def image_from_ciphertext(self, chunks: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
        m = self.cipher_side
        n, c, p = chunks.shape[:3]
        h, w = disguised_size(self.name, image_shape, self.block, self.padding, m)
        return from_blocks(chunks.reshape(n, c, p, m, m), h, w).float().div_(255)

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        positions = self.block_layout(data.image_shape).positions
        keys = 1 if self.key_scope == "shared" else positions
        self.keys_ = torch.randint(0, 256, (keys, CHUNK), generator=rng, dtype=torch.uint8)
        self.image_shape_ = tuple(data.x.shape[1:])

    def _crypt(self, chunks: Tensor, *, decrypt: bool) -> Tensor:
        """ECB over every chunk: one call per key on one contiguous buffer of its chunks."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        def run(key: Tensor, buffer: Tensor) -> Tensor:
            cipher = Cipher(algorithms.AES(key.numpy().tobytes()), modes.ECB())
            op = cipher.decryptor() if decrypt else cipher.encryptor()
            out = torch.empty(buffer.numel() + CHUNK - 1, dtype=torch.uint8)
            op.update_into(buffer.contiguous().view(-1).numpy(), out.numpy())
            op.finalize()
            return out[:buffer.numel()].view(buffer.shape)

        if len(self.keys_) == 1:
            return run(self.keys_[0], chunks)
        by_position = chunks.transpose(0, 2).contiguous()  # (P, C, N, m·m/16, 16)
        return torch.stack([run(key, part) for key, part in zip(self.keys_, by_position)]
                           ).transpose(0, 2)

    def _transform(self, data: Data, *, epoch: int) -> Data:
        check_image_size(self.name, data.x, self.image_shape_)
        cipher = self._crypt(self.plaintext_chunks(data.x), decrypt=False)
        return Data(self.image_from_ciphertext(cipher, self.image_shape_), data.y)

    def _inverse(self, data: Data) -> Data:
        """Decrypt: the owner gets the images back quantised to bytes."""
        check_disguised_size(self.name, data.x, self.image_shape_, self.block, self.padding,
                             self.cipher_side)
        plain = self._crypt(self.ciphertext_chunks(data.x), decrypt=True)
        return Data(self.image_from_plaintext(plain, self.image_shape_), data.y)
