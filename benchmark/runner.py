"""The cross product of a plan: cells of (task, defense, seed), every attack at every level.

One cell (docs/design.md, "One cell"): load the task's splits; start the owner's defense host and
fit it (drawing the owner's key); disguise the training images, in one pass or one encoding per
epoch, and that exact upload is what the model trains on, what targets and known pairs are rows of
and what the cloud holds; train the task's model; record its accuracy on the disguised test
images; then, per (attack, level), run the attack sealed in its own process with copies of exactly
what the level grants and the attack declares, and score its prediction against a truth it never
sees. Seeds derive from the plan seed and the results database's secret salt.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import functools
import hashlib
import hmac
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from disguisebench import baselines, sandbox, scoring
from disguisebench.api import (
    DEFENSE, GALLERY, KNOWN_PAIRS, LABEL, LABEL_OF, LEVELS, MEMBERSHIP, MODEL, ORACLE, PUBLIC,
    RECONSTRUCT, TARGETS, UPLOAD, Attack, Data, Defense, PluginError, Splits, Task, ThreatView,
    check_choice,
)
from disguisebench.cache import ModelCache, data_digest
from disguisebench.plan import Plan, Spec, spec_hash
from disguisebench.store import FAILED, NOT_APPLICABLE, OK, REFUSED, Record, Store, derive_key

log = logging.getLogger("disguisebench")

# Targets of a reconstruct-goal attack whose images are kept for the leaderboard's gallery.
GALLERY_TARGETS = 4


def derive_seed(salt: bytes, seed: int, *roles: str) -> int:
    """An independent 63-bit seed for one role (data, key, training, an attack) of a plan seed.

    Keyed by the results database's secret salt: knowing the plan seed and the roles, a plugin
    still cannot compute the owner's key seed.
    """
    message = "/".join([str(seed), *roles]).encode()
    digest = hmac.new(salt, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclasses.dataclass(frozen=True)
class Cell:
    task: Spec
    defense: Spec
    seed: int

    def seeds(self, salt: bytes) -> dict[str, int]:
        t, d = spec_hash(self.task.canonical()), spec_hash(self.defense.canonical())
        return {
            "data": derive_seed(salt, self.seed, "data", t),
            # Per defense: one defense's kept gallery images never show another's targets.
            "targets": derive_seed(salt, self.seed, "targets", t, d),
            "key": derive_seed(salt, self.seed, "key", t, d),
            "train": derive_seed(salt, self.seed, "train", t),
            "chunks": derive_seed(salt, self.seed, "chunks", t, d),
        }

    def model_key(self, salt: bytes) -> str:
        return spec_hash({"task": self.task.canonical(), "defense": self.defense.canonical(),
                          "seed": self.seed, "salt": Store.fingerprint_of(salt)})

    def attack_seed(self, attack: Spec, salt: bytes) -> int:
        """The same for every defense of a task: attacks on different defenses are paired (and
        work that does not depend on the defense, like a plaintext model, is done once)."""
        return derive_seed(salt, self.seed, "attack", spec_hash(self.task.canonical()),
                           spec_hash(attack.canonical()))


@dataclasses.dataclass(frozen=True)
class Job:
    """One record to produce: the utility row (attack None) or one attack at one level."""

    key: str
    attack: Spec | None
    level: str | None


def record_key(plan: Plan, cell: Cell, attack: Spec | None, level: str | None) -> str:
    return spec_hash({
        "task": cell.task.canonical(),
        "defense": cell.defense.canonical(),
        "attack": None if attack is None else attack.canonical(),
        "level": level,
        "seed": cell.seed,
        "n_targets": None if attack is None else plan.n_targets,
        "n_known": plan.n_known if level in ("level-2", "level-3") else None,
    })


def cells(plan: Plan) -> list[Cell]:
    return [Cell(t, d, s) for s in plan.seeds for t in plan.tasks for d in plan.defenses]


def jobs(plan: Plan, cell: Cell) -> list[Job]:
    out = [Job(record_key(plan, cell, None, None), None, None)]
    for attack in plan.attacks:
        for level in plan.levels:
            out.append(Job(record_key(plan, cell, attack, level), attack, level))
    return out


@functools.cache
def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def _installed(name: str) -> str | None:
    """A package's version from its metadata (importing torchvision fails beside a torch build it
    was not made for, and the manifest needs only the version)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def manifest() -> dict[str, Any]:
    """What reproducing a record needs: versions, commit, hardware, date."""
    import numpy

    from disguisebench import __version__

    cuda = torch.cuda.is_available()
    return {
        "disguisebench": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _installed("torchvision"),
        "numpy": numpy.__version__,
        "device": "cuda" if cuda else "cpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_gallery(folder: Path, name: str, scenario: Scenario, prediction: torch.Tensor) -> str:
    """Keep the first targets' original, disguised image and reconstruction for the gallery.

    Only images are written (never the defense, so never its key), as plain float32 arrays that
    load with ``numpy.load(..., allow_pickle=False)``. Returns the file name inside ``folder``.
    """
    import numpy

    n = min(GALLERY_TARGETS, len(scenario.targets))
    arrays = {
        "original": scenario.gallery[scenario.gallery_index[:n, 0]],
        "disguised": scenario.targets.x[:n],
        "reconstruction": prediction[:n].detach().cpu(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    filename = f"{name}.npz"
    numpy.savez_compressed(folder / filename,
                           **{key: a.float().numpy() for key, a in arrays.items()})
    return filename


@dataclasses.dataclass
class Scenario:
    """The runner's side of a cell: what attacks may be shown, and the truth they may not."""

    targets: Data
    upload: Data
    target_labels: torch.Tensor
    gallery: torch.Tensor
    gallery_labels: torch.Tensor | None
    gallery_index: torch.Tensor
    known_pairs: tuple[Data, Data]
    candidates: torch.Tensor
    member: torch.Tensor


def _unique_sources(sources: torch.Tensor) -> torch.Tensor:
    return torch.unique(sources[sources >= 0])


def scenario_sizes(n_train: int, n_targets: int, n_known: int) -> tuple[int, int]:
    """``n_targets`` and ``n_known`` reduced, when needed, to fit ``n_train`` training images.

    Targets, as many gallery distractors and the known pairs must be distinct training images.
    When the plan's numbers do not fit (a small task), targets shrink to leave room for the known
    pairs, but not below a quarter of the training set, and the known pairs take what is left.
    """
    if 2 * n_targets + n_known <= n_train:
        return n_targets, n_known
    targets = max(1, min(n_targets, max(n_train // 4, (n_train - n_known) // 2)))
    return targets, max(0, min(n_known, n_train - 2 * targets))


def level_sizes(n_train: int, n_targets: int, n_known: int, level: str) -> tuple[int, int]:
    """The scenario sizes one level is run with. Levels that grant no known pairs keep every
    target the plan asks for when only the pairs make the numbers too large for the task."""
    sizes = scenario_sizes(n_train, n_targets, n_known)
    if sizes == (n_targets, n_known) or KNOWN_PAIRS in LEVELS[level]:
        return sizes
    return scenario_sizes(n_train, n_targets, 0)


def build_scenario(splits: Splits, disguised: Data, *, n_targets: int, n_known: int,
                   seed: int) -> Scenario:
    """Draw targets, the gallery, known pairs and membership candidates (docs/design.md, "One cell")."""
    rng = torch.Generator().manual_seed(seed)
    n_plain = len(splits.train)
    if n_targets > len(disguised):
        raise PluginError(f"n_targets={n_targets} exceeds the {len(disguised)} disguised images")
    order = torch.randperm(len(disguised), generator=rng)
    sources = disguised.sources()
    target_rows = order[:n_targets]
    originals = _unique_sources(sources[target_rows])
    used = torch.zeros(n_plain, dtype=torch.bool)
    used[originals] = True

    # Known pairs: disguised rows none of whose originals is a target's.
    known_rows = []
    for row in order[n_targets:].tolist():
        if len(known_rows) == n_known:
            break
        src = sources[row]
        if not used[src[src >= 0]].any():
            known_rows.append(row)
    if len(known_rows) < n_known:
        raise PluginError(f"n_known={n_known} exceeds the {len(known_rows)} images left after targets")
    known_rows = torch.tensor(known_rows, dtype=torch.long)
    known_src = sources[known_rows]
    known_plain = _unique_sources(known_src)
    used[known_plain] = True

    # Distractors: as many untouched owner training images as there are originals.
    free = torch.nonzero(~used).squeeze(1)
    free = free[torch.randperm(len(free), generator=rng)]
    if len(free) < len(originals):
        raise PluginError(
            f"the training set ({n_plain} images) is too small for {len(originals)} gallery "
            f"originals plus as many distractors and {n_known} known pairs"
        )
    members = torch.cat([originals, free[: len(originals)]])
    shuffle = torch.randperm(len(members), generator=rng)
    gallery_plain = members[shuffle]
    position = torch.full((n_plain,), -1, dtype=torch.long)
    position[gallery_plain] = torch.arange(len(gallery_plain))
    target_src = sources[target_rows]
    gallery_index = torch.where(target_src >= 0, position[target_src.clamp_min(0)], -1)

    remap = torch.full((n_plain,), -1, dtype=torch.long)
    remap[known_plain] = torch.arange(len(known_plain))
    known_disguised = disguised[known_rows]
    known_disguised = Data(known_disguised.x, known_disguised.y,
                           torch.where(known_src >= 0, remap[known_src.clamp_min(0)], -1))

    # Membership candidates: the targets' originals (members) and as many owner test images.
    n_out = min(len(originals), len(splits.test))
    outsiders = torch.randperm(len(splits.test), generator=rng)[:n_out]
    cand = torch.cat([splits.train.x[originals], splits.test.x[outsiders]])
    member = torch.cat([torch.ones(len(originals)), torch.zeros(n_out)]).bool()
    mix = torch.randperm(len(cand), generator=rng)

    targets = disguised[target_rows]
    return Scenario(
        targets=Data(targets.x, targets.y),
        upload=Data(disguised.x, disguised.y),
        target_labels=targets.hard_labels() if targets.y is not None else None,
        gallery=splits.train.x[gallery_plain],
        gallery_labels=None if splits.train.y is None else splits.train.hard_labels()[gallery_plain],
        gallery_index=gallery_index,
        known_pairs=(splits.train[known_plain], known_disguised),
        candidates=cand[mix],
        member=member[mix],
    )


def build_view(level: str, granted: frozenset[str], attack: Attack, task: Task,
               splits: Splits, defense: Defense, model: torch.nn.Module,
               scenario: Scenario) -> ThreatView:
    """A view built in this process, for testing an attack directly (the runner seals attacks)."""
    fields = view_fields(granted, attack, splits, model, scenario)
    return ThreatView(
        level=level, task=task.clone(),
        defense=defense.clone() if DEFENSE in granted else None,
        oracle=defense.transform if ORACLE in granted else None,
        **fields,
    )


def view_fields(granted: frozenset[str], attack: Attack, splits: Splits,
                model: torch.nn.Module | None, scenario: Scenario) -> dict[str, Any]:
    """The tensors and model of a view, as copies: what an attack's process receives."""
    targets, upload = scenario.targets, scenario.upload
    if attack.goal == LABEL:
        targets, upload = targets.without_labels(), upload.without_labels()

    def copied(data: Data | None) -> Data | None:
        if data is None:
            return None
        return Data(data.x.clone(), None if data.y is None else data.y.clone())

    pairs = None
    if KNOWN_PAIRS in granted:
        plain, disguised = scenario.known_pairs
        pairs = (copied(plain), Data(disguised.x.clone(),
                                     None if disguised.y is None else disguised.y.clone(),
                                     None if disguised.source is None else disguised.source.clone()))
    return {
        "num_classes": splits.num_classes,
        "targets": copied(targets) if TARGETS in granted else None,
        "upload": copied(upload) if UPLOAD in granted else None,
        "model": copy.deepcopy(model).cpu().eval() if MODEL in granted and model is not None
        else None,
        "public": copied(splits.public) if PUBLIC in granted else None,
        "gallery": scenario.gallery.clone() if GALLERY in granted else None,
        "known_pairs": pairs,
        "candidates": scenario.candidates.clone() if attack.goal == MEMBERSHIP else None,
    }


def _truth(scenario: Scenario, label_of: str = "targets") -> scoring.Truth:
    check_choice("attack", "label_of", label_of, LABEL_OF)
    labels = scenario.gallery_labels if label_of == "gallery" else scenario.target_labels
    return scoring.Truth(gallery_index=scenario.gallery_index, gallery=scenario.gallery,
                         labels=labels, member=scenario.member)


def attack_report(attack: Attack | str, report: dict[str, float] | None = None
                  ) -> dict[str, float]:
    """An attack's diagnostics (``report``, or the ``report_`` it left), as ``attack.<name>``."""
    if isinstance(attack, Attack):
        name, report = attack.name, dict(getattr(attack, "report_", None) or {})
    else:
        name, report = attack, report or {}
    out = {}
    for key, value in report.items():
        number = float(value)
        if not math.isfinite(number):
            raise PluginError(f"{name}: report_[{key!r}] = {value!r} is not a finite number")
        out[f"attack.{key}"] = number
    return out


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


@dataclasses.dataclass
class Owner:
    """The owner's side of a cell: the defense host holding the key, and what the cloud holds."""

    host: sandbox.DefenseHost
    upload: Data
    reencode: Callable[[int], Data] | None
    consumed: dict[int, Data]


def owner_upload(host: sandbox.DefenseHost, defense: Defense, task: Task,
                 train: Data) -> Owner:
    """Disguise the training set: what the model trains on *is* the upload.

    A defense that re-encodes per epoch is asked for each epoch's encoding once; the upload is
    those encodings (each distinct one once), so targets and known pairs are rows the model saw.
    There is no separate "everything" call a defense could answer differently.
    """
    if not defense.reencodes_per_epoch:
        return Owner(host, host.transform(train), None, {})
    consumed: dict[int, Data] = {}

    def reencode(epoch: int) -> Data:
        if epoch not in consumed:
            consumed[epoch] = host.transform(train, epoch=epoch)
        return consumed[epoch]

    for epoch in range(host.epochs):
        reencode(epoch)
    return Owner(host, sandbox.distinct_encodings(consumed), reencode, consumed)


def task_epochs(task: Task) -> int:
    """How many encodings a defense that re-encodes per epoch gives the task's training."""
    epochs = getattr(task, "epochs", None)
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else 1


def train_or_load(task: Task, cell: Cell, owner: Owner, splits: Splits, seed: int,
                  salt: bytes, cache_dir: str | None, verbose: bool) -> tuple[torch.nn.Module, bool]:
    """The cell's model from the cache, else trained (and cached); True when it was cached.

    A cached model is bound to the digest of the exact upload it was trained on, under a key only
    the driver holds.
    """
    cache = ModelCache(cache_dir, derive_key(salt, "model-cache")) if cache_dir else None
    key = cell.model_key(salt)
    upload = owner.upload
    bound = data_digest(upload.x, upload.y, upload.sources())
    if cache is not None:
        model = cache.load(key, lambda: task.build_model(upload.image_shape, splits.num_classes),
                           bound)
        if model is not None:
            return model.to(device()), True
    model = task.train(upload, seed=seed, num_classes=splits.num_classes,
                       reencode=owner.reencode, progress=verbose)
    if owner.reencode is not None:
        owner.upload = sandbox.distinct_encodings(owner.consumed)  # every encoding training asked for
        bound = data_digest(owner.upload.x, owner.upload.y, owner.upload.sources())
    if cache is not None:
        cache.save(key, model, bound)
    return model, False


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_cell(plan: Plan, cell: Cell, todo: list[Job], emit: Callable[[Record], None], *,
             salt: bytes, protected: list[str] | None = None, verbose: bool = False,
             cache_dir: str | None = None, artifacts: str | Path | None = None) -> None:
    """Produce the records in ``todo`` for one cell, emitting each as soon as it is finished.

    ``salt`` is the results database's secret; ``protected`` the paths plugin processes may not
    touch. With ``cache_dir``, trained models are cached there; with ``artifacts``,
    reconstruct-goal attacks keep a few targets' images there (the leaderboard's gallery).
    """
    seeds = cell.seeds(salt)
    protected = list(protected or [])
    threads = torch.get_num_threads()
    base = {"task": cell.task.canonical(), "defense": cell.defense.canonical(), "seed": cell.seed}
    info = {**manifest(), "plan_hash": plan.digest()}

    def record(job: Job, status: str, metrics: dict, meta: dict, goal: str | None = None,
               error: str | None = None) -> None:
        emit(Record(key=job.key, attack=None if job.attack is None else job.attack.canonical(),
                    level=job.level, status=status, metrics=metrics,
                    meta={**info, **meta}, goal=goal, error=error, **base))

    def fail_all(status: str, err: BaseException, meta: dict) -> None:
        for job in todo:
            if job.attack is None:
                record(job, FAILED, {}, meta, None, _error(err))
            else:
                metrics = {"advantage": 1.0} if status == REFUSED else {}
                record(job, status, metrics, meta, job.attack.build().goal, _error(err))

    start = time.perf_counter()
    host = None
    try:
        try:
            task: Task = cell.task.build()
            defense: Defense = cell.defense.build()
            splits = task.load(seed=seeds["data"])
            host = sandbox.DefenseHost(type(defense), defense.get_params(), splits.public,
                                       chunk_seed=seeds["chunks"], protected=protected,
                                       threads=threads, epochs=task_epochs(task))
            host.fit(seed=seeds["key"])
            owner = owner_upload(host, defense, task, splits.train)
            train_start = time.perf_counter()
            model, cached = train_or_load(task, cell, owner, splits, seeds["train"], salt,
                                          cache_dir, verbose)
            train_seconds = time.perf_counter() - train_start
            test = host.test_inputs(splits.test)
            accuracy = task.accuracy(model, test)
        except KeyboardInterrupt:
            raise
        except sandbox.DefenseFault as err:
            # The defense failed its own owner: nothing it protects can be credited to it.
            log.warning("defense %s refused in cell %s / seed %d: %s", cell.defense, cell.task,
                        cell.seed, err)
            fail_all(REFUSED, err, {"wall_seconds": time.perf_counter() - start})
            return
        except Exception as err:  # a plugin that raises is recorded, and the run goes on
            log.warning("cell %s / %s / seed %d failed: %s", cell.task, cell.defense, cell.seed,
                        _error(err))
            fail_all(FAILED, err, {"wall_seconds": time.perf_counter() - start})
            return
        cell_seconds = time.perf_counter() - start
        for job in todo:
            if job.attack is None:
                record(job, OK, {"accuracy": accuracy, "n_test": len(test)},
                       {"wall_seconds": cell_seconds, "train_seconds": train_seconds,
                        "model_cached": cached})
        attacks = [job for job in todo if job.attack is not None]
        if attacks:
            _run_attacks(plan, cell, attacks, record, salt=salt, seeds=seeds, task=task,
                         defense=defense, splits=splits, owner=owner, model=model,
                         protected=protected, threads=threads, artifacts=artifacts)
    finally:
        if host is not None:
            host.close()


def _run_attacks(plan: Plan, cell: Cell, attacks: list[Job], record: Callable[..., None], *,
                 salt: bytes, seeds: dict[str, int], task: Task, defense: Defense,
                 splits: Splits, owner: Owner, model: torch.nn.Module, protected: list[str],
                 threads: int, artifacts: str | Path | None) -> None:
    # A task too small for the plan's sizes is reported once, by run(), before any training.
    scenarios: dict[tuple[int, int], Scenario | PluginError] = {}
    # An attack sees only what it declares, so levels that grant it nothing new share one run.
    done: dict[tuple[Spec, frozenset[str], tuple[int, int]],
               tuple[str, dict, str | None, float, dict]] = {}
    for job in attacks:
        n_targets, n_known = level_sizes(len(splits.train), plan.n_targets, plan.n_known,
                                         job.level)
        sizes = {"n_targets": n_targets, "n_known": n_known}
        if (n_targets, n_known) not in scenarios:
            try:
                scenarios[n_targets, n_known] = build_scenario(
                    splits, owner.upload, n_targets=n_targets, n_known=n_known,
                    seed=seeds["targets"])
            except PluginError as err:
                scenarios[n_targets, n_known] = err
        scenario = scenarios[n_targets, n_known]
        if isinstance(scenario, PluginError):
            record(job, FAILED, {}, sizes, job.attack.build().goal, _error(scenario))
            continue
        attack: Attack = job.attack.build()
        level_caps = LEVELS[job.level]
        missing = attack.needs - level_caps
        if missing:
            record(job, NOT_APPLICABLE, {}, {"missing": sorted(missing), **sizes}, attack.goal)
            continue
        granted = attack.needs | (attack.optional & level_caps)
        memo = (job.attack, granted, (n_targets, n_known))
        if memo not in done:
            done[memo] = _sealed_attack(job, attack, granted, cell, salt=salt, seeds=seeds,
                                        task=task, defense=defense, splits=splits, owner=owner,
                                        model=model, scenario=scenario, protected=protected,
                                        threads=threads, artifacts=artifacts)
        status, metrics, error, seconds, extra = done[memo]
        record(job, status, metrics,
               {"wall_seconds": seconds, "granted": sorted(granted), **sizes, **extra},
               attack.goal, error)


def _sealed_attack(job: Job, attack: Attack, granted: frozenset[str], cell: Cell, *, salt: bytes,
                   seeds: dict[str, int], task: Task, defense: Defense, splits: Splits, owner: Owner,
                   model: torch.nn.Module, scenario: Scenario, protected: list[str],
                   threads: int, artifacts: str | Path | None
                   ) -> tuple[str, dict, str | None, float, dict]:
    """One attack in its own process; its prediction scored here. Status, metrics, error, time."""
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    seed = cell.attack_seed(job.attack, salt)
    try:
        outcome = sandbox.run_attack(
            attack, view_fields(granted, attack, splits, model, scenario) | {"level": job.level},
            seed=seed, task=task, defense=defense if DEFENSE in granted else None,
            oracle=owner.host if ORACLE in granted else None, pool=splits.public,
            protected=protected, threads=threads,
            chunk_seed=derive_seed(salt, cell.seed, "attack-chunks", job.key),
            epochs=task_epochs(task))
        if outcome.refusal is not None:
            # Whatever the attack made of it: a defense that fails its attackers is not private.
            log.warning("defense %s refused attack %s at %s: %s", cell.defense, job.attack,
                        job.level, outcome.refusal)
            return REFUSED, {"advantage": 1.0}, outcome.refusal, time.perf_counter() - t0, extra
        if outcome.not_applicable is not None:  # the attack needs what this defense lacks
            return NOT_APPLICABLE, {}, outcome.not_applicable, time.perf_counter() - t0, extra
        if outcome.error is not None:
            log.warning("attack %s on %s at %s failed: %s", job.attack, cell.defense, job.level,
                        outcome.error)
            return FAILED, {}, outcome.error, time.perf_counter() - t0, extra
        # A label attack's chance: what a classifier of the public data alone achieves.
        truth = baselines.with_chance(_truth(scenario, attack.label_of), attack, task, splits,
                                      seed=seeds["train"])
        metrics = scoring.score(attack.goal, outcome.prediction, truth)
        metrics.update(attack_report(attack.name, outcome.report))
        if ORACLE in granted:
            metrics["oracle_queries"] = float(outcome.queries)
        status, error = OK, None
    except KeyboardInterrupt:
        raise
    except Exception as err:
        log.warning("attack %s on %s at %s failed: %s", job.attack, cell.defense, job.level,
                    _error(err))
        return FAILED, {}, _error(err), time.perf_counter() - t0, extra
    if attack.goal == RECONSTRUCT and artifacts is not None:
        try:
            extra["artifact"] = save_gallery(Path(artifacts), job.key, scenario,
                                             outcome.prediction)
        except OSError as err:  # the gallery is a nicety; the score stands without it
            log.warning("could not keep gallery images in %s: %s", artifacts, err)
    return status, metrics, error, time.perf_counter() - t0, extra


@dataclasses.dataclass
class Summary:
    written: int = 0
    skipped: int = 0
    failed: int = 0
    not_applicable: int = 0
    seconds: float = 0.0


def pending(plan: Plan, store: Store) -> Iterator[tuple[Cell, list[Job], int]]:
    """Each cell with the jobs still missing from the store, and how many it already has."""
    stored = store.keys()
    for cell in cells(plan):
        all_jobs = jobs(plan, cell)
        todo = [job for job in all_jobs if job.key not in stored]
        yield cell, todo, len(all_jobs) - len(todo)


def preflight(plan: Plan, work: list[tuple[Cell, list[Job]]], salt: bytes) -> None:
    """Load every task once before anything trains, so a missing dataset or split sizes larger
    than the data stop the run with the task's one-line error; warn once per task whose training
    set is too small for the plan's ``n_targets`` and ``n_known``."""
    seen: set[str] = set()
    for cell, _ in work:
        key = spec_hash(cell.task.canonical())
        if key in seen:
            continue
        seen.add(key)
        n_train = len(cell.task.build().load(seed=cell.seeds(salt)["data"]).train)
        levels = [lv for lv in plan.levels if level_sizes(
            n_train, plan.n_targets, plan.n_known, lv) != (plan.n_targets, plan.n_known)]
        if plan.attacks and levels:
            used = "; ".join(f"{lv}: n_targets={t}, n_known={k}" for lv, (t, k) in (
                (lv, level_sizes(n_train, plan.n_targets, plan.n_known, lv)) for lv in levels))
            log.warning("%s has %d training images, too few for n_targets=%d and n_known=%d; "
                        "using %s", cell.task, n_train, plan.n_targets, plan.n_known, used)


def describe(cell: Cell, job: Job) -> str:
    """What producing ``job`` means, short enough for the progress bar's line."""
    if job.attack is None:
        return f"training {cell.defense} on {cell.task}, seed {cell.seed}"
    return f"{job.attack}, {job.level}, {cell.defense}"


class _Progress:
    """One bar over the records to produce, naming the one being produced. The runner only
    learns that a record is finished; in-process cells produce their records in job order, so the
    first unfinished job of the cell last heard from (else of the next cell) is the one running.
    A ticker keeps the elapsed time and the ETA moving while a long step runs."""

    def __init__(self, work: list[tuple[Cell, list[Job]]], enabled: bool) -> None:
        import threading

        from tqdm import tqdm

        self._open = {cell: [job.key for job in todo] for cell, todo in work}
        self._jobs = {job.key: (cell, job) for cell, todo in work for job in todo}
        self._order = [cell for cell, _ in work]
        self._current = self._order[0] if self._order else None
        first = describe(*self._jobs[work[0][1][0].key]) if work else "done"
        # The ETA averages over every record so far (smoothing 0): records differ a lot in cost,
        # training most, and a moving average would swing with each.
        self.bar = tqdm(total=len(self._jobs), desc=first, unit="rec", disable=not enabled,
                        smoothing=0, ncols=shutil.get_terminal_size((120, 24)).columns,
                        bar_format="records {n_fmt}/{total_fmt} |{bar:12}| "
                                   "{elapsed}<{remaining} left · {desc}")
        self._stop = threading.Event()
        self._ticker = None
        self._label()
        if enabled:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def _label(self) -> None:
        cells = [self._current] + self._order if self._current is not None else self._order
        for cell in cells:
            if self._open.get(cell):
                self.bar.set_description_str(describe(*self._jobs[self._open[cell][0]]),
                                             refresh=False)
                return
        self.bar.set_description_str("done", refresh=False)

    def record(self, rec: Record) -> None:
        if rec.key not in self._jobs:
            return
        cell, _ = self._jobs[rec.key]
        if rec.key in self._open[cell]:
            self._open[cell].remove(rec.key)
        self._current = cell
        self._label()
        self.bar.update(1)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.bar.close()


def run(plan: Plan, store: Store, *, progress: bool = False, verbose: bool = False,
        on_record: Callable[[Record], None] | None = None, executor: Any = None,
        cache: bool = True) -> Summary:
    """Run every missing record of ``plan``, writing each to ``store`` as it finishes.

    ``executor`` (see benchmark.executors) decides where cells run; the default runs them in this
    process. Whatever runs them, only this driver writes the store. Every task is loaded once
    first (:func:`preflight`): a missing dataset or impossible split sizes raise PluginError
    before anything trains. ``progress`` shows one bar over the records with an ETA.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from disguisebench.executors import InProcess

    summary = Summary()
    start = time.perf_counter()
    work = list(pending(plan, store))
    summary.skipped = sum(already for _, _, already in work)
    todo_cells = [(cell, todo) for cell, todo, _ in work if todo]
    if todo_cells:
        sandbox.context()  # the fork server preloads plugins while the tasks load
    preflight(plan, todo_cells, store.salt)

    bar = _Progress(todo_cells, progress)

    def emit(rec: Record) -> None:
        store.add(rec)
        summary.written += 1
        summary.failed += rec.status == FAILED
        summary.not_applicable += rec.status == NOT_APPLICABLE
        if verbose:
            log.info("%s %s %s %s: %s %s", rec.task_name, rec.defense["name"],
                     rec.attack_name or "utility", rec.level or "", rec.status,
                     {k: round(v, 4) for k, v in rec.metrics.items() if isinstance(v, float)})
        bar.record(rec)
        if on_record is not None:
            on_record(rec)

    options = {"verbose": verbose, "salt": store.salt, "protected": store.protected_paths(),
               "cache_dir": str(store.path.parent / "models") if cache else None,
               "artifacts": str(store.artifacts_dir)}
    try:
        # Warnings logged mid-run go above the bar instead of breaking it.
        with logging_redirect_tqdm() if progress else contextlib.nullcontext():
            (executor or InProcess()).run(plan, todo_cells, emit, lambda cell: None, options)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
