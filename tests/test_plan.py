from __future__ import annotations

import pytest

from disguisebench import plan as plan_mod
from disguisebench.api import PluginError
from disguisebench.plan import PlanError


def base(**extra):
    raw = {"tasks": ["toy"], "defenses": ["pixelate"], "attacks": ["template-match"]}
    raw.update(extra)
    return raw


def test_sweep_expands_into_one_spec_per_value():
    plan = plan_mod.from_dict(base(defenses=[{"block-rmt": {"block": [2, 4], "sigma": [0, 50]}}]))
    rmt = [dict(s.params) for s in plan.defenses if s.name == "block-rmt"]
    assert [(p["block"], p["sigma"]) for p in rmt] == [(2, 0), (2, 50), (4, 0), (4, 50)]
    # defaults are spelled out
    assert rmt[0]["matrix"] == "orthogonal"


def test_none_is_always_part_of_a_plan():
    plan = plan_mod.from_dict(base())
    assert [s.name for s in plan.defenses] == ["none", "pixelate"]


def test_literal_list_value_does_not_sweep():
    with pytest.raises(PluginError, match=r"pixelate: block=\[2, 4\] must be an integer"):
        plan_mod.from_dict(base(defenses=[{"pixelate": {"block": {"value": [2, 4]}}}]))


def test_duplicate_specs_are_rejected_with_defaults_spelled_out():
    with pytest.raises(PlanError, match="defense 'pixelate' is listed twice"):
        plan_mod.from_dict(base(defenses=["pixelate", {"pixelate": {"block": 4}}]))


def test_unknown_top_level_key_suggests():
    with pytest.raises(PlanError, match="unknown key 'defences'; did you mean 'defenses'"):
        plan_mod.from_dict({**base(), "defences": []})


def test_unknown_level():
    with pytest.raises(PlanError, match="unknown level 'level-4'"):
        plan_mod.from_dict(base(levels=["level-4"]))


def test_empty_plan(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(PlanError, match="empty.yaml: empty plan"):
        plan_mod.load(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tasks: [toy\ndefenses: none\n")
    with pytest.raises(PlanError, match=r"bad.yaml: invalid YAML at line \d+"):
        plan_mod.load(path)


def test_missing_section():
    with pytest.raises(PlanError, match="needs at least one attack"):
        plan_mod.from_dict({"tasks": ["toy"], "defenses": ["none"]})


def test_default_plan_loads():
    plan = plan_mod.load()
    assert plan.name == "default"
    assert [t.name for t in plan.tasks] == ["mnist"]


def test_override_replaces_lists():
    plan = plan_mod.from_dict(base())
    new = plan_mod.override(plan, defenses="block-rmt", seeds="1,2", levels="level-3")
    assert [s.name for s in new.defenses] == ["none", "block-rmt"]
    assert new.seeds == (1, 2) and new.levels == ("level-3",)
    with pytest.raises(PlanError, match="--seeds must be comma-separated integers"):
        plan_mod.override(plan, seeds="a")


def test_all_names_every_registered_attack():
    from disguisebench import registry

    plan = plan_mod.from_dict(base(attacks="all"))
    assert [s.name for s in plan.attacks] == registry.names("attack")


@pytest.mark.parametrize("path", sorted(plan_mod.DEFAULT_PLAN.parent.glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_plan_loads_with_valid_specs(path):
    p = plan_mod.load(path)
    assert p.name == path.stem and p.tasks and p.defenses and p.attacks
    for spec in (*p.tasks, *p.defenses, *p.attacks):
        spec.build().validate()
