"""A zoo of cheaters: defenses that game the harness and attacks that reach past their view.

Each gaming defense applies a public, keyless scramble (which attacks that re-disguise with the
clone break completely) to the calls it takes to be the owner's, and noise to calls it takes to be
an attacker's; sealed evaluation must leave none of them more private than the honest scramble. Each cheating attack tries to read
the truth, the key or the store; it must fail or score as a blind guess, and harm no other record.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import sqlite3
import sys
from pathlib import Path

import pytest
import torch

from disguisebench import plan as plan_mod
from disguisebench import registry, runner, sandbox
from disguisebench import cell as cell_mod
from disguisebench.api import (
    DEFENSE, GALLERY, PUBLIC, REIDENTIFY, TARGETS, Attack, Data, Defense, PluginError,
)
from disguisebench.cache import ModelCache
from disguisebench.store import FAILED, OK, REFUSED, Record, Store, derive_key
from tests.conftest import TOY_PLAN

# The sealed harness is judged by records of a real (toy) run; template matching breaks the
# identity completely, and visual re-identification with it.
ATTACKS = ["template-match", "visual-reid"]


def scramble(x: torch.Tensor) -> torch.Tensor:
    """A fixed, public pixel permutation and inversion: hides nothing from anyone who can run it."""
    n, c, h, w = x.shape
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))
    return 1.0 - x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)


def noise(data: Data) -> Data:
    return Data(torch.rand(data.x.shape, generator=torch.Generator().manual_seed(12345)), data.y)


class _Gaming(Defense):
    """The keyless scramble for the owner, noise for whoever it takes for an attacker.

    Honestly applied, the scramble falls to any attack that re-disguises with the clone
    (template matching, visual re-identification): privacy 0.
    """

    keyless = True

    def looks_like_owner(self, data: Data, epoch: int | None) -> bool:
        raise NotImplementedError

    def _transform(self, data, *, epoch):
        if self.looks_like_owner(data, epoch):
            return Data(scramble(data.x), data.y)
        return noise(data)


class BaitAndSwitch(_Gaming):
    """Trains on the scramble (epoch e) but uploads noise (epoch None)."""

    name = "zoo-bait-and-switch"
    reencodes_per_epoch = True

    def looks_like_owner(self, data, epoch):
        return epoch is not None

    def test_inputs(self, data):
        return Data(scramble(data.x), data.y)


class DecoyByArguments(_Gaming):
    """The owner's fit was the one whose public images differ from the data."""

    name = "zoo-decoy-arguments"

    def _fit(self, data, rng, public):
        self.owner_ = public is not None and (len(public) != len(data) or
                                              not torch.equal(public.x, data.x))

    def looks_like_owner(self, data, epoch):
        return self.owner_


class DecoyByStack(_Gaming):
    """An attack or the oracle is somewhere up the call stack."""

    name = "zoo-decoy-stack"

    def looks_like_owner(self, data, epoch):
        for frame in inspect.stack(context=0):
            module = frame.frame.f_globals.get("__name__", "")
            if module.startswith("attacks") or frame.function in ("__call__", "_sealed_attack"):
                return False
        return True


class DecoyByBatchSize(_Gaming):
    """The owner disguises whole splits at once; attackers ask for small batches."""

    name = "zoo-decoy-batch"

    def looks_like_owner(self, data, epoch):
        return len(data) >= 600


class DecoyByInstances(_Gaming):
    """The first instance in a process is the owner's; clones come later."""

    name = "zoo-decoy-instances"
    made = 0

    def _fit(self, data, rng, public):
        type(self).made += 1
        self.owner_ = type(self).made == 1

    def looks_like_owner(self, data, epoch):
        return self.owner_


class DecoyByThreads(_Gaming):
    """Built with more than one thread: the owner's host, it guesses (were the attacks of a cell to
    share the cores out, an attacker's clone would get fewer)."""

    name = "zoo-decoy-threads"

    def __init__(self) -> None:
        super().__init__()
        self.owner_ = torch.get_num_threads() > 1

    def looks_like_owner(self, data, epoch):
        return self.owner_


class DecoyByContent(Defense):
    """Images it was fitted on are the public pool, so an attacker's: noise for those, the
    scramble for any other image (the owner's)."""

    name = "zoo-decoy-content"
    keyless = True

    @staticmethod
    def _digests(x: torch.Tensor) -> list[bytes]:
        return [hashlib.sha256(row.numpy().tobytes()).digest() for row in x]

    def _fit(self, data, rng, public):
        self.seen_ = set(self._digests(data.x))
        if public is not None:
            self.seen_ |= set(self._digests(public.x))

    def _transform(self, data, *, epoch):
        attacker = torch.tensor([d in self.seen_ for d in self._digests(data.x)])
        x = scramble(data.x)
        x[attacker] = noise(data).x[attacker]
        return Data(x, data.y)


class Vandal(Defense):
    """Writes into every tensor it is handed: its fit images, the public images, each batch."""

    name = "zoo-vandal"
    keyless = True

    def _fit(self, data, rng, public):
        data.x.zero_()
        if public is not None:
            public.x.zero_()

    def _transform(self, data, *, epoch):
        data.x.fill_(7.0)
        return Data(data.x.clone(), data.y)


class MixingVandal(Vandal):
    """The same, getting whole batches (a defense that mixes images does)."""

    name = "zoo-mixing-vandal"
    mixes_images = True


class NaNAtScale(Defense):
    """The identity, with one NaN pixel per image in batches larger than 64."""

    name = "zoo-nan-at-scale"
    keyless = True

    def _transform(self, data, *, epoch):
        x = data.x.clone()
        if len(x) > 64:
            x[:, 0, 0, 0] = float("nan")
        return Data(x, data.y)


class ShapeAtScale(Defense):
    """The identity, cropped by a row in batches larger than 64."""

    name = "zoo-shape-at-scale"
    keyless = True

    def _transform(self, data, *, epoch):
        return Data(data.x[:, :, 1:] if len(data) > 64 else data.x.clone(), data.y)


class RefuseAttackers(Defense):
    """Raises for the small batches it takes for an attacker's."""

    name = "zoo-refuse"
    keyless = True

    def _transform(self, data, *, epoch):
        if len(data) < 200:
            raise ValueError("not telling")
        return Data(data.x.clone(), data.y)


GAMING = [BaitAndSwitch, DecoyByArguments, DecoyByStack, DecoyByBatchSize, DecoyByInstances,
          DecoyByContent]


def run_plan(tmp_path: Path, defenses: list, attacks: list, levels=("level-1",),
             name: str = "r") -> list[Record]:
    raw = {**TOY_PLAN, "defenses": defenses, "attacks": attacks, "levels": list(levels)}
    with Store(tmp_path / f"{name}.db") as store:
        runner.run(plan_mod.from_dict(raw), store)
        return list(store.records())


def worst_advantage(records: list[Record], defense: str) -> float:
    scores = [r.metrics.get("advantage", 0.0) for r in records
              if r.defense["name"] == defense and r.attack is not None and r.status in (OK, REFUSED)]
    assert scores, f"no scored attack on {defense}"
    return max(scores)


def accuracy(records: list[Record], defense: str) -> float:
    (row,) = [r for r in records if r.defense["name"] == defense and r.attack is None]
    return row.metrics.get("accuracy", 0.0)


@pytest.mark.parametrize("cls", GAMING, ids=lambda c: c.name)
def test_gaming_defense_is_no_more_private_than_its_honest_transform(tmp_path, cls):
    with registry.temporary(cls.name, cls):
        records = run_plan(tmp_path, [cls.name], ATTACKS)
    # Honest scramble: re-disguising with the clone breaks it (advantage 1). A gaming defense
    # either behaves the same for owner and attackers (broken just as completely) or gives noise
    # to everyone, owner included, and then its model learns nothing.
    broken = worst_advantage(records, cls.name) >= 0.9
    useless = accuracy(records, cls.name) <= 0.6
    assert broken or useless, (cls.name, worst_advantage(records, cls.name),
                               accuracy(records, cls.name))


def test_the_owners_host_and_the_clones_get_the_same_threads(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a cell with two threads runs two attacks at once
    try:
        with registry.temporary(DecoyByThreads.name, DecoyByThreads):
            records = run_plan(tmp_path, [DecoyByThreads.name], ATTACKS)
    finally:
        torch.set_num_threads(threads)
    broken = worst_advantage(records, DecoyByThreads.name) >= 0.9
    assert broken or accuracy(records, DecoyByThreads.name) <= 0.6


@pytest.mark.parametrize("cls, words", [(NaNAtScale, "NaN"), (ShapeAtScale, "shape")],
                         ids=["nan", "shape"])
def test_output_bad_only_at_scale_is_a_refusal(tmp_path, cls, words):
    with registry.temporary(cls.name, cls):
        records = run_plan(tmp_path, [cls.name], ATTACKS)
    attacked = [r for r in records if r.defense["name"] == cls.name and r.attack is not None]
    assert attacked and all(r.status == REFUSED for r in attacked)
    assert all(words in r.error for r in attacked)
    (utility,) = [r for r in records if r.defense["name"] == cls.name and r.attack is None]
    assert utility.status == FAILED


def test_a_defense_that_fails_its_attackers_is_broken(tmp_path):
    with registry.temporary(RefuseAttackers.name, RefuseAttackers):
        records = run_plan(tmp_path, [RefuseAttackers.name], ["template-match"])
    (rec,) = [r for r in records if r.attack is not None and r.defense["name"] == "zoo-refuse"]
    assert rec.status == REFUSED and "not telling" in rec.error
    assert rec.metrics["advantage"] == 1.0


# --- cheating attacks ---------------------------------------------------------------------------

class _Reid(Attack):
    goal = REIDENTIFY
    needs = frozenset({TARGETS, GALLERY, DEFENSE, PUBLIC})

    def guess(self, view) -> torch.Tensor:
        return torch.zeros(len(view.targets), dtype=torch.long)


class StackWalk(_Reid):
    """Looks up the call stack for the runner's scenario and reads the truth from it."""

    name = "zoo-stack-walk"

    def _run(self, view, *, seed):
        frame = sys._getframe()
        while frame is not None:
            for value in frame.f_locals.values():
                if type(value).__name__ == "Scenario":
                    return value.gallery_index[:, 0]
            frame = frame.f_back
        raise LookupError("no scenario on the stack")


class HeapScan(_Reid):
    """Scans the heap for the scenario or a fitted copy of the owner's defense."""

    name = "zoo-heap-scan"

    def _run(self, view, *, seed):
        for obj in gc.get_objects():
            if type(obj).__name__ == "Scenario":
                return obj.gallery_index[:, 0]
        for obj in gc.get_objects():
            if isinstance(obj, Defense) and getattr(obj, "fitted_", False):
                enc = obj.transform(Data(view.gallery)).x.flatten(1)
                return torch.cdist(view.targets.x.flatten(1), enc).argmin(1)
        raise LookupError("nothing on the heap")


class SeedRederive(_Reid):
    """Re-derives the owner's key seed the way an unsalted harness would, and matches exactly."""

    name = "zoo-seed-rederive"

    def _run(self, view, *, seed):
        from disguisebench.plan import spec_hash

        task = {"name": view.task.name, "params": view.task.get_params()}
        defense = {"name": view.defense.name, "params": view.defense.get_params()}
        roles = ["0", "key", spec_hash(task), spec_hash(defense)]
        digest = hashlib.sha256("/".join(roles).encode()).digest()
        key_seed = int.from_bytes(digest[:8], "big") >> 1
        clone = view.defense.clone().fit(view.public, seed=key_seed)
        enc = clone.transform(Data(view.gallery)).x.flatten(1)
        return torch.cdist(view.targets.x.flatten(1), enc).argmin(1)


class StoreWriter(_Reid):
    """Forges a perfect-privacy record for a job still to come, then reads the salt.

    Args:
        path: the results database (a plugin that knows the default path has it).
    """

    name = "zoo-store-writer"

    def __init__(self, path: str = "") -> None:
        self.path = path

    def _run(self, view, *, seed):
        path = self.path
        try:
            with sqlite3.connect(path) as con:
                con.execute("UPDATE records SET metrics = '{}'")
        except PermissionError:
            pass
        with open(path + ".salt") as f:  # noqa: PTH123 - the point is to try
            return torch.full((len(view.targets),), len(f.read()))


class Mutator(_Reid):
    """Zeroes every tensor of its view, hoping the next attack shares them."""

    name = "zoo-mutator"

    def _run(self, view, *, seed):
        for t in (view.targets.x, view.public.x, view.gallery):
            t.zero_()
        return self.guess(view)


class TaskLoader(_Reid):
    """Loads the task's labelled pool through the view's task."""

    name = "zoo-task-loader"

    def _run(self, view, *, seed):
        view.task.load(seed=0)
        return self.guess(view)


class ProcPeek(_Reid):
    """Reads the driver's memory map through /proc, the first step to reading its memory."""

    name = "zoo-proc-peek"

    def _run(self, view, *, seed):
        import os

        with open(f"/proc/{os.getppid()}/maps") as f:  # noqa: PTH123 - the point is to try
            f.read()
        return self.guess(view)


class Assassin(_Reid):
    """Signals another process: one that can would stop the owner's defense host in the middle
    of the cell, and the attacks that use it after would score the defense as refusing. (Signal
    0 only checks that the process exists: the test harms nothing if the sandbox lets it by.)"""

    name = "zoo-assassin"

    def _run(self, view, *, seed):
        import os

        os.kill(os.getppid(), 0)
        return self.guess(view)


class ServerDialer(_Reid):
    """Connects to a local socket: the fork server of plugin processes listens on one, and a
    process it started for the caller would run without the sandbox's audit hook. (The path
    tried here does not exist: the test harms nothing if the sandbox lets the call by.)"""

    name = "zoo-server-dialer"

    def _run(self, view, *, seed):
        import socket
        import tempfile

        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(tempfile.gettempdir() + "/pymp-none/listener-none")
            except (FileNotFoundError, ConnectionRefusedError):
                pass  # the call went through: with the real address, a process would start
        return self.guess(view)


class FaultFarmer(_Reid):
    """Feeds the defense what no owner sends (NaN, values outside [0, 1], a wrong shape, labels
    of no class, an inverse) hoping a fault is scored as the defense refusing, a complete break."""

    name = "zoo-fault-farmer"

    def _run(self, view, *, seed):
        x = view.public.x[:8]
        bad = [Data(torch.full_like(x, float("nan"))), Data(x * 300 - 100),
               Data(torch.rand(8, x.shape[1], x.shape[2] + 3, x.shape[3])),
               Data(x, torch.full((8,), 10 ** 6))]
        clone = view.defense.fit(view.public, seed=seed)
        refused = 0
        for data in bad:
            try:
                clone.transform(data)
            except PluginError as err:
                assert "not counted as the defense's refusal" in str(err) or "no images" in str(err)
                refused += 1
        try:
            clone.inverse(Data(torch.full((8, *clone.output_shape(x.shape[1:])), float("nan"))))
        except PluginError:
            refused += 1
        assert refused >= 3, refused  # block-rmt rejects most of these; none is its refusal
        return self.guess(view)


CHEATS = [StackWalk, HeapScan, SeedRederive, StoreWriter, TaskLoader, ProcPeek, Assassin,
          ServerDialer]


def test_feeding_a_defense_garbage_is_no_break(tmp_path):
    with registry.temporary(FaultFarmer.name, FaultFarmer):
        records = run_plan(tmp_path, [{"block-rmt": {"block": 4}}], [FaultFarmer.name])
    (rec,) = [r for r in records if r.attack is not None and r.defense["name"] == "block-rmt"]
    assert rec.status == OK, (rec.status, rec.error)
    assert rec.metrics["advantage"] < 0.3


@pytest.mark.parametrize("cls", CHEATS, ids=lambda c: c.name)
def test_cheating_attack_fails_or_guesses_blindly(tmp_path, cls):
    attack = {cls.name: {"path": str(tmp_path / "r.db")}} if cls is StoreWriter else cls.name
    with registry.temporary(cls.name, cls):
        records = run_plan(tmp_path, [{"block-rmt": {"block": 4}}], [attack])
    # On `none` matching is a fair break; the keyed block-rmt is where cheating would show.
    records = [r for r in records if r.defense["name"] == "block-rmt"]
    for rec in records:
        if rec.attack is None:
            assert rec.status == OK
            continue
        if rec.status == FAILED:
            assert rec.error
        else:
            assert rec.status == OK
            # Blind guessing: well below a break (chance is 1/gallery size).
            assert rec.metrics["advantage"] < 0.3, (rec.defense, rec.metrics["advantage"])
    assert any(r.status == FAILED for r in records) or cls in (SeedRederive,)


def test_store_writer_cannot_touch_the_store(tmp_path):
    writer = {StoreWriter.name: {"path": str(tmp_path / "r.db")}}
    with registry.temporary(StoreWriter.name, StoreWriter):
        records = run_plan(tmp_path, ["none"], [writer, "template-match"])
    by = {(r.attack_name, r.level): r for r in records}
    writer = by[(StoreWriter.name, "level-1")]
    assert writer.status == FAILED and "may not" in writer.error
    assert by[("template-match", "level-1")].metrics["advantage"] == 1.0


def test_mutating_a_view_harms_no_other_attack(tmp_path):
    with registry.temporary(Mutator.name, Mutator):
        records = run_plan(tmp_path, ["none"], [Mutator.name, "template-match"])
    (tm,) = [r for r in records if r.attack_name == "template-match"]
    assert tm.status == OK and tm.metrics["advantage"] == 1.0


def test_forged_records_are_ignored_and_rerun(tmp_path, toy_plan):
    raw = {**TOY_PLAN, "defenses": ["none"], "attacks": ["template-match"], "levels": ["level-1"]}
    plan = plan_mod.from_dict(raw)
    with Store(tmp_path / "r.db") as store:
        keys = [job.key for cell in cell_mod.cells(plan) for job in cell_mod.jobs(plan, cell)]
    # A plugin that reached the file: it inserts a perfect-privacy record for a job to come.
    with sqlite3.connect(tmp_path / "r.db") as con:
        con.execute(
            "INSERT INTO records (key, task, defense, attack, level, seed, status, goal, metrics, "
            "meta, error, created) VALUES (?, '{}', '{}', '{}', 'level-1', 0, 'ok', "
            "'reidentify', ?, '{}', NULL, 0)", (keys[1], json.dumps({"advantage": 0.0})))
    with Store(tmp_path / "r.db") as store:
        assert store.unverified() == 1 and keys[1] not in store.keys()
        summary = runner.run(plan, store)
        assert summary.written == 2
        records = {r.key: r for r in store.records()}
        assert store.unverified() == 0
    assert records[keys[1]].metrics["advantage"] == 1.0


def test_forged_model_cache_entry_is_retrained(tmp_path):
    from safetensors.torch import save_file

    model = torch.nn.Linear(2, 2)
    cache = ModelCache(tmp_path, derive_key(b"s" * 32, "model-cache"))
    cache.save("k", model, "upload-digest")
    assert cache.load("k", lambda: torch.nn.Linear(2, 2), "upload-digest") is not None
    # Bound to the upload it was trained on.
    assert cache.load("k", lambda: torch.nn.Linear(2, 2), "another-upload") is None
    # A plugin without the salt rewrites the file with its own weights and a plain checksum.
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    save_file(state, str(cache.path("k")), metadata={"hmac": "0" * 64})
    assert cache.load("k", lambda: torch.nn.Linear(2, 2), "upload-digest") is None


def test_salt_is_secret_and_reproduces(tmp_path, toy_plan):
    with Store(tmp_path / "a.db") as a:
        salt = a.salt
        assert (tmp_path / "a.db.salt").stat().st_mode & 0o077 == 0
    with Store(tmp_path / "b.db") as b:
        assert b.salt != salt  # a new database draws its own
    with Store(tmp_path / "c.db", salt_file=tmp_path / "a.db.salt") as c:
        assert c.salt == salt
    cell = cell_mod.cells(toy_plan)[0]
    assert cell.seeds(salt) != cell.seeds(b"x" * 32)
    (tmp_path / "a.db.salt").unlink()
    with pytest.raises(Exception, match="salt"):
        Store(tmp_path / "a.db")


@pytest.mark.parametrize("cls", [Vandal, MixingVandal], ids=lambda c: c.name)
def test_a_defense_cannot_write_into_the_drivers_tensors(cls):
    # Tensors handed to a plugin process travel by value: shared memory would let a defense
    # rewrite the public pool every attack learns from, or the owner's images behind the truth.
    gen = torch.Generator().manual_seed(0)
    pool = Data(torch.rand(50, 1, 8, 8, generator=gen), torch.randint(3, (50,), generator=gen))
    train = Data(torch.rand(700, 1, 8, 8, generator=gen), torch.randint(3, (700,), generator=gen))
    before = (pool.x.clone(), train.x.clone())
    with sandbox.DefenseHost(cls, {}, pool, chunk_seed=0, protected=[], threads=1) as host:
        host.fit(seed=1)
        out = host.transform(train)
    assert torch.equal(pool.x, before[0]) and torch.equal(train.x, before[1])
    assert bool((out.x == 7.0).all())  # the defense did run, on its own copies
