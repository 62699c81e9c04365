from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from disguisebench.cli import main
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
    result = subprocess.run([sys.executable, "-m", "disguisebench.cli", "run", "--db",
                             str(tmp_path / "r.db"), "--defenses", "pixelat"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip().splitlines()[0]
    ] and "did you mean 'pixelate'" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ the first hour (issue 20)

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from disguisebench import cli, registry  # noqa: E402
from disguisebench.store import Store  # noqa: E402
from tests.test_runner import Exploding  # noqa: E402

SMALL = {**TOY_PLAN, "levels": ["level-1"], "attacks": ["template-match"],
         "tasks": [{"toy": {"epochs": 1}}]}


def _plan(tmp_path, **changes) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({**SMALL, **changes}))
    return str(path)


def test_help_version_and_parsing_never_import_torch():
    code = ("import sys\n"
            "from disguisebench import cli\n"
            "cli.build_parser().parse_args(['run', 'p.yaml', '--levels', 'level-1', '--debug'])\n"
            "for argv in (['--help'], ['--version'], ['run', '--help'], ['list', '--help']):\n"
            "    try:\n"
            "        cli.main(argv)\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (argv, e.code)\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert "disguisebench 0.1.0" in result.stdout


def test_debug_and_verbose_are_accepted_after_the_command(tmp_path, capsys):
    missing = str(tmp_path / "none.db")
    assert main(["show", "--db", missing]) == 2
    with pytest.raises(cli.PluginError):
        main(["show", "--db", missing, "--debug"])
    with pytest.raises(cli.PluginError):
        main(["--debug", "show", "--db", missing])
    assert main(["list", "--verbose"]) == 0 and main(["--verbose", "list"]) == 0


def test_run_help_has_examples_levels_and_the_default_plan(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "disguisebench run plans/attacks.yaml" in text
    assert "level-1, level-2, level-3" in text and "plans/default.yaml" in text
    assert "--debug" in text and "--verbose" in text and "--quiet" in text
    for command in ("list", "show", "leaderboard", "disguise", "undisguise", "check", "submit"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out, command


def test_cli_constants_match_the_library():
    from disguisebench.api import LEVELS
    from disguisebench.store import DEFAULT_DB

    assert cli.LEVEL_NAMES == tuple(LEVELS) and cli.DEFAULT_DB == str(DEFAULT_DB)


def test_list_long_and_list_name_show_parameters_and_defaults(capsys):
    assert main(["list", "--long"]) == 0
    out = capsys.readouterr().out
    assert "block=4" in out.replace(" ", "") or "block=" in out
    # a summary wrapped over two lines in the source is shown whole
    toy = next(line for line in out.splitlines() if line.strip().startswith("toy "))
    assert toy.rstrip().endswith(".")
    assert main(["list", "block-rmt"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("defense block-rmt")
    params = registry.create("defense", "block-rmt").get_params()
    for name, default in params.items():
        assert any(line.split()[:2] == [name, repr(default)] for line in out.splitlines()), name
    assert main(["list", "template-match"]) == 0
    assert "goal reidentify" in capsys.readouterr().out
    assert main(["list", "blokc-rmt"]) == 2
    assert "did you mean 'block-rmt'?" in capsys.readouterr().err


def test_run_explains_its_boards_and_the_next_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the bar's line is cut to the terminal's width
    db = tmp_path / "res" / "r.db"
    assert main(["run", _plan(tmp_path), "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert "How to read these boards" in captured.out and "level-2" in captured.out
    assert "privacy" in captured.out and "utility" in captured.out
    assert f"disguisebench leaderboard --db {db} --out {tmp_path / 'res' / 'leaderboard'}" \
        in captured.err
    # the progress bar counts records and names what runs
    assert "records 0/6 |" in captured.err and "training none on toy(epochs=1), seed 0" in captured.err
    assert main(["run", _plan(tmp_path), "--db", str(db), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "How to read" not in quiet.out and "pixelate" in quiet.out


def test_a_failed_record_exits_1_and_says_how_to_see_it(tmp_path, capsys):
    db = tmp_path / "r.db"
    with registry.temporary("exploding-defense", Exploding):
        code = main(["run", _plan(tmp_path, defenses=["exploding-defense"]), "--db", str(db)])
        err = capsys.readouterr().err
        assert code == 1
        # Its training failed; the attack on it is refused (a break), not failed.
        assert f"1 record(s) failed: `disguisebench show --failed --db {db}`" in err
        assert "--retry-failed" in err
        assert main(["show", "--failed", "--db", str(db)]) == 1
        out = capsys.readouterr().out
        assert "exploding-defense / seed 0 / training: DefenseFault:" in out
        assert "RuntimeError: boom in fit" in out and "1 failed record(s)" in out


def test_missing_dataset_or_oversized_splits_stop_before_any_training(tmp_path, capsys):
    db = tmp_path / "r.db"
    folder = str(tmp_path / "no-such-folder")
    code = main(["run", _plan(tmp_path, tasks=[{"image-folder": {"data_dir": folder}}]),
                 "--db", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: image-folder: dataset not found in ")
    from tests.test_datasets import write_png_tree

    write_png_tree(tmp_path / "photos", {"a": 5, "b": 5})
    too_many = {"data_dir": str(tmp_path / "photos"), "size": 8, "n_train": 5000}
    code = main(["run", _plan(tmp_path, tasks=[{"image-folder": too_many}]), "--db", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "exceeds" in err[-1]
    with Store(db) as store:
        assert list(store.records()) == []
    assert not (tmp_path / "models").exists()


def test_leaderboard_writes_beside_the_database_unless_told(tmp_path, capsys, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "leaderboard").mkdir(parents=True)
    (checkout / "leaderboard" / "README.md").write_text("published")
    monkeypatch.chdir(checkout)
    db = Path("results") / "disguisebench.db"
    assert main(["run", _plan(tmp_path), "--quiet"]) == 0
    assert main(["leaderboard"]) == 0
    assert "written to results/leaderboard" in capsys.readouterr().err
    assert (checkout / "results" / "leaderboard" / "index.html").is_file()
    assert (checkout / "leaderboard" / "README.md").read_text() == "published"
    assert sorted(os.listdir(checkout / "leaderboard")) == ["README.md"]
    # the footer names the plan the records came from, and the folder it was written to
    page = (checkout / "results" / "leaderboard" / "index.html").read_text()
    assert "disguisebench run YOUR-PLAN.yaml &amp;&amp; disguisebench leaderboard --out " \
           "results/leaderboard" in page
    assert main(["leaderboard", "--db", str(db), "--out", "mine", "--plan-name",
                 "plans/my.yaml"]) == 0
    assert "disguisebench run plans/my.yaml" in (checkout / "mine" / "index.html").read_text()
    # another database is named in both commands, so the page rebuilds from what it came from
    moved = Path("published") / "records.db"
    moved.parent.mkdir()
    shutil.copy(db, moved)
    assert main(["leaderboard", "--db", str(moved), "--out", "pub", "--plan-name",
                 "plans/my.yaml"]) == 0
    assert ("disguisebench run plans/my.yaml --db published/records.db &amp;&amp; disguisebench "
            "leaderboard --db published/records.db --out pub") in (checkout / "pub" / "index.html"
                                                                     ).read_text()


def test_shipped_plans_are_named_from_the_records_plan_hash():
    from disguisebench import plan as plan_mod, report
    from tests import _records as R

    rec = R.utility(R.spec("defense", "none"), 0.9)
    rec.meta["plan_hash"] = plan_mod.load(plan_mod.DEFAULT_PLAN).digest()
    assert report.shipped_plans([rec]) == ["plans/default.yaml"]
    rec.meta["plan_hash"] = "something else"
    assert report.shipped_plans([rec]) == ["YOUR-PLAN.yaml"]


def test_list_reads_plugin_sources_without_torch_and_agrees_with_the_registry():
    from disguisebench import catalog

    by_source = {(e.kind, e.name): e for e in catalog.read_sources()}
    by_import = {(kind, name): catalog.from_class(kind, name, registry.get(kind, name),
                                                  registry.origin(kind, name))
                 for kind in catalog.PACKAGES for name in registry.names(kind)}
    assert by_source == by_import
    code = ("import sys\nfrom disguisebench import cli\n"
            "assert cli.main(['list', '--long']) == 0 and cli.main(['list', 'block-rmt']) == 0\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_run_uses_every_core_unless_omp_num_threads_says_otherwise(tmp_path, monkeypatch):
    import torch

    from disguisebench.store import Store

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert main(["run", _plan(tmp_path), "--db", str(tmp_path / "r.db"), "--quiet"]) == 0
        with Store(tmp_path / "r.db") as store:
            assert {r.meta["threads"] for r in store.records()} == {1}
    finally:
        torch.set_num_threads(before)
