"""Markdown tables of the seed papers' evaluations, read from a results database.

    python -m benchmark.reproduction paper-2019 --db results/paper-2019.db
    python -m benchmark.reproduction comparative-2023 --db results/comparative-2023.db

``paper-2019`` lays out the 2019 paper's grid (block size x noise) for model quality, visual
re-identification and class membership; ``comparative-2023`` compares block-rmt, block-aes and
instahide at levels 1 and 2, with the known-pair attacks as a function of the number of pairs.
Every figure is read from the records of the matching plan (``plans/<name>.yaml``); a cell the
database lacks is printed as "–".
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

from disguisebench.leaderboard import aggregate
from disguisebench.plan import Spec
from disguisebench.store import Record, Store

MISSING = "–"
PAIRS = (1, 2, 3, 10, 25, 50, 100)


def _fmt(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


class Results:
    """The ok records of one task, averaged over seeds, looked up by defense and attack."""

    def __init__(self, records: Iterable[Record], task: str = "mnist") -> None:
        self.records = [r for r in records if r.task_name == task]
        self.task = task

    def _mean(self, pick: Callable[[Record], bool], metric: str) -> float | None:
        values = [r.metrics[metric] for r in self.records
                  if r.status == "ok" and metric in r.metrics and pick(r)]
        return statistics.fmean(values) if values else None

    def accuracy(self, defense: str, **params: object) -> float | None:
        return self._mean(lambda r: r.attack is None
                          and _matches(r.defense, defense, params, "defense"), "accuracy")

    def attack(self, metric: str, defense: str, attack: str, level: str = "level-1", *,
               attack_params: dict | None = None, **params: object) -> float | None:
        return self._mean(lambda r: r.level == level
                          and _matches(r.defense, defense, params, "defense")
                          and _matches(r.attack, attack, attack_params or {}, "attack"), metric)

    def wall_seconds(self) -> float:
        return sum(float(r.meta.get("wall_seconds") or 0) for r in self.records)


@functools.cache
def _full(kind: str, name: str, params: str) -> dict:
    """Every hyperparameter of ``name`` given ``params`` (JSON), defaults spelled out."""
    return Spec.of(kind, name, json.loads(params)).param_dict()


def _matches(spec: dict | None, name: str, params: dict, kind: str) -> bool:
    """Whether a stored spec is ``name`` with ``params`` and every other parameter at its
    default (a record of another version's defaults does not match)."""
    if spec is None or spec["name"] != name:
        return False
    full = _full(kind, name, json.dumps(params, sort_keys=True))
    return spec["params"].keys() == full.keys() and all(
        _same(spec["params"][k], v) for k, v in full.items())


def _same(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


BLOCKS = (2, 4, 7, 14, 28)
SIGMAS = (0, 25, 50, 100, 200)


def _paper_rmt(block: int, sigma: int) -> dict:
    """The 2019 paper's scheme: orthogonal matrices and one block permutation for all images."""
    return {"block": block, "sigma": sigma, "matrix": "orthogonal", "permutation": "dataset"}


def _grid(cell: Callable[[int, int], float | None], unit: str = "", digits: int = 3) -> str:
    """A block size (rows) × noise level (columns) table of ``cell(k, sigma)``."""
    return _table(["block k \\ σ", *(f"σ={s}{unit}" for s in SIGMAS)],
                  ([str(k), *(_fmt(cell(k, s), digits) for s in SIGMAS)] for k in BLOCKS))


def _rmt_attack(res: Results, metric: str, attack: str) -> Callable[[int, int], float | None]:
    return lambda k, s: res.attack(metric, "block-rmt", attack, **_paper_rmt(k, s))


def paper_2019(res: Results) -> str:
    """Model quality, visual re-identification and class membership over the 2019 grid."""
    out = [f"### Model quality: test accuracy on disguised images ({res.task})",
           "",
           f"Plaintext model (`none`): {_fmt(res.accuracy('none'))}.",
           "",
           _grid(lambda k, s: res.accuracy("block-rmt", **_paper_rmt(k, s))),
           "",
           "### Visual re-identification: accuracy of a plaintext-trained CNN on disguised "
           "training images",
           "",
           f"On plaintext (`none`): {_fmt(res.attack('success', 'none', 'visual-reid'))}; "
           f"the largest class among the targets: "
           f"{_fmt(res.attack('majority', 'none', 'visual-reid'))}. (On the leaderboard this "
           "attack scores advantage 0: the cloud holds the targets' labels.)",
           "",
           _grid(_rmt_attack(res, "success", "visual-reid")),
           "",
           "### The harness's level-1 key recovery over the same grid",
           "",
           "`permutation-recovery`: fraction of disguised targets re-identified in a gallery of "
           "their originals and as many distractors (chance 0.005) after the block permutation "
           "is recovered from statistics and undone (first table). `rmt-moment-attack`: "
           "fraction of targets whose reconstruction, with matrices estimated from moments and "
           "no pairs, is matched to the right original by SSIM (second table), and its PSNR in "
           "dB (third table).",
           "",
           _grid(_rmt_attack(res, "success", "permutation-recovery"), " matched"),
           "",
           _grid(_rmt_attack(res, "success", "rmt-moment-attack"), " matched"),
           "",
           _grid(_rmt_attack(res, "psnr", "rmt-moment-attack"), " PSNR", 1),
           "",
           "### Class membership: spread of each class's predicted labels on plaintext images",
           "",
           "Mean over classes of the entropy (bits; uniform over 10 labels is 3.32) and the Fano "
           "factor of the predicted-label histogram when plaintext public images are fed to the "
           "model trained on disguised images; the baseline is a model trained on plaintext. "
           "Low entropy means the owner's model sorts plaintext into consistent labels.",
           ""]
    rows = []
    for k, s in [(k, s) for k in BLOCKS for s in SIGMAS]:
        metric = lambda m, k=k, s=s: _rmt_attack(res, m, "class-membership")(k, s)  # noqa: E731
        if k == 7 and s == 100 or k in (4, 28) and s in (0, 100):
            rows.append(_membership_row(f"k={k}, σ={s}", metric))
    rows.append(_membership_row("none", lambda m: res.attack(m, "none", "class-membership")))
    out.append(_table(["defense", "entropy", "Fano", "baseline entropy", "baseline Fano",
                       "baseline accuracy", "gallery labelled (accuracy)"], rows))
    return "\n".join(out)


def _membership_row(label: str, metric: Callable[[str], float | None]) -> list[str]:
    return [label, _fmt(metric("attack.entropy")), _fmt(metric("attack.fano"), 1),
            _fmt(metric("attack.baseline_entropy")), _fmt(metric("attack.baseline_fano"), 1),
            _fmt(metric("attack.baseline_accuracy")), _fmt(metric("success"))]


COMPARED = (("none", {}), ("block-rmt", {"block": 4}), ("block-aes", {"block": 4}),
            ("instahide", {}))


def comparative_2023(res: Results) -> str:
    """RMT, AES and InstaHide at levels 1 and 2, and the known-pair attacks against n."""
    boards = {b.level: b for b in aggregate(res.records)}  # one task: Results keeps one
    rows = []
    for name, params in COMPARED:
        cells = [name, _fmt(res.accuracy(name, **params))]
        for level in ("level-1", "level-2"):
            row = next((r for r in boards[level].rows
                        if _matches(r.spec, name, params, "defense")),
                       None) if level in boards else None
            cells += ([_fmt(row.privacy), f"{row.worst_attack} ({_fmt(row.worst_advantage)})"]
                      if row is not None and row.worst_attack else [MISSING, MISSING])
        rows.append(cells)
    out = [f"### Utility and privacy ({res.task})", "",
           "Privacy is 1 minus the largest advantage of any attack that ran at that level.", "",
           _table(["defense", "accuracy", "privacy L1", "worst attack L1 (advantage)",
                   "privacy L2", "worst attack L2 (advantage)"], rows), ""]
    out += ["### Known-pair attacks against the number of pairs n (level 2)", "",
            "Known-pair regression: fraction of targets whose reconstruction is matched to the "
            "right original (SSIM against a gallery of originals and distractors) and mean PSNR "
            "(dB); AES codebook: fraction of target chunks found in the codebook and the same "
            "match rate.", ""]
    rows = []
    for n in PAIRS:
        kpr = {"n_pairs": n}
        rmt = lambda m, d="block-rmt", p=None: res.attack(  # noqa: E731
            m, d, "known-pair-regression", "level-2", attack_params=kpr,
            **({"block": 4} if p is None else p))
        aes = lambda m: res.attack(m, "block-aes", "aes-codebook", "level-2",  # noqa: E731
                                   attack_params={"n_pairs": n}, block=4)
        rows.append([str(n), _fmt(rmt("success")), _fmt(rmt("psnr"), 1),
                     _fmt(rmt("success", "instahide", {})), _fmt(aes("attack.hit_rate")),
                     _fmt(aes("success")), _fmt(aes("psnr"), 1)])
    out.append(_table(["n", "RMT: matched", "RMT: PSNR", "InstaHide: matched",
                       "AES: chunks found", "AES: matched", "AES: PSNR"], rows))
    return "\n".join(out)


REPORTS = {"paper-2019": paper_2019, "comparative-2023": comparative_2023}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", choices=sorted(REPORTS))
    parser.add_argument("--db", required=True, help="results database of the matching plan")
    parser.add_argument("--task", default="mnist")
    args = parser.parse_args(argv)
    if not Path(args.db).exists():
        parser.error(f"--db {args.db}: no such database; run plans/{args.report}.yaml first")
    with Store(args.db) as store:
        res = Results(store.records(), args.task)
    if not res.records:
        parser.error(f"--db {args.db} holds no records of task {args.task!r}")
    print(REPORTS[args.report](res))
    print(f"\nRecords: {len(res.records)}; their wall times sum to {res.wall_seconds() / 60:.1f} min.")


if __name__ == "__main__":
    main()
