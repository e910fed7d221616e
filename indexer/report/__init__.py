"""Evaluation reports: one self-contained HTML file (inline SVG plots, a
sortable per-concept table, no network) or the same data as JSON.

`build_report` gathers the numbers (`indexer.report.data`), `render_html`
lays them out (`indexer.report.html`, plots from `indexer.report.plots`),
`write_report` writes the file asked for and keeps a copy as the project's
last report (served at `/v1/projects/{id}/report`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
from pathlib import Path

from indexer import __version__
from indexer.errors import UsageError
from indexer.report import data as D

SUFFIXES = (".html", ".json")
#: parameters whose values a report must not repeat (API keys of model servers)
SECRET = re.compile(r"key|token|secret|password", re.I)
SOURCE_METRICS = ("f1@5", "ndcg@10", "f1", "recall@10")
HIDDEN = "(hidden)"


def check_report_path(path: str | os.PathLike) -> str:
    """The report's format from its suffix; a usage error for any other, and
    for HTML a missing matplotlib is reported now, before a long evaluation."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(
            f"--report {path}: name a .html file (the report) or a .json file "
            "(its data)"
        )
    if suffix == ".html":
        from indexer.report.plots import require_matplotlib

        require_matplotlib()
    return suffix[1:]


def last_report(project, public: bool = False) -> Path | None:
    """The project's last saved HTML report, if any; `public`: the copy for
    callers without the API key (`public_report`)."""
    path = report_dir(project) / ("report.public.html" if public else "report.html")
    return path if path.is_file() else None


def public_report(report: dict) -> dict:
    """The report as a caller without the API key may read it over REST: the
    parameters and manifest values that name a server, a credential or a path
    on the server withheld (as GET /v1/projects/{id} withholds them), and so
    the command line and the corpus's paths, which hold such paths."""
    from indexer.disclosure import withheld

    out = dict(report)
    out["settings"] = withheld(report["settings"], HIDDEN)
    out["models"] = withheld(report["models"], HIDDEN)
    out["command"] = HIDDEN if report["command"] else ""
    corpus = dict(report["corpus"])
    names = {p: Path(p).name for p in corpus["paths"]}
    corpus["paths"] = list(names.values())
    corpus["sha256"] = {names.get(p, p): d for p, d in corpus["sha256"].items()}
    out["corpus"] = corpus
    return out


def report_dir(project) -> Path:
    return project.projects.data_dir / "projects" / project.id


def build_report(
    project,
    evaluator,
    batches,
    paths,
    intervals=None,
    command: str = "",
    source_results: list[dict] | None = None,
) -> dict:
    """Every number of the report as JSON-able data."""
    ranked = D.Ranked(batches, len(project.vocab))
    limit, threshold = evaluator.limit, evaluator.threshold
    metrics = {k: D._finite(v) for k, v in evaluator.results().items()}
    models = _manifests(project)
    digest = project.corpus(paths).digest()
    report = {
        "project": project.id,
        "name": project.name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "indexer_version": __version__,
        "settings": {
            "backend": project.config.backend,
            "kind": project.kind,
            "vocab": project.config.vocab,
            "vocab_size": len(project.vocab),
            "language": project.language,
            "limit": limit,
            "threshold": threshold,
            "params": {
                k: (HIDDEN if SECRET.search(k) else v)
                for k, v in project.config.params.items()
            },
        },
        "models": models,
        "corpus": {
            "paths": [str(p) for p in paths],
            "sha256": {str(p): D.file_digest(Path(p)) for p in paths},
            "digest": digest,
            # the manifests' digest of the training corpus: evaluating on it
            # flatters the model, and the report says so
            "trained_on_this_corpus": [
                pid
                for pid, m in models.items()
                if m and m.get("corpus_digest") == digest
            ],
        },
        "metrics": metrics,
        "intervals": {
            name: {"low": D._finite(iv.low), "high": D._finite(iv.high)}
            for name, iv in (intervals or {}).items()
        },
        "limit_curve": D.limit_curve(ranked, threshold),
        "threshold_curve": D.threshold_curve(ranked, limit),
        "seen_unseen": D.seen_unseen(ranked, evaluator.seen),
        "calibration": D.calibration(ranked, limit),
        "concepts": D.concepts(evaluator, project.vocab, project.language, ranked),
        "sources": source_results,
    }
    return report


def _manifests(project) -> dict:
    """The model manifest of the project and, for a fusion, of each source."""
    out = {project.id: project.backend.manifest}
    for source in _sources(project):
        out.update(_manifests(source))
    return out


def _sources(project) -> list:
    if project.kind != "ensemble" or not hasattr(project.backend, "sources"):
        return []
    return [source for source, _ in project.backend.sources()]


def evaluate_sources(project, evaluator, paths, batch_size: int = 64):
    """For an ensemble or fusion: each source evaluated on the same documents
    at its own limit and threshold, beside the fusion's own numbers; None for
    other projects."""
    from tqdm import tqdm

    from indexer.eval import Evaluator

    sources = _sources(project)
    if not sources:
        return None
    evaluators = [
        Evaluator(
            len(s.vocab), limit=s.limit, threshold=s.threshold, seen=s.seen_subjects()
        )
        for s in sources
    ]
    corpus = project.corpus(paths)
    for docs in tqdm(
        corpus.batches(batch_size), desc="Sources", unit=" batches", disable=None
    ):
        gold, texts = [d.subjects for d in docs], [d.text for d in docs]
        for source, source_evaluator in zip(sources, evaluators, strict=True):
            source_evaluator.add(gold, source.backend.suggest_batch(texts))
    rows = []
    for name, e, fusion in [
        (project.id, evaluator, True),
        *((s.id, e, False) for s, e in zip(sources, evaluators, strict=True)),
    ]:
        results = e.results()
        row = {"project": name, "fusion": fusion}
        row.update({m: D._finite(results.get(m)) for m in SOURCE_METRICS})
        rows.append(row)
    return rows


def render(report: dict, fmt: str) -> str:
    """The report as HTML or JSON text."""
    if fmt == "json":
        return json.dumps(report, indent=1, ensure_ascii=False) + "\n"
    return render_html_text(report)


def render_html_text(report: dict) -> str:
    """The report as one self-contained HTML page."""
    from indexer.report.html import render_html

    return render_html(report)


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it into place:
    a failed write (a full disk) leaves no half-written file. A target that
    is no regular file (/dev/stdout, a pipe) is written into, never replaced."""
    if path.exists() and not path.is_file():
        path.write_text(text, encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a web server
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(
    project, path, evaluator, batches, paths, intervals=None, command: str = ""
) -> Path:
    """Write the report to `path` (.html or .json) and keep a copy as the
    project's last report; returns the copy's path."""
    fmt = check_report_path(path)
    sources = evaluate_sources(project, evaluator, paths)
    report = build_report(
        project, evaluator, batches, paths, intervals, command, sources
    )
    text = render(report, fmt)
    write_atomic(Path(path), text)
    saved = report_dir(project) / f"report.{fmt}"
    write_atomic(saved, text)
    if fmt == "html":  # the copy that REST serves to callers without the key
        public = render_html_text(public_report(report))
        write_atomic(report_dir(project) / "report.public.html", public)
    return saved
