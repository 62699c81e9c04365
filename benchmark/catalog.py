"""What `disguisebench list` shows about each plugin, read from the sources of the in-tree plugins
without importing them, so that listing never waits for torch.

The registry (benchmark.registry) stays the one source of truth: ``from_class`` describes an
imported class the same way, tests check that both agree on every in-tree plugin, and the command
line falls back to the registry whenever an installed package adds plugins or a source holds
something this reader does not understand.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

# The in-tree plugin packages, by kind (benchmark.registry imports every module in them).
PACKAGES = {"defense": "disguisebench.defenses", "attack": "disguisebench.attacks",
            "task": "disguisebench.tasks"}
GROUPS = {"defense": "disguisebench.defenses", "attack": "disguisebench.attacks",
          "task": "disguisebench.tasks"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One plugin as `list` shows it."""

    kind: str
    name: str
    origin: str  # module.Class
    doc: str  # the class docstring, cleaned like inspect.getdoc
    params: tuple[tuple[str, str], ...]  # (name, repr of the default or "(required)")
    goal: str | None = None  # attacks only
    needs: tuple[str, ...] = ()  # attacks only, sorted

    def summary(self) -> str:
        """The docstring's first paragraph on one line (as Plugin.summary)."""
        return " ".join(self.doc.split("\n\n")[0].split())

    def described(self) -> list[tuple[str, str, str]]:
        """(name, default, description) of each parameter, descriptions from ``Args:``."""
        text = args_section(self.doc)
        return [(name, default, text.get(name, "")) for name, default in self.params]


def args_section(doc: str) -> dict[str, str]:
    """Parameter descriptions from a docstring's ``Args:`` section (continuation lines joined)."""
    described: dict[str, str] = {}
    in_args, current = False, None
    for line in doc.splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if not line.strip():
            break
        stripped = line.strip()
        name, sep, text = stripped.partition(":")
        if sep and line.startswith("    ") and not line.startswith("     ") and " " not in name:
            current = name
            described[current] = text.strip()
        elif current is not None:
            described[current] += " " + stripped
    return described


def from_class(kind: str, name: str, cls: type, origin: str) -> Entry:
    """An imported plugin class described as the source reader describes it."""
    params = []
    for param, p in inspect.signature(cls.__init__).parameters.items():
        if param == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params.append((param, "(required)" if p.default is p.empty else repr(p.default)))
    goal = cls.goal if kind == "attack" else None
    needs = tuple(sorted(cls.needs)) if kind == "attack" else ()
    return Entry(kind, name, origin, inspect.getdoc(cls) or "", tuple(params), goal, needs)


# ---------------------------------------------------------------------------- source reader


class _Unreadable(Exception):
    """Something the reader does not understand: the caller imports the registry instead."""


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise _Unreadable(package)
    return Path(next(iter(spec.submodule_search_locations)))


def _constants() -> dict[str, Any]:
    """The string constants of benchmark.api (capabilities, goals), read from its source."""
    api = Path(__file__).with_name("api.py")
    out: dict[str, Any] = {}
    for node in ast.parse(api.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out[node.targets[0].id] = node.value.value
    return out


def _value(node: ast.expr, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in constants:
            raise _Unreadable(node.id)
        return constants[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == "frozenset" and not node.keywords:
        if not node.args:
            return frozenset()
        inner = node.args[0]
        if isinstance(inner, (ast.Set, ast.List, ast.Tuple)):
            return frozenset(_value(e, constants) for e in inner.elts)
        raise _Unreadable(ast.dump(node))
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise _Unreadable(ast.dump(node)) from None


def _registered_name(cls: ast.ClassDef) -> str | None:
    for deco in cls.decorator_list:
        if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Name) \
                and deco.func.id == "register" and len(deco.args) == 1 \
                and isinstance(deco.args[0], ast.Constant):
            return deco.args[0].value
    return None


def _params(cls: ast.ClassDef) -> tuple[tuple[str, str], ...]:
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None)
    if init is None:
        raise _Unreadable(f"{cls.name} has no __init__ of its own")
    a = init.args
    if a.vararg or a.kwarg or a.posonlyargs:
        raise _Unreadable(f"{cls.name}.__init__ takes *args or **kwargs")
    positional = a.args[1:]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = []
    for arg, default in [*zip(positional, defaults), *zip(a.kwonlyargs, a.kw_defaults)]:
        out.append((arg.arg, "(required)" if default is None
                    else repr(_value(default, {}))))
    return tuple(out)


def _attack_traits(cls: ast.ClassDef, constants: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    if not all(isinstance(b, ast.Name) and b.id == "Attack" for b in cls.bases):
        raise _Unreadable(f"{cls.name} does not subclass Attack directly")
    found = {"goal": "", "needs": frozenset()}
    for node in cls.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            else node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None
        if isinstance(target, ast.Name) and target.id in found:
            found[target.id] = _value(node.value, constants)
    return found["goal"], tuple(sorted(found["needs"]))


def read_sources() -> list[Entry]:
    """Every in-tree plugin, read from source; raises _Unreadable when that is not possible."""
    constants = _constants()
    entries = []
    for kind, package in PACKAGES.items():
        for path in sorted(_package_dir(package).glob("*.py")):
            if path.name.startswith("_"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
                name = _registered_name(cls)
                if name is None:
                    continue
                goal, needs = _attack_traits(cls, constants) if kind == "attack" else (None, ())
                entries.append(Entry(kind, name, f"{package}.{path.stem}.{cls.name}",
                                     ast.get_docstring(cls) or "",
                                     _params(cls), goal, needs))
    return entries


def entries() -> list[Entry]:
    """Every registered plugin, sorted by kind then name: from the sources when only in-tree
    plugins exist, else (installed plugin packages, or a source the reader does not follow)
    through the registry, which imports them all."""
    if not any(entry_points(group=group) for group in GROUPS.values()):
        try:
            found = read_sources()
        except (_Unreadable, OSError, SyntaxError):
            found = None
        if found is not None:
            return sorted(found, key=lambda e: (list(PACKAGES).index(e.kind), e.name))
    from disguisebench import registry

    return [from_class(kind, name, registry.get(kind, name), registry.origin(kind, name))
            for kind in PACKAGES for name in registry.names(kind)]
