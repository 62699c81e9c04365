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
    # (name, description) from the ``Args:`` sections of the class and of the plugin-package
    # classes it inherits from (a task that only changes defaults describes none itself).
    param_docs: tuple[tuple[str, str], ...] = ()

    def summary(self) -> str:
        """The docstring's first paragraph on one line (as Plugin.summary)."""
        return " ".join(self.doc.split("\n\n")[0].split())

    def described(self) -> list[tuple[str, str, str]]:
        """(name, default, description) of each parameter."""
        text = dict(self.param_docs)
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


def _param_docs(params: tuple[tuple[str, str], ...],
                docs: list[str]) -> tuple[tuple[str, str], ...]:
    """Each parameter's description from the first of ``docs`` (a class's docstring first,
    then its bases') that describes it."""
    merged: dict[str, str] = {}
    for doc in reversed(docs):
        merged.update(args_section(doc))
    return tuple((name, merged[name]) for name, _ in params if name in merged)


def from_class(kind: str, name: str, cls: type, origin: str) -> Entry:
    """An imported plugin class described as the source reader describes it."""
    params = []
    for param, p in inspect.signature(cls.__init__).parameters.items():
        if param == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params.append((param, "(required)" if p.default is p.empty else repr(p.default)))
    goal = str(cls.goal) if kind == "attack" else None
    needs = tuple(sorted(map(str, cls.needs))) if kind == "attack" else ()
    # The plugin interfaces (disguisebench.api) and object describe no hyperparameters.
    docs = [inspect.cleandoc(k.__dict__.get("__doc__") or "") for k in cls.__mro__
            if k.__module__ not in ("disguisebench.api", "builtins")]
    return Entry(kind, name, origin, inspect.getdoc(cls) or "", tuple(params), goal, needs,
                 _param_docs(tuple(params), docs))


# ---------------------------------------------------------------------------- source reader


class _Unreadable(Exception):
    """Something the reader does not understand: the caller imports the registry instead."""


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise _Unreadable(package)
    return Path(next(iter(spec.submodule_search_locations)))


def _constants() -> dict[str, Any]:
    """The string constants of benchmark.api (capabilities, goals), read from its source: the
    members of its string enums (``Capability.TARGETS``) and their module-level names
    (``TARGETS``)."""
    api = Path(__file__).with_name("api.py")
    out: dict[str, Any] = {}

    def assigned(node: ast.stmt) -> tuple[str, ast.expr] | None:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            return node.targets[0].id, node.value
        return None

    for node in ast.parse(api.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            for item in map(assigned, node.body):
                if item and isinstance(item[1], ast.Constant) and isinstance(item[1].value, str):
                    out[f"{node.name}.{item[0]}"] = item[1].value
        elif (item := assigned(node)) is not None:
            name, value = item
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out[name] = value.value
            elif isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) \
                    and f"{value.value.id}.{value.attr}" in out:
                out[name] = out[f"{value.value.id}.{value.attr}"]
    return out


def _value(node: ast.expr, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in constants:
            raise _Unreadable(node.id)
        return constants[node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        dotted = f"{node.value.id}.{node.attr}"
        if dotted not in constants:
            raise _Unreadable(dotted)
        return constants[dotted]
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


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _base(cls: ast.ClassDef, tree: ast.Module, package: str) -> tuple[ast.ClassDef, ast.Module]:
    """The one base class of ``cls`` and the module that defines it, from the same module or
    one it imports from the same plugin package; anything else is _Unreadable."""
    if len(cls.bases) != 1 or not isinstance(cls.bases[0], ast.Name):
        raise _Unreadable(f"{cls.name} does not have one plain base class")
    base = cls.bases[0].id
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == base:
            return node, tree
        if isinstance(node, ast.ImportFrom) and node.module \
                and any(alias.name == base and alias.asname is None for alias in node.names):
            module = node.module.removeprefix(package + ".")
            if module == node.module or "." in module:
                raise _Unreadable(f"{cls.name}'s base {base} is outside {package}")
            other = _parse(_package_dir(package) / f"{module}.py")
            found = next((n for n in other.body
                          if isinstance(n, ast.ClassDef) and n.name == base), None)
            if found is None:
                raise _Unreadable(f"{node.module} defines no class {base}")
            return found, other
    raise _Unreadable(f"{cls.name}'s base {base} is not found")


def _signature(cls: ast.ClassDef, tree: ast.Module,
               package: str) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """The parameters of ``cls`` (inherited and changed by ``DEFAULTS`` when it has no
    ``__init__`` of its own) and the docstrings of the classes they are described in."""
    doc = ast.get_docstring(cls) or ""
    if any(isinstance(n, ast.FunctionDef) and n.name == "__init__" for n in cls.body):
        docs = [doc]
        try:  # a base in the package may describe the parameters this __init__ passes on
            docs += _signature(*_base(cls, tree, package), package)[1]
        except _Unreadable:
            pass
        return _params(cls), docs
    params, docs = _signature(*_base(cls, tree, package), package)
    changed = next((n.value for n in cls.body if isinstance(n, ast.Assign)
                    and [getattr(t, "id", None) for t in n.targets] == ["DEFAULTS"]), None)
    if changed is not None:
        new = _value(changed, {})
        if not isinstance(new, dict) or not set(new) <= {p for p, _ in params}:
            raise _Unreadable(f"{cls.name}.DEFAULTS")
        params = tuple((p, repr(new[p]) if p in new else d) for p, d in params)
    return params, [doc, *docs]


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
            tree = _parse(path)
            for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
                name = _registered_name(cls)
                if name is None:
                    continue
                goal, needs = _attack_traits(cls, constants) if kind == "attack" else (None, ())
                params, docs = _signature(cls, tree, package)
                entries.append(Entry(kind, name, f"{package}.{path.stem}.{cls.name}",
                                     ast.get_docstring(cls) or "", params, goal, needs,
                                     _param_docs(params, docs)))
    return entries


def source_entries() -> list[Entry] | None:
    """Every in-tree plugin read from its source, sorted by kind then name, without importing
    torch; None where the sources cannot tell (installed plugin packages, or a source the reader
    does not follow): the caller then asks the registry, which imports them all."""
    if any(entry_points(group=group) for group in GROUPS.values()):
        return None
    try:
        found = read_sources()
    except (_Unreadable, OSError, SyntaxError):
        return None
    return sorted(found, key=lambda e: (list(PACKAGES).index(e.kind), e.name))
