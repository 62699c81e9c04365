"""Wall time of the default plan: cold, warm with nothing new, and with one new defense added.

Runs the `disguisebench` command in subprocesses (as a user would) against a fresh database and
prints the times and their ratios, all measured in this one run.

    python bench/plan_time.py [--plan plans/default.yaml] [--new-defense block-rmt:block=7]

Targets on a 2-core machine: cold <= 180 s; warm <= 10 s; the new defense costs only its own cell.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def timed_run(plan: Path, db: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "disguisebench.cli", "run", str(plan), "--db", str(db)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def count(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as con:
        records = con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        # A utility row's attack column holds the JSON text null.
        cells = con.execute("SELECT COUNT(*) FROM records WHERE attack = 'null'").fetchone()[0]
    return records, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(ROOT / "plans" / "default.yaml"))
    parser.add_argument("--new-defense", default="block-rmt:block=7",
                        help="NAME:param=value,... added to the plan for the third run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        db = tmp / "bench.db"
        plan = yaml.safe_load(Path(args.plan).read_text())
        base = tmp / "plan.yaml"
        base.write_text(yaml.safe_dump(plan))
        cold = timed_run(base, db)
        records_cold, cells_cold = count(db)
        warm = timed_run(base, db)
        name, _, rest = args.new_defense.partition(":")
        params = {k: yaml.safe_load(v) for k, v in (kv.split("=") for kv in rest.split(",") if kv)}
        plan["defenses"] = list(plan["defenses"]) + [{name: params}]
        grown = tmp / "grown.yaml"
        grown.write_text(yaml.safe_dump(plan))
        added = timed_run(grown, db)
        records_added, cells_added = count(db)
    per_cell = cold / cells_cold
    print(f"cold default plan:        {cold:8.1f} s  ({cells_cold} cells, {records_cold} records)")
    print(f"warm, nothing new:        {warm:8.1f} s  (warm / cold = {warm / cold:.3f})")
    print(f"one new defense added:    {added:8.1f} s  ({cells_added - cells_cold} new cell(s), "
          f"{records_added - records_cold} new records; added / cold per cell = "
          f"{added / per_cell:.2f})")


if __name__ == "__main__":
    main()
