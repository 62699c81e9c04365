"""Write aggregated boards to a leaderboard folder (docs/design.md, "Leaderboard").

    entries/<task>/<level>/<defense>.json   one entry per (task, level, defense)
    README.md                               one table per board
    plots/<task>/<level>.png                privacy against utility, the Pareto front marked
    gallery/<task>/<level>.png              original, disguised and reconstructed targets
    index.html                              the boards as sortable tables, plots and galleries

The numbers come from ``benchmark.leaderboard.aggregate``, the same path `disguisebench show`
prints. The page is static: inline CSS and script, images by relative path, so it works opened
from the file system with no server and no network.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from disguisebench.leaderboard import (CONFIDENCE, RESAMPLES, AttackResult, Board, Interval, Row,
                                       aggregate, worst_text)
from disguisebench.store import Record, Store

log = logging.getLogger("disguisebench")

SCHEMA_VERSION = 1
REGENERATE = "disguisebench run plans/attacks.yaml && disguisebench leaderboard --out leaderboard"
GALLERY_SHOW = 3  # targets per defense in a board's gallery
_GENERATED = ("entries", "plots", "gallery")
_PRIVACY_METHOD = (f"{CONFIDENCE:.0%} percentile bootstrap ({RESAMPLES} resamples) over seeds "
                   "(each a new key, training run and draw of targets) and over the targets "
                   "within each drawn seed, the same draws for every attack and level; worst "
                   "attack per resample, then the minimum over this level and the levels below; "
                   "a seed whose hits are all or none is drawn from the Jeffreys posterior "
                   "Beta(k+1/2, n-k+1/2) instead, so 100 of 100 never gives [1.00, 1.00]")
_UTILITY_METHOD = (f"{CONFIDENCE:.0%} interval from Jeffreys Beta(k+1/2, n-k+1/2) draws of each "
                   "seed's test accuracy, seeds resampled as for privacy (utility: divided by "
                   "the none model's draw of the same seed first)")


def slug(text: str) -> str:
    """A file-name-safe form of a label: ``block-rmt(block=4)`` -> ``block-rmt-block-4``."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "x"


def _number(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _interval(value: Interval | None) -> list[float] | None:
    return None if value is None else [_number(value[0]), _number(value[1])]


@dataclasses.dataclass
class _Paths:
    """Where one board's files go, relative to the output folder."""

    task: str
    level: str
    entries: dict[str, str]  # defense label -> entry path

    @property
    def plot(self) -> str:
        return f"plots/{self.task}/{self.level}.png"

    @property
    def gallery(self) -> str:
        return f"gallery/{self.task}/{self.level}.png"


def _paths(board: Board) -> _Paths:
    task, level = slug(board.task), slug(board.level)
    entries: dict[str, str] = {}
    taken: set[str] = set()
    for row in board.rows:
        name = slug(row.defense)
        if name in taken:  # two labels that differ only in punctuation
            from disguisebench.plan import spec_hash

            name = f"{name}-{spec_hash(row.spec)[:8]}"
        taken.add(name)
        entries[row.defense] = f"entries/{task}/{level}/{name}.json"
    return _Paths(task, level, entries)


def _attack_json(result: AttackResult) -> dict[str, Any]:
    return {
        "spec": result.spec,
        "goal": result.goal,
        "status": result.status,
        "advantage": _number(result.advantage),
        "interval": _interval(result.interval),
        "metrics": {k: _number(v) for k, v in result.metrics.items()},
        "seeds": result.seeds,
        "refused": result.refused,
        "failed": result.failed,
        "not_applicable": result.not_applicable,
        "refusals": result.refusals,
        "errors": result.errors,
        "missing": result.missing,
        "reasons": result.reasons,
    }


def entry(board: Board, row: Row) -> dict[str, Any]:
    """The JSON leaderboard entry of one (task, level, defense): numbers as JSON numbers."""
    worst = row.attacks.get(row.worst_attack) if row.worst_attack else None
    return {
        "schema": SCHEMA_VERSION,
        "task": {"label": board.task, "spec": board.task_spec},
        "level": board.level,
        "defense": {"label": row.defense, "spec": row.spec},
        "rank": row.rank,  # null: incomplete or without privacy, never ranked
        "rank_shared": row.rank_shared,
        "pareto": row.pareto,
        "privacy": {
            "value": _number(row.privacy),
            "interval": _interval(row.privacy_interval),
            "seeds": row.seeds,
            "complete": row.complete,
            "upper_bound": not row.complete,  # an attack failed: the value may be lower
            "set_at_level": row.worst_level,
            "this_level": _number(row.level_privacy),
            "this_level_interval": _interval(row.level_privacy_interval),
            "method": _PRIVACY_METHOD,
        },
        "utility": {
            "ratio": _number(row.utility),
            "ratio_interval": _interval(row.utility_interval),
            "accuracy": _number(row.accuracy),
            "accuracy_interval": _interval(row.accuracy_interval),
            "baseline_accuracy": _number(row.baseline_accuracy),
            "seeds": row.utility_seeds,
            "method": _UTILITY_METHOD,
        },
        "worst_attack": None if row.worst_attack is None else {
            "label": row.worst_attack, "level": row.worst_level,
            "goal": None if worst is None else worst.goal,
            "advantage": _number(row.worst_advantage),
            "interval": _interval(row.worst_interval)},
        "attacks": {label: _attack_json(a) for label, a in row.attacks.items()},
        "records": {"refused": row.refused, "failed": row.failed,
                    "not_applicable": row.not_applicable},
        "notes": row.notes,
        "manifest": row.manifest,
    }


def _dump(obj: Any) -> str:
    # allow_nan=False: a NaN would be written as a bare token no JSON parser accepts.
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------------- tables


@dataclasses.dataclass
class _Cell:
    text: str
    value: float | str | None = None  # what the page sorts by; None sorts last
    title: str | None = None
    cls: str = ""
    interval: str = ""  # "[lo, hi]", shown after the text

    @property
    def full(self) -> str:
        return f"{self.text} {self.interval}" if self.interval else self.text


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ci(interval: Interval | None) -> str:
    return "" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def _attack_cell(result: AttackResult | None) -> _Cell:
    if result is None:
        return _Cell("")
    if result.advantage is None:
        if result.failed:
            return _Cell("failed", None, "; ".join(result.errors) or None, "failed")
        why = [f"needs {', '.join(result.missing)}"] if result.missing else []
        return _Cell("n/a", None, "; ".join(why + result.reasons) or None, "na")
    notes = []
    if result.refused:
        notes.append(f"{result.refused} seed(s) refused by the defense, counted as advantage 1: "
                     + "; ".join(result.refusals))
    if result.failed:
        notes.append(f"also {result.failed} failed: " + "; ".join(result.errors))
    text = _fmt(result.advantage) + (" refused" if result.refused else "") \
        + (" †" if result.failed else "")
    return _Cell(text, result.advantage,
                 f"goal {result.goal}; seeds {', '.join(map(str, result.seeds))}"
                 + "".join(f"; {n}" for n in notes),
                 "failed" if result.refused or result.failed else "",
                 interval=_ci(result.interval))


def _columns(board: Board) -> list[tuple[str, str, str]]:
    """(heading, sort type, tooltip) of each column of a board."""
    attacks = board.attack_labels()
    return [
        ("#", "number", "rank by privacy; =k: shared with entries whose privacy intervals "
                        "overlap; none: incomplete, never ranked"),
        ("front", "text", "★ on the Pareto front of privacy and utility (complete entries only)"),
        ("defense", "text", "the defense and its hyperparameters (link: its JSON entry)"),
        ("privacy", "number", "1 − worst-case advantage over attacks, the minimum over this "
                              "level and the levels below; 1 = every attack at chance; ≤: "
                              "incomplete, an upper bound"),
        ("seeds", "number", "seeds (keys, training runs, target draws) behind the intervals"),
        ("utility", "number", "accuracy / accuracy of the undisguised (none) model"),
        ("accuracy", "number", "test accuracy of the model trained on disguised images"),
        ("worst attack", "text", "the attack with the largest advantage (and its level, when a "
                                 "lower level sets privacy)"),
        *[(a, "number", f"advantage of {a}: 0 = chance, 1 = always right") for a in attacks],
        ("refused", "number", "attack records in which the defense raised or returned invalid "
                              "output; each counts as a complete break"),
        ("failed", "number", "attack records whose own code raised; the entry is incomplete"),
        ("n/a", "number", "attack records needing more than this level grants or than the "
                          "defense has"),
    ]


def _cells(board: Board, row: Row, attacks: list[str] | None = None) -> list[_Cell]:
    """The cells of one row; ``attacks``, the board's attack columns, when already listed."""
    attacks = board.attack_labels() if attacks is None else attacks
    privacy = _fmt(row.privacy)
    if row.privacy is not None and not row.complete:
        privacy = "≤" + privacy
    return [
        _Cell(row.rank_label or "–", row.rank),
        _Cell("★" if row.pareto else "", "★" if row.pareto else None),
        _Cell(row.defense, row.defense, json.dumps(row.spec["params"], sort_keys=True)),
        _Cell(privacy, row.privacy, "; ".join(row.notes) or None,
              "" if row.complete else "failed", interval=_ci(row.privacy_interval)),
        _Cell(str(row.seeds), row.seeds),
        _Cell(_fmt(row.utility), row.utility, interval=_ci(row.utility_interval)),
        _Cell(_fmt(row.accuracy), row.accuracy, interval=_ci(row.accuracy_interval)),
        _Cell("–" if row.worst_attack is None else worst_text(row, board.level),
              row.worst_attack),
        *[_attack_cell(row.attacks.get(a)) for a in attacks],
        _Cell(str(row.refused) if row.refused else "", row.refused),
        _Cell(str(row.failed) if row.failed else "", row.failed),
        _Cell(str(row.not_applicable) if row.not_applicable else "", row.not_applicable),
    ]


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(board: Board, paths: _Paths) -> str:
    headings = [c[0] for c in _columns(board)]
    lines = ["| " + " | ".join(map(_md, headings)) + " |",
             "|" + "|".join("---" if i in (1, 2, 7) else "--:" for i in range(len(headings))) + "|"]
    attacks = board.attack_labels()
    for row in board.rows:
        cells = [c.full for c in _cells(board, row, attacks)]
        cells[2] = f"[{_md(row.defense)}]({paths.entries[row.defense]})"
        lines.append("| " + " | ".join(_md(c) if i != 2 else c for i, c in enumerate(cells)) + " |")
    return "\n".join(lines)


def _overall_manifest(boards: list[Board]) -> dict[str, list]:
    values: dict[str, dict[str, Any]] = {}
    for board in boards:
        for row in board.rows:
            for key, value in row.manifest.items():
                if key in ("wall_seconds", "date"):
                    continue
                for v in value if isinstance(value, list) else [value]:
                    values.setdefault(key, {})[json.dumps(v, sort_keys=True)] = v
    return {k: [values[k][j] for j in sorted(values[k])] for k in sorted(values)}


def _dates(boards: list[Board]) -> str | None:
    dates = sorted(r.manifest["date"] for b in boards for r in b.rows if r.manifest.get("date"))
    return dates[-1] if dates else None


def rules() -> list[tuple[str, str]]:
    """How the boards score, in plain words: the README's and the page's header (one text)."""
    return [
        ("advantage", "of an attack = (success − chance) / (1 − chance), at least 0: 0 is "
         "chance, 1 is always right. Chance is 1 / gallery size for re-identification and "
         "reconstruction, an AUC of 0.5 for membership, and for a label attack what a classifier "
         "trained on the public data alone achieves on the same images in the same run. "
         "Labelling the uploaded training images themselves is no attack, since the owner "
         "uploads their labels: its chance is 1 and its advantage 0."),
        ("privacy", "= 1 − the largest advantage of any attack (each averaged over seeds), and "
         "never more than at a lower level, because an attacker can ignore what it knows: "
         "privacy at level k is the minimum over levels 1 to k. The worst-attack column names "
         "the lower level when one sets it."),
        ("refused", "— the defense raised or returned invalid output while an attack used it "
         "(its keyless copy, a re-fit under the attacker's key, the oracle): that attack counts "
         "as a complete break (advantage 1) and the reason is shown."),
        ("failed", "— an attack's own code raised: the entry is incomplete. Its privacy is only "
         "an upper bound, shown as ≤; it gets no rank and no ★ and is listed below every "
         "complete entry. Not-applicable records (the level or the defense lacks what the attack "
         "needs) are left out and counted."),
        ("utility", "= accuracy of the model trained on disguised images / accuracy of the "
         "undisguised (none) model; accuracy is the absolute test accuracy."),
        ("intervals", f"in brackets are {CONFIDENCE:.0%} intervals; the seeds column says how "
         "many seeds (each a new key, training run and draw of targets) they rest on. Privacy: "
         f"{_PRIVACY_METHOD}. Accuracy and utility: {_UTILITY_METHOD}."),
        ("rank", "by privacy. Entries whose privacy intervals overlap cannot be told apart and "
         "share a rank, shown as =3; within it rows are sorted by privacy, then utility. ★ marks "
         "the Pareto front of the complete entries (no other is at least as private and as "
         "useful, and better in one)."),
    ]


def _readme(boards: list[Board], paths: list[_Paths], galleries: list[bool], n_records: int,
            regenerate: str = REGENERATE) -> str:
    manifest = _overall_manifest(boards)
    parts = [
        "# DisguiseBench leaderboard",
        "",
        f"Generated by `disguisebench leaderboard` from {n_records} stored records; regenerate "
        f"everything here with `{regenerate}`. Open [index.html](index.html) for the same boards "
        "as sortable tables. Each (task, level, defense) also has a JSON entry under `entries/`.",
        "",
        *[f"- **{term}** {text}" for term, text in rules()],
        "",
    ]
    for board, p, has_gallery in zip(boards, paths, galleries):
        parts += [f"## {board.task} / {board.level}", "", _markdown_table(board, p), "",
                  f"![privacy against utility, {board.task} / {board.level}]({p.plot})", ""]
        if has_gallery:
            parts += [f"![gallery, {board.task} / {board.level}]({p.gallery})", ""]
        else:
            parts += ["_No reconstruction attack kept images for this board, so it has no "
                      "gallery._", ""]
    if not boards:
        parts += [f"_No results yet: run `{regenerate}`._", ""]
    if manifest:
        parts += ["## Manifest", ""]
    for key, values in manifest.items():
        parts.append(f"- {key}: {', '.join(f'`{v}`' for v in values)}")
    latest = _dates(boards)
    if latest:
        parts.append(f"- latest record: {latest}")
    return "\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------------------------- images


def _figure(width: float, height: float):  # noqa: ANN202 (matplotlib is imported lazily)
    # A bare Figure draws with the Agg canvas and never touches pyplot's global state.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_board(board: Board, path: Path) -> None:
    """Privacy against utility, one point per defense, intervals as error bars."""
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    points = [r for r in board.rows if r.privacy is not None and r.utility is not None]
    utilities = [r.utility for r in points] or [1.0]
    x_lim = (max(0.0, min(utilities) - 0.1), max(1.05, max(utilities) + 0.05))
    placed: list[tuple[float, float]] = []
    for row in points:
        u_lo, u_hi = row.utility_interval or (row.utility, row.utility)
        p_lo, p_hi = row.privacy_interval or (row.privacy, row.privacy)
        color = "tab:blue" if row.pareto else "tab:gray"
        ax.errorbar(row.utility, row.privacy,
                    xerr=[[max(0.0, row.utility - u_lo)], [max(0.0, u_hi - row.utility)]],
                    yerr=[[max(0.0, row.privacy - p_lo)], [max(0.0, p_hi - row.privacy)]],
                    fmt="o", color=color, ecolor=color, elinewidth=0.8, capsize=2,
                    markerfacecolor=color if row.pareto else "white", zorder=3)
        # Stack the labels of points that nearly coincide instead of printing them over each other.
        where = ((row.utility - x_lim[0]) / (x_lim[1] - x_lim[0]), row.privacy)
        near = sum(abs(where[0] - x) < 0.08 and abs(where[1] - y) < 0.04 for x, y in placed)
        placed.append(where)
        name = row.defense if row.complete else f"{row.defense} (≤, incomplete)"
        ax.annotate(name, (row.utility, row.privacy), textcoords="offset points",
                    xytext=(5, 4 + 9 * near), fontsize=7)
    front = sorted((r.utility, r.privacy) for r in points if r.pareto)
    if front:
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", color="tab:blue", alpha=0.5, linewidth=1,
                label="Pareto front", zorder=2)
        ax.legend(loc="lower left", fontsize=8)
    if not points:
        ax.text(0.5, 0.5, "no defense has both a privacy and a utility yet",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(*x_lim)
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel("utility (accuracy / accuracy of none)")
    ax.set_ylabel("privacy (1 − worst-case advantage)")
    ax.set_title(f"{board.task} / {board.level}", fontsize=10)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def _display(image: np.ndarray, *, rescale: bool = False) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1]. Disguised values may span any range: with ``rescale``,
    an image outside [0, 1] is stretched min-to-max to show its structure."""
    image = np.nan_to_num(image.astype(np.float64))
    if rescale and (image.min() < 0 or image.max() > 1):
        lo, hi = image.min(), image.max()
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    image = image.clip(0, 1)
    return image.transpose(1, 2, 0) if image.shape[0] == 3 else np.repeat(image[:1], 3, 0).transpose(1, 2, 0)


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """Fit an (H, W, 3) image into a size × size tile: whole-pixel zoom (or stride) and centring."""
    h, w = image.shape[:2]
    if max(h, w) > size:
        step = -(-max(h, w) // size)
        image = image[::step, ::step]
    else:
        zoom = size // max(h, w)
        image = image.repeat(zoom, 0).repeat(zoom, 1)
    h, w = image.shape[:2]
    tile = np.ones((size, size, 3))
    top, left = (size - h) // 2, (size - w) // 2
    tile[top:top + h, left:left + w] = image
    return tile


def _load(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        log.warning("gallery images %s are missing; skipped", path)
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def gallery_board(board: Board, artifacts: Path | None, path: Path,
                  show: int = GALLERY_SHOW) -> bool:
    """Original, disguised and each reconstruction for a few targets of every defense.

    Returns False (and writes nothing) when no reconstruction attack kept images for the board.
    """
    if artifacts is None:
        return False
    labels = sorted({label for row in board.rows for label, a in row.attacks.items()
                     if a.artifacts})
    panels = []
    for row in board.rows:
        seeds = sorted({s for a in row.attacks.values() for s in a.artifacts})
        if not seeds:
            continue
        seed = seeds[0]
        loaded = {}
        for label in labels:
            result = row.attacks.get(label)
            if result is not None and seed in result.artifacts:
                arrays = _load(artifacts / result.artifacts[seed])
                if arrays is not None:
                    loaded[label] = arrays
        if not loaded:
            continue
        first = next(iter(loaded.values()))
        for i in range(min(show, len(first["original"]))):
            panels.append((f"{row.defense}\ntarget {i + 1}, seed {seed}",
                           [_display(first["original"][i]),
                            _display(first["disguised"][i], rescale=True)]
                           + [_display(loaded[a]["reconstruction"][i]) if a in loaded else None
                              for a in labels]))
    if not panels:
        return False
    # One mosaic on one axes: dozens of matplotlib axes would take seconds per board.
    cell, gap, left, top = 84, 6, 190, 46
    headings = ["original", "disguised"] + [
        textwrap.fill(a.replace("(", " ("), 16, break_long_words=False).replace(" (", "(")
        for a in labels]
    height, width = top + len(panels) * (cell + gap), left + len(headings) * (cell + gap)
    mosaic = np.ones((height, width, 3))
    blanks = []
    for r, (_, images) in enumerate(panels):
        for c, image in enumerate(images):
            y, x = top + r * (cell + gap), left + c * (cell + gap)
            if image is None:
                mosaic[y:y + cell, x:x + cell] = 0.93
                blanks.append((x + cell / 2, y + cell / 2))
            else:
                mosaic[y:y + cell, x:x + cell] = _tile(image, cell)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for c, heading in enumerate(headings):
        ax.text(left + c * (cell + gap) + cell / 2, top - 6, heading, ha="center", va="bottom",
                fontsize=7)
    for r, (name, _) in enumerate(panels):
        ax.text(left - 10, top + r * (cell + gap) + cell / 2, name, ha="right", va="center",
                fontsize=7)
    for x, y in blanks:
        ax.text(x, y, "n/a", ha="center", va="center", fontsize=8, color="0.4")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return True


# ---------------------------------------------------------------------------------- page


def _html(boards: list[Board], paths: list[_Paths], galleries: list[bool],
          n_records: int, regenerate: str = REGENERATE) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("disguisebench", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    views = []
    for i, (board, p, has_gallery) in enumerate(zip(boards, paths, galleries)):
        rows = []
        attacks = board.attack_labels()
        for row in board.rows:
            cells = _cells(board, row, attacks)
            rows.append({"cells": cells, "entry": p.entries[row.defense], "pareto": row.pareto})
        views.append({
            "id": f"board-{i + 1}", "task": board.task, "level": board.level,
            "columns": _columns(board), "attacks": attacks, "rows": rows, "plot": p.plot,
            "gallery": p.gallery if has_gallery else None,
        })
    return env.get_template("leaderboard.html.j2").render(
        boards=views, n_records=n_records, regenerate=regenerate,
        manifest=_overall_manifest(boards), latest=_dates(boards),
        privacy_method=_PRIVACY_METHOD, utility_method=_UTILITY_METHOD, rules=rules(),
        confidence=f"{CONFIDENCE:.0%}")


def write(boards: list[Board], out: str | Path, *, artifacts: Path | None = None,
          n_records: int = 0, regenerate: str = REGENERATE) -> list[Path]:
    """Write every file of the leaderboard under ``out``; return the paths written.

    Files under ``entries/``, ``plots/`` and ``gallery/`` that this run did not write (a defense
    no longer in the store, say) are removed, so the folder always matches the store.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    paths = [_paths(board) for board in boards]
    galleries = []
    for board, p in zip(boards, paths):
        for row in board.rows:
            target = out / p.entries[row.defense]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_dump(entry(board, row)))
            written.append(target)
        plot_board(board, out / p.plot)
        written.append(out / p.plot)
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


def regenerate_command(plans: list[str], out: str | Path) -> str:
    """The commands that rebuild a leaderboard folder from the plans its records came from."""
    runs = [f"disguisebench run {p}" for p in plans] or ["disguisebench run PLAN.yaml"]
    return " && ".join([*runs, f"disguisebench leaderboard --out {out}"])


def write_from_store(store: Store, out: str | Path, *, plan: str | None = None
                     ) -> tuple[list[Board], list[Path], int]:
    """Aggregate every record of ``store`` and write the leaderboard under ``out``; return the
    boards, the paths written and the number of records. The page names ``plan``, else the
    shipped plans the records came from."""
    records = list(store.records())
    boards = aggregate(records)
    regenerate = regenerate_command([plan] if plan else shipped_plans(records), out)
    return boards, write(boards, out, artifacts=store.artifacts_dir, n_records=len(records),
                         regenerate=regenerate), len(records)
