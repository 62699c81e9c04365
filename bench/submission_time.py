"""Attack time against the owner's training time on the standard submission plan, one task, one seed.

Runs `plans/submission.yaml` (every registered attack, the `auto` ensemble among them, at all
three levels) cut to one task and one seed, with `none` and one submitted defense, in a
subprocess against a fresh database, then prints each cell's seconds as `show --profile` does and
the ratio (attack time) / (owner-model training time), all measured in this one run: the
attacks' wall time (a cell runs several at once) and, for information, their seconds summed over
runs. Target: <= 2.

    python bench/submission_time.py [--task mnist] [--defense block-rmt:block=4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from disguisebench import timing
from disguisebench.store import Store

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist")
    parser.add_argument("--defense", default="block-rmt:block=4",
                        help="NAME:param=value,... the submitted defense")
    args = parser.parse_args()
    plan = yaml.safe_load((ROOT / "plans" / "submission.yaml").read_text())
    name, _, rest = args.defense.partition(":")
    params = {k: yaml.safe_load(v) for k, v in (kv.split("=") for kv in rest.split(",") if kv)}
    plan.update(name="submission-time", tasks=[args.task], seeds=[0],
                defenses=["none", {name: params} if params else name])
    with tempfile.TemporaryDirectory() as tmp:
        path, db = Path(tmp) / "plan.yaml", Path(tmp) / "bench.db"
        path.write_text(yaml.safe_dump(plan))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "disguisebench.cli", "run", str(path), "--db",
                        str(db), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        with Store(db, create_salt=False) as store:
            cells = timing.cell_times(store.records())
    print(timing.render(cells))
    print(f"\n{len(cells)} cell(s) in {wall:.0f} s")
    for c in cells:
        print(f"{c.defense}: attacks' wall time {c.attack_wall:.0f} s ({c.lanes} at a time) / "
              f"training {c.train:.0f} s = {c.wall_ratio:.2f} (target <= 2); the attacks' "
              f"seconds summed over runs {c.attack_total:.0f} s = {c.ratio:.2f} of the "
              "training's")


if __name__ == "__main__":
    main()
