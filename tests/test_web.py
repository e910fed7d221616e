"""The web demo in headless Chromium: load the page from the real server, submit
a text, find the suggested concepts, and keep a screenshot in test-artifacts/."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.test_rest import running_server

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
EXAMPLE = ROOT / "vocabularies" / "examples" / "solar-power.txt"
CONFIG = f"""
[vocab:disciplines]
source = {ROOT / "vocabularies" / "disciplines.ttl"}

[demo]
name = Academic disciplines (English, zero-shot label matching)
language = en
vocab = disciplines
backend = lexical
limit = 8
threshold = 0.2

[untrained]
name = Academic disciplines (TF-IDF, not trained)
language = en
vocab = disciplines
backend = tfidf
"""
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1360,1000",
)


@pytest.fixture
def browser(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("chromium and chromedriver are not installed (see .ci/run)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site(tmp_path: Path):
    from indexer.rest import create_app

    (tmp_path / "projects.cfg").write_text(CONFIG)
    app = create_app(tmp_path / "projects.cfg", api_key="", preload=True)
    with running_server(app) as base:
        yield base


def _wait(driver, condition, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _projects_loaded(driver) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "project").get_attribute("disabled") is None


def _set_text(driver, text: str) -> None:
    # typing 1.7 kB key by key is slow; the page listens to `input` events
    driver.execute_script(
        "const box = document.getElementById('text');"
        "box.value = arguments[0];"
        "box.dispatchEvent(new Event('input'));",
        text,
    )


def test_page_suggests_concepts(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/")
    _wait(browser, _projects_loaded)
    assert "Subject indexer" in browser.title
    Select(browser.find_element(By.ID, "project")).select_by_value("demo")
    assert browser.find_element(By.ID, "limit").get_attribute("value") == "8"
    _set_text(browser, EXAMPLE.read_text(encoding="utf-8"))
    browser.find_element(By.ID, "submit").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results li.result"))

    rows = browser.find_elements(By.CSS_SELECTOR, "#results li.result")
    labels = [r.find_element(By.CSS_SELECTOR, ".label").text for r in rows]
    assert "solar power" in labels and "energy storage" in labels
    assert len(rows) <= 8
    link = rows[0].find_element(By.CSS_SELECTOR, "a.label")
    assert link.get_attribute("href").startswith("http://example.org/disciplines/")
    scores = [
        float(r.find_element(By.CSS_SELECTOR, ".score .value").text) for r in rows
    ]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1
    assert rows[0].find_elements(By.CSS_SELECTOR, ".bar span")
    assert "label match" in rows[0].find_element(By.CSS_SELECTOR, ".why").text
    assert browser.find_element(By.ID, "error").is_displayed() is False
    assert browser.find_element(By.ID, "loading").is_displayed() is False
    assert "subjects" in browser.find_element(By.ID, "summary").text

    _wait(
        browser,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('.bar span')]"
            ".every(s => s.getBoundingClientRect().width > 0)"
        ),
    )
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "web-demo.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_page_shows_server_errors(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/")
    _wait(browser, _projects_loaded)
    Select(browser.find_element(By.ID, "project")).select_by_value("untrained")
    assert "not trained" in browser.find_element(By.ID, "project-meta").text
    _set_text(browser, "Solar power and batteries")
    browser.find_element(By.ID, "submit").click()
    _wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
    error = browser.find_element(By.ID, "error").text
    assert "Project not trained" in error and "indexer train untrained" in error
    assert not browser.find_elements(By.CSS_SELECTOR, "#results li.result")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-demo-error.png"))
