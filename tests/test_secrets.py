"""No key material reaches the results database, model cache, artifacts, leaderboard or logs."""

from __future__ import annotations

import json
import logging

import torch

from disguisebench import plan as plan_mod
from disguisebench import runner
from disguisebench import cell as cell_mod
from disguisebench.store import Store
from tests.conftest import TOY_PLAN


def key_material(defense) -> tuple[list[str], list[bytes]]:
    """Text and byte patterns of every secret attribute (those ending in `_`)."""
    texts, blobs = [], []
    for name, value in vars(defense).items():
        if not name.endswith("_") or name == "fitted_":
            continue
        if isinstance(value, torch.Tensor):
            flat = value.flatten()
            if value.is_floating_point():
                # Leading digits as JSON or a log would print them, at either precision.
                texts += [repr(float(v))[:8] for v in flat[:64] if abs(float(v)) > 1e-3]
                texts += [repr(float(v))[:8] for v in flat[:64].float() if abs(float(v)) > 1e-3]
                for dtype in (torch.float64, torch.float32):
                    raw = flat.to(dtype).numpy().tobytes()
                    blobs.append(raw[: 8 * 4])
            else:
                texts += [json.dumps(value.tolist()), str(value.tolist())]
                blobs.append(value.numpy().tobytes()[:64])
        elif isinstance(value, int) and not isinstance(value, bool):
            texts.append(str(value))
        elif isinstance(value, (bytes, bytearray)):
            texts.append(bytes(value).hex())
            blobs.append(bytes(value))
    return texts, blobs


def test_run_leaks_no_key_material(tmp_path, caplog):
    from disguisebench import leaderboard, report

    raw = {**TOY_PLAN, "levels": ["level-1", "level-2"],
           "defenses": [{"block-rmt": {"block": 4, "sigma": 10}}],
           "attacks": ["template-match", "known-pair-regression"]}
    plan = plan_mod.from_dict(raw)
    with caplog.at_level(logging.DEBUG):
        with Store(tmp_path / "r.db") as store:
            runner.run(plan, store, verbose=True)
            records = list(store.records())
            artifacts = store.artifacts_dir
            salt = store.salt
        report.write(leaderboard.aggregate(records), tmp_path / "board", artifacts=artifacts,
                     n_records=len(records))
    cell = next(c for c in cell_mod.cells(plan) if c.defense.name == "block-rmt")
    splits = cell.task.build().load(seed=cell.seeds(salt)["data"])
    # Every fit the harness makes sees the public images; the key depends on the seed alone.
    defense = cell.defense.build().fit(splits.public, seed=cell.seeds(salt)["key"],
                                       public=splits.public)
    texts, blobs = key_material(defense)
    assert len(texts) > 10 and blobs
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    assert {".safetensors", ".npz", ".json", ".png", ".html", ".md"} <= suffixes
    for path in files:
        data = path.read_bytes()
        text = data.decode("latin-1")
        for pattern in texts:
            assert pattern not in text, f"{pattern!r} found in {path.name}"
        for blob in blobs:
            assert blob not in data, f"key bytes found in {path.name}"
    for pattern in texts + [salt.hex()]:
        assert pattern not in caplog.text
    for path in files:
        if path.name != "r.db.salt":
            assert salt not in path.read_bytes() and salt.hex().encode() not in path.read_bytes()
