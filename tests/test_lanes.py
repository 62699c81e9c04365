"""Several sealed attacks of a cell at once: the records are those of one run at a time.

Runs granted the oracle share the owner's defense host, whose answers may depend on what it was
asked before; they must reach it in the cell's order, whatever the number of lanes.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from disguisebench import plan as plan_mod
from disguisebench import registry, runner
from disguisebench import cell as cell_mod
from disguisebench.api import GALLERY, ORACLE, REIDENTIFY, TARGETS, Attack, Data, Defense, Outcome
from disguisebench.store import NOT_APPLICABLE, OK, Store
from tests.conftest import TOY_PLAN


class Drifting(Defense):
    """Keyless, and stateful: every answer shifts with how many images it answered before."""

    name = "lanes-drifting"
    keyless = True

    def _transform(self, data, *, epoch):
        self.answered_ = getattr(self, "answered_", 0) + len(data)
        return Data(data.x * 0.5 + (self.answered_ % 97) / 200, data.y)


class _Probe(Attack):
    """Asks the oracle about part of the gallery; reports what the answer looked like."""

    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY, ORACLE})
    share = 1

    def _run(self, view, *, seed):
        answer = view.oracle(Data(view.gallery[: 3 + self.share]))
        guess = torch.zeros(len(view.targets), dtype=torch.long)
        return Outcome(guess, {"answer_mean": float(answer.x.mean())})


class ProbeA(_Probe):
    name = "lanes-probe-a"


class ProbeB(_Probe):
    name = "lanes-probe-b"
    share = 5


# With a label attack: the public-only baseline trains in a lane of its own.
ATTACKS = [ProbeA.name, "template-match", ProbeB.name, "visual-reid", "class-membership"]


def _records(tmp_path, name: str, lanes: int, monkeypatch, attacks=ATTACKS,
             salt_file=None) -> dict:
    raw = {**TOY_PLAN, "defenses": [Drifting.name], "levels": ["level-1", "level-3"],
           "attacks": attacks}
    monkeypatch.setattr(cell_mod, "attack_lanes", lambda threads: lanes)
    with Store(tmp_path / f"{name}.db", salt_file=salt_file) as store:
        runner.run(plan_mod.from_dict(raw), store)
        return {(r.defense["name"], r.attack and r.attack["name"], r.level): (r.status, r.metrics)
                for r in store.records()}


def test_records_do_not_depend_on_the_number_of_lanes(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every attack on one thread in both runs, as with two lanes
    salt = tmp_path / "one.db.salt"
    try:
        with registry.temporary(Drifting.name, Drifting), \
                registry.temporary(ProbeA.name, ProbeA), registry.temporary(ProbeB.name, ProbeB):
            one = _records(tmp_path, "one", 1, monkeypatch)
            two = _records(tmp_path, "two", 2, monkeypatch, salt_file=salt)
            # The same plan with the oracle's callers in the other order, one lane.
            other = _records(tmp_path, "other", 1, monkeypatch, ATTACKS[::-1], salt_file=salt)
    finally:
        torch.set_num_threads(threads)
    assert one == two
    assert {status for status, _ in one.values()} == {OK, NOT_APPLICABLE}
    probe = (Drifting.name, ProbeA.name, "level-3")
    assert one[probe][0] == OK and "attack.answer_mean" in one[probe][1]
    # The oracle's answers depend on what it answered before: its order is a real constraint,
    # which lanes that let the oracle's callers overlap or reorder would break.
    assert other[probe][1]["attack.answer_mean"] != one[probe][1]["attack.answer_mean"]


def _runs(*oracle: bool) -> dict:
    return {(i,): SimpleNamespace(granted=frozenset({ORACLE} if o else set()))
            for i, o in enumerate(oracle)}


def test_lanes_run_attacks_at_once_but_oracle_runs_in_order():
    runs = _runs(True, False, True, False, True)
    both = threading.Barrier(2, timeout=30)
    started, lock = [], threading.Lock()
    oracle_now = [0, 0]  # running now, most at once

    def sealed(run):
        memo = next(m for m, r in runs.items() if r is run)
        with lock:
            started.append(memo[0])
            if ORACLE in run.granted:
                oracle_now[0] += 1
                oracle_now[1] = max(oracle_now)
        if memo in ((1,), (3,)):
            both.wait()  # passes only when the two non-oracle runs are going at once
        time.sleep(0.01)
        with lock:
            oracle_now[0] -= ORACLE in run.granted
        return memo[0]

    with cell_mod._Lanes(runs, sealed, 3) as outcomes:
        assert [outcomes(m) for m in runs] == [0, 1, 2, 3, 4]
    assert oracle_now[1] == 1
    assert [i for i in started if i in (0, 2, 4)] == [0, 2, 4]


def test_one_lane_runs_in_order_in_the_calling_thread():
    runs = _runs(False, True, False)
    seen = []

    def sealed(run):
        seen.append(threading.current_thread())
        return len(seen)

    with cell_mod._Lanes(runs, sealed, 1) as outcomes:
        assert [outcomes(m) for m in runs] == [1, 2, 3]
    assert set(seen) == {threading.current_thread()}


def test_an_interrupted_cell_ends_its_running_attacks(monkeypatch):
    runs = _runs(False, False, False, False)
    release = threading.Event()
    ran = []
    monkeypatch.setattr(cell_mod.sandbox, "kill_attacks", release.set)

    def sealed(run):
        ran.append(run)
        release.wait(timeout=30)  # an attack process, until the cell kills it
        return None

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with cell_mod._Lanes(runs, sealed, 2):
            while len(ran) < 2:
                time.sleep(0.01)
            raise KeyboardInterrupt
    assert time.perf_counter() - start < 20
    assert len(ran) == 2  # the two waiting runs were cancelled, not started


def test_a_model_trained_apart_is_the_model_trained_here():
    from disguisebench import sandbox

    task = registry.create("task", "toy", {"epochs": 2})
    train = task.load(seed=0).train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = task.train(train, seed=3, num_classes=4)
    finally:
        torch.set_num_threads(threads)
    apart = sandbox.train_apart(task, train, seed=3, num_classes=4, threads=1)
    assert not apart.training
    mine, theirs = here.state_dict(), apart.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].cpu(), theirs[k]) for k in mine)


def test_no_process_starts_after_an_interrupt_until_the_next_cell():
    from disguisebench import sandbox

    task = registry.create("task", "toy", {"epochs": 1})
    train = task.load(seed=0).train
    sandbox.kill_attacks()  # what an interrupted cell calls
    try:
        with pytest.raises(sandbox.Interrupted):
            sandbox.train_apart(task, train, seed=0, num_classes=4, threads=1)
    finally:
        sandbox.resume_attacks()
    assert sandbox.train_apart(task, train, seed=0, num_classes=4, threads=1) is not None
