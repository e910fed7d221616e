"""The documentation: the site builds strictly, and its examples run.

Every ```sh and ```python block of docs/ is a test, and every ```ini block with
a section is read as a projects.cfg whose projects' backend parameters must
parse (a block of bare keys is a fragment to add to a section: not checked);
```yaml and ```json blocks must parse.

The blocks of one page run in order in one workspace (a temporary copy of
projects.cfg, vocabularies/ and examples/, so a page reads as if run from a
clone's root). A block marked by an HTML comment on the line before it is not
run by default:

    <!-- no-run: needs a GPU -->       never run here (a GPU, big data, a cluster)
    <!-- slow: loads the encoder -->   run with `pytest -m slow`
    <!-- server: /v1/health -->        a server: started in the background, and
                                       the page goes on once that path answers;
                                       stopped after the page's examples

On a page with a server, port 5000 in its examples is replaced by a free port,
and curl runs with `fail-with-body` (a .curlrc), so an error status fails the
example as a wrong option does.

A renamed option, a missing file or a wrong project id in an example then
fails the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: what a page's workspace holds, copied from the repository
WORKSPACE_FILES = ("projects.cfg", "vocabularies", "examples")
RUNNERS = {
    "sh": "bash",
    "bash": "bash",
    "shell": "bash",
    "python": "python",
    "ini": "config",
    "yaml": "yaml",
    "json": "json",
}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n"
    r"(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
DIRECTIVE = re.compile(
    r"<!--\s*(?P<kind>no-run|slow|server):\s*(?P<reason>.*?)\s*-->\s*$"
)
PORT = re.compile(r"(?<![\w.])5000\b")
SERVER_START_SECONDS = 120
TIMEOUT = 600


@dataclass(frozen=True)
class Example:
    """One fenced code block of a page."""

    page: str
    line: int
    lang: str
    body: str
    mark: str | None  # None (run), "no-run", "slow" or "server"
    reason: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def examples_of(page: Path, docs: Path = DOCS) -> list[Example]:
    """The runnable-language code blocks of `page` (under `docs`), in order."""
    text = page.read_text(encoding="utf-8")
    name = page.relative_to(docs).as_posix()
    found = []
    for match in FENCE.finditer(text):
        lang = match["lang"].lower()
        if lang not in RUNNERS:
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = DIRECTIVE.search(before)
        indent = match["indent"]
        body = "\n".join(
            row[len(indent) :] if row.startswith(indent) else row
            for row in match["body"].split("\n")
        )
        found.append(
            Example(
                name,
                line,
                lang,
                body,
                directive["kind"] if directive else None,
                directive["reason"] if directive else "",
            )
        )
    return found


def all_examples() -> list[Example]:
    return [ex for page in sorted(DOCS.rglob("*.md")) for ex in examples_of(page)]


def _param(example: Example):
    marks = []
    if example.mark == "slow":
        marks.append(pytest.mark.slow)
    return pytest.param(example, id=example.id, marks=marks)


class Workspace:
    """A page's working directory, the examples already run in it, and the
    servers its examples started."""

    def __init__(self, path: Path, page: str):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.done: set[int] = set()
        self.servers: list[subprocess.Popen] = []
        self.failed: str | None = None  # the first example of the page that failed
        self.port = None
        (path / ".curlrc").write_text("fail-with-body\n", encoding="utf-8")
        if any(ex.mark == "server" for ex in examples_of(DOCS / page)):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        for name in WORKSPACE_FILES:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, path / name)
            else:
                shutil.copy2(source, path / name)


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """One workspace per page, shared by the page's examples."""
    made: dict[str, Workspace] = {}

    def get(page: str) -> Workspace:
        if page not in made:
            path = tmp_path_factory.mktemp("docs-" + re.sub(r"\W", "-", page))
            made[page] = Workspace(path, page)
        return made[page]

    yield get
    for workspace in made.values():
        for server in workspace.servers:
            _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """End a server and everything it started (its process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _command(example: Example, workspace: Workspace) -> list[str]:
    """The example as a command line (port 5000 made this page's port)."""
    body = example.body
    if workspace.port:
        body = PORT.sub(str(workspace.port), body)
    if example.lang == "python":
        return [sys.executable, "-c", body]
    return ["bash", "-c", "set -eo pipefail\n" + body]


def _env(workspace: Workspace) -> dict[str, str]:
    """The reader's environment, without the settings of this test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXER_")}
    # the model cache is shared: converting packaged weights once is enough
    if "INDEXER_MODEL_CACHE" in os.environ:
        env["INDEXER_MODEL_CACHE"] = os.environ["INDEXER_MODEL_CACHE"]
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env["CURL_HOME"] = str(workspace.path)
    return env


def run_example(example: Example, workspace: Workspace) -> subprocess.CompletedProcess:
    """Run one example in its page's workspace as the reader would."""
    return subprocess.run(
        _command(example, workspace),
        cwd=workspace.path,
        env=_env(workspace),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def start_server(example: Example, workspace: Workspace) -> None:
    """Start a server example in the background; return once its health path
    (the directive's argument) answers, with any status."""
    # the server writes its log here for as long as it runs: closed with the page
    log = open(  # noqa: SIM115
        workspace.path / f"server-{example.line}.log", "w+", encoding="utf-8"
    )
    server = subprocess.Popen(
        _command(example, workspace),
        cwd=workspace.path,
        env=_env(workspace),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    workspace.servers.append(server)
    url = f"http://127.0.0.1:{workspace.port}{example.reason}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.HTTPError:
            return  # it answers: 401 or 503 are answers too
        except OSError:
            time.sleep(0.2)
    log.seek(0)
    workspace.failed = example.id
    pytest.fail(
        f"docs/{example.id}: the server did not answer {url}\n{log.read()[-3000:]}",
        pytrace=False,
    )


def check_config(example: Example, workspace: Workspace) -> None:
    """An ini example is a valid projects.cfg: its settings and each project's
    backend parameters parse (vocabularies and models need not exist)."""
    from indexer.config import load_config
    from indexer.errors import IndexerError
    from indexer.params import parse_params
    from indexer.registry import get_backend_class

    if not re.search(r"^\[[^\]]+\]", example.body, re.M):
        return  # a fragment to add to a section, not a whole configuration
    path = workspace.path / f"example-{example.line}.cfg"
    path.write_text(example.body, encoding="utf-8")
    try:
        config = load_config(path)
        for project in config.projects.values():
            backend = get_backend_class(project.backend)
            parse_params(backend.Params, project.params, f"Project '{project.id}'")
    except IndexerError as exc:
        workspace.failed = example.id
        pytest.fail(f"docs/{example.id}: {exc.message}", pytrace=False)
    finally:
        path.unlink()


def check_data(example: Example) -> None:
    """A YAML or JSON example parses (a Kubernetes manifest, an answer)."""
    import json

    yaml = pytest.importorskip("yaml")  # PyYAML comes with mkdocs (the test extra)
    try:
        if example.lang == "yaml":
            list(yaml.safe_load_all(example.body))
        else:
            json.loads(example.body)
    except (yaml.YAMLError, ValueError) as exc:
        where = f"docs/{example.id}"
        pytest.fail(f"{where}: not valid {example.lang}: {exc}", pytrace=False)


def _check(example: Example, workspace: Workspace) -> None:
    if example.lang == "ini":
        return check_config(example, workspace)
    if example.lang in ("yaml", "json"):
        return check_data(example)
    if example.mark == "server":
        return start_server(example, workspace)
    result = run_example(example, workspace)
    if result.returncode != 0:
        workspace.failed = example.id
        pytest.fail(
            f"docs/{example.id}: the {example.lang} example exited with "
            f"{result.returncode}\n--- example ---\n{example.body}"
            f"--- stdout ---\n{result.stdout[-3000:]}"
            f"--- stderr ---\n{result.stderr[-3000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("example", [_param(ex) for ex in all_examples()])
def test_doc_example_runs(example: Example, workspaces, request) -> None:
    """The example exits 0, after the page's earlier examples ran in its workspace."""
    if example.mark == "no-run":
        pytest.skip(f"not run: {example.reason}")
    workspace = workspaces(example.page)
    if workspace.failed:
        pytest.skip(f"an earlier example of this page failed: docs/{workspace.failed}")
    earlier = [
        ex
        for ex in examples_of(DOCS / example.page)
        if ex.line < example.line and ex.line not in workspace.done
    ]
    # earlier slow examples run only where this run selects slow tests
    run_slow = "not slow" not in (request.config.option.markexpr or "")
    for ex in earlier:
        workspace.done.add(ex.line)
        if ex.mark in (None, "server") or (ex.mark == "slow" and run_slow):
            _check(ex, workspace)
    workspace.done.add(example.line)
    _check(example, workspace)


def test_examples_are_found() -> None:
    """The collector sees the pages' examples: a fence it misread would hide them."""
    examples = all_examples()
    pages = {ex.page for ex in examples}
    assert "getting-started/tutorial.md" in pages
    assert sum(ex.mark is None for ex in examples) >= 20
    for ex in examples:
        assert ex.body.strip(), f"docs/{ex.id} is empty"
        if ex.mark:
            assert ex.reason, f"docs/{ex.id}: say why it is {ex.mark}"


BROKEN_PAGE = """# A page

<!-- no-run: needs a GPU -->
```sh
nvidia-smi
```

```sh
indexer suggest demo-lexical --no-such-option < vocabularies/examples/solar-power.txt
```

```ini
[misspelt]
language = en
vocab = disciplines
backend = tfidf
ngrams = 2
```

```text
not an example
```
"""


def test_a_broken_example_fails(tmp_path) -> None:
    """What the suite promises: a renamed option or a misspelt parameter in an
    example fails, and a marked example is collected with its reason."""
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(BROKEN_PAGE, encoding="utf-8")
    gpu, option, config = examples_of(page, tmp_path / "docs")
    assert (gpu.mark, gpu.reason) == ("no-run", "needs a GPU")
    assert (option.mark, option.lang, config.lang) == (None, "sh", "ini")
    workspace = Workspace(tmp_path / "ws", "index.md")
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        _check(option, workspace)
    with pytest.raises(pytest.fail.Exception, match="Did you mean 'ngram'"):
        _check(config, workspace)


def test_site_builds_strictly(tmp_path) -> None:
    """`mkdocs build --strict`: a broken link, anchor or page missing from nav fails."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    from indexer.cli import cli

    for name in cli.commands:
        assert f"indexer {name}" in cli_page, f"the CLI reference lacks `{name}`"
    params = (site / "reference" / "parameters" / "index.html").read_text(
        encoding="utf-8"
    )
    from indexer.registry import backend_names

    for name in backend_names():
        assert f'id="{name}"' in params, f"the parameter reference lacks {name}"
    assert (site / "reference" / "openapi.json").is_file()
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in index


def test_readme_links_exist() -> None:
    """The README's relative links name files of the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README.md links to missing {target}"
