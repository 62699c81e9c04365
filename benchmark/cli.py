"""The `disguisebench` console script."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from benchmark.api import PluginError

log = logging.getLogger("disguisebench")


def _cmd_list(args: argparse.Namespace) -> int:
    from benchmark import registry

    for kind in ("task", "defense", "attack"):
        print(f"{kind}s:")
        for name in registry.names(kind):
            cls = registry.get(kind, name)
            extra = ""
            if kind == "attack":
                extra = f"  [goal {cls.goal}; needs {', '.join(sorted(cls.needs))}]"
            print(f"  {name:<22} {cls.summary()}{extra}")
        print()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import torch

    from benchmark import executors, leaderboard, plan as plan_mod, runner
    from benchmark.store import Store

    torch.set_num_threads(os.cpu_count() or 1)
    plan = plan_mod.load(args.plan)
    plan = plan_mod.override(plan, tasks=args.tasks, defenses=args.defenses,
                             attacks=args.attacks, levels=args.levels, seeds=args.seeds)
    n_cells = len(runner.cells(plan))
    print(f"plan {plan.name!r}: {len(plan.tasks)} task(s) x {len(plan.defenses)} defense(s) x "
          f"{len(plan.seeds)} seed(s) = {n_cells} cell(s); {len(plan.attacks)} attack(s) at "
          f"{', '.join(plan.levels)}", file=sys.stderr)
    with Store(args.db, salt_file=args.salt_file) as store:
        if args.retry_failed:
            removed = store.delete_failed()
            print(f"removed {removed} failed record(s) to retry", file=sys.stderr)
        try:
            summary = runner.run(plan, store, progress=True, verbose=args.verbose,
                                 executor=executors.make(args.workers, args.backend, args.address),
                                 cache=not args.no_cache)
        except KeyboardInterrupt:
            print(f"\ninterrupted; finished records are saved in {args.db}; run again to resume",
                  file=sys.stderr)
            return 130
        print(f"{summary.written} record(s) written, {summary.skipped} already stored, "
              f"{summary.failed} failed, {summary.not_applicable} not applicable, "
              f"in {summary.seconds:.1f} s", file=sys.stderr)
        keys = {job.key for cell in runner.cells(plan) for job in runner.jobs(plan, cell)}
        records = [r for r in store.records() if r.key in keys]
    print(leaderboard.render_text(leaderboard.aggregate(records)))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from benchmark import leaderboard
    from benchmark.store import Store

    if not os.path.exists(args.db):
        raise PluginError(f"no results database at {args.db!r}; run `disguisebench run` first")
    with Store(args.db, salt_file=args.salt_file, create_salt=False) as store:
        print(leaderboard.render_text(leaderboard.aggregate(store.records())))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from benchmark import checks

    results = checks.run_checks(args.name)
    print(tabulate([[r.check, "pass" if r.passed else "FAIL", r.reason] for r in results],
                   headers=["check", "result", "reason"]))
    ratio = checks.transform_time_ratio(args.name)
    print(f"\ntransform time over a tensor copy (2,048 3x32x32 images, not judged): {ratio:.1f}x")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    import time

    from benchmark import report
    from benchmark.store import Store

    if not os.path.exists(args.db):
        raise PluginError(f"no results database at {args.db!r}; run `disguisebench run` first")
    start = time.perf_counter()
    with Store(args.db, salt_file=args.salt_file, create_salt=False) as store:
        boards, written, n_records = report.write_from_store(store, args.out)
    entries = sum(p.suffix == ".json" for p in written)
    print(f"{len(boards)} board(s), {entries} entr{'y' if entries == 1 else 'ies'} from "
          f"{n_records} record(s) written to {args.out} in {time.perf_counter() - start:.1f} s; "
          f"open {os.path.join(args.out, 'index.html')}", file=sys.stderr)
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
    from benchmark import owner

    if args.set and not args.defense:
        raise PluginError("--set needs --defense")
    params = _parse_sets(args.set) if args.defense else None
    out = owner.disguise(args.input, args.out, args.key, args.defense, params)
    print(f"wrote {out}; keep {args.key} secret: undisguising and new images need it",
          file=sys.stderr)
    return 0


def _cmd_undisguise(args: argparse.Namespace) -> int:
    from benchmark import owner

    out = owner.undisguise(args.input, args.out, args.key, png=args.png)
    print(f"wrote {out}" + (f" and {out.with_suffix('')}/*.png" if args.png else ""),
          file=sys.stderr)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from benchmark import executors, submit

    summary, metadata = submit.submit(
        args.name, _parse_sets(args.set), plan=args.plan, db=args.db, out=args.out,
        executor=executors.make(args.workers, "local", None))
    print(f"{summary.written} record(s) written, {summary.skipped} already stored, "
          f"{summary.failed} failed in {summary.seconds:.1f} s; leaderboard in {args.out}; "
          f"fill in {metadata} and send it with your submission", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from benchmark.store import DEFAULT_DB

    parser = argparse.ArgumentParser(
        prog="disguisebench",
        description="Benchmark image disguising defenses against attacks at three threat levels.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered tasks, defenses and attacks")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("run", help="run a plan (default: plans/default.yaml)")
    p.add_argument("plan", nargs="?", help="YAML plan file")
    p.add_argument("--db", default=str(DEFAULT_DB), help="results database (default %(default)s)")
    p.add_argument("--tasks", help="comma-separated task names, replacing the plan's")
    p.add_argument("--defenses", help="comma-separated defense names, replacing the plan's")
    p.add_argument("--attacks", help="comma-separated attack names, replacing the plan's")
    p.add_argument("--levels", help="comma-separated threat levels, replacing the plan's")
    p.add_argument("--seeds", help="comma-separated seeds, replacing the plan's")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="run cells locally or on a Ray cluster")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--no-cache", action="store_true", help="retrain models even when cached")
    p.add_argument("--retry-failed", action="store_true", help="re-run records that failed")
    p.add_argument("--verbose", action="store_true", help="per-cell detail and training bars")
    p.add_argument("--salt-file", help="the results database's secret salt (default: DB.salt beside it; created with a new database)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check", help="run the conformance checks on a defense")
    p.add_argument("name", help="registered defense name (in-tree or installed)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("show", help="print the boards of a results database")
    p.add_argument("--db", default=str(DEFAULT_DB), help="results database (default %(default)s)")
    p.add_argument("--salt-file", help="the results database's secret salt (default: DB.salt beside it; created with a new database)")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("leaderboard", help="write the leaderboard folder: JSON entries, "
                                           "README.md, plots, galleries and index.html")
    p.add_argument("--db", default=str(DEFAULT_DB), help="results database (default %(default)s)")
    p.add_argument("--out", default="leaderboard", help="output folder (default %(default)s)")
    p.add_argument("--salt-file", help="the results database's secret salt (default: DB.salt beside it; created with a new database)")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser("submit", help="evaluate a defense on the submission plan and write "
                                      "its leaderboard entries")
    p.add_argument("name", help="registered defense name (in-tree or installed)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a defense hyperparameter, repeatable")
    p.add_argument("--plan", help="submission plan (default plans/submission.yaml)")
    p.add_argument("--db", default=str(DEFAULT_DB), help="results database (default %(default)s)")
    p.add_argument("--out", default="leaderboard", help="leaderboard folder (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("disguise", help="disguise an image folder or .npz under a key file")
    p.add_argument("--defense", help="defense name (needed to draw a new key)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a defense hyperparameter, repeatable (--set block=4 --set sigma=25)")
    p.add_argument("--in", dest="input", required=True, help="image folder or .npz (x, y)")
    p.add_argument("--out", required=True, help="folder for the disguised .npz")
    p.add_argument("--key", required=True,
                   help="key file: drawn and written (mode 0600) if absent, re-used if present")
    p.set_defaults(func=_cmd_disguise)

    p = sub.add_parser("undisguise", help="undo a disguise with its key file (noise stays)")
    p.add_argument("--in", dest="input", required=True, help=".npz written by disguise")
    p.add_argument("--out", required=True, help="folder for the recovered .npz")
    p.add_argument("--key", required=True, help="the key file the images were disguised with")
    p.add_argument("--png", action="store_true", help="also write the images as PNG files")
    p.set_defaults(func=_cmd_undisguise)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "verbose", False):
        log.setLevel(logging.INFO)
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
