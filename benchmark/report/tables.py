"""A board as table cells: what the README's Markdown tables and the page's sortable tables show."""

from __future__ import annotations

import dataclasses
import json

from disguisebench.leaderboard import (
    BREAK, AttackResult, Board, Interval, Row, cost_text, worst_text,
)
from disguisebench.report.entries import _Paths


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


def attack_cell(result: AttackResult | None) -> _Cell:
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
    ] + ([("to break", "number", f"the smallest resource tried (known pairs, oracle queries, "
                               f"compute) at which this level's privacy falls below {BREAK:g}; "
                               "[..] its range over the bootstrap resamples")]
         if board.resources() else [])


def row_cells(board: Board, row: Row, attacks: list[str] | None = None) -> list[_Cell]:
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
        *[attack_cell(row.attacks.get(a)) for a in attacks],
        _Cell(str(row.refused) if row.refused else "", row.refused),
        _Cell(str(row.failed) if row.failed else "", row.failed),
        _Cell(str(row.not_applicable) if row.not_applicable else "", row.not_applicable),
    ] + ([_cost_cell(row)] if board.resources() else [])


def _cost_cell(row: Row) -> _Cell:
    """The costs to break of a row with curves, sorted by the first one (unbroken last)."""
    first = next(iter(row.curves.values()), None)
    value = None if first is None or not first.broken else first.cost
    return _Cell(cost_text(row), value)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(board: Board, paths: _Paths) -> str:
    headings = [c[0] for c in _columns(board)]
    lines = ["| " + " | ".join(map(_md, headings)) + " |",
             "|" + "|".join("---" if i in (1, 2, 7) else "--:" for i in range(len(headings))) + "|"]
    attacks = board.attack_labels()
    for row in board.rows:
        cells = [c.full for c in row_cells(board, row, attacks)]
        cells[2] = f"[{_md(row.defense)}]({paths.entries[row.defense]})"
        lines.append("| " + " | ".join(_md(c) if i != 2 else c for i, c in enumerate(cells)) + " |")
    return "\n".join(lines)

