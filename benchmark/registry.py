"""Plugin registry: registry name -> class, for defenses, attacks and tasks.

In-tree plugins register with ``@register("name")`` in their module under ``defenses/``,
``attacks/`` or ``tasks/``; those modules are imported on the first lookup, and an import error
there propagates. Installed packages declare entry points in the groups
``disguisebench.defenses``, ``disguisebench.attacks`` and ``disguisebench.tasks``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, TypeVar

from disguisebench.api import Attack, Defense, Plugin, PluginError, Task
from disguisebench.catalog import GROUPS as _GROUPS, PACKAGES as _PACKAGES

KINDS: dict[str, type[Plugin]] = {"defense": Defense, "attack": Attack, "task": Task}

_registry: dict[str, dict[str, type[Plugin]]] = {kind: {} for kind in KINDS}
_origin: dict[tuple[str, str], str] = {}
_discovered = False

P = TypeVar("P", bound=type[Plugin])


class RegistryError(PluginError):
    """An unknown or colliding plugin name, or bad parameters for one."""


def _kind_of(cls: type) -> str:
    for kind, base in KINDS.items():
        if isinstance(cls, type) and issubclass(cls, base):
            return kind
    raise RegistryError(f"{cls!r} is not a Defense, Attack or Task subclass")


def _add(cls: type[Plugin], name: str, origin: str) -> None:
    kind = _kind_of(cls)
    if not name or name != name.lower() or " " in name or "_" in name:
        raise RegistryError(f"{kind} name {name!r} must be kebab-case, for example 'block-rmt'")
    existing = _registry[kind].get(name)
    if existing is not None and existing is not cls:
        raise RegistryError(
            f"{kind} name {name!r} is registered twice: by {_origin[(kind, name)]} and by {origin}"
        )
    cls.name = name
    _registry[kind][name] = cls
    _origin[(kind, name)] = origin


def register(name: str) -> Callable[[P], P]:
    """Class decorator registering an in-tree plugin under ``name``."""

    def decorate(cls: P) -> P:
        _add(cls, name, f"{cls.__module__}.{cls.__qualname__}")
        return cls

    return decorate


@contextlib.contextmanager
def temporary(name: str, cls: P) -> Iterator[P]:
    """Register ``cls`` as ``name`` inside a ``with`` block only (tests, notebooks): plans, the
    runner and ``create`` know the name there, and forget it after. A name already taken by
    another class is refused as ``register`` refuses it."""
    _discover()
    kind = _kind_of(cls)
    _add(cls, name, f"temporary {cls.__module__}.{cls.__qualname__}")
    try:
        yield cls
    finally:
        _registry[kind].pop(name, None)
        _origin.pop((kind, name), None)


def refresh() -> None:
    """Forget the plugins installed through entry points and look again at the next lookup: after
    a plugin package is installed or removed in a running session (a notebook, a test)."""
    global _discovered
    for kind, name in [key for key, origin in _origin.items() if origin.startswith("entry point")]:
        _registry[kind].pop(name, None)
        _origin.pop((kind, name), None)
    _discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    try:
        for kind, package in _PACKAGES.items():
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        for kind, group in _GROUPS.items():
            for ep in entry_points(group=group):
                cls = ep.load()
                if _kind_of(cls) != kind:
                    raise RegistryError(
                        f"entry point {ep.name!r} in group {group!r} is not a {kind}: {cls!r}"
                    )
                _add(cls, ep.name, f"entry point {ep.value} ({ep.dist.name if ep.dist else '?'})")
    except BaseException:
        _discovered = False
        raise


def names(kind: str) -> list[str]:
    _check_kind(kind)
    _discover()
    return sorted(_registry[kind])


def get(kind: str, name: str) -> type[Plugin]:
    """The class registered as ``name``; an unknown name lists the known ones and the closest."""
    _check_kind(kind)
    _discover()
    try:
        return _registry[kind][name]
    except KeyError:
        known = sorted(_registry[kind])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RegistryError(
            f"unknown {kind} {name!r}{hint or '.'} Known {kind}s: {', '.join(known)}"
        ) from None


def create(kind: str, name: str, params: dict[str, Any] | None = None) -> Any:
    """Instantiate a registered plugin, checking parameter names and values."""
    cls = get(kind, name)
    params = dict(params or {})
    allowed = cls.param_names()
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"{kind} {name!r} has no parameter {key!r}{hint or '.'} "
                f"Parameters: {', '.join(allowed) or '(none)'}"
            )
    plugin = cls(**params)
    plugin.validate()
    return plugin


def origin(kind: str, name: str) -> str:
    get(kind, name)
    return _origin[(kind, name)]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"unknown plugin kind {kind!r}; expected one of {', '.join(KINDS)}")
