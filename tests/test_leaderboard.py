from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import beta

from disguisebench import leaderboard, plan as plan_mod, registry, report, runner, scoring, stats
from disguisebench import cell as cell_mod
from disguisebench.api import KNOWN_PAIRS, RECONSTRUCT, TARGETS, Attack
from disguisebench.cli import main
from disguisebench.store import FAILED, NOT_APPLICABLE, Store
from tests import _records as R
from tests.conftest import TOY_PLAN


def board(records, level="level-1"):
    boards = {b.level: b for b in leaderboard.aggregate(records)}
    return {row.defense: row for row in boards[level].rows}


def test_privacy_is_the_worst_attack_of_seed_means():
    recs = [R.utility(R.RMT, 0.9, seed=s) for s in (0, 1)] + [
        R.attack(R.RMT, R.TEMPLATE, "level-1", 20, seed=0),
        R.attack(R.RMT, R.TEMPLATE, "level-1", 40, seed=1),  # mean 0.3
        R.attack(R.RMT, R.SORTED, "level-1", 60, seed=0),
        R.attack(R.RMT, R.SORTED, "level-1", 20, seed=1),  # mean 0.4: the worst
    ]
    row = board(recs)["block-rmt"]
    assert row.advantages == pytest.approx({"template-match": 0.3,
                                            "template-match(feature=sorted-pixels)": 0.4})
    assert row.worst_attack == "template-match(feature=sorted-pixels)"
    assert row.privacy == pytest.approx(0.6)
    assert row.attacks["template-match"].seeds == [0, 1]


def test_privacy_interval_is_the_binomial_bootstrap_over_targets():
    half = [R.utility(R.RMT, 0.9), R.attack(R.RMT, R.TEMPLATE, "level-1", 200, n=400)]
    row = board(half)["block-rmt"]
    lo, hi = row.privacy_interval
    # 200 hits in 400: advantage 0.5 with standard error sqrt(0.25 / 400) = 0.025.
    assert row.privacy == pytest.approx(0.5)
    assert lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.012)
    assert hi == pytest.approx(0.5 + 1.96 * 0.025, abs=0.012)
    # A second seed with the same outcome: the seeds are resampled too (each draws 0, 1 or 2
    # copies of either), so the variance of the mean falls to 3/4 of one seed's, not 1/2.
    two = half + [R.utility(R.RMT, 0.9, seed=1),
                  R.attack(R.RMT, R.TEMPLATE, "level-1", 200, n=400, seed=1)]
    lo2, hi2 = board(two)["block-rmt"].privacy_interval
    assert (hi - lo) / (hi2 - lo2) == pytest.approx(math.sqrt(4 / 3), rel=0.1)
    # Every target re-identified: the Jeffreys draw keeps the interval off a single point.
    always = [R.utility(R.RMT, 0.9), R.attack(R.RMT, R.TEMPLATE, "level-1", 50, n=50)]
    lo, hi = board(always)["block-rmt"].privacy_interval
    assert lo < 1e-3 and 0.005 < hi < 0.06


def test_attacks_are_resampled_on_the_same_targets():
    one = [R.utility(R.RMT, 0.9), R.attack(R.RMT, R.TEMPLATE, "level-1", 30, n=100)]
    # A second attack with the very same hits: paired resampling makes the worst case per
    # resample equal to either, so the interval must not move (independent draws would lower it).
    both = one + [R.attack(R.RMT, R.SORTED, "level-1", 30, n=100)]
    assert board(both)["block-rmt"].privacy_interval == board(one)["block-rmt"].privacy_interval


def test_membership_interval_recomputes_the_auc():
    gen = torch.Generator().manual_seed(0)
    member = torch.arange(60) % 2 == 0
    scores = torch.rand(60, generator=gen).double() + 0.3 * member  # overlapping: AUC below 1
    metrics = scoring.score("membership", scores, scoring.Truth(member=member))
    # On the identity resample the recomputed AUC is the scorer's, ties counted half.
    tied = torch.tensor([0.5, 0.5, 0.2, 0.5, 0.9, 0.1])
    flags = torch.tensor([True, False, False, True, True, False])
    assert stats.auc(np.array([[0.5, 0.5, 0.9, 0.5, 0.2, 0.1]]), 3)[0] == pytest.approx(
        scoring.roc_auc(tied, flags))
    recs = [R.utility(R.NONE, 0.9),
            R.record(R.NONE, R.VISUAL, "level-1", metrics=metrics, goal="membership")]
    row = board(recs)["none"]
    lo, hi = row.privacy_interval
    assert row.privacy == pytest.approx(1 - metrics["advantage"])
    assert lo < row.privacy < hi and hi - lo > 0.1
    perfect = scoring.score("membership", member.double(), scoring.Truth(member=member))
    recs[1] = R.record(R.NONE, R.VISUAL, "level-1", metrics=perfect, goal="membership")
    lo, hi = board(recs)["none"].privacy_interval
    assert lo < 1e-3 and 0.05 < hi < 0.25  # perfect separation: a Jeffreys draw, n = 30 a side


def test_records_without_per_target_outcomes_keep_a_fixed_advantage_and_say_so():
    old = {"success": 0.5, "chance": 0.0, "advantage": 0.5}
    recs = [R.utility(R.RMT, 0.9),
            R.record(R.RMT, R.TEMPLATE, "level-1", metrics=old, goal="reidentify")]
    row = board(recs)["block-rmt"]
    assert row.privacy_interval == (0.5, 0.5)  # one seed: nothing left to resample
    assert row.attacks["template-match"].interval is None
    assert any("no per-target outcomes stored for template-match" in n for n in row.notes)


def test_utility_is_the_ratio_to_none_per_seed_with_jeffreys_intervals():
    recs = [R.utility(R.NONE, 0.8, seed=0), R.utility(R.NONE, 0.9, seed=1),
            R.utility(R.RMT, 0.6, seed=0), R.utility(R.RMT, 0.9, seed=1),
            R.utility(R.PIXELATE, 0.8, seed=0),
            R.attack(R.RMT, R.TEMPLATE, "level-1", 10)]
    rows = board(recs)
    rmt = rows["block-rmt"]
    assert rmt.accuracy == pytest.approx(0.75)
    assert rmt.baseline_accuracy == pytest.approx(0.85)
    assert rmt.utility == pytest.approx((0.6 / 0.8 + 0.9 / 0.9) / 2)
    assert rmt.utility_interval[0] < rmt.utility < rmt.utility_interval[1]
    # One seed, 80 of 100 right: the Jeffreys interval of a binomial proportion.
    pix = rows["pixelate"]
    expected = beta.ppf([0.025, 0.975], 80.5, 20.5)
    assert pix.accuracy_interval == pytest.approx(tuple(expected), abs=0.01)
    assert pix.utility == pytest.approx(1.0)
    # The baseline against itself is exactly 1.
    assert rows["none"].utility == 1.0 and rows["none"].utility_interval == (1.0, 1.0)
    # Without a stored test-set size there is no interval, and the row says why.
    bare = [R.utility(R.NONE, 0.8, n_test=None), R.attack(R.NONE, R.TEMPLATE, "level-1", 10)]
    none = board(bare)["none"]
    assert none.accuracy_interval is None and none.utility_interval is None
    assert any("no test-set size" in n for n in none.notes)


def test_pareto_front():
    points = [(0.9, 0.5), (0.5, 0.9), (0.4, 0.8), (0.9, 0.4), (0.5, 0.9), (None, 1.0)]
    # (0.4, 0.8) is dominated by (0.5, 0.9), (0.9, 0.4) by (0.9, 0.5); equal points both stay.
    assert leaderboard.pareto_front(points) == [True, True, False, False, True, False]
    recs = [R.utility(R.NONE, 1.0), R.utility(R.PIXELATE, 0.9), R.utility(R.RMT, 0.95),
            R.utility(R.RMT6, 0.8),
            R.attack(R.NONE, R.TEMPLATE, "level-1", 100),  # privacy 0, utility 1
            R.attack(R.PIXELATE, R.TEMPLATE, "level-1", 50),  # 0.5, 0.9: dominated by block-rmt
            R.attack(R.RMT, R.TEMPLATE, "level-1", 40),  # 0.6, 0.95
            R.attack(R.RMT6, R.TEMPLATE, "level-1", 10)]  # 0.9, 0.8
    b = {b.level: b for b in leaderboard.aggregate(recs)}["level-1"]
    assert [r.defense for r in b.rows] == ["block-rmt(block=6)", "block-rmt", "pixelate", "none"]
    assert [r.pareto for r in b.rows] == [True, True, False, True]


def test_failed_and_not_applicable_records_are_shown_but_not_scored():
    recs = [R.utility(R.RMT, 0.9), R.attack(R.RMT, R.TEMPLATE, "level-1", 20),
            R.record(R.RMT, R.SORTED, "level-1", status=FAILED, goal="reidentify",
                     error="RuntimeError: boom"),
            R.record(R.RMT, R.VISUAL, "level-1", status=NOT_APPLICABLE, goal="label",
                     meta={"missing": ["oracle"]})]
    b = {b.level: b for b in leaderboard.aggregate(recs)}["level-1"]
    row = b.rows[0]
    assert row.privacy == pytest.approx(0.8) and row.worst_attack == "template-match"
    assert (row.failed, row.not_applicable) == (1, 1)
    failed = row.attacks["template-match(feature=sorted-pixels)"]
    assert failed.status == FAILED and failed.errors == ["RuntimeError: boom"]
    assert failed.advantage is None
    na = row.attacks["visual-reid"]
    assert na.status == NOT_APPLICABLE and na.missing == ["oracle"]
    text = leaderboard.render_text([b])
    assert "template-match (0.200)" in text
    entry = report.entry(b, row)
    assert entry["attacks"]["visual-reid"]["status"] == "not-applicable"
    assert entry["attacks"]["template-match(feature=sorted-pixels)"]["errors"] == [
        "RuntimeError: boom"]
    cells = [c.text for c in report.row_cells(b, row)]
    assert "failed" in cells and "n/a" in cells


def test_a_defense_whose_training_failed_still_has_a_row():
    recs = [R.utility(R.NONE, 0.9), R.attack(R.NONE, R.TEMPLATE, "level-1", 90),
            R.record(R.RMT, status=FAILED, error="RuntimeError: boom in fit"),
            R.record(R.RMT, R.TEMPLATE, "level-1", status=FAILED, goal="reidentify",
                     error="RuntimeError: boom in fit")]
    row = board(recs)["block-rmt"]
    assert row.accuracy is None and row.privacy is None and row.failed == 1
    assert row.notes[0] == "training failed: RuntimeError: boom in fit"


def _strict_json(path):
    def reject(token):
        raise ValueError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=reject)


def test_write_entries_readme_and_page(tmp_path):
    out = tmp_path / "lb"
    recs = R.page_records(tmp_path / "art")
    boards = leaderboard.aggregate(recs)
    stale = out / "entries" / "toy-epochs-1" / "level-1" / "gone.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    written = report.write(boards, out, artifacts=tmp_path / "art", n_records=len(recs))
    assert not stale.exists()  # a defense no longer in the store leaves no entry behind

    rmt = _strict_json(out / "entries/toy-epochs-1/level-1/block-rmt.json")
    assert rmt["defense"]["spec"] == R.RMT
    assert rmt["rank"] == 1 and rmt["pareto"] is True
    assert rmt["privacy"]["value"] == pytest.approx(0.9)
    assert all(isinstance(v, float) for v in rmt["privacy"]["interval"])
    assert rmt["utility"]["ratio"] == pytest.approx(0.93 / 0.95, abs=1e-6)
    assert rmt["utility"]["accuracy"] == pytest.approx(0.93)
    assert rmt["worst_attack"]["label"] == "template-match"
    assert set(rmt["attacks"]) == {"template-match", "linear-inverse(ridge=0.001)",
                                   "visual-reid"}
    assert rmt["manifest"]["git_commit"] == "abc123" and rmt["manifest"]["seeds"] == [0]
    assert rmt["manifest"]["plan_hash"] == "p1"
    for path in (p for p in written if p.suffix == ".json"):
        _strict_json(path)

    readme = (out / "README.md").read_text()
    assert "disguisebench run plans/attacks.yaml && disguisebench leaderboard" in readme
    table = readme.split("## toy(epochs=1) / level-1")[1].split("![")[0]
    names = [line.split("|")[3].strip() for line in table.splitlines() if line.startswith("| ")]
    assert names[1:] == [  # sorted by privacy: 1 - 0.1, 1 - 0.3, 1 - 0.7, 1 - 0.95
        "[block-rmt](entries/toy-epochs-1/level-1/block-rmt.json)",
        "[block-rmt(block=6)](entries/toy-epochs-1/level-1/block-rmt-block-6.json)",
        "[pixelate](entries/toy-epochs-1/level-1/pixelate.json)",
        "[none](entries/toy-epochs-1/level-1/none.json)"]
    assert "(plots/toy-epochs-1/level-1.png)" in readme
    assert "(gallery/toy-epochs-1/level-1.png)" in readme

    for name in ("plots/toy-epochs-1/level-1.png", "gallery/toy-epochs-1/level-2.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from a network
    assert html.count('<table class="board">') == 2
    assert 'src="gallery/toy-epochs-1/level-1.png"' in html


class LinearInverse(Attack):
    """Test-only reconstruction: a ridge map from disguised to plain images fitted on known pairs.

    Args:
        ridge: L2 penalty of the least-squares fit.
    """

    goal = RECONSTRUCT
    needs = frozenset({TARGETS, KNOWN_PAIRS})

    def __init__(self, ridge: float = 1e-3) -> None:
        self.ridge = ridge

    def _run(self, view, *, seed):
        plain, disguised = view.known_pairs
        x = disguised.x.flatten(1).double()
        y = plain.x[disguised.source[:, 0]].flatten(1).double()
        w = torch.linalg.solve(x.T @ x + self.ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
        out = view.targets.x.flatten(1).double() @ w
        return out.float().reshape(len(view.targets), *plain.x.shape[1:])


def test_runner_keeps_gallery_images_without_secrets(tmp_path):
    raw = {**TOY_PLAN, "tasks": [{"toy": {"epochs": 1}}], "defenses": ["none", "block-rmt"],
           "attacks": ["linear-inverse", "template-match"], "levels": ["level-1", "level-2"]}
    with registry.temporary("linear-inverse", LinearInverse):
        plan = plan_mod.from_dict(raw)
        db = tmp_path / "r.db"
        with Store(db) as store:
            runner.run(plan, store)
            recs = list(store.records())
            art = store.artifacts_dir
        assert art == tmp_path / "r-artifacts"
        kept = [r for r in recs if r.meta.get("artifact")]
        # Only the reconstruction ran at level 2 (it needs known pairs), one per defense.
        assert {(r.defense["name"], r.level) for r in kept} == {("none", "level-2"),
                                                               ("block-rmt", "level-2")}
        for r in kept:
            with np.load(art / r.meta["artifact"], allow_pickle=False) as arrays:
                assert sorted(arrays.files) == ["disguised", "original", "reconstruction"]
                assert all(arrays[k].shape == (cell_mod.GALLERY_TARGETS, 1, 12, 12)
                           for k in arrays.files)
                if r.defense["name"] == "none":
                    assert np.array_equal(arrays["original"], arrays["disguised"])
        rec = next(r for r in recs if r.attack and r.attack["name"] == "linear-inverse"
                   and r.status == "ok")
        assert len(rec.metrics["per_target"]) == plan.n_targets
        assert rec.meta["plan_hash"] == plan.digest() and rec.meta["date"]
        utility = next(r for r in recs if r.attack is None)
        assert utility.metrics["n_test"] == 200

        out = tmp_path / "lb"
        assert main(["leaderboard", "--db", str(db), "--out", str(out)]) == 0
    assert (out / "gallery/toy-epochs-1/level-2.png").is_file()
    assert not (out / "gallery/toy-epochs-1/level-1.png").exists()  # nothing reconstructed there
    assert "has no gallery" in (out / "README.md").read_text()
    # Secret state (attributes ending in `_`) reaches neither the database nor the entries.
    texts = [p.read_text() for p in out.rglob("*.json")] + [db.read_bytes().decode("latin-1")]
    assert not any(key in text for text in texts
                   for key in ('"matrices_"', '"permutation_"', '"secret_"', '_":'))
