from __future__ import annotations

import subprocess
import sys

import yaml

from benchmark.cli import main
from tests.conftest import TOY_PLAN


def test_list_shows_plugins_with_descriptions(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "block-rmt" in out and "Multiply every k×k block" in out
    assert "template-match" in out and "goal reidentify" in out


def test_run_then_show(tmp_path, capsys):
    plan = tmp_path / "toy.yaml"
    plan.write_text(yaml.safe_dump({**TOY_PLAN, "levels": ["level-1", "level-3"]}))
    db = tmp_path / "r.db"
    assert main(["run", str(plan), "--db", str(db), "--defenses", "pixelate"]) == 0
    out = capsys.readouterr().out
    assert "toy(epochs=3) / level-1" in out and "toy(epochs=3) / level-3" in out
    assert "pixelate" in out
    assert main(["show", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert shown.strip() == out.strip()


def test_bad_input_exits_non_zero_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", "--db",
                             str(tmp_path / "r.db"), "--defenses", "pixelat"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip().splitlines()[0]
    ] and "did you mean 'pixelate'" in result.stderr
    assert "Traceback" not in result.stderr
