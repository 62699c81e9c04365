"""Time each block transform over a plain tensor copy of the same data, in one run.

    python bench/transform_speed.py [--repeats 5] [--only block-rmt]

Random images stand in for 50,000 MNIST-sized (1×28×28) and 10,000 CIFAR-sized (3×32×32) ones.
Each repeat times the copy and every transform (the public ``Defense.transform``, input checks
included) back to back; the ratio is the median transform time over the median copy time.
Targets: block permutation ≤ 3×, RMT ≤ 5×. Wall times depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from disguisebench import registry  # noqa: E402
from disguisebench.api import Data  # noqa: E402

SHAPES = [(50_000, 1, 28, 28), (10_000, 3, 32, 32)]
CONFIGS = [
    ("block-permutation", {"block": 4}),
    ("block-permutation", {"block": 4, "permutation": "image"}),
    ("block-rmt", {"block": 4, "permutation": "none"}),
    ("block-rmt", {"block": 4}),
    ("block-rmt", {"block": 2}),
    ("block-rmt", {"block": 4, "sigma": 25}),
    ("block-rmt", {"block": 4, "permutation": "image"}),
    ("block-aes", {"block": 4}),
    ("block-aes", {"block": 4, "key_scope": "per-position"}),
    ("block-aes", {"block": 2}),
]


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="time only this defense")
    args = parser.parse_args()
    configs = [c for c in CONFIGS if args.only in (None, c[0])]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"median of {args.repeats} repeats")
    for shape in SHAPES:
        data = Data(torch.rand(shape, generator=torch.Generator().manual_seed(0)))
        defenses = [registry.create("defense", name, params).fit(data, seed=0)
                    for name, params in configs]
        for d in defenses:  # warm-up
            d.transform(data[:64])
        copies, times = [], [[] for _ in defenses]
        for _ in range(args.repeats):
            copies.append(seconds(lambda: data.x.clone()))
            for d, t in zip(defenses, times):
                t.append(seconds(lambda: d.transform(data)))
        copy = statistics.median(copies)
        print(f"\n{shape[0]} images of {'x'.join(map(str, shape[1:]))}: copy {copy * 1e3:.0f} ms")
        for d, t in zip(defenses, times):
            median = statistics.median(t)
            print(f"  {d.label():<48} {median * 1e3:8.0f} ms  {median / copy:6.1f}x")


if __name__ == "__main__":
    main()
