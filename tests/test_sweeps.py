"""Resource sweeps and the cost to break: plans that sweep what the attacker is given, the jobs
and record keys they make, the oracle's query budget, and the curves on the boards."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from disguisebench import leaderboard, registry, report, runner
from disguisebench import cell as cell_mod
from disguisebench import plan as plan_mod
from disguisebench.api import GALLERY, ORACLE, REIDENTIFY, TARGETS, Attack, Data, PluginError
from disguisebench.cli import main
from disguisebench.plan import PlanError, Resources, Spec, spec_hash
from disguisebench.store import OK, Store
from tests import _records as R
from tests.conftest import TOY_PLAN


def old_record_key(plan, cell, attack, level):
    """How record keys were computed before plans could sweep resources."""
    return spec_hash({
        "task": cell.task.canonical(),
        "defense": cell.defense.canonical(),
        "attack": None if attack is None else attack.canonical(),
        "level": level,
        "seed": cell.seed,
        "n_targets": None if attack is None else plan.n_targets,
        "n_known": plan.n_known if level in ("level-2", "level-3") else None,
    })


def test_a_plan_without_sweeps_keeps_its_record_keys_and_digest():
    plan = plan_mod.from_dict({**TOY_PLAN, "attacks": ["visual-reid", "template-match",
                                                       "learned-inversion"]})
    assert not plan.sweeps()
    for cell in cell_mod.cells(plan):
        jobs = cell_mod.jobs(plan, cell)
        assert [job.key for job in jobs] == [old_record_key(plan, cell, job.attack, job.level)
                                             for job in jobs]
        assert len(jobs) == 1 + 3 * 3
    fields = dataclasses.asdict(plan)
    del fields["queries"], fields["compute"]
    assert plan.digest() == spec_hash(fields)


def test_sweeps_parse_and_keep_their_order():
    plan = plan_mod.from_dict({**TOY_PLAN, "n_known": [1, 3, 10], "queries": [5, None],
                               "compute": [0.5, 1, 2]})
    assert plan.n_known == (1, 3, 10) and plan.queries == (5, None)
    assert plan.compute == (0.5, 1, 2) and plan.sweeps()
    again = plan_mod.override(plan, seeds="1")
    assert (again.n_known, again.queries, again.compute) == (plan.n_known, plan.queries,
                                                             plan.compute)
    single = plan_mod.from_dict({**TOY_PLAN, "queries": 50, "compute": 2})
    assert (single.queries, single.compute) == (50, 2) and not single.sweeps()


@pytest.mark.parametrize("key, value, message", [
    ("n_known", [3, -1], "n_known=[3, -1]: expected integers >= 0"),
    ("n_known", [], "n_known=[]: expected integers >= 0"),
    ("n_known", [3, 3], "n_known=[3, 3] lists a value twice"),
    ("n_known", 2.5, "n_known=2.5: expected integers >= 0"),
    ("queries", "many", "queries='many': expected integers >= 0 or null"),
    ("queries", [10, -5], "queries=[10, -5]: expected integers >= 0 or null"),
    ("compute", [1, 0], "compute=[1, 0]: expected numbers > 0"),
    ("compute", True, "compute=True: expected numbers > 0"),
])
def test_bad_resources_are_refused_in_one_line(key, value, message):
    with pytest.raises(PlanError) as err:
        plan_mod.from_dict({**TOY_PLAN, key: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_each_resource_multiplies_only_the_jobs_where_it_matters():
    plan = plan_mod.from_dict({**TOY_PLAN, "defenses": ["none"], "n_known": [1, 3],
                               "queries": [2, None], "compute": [1, 2],
                               "attacks": ["template-match", "learned-inversion",
                                           "class-membership"]})
    jobs = cell_mod.jobs(plan, cell_mod.cells(plan)[0])[1:]
    count = {(job.attack.name, job.level): 0 for job in jobs}
    for job in jobs:
        count[job.attack.name, job.level] += 1
    # template-match: the oracle at level 3, no pairs, no budget; learned-inversion: pairs,
    # the oracle and a budget; class-membership: none of them.
    assert count == {
        ("template-match", "level-1"): 1, ("template-match", "level-2"): 1,
        ("template-match", "level-3"): 2,
        ("learned-inversion", "level-1"): 2, ("learned-inversion", "level-2"): 4,
        ("learned-inversion", "level-3"): 8,
        ("class-membership", "level-1"): 1, ("class-membership", "level-2"): 1,
        ("class-membership", "level-3"): 1,
    }
    assert len({job.key for job in jobs}) == len(jobs)
    # The defaults (unlimited queries, compute 1) give the keys a plan without them gives.
    default = Resources(3, None, 1)
    plain = plan_mod.from_dict({**TOY_PLAN, "defenses": ["none"], "n_known": 3})
    cell = cell_mod.cells(plain)[0]
    attack = Spec.of("attack", "learned-inversion")
    assert cell_mod.record_key(plan, cell, attack, "level-3", default) == \
        cell_mod.record_key(plain, cell, attack, "level-3")


def test_compute_scales_the_declared_budget():
    spec = Spec.of("attack", "learned-inversion", {"steps": 150})
    assert cell_mod.with_compute(spec, 0.5).steps == 75
    assert cell_mod.with_compute(spec, 0.0001).steps == 1
    assert cell_mod.with_compute(spec, 1).get_params() == spec.param_dict()
    plain = Spec.of("attack", "template-match")
    assert cell_mod.with_compute(plain, 3).get_params() == plain.param_dict()


def test_an_n_known_sweep_makes_one_record_per_point_at_level_2_and_one_at_level_1(tmp_path):
    """One record per count at level 2 for an attack granted pairs; one at level 1."""
    raw = {**TOY_PLAN, "n_targets": 10, "n_known": [3, 10], "levels": ["level-1", "level-2"],
           "tasks": [{"toy": {"epochs": 1}}], "defenses": ["none"],
           "attacks": ["known-pair-regression", "template-match"]}
    with Store(tmp_path / "r.db") as store:
        runner.run(plan_mod.from_dict(raw), store)
        recs = [r for r in store.records() if r.attack is not None]
    points = sorted((r.attack["name"], r.level, r.meta["n_known"]) for r in recs
                    if r.level == "level-2")
    # template-match is not granted pairs: one record, with the largest count's scenario.
    assert points == [("known-pair-regression", "level-2", 3),
                      ("known-pair-regression", "level-2", 10),
                      ("template-match", "level-2", 10)]
    assert sorted(r.attack["name"] for r in recs if r.level == "level-1") == \
        ["known-pair-regression", "template-match"]
    assert all("queries" not in r.meta and "compute" not in r.meta for r in recs)


class GreedyOracle(Attack):
    """Asks the oracle for 4 gallery images three times, then for what the budget leaves."""

    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY, ORACLE})

    def __init__(self) -> None:
        pass

    def _run(self, view, *, seed):
        gallery, got, refused = Data(view.gallery), 0, 0
        for n in (4, 4, 4, 2):
            try:
                got += len(view.oracle(gallery[:n]))
            except PluginError as err:
                assert "oracle query budget" in str(err)
                refused += 1
        prediction = torch.zeros(len(view.targets), dtype=torch.long)
        return prediction, {"got": got, "refused": refused, "budget": view.queries or -1}


def test_the_harness_enforces_the_query_budget(tmp_path):
    raw = {**TOY_PLAN, "n_targets": 10, "n_known": 5, "queries": [10, None],
           "levels": ["level-3"], "tasks": [{"toy": {"epochs": 1}}], "defenses": ["none"],
           "attacks": ["greedy-oracle"]}
    with registry.temporary("greedy-oracle", GreedyOracle):
        with Store(tmp_path / "r.db") as store:
            runner.run(plan_mod.from_dict(raw), store)
            recs = {r.meta.get("queries"): r for r in store.records() if r.attack is not None}
    assert set(recs) == {10, None} and all(r.status == OK for r in recs.values())
    budget = recs[10].metrics
    assert (budget["attack.got"], budget["attack.refused"], budget["oracle_queries"]) == \
        (10, 1, 10)
    free = recs[None].metrics
    assert (free["attack.got"], free["attack.refused"], free["oracle_queries"]) == (14, 0, 14)


def swept_records(costs=((1, 5), (10, 40), (100, 95))):
    """Two seeds of template-match against block-rmt at level 2 over known pairs (hits of 100),
    and an unswept level 1."""
    recs = [R.utility(R.NONE, 0.95), R.utility(R.RMT, 0.9)]
    for seed in (0, 1):
        for pairs, hits in costs:
            rec = R.attack(R.RMT, R.TEMPLATE, "level-2", hits, seed=seed)
            rec.meta["n_known"] = pairs
            recs.append(rec)
        recs.append(R.attack(R.RMT, R.TEMPLATE, "level-1", 3, seed=seed))
    return recs


def rmt_row(boards, level):
    board = next(b for b in boards if b.level == level)
    return board, next(r for r in board.rows if r.defense == "block-rmt")


def test_cost_to_break_on_hand_built_records():
    boards = leaderboard.aggregate(swept_records(), resamples=200)
    _, level1 = rmt_row(boards, "level-1")
    assert level1.curves == {}
    board, row = rmt_row(boards, "level-2")
    assert board.resources() == ["n_known"]
    curve = row.curves["n_known"]
    assert [p.value for p in curve.points] == [1, 10, 100]
    assert [round(p.privacy, 3) for p in curve.points] == [0.95, 0.6, 0.05]
    assert curve.broken and curve.cost == 100 and curve.cost_interval == (2, 2)
    assert curve.cost_text() == "pairs 100"
    # The board itself shows the strongest attacker: the most pairs.
    assert row.privacy == pytest.approx(0.05)
    # Never below 0.1: "> the largest value tried".
    never = leaderboard.aggregate(swept_records(((1, 5), (10, 40), (100, 85))), resamples=200)
    curve = rmt_row(never, "level-2")[1].curves["n_known"]
    assert not curve.broken and curve.cost is None
    assert curve.cost_text() == "pairs > 100" + (" [100, > 100]" if curve.cost_interval[0] == 2
                                                 else "")
    assert curve.cost_interval[1] == 3 and curve.end_text(3) == "> 100"


def test_a_defense_a_lower_level_breaks_costs_nothing_and_its_curve_stays_below_it():
    recs = swept_records()
    for rec in recs:
        if rec.level == "level-1":  # level 1 now breaks it: 98 hits of 100
            rec.metrics.update(R.hits(98, 100))
    board, row = rmt_row(leaderboard.aggregate(recs, resamples=200), "level-2")
    curve = row.curves["n_known"]
    assert curve.broken_below == "level-1" and curve.cost == 0
    assert curve.cost_text() == "pairs 0 (level-1 breaks it)"
    assert all(p.privacy == pytest.approx(0.02) for p in curve.points)
    assert [round(p.own, 2) for p in curve.points] == [0.95, 0.6, 0.05]  # each value's own kept
    entry = report.entry(board, row)["curves"]["n_known"]["to_break"]
    assert entry["broken_at_lower_level"] == "level-1" and entry["interval"] is None


def test_cost_to_break_interval_spans_the_seeds_and_counts_unlimited_queries_last():
    recs = [R.utility(R.NONE, 0.95), R.utility(R.RMT, 0.9)]
    # seed 0 breaks at 10 queries, seed 1 only with unlimited ones
    for seed, hits in ((0, (50, 98, 99)), (1, (50, 60, 99))):
        for queries, k in zip((1, 10, None), hits):
            rec = R.attack(R.RMT, R.TEMPLATE, "level-3", k, seed=seed)
            if queries is not None:
                rec.meta["queries"] = queries
            recs.append(rec)
    boards = leaderboard.aggregate(recs, resamples=400)
    curve = rmt_row(boards, "level-3")[1].curves["queries"]
    assert [p.value for p in curve.points] == [1, 10, None]
    assert curve.broken and curve.cost is None  # broken only with unlimited queries on average
    assert curve.cost_interval == (1, 2)
    assert curve.cost_text() == "queries unlimited [10, unlimited]"


def test_show_prints_the_cost_column_only_for_sweeps(tmp_path, capsys):
    db = tmp_path / "r.db"
    with Store(db) as store:
        for rec in swept_records():
            store.add(rec)
    assert main(["show", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    level1, level2 = out.split("toy(epochs=1) / level-2")
    assert "to break (privacy < 0.1)" in level2 and "pairs 100" in level2
    assert "to break" not in level1
    plain = leaderboard.render_text(leaderboard.aggregate(R.page_records(), resamples=50))
    assert "to break" not in plain


def test_page_entries_and_plot_carry_the_curve(tmp_path):
    boards = leaderboard.aggregate(swept_records(), resamples=100)
    written = {p.relative_to(tmp_path).as_posix() for p in report.write(boards, tmp_path)}
    plot = "plots/toy-epochs-1/level-2-curves.png"
    assert plot in written and "plots/toy-epochs-1/level-1-curves.png" not in written
    assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot in (tmp_path / "index.html").read_text()
    assert plot in (tmp_path / "README.md").read_text()
    entry = json.loads((tmp_path / "entries/toy-epochs-1/level-2/block-rmt.json").read_text())
    curve = entry["curves"]["n_known"]
    assert [p["value"] for p in curve["points"]] == [1, 10, 100]
    assert curve["to_break"]["value"] == 100 and curve["points"][0]["interval"] is not None
    assert curve["to_break"]["interval"] == ["100", "100"]
    level1 = json.loads((tmp_path / "entries/toy-epochs-1/level-1/block-rmt.json").read_text())
    assert "curves" not in level1


def test_known_pairs_per_level_let_level_3_sweep_queries_alone():
    plan = plan_mod.from_dict({**TOY_PLAN, "defenses": ["none"], "attacks": ["template-match"],
                               "n_known": {"level-2": [1, 3, 10], "level-3": 1},
                               "queries": [10, None]})
    assert plan.known("level-2") == (1, 3, 10) and plan.known("level-3") == (1,)
    jobs = cell_mod.jobs(plan, cell_mod.cells(plan)[0])[1:]
    points = {lv: [(j.resources.n_known, j.resources.queries) for j in jobs if j.level == lv]
              for lv in plan.levels}
    assert points == {"level-1": [(10, None)], "level-2": [(10, None)],
                      "level-3": [(1, 10), (1, None)]}
    assert plan_mod.override(plan, seeds="2").n_known == plan.n_known
    with pytest.raises(PlanError, match=r"n_known=\{'level-1': 3\}: expected a count or a list "
                                        r"of counts per level, levels among level-2, level-3"):
        plan_mod.from_dict({**TOY_PLAN, "n_known": {"level-1": 3}})
    with pytest.raises(PlanError, match=r"level-2=\[3, -1\]: expected integers >= 0"):
        plan_mod.from_dict({**TOY_PLAN, "n_known": {"level-2": [3, -1]}})


class EmptyAsker(Attack):
    """Asks the oracle for no images, then re-identifies nothing."""

    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY, ORACLE})

    def __init__(self) -> None:
        pass

    def _run(self, view, *, seed):
        try:
            view.oracle(Data(view.gallery[:0]))
        except PluginError as err:
            assert "holds no images" in str(err)
        return torch.zeros(len(view.targets), dtype=torch.long)


def test_an_empty_request_is_the_attacks_mistake_not_a_refusal(tmp_path):
    raw = {**TOY_PLAN, "n_targets": 10, "n_known": 5, "levels": ["level-3"],
           "tasks": [{"toy": {"epochs": 1}}], "defenses": ["none"], "attacks": ["empty-asker"]}
    with registry.temporary("empty-asker", EmptyAsker):
        with Store(tmp_path / "r.db") as store:
            runner.run(plan_mod.from_dict(raw), store)
            statuses = [r.status for r in store.records() if r.attack is not None]
    assert statuses == [OK]


def test_known_pair_regression_runs_from_one_pair():
    """Discovery probes with at least one image, so a single known pair is not an empty
    request (which the harness would refuse)."""
    from disguisebench import threat
    from disguisebench.api import Splits

    gen = torch.Generator().manual_seed(0)
    train = Data(torch.rand(60, 1, 8, 8, generator=gen), torch.arange(60) % 3)
    splits = Splits(train, train[:20], train[20:40], 3)
    defense = registry.create("defense", "block-rmt", {"block": 4}).fit(splits.public, seed=1)
    scenario = threat.build_scenario(splits, defense.transform(train), n_targets=5, n_known=1,
                                     seed=0)
    task = registry.create("task", "toy", {"epochs": 1})
    metrics = threat.evaluate(registry.create("attack", "known-pair-regression"), "level-2",
                              task=task, splits=splits, defense=defense, model=None,
                              scenario=scenario)
    assert "advantage" in metrics


def test_privacy_on_a_curve_never_rises_with_more_resources():
    """An attacker can ignore pairs it is given: a weaker result with more pairs does not count."""
    boards = leaderboard.aggregate(swept_records(((1, 50), (10, 30), (100, 95))), resamples=100)
    curve = rmt_row(boards, "level-2")[1].curves["n_known"]
    assert [round(p.privacy, 3) for p in curve.points] == [0.5, 0.5, 0.05]
    assert [round(p.own, 3) for p in curve.points] == [0.5, 0.7, 0.05]
    assert curve.points[1].interval[1] <= 0.62 and curve.cost == 100


def test_a_compute_sweep_keeps_the_attack_spec_and_records_the_multiplier(tmp_path):
    raw = {**TOY_PLAN, "n_targets": 10, "compute": [0.5, 1], "levels": ["level-1"],
           "tasks": [{"toy": {"epochs": 1}}], "defenses": ["none"],
           "attacks": [{"learned-inversion": {"steps": 4, "keys": 1}}]}
    with Store(tmp_path / "r.db") as store:
        runner.run(plan_mod.from_dict(raw), store)
        recs = [r for r in store.records() if r.attack is not None]
    assert sorted(r.meta.get("compute", 1) for r in recs) == [0.5, 1]
    assert sorted(str(r.meta.get("budget")) for r in recs) == ["None", "{'steps': 2}"]
    assert all(r.attack["params"]["steps"] == 4 and r.status == OK for r in recs)
    assert len({r.key for r in recs}) == 2
