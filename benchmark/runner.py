"""The driver of a plan: every cell of (task, defense, seed) with the records it still lacks,
run by an executor (docs/design.md, "Architecture in a page"), each record written to the store
the moment it is finished; a progress bar over the records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

from disguisebench import sandbox
from disguisebench.cell import Cell, Job, cells, jobs
from disguisebench.executors import InProcess
from disguisebench.plan import Plan, spec_hash
from disguisebench.store import FAILED, NOT_APPLICABLE, Record, Store
from disguisebench.threat import level_sizes

log = logging.getLogger("disguisebench")


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
        n_known = max(plan.known())  # the largest point of a sweep
        levels = [lv for lv in plan.levels if level_sizes(
            n_train, plan.n_targets, n_known, lv) != (plan.n_targets, n_known)]
        if plan.attacks and levels:
            used = "; ".join(f"{lv}: n_targets={t}, n_known={k}" for lv, (t, k) in (
                (lv, level_sizes(n_train, plan.n_targets, n_known, lv)) for lv in levels))
            log.warning("%s has %d training images, too few for n_targets=%d and n_known=%d; "
                        "using %s", cell.task, n_train, plan.n_targets, n_known, used)

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
