"""Where cells run: in this process, in a local process pool, or on a Ray cluster.

A cell (task, defense, seed) is independent of every other, so cells are the unit of
parallelism. Workers return the records of a cell; the driver alone writes the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from disguisebench import sandbox
from disguisebench.cell import Cell, Job, run_cell
from disguisebench.api import PluginError
from disguisebench.plan import Plan
from disguisebench.store import Record

log = logging.getLogger("disguisebench")

Work = list[tuple[Cell, list[Job]]]
Emit = Callable[[Record], None]
Done = Callable[[Cell], None]


def cell_records(plan: Plan, cell: Cell, todo: list[Job],
                 options: dict[str, Any], threads: int | None = None) -> list[Record]:
    """Run one cell in a worker and return its records."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    records: list[Record] = []
    run_cell(plan, cell, todo, records.append, **options)
    return records


class InProcess:
    """Cells one after another in this process; each record is stored the moment it is made."""

    def run(self, plan: Plan, work: Work, emit: Emit, done: Done, options: dict[str, Any]) -> None:
        for cell, todo in work:
            run_cell(plan, cell, todo, emit, **options)
            done(cell)


class ProcessPool:
    """Cells in ``workers`` local processes, the CPU threads shared out among them."""

    def __init__(self, workers: int) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise PluginError(f"--workers must be an integer >= 1, got {workers!r}")
        self.workers = workers

    def run(self, plan: Plan, work: Work, emit: Emit, done: Done, options: dict[str, Any]) -> None:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        # Workers come from the plugin processes' fork server, which has imported torch and the
        # plugins once and never started a thread pool: they start in milliseconds, where a
        # spawned interpreter spends seconds importing (forking this process, which may hold
        # torch's thread pools, could deadlock).
        pool = ProcessPoolExecutor(self.workers, mp_context=sandbox.context(),
                                   initializer=sandbox.join_server,
                                   initargs=(sandbox.shared_server(),))
        try:
            with sandbox.starting():  # submitting starts the workers
                futures = {pool.submit(cell_records, plan, cell, todo, options, threads): cell
                           for cell, todo in work}
            for future in as_completed(futures):
                for record in future.result():
                    emit(record)
                done(futures[future])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


class RayExecutor:
    """Cells as Ray tasks on an existing cluster (``address``) or a local Ray instance.

    Every node needs DisguiseBench and its plugins installed; records travel back to the driver.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 cpus_per_cell: int = 1) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_cell = cpus_per_cell

    def run(self, plan: Plan, work: Work, emit: Emit, done: Done, options: dict[str, Any]) -> None:
        try:
            import ray
        except ImportError:
            raise PluginError("the Ray backend needs ray: pip install 'disguisebench[ray]'") from None
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is not None:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.num_cpus
            ray.init(**kwargs)
        remote = ray.remote(num_cpus=self.cpus_per_cell)(cell_records)
        pending = {remote.remote(plan, cell, todo, options, self.cpus_per_cell): cell
                   for cell, todo in work}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ready[0])
                for record in ray.get(ready[0]):
                    emit(record)
                done(cell)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()


def make(workers: int = 1, backend: str = "local", address: str | None = None) -> Any:
    """The executor the CLI options describe."""
    if backend == "ray":
        return RayExecutor(address=address)
    if backend != "local":
        raise PluginError(f"--backend {backend!r} is not one of 'local', 'ray'")
    return InProcess() if workers == 1 else ProcessPool(workers)
