"""The web demo in headless Chromium: load the page from the real server, submit
a text, find the suggested concepts, and keep a screenshot in test-artifacts/;
then the cataloguer's review loop: accept and reject, add a concept found in the
vocabulary, export, teach the project and see the next suggestions change.

With INDEXER_SCREENSHOTS=DIR the loop saves a screenshot of each step in DIR
(docs/screenshots/ holds the ones the README shows)."""

from __future__ import annotations

import json
import os
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
DISC = "http://example.org/disciplines/"
# what the learning project is trained on: energy topics, none about the climate
TRAINING = (
    ("Rooftop solar panels and photovoltaic electricity for households", "c0080"),
    ("Home batteries and grid storage shift electricity into the evening", "c0084"),
    ("Wind turbines and offshore wind farms generate electricity", "c0081"),
    ("Electricity prices, energy markets and the economics of power plants", "c0108"),
    ("Smart grids move flexible loads and balance the electricity network", "c0071"),
    ("Orchestras and symphonies: a history of classical music", "c0160"),
)
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

[learning]
name = Academic disciplines (TF-IDF, learns from the page)
language = en
vocab = disciplines
backend = tfidf
ngram = 1
limit = 8
allow_learn = true
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
    from indexer.project import Projects
    from indexer.rest import create_app

    (tmp_path / "projects.cfg").write_text(CONFIG)
    corpus = tmp_path / "training.tsv"
    corpus.write_text("".join(f"{text}\t<{DISC}{c}>\n" for text, c in TRAINING))
    Projects.from_path(tmp_path / "projects.cfg").get("learning").train([corpus])
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


# -- the review loop ----------------------------------------------------------------

# the page's downloads, kept instead of saved: the Blob behind each object URL
CATCH_DOWNLOADS = """
window.caught = [];
const blobs = new Map();
const create = URL.createObjectURL;
URL.createObjectURL = (blob) => {
  const url = create.call(URL, blob);
  blobs.set(url, blob);
  return url;
};
HTMLAnchorElement.prototype.click = function () {
  window.caught.push({ name: this.download, blob: blobs.get(this.href) });
};
"""
READ_DOWNLOADS = """
const done = arguments[arguments.length - 1];
Promise.all(
  window.caught.map(async (d) => [d.name, d.blob.type, await d.blob.text()]),
).then(done);
"""
READ_CLIPBOARD = """
const done = arguments[arguments.length - 1];
navigator.clipboard.readText().then(done, (err) => done(`failed: ${err}`));
"""


def _screenshot(driver, name: str) -> None:
    """Save a screenshot of the step in $INDEXER_SCREENSHOTS, when it is set."""
    directory = os.environ.get("INDEXER_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(directory) / f"{name}.png"))


def _rows(driver) -> dict:
    """The suggestions shown: label -> (row element, score)."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#results li.result")
    return {
        r.find_element(By.CSS_SELECTOR, ".label").text: (
            r,
            float(r.find_element(By.CSS_SELECTOR, ".score .value").text),
        )
        for r in rows
    }


def _suggest(driver, button: str = "#submit") -> dict:
    """Press `button` and wait for the new suggestions (see _rows)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    old = driver.find_elements(By.CSS_SELECTOR, "#results li.result")
    driver.find_element(By.CSS_SELECTOR, button).click()
    if old:
        _wait(driver, ec.staleness_of(old[0]))
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#results li.result"))
    return _rows(driver)


def _button(row, decision: str):
    from selenium.webdriver.common.by import By

    return row.find_element(By.CSS_SELECTOR, f"button[data-decision={decision}]")


def _review(row) -> tuple[str, str, str]:
    """A suggestion's state: (data-review, Accept's aria-pressed, Reject's)."""
    return (
        row.get_attribute("data-review"),
        _button(row, "accepted").get_attribute("aria-pressed"),
        _button(row, "rejected").get_attribute("aria-pressed"),
    )


def _approved(driver) -> list[tuple[str, str]]:
    """The approved list: (label, origin) in order."""
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, "#approved li")
    return [
        (
            i.find_element(By.CSS_SELECTOR, ".label").text,
            i.find_element(By.CSS_SELECTOR, ".pill").text,
        )
        for i in items
    ]


def _scroll_to(driver, element_id: str) -> None:
    driver.execute_script(
        "document.getElementById(arguments[0]).scrollIntoView({block: 'start'})",
        element_id,
    )


def test_review_loop_teaches_the_project(browser, site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from indexer.corpus import read_documents

    browser.set_window_size(1200, 900)
    browser.get(site + "/")
    _wait(browser, _projects_loaded)
    Select(browser.find_element(By.ID, "project")).select_by_value("learning")
    browser.execute_script(CATCH_DOWNLOADS)
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {
            "origin": site,
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        },
    )
    text = EXAMPLE.read_text(encoding="utf-8")
    _set_text(browser, text)
    # the project was trained on 6 documents: the page fetched its detail
    _wait(
        browser, lambda d: "6 documents" in d.find_element(By.ID, "project-meta").text
    )

    # 1. suggest: an associative project suggests only what it was trained on
    rows = _suggest(browser)
    assert {"solar power", "energy storage", "wind power"} <= rows.keys()
    assert "climate change" not in rows
    solar_before = rows["solar power"][1]
    _screenshot(browser, "1-suggest")

    # 2. reject with the mouse, accept with the keyboard; a second press undoes
    wind, solar = rows["wind power"][0], rows["solar power"][0]
    _button(wind, "rejected").click()
    accept = _button(solar, "accepted")
    accept.send_keys(Keys.SPACE)
    assert browser.switch_to.active_element == accept
    focus_ring = "return getComputedStyle(document.activeElement).boxShadow"
    assert browser.execute_script(focus_ring) != "none"
    assert _review(solar) == ("accepted", "true", "false")
    accept.send_keys(Keys.SPACE)
    assert _review(solar) == ("", "false", "false")
    accept.send_keys(Keys.ENTER)
    _button(rows["energy storage"][0], "accepted").click()
    assert _review(solar) == ("accepted", "true", "false")
    assert _review(wind) == ("rejected", "false", "true")
    assert _approved(browser) == [
        ("solar power", "suggested"),
        ("energy storage", "suggested"),
    ]
    summary = browser.find_element(By.ID, "approved-summary").text
    assert summary == "2 approved · 1 rejected"
    _screenshot(browser, "2-accept-reject")

    # 3. add a concept found in the vocabulary: the hierarchy tells similar ones apart
    search = browser.find_element(By.ID, "concept-query")
    search.send_keys("climate")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#concepts li.concept"))
    found = {
        c.find_element(By.CSS_SELECTOR, ".path .label").text: c
        for c in browser.find_elements(By.CSS_SELECTOR, "#concepts li.concept")
    }
    assert list(found)[:3] == [
        "climate change",
        "climate change mitigation",
        "climate change adaptation",
    ]
    paths = {
        label: c.find_element(By.CSS_SELECTOR, ".path").text
        for label, c in found.items()
    }
    assert paths["climate change"] == "environmental sciences › climate change 11.1"
    assert paths["climate change mitigation"].startswith(
        "environmental sciences › climate change › climate change mitigation"
    )
    add = found["climate change"].find_element(By.CSS_SELECTOR, "button.add")
    add.click()
    assert add.get_attribute("aria-pressed") == "true" and add.text.endswith("Added")
    assert _approved(browser)[-1] == ("climate change", "added")
    _scroll_to(browser, "review")
    _screenshot(browser, "3-add-by-search")

    # 4. export: TSV as corpora have it (<uri> TAB label), JSON, the clipboard
    browser.find_element(By.ID, "download-tsv").click()
    browser.find_element(By.ID, "download-json").click()
    browser.find_element(By.ID, "copy-tsv").click()
    _wait(browser, lambda d: "Copied" in d.find_element(By.ID, "export-status").text)
    approved = [
        (f"{DISC}c0080", "solar power"),
        (f"{DISC}c0084", "energy storage"),
        (f"{DISC}c0176", "climate change"),
    ]
    tsv = "".join(f"<{uri}>\t{label}\n" for uri, label in approved)
    downloads = browser.execute_async_script(READ_DOWNLOADS)
    assert [(name, kind.split(";")[0]) for name, kind, _ in downloads] == [
        ("subjects.tsv", "text/tab-separated-values"),
        ("subjects.json", "application/json"),
    ]
    assert downloads[0][2] == tsv
    assert json.loads(downloads[1][2]) == [
        {"uri": uri, "label": label} for uri, label in approved
    ]
    assert browser.execute_async_script(READ_CLIPBOARD) == tsv
    assert (
        browser.find_element(By.ID, "export-preview").get_attribute("textContent")
        == tsv
    )
    # a full-text corpus reads the file back: the page's text with these subjects
    (tmp_path / "doc").mkdir()
    (tmp_path / "doc" / "d1.txt").write_text(text, encoding="utf-8")
    (tmp_path / "doc" / "d1.tsv").write_text(downloads[0][2], encoding="utf-8")
    [document] = read_documents(tmp_path / "doc")
    assert document.uris == [uri for uri, _ in approved]

    # 5. teach the project: the text and the three approved subjects
    teach = browser.find_element(By.ID, "teach")
    assert teach.is_enabled()
    assert "3 approved subjects" in browser.find_element(By.ID, "teach-hint").text
    teach.click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#teach-result.ok"))
    assert (
        "learned this text with 3 subjects"
        in browser.find_element(By.ID, "teach-result").text
    )
    _wait(
        browser, lambda d: "7 documents" in d.find_element(By.ID, "project-meta").text
    )
    assert not teach.is_enabled()  # not twice by accident
    assert "Taught" in browser.find_element(By.ID, "teach-hint").text
    browser.execute_script(
        "document.querySelector('.teach').scrollIntoView({block: 'center'})"
    )
    _screenshot(browser, "4-teach")

    # 6. suggest again: the added concept is now suggested, first, and marked new;
    # the accepted ones score higher, and the decisions stay
    rows = _suggest(browser, "#teach-result button")
    first = browser.find_element(By.CSS_SELECTOR, "#results li.result")
    assert first.find_element(By.CSS_SELECTOR, ".label").text == "climate change"
    assert first.find_element(By.CSS_SELECTOR, ".change").text == "new"
    assert _review(first) == ("accepted", "true", "false")
    solar, solar_after = rows["solar power"]
    assert solar_after > solar_before
    change = solar.find_element(By.CSS_SELECTOR, ".change").text
    # both scores are shown rounded to 3 decimals, the change too
    assert change.startswith("+")
    assert float(change) == pytest.approx(solar_after - solar_before, abs=0.0011)
    assert _review(rows["wind power"][0]) == ("rejected", "false", "true")
    browser.execute_script("window.scrollTo(0, 0)")
    _screenshot(browser, "5-suggest-again")

    # 7. the same page on a phone: nothing wider than the screen
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    _wait(browser, lambda d: d.execute_script("return window.innerWidth") == 390)
    _scroll_to(browser, "results-title")
    overflow = browser.execute_script(
        "const root = document.documentElement;"
        "return [root.scrollWidth, root.clientWidth];"
    )
    assert overflow[0] <= overflow[1], f"horizontal scroll on a phone: {overflow}"
    _screenshot(browser, "6-phone")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


# labels a spreadsheet would run, and URIs with tabs and line breaks
HOSTILE = [
    ("http://x/a\tb\nc", '=HYPERLINK("http://evil.example/","click")'),
    ("http://x/p", "+cmd|' /C calc'!A0"),
    ("http://x/q", "@SUM(1+1)\tx\ny"),
    ("http://x/r", "-2+3"),
    ("http://x/s", "\t=1+1"),
    ("http://x/t", "\r=1+1"),
    ("http://x/u", "\uff1dSUM(1)"),
    ("http://x/v", "solar power - grid"),
]


def test_the_tsv_export_is_safe_to_open_in_a_spreadsheet(browser, site):
    """OWASP's advice against CSV injection: a cell starting with = + - @, a tab
    or a carriage return is prefixed with ', each field is on one line; the
    JSON export is exact."""
    from selenium.webdriver.common.by import By

    browser.get(site + "/")
    _wait(browser, _projects_loaded)
    browser.execute_script(CATCH_DOWNLOADS)
    browser.execute_script(
        "for (const [uri, label] of arguments[0]) {"
        "  state.approved.set(uri, { uri, label, origin: 'added' });"
        "}"
        "renderReview();",
        HOSTILE,
    )
    browser.find_element(By.ID, "download-tsv").click()
    browser.find_element(By.ID, "download-json").click()
    (_, _, tsv), (_, _, exact) = browser.execute_async_script(READ_DOWNLOADS)
    assert tsv.splitlines() == [
        '<http://x/a%09b%0Ac>\t\'=HYPERLINK("http://evil.example/","click")',
        "<http://x/p>\t'+cmd|' /C calc'!A0",
        "<http://x/q>\t'@SUM(1+1) x y",
        "<http://x/r>\t'-2+3",
        "<http://x/s>\t'=1+1",
        "<http://x/t>\t'=1+1",
        "<http://x/u>\t'\uff1dSUM(1)",
        "<http://x/v>\tsolar power - grid",
    ]
    assert tsv.endswith("\n") and tsv.count("\n") == len(HOSTILE)
    assert json.loads(exact) == [{"uri": u, "label": label} for u, label in HOSTILE]


def test_teaching_a_project_that_does_not_allow_it(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/")
    _wait(browser, _projects_loaded)
    projects = Select(browser.find_element(By.ID, "project"))
    projects.select_by_value("untrained")
    projects.select_by_value("demo")  # the page remembers the choice
    teach, hint = (
        browser.find_element(By.ID, "teach"),
        browser.find_element(By.ID, "teach-hint"),
    )
    assert not teach.is_enabled()
    assert "does not allow learning" in hint.text and "API key" in hint.text
    _set_text(browser, EXAMPLE.read_text(encoding="utf-8"))
    rows = _suggest(browser)
    _button(rows["solar power"][0], "accepted").click()
    assert not teach.is_enabled()

    # with a key typed in, the page asks, and shows the server's answer
    browser.find_element(By.ID, "api-key").send_keys("a-guessed-key")
    assert teach.is_enabled()
    teach.click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#teach-result.alert"))
    result = browser.find_element(By.ID, "teach-result").text
    assert "Forbidden" in result
    assert "Project 'demo' is not configured to allow learning via API" in result
    assert teach.is_enabled()  # refused, so it may be tried again
    stored = browser.execute_script(
        "return Array.from({length: localStorage.length}, (_, i) =>"
        " [localStorage.key(i), localStorage.getItem(localStorage.key(i))])"
    )
    assert stored == [["indexer.project", "demo"]]  # the key is not kept
