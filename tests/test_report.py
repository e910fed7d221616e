"""Evaluation reports: the HTML a person opens (plots, concept table, no
network), the JSON with the numbers of `indexer eval`, the project's last
report over REST, and the page in headless Chromium."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.report import data as D
from indexer.suggestion import SuggestionBatch
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[1]

# a src/href/xlink:href/action attribute or CSS url() that reaches the network
NETWORK = re.compile(
    r"""(?:\b(?:src|href|action|data|poster)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|url\(\s*["']?\s*(?:https?:)?//|@import""",
    re.I,
)


@pytest.fixture
def trained(run_cli, tiny_corpus):
    result = run_cli("train", "tfidf-en", str(tiny_corpus))
    assert result.exit_code == 0, result.output
    return run_cli


def test_html_report_has_plots_and_table_and_loads_nothing(trained, workspace):
    report = workspace / "out" / "report.html"
    result = trained(
        "eval", "tfidf-en", str(DATA / "tiny.tsv"), "--report", str(report)
    )
    assert result.exit_code == 0, result.output
    page = report.read_text()
    # limit, threshold, seen/unseen and reliability plots, inline
    assert page.count("<svg") == 4
    assert 'aria-label="reliability diagram"' in page
    table = re.search(r'<table id="concepts">.*?</table>', page, re.S).group(0)
    assert table.count("<tr>") == 1 + 7  # header + the 7 concepts that occurred
    assert "http://example.org/t/astronomy" in table
    assert "<script>" in page and "aria-sort" in page
    # self-contained: nothing fetched from anywhere
    assert not NETWORK.search(page), NETWORK.search(page)
    assert not re.search(r"<link\b[^>]*stylesheet", page, re.I)
    assert not re.search(r"<(?:script|img|iframe)\b[^>]*\bsrc=", page, re.I)
    # the project keeps it as its last report
    kept = workspace / "data" / "projects" / "tfidf-en" / "report.html"
    assert kept.read_text() == page
    assert "Evaluated on the corpus that tfidf-en was trained on" in page


def test_network_check_catches_what_it_should():
    for bad in (
        '<img src="https://cdn.example/x.png">',
        "<link rel=stylesheet href=//cdn.example/s.css>",
        "<style>@import 'x.css'</style>",
        "<div style=\"background:url('http://x/y.png')\">",
        '<use xlink:href="http://x/sprite.svg#a"/>',
    ):
        assert NETWORK.search(bad), bad
    assert not NETWORK.search('<svg xmlns="http://www.w3.org/2000/svg">')


def test_json_report_has_the_numbers_of_indexer_eval(trained, workspace):
    corpus = str(DATA / "tiny.tsv")
    metrics_file = workspace / "m.json"
    args = ("eval", "tfidf-en", corpus, "--bootstrap", "100")
    assert trained(*args, "--metrics-file", str(metrics_file)).exit_code == 0
    report_file = workspace / "r.json"
    result = trained(*args, "--report", str(report_file))
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    # no unseen gold subjects: unseen recall is NaN, written as null
    expected = json.loads(metrics_file.read_text(), parse_constant=strict)
    assert expected["unseen_recall@1"] is None
    assert report["metrics"]["unseen_recall@1"] is None
    for name, value in report["metrics"].items():
        assert value == (pytest.approx(expected[name]) if value is not None else None)
    assert report["intervals"] == expected["bootstrap"]["intervals"]
    # the curves pass through the operating point `indexer eval` measured
    limit, threshold = report["settings"]["limit"], report["settings"]["threshold"]
    at_limit = report["limit_curve"][limit - 1]
    assert at_limit["f1"] == pytest.approx(expected["f1"])
    assert at_limit["precision"] == pytest.approx(expected["precision"])
    at_threshold = next(
        p for p in report["threshold_curve"] if p["threshold"] == threshold
    )
    assert at_threshold["recall"] == pytest.approx(expected["recall"])
    # and everything needed to reproduce it
    import hashlib

    digest = hashlib.sha256(Path(corpus).read_bytes()).hexdigest()
    assert report["corpus"]["sha256"] == {corpus: digest}
    assert report["models"]["tfidf-en"]["backend"] == "tfidf"
    # the command that reproduces it, however this one was started
    import shlex

    assert shlex.split(report["command"]) == [
        "indexer", "eval", "tfidf-en", corpus,
        "--limit", str(limit), "--threshold", str(threshold),
        "--bootstrap", "100", "--seed", "0", "--report", str(report_file),
    ]  # fmt: skip
    assert re.match(r"\d{4}-\d\d-\d\dT", report["created"])
    assert report["corpus"]["trained_on_this_corpus"] == ["tfidf-en"]
    per_concept = {r["label"]: r for r in report["concepts"]["rows"]}
    assert per_concept["music"]["support"] == 1
    assert per_concept["music"]["suggested"] == 10


def test_fusion_report_shows_each_source_on_the_same_documents(trained, workspace):
    corpus = str(DATA / "tiny.tsv")
    report_file = workspace / "e.json"
    result = trained("eval", "ensemble-en", corpus, "--report", str(report_file))
    assert result.exit_code == 0, result.output
    sources = {r["project"]: r for r in json.loads(report_file.read_text())["sources"]}
    assert set(sources) == {"ensemble-en", "tfidf-en", "lexical-en"}
    assert sources["ensemble-en"]["fusion"] and not sources["tfidf-en"]["fusion"]
    for project in ("tfidf-en", "lexical-en", "ensemble-en"):
        metrics_file = workspace / f"{project}.json"
        trained("eval", project, corpus, "--metrics-file", str(metrics_file))
        expected = json.loads(metrics_file.read_text())
        assert sources[project]["f1@5"] == pytest.approx(expected["f1@5"]), project
    html = workspace / "e.html"
    assert trained("eval", "ensemble-en", corpus, "--report", str(html)).exit_code == 0
    page = html.read_text()
    assert page.count("<svg") == 5  # and the sources' plot
    plot = re.search(r'<svg[^>]*aria-label="f1@5 of each source.*?</svg>', page, re.S)
    # one bar, labelled, for each source and the fusion (none cut off)
    for project in sources:
        assert f">{project}</text>" in plot.group(0), project


def test_report_errors(trained, workspace, monkeypatch):
    corpus = str(DATA / "tiny.tsv")
    result = trained("eval", "tfidf-en", corpus, "--report", str(workspace / "r.pdf"))
    assert result.exit_code == 2 and ".html file" in result.output
    # without matplotlib: an error naming the extra, and the JSON still works
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = trained("eval", "tfidf-en", corpus, "--report", str(workspace / "r.html"))
    assert result.exit_code == 1
    assert "subject-indexer[report]" in result.output
    assert not (workspace / "r.html").exists()
    # said before the evaluation starts, not after it (it reads no corpus)
    missing = str(workspace / "missing.tsv")
    result = trained("eval", "tfidf-en", missing, "--report", str(workspace / "r.html"))
    assert "subject-indexer[report]" in result.output
    result = trained("eval", "tfidf-en", corpus, "--report", str(workspace / "r.json"))
    assert result.exit_code == 0, result.output


def ranked_example():
    """Two documents: gold {0, 1} and {3}; subject 3 was never seen in training."""
    rows = [([0, 2, 1], [0.95, 0.45, 0.35]), ([4, 3], [0.75, 0.15])]
    batch = SuggestionBatch.from_rows(rows, 5)
    return D.Ranked([([[0, 1], [3]], batch)], 5)


def test_seen_and_unseen_recall_at_k():
    curves = D.seen_unseen(ranked_example(), np.array([1, 1, 1, 0, 1]))
    assert (curves["gold_seen"], curves["gold_unseen"]) == (2, 1)
    seen = [p["recall"] for p in curves["seen"]]
    unseen = [p["recall"] for p in curves["unseen"]]
    assert seen[:3] == [0.5, 0.5, 1.0]  # subject 1 is found at rank 3
    assert unseen[:2] == [0.0, 1.0]  # subject 3 at rank 2
    assert len(seen) == D.MAX_LIMIT and seen[-1] == 1.0
    assert D.seen_unseen(ranked_example(), None) is None


def test_reliability_bins_count_and_share_correct():
    data = D.calibration(ranked_example(), limit=2)
    bins = {round(b["low"], 1): b for b in data["bins"] if b["count"]}
    # top 2: 0.95 (hit), 0.45 (miss); 0.75 (miss), 0.15 (hit)
    assert data["suggestions"] == 4
    assert {k: (b["count"], b["share_correct"]) for k, b in bins.items()} == {
        0.9: (1, 1.0),
        0.4: (1, 0.0),
        0.7: (1, 0.0),
        0.1: (1, 1.0),
    }
    assert data["ece"] == pytest.approx((0.05 + 0.45 + 0.75 + 0.85) / 4, abs=1e-6)


def test_rest_serves_the_last_report(trained, workspace):
    from indexer.rest import create_app

    client = create_app(workspace / "projects.cfg", api_key="", check_interval=0)
    client = client.test_client()
    missing = client.get("/v1/projects/tfidf-en/report")
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert "--report report.html" in missing.get_json()["detail"]
    assert client.get("/v1/projects/nope/report").status_code == 404
    assert client.get("/v1/projects/tfidf-en").get_json()["evaluation_report"] is None
    corpus = str(DATA / "tiny.tsv")
    report = workspace / "r.html"
    assert trained("eval", "tfidf-en", corpus, "--report", str(report)).exit_code == 0
    response = client.get("/v1/projects/tfidf-en/report")
    assert response.status_code == 200 and response.mimetype == "text/html"
    # no key: every caller gets the copy without server details
    public = next(workspace.rglob("report.public.html"))
    assert response.get_data(as_text=True) == public.read_text()
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    detail = client.get("/v1/projects/tfidf-en").get_json()
    assert detail["evaluation_report"] == "projects/tfidf-en/report"
    spec = client.get("/v1/openapi.json").get_json()
    operation = spec["paths"]["/v1/projects/{project_id}/report"]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/html"]


def test_rest_serves_callers_without_the_key_a_report_without_server_details(
    trained, workspace
):
    from indexer.rest import create_app

    app = create_app(workspace / "projects.cfg", api_key="KEY", check_interval=0)
    client = app.test_client()
    corpus = str(DATA / "tiny.tsv")  # a path on the server
    report = workspace / "r.html"
    assert trained("eval", "dummy-en", corpus, "--report", str(report)).exit_code == 0
    # dummy-en's uri is a URL: GET /v1/projects/dummy-en withholds it
    assert client.get("/v1/projects/dummy-en").get_json()["params"]["uri"] is None
    shown = "uri&quot;: &quot;http://example.org/t/physics"
    public = client.get("/v1/projects/dummy-en/report")
    assert public.status_code == 200
    page = public.get_data(as_text=True)
    assert shown not in page and corpus not in page
    assert "tiny.tsv" in page and "(hidden)" in page
    keyed = client.get("/v1/projects/dummy-en/report", headers={"X-API-Key": "KEY"})
    assert keyed.get_data(as_text=True) == report.read_text()
    assert shown in report.read_text() and corpus in report.read_text()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium, as the web page's tests drive it."""
    from tests.test_web import CHROMEDRIVER, CHROMIUM, FLAGS

    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("chromium and chromedriver are not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_in_headless_chromium(trained, workspace, browser):
    """The page as a person sees it: plots drawn, the concept table sorts and
    filters, no request leaves the page; keeps a screenshot."""
    from selenium.webdriver.common.by import By

    report = workspace / "r.html"
    corpus = str(DATA / "tiny.tsv")
    assert trained("eval", "tfidf-en", corpus, "--report", str(report)).exit_code == 0
    browser.get(report.as_uri())
    plots = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    assert len(plots) == 4 and all(p.size["width"] > 300 for p in plots)

    def labels():
        return [
            r.find_element(By.TAG_NAME, "td").get_attribute("data-v")
            for r in browser.find_elements(By.CSS_SELECTOR, "#concepts tbody tr")
            if r.is_displayed()
        ]

    browser.find_element(By.XPATH, "//table[@id='concepts']//th[1]").click()
    assert labels() == sorted(labels())
    # numbers sort largest first: music was suggested wrongly 9 times
    browser.find_element(By.XPATH, "//table[@id='concepts']//th[5]").click()
    assert labels()[0] == "music"
    browser.find_element(By.ID, "filter").send_keys("astro")
    assert labels() == ["astronomy"]
    assert browser.find_element(By.ID, "shown").text == "1"
    entries = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert entries == []
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    browser.save_screenshot(str(artifacts / "report.png"))


def test_web_page_links_the_last_report(trained, workspace, browser):
    """The demo page shows "Last evaluation report" for a project that has
    one, and the link opens it from the server."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from indexer.rest import create_app
    from tests.test_rest import running_server

    corpus = str(DATA / "tiny.tsv")
    report = workspace / "r.html"
    assert trained("eval", "tfidf-en", corpus, "--report", str(report)).exit_code == 0
    app = create_app(workspace / "projects.cfg", api_key="", check_interval=0)
    with running_server(app) as base:
        browser.get(f"{base}/")
        wait = WebDriverWait(browser, 20)
        select = wait.until(ec.element_to_be_clickable((By.ID, "project")))
        link = browser.find_element(By.ID, "report-link")
        Select(select).select_by_value("lexical-en")
        wait.until(lambda _: not link.is_displayed())
        Select(select).select_by_value("tfidf-en")
        wait.until(lambda _: link.is_displayed())
        assert link.text == "Last evaluation report"
        browser.get(link.get_attribute("href"))
        assert browser.title == "Evaluation of tfidf-en"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []


def test_labels_and_paths_are_escaped(trained, workspace):
    """A vocabulary label or corpus path is text on the page, never markup."""
    from indexer.report.html import render_html

    report_file = workspace / "r.json"
    corpus = str(DATA / "tiny.tsv")
    assert (
        trained("eval", "tfidf-en", corpus, "--report", str(report_file)).exit_code == 0
    )
    report = json.loads(report_file.read_text())
    hostile = '<img src=x onerror="alert(1)">'
    report["concepts"]["rows"][0]["label"] = hostile
    report["corpus"]["paths"] = [hostile]
    report["command"] = f"indexer eval x '{hostile}'"
    page = render_html(report)
    assert hostile not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


@pytest.mark.parametrize("option", ["--report", "--metrics-file", "--results-file"])
def test_an_output_under_a_file_is_a_usage_error_and_missing_folders_are_made(
    trained, workspace, option
):
    corpus = str(DATA / "tiny.tsv")
    suffix = ".tsv" if option == "--results-file" else ".json"
    target = str(DATA / "tiny.tsv" / "sub" / f"out{suffix}")
    result = trained("eval", "tfidf-en", corpus, option, target)
    assert result.exit_code == 2, result.output
    assert f"Error: {option} {target}: {DATA / 'tiny.tsv'} is a file" in result.output
    assert not isinstance(result.exception, OSError)
    target = workspace / "new" / "folder" / f"out{suffix}"
    result = trained("eval", "tfidf-en", corpus, option, str(target))
    assert result.exit_code == 0, result.output
    assert target.stat().st_size > 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("option", ["--metrics-file", "--results-file"])
def test_an_output_the_system_refuses_is_one_error_and_a_device_stays(trained, option):
    before = Path("/dev/full").stat()
    result = trained("eval", "tfidf-en", str(DATA / "tiny.tsv"), option, "/dev/full")
    assert result.exit_code == 1, result.output
    assert f"{option} /dev/full: could not write it (No space" in result.output
    assert not isinstance(result.exception, OSError)
    after = Path("/dev/full").stat()  # written into, never replaced by a file
    assert (after.st_mode, after.st_rdev) == (before.st_mode, before.st_rdev)
