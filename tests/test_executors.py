from __future__ import annotations

import logging

import pytest
import torch

from disguisebench import executors, runner
from disguisebench.store import Store


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers below run one thread each; match them
    yield
    torch.set_num_threads(before)


def records(store: Store) -> dict[str, tuple]:
    return {r.key: (r.status, r.metrics) for r in store.records()}


def test_process_pool_gives_the_in_process_records(tmp_path, toy_plan, one_thread):
    with Store(tmp_path / "a.db") as a, \
            Store(tmp_path / "b.db", salt_file=tmp_path / "a.db.salt") as b:
        runner.run(toy_plan, a)
        summary = runner.run(toy_plan, b, executor=executors.ProcessPool(2))
        assert summary.written == len(a)
        assert records(a) == records(b)


def test_ray_gives_the_in_process_records(tmp_path, toy_plan, one_thread):
    pytest.importorskip("ray", reason="the Ray extra is not installed: pip install '.[ray]'")
    with Store(tmp_path / "a.db") as a, \
            Store(tmp_path / "b.db", salt_file=tmp_path / "a.db.salt") as b:
        runner.run(toy_plan, a)
        runner.run(toy_plan, b, executor=executors.RayExecutor(num_cpus=2))
        assert records(a) == records(b)


def test_new_attack_reuses_cached_models(tmp_path, toy_plan):
    from disguisebench import plan as plan_mod

    with Store(tmp_path / "r.db") as store:
        runner.run(plan_mod.override(toy_plan, attacks="template-match"), store)
        runner.run(toy_plan, store)  # adds visual-reid: models come from the cache
        utility = [r for r in store.records() if r.attack is None]
        assert len(utility) == 3 and not any(r.meta["model_cached"] for r in utility)
        assert len(list((tmp_path / "models").glob("*.safetensors"))) == 3
        new = [r for r in store.records() if r.attack and r.attack["name"] == "visual-reid"]
        assert len(new) == 9


def test_cached_model_gives_the_trained_models_accuracy(tmp_path, toy_plan):
    from disguisebench import plan as plan_mod

    plan = plan_mod.override(toy_plan, attacks="template-match", levels="level-1")
    with Store(tmp_path / "a.db") as a:
        runner.run(plan, a)
        first = {r.defense["name"]: r.metrics["accuracy"] for r in a.records() if r.attack is None}
    (tmp_path / "a.db").unlink()
    with Store(tmp_path / "a.db") as b:
        runner.run(plan, b)
        again = {r.defense["name"]: (r.metrics["accuracy"], r.meta["model_cached"])
                 for r in b.records() if r.attack is None}
    assert again == {name: (acc, True) for name, acc in first.items()}


def test_corrupt_cache_file_is_detected_and_the_model_retrained(tmp_path, toy_plan, caplog):
    from disguisebench import plan as plan_mod

    plan = plan_mod.override(toy_plan, defenses="none", attacks="template-match",
                             levels="level-1")
    with Store(tmp_path / "a.db") as a:
        runner.run(plan, a)
    (cached,) = (tmp_path / "models").glob("*.safetensors")
    raw = bytearray(cached.read_bytes())
    raw[-5] ^= 0xFF  # flip bits in the tensor data; the header still parses
    cached.write_bytes(bytes(raw))
    (tmp_path / "a.db").unlink()
    with Store(tmp_path / "a.db") as b, caplog.at_level(logging.WARNING, "disguisebench"):
        runner.run(plan, b)
        (rec,) = [r for r in b.records() if r.attack is None]
    assert rec.meta["model_cached"] is False and rec.status == "ok"
    assert "does not verify for this database and upload); retraining" in caplog.text


def _server_of_a_worker(shared: dict | None) -> tuple:
    """In a pool worker: (the fork server its plugin processes come from, a probe's exit code)."""
    from multiprocessing import forkserver

    from disguisebench import sandbox

    if shared is not None:
        sandbox.join_server(shared)
    with sandbox.starting() as ctx:
        probe = ctx.Process(target=int, daemon=True)
        probe.start()
    probe.join(timeout=60)
    return forkserver._forkserver._forkserver_address, probe.exitcode


def _pool(initargs: tuple | None):
    from concurrent.futures import ProcessPoolExecutor

    from disguisebench import sandbox

    with sandbox.starting() as ctx:
        if initargs is None:
            return ProcessPoolExecutor(1, mp_context=ctx)
        return ProcessPoolExecutor(1, mp_context=ctx, initializer=sandbox.join_server,
                                   initargs=initargs)


def test_workers_start_plugin_processes_from_the_drivers_fork_server():
    from disguisebench import sandbox

    shared = sandbox.shared_server()
    assert shared["address"]
    pool = _pool((shared,))
    try:
        with sandbox.starting():
            address, code = pool.submit(_server_of_a_worker, None).result(timeout=120)
    finally:
        pool.shutdown()
    assert (address, code) == (shared["address"], 0)


def test_a_worker_that_cannot_share_the_server_starts_its_own():
    from disguisebench import sandbox

    shared = sandbox.shared_server()
    pool = _pool(None)
    try:
        with sandbox.starting():
            bogus = {"address": shared["address"] + "-gone", "authkey": shared["authkey"]}
            address, code = pool.submit(_server_of_a_worker, bogus).result(timeout=120)
    finally:
        pool.shutdown()
    assert code == 0 and address not in (None, shared["address"], bogus["address"])
