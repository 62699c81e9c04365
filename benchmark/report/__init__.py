"""Write aggregated boards to a leaderboard folder (docs/design.md, "Leaderboard").

    entries/<task>/<level>/<defense>.json   one entry per (task, level, defense)
    README.md                               one table per board
    plots/<task>/<level>.png                privacy against utility, the Pareto front marked
    plots/<task>/<level>-curves.png         privacy against swept resources (sweeps only)
    gallery/<task>/<level>.png              original, disguised and reconstructed targets
    index.html                              the boards as sortable tables, plots and galleries

The numbers come from ``benchmark.leaderboard.aggregate``, the same path `disguisebench show`
prints. The page is static: inline CSS and script, images by relative path, so it works opened
from the file system with no server and no network.

Modules: ``entries`` (the JSON entries and the files' paths), ``tables`` (a board as cells),
``figures`` (plots and galleries), ``page`` (README.md and index.html), ``folder`` (writing the
folder). Names with an underscore are private to this package; the modules share them.
"""

from disguisebench.report.entries import SCHEMA_VERSION, entry, slug
from disguisebench.report.figures import GALLERY_SHOW, gallery_board, plot_board, plot_curves
from disguisebench.report.folder import regenerate_command, shipped_plans, write, write_from_store
from disguisebench.report.page import REGENERATE, rules

# A board's files, cells and Markdown table, for callers that lay boards out themselves.
from disguisebench.report.entries import board_paths
from disguisebench.report.tables import attack_cell, markdown_table, row_cells

__all__ = ["GALLERY_SHOW", "REGENERATE", "SCHEMA_VERSION", "attack_cell", "board_paths", "entry",
           "gallery_board", "markdown_table", "plot_board", "plot_curves", "regenerate_command",
           "row_cells", "rules", "shipped_plans", "slug", "write", "write_from_store"]
