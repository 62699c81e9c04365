"""Files a user hands us are never unpickled: YAML through safe_load, models through safetensors."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "defenses", "attacks", "tasks")

UNSAFE = {
    r"\byaml\.load\(": "yaml.load (use yaml.safe_load)",
    r"\byaml\.unsafe_load\(": "yaml.unsafe_load",
    r"\bpickle\.loads?\(": "pickle.load",
    r"\bcloudpickle\.loads?\(": "cloudpickle.load",
    r"\bjoblib\.load\(": "joblib.load",
    r"allow_pickle\s*=\s*True": "numpy allow_pickle=True",
}


def sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_no_unsafe_deserialisation_in_the_package():
    found = []
    for path in sources():
        text = path.read_text()
        for pattern, what in UNSAFE.items():
            for match in re.finditer(pattern, text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert found == []


def test_torch_load_always_weights_only():
    calls = []
    for path in sources():
        for match in re.finditer(r"\btorch\.load\(([^)]*)\)", path.read_text()):
            if "weights_only=True" not in match.group(1):
                calls.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert calls == []


def test_scanner_would_catch_an_unsafe_call(tmp_path):
    sample = "import pickle\nobj = pickle.load(open('x', 'rb'))\ncfg = yaml.load(text)\n"
    hits = [what for pattern, what in UNSAFE.items() if re.search(pattern, sample)]
    assert hits == ["yaml.load (use yaml.safe_load)", "pickle.load"]


def test_cifar_batches_refuse_code_carrying_pickles(tmp_path):
    import os
    import pickle

    import pytest

    from disguisebench.api import PluginError
    from disguisebench.tasks.cifar10 import read_batches

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(PluginError, match=r"refusing to load posix\.system"):
        read_batches(tmp_path, ("data_batch_1",), "cifar10")
