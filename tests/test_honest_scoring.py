"""Issue 17, one test per rule: a refusing defense, a failing attack, a level inversion, a
public-only label baseline, a boundary interval (and the harness fixes behind them)."""

from __future__ import annotations

import pytest
import torch

from disguisebench import (baselines, leaderboard, plan as plan_mod, registry, report, runner,
                           scoring, stats)
from disguisebench.api import LABEL, PUBLIC, TARGETS, Attack, NotApplicable
from disguisebench.store import FAILED, NOT_APPLICABLE, OK, REFUSED, Store
from tests import _records as R
from tests.conftest import TOY_PLAN


def boards(records):
    return {b.level: b for b in leaderboard.aggregate(records, resamples=400)}


def rows(records, level="level-1"):
    return {row.defense: row for row in boards(records)[level].rows}


def refused(defense, att, level, reason="PluginError: block-rmt.transform: boom", seed=0):
    return R.record(defense, att, level, seed=seed, status=REFUSED, goal="reidentify",
                    error=reason)


def failed(defense, att, level, seed=0):
    return R.record(defense, att, level, seed=seed, status=FAILED, goal="reidentify",
                    error="RuntimeError: the attack's own bug")


def test_a_refusing_defense_counts_as_a_complete_break_with_the_reason_shown():
    recs = [R.utility(R.NONE, 0.95), R.utility(R.RMT, 0.9),
            R.attack(R.RMT, R.TEMPLATE, "level-1", 10),
            refused(R.RMT, R.SORTED, "level-1"),
            R.attack(R.NONE, R.TEMPLATE, "level-1", 40)]
    b = boards(recs)["level-1"]
    row = {r.defense: r for r in b.rows}["block-rmt"]
    label = "template-match(feature=sorted-pixels)"
    assert row.privacy == 0.0 and row.worst_attack == label and row.worst_advantage == 1.0
    assert row.complete and row.refused == 1 and row.privacy_interval == (0.0, 0.0)
    assert row.attacks[label].status == REFUSED
    assert row.attacks[label].refusals == ["PluginError: block-rmt.transform: boom"]
    # Ranked below the defense it would otherwise beat (none: privacy 0.6).
    assert [r.defense for r in b.rows] == ["none", "block-rmt"]
    entry = report.entry(b, row)
    assert entry["attacks"][label]["refusals"] == ["PluginError: block-rmt.transform: boom"]
    assert entry["records"]["refused"] == 1
    cell = report.attack_cell(row.attacks[label])
    assert cell.text == "1.000 refused" and "block-rmt.transform: boom" in cell.title
    # Refused on one seed of two: that seed counts 1, the other its own advantage.
    two = recs + [R.utility(R.RMT, 0.9, seed=1), R.attack(R.RMT, R.SORTED, "level-1", 20, seed=1)]
    assert rows(two)["block-rmt"].attacks[label].advantage == pytest.approx(0.6)


def test_a_failing_attack_makes_the_entry_an_unranked_upper_bound():
    # The case: two of three attacks failed, the third at advantage 0.
    recs = [R.utility(R.NONE, 0.95), R.utility(R.RMT, 0.9), R.utility(R.PIXELATE, 0.8),
            R.attack(R.RMT, R.TEMPLATE, "level-1", 0), failed(R.RMT, R.SORTED, "level-1"),
            failed(R.RMT, R.VISUAL, "level-1"),
            R.attack(R.PIXELATE, R.TEMPLATE, "level-1", 50),
            R.attack(R.NONE, R.TEMPLATE, "level-1", 90)]
    b = boards(recs)["level-1"]
    names = [r.defense for r in b.rows]
    row = {r.defense: r for r in b.rows}["block-rmt"]
    assert row.privacy == 1.0 and not row.complete and row.failed == 2
    assert row.rank is None and not row.pareto
    assert names == ["pixelate", "none", "block-rmt"]  # listed below every complete entry
    assert [r.rank for r in b.rows[:2]] == [1, 2]
    text = leaderboard.render_text([b])
    assert "≤1.000" in text and "incomplete" in text
    entry = report.entry(b, row)
    assert entry["rank"] is None and entry["privacy"]["upper_bound"] is True
    cells = report.row_cells(b, row)
    assert cells[0].text == "–" and cells[3].text == "≤1.000"
    # A lower level's failure carries up: that level may set the privacy above it.
    up = recs + [R.attack(R.RMT, R.TEMPLATE, "level-2", 0)]
    assert not rows(up, "level-2")["block-rmt"].complete


def test_a_level_inversion_is_capped_by_the_lower_level():
    recs = [R.utility(R.RMT, 0.9),
            R.attack(R.RMT, R.TEMPLATE, "level-1", 30),  # privacy 0.7 at level 1
            R.attack(R.RMT, R.TEMPLATE, "level-2", 10),  # 0.9 at level 2 alone: an inversion
            R.attack(R.RMT, R.SORTED, "level-3", 50)]  # 0.5 at level 3
    by_level = {lv: {r.defense: r for r in b.rows}["block-rmt"] for lv, b in boards(recs).items()}
    one, two, three = by_level["level-1"], by_level["level-2"], by_level["level-3"]
    assert one.privacy == pytest.approx(0.7)
    assert two.level_privacy == pytest.approx(0.9) and two.privacy == pytest.approx(0.7)
    assert two.worst_level == "level-1" and two.worst_attack == "template-match"
    assert any("privacy set at level-1" in n for n in two.notes)
    assert two.privacy_interval == one.privacy_interval  # the same targets, the same draws
    assert three.privacy == pytest.approx(0.5) and three.worst_level == "level-3"
    assert three.privacy_interval[1] <= two.privacy_interval[1]
    text = leaderboard.render_text([boards(recs)["level-2"]])
    assert "template-match (0.300) at level-1" in text


def test_label_chance_is_the_public_only_classifier_on_the_same_images():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    truth = scoring.Truth(labels=labels, chance_hits=torch.tensor([1, 1, 1, 1, 1, 1, 0, 0]))
    m = scoring.score(LABEL, labels.clone(), truth)  # every label right
    assert m["chance"] == 0.75 and m["majority"] == 0.375
    assert m["advantage"] == 1.0
    m = scoring.score(LABEL, torch.tensor([0, 0, 0, 1, 1, 2, 0, 0]), truth)  # 6 of 8: the baseline
    assert m["success"] == 0.75 and m["advantage"] == 0.0
    # The runner's baseline: the task's model trained on public images only, on the gallery.
    from disguisebench.tasks.toy import Toy

    task = Toy(epochs=3)
    splits = task.load(seed=0)
    gallery, gallery_labels = splits.train.x[:40], splits.train.y[:40]
    attack = type("GalleryLabeller", (Attack,), {"goal": LABEL, "label_of": "gallery"})()
    truth = baselines.with_chance(scoring.Truth(gallery=gallery, labels=gallery_labels), attack,
                                  task, splits, seed=7)
    model = task.clone().train(splits.public, seed=7, num_classes=splits.num_classes)
    expected = (task.predict(model, gallery).argmax(1) == gallery_labels).int()
    assert torch.equal(truth.chance_hits, expected)
    assert baselines.public_classifier(task, splits, seed=7) is \
        baselines.public_classifier(task, splits, seed=7)  # cached per task and seed
    # Labelling the targets is no attack: the cloud holds their labels.
    targets = type("TargetLabeller", (Attack,), {"goal": LABEL, "label_of": "targets"})()
    truth = baselines.with_chance(scoring.Truth(labels=gallery_labels), targets, task, splits,
                                  seed=7)
    m = scoring.score(LABEL, gallery_labels.clone(), truth)
    assert m["chance"] == 1.0 and m["advantage"] == 0.0


def test_label_interval_resamples_the_baseline_on_the_same_images():
    hits = [1] * 90 + [0] * 10
    base = [1] * 90 + [0] * 10  # the public baseline is right on exactly the same images
    metrics = {"success": 0.9, "chance": 0.9, "advantage": 0.0, "per_target": hits,
               "chance_per_target": base}
    recs = [R.utility(R.NONE, 0.9),
            R.record(R.NONE, R.VISUAL, "level-1", metrics=metrics, goal="label")]
    assert rows(recs)["none"].privacy_interval == (1.0, 1.0)  # never above the baseline


def test_boundary_intervals_and_shared_ranks_with_the_number_of_seeds():
    recs = [R.utility(R.NONE, 0.95), R.utility(R.RMT, 0.9), R.utility(R.PIXELATE, 0.8),
            R.utility(R.RMT6, 0.85),
            R.attack(R.NONE, R.TEMPLATE, "level-1", 100),  # 100 of 100
            R.attack(R.RMT, R.TEMPLATE, "level-1", 0),  # 0 of 100
            R.attack(R.RMT6, R.TEMPLATE, "level-1", 2),
            R.attack(R.PIXELATE, R.TEMPLATE, "level-1", 60)]
    b = boards(recs)["level-1"]
    by = {r.defense: r for r in b.rows}
    none = by["none"]
    assert none.attacks["template-match"].interval[0] < 0.99  # not [1.00, 1.00]
    assert none.privacy_interval[0] < 1e-3 and none.privacy_interval[1] > 0.01
    assert by["block-rmt"].privacy_interval[1] == 1.0 and by["block-rmt"].privacy_interval[0] < 0.99
    # block-rmt (0 hits) and block-rmt(block=6) (2 hits) overlap: they share rank 1.
    assert [(r.defense, r.rank_label) for r in b.rows] == [
        ("block-rmt", "=1"), ("block-rmt(block=6)", "=1"), ("pixelate", "3"), ("none", "4")]
    assert all(r.seeds == 1 for r in b.rows)
    text = leaderboard.render_text([b])
    assert "=1" in text and "seeds" in text
    out = report.markdown_table(b, report.board_paths(b))
    assert "| seeds |" in out and "| =1 |" in out
    assert stats.shared_ranks([(0.8, 0.9), (0.7, 0.85), (0.6, 0.75)]) == [1, 1, 2]


def test_intervals_cover_the_spread_between_seeds():
    # One defense, two keys: 10 and 50 hits in 100. Within either seed the interval is narrow;
    # over both, the seed-to-seed spread shows.
    one = [R.utility(R.RMT, 0.9), R.attack(R.RMT, R.TEMPLATE, "level-1", 10)]
    both = one + [R.utility(R.RMT, 0.9, seed=1), R.attack(R.RMT, R.TEMPLATE, "level-1", 50, seed=1)]
    lo1, hi1 = rows(one)["block-rmt"].privacy_interval
    lo2, hi2 = rows(both)["block-rmt"].privacy_interval
    row = rows(both)["block-rmt"]
    assert row.privacy == pytest.approx(0.7) and row.seeds == 2
    assert hi2 - lo2 > 2 * (hi1 - lo1)
    assert lo2 < 0.55 and hi2 > 0.85  # reaches towards either seed's own value


def test_leaderboard_is_reproducible_byte_for_byte(tmp_path):
    recs = R.page_records()
    report.write(leaderboard.aggregate(recs), tmp_path / "a", n_records=len(recs))
    report.write(leaderboard.aggregate(list(reversed(recs))), tmp_path / "b", n_records=len(recs))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


class BlockOnly(Attack):
    """Test-only: needs a block-wise defense and says so."""

    goal = "reidentify"
    needs = frozenset({TARGETS, PUBLIC})

    def _run(self, view, *, seed):
        raise NotApplicable("block-only: needs a block-wise disguise")


def test_an_attack_that_does_not_apply_to_a_defense_is_not_applicable_not_failed(tmp_path):
    raw = {**TOY_PLAN, "tasks": [{"toy": {"epochs": 1}}], "defenses": ["none"],
           "levels": ["level-1"], "attacks": ["block-only"]}
    with registry.temporary("block-only", BlockOnly):
        with Store(tmp_path / "r.db") as store:
            runner.run(plan_mod.from_dict(raw), store)
            recs = [r for r in store.records() if r.attack]
    assert [(r.status, r.error) for r in recs] == [
        (NOT_APPLICABLE, "NotApplicable: block-only: needs a block-wise disguise")]
    row = rows(recs + [R.utility(R.NONE, 0.9)])["none"]
    assert row.complete and row.attacks["block-only"].reasons == [
        "NotApplicable: block-only: needs a block-wise disguise"]


def test_the_runner_records_the_public_baseline_as_chance(tmp_path):
    raw = {**TOY_PLAN, "tasks": [{"toy": {"epochs": 2}}], "defenses": ["none"],
           "levels": ["level-1"], "attacks": [{"class-membership": {"baseline": False}}]}
    with Store(tmp_path / "r.db") as store:
        runner.run(plan_mod.from_dict(raw), store)
        (rec,) = [r for r in store.records() if r.attack]
    assert rec.status == OK
    m = rec.metrics
    assert len(m["chance_per_target"]) == len(m["per_target"])
    assert m["chance"] == pytest.approx(sum(m["chance_per_target"]) / len(m["per_target"]))
    assert m["chance"] > m["majority"]  # public data alone labels the toy classes well


# ------------------------------------------------------------------ attacks on every defense


def test_upload_match_catches_an_undisguised_or_keyless_upload():
    from tests.test_attacks import attack_on

    for defense in ("none", "pixelate"):
        _, m = attack_on("upload-match", "level-1", defense)
        assert m["success"] >= 0.99, defense  # AUC
    # A keyed defense: the attacker's own key is no help, the owner's oracle is.
    _, own = attack_on("upload-match", "level-1", "block-rmt", (("block", 4),))
    _, oracle = attack_on("upload-match", "level-3", "block-rmt", (("block", 4),))
    assert own["success"] < 0.8 and oracle["success"] >= 0.99


@pytest.mark.parametrize("name,params", [("shadow-label", {"epochs": 1}),
                                         ("shadow-membership", {"epochs": 1}),
                                         ("upload-match", {})])
def test_shadow_and_matching_attacks_map_instahide_rows_to_their_sources(name, params):
    from tests.test_attacks import attack_on, cell

    scenario = cell("instahide")[4]
    for level in ("level-1", "level-3"):
        attack, m = attack_on(name, level, "instahide", attack_params=params)
        # one prediction per plaintext image, not per disguised row
        scored = m["scores"] if attack.goal == "membership" else m["per_target"]
        assert len(scored) == len(scenario.candidates if attack.goal == "membership"
                                  else scenario.gallery)


@pytest.mark.parametrize("name", ["class-membership", "visual-reid", "instahide-carlini",
                                  "jigsaw", "aes-codebook", "known-pair-regression"])
def test_attacks_that_need_plaintext_shaped_or_block_wise_disguises_say_so_on_neuracrypt(name):
    from tests.test_attacks import attack_on

    with pytest.raises(NotApplicable):
        attack_on(name, "level-2", "neuracrypt", attack_params={"epochs": 1}
                  if name in ("class-membership", "visual-reid") else None)


def test_shadow_label_queries_only_disguises_on_neuracrypt():
    from tests.test_attacks import attack_on, cell

    _, m = attack_on("shadow-label", "level-1", "neuracrypt", attack_params={"epochs": 1})
    assert len(m["per_target"]) == len(cell("neuracrypt")[4].gallery)  # a label per gallery image
    with pytest.raises(NotApplicable, match="query='plain'"):
        attack_on("shadow-label", "level-1", "neuracrypt",
                  attack_params={"epochs": 1, "query": "plain"})
