"""Open the generated index.html in headless Chromium, as a reader would, and sort a board.

Skipped only where Chromium, its driver or selenium cannot be found, and never when CI=true:
there the test fails instead, so a CI image without a browser cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from disguisebench import leaderboard, report
from tests import _records as R

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1800")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test (install chromium, "
                    "chromium-driver and the [test] extra)")
    pytest.skip(reason)


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                  "google-chrome", "google-chrome-stable"))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _unavailable("Chromium or chromedriver not found on PATH "
                     "(Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    # An explicit driver path: selenium must never try to download one.
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _defenses(table) -> list[str]:
    return [row.find_elements("tag name", "td")[2].text
            for row in table.find_elements("css selector", "tbody tr")]


def test_page_shows_boards_plots_gallery_and_sorts(tmp_path, browser):
    out = tmp_path / "leaderboard"
    recs = R.page_records(tmp_path / "artifacts")
    report.write(leaderboard.aggregate(recs), out, artifacts=tmp_path / "artifacts",
                 n_records=len(recs))
    browser.get((out / "index.html").as_uri())

    assert browser.title == "DisguiseBench leaderboard"
    headings = [h.text for h in browser.find_elements("css selector", "section h2")]
    assert headings == ["toy(epochs=1) / level-1", "toy(epochs=1) / level-2"]
    # Every plot and gallery image loaded from the file system.
    images = browser.find_elements("css selector", "figure img")
    assert len(images) == 4
    for img in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                      img) > 0, img.get_attribute("src")

    table = browser.find_elements("css selector", "table.board")[0]
    ranked = _defenses(table)
    assert ranked == ["block-rmt", "block-rmt(block=6)", "pixelate", "none"]
    header = {th.text: th for th in table.find_elements("css selector", "thead th")}

    header["defense"].find_element("tag name", "button").click()
    assert _defenses(table) == sorted(ranked)
    assert header["defense"].get_attribute("aria-sort") == "ascending"
    header["defense"].find_element("tag name", "button").click()
    assert _defenses(table) == sorted(ranked, reverse=True)

    header["utility"].find_element("tag name", "button").click()  # most useful first
    assert _defenses(table) == ["none", "block-rmt", "block-rmt(block=6)", "pixelate"]
    assert header["utility"].get_attribute("aria-sort") == "descending"

    header["n/a"].find_element("tag name", "button").click()
    assert _defenses(table) == ranked  # every row has one n/a: ties keep the ranking's order

    header["privacy"].find_element("tag name", "button").click()
    assert _defenses(table) == ranked
    cell = table.find_element("css selector", "tbody tr td:nth-child(4)")
    value, interval = cell.text.splitlines()  # the interval sits under the value
    assert value == "0.900" and re.fullmatch(r"\[0\.8\d, 0\.9\d\]", interval), cell.text

    # Compact by default; every attack's column on demand; either way no wider than the window.
    def fits() -> bool:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('div.scroll')).every("
            "d => d.scrollWidth <= d.clientWidth)")

    attack_heads = table.find_elements("css selector", "thead th.attack")
    assert attack_heads and not any(th.is_displayed() for th in attack_heads)
    assert fits()
    for box in browser.find_elements("css selector", "input.show-attacks"):
        box.click()
    assert all(th.is_displayed() for th in attack_heads) and fits()
    levels = browser.find_element("css selector", "aside.levels").text
    assert "Threat levels" in levels and "known (plaintext, disguised) pairs" in levels
    assert "oracle" in levels

    # The whole page, for a person to look at.
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 100, 8000))
    assert browser.save_screenshot(str(ARTIFACTS / "leaderboard.png"))
