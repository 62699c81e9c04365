"""The leaderboard folder: every file of it written, stale ones removed, and how to rebuild it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from disguisebench.leaderboard import Board, aggregate
from disguisebench.report.entries import _dump, board_paths, entry
from disguisebench.report.figures import gallery_board, plot_board, plot_curves
from disguisebench.report.page import REGENERATE, _html, _readme
from disguisebench.store import DEFAULT_DB, Record, Store

_GENERATED = ("entries", "plots", "gallery")


def write(boards: list[Board], out: str | Path, *, artifacts: Path | None = None,
          n_records: int = 0, regenerate: str = REGENERATE) -> list[Path]:
    """Write every file of the leaderboard under ``out``; return the paths written.

    Files under ``entries/``, ``plots/`` and ``gallery/`` that this run did not write (a defense
    no longer in the store, say) are removed, so the folder always matches the store.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    paths = [board_paths(board) for board in boards]
    galleries = []
    for board, p in zip(boards, paths):
        for row in board.rows:
            target = out / p.entries[row.defense]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_dump(entry(board, row)))
            written.append(target)
        plot_board(board, out / p.plot)
        written.append(out / p.plot)
        if board.resources():
            plot_curves(board, out / p.curves)
            written.append(out / p.curves)
        has_gallery = gallery_board(board, artifacts, out / p.gallery)
        if has_gallery:
            written.append(out / p.gallery)
        galleries.append(has_gallery)
    for name, text in (("README.md", _readme(boards, paths, galleries, n_records, regenerate)),
                       ("index.html", _html(boards, paths, galleries, n_records, regenerate))):
        (out / name).write_text(text)
        written.append(out / name)
    _remove_stale(out, set(written))
    return written


def _remove_stale(out: Path, keep: Iterable[Path]) -> None:
    keep = {p.resolve() for p in keep}
    for folder in _GENERATED:
        root = out / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_file() and path.suffix in (".json", ".png") and path.resolve() not in keep:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def shipped_plans(records: Iterable[Record]) -> list[str]:
    """The shipped plans (``plans/*.yaml``) whose digest the records carry, in file-name order,
    then one placeholder for records of any other plan."""
    from disguisebench import plan as plan_mod

    hashes = {r.meta.get("plan_hash") for r in records} - {None}
    names, known = [], set()
    for path in sorted(plan_mod.DEFAULT_PLAN.parent.glob("*.yaml")):
        try:
            digest = plan_mod.load(path).digest()
        except Exception:  # noqa: BLE001 (a plan needing an uninstalled plugin names nothing)
            continue
        if digest in hashes:
            names.append(f"plans/{path.name}")
            known.add(digest)
    if hashes - known:
        names.append("YOUR-PLAN.yaml")
    return names


def regenerate_command(plans: list[str], out: str | Path, db: str | Path | None = None) -> str:
    """The commands that rebuild a leaderboard folder from the plans its records came from
    (naming the database unless it is the default one)."""
    where = "" if db is None or Path(db) == DEFAULT_DB else f" --db {db}"
    runs = [f"disguisebench run {p}{where}" for p in plans] or [f"disguisebench run PLAN.yaml{where}"]
    return " && ".join([*runs, f"disguisebench leaderboard{where} --out {out}"])


def write_from_store(store: Store, out: str | Path, *, plan: str | None = None
                     ) -> tuple[list[Board], list[Path], int]:
    """Aggregate every record of ``store`` and write the leaderboard under ``out``; return the
    boards, the paths written and the number of records. The page names ``plan``, else the
    shipped plans the records came from."""
    records = list(store.records())
    boards = aggregate(records)
    regenerate = regenerate_command([plan] if plan else shipped_plans(records), out, store.path)
    return boards, write(boards, out, artifacts=store.artifacts_dir, n_records=len(records),
                         regenerate=regenerate), len(records)
