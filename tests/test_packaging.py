"""A regular install: build the wheel, install it into an empty folder, and use it from elsewhere.

The wheel must hold everything a run needs (the plans and the page template as package data) and
install nothing at the top of site-packages but ``disguisebench``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result


def test_wheel_installs_and_runs_a_plan_without_the_source_tree(tmp_path):
    # Build from a copy, so the checkout gets no build/ or egg-info; no build isolation, so
    # setuptools comes from this environment instead of a package index.
    source = tmp_path / "source"
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file() and not name.startswith(("leaderboard/", "results/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(dist), str(source)])
    (wheel,) = dist.glob("disguisebench-*.whl")
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
          str(wheel)])
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == [
        "bin", "disguisebench"]
    installed = target / "disguisebench"
    assert (installed / "plans" / "default.yaml").is_file()
    assert (installed / "templates" / "leaderboard.html.j2").is_file()
    assert (installed / "defenses" / "block_rmt.py").is_file()

    # Elsewhere: the installed copy only (the source tree is neither the cwd nor on the path).
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = _run([sys.executable, "-c", "import disguisebench, disguisebench.defenses.blur as b; "
                  "from disguisebench import plan; print(disguisebench.__file__); "
                  "print(b.__file__); print(plan.load().name)"], cwd=work, env=env)
    module, plugin, default = where.stdout.split()
    assert module.startswith(str(target)) and plugin.startswith(str(target))
    assert default == "default"

    script = [sys.executable, str(target / "bin" / "disguisebench")]
    listed = _run([*script, "list"], cwd=work, env=env).stdout
    assert "block-rmt" in listed and "template-match" in listed
    plan = work / "tiny.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "tiny", "seeds": [0], "n_targets": 10, "n_known": 10, "levels": ["level-1"],
        "tasks": [{"toy": {"epochs": 1, "n_train": 60, "n_test": 30, "n_public": 30}}],
        "defenses": ["none", "pixelate"], "attacks": ["template-match"]}))
    ran = _run([*script, "run", str(plan), "--quiet"], cwd=work, env=env)
    assert "pixelate" in ran.stdout
    _run([*script, "leaderboard"], cwd=work, env=env)
    assert (work / "results" / "leaderboard" / "index.html").is_file()


def test_no_code_imports_the_folder_names():
    # In a checkout `benchmark`, `defenses`, ... are importable as folders too; code that used
    # those names would load every module twice, under two names.
    import re

    old = re.compile(r"^\s*(from|import) (benchmark|defenses|attacks|tasks|plans)\b", re.M)
    files = _run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT).stdout.split()
    bad = [f"{name}:{text[:m.start()].count(chr(10)) + 1}" for name in files
           if (ROOT / name).is_file()
           for text in [(ROOT / name).read_text()] for m in old.finditer(text)]
    assert bad == []
