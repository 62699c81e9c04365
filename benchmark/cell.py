"""One cell of a plan, (task, defense, seed): the owner's pipeline, then every attack sealed.

Load the task's splits; start the owner's defense host and fit it (drawing the owner's key);
disguise the training images, in one pass or one encoding per epoch, and that exact upload is what
the model trains on, what targets and known pairs are rows of and what the cloud holds; train the
task's model; record its accuracy on the disguised test images; then, per (attack, level), run the
attack sealed in its own process with copies of exactly what the level grants and the attack
declares, and score its prediction against a truth it never sees (docs/design.md, "One cell").
Seeds derive from the plan seed and the results database's secret salt.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import hmac
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from disguisebench import baselines, registry, sandbox, scoring
from disguisebench.api import (
    DEFENSE, LABEL, LEVELS, ORACLE, RECONSTRUCT, Attack, Data, Defense, PluginError, Splits, Task,
    device,
)
from disguisebench.cache import ModelCache, data_digest
from disguisebench.plan import Plan, Resources, Spec, points, spec_hash
from disguisebench.store import FAILED, NOT_APPLICABLE, OK, REFUSED, Record, Store, derive_key
from disguisebench.threat import (
    Scenario, attack_report, build_scenario, grants, level_sizes, view_fields,
)
from disguisebench.threat import truth as scenario_truth

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
    resources: Resources = Resources()

def record_key(plan: Plan, cell: Cell, attack: Spec | None, level: str | None,
               resources: Resources | None = None) -> str:
    """The hash a record is stored under. Queries and compute enter it only when not their
    defaults, so the records of a plan that sweeps nothing keep their keys."""
    resources = resources or Resources(max(plan.known()))
    return spec_hash({
        "task": cell.task.canonical(),
        "defense": cell.defense.canonical(),
        "attack": None if attack is None else attack.canonical(),
        "level": level,
        "seed": cell.seed,
        "n_targets": None if attack is None else plan.n_targets,
        "n_known": resources.n_known if level in ("level-2", "level-3") else None,
        **resources.key_fields(),
    })

def cells(plan: Plan) -> list[Cell]:
    return [Cell(t, d, s) for s in plan.seeds for t in plan.tasks for d in plan.defenses]

def jobs(plan: Plan, cell: Cell) -> list[Job]:
    """The utility record, then one job per (attack, level, resource point)."""
    out = [Job(record_key(plan, cell, None, None), None, None)]
    for attack in plan.attacks:
        plugin = attack.build()
        for level in plan.levels:
            for point in points(plan, level, plugin):
                out.append(Job(record_key(plan, cell, attack, level, point), attack, level,
                               point))
    return out

def with_compute(spec: Spec, factor: float) -> Attack:
    """The attack of ``spec`` with its ``budget`` hyperparameters multiplied by ``factor``
    (integers rounded, to at least 1; a 0, which means "the task's default", stays 0)."""
    attack: Attack = spec.build()
    if factor == 1 or not attack.budget:
        return attack
    params = spec.param_dict()
    for name in attack.budget:
        value = params[name]
        if isinstance(value, int) and not isinstance(value, bool):
            params[name] = max(1, round(value * factor)) if value > 0 else 0
        else:
            params[name] = value * factor
    return registry.create("attack", spec.name, params)

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
    # Every plugin process of the cell gets the same threads, the owner's defense host too: a
    # defense must not tell the owner's host from an attacker's clone by its thread count.
    host_threads = plugin_threads(threads)
    base = {"task": cell.task.canonical(), "defense": cell.defense.canonical(), "seed": cell.seed}
    info = {**manifest(), "plan_hash": plan.digest()}

    def record(job: Job, status: str, metrics: dict, meta: dict, goal: str | None = None,
               error: str | None = None) -> None:
        emit(Record(key=job.key, attack=None if job.attack is None else job.attack.canonical(),
                    level=job.level, status=status, metrics=metrics,
                    meta={**info, **meta}, goal=goal, error=error, **base))

    start = time.perf_counter()
    side: OwnerSide | None = None
    try:
        try:
            side = owner_side(cell, seeds, protected=protected, threads=host_threads,
                              cache_dir=cache_dir, salt=salt, verbose=verbose)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # a plugin that raises is recorded, and the run goes on
            # A defense that failed its own owner (DefenseFault) refused: nothing it protects can
            # be credited to it.
            refused = isinstance(err, sandbox.DefenseFault)
            if refused:
                log.warning("defense %s refused in cell %s / seed %d: %s", cell.defense,
                            cell.task, cell.seed, err)
            else:
                log.warning("cell %s / %s / seed %d failed: %s", cell.task, cell.defense,
                            cell.seed, _error(err))
            _fail_all(todo, record, REFUSED if refused else FAILED, err,
                      {"wall_seconds": time.perf_counter() - start})
            return
        cell_seconds = time.perf_counter() - start
        for job in todo:
            if job.attack is None:
                record(job, OK, {"accuracy": side.accuracy, "n_test": side.n_test},
                       {"wall_seconds": cell_seconds, "train_seconds": side.train_seconds,
                        "model_cached": side.cached})
        attacks = [job for job in todo if job.attack is not None]
        if attacks:
            _run_attacks(plan, cell, attacks, record, salt=salt, seeds=seeds, task=side.task,
                         defense=side.defense, splits=side.splits, owner=side.owner,
                         model=side.model, protected=protected, threads=threads,
                         artifacts=artifacts)
    finally:
        if side is not None:
            side.owner.host.close()


def _fail_all(todo: list[Job], record: Callable[..., None], status: str, err: BaseException,
              meta: dict) -> None:
    """Every record of a cell whose owner pipeline failed: the utility row failed; each attack
    failed with it, or counts as a complete break when the defense refused its owner."""
    for job in todo:
        if job.attack is None:
            record(job, FAILED, {}, meta, None, _error(err))
        else:
            metrics = {"advantage": 1.0} if status == REFUSED else {}
            record(job, status, metrics, meta, job.attack.build().goal, _error(err))


@dataclasses.dataclass
class OwnerSide:
    """What a cell's owner pipeline made: the splits, the owner's host and upload, the model."""

    task: Task
    defense: Defense
    splits: Splits
    owner: Owner
    model: torch.nn.Module
    cached: bool
    train_seconds: float
    accuracy: float
    n_test: int


def owner_side(cell: Cell, seeds: dict[str, int], *, protected: list[str], threads: int,
               cache_dir: str | None, salt: bytes, verbose: bool) -> OwnerSide:
    """Load the splits, start and key the owner's defense host, disguise the training set, train
    (or load) the model and measure its accuracy on the disguised test images. On failure the
    host is closed and the error raised."""
    task: Task = cell.task.build()
    defense: Defense = cell.defense.build()
    splits = task.load(seed=seeds["data"])
    host = sandbox.DefenseHost(type(defense), defense.get_params(), splits.public,
                               chunk_seed=seeds["chunks"], protected=protected,
                               threads=threads, epochs=task_epochs(task))
    try:
        host.fit(seed=seeds["key"])
        owner = owner_upload(host, defense, task, splits.train)
        train_start = time.perf_counter()
        model, cached = train_or_load(task, cell, owner, splits, seeds["train"], salt,
                                      cache_dir, verbose)
        train_seconds = time.perf_counter() - train_start
        test = host.test_inputs(splits.test)
        accuracy = task.accuracy(model, test)
    except BaseException:
        host.close()
        raise
    return OwnerSide(task, defense, splits, owner, model, cached, train_seconds, accuracy,
                     len(test))


@dataclasses.dataclass
class _Run:
    """One sealed attack run of a cell, shared by the jobs (levels) it answers."""

    job: Job
    attack: Attack
    granted: frozenset[str]
    scenario: Scenario


# Most sealed attacks of a cell at once: each holds copies of its view (for a full-size dataset,
# the upload alone is hundreds of megabytes).
MAX_LANES = 4


def attack_lanes(threads: int) -> int:
    """How many sealed attacks of a cell run at once: one per thread the cell may use, up to
    MAX_LANES, the threads shared out among them. An attack's work is mostly small operations,
    which a second thread in the same process speeds up far less than a second process does."""
    return min(MAX_LANES, max(1, threads)) if device().type == "cpu" else 2


def plugin_threads(threads: int) -> int:
    """Threads of each plugin process of a cell given ``threads``: every attack, every clone and
    the owner's defense host alike."""
    return max(1, threads // attack_lanes(threads))


def _run_attacks(plan: Plan, cell: Cell, attacks: list[Job], record: Callable[..., None], *,
                 salt: bytes, seeds: dict[str, int], task: Task, defense: Defense,
                 splits: Splits, owner: Owner, model: torch.nn.Module, protected: list[str],
                 threads: int, artifacts: str | Path | None) -> None:
    # A task too small for the plan's sizes is reported once, by run(), before any training.
    scenarios: dict[tuple[int, int], Scenario | PluginError] = {}
    # An attack sees only what it declares, so levels that grant it nothing new share one run.
    runs: dict[tuple, _Run] = {}
    order: list[tuple[Job, Attack, dict, tuple | None]] = []
    for job in attacks:
        n_targets, n_known = level_sizes(len(splits.train), plan.n_targets,
                                         job.resources.n_known, job.level)
        sizes = {"n_targets": n_targets, "n_known": n_known, **job.resources.key_fields()}
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
        attack = with_compute(job.attack, job.resources.compute)
        if job.resources.compute != 1 and attack.budget:  # what the multiplier made of it
            sizes["budget"] = {name: getattr(attack, name) for name in attack.budget}
        missing = attack.needs - LEVELS[job.level]
        if missing:
            order.append((job, attack, {"missing": sorted(missing), **sizes}, None))
            continue
        granted = grants(attack, job.level)
        # Runs at different resource points never share a result.
        memo = (job.attack, granted, (n_targets, n_known),
                dataclasses.replace(job.resources, n_known=n_known))
        runs.setdefault(memo, _Run(job, attack, granted, scenario))
        order.append((job, attack, sizes, memo))
    lanes, each = attack_lanes(threads), plugin_threads(threads)
    sealed = functools.partial(_sealed_attack, cell=cell, salt=salt, task=task, defense=defense,
                               splits=splits, model=model, oracle=owner.host,
                               protected=protected, threads=each)
    # The public-only label baseline trains apart, like the attacks' models, and in a lane of
    # its own from the start: the first label record waits for it otherwise.
    trainer = functools.partial(sandbox.train_apart, threads=each)
    baseline = None
    if any(run.attack.goal == LABEL and run.attack.label_of != "targets" for run in runs.values()):
        baseline = functools.partial(baselines.public_classifier, task, splits,
                                     seed=seeds["train"], trainer=trainer)
    judged: dict[tuple, tuple[str, dict, str | None, float, dict]] = {}
    start = time.perf_counter()  # each record keeps when, in the attacks' phase, it was done
    with _Lanes(runs, sealed, lanes, first=baseline) as outcomes:
        for job, attack, meta, memo in order:
            if memo is None:
                record(job, NOT_APPLICABLE, {}, meta, attack.goal)
                continue
            if memo not in judged:
                run = runs[memo]
                judged[memo] = _judge(run, outcomes(memo), cell, seeds=seeds, task=task,
                                      trainer=trainer, splits=splits, artifacts=artifacts)
            status, metrics, error, seconds, extra = judged[memo]
            record(job, status, metrics,
                   {"wall_seconds": seconds, "granted": sorted(runs[memo].granted),
                    "phase_seconds": time.perf_counter() - start, "lanes": lanes, **meta,
                    **extra}, attack.goal, error)


class _Lanes:
    """A cell's sealed runs, ``lanes`` at a time, each in a driver thread serving its process.

    Runs granted the oracle share the owner's defense host, whose answers may depend on what it
    was asked before: they run one after another in the cell's order, in one lane, so the host
    sees the same requests in the same order however many lanes there are. Every other run is on
    its own (fresh processes, its own clones). ``outcomes(memo)`` waits for one run's outcome.
    """

    def __init__(self, runs: dict[tuple, _Run], sealed: Callable[[_Run], Any], lanes: int,
                 first: Callable[[], Any] | None = None) -> None:
        self.runs, self.sealed, self.lanes, self.first = runs, sealed, lanes, first
        self.pool: Any = None
        self.futures: dict[tuple, Any] = {}

    def __enter__(self) -> Callable[[tuple], Any]:
        sandbox.resume_attacks()  # after a cell interrupted in this process, if any
        if self.lanes == 1 or len(self.runs) < 2:
            return lambda memo: self.sealed(self.runs[memo])  # in order, in this thread
        from concurrent.futures import Future, ThreadPoolExecutor

        self.futures = {memo: Future() for memo in self.runs}
        chain = [m for m, run in self.runs.items() if ORACLE in run.granted]
        alone = [[m] for m, run in self.runs.items() if ORACLE not in run.granted]
        self.pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="disguisebench-attack")
        if self.first is not None:
            self.pool.submit(self.first)  # its result is cached; whoever needs it waits for it
        for memos in ([chain] if chain else []) + alone:  # the longest first
            self.pool.submit(self._in_turn, memos)
        return lambda memo: self.futures[memo].result()

    def _in_turn(self, memos: list[tuple]) -> None:
        for memo in memos:
            future = self.futures[memo]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.sealed(self.runs[memo]))
            except BaseException as err:  # noqa: BLE001 - raised in the cell's thread
                future.set_exception(err)

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if self.pool is None:
            return
        if kind is not None:  # interrupted or failed: no run still going is wanted
            for future in self.futures.values():
                future.cancel()
            sandbox.kill_attacks()
        self.pool.shutdown(wait=True)


@dataclasses.dataclass
class _Sealed:
    """What came back from one sealed run, and how long it took."""

    outcome: sandbox.AttackOutcome | None
    error: BaseException | None
    seconds: float


def _sealed_attack(run: _Run, *, cell: Cell, salt: bytes, task: Task, defense: Defense,
                   splits: Splits, model: torch.nn.Module, oracle: sandbox.DefenseHost,
                   protected: list[str], threads: int) -> _Sealed:
    """One attack in its own process, on ``threads`` threads."""
    job, attack, granted = run.job, run.attack, run.granted
    t0 = time.perf_counter()
    try:
        outcome = sandbox.run_attack(
            attack, view_fields(granted, attack, splits, model, run.scenario)
            | {"level": job.level, "queries": job.resources.queries if ORACLE in granted else None},
            seed=cell.attack_seed(job.attack, salt), task=task,
            defense=defense if DEFENSE in granted else None,
            oracle=oracle if ORACLE in granted else None, queries=job.resources.queries,
            pool=splits.public, protected=protected, threads=threads,
            chunk_seed=derive_seed(salt, cell.seed, "attack-chunks", job.key),
            epochs=task_epochs(task))
    except Exception as err:  # noqa: BLE001 - recorded as the attack's failure
        return _Sealed(None, err, time.perf_counter() - t0)
    return _Sealed(outcome, None, time.perf_counter() - t0)


def _judge(run: _Run, sealed: _Sealed, cell: Cell, *, seeds: dict[str, int], task: Task,
           trainer: Callable[..., torch.nn.Module], splits: Splits,
           artifacts: str | Path | None) -> tuple[str, dict, str | None, float, dict]:
    """Score one sealed run's prediction against the truth it never saw. Status, metrics, error,
    seconds (the run's and the scoring's), extra meta."""
    job, attack = run.job, run.attack
    t0 = time.perf_counter() - sealed.seconds
    extra: dict[str, Any] = {}
    outcome = sealed.outcome
    try:
        if sealed.error is not None:
            raise sealed.error
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
        truth = baselines.with_chance(scenario_truth(run.scenario, attack.label_of), attack,
                                      task, splits, seed=seeds["train"], trainer=trainer)
        metrics = scoring.score(attack.goal, outcome.prediction, truth)
        metrics.update(attack_report(outcome.report))
        if ORACLE in run.granted:
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
            extra["artifact"] = save_gallery(Path(artifacts), job.key, run.scenario,
                                             outcome.prediction)
        except OSError as err:  # the gallery is a nicety; the score stands without it
            log.warning("could not keep gallery images in %s: %s", artifacts, err)
    return status, metrics, error, time.perf_counter() - t0, extra
