"""Speed-up of `--workers 2` over `--workers 1` on a plan of at least four cells.

Every run starts from an empty database with the model cache off, in subprocesses, in this one
run; prints the wall times and their ratios. Two ratios: two workers against one worker with
every core, and two single-thread workers against one single-thread worker (OMP_NUM_THREADS=1):
the second is what the executor itself loses to sharing out the cells, target >= 1.7 on a
2-core machine.

One worker already trains with every core (torch's intra-op threads); two workers get half the
threads each. The script also times one training with all threads and with one thread: the
speed-up of as many workers as cores cannot exceed cores / (one-thread time / all-thread time)
when training dominates, whatever the executor does.

    python bench/workers_speedup.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PLAN = {
    "name": "workers-bench",
    "seeds": [0],
    "levels": ["level-1"],
    "n_targets": 100,
    "tasks": [{"mnist": {"epochs": 4}}],
    "defenses": ["none", {"pixelate": {"block": 4}}, {"block-rmt": {"block": [4, 7]}}],
    "attacks": ["template-match"],
}


def timed(workers: int, tmp: Path, *, one_thread: bool = False) -> float:
    plan = tmp / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    db = tmp / f"w{workers}{'-1t' if one_thread else ''}.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else None
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "disguisebench.cli", "run", str(plan), "--db", str(db),
                    "--workers", str(workers), "--no-cache"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


THREADS = """
import time, torch
from disguisebench import registry
task = registry.create("task", "mnist", {"epochs": 2})
train = task.load(seed=0).train
task.train(train, seed=0, num_classes=10)  # warm-up
for threads in (torch.get_num_threads(), 1):
    torch.set_num_threads(threads)
    start = time.perf_counter()
    task.train(train, seed=0, num_classes=10)
    print(threads, time.perf_counter() - start)
"""


def thread_scaling() -> tuple[int, float, float]:
    """(cores, seconds with every thread, seconds with one) for one 2-epoch mnist training."""
    out = subprocess.run([sys.executable, "-c", THREADS], check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[3])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one = timed(1, Path(tmp))
        two = timed(2, Path(tmp))
        one_single = timed(1, Path(tmp), one_thread=True)
        two_single = timed(2, Path(tmp), one_thread=True)
    cores, many, single = thread_scaling()
    print(f"4 cells, --workers 1: {one:7.1f} s")
    print(f"4 cells, --workers 2: {two:7.1f} s")
    print(f"speed-up 2 workers over 1: {one / two:.2f}")
    print(f"4 cells, one single-thread worker:  {one_single:7.1f} s")
    print(f"4 cells, two single-thread workers: {two_single:7.1f} s")
    print(f"speed-up of the executor (2 x 1 thread over 1 x 1 thread): "
          f"{one_single / two_single:.2f} (target >= 1.7)")
    print(f"one training, {cores} threads: {many:.1f} s; 1 thread: {single:.1f} s "
          f"(intra-op speed-up {single / many:.2f}; ceiling for {cores} workers "
          f"{cores / (single / many) if cores > 1 else 1:.2f})")


if __name__ == "__main__":
    main()
