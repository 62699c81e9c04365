"""A defense written outside the repository is installed, checked, submitted and shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "external-defense"


def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "disguisebench.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_external_defense_is_installed_checked_submitted_and_shown(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(EXAMPLE)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}

    listed = cli(["list"], env)
    assert listed.returncode == 0 and "pixel-shuffle" in listed.stdout

    checked = cli(["check", "pixel-shuffle"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "10 passed, 0 failed" in checked.stdout

    plan = tmp_path / "submission.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "submission-test", "seeds": [0], "n_targets": 20, "n_known": 20,
        "levels": ["level-1"], "tasks": [{"toy": {"epochs": 2}}], "defenses": ["none"],
        "attacks": ["template-match"]}))
    out, db = tmp_path / "board", tmp_path / "r.db"
    submitted = cli(["submit", "pixel-shuffle", "--set", "scope=channel", "--plan", str(plan),
                     "--db", str(db), "--out", str(out)], env)
    assert submitted.returncode == 0, submitted.stderr
    entry = json.loads(next(out.glob("entries/*/level-1/pixel-shuffle*.json")).read_text())
    assert entry["defense"]["spec"] == {"name": "pixel-shuffle", "params": {"scope": "channel"}}
    # one attack: privacy is one minus its advantage
    advantage = entry["attacks"]["template-match"]["advantage"]
    assert entry["level"] == "level-1" and abs(entry["privacy"]["value"] - (1 - advantage)) < 1e-5
    meta = yaml.safe_load(next((out / "submissions").glob("pixel-shuffle*.yaml")).read_text())
    assert meta["defense"] == "pixel-shuffle" and meta["paper"] == ""
    assert "pixel-shuffle" in (out / "index.html").read_text()

    shown = cli(["show", "--db", str(db)], env)
    assert shown.returncode == 0 and "pixel-shuffle(scope=channel)" in shown.stdout
