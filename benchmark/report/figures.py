"""The images of a board: privacy against utility, and a gallery of reconstructed targets."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np

from disguisebench.leaderboard import BREAK, Board, Curve, Row

log = logging.getLogger("disguisebench")

GALLERY_SHOW = 3  # targets per defense in a board's gallery


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


def plot_curves(board: Board, path: Path) -> None:
    """Privacy against each swept resource, one panel per resource and one line per defense,
    intervals shaded, the break threshold dashed: solid, the level's privacy (bounded by the
    lower levels and smaller values); dotted, what this level's attacks achieve at each value
    alone, where that differs. Unlimited queries sit one step past the largest budget tried."""
    resources = board.resources()
    fig = _figure(5.2 * len(resources), 4.2)
    for i, resource in enumerate(resources):
        ax = fig.add_subplot(1, len(resources), i + 1)
        curves = [(row.defense, row.curves[resource]) for row in board.rows
                  if resource in row.curves]
        for name, curve in curves:
            xs = _positions(curve)
            ys = [p.privacy for p in curve.points]
            line, = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=name)
            lo = [p.interval[0] if p.interval else p.privacy for p in curve.points]
            hi = [p.interval[1] if p.interval else p.privacy for p in curve.points]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
            own = [p.privacy if p.own is None else p.own for p in curve.points]
            if any(abs(o - y) > 1e-9 for o, y in zip(own, ys)):
                ax.plot(xs, own, linestyle=":", marker=".", markersize=3, linewidth=1.0,
                        color=line.get_color())
        ax.axhline(BREAK, color="0.4", linestyle="--", linewidth=0.8)
        if all(x > 0 for _, c in curves for x in _positions(c)):
            ax.set_xscale("log")
        # A tick at every value tried, the unlimited budget marked ∞.
        ticks = {x: "∞" if p.value is None else f"{p.value:g}"
                 for _, c in curves for x, p in zip(_positions(c), c.points)}
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
        ax.minorticks_off()
        ax.set_ylim(-0.04, 1.04)
        ax.set_xlabel(_axis_label(curves[0][1]))
        ax.set_ylabel("privacy (dotted: this level's attacks alone)")
        ax.set_title(f"{board.task} / {board.level}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def _positions(curve: Curve) -> list[float]:
    """The x of each point; an unlimited budget (None) one factor of ten past the largest."""
    finite = [p.value for p in curve.points if p.value is not None]
    beyond = 10 * max(finite) if finite and max(finite) > 0 else 1.0
    return [beyond if p.value is None else float(p.value) for p in curve.points]


def _axis_label(curve: Curve) -> str:
    return {"pairs": "known (plaintext, disguised) pairs",
            "queries": "oracle queries (∞: unlimited)",
            "compute": "compute budget multiplier"}.get(curve.name, curve.name)


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
    panels = [panel for row in board.rows for panel in _panels(row, labels, artifacts, show)]
    if not panels:
        return False
    _draw_gallery(panels, labels, path)
    return True


def _panels(row: Row, labels: list[str], artifacts: Path, show: int
            ) -> list[tuple[str, list[np.ndarray | None]]]:
    """One defense's gallery rows, (name, images): its first ``show`` targets of the first seed
    with kept images, original, disguised and each attack's reconstruction (None: not kept)."""
    seeds = sorted({s for a in row.attacks.values() for s in a.artifacts})
    if not seeds:
        return []
    seed = seeds[0]
    loaded = {}
    for label in labels:
        result = row.attacks.get(label)
        if result is not None and seed in result.artifacts:
            arrays = _load(artifacts / result.artifacts[seed])
            if arrays is not None:
                loaded[label] = arrays
    if not loaded:
        return []
    first = next(iter(loaded.values()))
    return [(f"{row.defense}\ntarget {i + 1}, seed {seed}",
             [_display(first["original"][i]), _display(first["disguised"][i], rescale=True)]
             + [_display(loaded[a]["reconstruction"][i]) if a in loaded else None
                for a in labels])
            for i in range(min(show, len(first["original"])))]


def _draw_gallery(panels: list[tuple[str, list[np.ndarray | None]]], labels: list[str],
                  path: Path) -> None:
    """The panels as one image: a column per heading, a row per target."""
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
