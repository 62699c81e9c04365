"""``show --profile``: each cell's seconds, an attack computed once for several levels counted once."""

from __future__ import annotations

import pytest

from disguisebench import cli, timing
from disguisebench.store import Store
from tests._records import NONE, RMT, TEMPLATE, VISUAL, record


def timed(defense, attack=None, level=None, seconds=1.0, granted=("gallery", "targets"),
          train=None):
    meta = {"wall_seconds": seconds, "granted": list(granted)}
    if train is not None:
        meta["train_seconds"] = train
    return record(defense, attack, level, meta=meta, metrics={"accuracy": 0.9} if attack is None
                  else {"advantage": 0.5})


def cells():
    return [
        timed(RMT, seconds=12.0, train=10.0),
        # template-match needs nothing a higher level adds: one computation, recorded thrice
        *(timed(RMT, TEMPLATE, lv, seconds=3.0) for lv in ("level-1", "level-2", "level-3")),
        # visual-reid sees more at level 3: two computations
        timed(RMT, VISUAL, "level-1", seconds=2.0),
        timed(RMT, VISUAL, "level-3", seconds=5.0, granted=("gallery", "oracle", "targets")),
        timed(NONE, seconds=4.0, train=4.0),
        timed(NONE, TEMPLATE, "level-1", seconds=1.0),
    ]


def test_cell_times_count_a_shared_computation_once():
    rmt, none = sorted(timing.cell_times(cells()), key=lambda c: c.defense)
    assert rmt.defense.startswith("block-rmt") and none.defense == "none"
    assert rmt.train == 10.0 and rmt.owner == 12.0
    assert rmt.attacks == {"template-match": 3.0, "visual-reid": 7.0}
    assert rmt.runs == {"template-match": 1, "visual-reid": 2}
    assert rmt.total == pytest.approx(22.0) and rmt.attack_total == pytest.approx(10.0)
    assert none.attacks == {"template-match": 1.0}


def test_show_profile_prints_shares_and_the_attack_training_ratio(tmp_path, capsys):
    with Store(tmp_path / "r.db") as store:
        for r in cells():
            store.add(r)
    assert cli.main(["show", "--db", str(tmp_path / "r.db"), "--profile"]) == 0
    out = capsys.readouterr().out
    assert "attacks / training = 1.00" in out  # block-rmt: 10 s of attacks, 10 s of training
    assert "attacks / training = 0.25" in out  # none: 1 s against 4 s
    assert "visual-reid" in out and "32 %" in out  # 7 of 22 seconds


def test_the_attacks_wall_time_is_the_last_record_of_the_phase(tmp_path, capsys):
    def phased(attack, level, seconds, phase):
        r = timed(RMT, attack, level, seconds=seconds)
        r.meta.update(phase_seconds=phase, lanes=2)
        return r

    records = [timed(RMT, seconds=12.0, train=10.0), phased(TEMPLATE, "level-1", 3.0, 2.5),
               phased(VISUAL, "level-1", 4.0, 4.5)]
    (rmt,) = timing.cell_times(records)
    assert rmt.attack_total == pytest.approx(7.0)  # seconds summed over the two runs
    assert rmt.attack_wall == pytest.approx(4.5) and rmt.lanes == 2  # they overlapped
    assert "2 at a time, took 4.5 s of wall time: 0.45 of the training's" in timing.render([rmt])
