from __future__ import annotations

import pytest
import torch

from disguisebench import registry
from disguisebench.api import Data, PluginError
from disguisebench.blocks import to_blocks


def byte_images(n=4, c=1, side=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Data(torch.randint(0, 256, (n, c, side, side), generator=gen).float() / 255)


def aes(**params):
    return registry.create("defense", "block-aes", params)


def ecb(key: bytes, plain: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    op = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return op.update(plain) + op.finalize()


def cipher_bytes(x, side):
    return (to_blocks(x, side) * 255).round().to(torch.uint8)


def test_each_block_is_aes_128_ecb_of_its_pixel_bytes():
    data = byte_images(c=3)
    d = aes(block=4).fit(data, seed=0)
    out = d.transform(data).x
    assert out.shape == data.x.shape
    plain = cipher_bytes(data.x, 4)[2, 1, 3].numpy().tobytes()  # image 2, channel 1, block 3
    assert cipher_bytes(out, 4)[2, 1, 3].numpy().tobytes() == ecb(d.keys_[0].numpy().tobytes(), plain)
    # Output pixels are ciphertext bytes / 255.
    assert torch.equal(out * 255, (out * 255).round())


def test_deterministic_per_key_and_different_keys_differ():
    data = byte_images()
    a = aes().fit(data, seed=0).transform(data).x
    assert torch.equal(aes().fit(data, seed=0).transform(data).x, a)
    assert (aes().fit(data, seed=1).transform(data).x != a).float().mean() > 0.9


def test_ecb_equal_plaintext_blocks_give_equal_ciphertext_blocks():
    x = byte_images(n=2).x
    x[:, :, :4, :4] = 0.5
    x[:, :, 4:, 4:] = 0.5  # blocks 0 and 3 of both images are equal
    data = Data(x)
    out = cipher_bytes(aes(block=4).fit(data, seed=0).transform(data).x, 4)
    assert torch.equal(out[0, 0, 0], out[0, 0, 3]) and torch.equal(out[0, 0, 0], out[1, 0, 3])
    assert not torch.equal(out[0, 0, 0], out[0, 0, 1])
    # One key per position: equal blocks at the same position still match, elsewhere not.
    per = cipher_bytes(aes(block=4, key_scope="per-position").fit(data, seed=0).transform(data).x, 4)
    assert torch.equal(per[0, 0, 3], per[1, 0, 3]) and not torch.equal(per[0, 0, 0], per[0, 0, 3])


@pytest.mark.parametrize("block,side,out_side", [(1, 8, 32), (2, 8, 16), (3, 9, 12), (4, 8, 8),
                                                 (7, 28, 32), (8, 16, 16)])
def test_blocks_are_upsampled_to_whole_aes_blocks_and_decrypt_back(block, side, out_side):
    data = byte_images(c=3, side=side)
    for scope in ("shared", "per-position"):
        d = aes(block=block, key_scope=scope).fit(data, seed=3)
        out = d.transform(data)
        assert out.x.shape == (4, 3, out_side, out_side)
        assert torch.equal(d.inverse(out).x, data.x)


def test_small_blocks_become_one_aes_block_of_repeated_pixels():
    data = byte_images(side=4)
    d = aes(block=2).fit(data, seed=0)
    chunks = d.plaintext_chunks(data.x)
    assert chunks.shape == (4, 1, 4, 1, 16)
    first = (data.x[0, 0, :2, :2] * 255).round().to(torch.uint8)
    upsampled = first.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert chunks[0, 0, 0, 0].view(4, 4).tolist() == upsampled.tolist()


def test_block_not_dividing_the_image_is_a_clear_error():
    with pytest.raises(PluginError, match=r"block-aes: block=3 does not divide the image side 8"):
        aes(block=3).fit(byte_images(), seed=0)
    d = aes(block=3, padding="edge").fit(byte_images(), seed=0)
    assert d.transform(byte_images()).x.shape == (4, 1, 12, 12)
    assert torch.equal(d.inverse(d.transform(byte_images())).x, byte_images().x)
