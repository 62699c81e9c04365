"""The reproduction tables read the right records into the right cells."""

from __future__ import annotations

import pytest

from disguisebench import reproduction
from disguisebench.store import Store
from tests._records import NONE, attack, record, spec, utility


def rmt(block: int, sigma: int) -> dict:
    return spec("defense", "block-rmt", block=block, sigma=sigma)


def grid_records() -> list:
    visual = spec("attack", "visual-reid")
    membership = spec("attack", "class-membership")
    recs = [utility(NONE, 0.96), utility(rmt(7, 100), 0.91), utility(rmt(4, 25), 0.88),
            attack(NONE, visual, "level-1", 95, goal="label"),
            attack(rmt(7, 100), visual, "level-1", 12, goal="label")]
    recs.append(record(rmt(7, 100), membership, "level-1", goal="label",
                       metrics={"success": 0.42, "attack.entropy": 1.5, "attack.fano": 33.0,
                                "attack.baseline_entropy": 0.4, "attack.baseline_fano": 80.0,
                                "attack.baseline_accuracy": 0.9}))
    return recs


def test_paper_2019_places_each_figure_in_its_grid_cell():
    text = reproduction.paper_2019(reproduction.Results(grid_records(), task="toy"))
    assert "Plaintext model (`none`): 0.960." in text
    quality, visual, _, membership = ({line.split(" | ")[0].strip("| "): line
                                    for line in section.splitlines() if line.startswith("| ")}
                                   for section in text.split("###")[1:])
    assert quality["7"].split(" | ")[1:] == ["–", "–", "–", "0.910", "– |"]
    assert quality["4"].split(" | ")[2] == "0.880"
    assert visual["7"].split(" | ")[4] == "0.120" and "On plaintext (`none`): 0.950" in text
    assert membership["k=7, σ=100"].split(" | ")[1:] == ["1.500", "33.0", "0.400", "80.0", "0.900",
                                                   "0.420 |"]


def test_comparative_2023_tabulates_the_known_pair_attacks_against_n():
    block4 = spec("defense", "block-rmt", block=4)
    aes = spec("defense", "block-aes", block=4)
    recs = [utility(NONE, 0.96), utility(block4, 0.9), utility(aes, 0.7)]
    for n, k in ((1, 20), (10, 90)):
        kpr = spec("attack", "known-pair-regression", n_pairs=n)
        recs.append(attack(block4, kpr, "level-2", k, goal="reconstruct"))
        book = spec("attack", "aes-codebook", n_pairs=n)
        r = attack(aes, book, "level-2", k // 2, goal="reconstruct")
        r.metrics["attack.hit_rate"] = n / 100
        recs.append(r)
    recs.append(attack(block4, spec("attack", "template-match"), "level-1", 30))
    text = reproduction.comparative_2023(reproduction.Results(recs, task="toy"))
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| ")}
    assert rows["1"][1] == "0.200" and rows["10"][1] == "0.900" and rows["2"][1] == "–"
    assert rows["10"][4] == "0.100" and rows["10"][5] == "0.450"
    assert rows["block-rmt"][1:4] == ["0.900", "0.700", "template-match (0.300)"]
    assert rows["block-rmt"][5] == "known-pair-regression(n_pairs=10) (0.900) |"


def test_cli_names_a_missing_database(tmp_path, capsys):
    with pytest.raises(SystemExit):
        reproduction.main(["paper-2019", "--db", str(tmp_path / "absent.db")])
    assert "absent.db: no such database; run plans/paper-2019.yaml first" in capsys.readouterr().err
    with Store(tmp_path / "r.db") as store:
        for r in grid_records():
            store.add(r)
    reproduction.main(["paper-2019", "--db", str(tmp_path / "r.db"), "--task", "toy"])
    assert "| 7 | – | – | – | 0.910 | – |" in capsys.readouterr().out
