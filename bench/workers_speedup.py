"""Speed-up of `--workers 2` over `--workers 1` on a plan of at least four cells.

Both runs start from an empty database with the model cache off, in subprocesses, in this one
run; prints both wall times and their ratio. Target on a 2-core machine: >= 1.6.

    python bench/workers_speedup.py
"""

from __future__ import annotations

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


def timed(workers: int, tmp: Path) -> float:
    plan = tmp / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    db = tmp / f"w{workers}.db"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmark.cli", "run", str(plan), "--db", str(db),
                    "--workers", str(workers), "--no-cache"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one = timed(1, Path(tmp))
        two = timed(2, Path(tmp))
    print(f"4 cells, --workers 1: {one:7.1f} s")
    print(f"4 cells, --workers 2: {two:7.1f} s")
    print(f"speed-up 2 workers over 1: {one / two:.2f}")


if __name__ == "__main__":
    main()
