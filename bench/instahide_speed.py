"""Time InstaHide's encoding of a batch against a plain tensor copy (a script, not a test).

    python -m bench.instahide_speed [--n 50000] [--side 28] [--channels 1] [--repeats 5]

Encodes ``n`` random images once (``transform(data, epoch=0)``: one encoding per image, what the
training loop asks for each epoch; it includes hashing the batch for the content-seeded key
stream) and copies the same tensor, takes the best of ``repeats`` runs of each and prints both
times and their ratio. Wall times depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import time

import torch

from disguisebench.api import Data
from disguisebench.defenses.instahide import InstaHide


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--side", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--mode", default="inside", choices=("inside", "cross"))
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    shape = (args.n, args.channels, args.side, args.side)
    data = Data(torch.rand(shape, generator=gen), torch.randint(0, 10, (args.n,), generator=gen))
    public = Data(torch.rand((1000, *shape[1:]), generator=gen))
    defense = InstaHide(k=args.k, mode=args.mode).fit(data, seed=1, public=public)

    copy_s = best_time(lambda: data.x.clone(), args.repeats)
    encode_s = best_time(lambda: defense.transform(data, epoch=0), args.repeats)
    print(f"{args.n} images {shape[1:]}, k={args.k}, mode={args.mode}, "
          f"threads={torch.get_num_threads()}, best of {args.repeats}")
    print(f"tensor copy      {copy_s * 1e3:9.2f} ms")
    print(f"instahide encode {encode_s * 1e3:9.2f} ms")
    print(f"ratio            {encode_s / copy_s:9.1f}x")


if __name__ == "__main__":
    main()
