"""Hostile and careless input: each case asserts the exact refusal (exit code and
message) and that nothing was lost or written outside the data directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.storage import read_manifest

from .conftest import DATA

# A training that stops inside `_train` until the file named by argv[3] exists.
PAUSED_TRAIN = """
import sys, time
from pathlib import Path
from backends.tfidf import TfidfBackend
from indexer.project import Projects

original = TfidfBackend._train
def paused_train(self, corpus, directory, jobs):
    info = original(self, corpus, directory, jobs)
    print("training", flush=True)
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
    return info
TfidfBackend._train = paused_train
Projects.from_path(sys.argv[1]).get("tfidf-en").train([sys.argv[2]])
print("trained", flush=True)
"""


ROOT = Path(__file__).resolve().parents[1]
# child processes import this checkout, not another installed copy
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def indexer_cli(workspace: Path, *args: str, timeout: float = 120):
    """Run `python -m indexer` in a real process against the workspace."""
    return subprocess.run(
        [sys.executable, "-m", "indexer.cli", "--projects", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=CHILD_ENV,
    )


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def start_paused_training(workspace: Path, corpus: Path) -> subprocess.Popen:
    script = workspace / "paused.py"
    script.write_text(textwrap.dedent(PAUSED_TRAIN))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(workspace / "projects.cfg"),
            str(corpus),
            str(workspace / "go"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=CHILD_ENV,
    )
    assert proc.stdout.readline().strip() == "training"
    return proc


# -- 1. concurrent training, clear and load-vocab --------------------------


def test_second_training_is_refused_and_the_first_finishes(workspace, projects):
    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    before = project.suggest(["telescopes"]).matrix.toarray()
    first = start_paused_training(workspace, DATA / "fulltext")
    try:
        second = indexer_cli(workspace, "train", "tfidf-en", str(DATA / "tiny.tsv"))
        assert second.returncode == 1
        assert second.stderr.startswith(
            f"Error: Project 'tfidf-en' is busy: process {first.pid} (paused.py) "
        )
        assert "has held it since 20" in second.stderr
        assert second.stderr.rstrip().endswith(
            "Wait for it to finish, or run again with --wait"
        )
        cleared = indexer_cli(workspace, "clear", "tfidf-en")
        assert cleared.returncode == 1 and "is busy: process" in cleared.stderr
        # the previous model stays usable throughout, also for a fresh reader
        project.__dict__.pop("backend")
        np.testing.assert_array_equal(
            project.suggest(["telescopes"]).matrix.toarray(), before
        )
        assert read_manifest(project.model_dir)["documents"] == 10
    finally:
        (workspace / "go").touch()
        first.wait(timeout=60)
    assert first.returncode == 0 and first.stdout.read().strip() == "trained"
    assert read_manifest(project.model_dir)["documents"] == 2  # the fulltext dir
    versions = [p.name for p in project.model_dir.parent.iterdir()]
    assert sorted(versions)[1:] == ["model"] and len(versions) == 2


def test_wait_runs_after_the_holder_finishes(workspace, projects):
    first = start_paused_training(workspace, DATA / "fulltext")
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indexer.cli",
            "--projects",
            str(workspace),
            "train",
            "tfidf-en",
            str(DATA / "tiny.tsv"),
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=CHILD_ENV,
    )
    line = waiting.stderr.readline()
    assert line.startswith(
        f"Waiting: Project 'tfidf-en' is busy: process {first.pid} (paused.py) "
    )
    time.sleep(0.3)
    assert waiting.poll() is None  # still waiting
    (workspace / "go").touch()
    out, _ = waiting.communicate(timeout=120)
    first.wait(timeout=60)
    assert waiting.returncode == 0 and out.startswith("Trained 'tfidf-en' on 10 ")
    assert read_manifest(projects.get("tfidf-en").model_dir)["documents"] == 10


def test_a_killed_holder_releases_the_lock_and_leftovers_are_cleaned(
    workspace, projects
):
    first = start_paused_training(workspace, DATA / "fulltext")
    first.kill()
    first.wait()
    leftovers = list((workspace / "data" / "projects" / "tfidf-en").glob(".model.*"))
    assert leftovers, "the killed training left its work directory"
    info = projects.get("tfidf-en").train([DATA / "tiny.tsv"])
    assert info["documents"] == 10
    model_dir = projects.get("tfidf-en").model_dir
    assert sorted(p.name for p in model_dir.parent.iterdir()) == [
        model_dir.resolve().name,
        "model",
    ]
    assert not any(p.exists() for p in leftovers)


def test_load_vocab_during_a_load_is_refused(workspace, projects):
    vocab = projects.vocab("tiny")
    size = len(vocab)
    with vocab.lock.hold():
        result = indexer_cli(workspace, "load-vocab", "tiny", str(DATA / "tiny.ttl"))
    assert result.returncode == 1
    error = result.stderr.splitlines()[-1]
    # the holder by pid and program name; its arguments are no one else's business
    holder = re.match(
        rf"Error: Vocabulary 'tiny' is busy: process {os.getpid()} \(([^)]*)\) has "
        "held it since 20",
        error,
    )
    assert holder, error
    assert " " not in holder.group(1) and "-" not in holder.group(1), error
    assert len(vocab) == size and vocab.info["size"] == size


# `indexer serve --api-key ...` whose learns stop inside the backend until the
# file named by $GATE exists (after telling so on stdout).
PAUSED_SERVE = """
import os, sys, time
from pathlib import Path
from backends.tfidf import TfidfBackend
from indexer.cli import main

original = TfidfBackend._learn
def paused_learn(self, corpus, previous, directory):
    print("learning", flush=True)
    while not Path(os.environ["GATE"]).exists():
        time.sleep(0.02)
    return original(self, corpus, previous, directory)
TfidfBackend._learn = paused_learn
main()
"""


def test_a_lock_held_by_a_server_shows_no_option_values(workspace, projects):
    import json
    import threading
    import urllib.request

    secret = "SECRET-hunter2-key"
    projects.get("tfidf-en").train([DATA / "tiny.tsv"])
    gate = workspace / "gate"
    server = subprocess.Popen(
        [sys.executable, "-c", PAUSED_SERVE, "--projects", str(workspace)]
        + ["serve", "--port", "0", "--api-key", secret, "--no-preload"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**CHILD_ENV, "GATE": str(gate)},
    )
    log: list[str] = []
    try:
        for line in server.stderr:
            log.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)/ \(", line):
                base = found.group(1)
                break
        else:
            pytest.fail("the server did not start:\n" + "".join(log))
        threading.Thread(target=lambda: log.extend(server.stderr), daemon=True).start()
        request = urllib.request.Request(
            f"{base}/v1/projects/tfidf-en/learn",
            data=json.dumps(
                [
                    {
                        "text": "quokka",
                        "subjects": [{"uri": "http://example.org/t/music"}],
                    }
                ]
            ).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": secret},
            method="POST",
        )
        answers: list[int] = []
        learner = threading.Thread(
            target=lambda: answers.append(
                urllib.request.urlopen(request, timeout=60).status
            )
        )
        learner.start()
        assert server.stdout.readline() == "learning\n"  # it holds the lock now
        lock = projects.get("tfidf-en").lock.path
        held = json.loads(lock.read_text())
        assert held["pid"] == server.pid and held["command"] == "indexer serve"
        assert oct(lock.stat().st_mode & 0o777) == oct(0o600)
        refused = indexer_cli(workspace, "train", "tfidf-en", str(DATA / "tiny.tsv"))
        assert refused.returncode == 1
        assert f"busy: process {server.pid} (indexer serve) has held it" in (
            refused.stderr
        )
        assert secret not in refused.stderr
        gate.touch()
        learner.join(60)
        assert answers == [204]
    finally:
        gate.touch()
        server.terminate()
        server.wait(30)
    assert secret not in "".join(log)
    assert secret not in lock.read_text()


def test_a_lock_file_made_before_is_made_private(projects):
    lock = projects.get("tfidf-en").lock
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text("")
    lock.path.chmod(0o644)
    with lock.hold():
        assert oct(lock.path.stat().st_mode & 0o777) == oct(0o600)


def error_of(result) -> str:
    """The one error line of a CliRunner result."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


# -- 2. and 3. vocabularies from outside: no network, bounded, a budget ---------


class RecordingServer:
    """A real HTTP server on localhost that records every request it gets."""

    def __init__(self):
        import http.server
        import threading

        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server hook name
                server.requests.append(self.path)
                body = b'{"@context": {"label": "http://www.w3.org/2004/02/skos/core#prefLabel"}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/ld+json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/context.jsonld"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


JSONLD_REMOTE = """{
  "@context": "%s",
  "@id": "http://example.org/x/one",
  "@type": "http://www.w3.org/2004/02/skos/core#Concept",
  "label": "one"
}"""


def test_remote_jsonld_context_is_refused_without_a_request(
    workspace, run_cli, projects
):
    server = RecordingServer()
    try:
        vocab_file = workspace / "remote.jsonld"
        vocab_file.write_text(JSONLD_REMOTE % server.url)
        result = run_cli("load-vocab", "remote", str(vocab_file))
    finally:
        server.close()
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: Vocabulary file '{vocab_file}' has a remote JSON-LD @context "
        f"({server.url}); vocabularies are parsed without network access: put "
        "the context inline in the file"
    )
    assert server.requests == []
    assert not (workspace / "data" / "vocabs" / "remote").exists()


def test_any_network_access_while_parsing_is_stopped(workspace, monkeypatch):
    """Beyond the @context check, rdflib itself cannot open a URL while parsing."""
    from indexer import rdfsafe
    from indexer.errors import InputError

    # take away the first line of defence to reach the second
    monkeypatch.setattr(rdfsafe, "_refuse_remote_contexts", lambda data, path: None)
    server = RecordingServer()
    try:
        data = (JSONLD_REMOTE % server.url).encode()
        try:
            rdfsafe.parse_graph(data, "json-ld", Path("remote.jsonld"))
        except InputError as exc:
            message = exc.message
    finally:
        server.close()
    assert message == (
        "Vocabulary file 'remote.jsonld' refers to a network resource "
        f"({server.url}), and vocabularies are parsed without network access: "
        "make the file self-contained"
    )
    assert server.requests == []
    import urllib.request  # outside a parse the network is not blocked

    assert urllib.request.Request(server.url).full_url == server.url


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:skos="http://www.w3.org/2004/02/skos/core#">
  <skos:Concept rdf:about="http://example.org/x/lol">
    <skos:prefLabel xml:lang="en">&lol9;</skos:prefLabel>
  </skos:Concept>
</rdf:RDF>
"""

PLAIN_ENTITIES = """<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [
  <!ENTITY skos "http://www.w3.org/2004/02/skos/core#">
]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:skos="http://www.w3.org/2004/02/skos/core#">
  <rdf:Description rdf:about="http://example.org/x/one">
    <rdf:type rdf:resource="&skos;Concept"/>
    <skos:prefLabel xml:lang="en">one</skos:prefLabel>
  </rdf:Description>
</rdf:RDF>
"""


def test_billion_laughs_fails_fast_and_plain_entities_still_load(workspace, run_cli):
    bomb = workspace / "lol.rdf"
    bomb.write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    result = run_cli("load-vocab", "lol", str(bomb))
    assert time.perf_counter() - started < 5
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: Vocabulary file '{bomb}': the XML entity 'lol1' refers to other "
        "entities (nested expansion); such entities are refused because their "
        "expansion is unbounded"
    )
    assert not (workspace / "data" / "vocabs" / "lol").exists()
    plain = workspace / "plain.rdf"
    plain.write_text(PLAIN_ENTITIES)
    result = run_cli("load-vocab", "plain", str(plain))
    assert result.exit_code == 0, result.output
    assert "Loaded vocabulary 'plain': 1 concepts" in result.output


def test_size_and_time_budgets(workspace, run_cli, monkeypatch):
    big = workspace / "big.ttl"
    big.write_text(
        "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
        + "".join(
            f'<http://example.org/x/{i}> a skos:Concept ; skos:prefLabel "c{i}"@en .\n'
            for i in range(3000)
        )
    )
    size_mb = big.stat().st_size / 2**20
    monkeypatch.setenv("INDEXER_VOCAB_MAX_MB", "0.1")
    result = run_cli("load-vocab", "big", str(big))
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: Vocabulary file '{big}' is {size_mb:.1f} MB, over the limit of "
        "0.1 MB; raise INDEXER_VOCAB_MAX_MB to load it"
    )
    monkeypatch.delenv("INDEXER_VOCAB_MAX_MB")
    monkeypatch.setenv("INDEXER_VOCAB_MAX_SECONDS", "0")
    result = run_cli("load-vocab", "big", str(big))
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: Parsing '{big}' took longer than 0 s and was stopped; raise "
        "INDEXER_VOCAB_MAX_SECONDS to allow more"
    )
    assert not (workspace / "data" / "vocabs" / "big").exists()
    monkeypatch.delenv("INDEXER_VOCAB_MAX_SECONDS")
    assert run_cli("load-vocab", "big", str(big)).exit_code == 0


RDF_PREFIXES = (
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"\n'
    '         xmlns:skos="http://www.w3.org/2004/02/skos/core#">\n'
)
TURTLE_PREFIX = "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"


def rdfxml_label(label: str, dtd: str = "") -> str:
    """RDF/XML of one concept with `label` (markup allowed), after `dtd`."""
    return (
        f'<?xml version="1.0"?>\n{dtd}{RDF_PREFIXES}'
        '  <skos:Concept rdf:about="http://example.org/x/1">\n'
        f"    <skos:prefLabel>{label}</skos:prefLabel>\n"
        "  </skos:Concept>\n</rdf:RDF>\n"
    )


def turtle_label(literal: str) -> str:
    return (
        f"{TURTLE_PREFIX}<http://example.org/x/1> a skos:Concept ;\n"
        f"    skos:prefLabel {literal} .\n"
    )


# Files whose parse yields no triple for a long time: rdflib spends it inside
# one literal (superlinear in its length). Without a deadline each takes 15 to
# 60 s on one core of a shared 2-core machine (so each stays well over the
# 2 s budget on faster ones); with a 2 s budget they took as long before the
# parse had a child process to kill at the deadline.
ONE_TOKEN = {
    # 1.5 MB, one literal of line breaks
    "rdfxml-long-literal": ("rdf", lambda: rdfxml_label("a\n" * 750_000)),
    # 2 MB, one long string
    "turtle-long-string": (
        "ttl",
        lambda: turtle_label('"""' + "a\n" * 1_000_000 + '"""'),
    ),
    # 6 MB, one literal of a million escapes
    "turtle-escapes": ("ttl", lambda: turtle_label('"' + "\\u0041" * 1_000_000 + '"')),
    # 6 kB: one plain entity (1024 characters, allowed) used 1500 times, a
    # 1.5 MB label (and small enough for the in-process shortcut, but for its
    # DOCTYPE)
    "rdfxml-entity-amplification": (
        "rdf",
        lambda: rdfxml_label(
            "&e;" * 1500,
            '<!DOCTYPE rdf:RDF [\n  <!ENTITY e "' + "b\n" * 512 + '">\n]>\n',
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(ONE_TOKEN))
def test_one_long_token_cannot_outlast_the_time_budget(
    workspace, run_cli, monkeypatch, case
):
    suffix, make = ONE_TOKEN[case]
    source = workspace / f"{case}.{suffix}"
    source.write_text(make())
    # rdflib's hazards (pyoxigraph reads these Turtle files in linear time)
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", "rdflib")
    monkeypatch.setenv("INDEXER_VOCAB_MAX_SECONDS", "2")
    started = time.perf_counter()
    result = run_cli("load-vocab", "long", str(source))
    elapsed = time.perf_counter() - started
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: Parsing '{source}' took longer than 2 s and was stopped; raise "
        "INDEXER_VOCAB_MAX_SECONDS to allow more"
    )
    assert elapsed < 2 + 1.5
    assert not (workspace / "data" / "vocabs" / "long").exists()


def test_only_small_files_without_expansion_skip_the_child_process(monkeypatch):
    from indexer import rdfsafe

    for name in ("SECONDS", "MEMORY_MB", "MB"):
        monkeypatch.delenv(f"INDEXER_VOCAB_MAX_{name}", raising=False)
    amplified = ONE_TOKEN["rdfxml-entity-amplification"][1]()
    assert len(amplified) < rdfsafe.IN_PROCESS_BYTES
    assert rdfsafe._in_process(rdfxml_label("one").encode(), "xml")
    assert rdfsafe._in_process(turtle_label('"one"').encode(), "turtle")
    assert not rdfsafe._in_process(amplified.encode(), "xml")
    utf16 = amplified.replace('"1.0"?>', '"1.0" encoding="UTF-16"?>')
    assert not rdfsafe._in_process(utf16.encode("utf-16"), "xml")
    assert not rdfsafe._in_process(PLAIN_ENTITIES.encode(), "xml")
    assert not rdfsafe._in_process(b'{"@id": "http://example.org/x"}', "json-ld")
    large = turtle_label('"one"') + " " * rdfsafe.IN_PROCESS_BYTES
    assert not rdfsafe._in_process(large.encode(), "turtle")
    monkeypatch.setenv("INDEXER_VOCAB_MAX_SECONDS", "2")  # too little to risk it
    assert not rdfsafe._in_process(turtle_label('"one"').encode(), "turtle")


DEEP = {
    # 2.6 MB, 100,000 nested objects (was a RecursionError traceback)
    "deep.jsonld": lambda: (
        '{"@id": "http://example.org/x/1", "http://example.org/p": '
        + '{"http://example.org/p": ' * 100_000
        + "1"
        + "}" * 100_001
    ),
    # 1.7 MB (in the child process) and 34 kB (parsed in-process)
    "deep.ttl": lambda: turtle_label(
        "[ skos:related " * 100_000 + '"x"' + " ]" * 100_000
    ),
    "small-deep.ttl": lambda: turtle_label(
        "[ skos:related " * 2000 + '"x"' + " ]" * 2000
    ),
}


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_nesting_is_one_clear_error(workspace, run_cli, monkeypatch, name):
    # rdflib's parsers recurse (pyoxigraph's do not: see test_skosrows.py)
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", "rdflib")
    source = workspace / name
    source.write_text(DEEP[name]())
    started = time.perf_counter()
    result = run_cli("load-vocab", "deep", str(source))
    assert time.perf_counter() - started < 5
    assert result.exit_code == 1
    fmt = "json-ld" if name.endswith(".jsonld") else "turtle"
    assert error_of(result) == (
        f"Error: Cannot parse '{source}' as {fmt}: it is nested too deeply for the "
        "parser (Python's recursion limit was reached); flatten the nesting"
    )


def test_the_parse_has_a_memory_bound(workspace, run_cli, monkeypatch):
    # 12 MB of JSON-LD: four million empty nodes, no triple, about 300 MB of
    # Python objects
    source = workspace / "wide.jsonld"
    source.write_text('{"@graph": [' + ",".join(["{}"] * 4_000_000) + "]}")
    monkeypatch.setenv("INDEXER_VOCAB_MAX_MEMORY_MB", "200")
    started = time.perf_counter()
    result = run_cli("load-vocab", "wide", str(source))
    assert time.perf_counter() - started < 10
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: Parsing '{source}' needed more than 200 MB of memory and was "
        "stopped; raise INDEXER_VOCAB_MAX_MEMORY_MB to allow more"
    )


def bad_literals(count: int) -> bytes:
    """One concept with `count` notations that are not the integers they say."""
    lines = [
        "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .",
        "@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .",
        '<http://x/a> a skos:Concept ; skos:prefLabel "a"@en .',
    ]
    lines += [f'<http://x/a> skos:notation "n{i}"^^xsd:integer .' for i in range(count)]
    return "\n".join(lines).encode()


@pytest.mark.parametrize("in_process", [True, False])
def test_parser_warnings_are_counted_not_printed(caplog, in_process):
    """rdflib logs a warning with a traceback for each bad literal (400 bytes
    each): they are counted, and one warning with examples is logged."""
    from indexer import rdfsafe

    data = bad_literals(40 if in_process else 3000)
    assert rdfsafe._in_process(data, "turtle") == in_process
    with caplog.at_level("WARNING"):
        rows = list(
            rdfsafe.parse_rows(
                data, "turtle", Path("bad.ttl"), "indexer.skosrows:ConceptRows"
            )
        )
    assert [row[0] for row in rows] == ["http://x/a"]
    [record] = caplog.records
    assert record.name == "indexer.rdfsafe"
    count = 40 if in_process else 3000
    assert f"Parsing 'bad.ttl': rdflib warned {count} times" in record.getMessage()
    assert "invalid literal for int()" in record.getMessage()  # the examples
    assert len(record.getMessage()) < 2000


def test_the_parent_holds_a_bounded_part_of_the_childs_stderr():
    """3000 bad literals made 1.3 MB of stderr that the parent held whole (100k:
    40 MB); the parse now holds far less, however much the child writes."""
    import tracemalloc

    from indexer import rdfsafe

    data = bad_literals(3000)
    assert not rdfsafe._in_process(data, "turtle")
    tracemalloc.start()
    try:
        list(
            rdfsafe.parse_rows(
                data, "turtle", Path("b.ttl"), "indexer.skosrows:ConceptRows"
            )
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 600_000, peak


def test_bounded_output_keeps_the_start_and_the_end():
    from indexer.rdfsafe import BoundedOutput

    # 20 MB, then the line that says what went wrong
    writer = (
        "import sys; w = sys.stderr.buffer; w.write(b'first line\\n');"
        "[w.write(b'x' * 1023 + b'\\n') for _ in range(20 * 1024)];"
        "w.write(b'MemoryError: the last line\\n')"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stderr=subprocess.PIPE)
    output = BoundedOutput(proc.stderr, head=4096, tail=8192)
    assert proc.wait(timeout=60) == 0
    text = output.close()
    assert output.total == 11 + 20 * 2**20 + 27
    assert output.held == 4096 + 8192
    assert text.startswith(b"first line\n")
    assert text.endswith(b"MemoryError: the last line\n")
    assert b"bytes left out" in text and len(text) < 4096 + 8192 + 100


def test_the_default_memory_budget_heeds_the_cgroup_limit(tmp_path):
    """In a container, the cgroup's limit (v2 memory.max, v1
    memory.limit_in_bytes), not the host's memory, is what the kernel holds
    the parse to: the default budget is the smaller."""
    from indexer.rdfsafe import cgroup_memory_limit, default_memory_budget

    gib = 2**30

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    v2 = tmp_path / "v2"
    write(v2 / "memory.max", "max")
    write(v2 / "a" / "memory.max", str(gib))  # a parent's limit holds below it
    write(v2 / "a" / "b" / "memory.max", "max")
    assert cgroup_memory_limit(v2, "0::/a/b\n") == gib
    assert default_memory_budget(v2, "0::/a/b\n") == min(gib, physical_memory())
    # in a container's own namespace the cgroup is "/", its limit at the root
    container = tmp_path / "container"
    write(container / "memory.max", str(512 * 2**20))
    assert cgroup_memory_limit(container, "0::/\n") == 512 * 2**20
    assert default_memory_budget(container, "0::/\n") == 512 * 2**20
    # v1: the memory controller's hierarchy; "no limit" is a number near 2**63
    v1 = tmp_path / "v1"
    write(v1 / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    write(v1 / "memory" / "x" / "memory.limit_in_bytes", str(3 * gib))
    cgroups = "5:devices:/x\n4:memory:/x\n0::/\n"
    assert cgroup_memory_limit(v1, cgroups) == 3 * gib
    assert default_memory_budget(v1, cgroups) == min(3 * gib, physical_memory())
    # no limit anywhere: 16 GB, or the machine's memory
    write(tmp_path / "none" / "memory.max", "max")
    assert cgroup_memory_limit(tmp_path / "none", "0::/\n") is None
    assert cgroup_memory_limit(tmp_path / "absent", "0::/\n") is None
    assert default_memory_budget(tmp_path / "none", "0::/\n") == min(
        16384 * 2**20, physical_memory()
    )


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# -- 4. strict decoding ----------------------------------------------------------


def test_latin1_vocabulary_table_names_the_byte(workspace, run_cli, projects):
    size = len(projects.vocab("tiny"))
    table = workspace / "tiny.csv"
    table.write_bytes(
        "uri,label_en\nhttp://example.org/t/physics,physique générale\n".encode(
            "latin-1"
        )
    )
    result = run_cli("load-vocab", "tiny", str(table))
    assert result.exit_code == 1
    offset = len(b"uri,label_en\nhttp://example.org/t/physics,physique g")
    assert error_of(result) == (
        f"Error: Vocabulary file '{table}' is not UTF-8 text: the invalid UTF-8 "
        f"byte 0xe9 at byte offset {offset} (line 2); convert it to UTF-8 first "
        "(e.g. `iconv -f latin1 -t utf-8`)"
    )
    projects.vocab("tiny").refresh()
    assert len(projects.vocab("tiny")) == size  # the loaded version is kept


def test_a_byte_order_mark_does_not_shift_the_bad_byte(workspace, run_cli):
    import codecs

    from indexer.textfile import BadBytes, decode_bytes

    table = workspace / "bom.csv"
    body = "uri,label_en\nhttp://example.org/t/physics,physique générale\n"
    table.write_bytes(codecs.BOM_UTF8 + body.encode("latin-1"))
    offset = table.read_bytes().index(b"\xe9")
    result = run_cli("load-vocab", "bom", str(table))
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: Vocabulary file '{table}' is not UTF-8 text: the invalid UTF-8 "
        f"byte 0xe9 at byte offset {offset} (line 2); convert it to UTF-8 first "
        "(e.g. `iconv -f latin1 -t utf-8`)"
    )
    # the first line of a corpus read line by line, from its offset
    with pytest.raises(BadBytes) as bad:
        decode_bytes(codecs.BOM_UTF8 + b"ok \xff", base=0, first=True)
    assert (bad.value.reason, bad.value.offset) == ("the invalid UTF-8 byte 0xff", 6)
    assert decode_bytes(codecs.BOM_UTF8 + b"ok") == "ok"


def test_latin1_configuration_names_the_byte(workspace, run_cli):
    cfg = workspace / "projects.cfg"
    cfg.write_bytes(cfg.read_bytes() + "\n[café]\nname = Café\n".encode("latin-1"))
    offset = cfg.read_bytes().index(b"\xe9")
    line = cfg.read_bytes()[:offset].count(b"\n") + 1
    result = run_cli("list-projects")
    assert result.exit_code == 2
    assert error_of(result) == (
        f"Error: Configuration '{cfg}' is not UTF-8 text: the invalid UTF-8 byte "
        f"0xe9 at byte offset {offset} (line {line}); convert it to UTF-8 first "
        "(e.g. `iconv -f latin1 -t utf-8`)"
    )


def test_corpus_records_that_are_not_utf8_are_counted_and_skipped(workspace, run_cli):
    good = (DATA / "tiny.tsv").read_bytes()
    bad_line = "Mühle und Sterne\t<http://example.org/t/astronomy>\n".encode("latin-1")
    corpus = workspace / "mixed.tsv"
    corpus.write_bytes(good + bad_line)
    result = run_cli("train", "tfidf-en", str(corpus))
    assert result.exit_code == 0, result.output
    assert (
        "Warning: 1 records are not UTF-8 text and were skipped, e.g. mixed.tsv:11 "
        f"(the invalid UTF-8 byte 0xfc at byte offset {len(good) + 1})"
    ) in result.output
    assert "Trained 'tfidf-en' on 10 documents" in result.output


def test_binary_corpus_is_refused_and_the_model_kept(workspace, run_cli, projects):
    projects.get("tfidf-en").train([DATA / "tiny.tsv"])
    binary = workspace / "corpus.tsv"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    result = run_cli("train", "tfidf-en", str(binary))
    assert result.exit_code == 1
    assert error_of(result) == (
        f"Error: '{binary}' looks binary (a NUL byte at byte offset 7), not text"
    )
    assert read_manifest(projects.get("tfidf-en").model_dir)["documents"] == 10


def test_binary_file_in_a_fulltext_directory_is_not_a_document(workspace, run_cli):
    folder = workspace / "fulltext"
    folder.mkdir()
    for item in (DATA / "fulltext").iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    (folder / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "latin.txt").write_bytes(
        "Sternwarte und Fernrohr für alle".encode("latin-1")
    )
    result = run_cli("train", "tfidf-en", str(folder))
    assert result.exit_code == 0, result.output
    assert (
        "Warning: 2 records are not UTF-8 text and were skipped, e.g. "
        "fulltext/latin.txt (the invalid UTF-8 byte 0xfc at byte offset 25); "
        "fulltext/photo.txt (a NUL byte (binary data) at byte offset 8)"
    ) in result.output
    assert "Trained 'tfidf-en' on 2 documents" in result.output


def test_csv_and_gzipped_jsonl_corpora_decode_strictly(workspace):
    import gzip

    from indexer.corpus import CorpusStats, read_documents
    from indexer.errors import InputError

    csv_file = workspace / "docs.csv"
    csv_file.write_bytes(
        "text,subjects\nCafé,http://example.org/t/x\n".encode("cp1252")
    )
    try:
        list(read_documents(csv_file))
    except InputError as exc:
        assert exc.message == (
            f"'{csv_file}' is not UTF-8 text: the invalid UTF-8 byte 0xe9 at byte "
            "offset 17 (line 2); convert it to UTF-8 first (e.g. `iconv -f latin1 "
            "-t utf-8`)"
        )
    else:
        raise AssertionError("a cp1252 CSV was read")
    jsonl = workspace / "docs.jsonl.gz"
    with gzip.open(jsonl, "wb") as f:
        f.write(b'{"text": "ok", "subjects": []}\n')
        f.write('{"text": "Café", "subjects": []}\n'.encode("latin-1"))
    stats = CorpusStats()
    assert [d.text for d in read_documents(jsonl, stats)] == ["ok"]
    assert stats.rejected == 1
    assert stats.rejected_examples == [
        "docs.jsonl.gz:2 (the invalid UTF-8 byte 0xe9 at byte offset 44)"
    ]


# -- 5. languages ----------------------------------------------------------------


def test_unknown_project_language_is_a_config_error(workspace, run_cli):
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text() + "\n[xx-proj]\nlanguage = xx\nvocab = tiny\nbackend = tfidf\n"
    )
    result = run_cli("train", "xx-proj", str(DATA / "tiny.tsv"))
    assert result.exit_code == 2
    assert error_of(result).startswith(
        "Error: Project 'xx-proj': language 'xx' has no stemmer and vocabulary "
        "'tiny' has no labels in it. Stemmed languages: ar, ca, da, de, "
    )
    assert error_of(result).endswith("; label languages: en, fi")
    assert not (workspace / "data" / "projects" / "xx-proj").exists()
    cfg.write_text(cfg.read_text().replace("language = xx", "language = x x"))
    result = run_cli("list-projects")
    assert result.exit_code == 2
    assert error_of(result) == (
        "Error: Project 'xx-proj': language 'x x' is not a language tag (like en, "
        "fi, pt-BR)"
    )


def test_suggest_language_must_be_a_label_language(run_cli):
    result = run_cli("suggest", "lexical-en", "--language", "zz", input="stars")
    assert result.exit_code == 2
    assert error_of(result) == (
        "Error: Language \"zz\" not supported by vocabulary 'tiny'. Languages: en, fi"
    )
    result = run_cli("suggest", "lexical-en", "--language", "fi", input="physics")
    assert result.exit_code == 0 and "fysiikka" in result.output


# -- 6. ids ----------------------------------------------------------------------


def test_path_like_ids_are_refused_and_nothing_is_written(tmp_path, run_cli):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    before = files_under(tmp_path)
    (workspace / "projects.cfg").write_text(
        f"[vocab:tiny]\nsource = {DATA}/tiny.ttl\n\n"
        "[../../victim]\nlanguage = en\nvocab = tiny\nbackend = tfidf\n"
    )
    from click.testing import CliRunner

    from indexer.cli import cli

    def run(*args):
        return CliRunner().invoke(cli, ["--projects", str(workspace), *args])

    result = run("train", "../../victim", str(DATA / "tiny.tsv"))
    assert result.exit_code == 2
    assert error_of(result) == (
        "Error: [../../victim]: Project id '../../victim' is not valid: use 1 to "
        "100 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )
    (workspace / "projects.cfg").write_text(f"[vocab:tiny]\nsource = {DATA}/tiny.ttl\n")
    result = run("load-vocab", "../../victim", str(DATA / "tiny.ttl"))
    assert result.exit_code == 2
    assert error_of(result) == (
        "Error: Vocabulary id '../../victim' is not valid: use 1 to 100 letters, "
        "digits, '.', '_' or '-', starting with a letter or digit"
    )
    assert files_under(tmp_path) == before | {workspace, workspace / "projects.cfg"}


# -- 7. smaller ones -------------------------------------------------------------


def test_misspelt_core_key_gets_did_you_mean(workspace, run_cli):
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + "\n[typo]\nlanguage = en\nvocab = tiny\nbackend = tfidf\ntreshold = 0.2\n"
    )
    result = run_cli("suggest", "typo", input="stars")
    assert result.exit_code == 2
    assert error_of(result) == (
        "Error: Project 'typo': unknown parameter 'treshold'. Did you mean "
        "'threshold'? Valid keys: settings name, language, vocab, backend, limit, "
        "threshold, access, allow_learn, analyzer; parameters batch_size, "
        "candidates, max_features, min_df, min_weight, ngram"
    )


def test_a_directory_without_configuration_is_an_error(tmp_path, workspace):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = indexer_cli(empty, "list-projects")
    assert result.returncode == 2
    assert result.stderr == (
        f"Error: Directory '{empty}' has no projects.cfg and no projects.d/*.cfg\n"
    )


def test_no_configuration_found_is_said(tmp_path):
    env = {k: v for k, v in CHILD_ENV.items() if k != "INDEXER_PROJECTS"}
    result = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "list-projects"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "Error: No project configuration found: no projects.cfg or "
        f"projects.d/*.cfg in {tmp_path}. Give one with --projects PATH or "
        "INDEXER_PROJECTS\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_child_killed_while_it_writes_rows_is_a_clean_error(monkeypatch):
    """A child killed in the middle of a line of rows left the parent a piece
    of JSON, which it decoded: a JSONDecodeError with a traceback."""
    from indexer import rdfsafe
    from indexer.errors import InputError

    killed_mid_line = (
        "import os, signal, sys; sys.stdin.buffer.read(); "
        'sys.stdout.buffer.write(b\'[["http://x/a", "", false, {"en": "a\'); '
        "sys.stdout.flush(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    monkeypatch.setattr(rdfsafe, "_CHILD", killed_mid_line)
    rows = rdfsafe._rows_from_child(
        b"", "turtle", Path("v.ttl"), "indexer.skosrows:ConceptRows"
    )
    with pytest.raises(InputError) as error:
        list(rows)
    assert error.value.message == (
        "Cannot parse 'v.ttl' as turtle: the parser was killed by SIGKILL "
        "(perhaps by the system, for want of memory)"
    )


def test_a_compressed_file_over_the_size_budget_says_so(tmp_path, monkeypatch):
    """Decompression stops one byte past the limit, so the size was shown as
    the limit: "0.1 MB, over the limit of 0.1 MB"."""
    import gzip

    from indexer.errors import InputError
    from indexer.skos import read_vocabulary_file

    bomb = tmp_path / "bomb.ttl.gz"
    bomb.write_bytes(gzip.compress(b" " * 2**20))
    monkeypatch.setenv("INDEXER_VOCAB_MAX_MB", "0.1")
    with pytest.raises(InputError) as error:
        read_vocabulary_file(bomb)
    assert error.value.message == (
        f"Vocabulary file '{bomb}' is more than 0.1 MB, over the limit of 0.1 MB; "
        "raise INDEXER_VOCAB_MAX_MB to load it"
    )
