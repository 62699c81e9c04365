"""Write aggregated boards to a leaderboard folder (docs/design.md, "Leaderboard").

    entries/<task>/<level>/<defense>.json   one entry per (task, level, defense)
    README.md                               one table per board
    plots/<task>/<level>.png                privacy against utility, the Pareto front marked
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
from disguisebench.report.figures import GALLERY_SHOW, gallery_board, plot_board
from disguisebench.report.folder import regenerate_command, shipped_plans, write, write_from_store
from disguisebench.report.page import REGENERATE, rules

# Helpers the tests check through ``report``, as they did when it was one module.
from disguisebench.report.entries import _paths  # noqa: F401
from disguisebench.report.tables import _attack_cell, _cells, _markdown_table  # noqa: F401

__all__ = ["GALLERY_SHOW", "REGENERATE", "SCHEMA_VERSION", "entry", "gallery_board",
           "plot_board", "regenerate_command", "rules", "shipped_plans", "slug", "write",
           "write_from_store"]
