"""Submitting a defense: run the standard submission plan on it and write its leaderboard entries.

``disguisebench submit NAME`` adds the defense (with ``--set`` hyperparameters) to
``plans/submission.yaml`` (every embedded task, every registered attack, levels 1-3, three seeds),
runs what is missing into the results database, regenerates the leaderboard, and writes a
metadata file for the author to fill in (paper, authors, code, license, claims).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from disguisebench import plan as plan_mod, registry, report, runner
from disguisebench.store import Store

log = logging.getLogger("disguisebench")

SUBMISSION_PLAN = plan_mod.DEFAULT_PLAN.with_name("submission.yaml")
METADATA_FIELDS = ("paper", "authors", "venue", "year", "code", "license", "claims")


def submission_plan(name: str, params: dict[str, Any], path: str | Path | None = None
                    ) -> plan_mod.Plan:
    """The submission plan with ``name`` (and ``none``) as its defenses."""
    path = Path(path) if path is not None else SUBMISSION_PLAN
    raw = plan_mod.read_raw(path)
    if not isinstance(raw, dict) or not raw:
        return plan_mod.from_dict(raw, where=path.name)  # raises the plan's own error
    # Lists in submitted parameters are values, not sweeps.
    raw["defenses"] = ["none"] if name == "none" else ["none", {name: plan_mod.literal(params)}]
    return plan_mod.from_dict(raw, where=path.name)


def write_metadata(folder: Path, name: str, params: dict[str, Any]) -> Path:
    """A metadata file for the submitter to complete; an existing one is never overwritten."""
    label = registry.create("defense", name, params).label()
    path = folder / f"{report.slug(label)}.yaml"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    cls = registry.get("defense", name)
    text = ("# Fill in and send with your submission; see docs/CONTRIBUTING.md.\n"
            + yaml.safe_dump({"defense": name, "params": params, "summary": cls.summary(),
                              "origin": registry.origin("defense", name)}, sort_keys=False)
            + "".join(f"{field}: ''\n" for field in METADATA_FIELDS))
    path.write_text(text)
    return path


def submit(name: str, params: dict[str, Any], *, plan: str | Path | None, db: str | Path,
           out: str | Path, progress: bool = True, executor: Any = None
           ) -> tuple[runner.Summary, Path]:
    """Run the submission plan for ``name``, regenerate the leaderboard, write the metadata file."""
    registry.create("defense", name, params)  # an unknown name or parameter fails before any work
    the_plan = submission_plan(name, params, plan)
    with Store(db) as store:
        summary = runner.run(the_plan, store, progress=progress, executor=executor)
        report.write_from_store(store, out)
    metadata = write_metadata(Path(out) / "submissions", name, params)
    return summary, metadata
