"""The /v1 endpoints, on the wire as Annif's REST API: projects, suggestions,
learning, language detection, vocabularies and concepts.

Each view looks the project or vocabulary up (access levels and model loading
in indexer/rest/served.py), reads the request into its model
(indexer/rest/schemas.py) and answers JSON of the shape the models describe;
errors are raised and become problem documents in indexer/rest/app.py.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

from flask import Blueprint, current_app, g, request

from indexer import __version__
from indexer.backend import Backend
from indexer.disclosure import is_private
from indexer.errors import IndexerError, NotFoundError, NotSupportedError, UsageError
from indexer.language import detect_languages
from indexer.project import Project
from indexer.rendering import jsonable, render_suggestions
from indexer.rest import schemas as s
from indexer.rest.input import ANY_BODY, JSON, read_request
from indexer.rest.openapi import documented
from indexer.rest.served import (
    LOADING,
    NOT_READY,
    NOT_TRAINED,
    STATES,
    UNAVAILABLE,
    ServedProjects,
    Unavailable,
)

v1 = Blueprint("v1", __name__, url_prefix="/v1")
log = logging.getLogger("indexer.rest")
GENERIC_ERROR = "misconfigured on the server (the server log says how)"
SUGGEST_ERRORS = (400, 401, 404, 409, 413, 415, 500, 503)


def _served() -> ServedProjects:
    return current_app.extensions["indexer"]


def _authorised() -> bool:
    return _served().authorised(request.headers.get("X-API-Key"))


def _project(project_id: str) -> Project:
    return _served().lookup(project_id, _authorised())


# -- information -------------------------------------------------------------


@v1.get("/")
@documented(s.ApiInfo)
def api_info():
    """The API and its version"""
    return {"title": "indexer REST API", "version": __version__}


@v1.get("/health")
@documented(s.Health)
def health():
    """Whether the server is up"""
    served = _served()
    return {
        "status": "ok",
        "version": __version__,
        "projects": len(served.listed(False)),
        "models_loaded": served.loaded,
    }


@v1.get("/ready")
@documented(s.Readiness, problems={503: s.NotReady})
def ready():
    """Whether every project that can serve is loaded

    200 once no project is loading or failed to load; 503 while one is
    loading (at start) or after one failed. A project without a model (not
    trained) is listed but does not make the server unready: waiting does not
    train it, and the others serve. The lists name only projects the caller
    may see; the counts are of all. /v1/health stays 200 throughout.
    """
    from indexer.rest.app import problem

    served = _served()
    visible = set(served.listed(_authorised()))
    states = served.states()
    lists: dict = {"loading": [], "failed": [], "not_trained": []}
    for project_id, (state, reason) in states.items():
        if project_id not in visible:
            continue
        if state == LOADING:
            lists["loading"].append(project_id)
        elif state in (UNAVAILABLE, NOT_TRAINED):
            key = "failed" if state == UNAVAILABLE else "not_trained"
            lists[key].append({"project_id": project_id, "reason": reason or ""})
    counts = Counter(state for state, _ in states.values())
    lists["projects"] = {state: counts.get(state, 0) for state in STATES}
    if not any(counts.get(state) for state in NOT_READY):
        return {"status": "ready", **lists}
    loading, failed = counts.get(LOADING, 0), counts.get(UNAVAILABLE, 0)
    return problem(
        503,
        "Not ready",
        f"{loading} projects are loading and {failed} failed to load",
        "not-ready",
        **lists,
    )


@v1.get("/openapi.json")
@documented()
def openapi():
    """This document"""
    return current_app.config["INDEXER_OPENAPI"]


def project_info(project: Project, authorised: bool = False) -> dict:
    """A project as Annif describes it, plus our fields (no model is loaded)."""
    served = _served()
    info = {
        "project_id": project.id,
        "name": project.name,
        "language": project.language,
        "backend": {"backend_id": project.config.backend},
        "vocab": _vocab_info(project.config.vocab),
        "vocab_language": project.language,
        "is_trained": None,
        "modification_time": None,
        "kind": None,
        "access": served.access[project.id],
        "status": "ready",
        "error": None,
        "limit": project.limit,
        "threshold": project.threshold,
        "explain": False,
        "allow_learn": project.config.allow_learn,
    }
    try:
        backend = project.backend
        manifest = backend.manifest
        info["kind"] = project.kind
        info["explain"] = type(backend).explain is not Backend.explain
        info["is_trained"] = backend.is_trained
        info["modification_time"] = manifest.get("trained_at") if manifest else None
        info["status"] = "ready" if project.is_ready else "not_trained"
        if not info["vocab"]["loaded"]:
            _ = project.vocab  # loads it, or fails as a suggestion would
            info["vocab"] = _vocab_info(project.config.vocab)
    except IndexerError as exc:
        log.error("Project '%s' is unavailable: %s", project.id, exc.message)
        error = exc.message if authorised else GENERIC_ERROR
        info.update(status="unavailable", error=error)
    return info


def shown_params(params: dict, authorised: bool) -> dict:
    """A project's parameters as a caller sees them: without the API key, the
    values that name a server, a URL, a key or a path on the server are null."""
    if authorised:
        return params
    return {k: None if is_private(k, v) else v for k, v in params.items()}


@v1.get("/projects")
@documented(s.ProjectList)
def list_projects():
    """The public projects (all of them with the API key)"""
    served, authorised = _served(), _authorised()
    return {
        "projects": [
            project_info(served.projects.get(i), authorised)
            for i in served.listed(authorised)
        ]
    }


@v1.get("/projects/<project_id>")
@documented(s.ProjectDetail, (401, 404, 500))
def get_project(project_id: str):
    """One project, with its parameters and model

    Without the API key, the parameters that name a server (its URL), a key
    or a path on the server are null.
    """
    project, authorised = _project(project_id), _authorised()
    info = project_info(project, authorised)
    params = model = None
    if info["status"] != "unavailable":
        backend = project.backend
        params = shown_params(jsonable(dataclasses.asdict(backend.params)), authorised)
        manifest = backend.manifest
        if manifest:
            keys = ("trained_at", "documents", "subjects_seen", "vocab_size")
            model = {k: manifest[k] for k in keys if k in manifest}
            model["corpus_digest"] = manifest.get("corpus_digest")
    return {
        **info,
        "params": params,
        "model": model,
        "evaluation_report": _report_path(project, authorised),
    }


def _report_path(project: Project, authorised: bool) -> str | None:
    """Where the project's last evaluation report is served, if it has one
    for this caller."""
    from indexer.report import last_report

    if last_report(project, public=not authorised) is None:
        return None
    return f"projects/{project.id}/report"


# -- suggestions ---------------------------------------------------------------


def _label_language(vocab, requested: str | None, default: str) -> str:
    return default if requested is None else vocab.check_label_language(requested)


def _suggest(project: Project, texts: list[str], options: s.Options):
    """(label language, suggestions of each text) for a suggest request."""
    _served().usable(project)
    g.documents = len(texts)
    g.document_bytes = sum(len(text.encode()) for text in texts)
    language = _label_language(project.vocab, options.language, project.language)
    batch = project.suggest(texts, limit=options.limit, threshold=options.threshold)
    return language, render_suggestions(
        project, texts, batch, language, options.explain
    )


@v1.post("/projects/<project_id>/suggest")
@documented(s.SuggestResponse, SUGGEST_ERRORS, s.SuggestRequest, ANY_BODY, s.Options)
def suggest(project_id: str):
    """Suggest subjects for one document

    The text comes as a form (as Annif's clients send it; in multipart, `text`
    may be an uploaded file), as JSON, or as the whole text/plain body. Options
    may also come in the query string; both are checked, and the body wins.
    Bodies over {max_content_length} bytes get 413.
    """
    project = _project(project_id)
    body = read_request(request, s.SuggestRequest)
    language, results = _suggest(project, [body.text], body)
    return {"results": results[0], "project_id": project.id, "language": language}


@v1.post("/projects/<project_id>/suggest-batch")
@documented(s.BatchResponse, SUGGEST_ERRORS, s.BatchRequest, query=s.Options)
def suggest_batch(project_id: str):
    """Suggest subjects for several documents

    At most {max_batch} documents and {max_content_length} bytes; results come
    in the order of the documents.
    """
    project = _project(project_id)
    body = read_request(request, s.BatchRequest, (JSON,))
    max_batch = current_app.config["INDEXER_MAX_BATCH"]
    if len(body.documents) > max_batch:
        raise UsageError(
            f"At most {max_batch} documents per request, got "
            f"{len(body.documents)}: split the batch"
        )
    _, results = _suggest(project, [d.text for d in body.documents], body)
    return [
        {"document_id": doc.document_id, "results": items}
        for doc, items in zip(body.documents, results, strict=True)
    ]


# -- learning and reloading -------------------------------------------------------


@v1.post("/projects/<project_id>/learn")
@documented(
    None, (400, 401, 403, 404, 409, 413, 415, 500, 503), s.LearnRequest, success=204
)
def learn(project_id: str):
    """Learn from indexed documents

    Needs `allow_learn = true` in the project, or the API key. Subjects not in
    the vocabulary are ignored (and logged), and documents without a text (or
    with a blank one) are skipped, as Annif does. A project another request
    or process is updating is waited for a few seconds; while another process
    trains it for longer, the answer is 503 with Retry-After.
    """
    from indexer.corpus import Corpus, RawDocument

    served, authorised = _served(), _authorised()
    project = served.lookup(project_id, authorised)
    documents = read_request(request, s.LearnRequest, (JSON,)).root
    served.require_learning(project, authorised)
    served.usable(project)
    raw = [
        RawDocument(d.text, uris=[x.uri for x in d.subjects], metadata=d.metadata or {})
        for d in documents
        if d.text is not None and d.text.strip()
    ]
    if len(raw) < len(documents):
        log.info(
            "Learning project '%s': %d documents without a text skipped",
            project.id,
            len(documents) - len(raw),
        )
    g.document_bytes = sum(len(d.text.encode()) for d in raw)
    if not raw and project.backend.learns_online:
        return "", 204  # nothing to learn: Annif answers so too
    corpus = Corpus.from_documents(raw, project.vocab, project.language)
    with served.learning(project, current_app.config["INDEXER_LEARN_WAIT"]):
        try:
            info = project.learn(corpus)
        except NotSupportedError as exc:  # Annif's status: the server cannot
            raise Unavailable(exc.message) from None
        g.learned = int(info.get("documents", len(raw)))
        served.refresh(project, force=True)
    for warning in info.get("warnings", []):
        log.warning("Learning project '%s': %s", project.id, warning)
    return "", 204


@v1.post("/projects/<project_id>/reload")
@documented(s.Reload, (401, 403, 404, 409, 500, 503), key="required")
def reload_project(project_id: str):
    """Load the project's saved model again

    Requests running meanwhile finish on the previous model; a retrained model
    is also noticed within seconds without this.
    """
    served = _served()
    served.require_key(request.headers.get("X-API-Key"))
    project = served.lookup(project_id, True)
    served.refresh(project, force=True)
    info = project_info(project, True)
    return {
        "project_id": project.id,
        "status": info["status"],
        "modification_time": info["modification_time"],
    }


@v1.get("/projects/<project_id>/report")
@documented(errors=(401, 404, 500), produces="text/html")
def evaluation_report(project_id: str):
    """The project's last evaluation report

    The HTML page that `indexer eval PROJECT CORPUS --report report.html` wrote
    last: plots, per-concept results and the settings, all inline.
    """
    from indexer.report import last_report

    project, authorised = _project(project_id), _authorised()
    path = last_report(project, public=not authorised)
    if path is None:
        raise NotFoundError(
            f"Project '{project.id}' has no evaluation report: run `indexer eval "
            f"{project.id} CORPUS --report report.html`"
        )
    response = current_app.response_class(path.read_bytes(), mimetype="text/html")
    # the page is self-contained: forbid it any request, and framing elsewhere
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
    )
    return response


@v1.post("/detect-language")
@documented(s.DetectResponse, (400, 401, 413, 415, 500), s.DetectRequest, key="none")
def detect_language():
    """Which of the candidate languages a text is in"""
    body = read_request(request, s.DetectRequest, (JSON,))
    ranked = detect_languages(body.text, body.languages)
    return {"results": [{"language": lang, "score": p} for lang, p in ranked]}


# -- vocabularies and concepts -------------------------------------------------------


def _vocab_info(vocab_id: str) -> dict:
    from indexer.vocab import Vocabulary

    # a fresh object: caching a not-yet-loaded vocabulary would stop its autoload
    vocab = Vocabulary(vocab_id, _served().projects.data_dir / "vocabs" / vocab_id)
    loaded = vocab.exists
    return {
        "vocab_id": vocab_id,
        "languages": vocab.languages if loaded else [],
        "size": len(vocab) if loaded else None,
        "loaded": loaded,
        "loaded_at": vocab.info.get("loaded_at") if loaded else None,
    }


def _visible_vocab(vocab_id: str) -> str:
    served = _served()
    if vocab_id not in served.projects.vocab_ids() or not served.vocab_visible(
        vocab_id, _authorised()
    ):
        raise NotFoundError(f"No vocabulary '{vocab_id}'")
    return vocab_id


@v1.get("/vocabs")
@documented(s.VocabList)
def list_vocabs():
    """The vocabularies"""
    served, authorised = _served(), _authorised()
    ids = [
        v for v in served.projects.vocab_ids() if served.vocab_visible(v, authorised)
    ]
    return {"vocabs": [_vocab_info(v) for v in ids]}


@v1.get("/vocabs/<vocab_id>")
@documented(s.Vocab, (401, 404, 500))
def get_vocab(vocab_id: str):
    """One vocabulary"""
    return _vocab_info(_visible_vocab(vocab_id))


@v1.get("/vocabs/<vocab_id>/concepts")
@documented(s.ConceptList, (400, 401, 404, 500, 503), query=s.ConceptQuery)
def find_concepts(vocab_id: str):
    """Look up a concept by URI, or search labels

    Give exactly one of `uri` and `label`. A label search matches prefLabels
    and altLabels containing the text, exact matches first.
    """
    _visible_vocab(vocab_id)
    query = read_request(request, s.ConceptQuery)
    if (query.uri is None) == (query.label is None):
        raise UsageError("Give either uri=... (a lookup) or label=... (a search)")
    try:
        vocab = _served().projects.vocab(vocab_id)
        default = _vocab_language(vocab)
    except IndexerError as exc:
        log.error("Vocabulary '%s' is unavailable: %s", vocab_id, exc.message)
        raise Unavailable(f"Vocabulary '{vocab_id}' is {GENERIC_ERROR}") from None
    language = _label_language(vocab, query.language, default)
    if query.uri is not None:
        concept_id = vocab.id_of(query.uri)
        if concept_id is None:
            raise NotFoundError(f"No concept <{query.uri}> in vocabulary '{vocab_id}'")
        ids = [concept_id]
    else:
        ids = vocab.search(query.label, language, query.limit)
    return {
        "vocab_id": vocab_id,
        "language": language,
        "concepts": [_concept(vocab, i, language) for i in ids],
    }


def _vocab_language(vocab) -> str:
    """The language of the first project using `vocab`, else the vocabulary's."""
    for config in _served().projects.config.projects.values():
        if config.vocab == vocab.vocab_id and config.language in vocab.languages:
            return config.language
    tagged = [lang for lang in vocab.languages if lang != "und"]
    return (tagged or vocab.languages)[0]


def _concept(vocab, concept_id: int, language: str) -> dict:
    concept = vocab.concept(concept_id, language)

    def refs(ids: list[int]) -> list[dict]:
        return [{"uri": vocab.uris[i], "label": vocab.label(i, language)} for i in ids]

    return {
        "uri": concept.uri,
        "label": concept.label,
        "notation": concept.notation or None,
        "alt_labels": concept.alt_labels,
        "note": concept.note or None,
        "deprecated": concept.deprecated,
        "broader": refs(concept.broader),
        "narrower": refs(concept.narrower),
        "related": refs(concept.related),
    }
