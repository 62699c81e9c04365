"""Time training the `mnist` task on clean and on `block-rmt` images and print the ratio.

    python bench/train_ratio.py [--epochs N] [--repeats R] [--block K]

A disguise should cost the cloud no training time: the target is a ratio (disguised / clean) of
at most 1.05. Both trainings use the same model, seed and number of images; only the pixels
differ. Runs alternate between the two inputs (clean first on even repeats, disguised first on
odd ones) so that a change in the machine's load hits both, and the ratio of the medians is
printed. Timings cover training alone; the disguise's own cost is printed separately. The
process's CPU time is printed too: on a machine shared with other jobs it is far steadier than
wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from disguisebench import registry  # noqa: E402

TARGET = 1.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=0, help="training epochs (0: the task's)")
    parser.add_argument("--repeats", type=int, default=3, help="trainings per input")
    parser.add_argument("--block", type=int, default=4, help="block-rmt block size")
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    task = registry.create("task", "mnist", {"epochs": args.epochs} if args.epochs else {})
    splits = task.load(seed=0)
    defense = registry.create("defense", "block-rmt", {"block": args.block})
    defense.fit(splits.train, seed=1)
    start = time.perf_counter()
    disguised = defense.transform(splits.train)
    transform_s = time.perf_counter() - start

    inputs = {"none": splits.train, "block-rmt": disguised}
    wall: dict[str, list[float]] = {name: [] for name in inputs}
    cpu: dict[str, list[float]] = {name: [] for name in inputs}
    for r in range(args.repeats):
        for name in (list(inputs) if r % 2 == 0 else list(reversed(inputs))):
            start, start_cpu = time.perf_counter(), time.process_time()
            task.train(inputs[name], seed=0, num_classes=splits.num_classes)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"repeat {r + 1}: {name:<9} wall {wall[name][-1]:7.2f} s, "
                  f"CPU {cpu[name][-1]:7.2f} s", flush=True)

    print(f"\nmnist, {len(splits.train)} images, {task.epochs} epochs, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads, {'cuda' if torch.cuda.is_available() else 'cpu'}; "
          f"disguising the training set took {transform_s:.2f} s")
    for what, times in (("wall", wall), ("CPU", cpu)):
        clean, masked = (statistics.median(times[n]) for n in inputs)
        ratio = masked / clean
        print(f"median {what} time: clean {clean:.2f} s, block-rmt(block={args.block}) "
              f"{masked:.2f} s; ratio {ratio:.3f} "
              f"[{'within' if ratio <= TARGET else 'ABOVE'} the target {TARGET}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
