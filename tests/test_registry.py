from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from disguisebench import registry
from disguisebench.api import Defense, PluginError
from disguisebench.registry import RegistryError


def test_in_tree_plugins_are_found_without_any_setup():
    assert {"none", "pixelate", "block-rmt"} <= set(registry.names("defense"))
    assert {"visual-reid", "template-match"} <= set(registry.names("attack"))
    assert {"mnist", "toy"} <= set(registry.names("task"))


def test_unknown_name_suggests_the_closest_and_lists_known():
    with pytest.raises(RegistryError, match=r"unknown defense 'pixelat'; did you mean 'pixelate'\? "
                                            r"Known defenses: .*block-rmt.*none.*pixelate"):
        registry.get("defense", "pixelat")


def test_unknown_parameter_suggests_the_closest():
    with pytest.raises(RegistryError, match=r"defense 'pixelate' has no parameter 'blok'; "
                                            r"did you mean 'block'\?"):
        registry.create("defense", "pixelate", {"blok": 4})


def test_bad_parameter_value_names_it():
    with pytest.raises(PluginError, match=r"block-rmt: matrix='haar' is not one of"):
        registry.create("defense", "block-rmt", {"matrix": "haar"})


def test_name_collision_names_both_sides():
    class Other(Defense):
        def __init__(self) -> None:
            pass

    with pytest.raises(RegistryError, match=r"registered twice: by disguisebench\.defenses\.pixelate\.Pixelate "
                                            r"and by .*Other"):
        registry.register("pixelate")(Other)


def test_a_temporary_plugin_is_known_inside_the_block_only():
    class Passing(Defense):
        """Leaves images as they are."""

        def __init__(self) -> None:
            pass

    with registry.temporary("passing-thing", Passing) as cls:
        assert cls is Passing and registry.get("defense", "passing-thing") is Passing
        assert "passing-thing" in registry.names("defense")
        with pytest.raises(RegistryError, match="'pixelate' is registered twice"):
            with registry.temporary("pixelate", Passing):
                pass
    with pytest.raises(RegistryError, match="unknown defense 'passing-thing'"):
        registry.get("defense", "passing-thing")
    assert registry.get("defense", "pixelate").__name__ == "Pixelate"


def test_a_subclass_that_declares_defaults_has_its_parents_signature_with_them():
    class Base(Defense):
        def __init__(self, *, block: int = 4, sigma: float = 0.0, mode: str = "a") -> None:
            self.block = block
            self.sigma = sigma
            self.mode = mode

    class Changed(Base):
        DEFAULTS = {"sigma": 2.0, "mode": "b"}

    assert Changed.param_names() == ["block", "sigma", "mode"]
    assert Changed.defaults() == {"block": 4, "sigma": 2.0, "mode": "b"}
    assert Changed().get_params() == {"block": 4, "sigma": 2.0, "mode": "b"}
    assert Changed(block=2, mode="c").get_params() == {"block": 2, "sigma": 2.0, "mode": "c"}
    assert Changed(block=3).clone().get_params() == {"block": 3, "sigma": 2.0, "mode": "b"}
    with pytest.raises(TypeError, match="DEFAULTS names no parameter of __init__: blok"):
        type("Typo", (Base,), {"DEFAULTS": {"blok": 2}})
    with pytest.raises(TypeError, match="declare DEFAULTS or an __init__, not both"):
        type("Both", (Base,), {"DEFAULTS": {"block": 2}, "__init__": Base.__init__})


def test_entry_point_plugins_are_registered(monkeypatch):
    class External(Defense):
        """An installed defense."""

        def __init__(self, strength: int = 1) -> None:
            self.strength = strength

    import sys
    import types

    module = types.ModuleType("ext_defense_pkg")
    module.External = External
    monkeypatch.setitem(sys.modules, "ext_defense_pkg", module)
    ep = EntryPoint(name="external-thing", value="ext_defense_pkg:External",
                    group="disguisebench.defenses")

    def fake_entry_points(group: str):
        return [ep] if group == "disguisebench.defenses" else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    registry.refresh()
    try:
        assert registry.get("defense", "external-thing") is External
        assert "entry point ext_defense_pkg:External" in registry.origin("defense", "external-thing")
    finally:
        monkeypatch.undo()
        registry.refresh()
    assert "external-thing" not in registry.names("defense")  # uninstalled: forgotten


def test_in_tree_import_error_propagates(monkeypatch, tmp_path):
    from disguisebench import defenses

    bad = tmp_path / "broken_defense.py"
    bad.write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.setattr(defenses, "__path__", [*defenses.__path__, str(tmp_path)])
    registry.refresh()
    with pytest.raises(ImportError, match="missing dependency xyz"):
        registry.names("defense")
    monkeypatch.undo()
    registry.names("defense")  # the broken folder gone, discovery succeeds again


def test_kebab_case_enforced():
    class Bad(Defense):
        def __init__(self) -> None:
            pass

    with pytest.raises(RegistryError, match="must be kebab-case"):
        with registry.temporary("Bad_Name", Bad):
            pass
