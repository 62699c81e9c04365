"""The `disguisebench` console script.

Only what a command needs is imported, inside the command: `--help`, `--version` and parsing
never import torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from disguisebench import __version__
from disguisebench.errors import PluginError

log = logging.getLogger("disguisebench")

# Kept in step with benchmark.api.LEVELS by tests/test_cli.py (api imports torch; help must not).
LEVEL_NAMES = ("level-1", "level-2", "level-3")
DEFAULT_DB = str(Path("results") / "disguisebench.db")
DEFAULT_PLAN = "plans/default.yaml"

LEGEND = """\
How to read these boards:
  advantage  how far one attack beats guessing: (success - chance) / (1 - chance), 0 to 1
  privacy    1 - the largest mean advantage of any attack on that defense at that level:
             1 means no attack beat chance, 0 means some attack fully succeeded
  utility    accuracy of the model trained on disguised images / accuracy of the `none` model
  level-1    the cloud holds the disguised upload, the model trained on it, the defense's
             algorithm (not the key), public data and a gallery of plaintext candidates
  level-2    level 1 plus known (plaintext, disguised) pairs of the owner's images
  level-3    level 2 plus an oracle that disguises any image it chooses under the owner's key
  failed / n/a  attacks that raised / that need more than the level grants (never in privacy)
  `none` (no disguise) is the baseline: privacy 0 and utility 1 by construction; a useful
  defense raises privacy while keeping utility close to 1. * marks the Pareto front."""


# ---------------------------------------------------------------------------------- list


def _describe_plugin(entry: Any) -> str:
    lines = [f"{entry.kind} {entry.name}  ({entry.origin})", "",
             entry.doc.split("\nArgs:")[0].strip(), ""]
    if entry.kind == "attack":
        lines += [f"goal {entry.goal}; needs {', '.join(entry.needs)}", ""]
    params = entry.described()
    if params:
        width = max(len(p) for p, _, _ in params)
        dwidth = min(24, max(len(d) for _, d, _ in params))
        lines.append("parameters (set them in a plan, or with --set NAME=VALUE for disguise):")
        for param, default, text in params:
            head = f"  {param:<{width}}  {default:<{dwidth}}  "
            wrapped = textwrap.wrap(text, width=max(40, 100 - len(head))) or [""]
            lines.append(head + wrapped[0])
            lines += [" " * len(head) + more for more in wrapped[1:]]
    else:
        lines.append("parameters: none")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    import difflib

    from disguisebench import catalog

    entries = catalog.source_entries()
    if entries is None:
        from disguisebench import registry

        entries = [catalog.from_class(kind, name, registry.get(kind, name),
                                      registry.origin(kind, name))
                   for kind in catalog.PACKAGES for name in registry.names(kind)]
    if args.name:
        found = [e for e in entries if e.name == args.name]
        if not found:
            close = difflib.get_close_matches(args.name, [e.name for e in entries], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; `disguisebench list` names them all"
            raise PluginError(f"no task, defense or attack named {args.name!r}{hint}")
        print("\n\n".join(_describe_plugin(e) for e in found))
        return 0
    for kind in ("task", "defense", "attack"):
        print(f"{kind}s:")
        for e in (e for e in entries if e.kind == kind):
            extra = f"  [goal {e.goal}; needs {', '.join(e.needs)}]" if kind == "attack" else ""
            print(f"  {e.name:<22} {e.summary()}{extra}")
            if args.long:
                params = ", ".join(f"{p}={d}" for p, d in e.params) or "no parameters"
                for line in textwrap.wrap(params, width=96):
                    print(f"  {'':<22} {line}")
        print()
    print("`disguisebench list NAME` shows one plugin's description and parameters; "
          "`list --long` every plugin's defaults.")
    return 0


# ---------------------------------------------------------------------------------- run


def _failed_hint(n_failed: int, db: str, plan_arg: str | None) -> str:
    again = "disguisebench run" + (f" {plan_arg}" if plan_arg else "") + \
        (f" --db {db}" if db != DEFAULT_DB else "")
    return (f"{n_failed} record(s) failed: `disguisebench show --failed"
            f"{f' --db {db}' if db != DEFAULT_DB else ''}` lists them with their errors; "
            f"`{again} --retry-failed` runs them again")


def _next_steps(db: str) -> str:
    db_opt = f" --db {db}" if db != DEFAULT_DB else ""
    out = Path(db).parent / "leaderboard"
    return ("next:\n"
            f"  disguisebench show{db_opt}                   # these boards again\n"
            f"  disguisebench leaderboard{db_opt} --out {out}   # a page with plots and galleries\n"
            f"  disguisebench run plans/attacks.yaml{db_opt}   # every defense, every attack")


def _cmd_run(args: argparse.Namespace) -> int:
    import torch

    from disguisebench import cell as cell_mod
    from disguisebench import executors, leaderboard, plan as plan_mod, runner
    from disguisebench.store import FAILED, Store

    chosen = os.environ.get("OMP_NUM_THREADS", "")  # every core, unless the user chose a count
    torch.set_num_threads(int(chosen) if chosen.isdigit() and int(chosen) > 0
                          else os.cpu_count() or 1)
    plan = plan_mod.load(args.plan)
    plan = plan_mod.override(plan, tasks=args.tasks, defenses=args.defenses,
                             attacks=args.attacks, levels=args.levels, seeds=args.seeds)
    todo = cell_mod.cells(plan)
    n_records = sum(len(cell_mod.jobs(plan, cell)) for cell in todo)
    if not args.quiet:
        print(f"plan {plan.name!r}: {len(plan.tasks)} task(s) x {len(plan.defenses)} defense(s) x "
              f"{len(plan.seeds)} seed(s) = {len(todo)} cell(s) of {n_records} record(s); "
              f"{len(plan.attacks)} attack(s) at {', '.join(plan.levels)}", file=sys.stderr)
    with Store(args.db, salt_file=args.salt_file) as store:
        if args.retry_failed:
            removed = store.delete_failed()
            if not args.quiet:
                print(f"removed {removed} failed record(s) to retry", file=sys.stderr)
        try:
            summary = runner.run(plan, store, progress=not args.quiet, verbose=args.verbose,
                                 executor=executors.make(args.workers, args.backend, args.address),
                                 cache=not args.no_cache)
        except KeyboardInterrupt:
            print(f"\ninterrupted; finished records are saved in {args.db}; run again to resume",
                  file=sys.stderr)
            return 130
        if not args.quiet:
            print(f"{summary.written} record(s) written, {summary.skipped} already stored, "
                  f"{summary.failed} failed, {summary.not_applicable} not applicable, "
                  f"in {summary.seconds:.1f} s", file=sys.stderr)
        keys = {job.key for cell in todo for job in cell_mod.jobs(plan, cell)}
        records = [r for r in store.records() if r.key in keys]
    print(leaderboard.render_text(leaderboard.aggregate(records)))
    if not args.quiet:
        print("\n" + LEGEND)
        print("\n" + _next_steps(args.db), file=sys.stderr)
    failed = sum(r.status == FAILED for r in records)
    if failed:
        print(_failed_hint(failed, args.db, args.plan), file=sys.stderr)
        return 1
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from disguisebench import leaderboard
    from disguisebench.store import FAILED, Store

    if not os.path.exists(args.db):
        raise PluginError(f"no results database at {args.db!r}; run `disguisebench run` first")
    with Store(args.db, salt_file=args.salt_file, create_salt=False) as store:
        records = list(store.records())
    if args.failed:
        failed = [r for r in records if r.status == FAILED]
        for r in failed:
            what = f"{r.attack_name} at {r.level}" if r.attack_name else "training"
            print(f"{r.task_name} / {r.defense['name']} / seed {r.seed} / {what}: {r.error}")
        print(f"{len(failed)} failed record(s) in {args.db}"
              + ("; `disguisebench run PLAN --retry-failed` runs them again" if failed else ""))
        return 1 if failed else 0
    if args.profile:
        from disguisebench import timing

        print(timing.render(timing.cell_times(records)))
        return 0
    print(leaderboard.render_text(leaderboard.aggregate(records)))
    if records and not args.quiet:
        print("\n" + LEGEND)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from disguisebench import checks

    results = checks.run_checks(args.name)
    print(tabulate([[r.check, "pass" if r.passed else "FAIL", r.reason] for r in results],
                   headers=["check", "result", "reason"]))
    ratio = checks.transform_time_ratio(args.name)
    print(f"\ntransform time over a tensor copy (2,048 3x32x32 images, not judged): {ratio:.1f}x")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _default_out(args: argparse.Namespace) -> str:
    """Boards go next to the database unless --out names a folder: the committed leaderboard/ is
    only ever written when asked for by name."""
    return args.out or str(Path(args.db).parent / "leaderboard")


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    import time

    from disguisebench import report
    from disguisebench.store import Store

    if not os.path.exists(args.db):
        raise PluginError(f"no results database at {args.db!r}; run `disguisebench run` first")
    out = _default_out(args)
    start = time.perf_counter()
    with Store(args.db, salt_file=args.salt_file, create_salt=False) as store:
        boards, written, n_records = report.write_from_store(store, out,
                                                             plan=args.plan_name)
    entries = sum(p.suffix == ".json" for p in written)
    print(f"{len(boards)} board(s), {entries} entr{'y' if entries == 1 else 'ies'} from "
          f"{n_records} record(s) written to {out} in {time.perf_counter() - start:.1f} s; "
          f"open {os.path.join(out, 'index.html')}", file=sys.stderr)
    return 0


def _parse_sets(pairs: Sequence[str] | None) -> dict:
    import yaml

    params = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise PluginError(f"--set expects NAME=VALUE, got {pair!r}")
        params[name] = yaml.safe_load(value)
    return params


def _cmd_disguise(args: argparse.Namespace) -> int:
    from disguisebench import owner

    if args.set and not args.defense:
        raise PluginError("--set needs --defense")
    params = _parse_sets(args.set) if args.defense else None
    out = owner.disguise(args.input, args.out, args.key, args.defense, params)
    print(f"wrote {out}; keep {args.key} secret: undisguising and new images need it",
          file=sys.stderr)
    return 0


def _cmd_undisguise(args: argparse.Namespace) -> int:
    from disguisebench import owner

    out = owner.undisguise(args.input, args.out, args.key, png=args.png)
    print(f"wrote {out}" + (f" and the images under {out.with_suffix('')}/" if args.png else ""),
          file=sys.stderr)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from disguisebench import executors, submit

    out = _default_out(args)
    summary, metadata = submit.submit(
        args.name, _parse_sets(args.set), plan=args.plan, db=args.db, out=out,
        progress=not args.quiet, executor=executors.make(args.workers, "local", None))
    print(f"{summary.written} record(s) written, {summary.skipped} already stored, "
          f"{summary.failed} failed in {summary.seconds:.1f} s; leaderboard in {out}; "
          f"fill in {metadata} and send it with your submission", file=sys.stderr)
    return 1 if summary.failed else 0


# ---------------------------------------------------------------------------------- parser


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after the command's name. SUPPRESS keeps a
    subcommand that does not see the option from resetting what the main parser set."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logging")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log every record as it is stored, and training progress")
    return common


# A subcommand's parser: add(name, help, epilog, description=None), with the common options.
_Add = Callable[..., argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="disguisebench", parents=[common], formatter_class=raw,
        description="Benchmark image disguising defenses against attacks at three threat levels.",
        epilog=_examples(
            "disguisebench list                    # tasks, defenses, attacks",
            "disguisebench run                     # the default plan, 2-16 min on 2 CPU cores",
            "disguisebench show                    # its boards again",
            "disguisebench leaderboard             # HTML page under results/leaderboard/",
            "disguisebench COMMAND --help          # a command's options and examples"))
    parser.add_argument("--version", action="version", version=f"disguisebench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, epilog: str, description: str | None = None
            ) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help, epilog=epilog,
                              parents=[common], formatter_class=raw)

    for add_command in (_add_list, _add_run, _add_check, _add_show, _add_leaderboard,
                        _add_submit, _add_disguise, _add_undisguise):
        add_command(add)
    return parser


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help="results database (default %(default)s)")


def _add_salt_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--salt-file", help="the results database's secret salt (default: DB.salt "
                                       "beside it, created with a new database)")


def _add_list(add: _Add) -> None:
    p = add("list", "list registered tasks, defenses and attacks", _examples(
        "disguisebench list                # one line each",
        "disguisebench list --long         # with every parameter's default",
        "disguisebench list block-rmt      # one plugin: description, parameters, defaults"))
    p.add_argument("name", nargs="?", help="a task, defense or attack to describe in full")
    p.add_argument("--long", action="store_true", help="every plugin's parameters and defaults")
    p.set_defaults(func=_cmd_list)


def _add_run(add: _Add) -> None:
    levels = ", ".join(LEVEL_NAMES)
    p = add("run", f"run a plan (default: {DEFAULT_PLAN})", _examples(
        f"disguisebench run                         # {DEFAULT_PLAN}: 3 defenses, 2-16 min on 2 cores",
        "disguisebench run plans/attacks.yaml      # every defense against every attack",
        "disguisebench run --defenses block-rmt,pixelate --levels level-1",
        "disguisebench run my-plan.yaml --db results/mine.db --workers 2",
        "disguisebench run --retry-failed          # re-run records that failed",
    ) + f"\n\nthreat levels: {levels}; `disguisebench list` names tasks, defenses and attacks.\n"
        "Records already in the database are skipped, so a stopped run resumes. The exit status\n"
        "is 1 when any record of the plan failed, 2 on bad input.",
        description="Run a plan: every defense on every task and seed, every attack at every "
                    "level; print one board per (task, level).")
    p.add_argument("plan", nargs="?", help=f"YAML plan file (default {DEFAULT_PLAN})")
    _add_db(p)
    p.add_argument("--tasks", metavar="NAMES", help="comma-separated task names, replacing the plan's")
    p.add_argument("--defenses", metavar="NAMES",
                   help="comma-separated defense names, replacing the plan's (none is always added)")
    p.add_argument("--attacks", metavar="NAMES",
                   help="comma-separated attack names, replacing the plan's")
    p.add_argument("--levels", metavar="LEVELS",
                   help=f"comma-separated threat levels out of {levels}, replacing the plan's")
    p.add_argument("--seeds", metavar="SEEDS", help="comma-separated integer seeds, replacing the plan's")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="run cells locally or on a Ray cluster (default local)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--no-cache", action="store_true", help="retrain models even when cached")
    p.add_argument("--retry-failed", action="store_true", help="re-run records that failed")
    _add_salt_file(p)
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, legend or hints: only the boards and errors")
    p.set_defaults(func=_cmd_run)


def _add_check(add: _Add) -> None:
    p = add("check", "run the conformance checks on a defense", _examples(
        "disguisebench check block-rmt",
        "disguisebench check pixel-shuffle     # an installed external defense"))
    p.add_argument("name", help="registered defense name (in-tree or installed)")
    p.set_defaults(func=_cmd_check)


def _add_show(add: _Add) -> None:
    p = add("show", "print the boards of a results database", _examples(
        "disguisebench show",
        "disguisebench show --db results/mine.db",
        "disguisebench show --failed           # failed records with their errors",
        "disguisebench show --profile          # where each cell's time went"))
    _add_db(p)
    p.add_argument("--failed", action="store_true",
                   help="list failed records with their errors instead (exit 1 if any)")
    p.add_argument("--profile", action="store_true",
                   help="each cell's seconds instead: the owner's training and each attack's "
                        "share (an attack computed once for several levels counts once)")
    p.add_argument("--quiet", action="store_true", help="the boards without the legend")
    _add_salt_file(p)
    p.set_defaults(func=_cmd_show)


def _add_leaderboard(add: _Add) -> None:
    p = add("leaderboard", "write a leaderboard folder: JSON entries, README.md, plots, "
                           "galleries and index.html", _examples(
        "disguisebench leaderboard                      # into results/leaderboard/",
        "disguisebench leaderboard --db results/mine.db # into results/leaderboard/ too",
        "disguisebench leaderboard --out leaderboard --plan-name plans/attacks.yaml"
        "   # publish (maintainers)"),
        description="Write a leaderboard folder from a results database. By default it goes "
                    "next to the database (results/leaderboard/); the published leaderboard/ "
                    "of the repository is only written when --out names it. Files a previous "
                    "write left under entries/, plots/ and gallery/ that the database no longer "
                    "holds are removed from the output folder.")
    _add_db(p)
    p.add_argument("--out", help="output folder (default: leaderboard/ beside the database)")
    p.add_argument("--plan-name", metavar="TEXT",
                   help="the plan the records came from, as the page's footer should name it "
                        "(default: the plan names stored with the records)")
    _add_salt_file(p)
    p.set_defaults(func=_cmd_leaderboard)


def _add_submit(add: _Add) -> None:
    p = add("submit", "evaluate a defense on the submission plan and write its leaderboard "
                      "entries", _examples(
        "disguisebench submit pixel-shuffle --set strength=2",
        "disguisebench submit my-defense --plan plans/default.yaml --workers 2   # iterate faster"))
    p.add_argument("name", help="registered defense name (in-tree or installed)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a defense hyperparameter, repeatable (`disguisebench list NAME` names them)")
    p.add_argument("--plan", help="submission plan (default plans/submission.yaml)")
    _add_db(p)
    p.add_argument("--out", help="leaderboard folder (default: leaderboard/ beside the database)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_submit)


def _add_disguise(add: _Add) -> None:
    p = add("disguise", "disguise an image folder or .npz under a key file", _examples(
        "disguisebench disguise --defense block-rmt --set block=4 --in train/ --out upload/ "
        "--key owner.key",
        "disguisebench disguise --in test.npz --out upload/ --key owner.key   # re-uses the key"
    ) + "\n\n--in: a folder of PNG/JPEG images of one size (sub-folders included, names kept) or an\n"
        ".npz with x (N,H,W | N,C,H,W | N,H,W,C; uint8 or floats in [0, 1]) and optionally y.\n"
        "Defenses and their parameters: `disguisebench list --long`, `disguisebench list NAME`.")
    p.add_argument("--defense", help="defense name (needed to draw a new key)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a defense hyperparameter, repeatable (--set block=4 --set sigma=25)")
    p.add_argument("--in", dest="input", required=True, help="image folder or .npz (x, y)")
    p.add_argument("--out", required=True, help="folder for the disguised .npz")
    p.add_argument("--key", required=True,
                   help="key file: drawn and written (mode 0600) if absent, re-used if present")
    p.set_defaults(func=_cmd_disguise)


def _add_undisguise(add: _Add) -> None:
    p = add("undisguise", "undo a disguise with its key file (noise stays)", _examples(
        "disguisebench undisguise --in upload/train.npz --out recovered/ --key owner.key --png"
    ) + "\n\nA key other than the one the images were disguised with is refused.")
    p.add_argument("--in", dest="input", required=True, help=".npz written by disguise")
    p.add_argument("--out", required=True, help="folder for the recovered .npz")
    p.add_argument("--key", required=True, help="the key file the images were disguised with")
    p.add_argument("--png", action="store_true",
                   help="also write the images as PNG files, under their original names")
    p.set_defaults(func=_cmd_undisguise)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO if args.verbose else logging.NOTSET)
    try:
        return args.func(args)
    except PluginError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
