"""Namespace the installed import names under ``disguisebench``, keeping the folder layout.

The source folders stay where they are; an installed copy (and every import in the repository)
names them as

    benchmark/  ->  disguisebench            (the core: disguisebench.api, disguisebench.cli, ...)
    defenses/   ->  disguisebench.defenses
    attacks/    ->  disguisebench.attacks
    tasks/      ->  disguisebench.tasks
    plans/      ->  disguisebench.plans      (package data: the shipped YAML plans)

through setuptools' ``package-dir``, so nothing named ``benchmark`` or ``tasks`` lands at the top
of site-packages. In a source checkout ``disguisebench/__init__.py`` (written here) points the
package at those folders, so tests and scripts run from the checkout without installing.

Run from the repository root; it only rewrites what still uses the old names, so it can be
re-run after merging a branch written against them:

    python tools/namespace.py            # rewrite, print what changed
    python tools/namespace.py --check    # exit 1, listing them, if anything is left to rewrite
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = "benchmark"
PLUGINS = ("defenses", "attacks", "tasks")
OLD = (CORE, *PLUGINS)
SELF = Path(__file__).resolve()
# Generated files and folders whose text is data, not code.
SKIP = ("leaderboard/", "results/")


def new_name(old: str) -> str:
    """``benchmark.x`` -> ``disguisebench.x``; ``defenses.x`` -> ``disguisebench.defenses.x``."""
    head, _, rest = old.partition(".")
    base = "disguisebench" if head == CORE else f"disguisebench.{head}"
    return f"{base}.{rest}" if rest else base


def is_module(dotted: str) -> bool:
    """Whether ``dotted`` (``benchmark.cli``, ``tasks._base.device``) starts with a module or
    folder of the repository, so that a string naming it is an import path."""
    head, _, rest = dotted.partition(".")
    first = rest.split(".")[0]
    folder = ROOT / head
    return bool(first) and ((folder / f"{first}.py").is_file() or (folder / first).is_dir())


def _import(indent: str, head: str, dotted: str, alias: str) -> str:
    """``import X[.Y] [as Z]`` under the new names; the bound name stays the same."""
    if dotted:  # import tasks._base as base; without an alias the code names "tasks." itself
        return f"{indent}import {new_name(head + dotted)}{alias or ' as ' + head}" \
            if alias else f"{indent}import {head}{dotted}"  # left for a person (leftovers)
    if head == CORE:
        return f"{indent}import disguisebench{alias or ' as benchmark'}"
    return f"{indent}from disguisebench import {head}{alias}"


_PY_RULES: list[tuple[re.Pattern, object]] = [
    # from benchmark.api import X / from defenses import blur
    (re.compile(rf"^(\s*)from ({'|'.join(OLD)})((?:\.\w+)*) import ", re.M),
     lambda m: f"{m[1]}from {new_name(m[2] + m[3])} import "),
    # the same inside a string of code: "import sys\nfrom benchmark import cli\n"
    (re.compile(rf"""(\\n|["'])from ({'|'.join(OLD)})((?:\.\w+)*) import """),
     lambda m: f"{m[1]}from {new_name(m[2] + m[3])} import "),
    # import defenses  /  import tasks._base as base
    (re.compile(rf"^(\s*)import ({'|'.join(OLD)})((?:\.\w+)*)(\s+as\s+\w+)?[ \t]*$", re.M),
     lambda m: _import(m[1], m[2], m[3], m[4] or "")),
    # "benchmark.cli" (python -m, mock targets, entry points): quoted dotted module paths
    (re.compile(rf"""(["'])((?:{'|'.join(OLD)})\.[\w.]+)(?=["':])"""),
     lambda m: m[1] + new_name(m[2]) if is_module(m[2]) else m[0]),
    # the same in a regular expression: r"by defenses\.pixelate\.Pixelate"
    (re.compile(rf"""(?<=[\s"'(])((?:{'|'.join(OLD)})(?:\\\.\w+)+)"""),
     lambda m: (new_name(m[1].replace("\\.", ".")).replace(".", "\\.")
                if is_module(m[1].replace("\\.", ".")) else m[0])),
    # the registry's in-tree plugin packages
    (re.compile(r"""^PACKAGES = \{"defense": "defenses", "attack": "attacks", "task": "tasks"\}""",
                re.M),
     lambda m: 'PACKAGES = {"defense": "disguisebench.defenses", "attack": "disguisebench.attacks",\n'
               '            "task": "disguisebench.tasks"}'),
]

_TEXT_RULES: list[tuple[re.Pattern, object]] = [
    # python -m benchmark.cli, `benchmark.api.Defense`, from benchmark.api import ...
    (re.compile(rf"(?<![\w/.-])((?:{'|'.join(OLD)})\.\w[\w.]*)"),
     lambda m: new_name(m[1]) if is_module(m[1]) else m[0]),
    (re.compile(rf"(?m)^(\s*)from ({'|'.join(OLD)}) import "),
     lambda m: f"{m[1]}from {new_name(m[2])} import "),
]

SHIM = '''"""DisguiseBench in a source checkout.

An installed copy maps the folders benchmark/, defenses/, attacks/, tasks/ and plans/ to
``disguisebench``, ``disguisebench.defenses``, ... through setuptools' package-dir (see
pyproject.toml). This file gives a checkout the same names without installing: it loads
benchmark/__init__.py as the package ``disguisebench``, whose sub-packages are benchmark/'s modules
and the plugin folders beside it, so importlib.resources finds templates and plans as it does in
an installed copy. Written by tools/namespace.py.
"""

import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

_root = _Path(__file__).resolve().parent.parent
_spec = _util.spec_from_file_location(
    __name__, _root / "benchmark" / "__init__.py",
    submodule_search_locations=[str(_root / "benchmark"), str(_root)])
_module = _util.module_from_spec(_spec)
_sys.modules[__name__] = _module  # the import system hands out what sys.modules holds
_spec.loader.exec_module(_module)
'''

PLANS_INIT = '"""The shipped plans, package data read through importlib.resources."""\n'

SETUPTOOLS = '''[tool.setuptools]
# Folders keep their names in the repository; installed, they are one namespaced package.
packages = ["disguisebench", "disguisebench.defenses", "disguisebench.attacks",
            "disguisebench.tasks", "disguisebench.plans"]

[tool.setuptools.package-dir]
disguisebench = "benchmark"
"disguisebench.defenses" = "defenses"
"disguisebench.attacks" = "attacks"
"disguisebench.tasks" = "tasks"
"disguisebench.plans" = "plans"

[tool.setuptools.package-data]
disguisebench = ["templates/*.j2"]
"disguisebench.plans" = ["*.yaml"]
'''

# One-line replacements of code that found files next to itself.
EXACT = {
    "benchmark/plan.py": [(
        'DEFAULT_PLAN = Path(__file__).resolve().parent.parent / "plans" / "default.yaml"',
        '# Plans are package data: plans/ in a checkout, disguisebench/plans/ when installed.\n'
        'DEFAULT_PLAN = Path(str(resources.files("disguisebench.plans").joinpath("default.yaml")))',
    ), (
        "from pathlib import Path\n",
        "from importlib import resources\nfrom pathlib import Path\n",
    )],
    "benchmark/report.py": [(
        'loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),',
        'loader=jinja2.PackageLoader("disguisebench", "templates"),',
    )],
}


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [ROOT / name for name in out
            if name and not name.startswith(SKIP) and (ROOT / name).is_file()]


def rewrite(text: str, rules: list[tuple[re.Pattern, object]]) -> str:
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return text


_ALIGNED_IMPORT = re.compile(r"^([ \t]*)(from disguisebench[\w.]* import \()([^)\n#][^)#]*)\)", re.M)
WIDTH = 100


def reflow(text: str) -> str:
    """Re-wrap ``from disguisebench... import (a, b,`` statements whose names line up under the
    parenthesis, since the longer module name moved it (hanging indents need nothing)."""
    def wrap(m: re.Match) -> str:
        prefix = m[1] + m[2]
        names = [n.strip() for n in m[3].replace("\n", " ").split(",") if n.strip()]
        lines, line = [], prefix
        for k, name in enumerate(names):
            piece = name + ("," if k < len(names) - 1 else ")")
            if line.strip() and not line.endswith("(") and len(line) + 1 + len(piece) > WIDTH:
                lines.append(line)
                line = " " * len(prefix) + piece
            else:
                line += ("" if line.endswith("(") else " ") + piece
        return "\n".join([*lines, line])

    return _ALIGNED_IMPORT.sub(wrap, text)


def plan_changes() -> dict[Path, str]:
    """Every file whose text this script would change, with its new text."""
    changes: dict[Path, str] = {}
    for path in tracked():
        if path == SELF:
            continue
        rel = path.relative_to(ROOT).as_posix()
        if path.suffix == ".py":
            rules = _PY_RULES
        elif path.suffix in (".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".j2") \
                or rel == ".ci/run":
            rules = _TEXT_RULES
        else:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = rewrite(text, rules)
        if path.suffix == ".py":
            new = reflow(new)
        for old, replacement in EXACT.get(rel, []):
            if old in new and replacement not in new:
                new = new.replace(old, replacement, 1)
        if rel == "pyproject.toml":
            new = _pyproject(new)
        if new != text:
            changes[path] = new
    for rel, text in (("disguisebench/__init__.py", SHIM), ("plans/__init__.py", PLANS_INIT)):
        path = ROOT / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            changes[path] = text
    return changes


def _pyproject(text: str) -> str:
    """The [tool.setuptools*] tables replaced by the namespaced ones, once."""
    if '"disguisebench.defenses" = "defenses"' in text:
        return text
    parts = re.split(r"(?m)^(?=\[)", text)
    kept = [p for p in parts if not p.startswith("[tool.setuptools")]
    at = next(i for i, p in enumerate(kept) if p.startswith("[tool.pytest"))
    kept.insert(at, SETUPTOOLS + "\n")
    return "".join(kept)


def leftovers() -> list[str]:
    """Lines of Python that still import the old top-level names."""
    pattern = re.compile(rf"^\s*(from|import) ({'|'.join(OLD)})\b", re.M)
    out = []
    for path in tracked():
        if path.suffix == ".py" and path != SELF:
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.match(line):
                    out.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 and list the files that still need it")
    args = parser.parse_args(argv)
    changes = plan_changes()
    if args.check:
        for path in sorted(changes):
            print(f"would rewrite {path.relative_to(ROOT)}")
        return 1 if changes else 0
    for path, text in sorted(changes.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"rewrote {path.relative_to(ROOT)}")
    left = leftovers()
    for line in left:
        print(f"left for a person: {line}", file=sys.stderr)
    print(f"{len(changes)} file(s) rewritten; {len(left)} import(s) left to fix by hand")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
