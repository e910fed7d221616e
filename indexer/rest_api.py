"""The /v1 endpoints: projects, suggestions, vocabularies and concepts.

Each view looks the project or vocabulary up (access levels in
indexer/rest_models.py), reads its fields (indexer/rest_input.py) and answers
JSON shaped as indexer/openapi.py describes; errors are raised and become
problem documents in indexer/rest.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from flask import Blueprint, current_app, request
from werkzeug.exceptions import UnsupportedMediaType

from indexer import __version__
from indexer.backend import Backend
from indexer.errors import IndexerError, NotFoundError, UsageError
from indexer.project import Project
from indexer.rest_input import (
    OPTIONS,
    documents,
    integer,
    options,
    read_fields,
    string,
    text_field,
)
from indexer.rest_models import ServedProjects

v1 = Blueprint("v1", __name__, url_prefix="/v1")


# -- helpers -------------------------------------------------------------------


def _served() -> ServedProjects:
    return current_app.extensions["indexer"]


def _authorised() -> bool:
    return _served().authorised(request.headers.get("X-API-Key"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return value.name
    return value


def project_info(project: Project) -> dict:
    """What a client needs to know about a project (no model is loaded)."""
    info = {
        "id": project.id,
        "name": project.name,
        "language": project.language,
        "vocab": project.config.vocab,
        "backend": project.config.backend,
        "kind": None,
        "access": project.access,
        "status": "ready",
        "error": None,
        "limit": project.limit,
        "threshold": project.threshold,
        "explain": False,
        "trained_at": None,
    }
    try:
        backend = project.backend
        manifest = backend.manifest
        info["kind"] = project.kind
        info["explain"] = type(backend).explain is not Backend.explain
        info["trained_at"] = manifest.get("trained_at") if manifest else None
        info["status"] = "ready" if project.is_ready else "not_trained"
    except IndexerError as exc:
        info.update(status="error", error=exc.message)
    return info


def _project_detail(project: Project) -> dict:
    info = project_info(project)
    params = model = None
    if info["status"] != "error":
        backend = project.backend
        params = _jsonable(dataclasses.asdict(backend.params))
        manifest = backend.manifest
        if manifest:
            keys = ("trained_at", "documents", "subjects_seen", "vocab_size")
            model = {k: manifest[k] for k in keys if k in manifest}
            model["corpus_digest"] = manifest.get("corpus_digest")
    return {**info, "params": params, "model": model}


def _label_language(vocab, requested: str | None, default: str) -> str:
    if requested is None:
        return default
    if requested not in vocab.languages:
        raise UsageError(
            f"Vocabulary '{vocab.vocab_id}' has no labels in '{requested}'. "
            f"Languages: {', '.join(vocab.languages)}"
        )
    return requested


def _suggest(project: Project, texts: list[str], fields: dict) -> tuple[str, list]:
    """(label language, suggestions of each text) for a suggest request."""
    opts = options(fields)
    vocab = project.vocab
    language = _label_language(vocab, opts.language, project.language)
    _served().refresh(project)
    batch = project.suggest(texts, limit=opts.limit, threshold=opts.threshold)
    labels, uris, notations = vocab.pref_labels(language), vocab.uris, vocab.notations
    results = []
    for text, row in zip(texts, batch, strict=True):
        why = {}
        if opts.explain and row:
            why = project.backend.explain(text, [s.subject for s in row])
        items = []
        for s in row:
            item = {
                "uri": uris[s.subject],
                "label": labels[s.subject],
                "notation": notations[s.subject] or None,
                "score": round(s.score, 4),
            }
            if opts.explain:
                item["explanation"] = _jsonable(why.get(s.subject))
            items.append(item)
        results.append(items)
    return language, results


# -- /v1 ---------------------------------------------------------------------------


@v1.get("/health")
def health():
    served = _served()
    return {
        "status": "ok",
        "version": __version__,
        "projects": len(served.listed(False)),
        "models_loaded": served.loaded,
    }


@v1.get("/openapi.json")
def openapi():
    return current_app.config["INDEXER_OPENAPI"]


@v1.get("/projects")
def list_projects():
    served = _served()
    ids = served.listed(_authorised())
    return {"projects": [project_info(served.projects.get(i)) for i in ids]}


@v1.get("/projects/<project_id>")
def get_project(project_id: str):
    return _project_detail(_served().lookup(project_id, _authorised()))


@v1.post("/projects/<project_id>/suggest")
def suggest(project_id: str):
    project = _served().lookup(project_id, _authorised())
    fields = read_fields(request, ("text", *OPTIONS))
    text = text_field(fields)
    language, results = _suggest(project, [text], fields)
    return {"project": project.id, "language": language, "suggestions": results[0]}


@v1.post("/projects/<project_id>/suggest-batch")
def suggest_batch(project_id: str):
    project = _served().lookup(project_id, _authorised())
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send the batch as application/json")
    fields = read_fields(request, ("documents", *OPTIONS))
    docs = documents(fields, current_app.config["INDEXER_MAX_BATCH"])
    language, results = _suggest(project, [text for _, text in docs], fields)
    return {
        "project": project.id,
        "language": language,
        "results": [
            {"id": doc_id, "suggestions": items}
            for (doc_id, _), items in zip(docs, results, strict=True)
        ],
    }


@v1.post("/projects/<project_id>/reload")
def reload_project(project_id: str):
    served = _served()
    served.require_key(request.headers.get("X-API-Key"))
    project = served.lookup(project_id, True)
    served.refresh(project, force=True)
    info = project_info(project)
    return {
        "project": project.id,
        "status": info["status"],
        "trained_at": info["trained_at"],
    }


def _vocab_info(served: ServedProjects, vocab_id: str) -> dict:
    from indexer.vocab import Vocabulary

    # a fresh object: caching a not-yet-loaded vocabulary would stop its autoload
    vocab = Vocabulary(vocab_id, served.projects.data_dir / "vocabs" / vocab_id)
    if not vocab.exists:
        return {
            "id": vocab_id,
            "loaded": False,
            "size": None,
            "languages": [],
            "loaded_at": None,
        }
    return {
        "id": vocab_id,
        "loaded": True,
        "size": len(vocab),
        "languages": vocab.languages,
        "loaded_at": vocab.info.get("loaded_at"),
    }


def _visible_vocab(vocab_id: str) -> str:
    served = _served()
    if vocab_id not in served.projects.vocab_ids() or not served.vocab_visible(
        vocab_id, _authorised()
    ):
        raise NotFoundError(f"No vocabulary '{vocab_id}'")
    return vocab_id


@v1.get("/vocabs")
def list_vocabs():
    served = _served()
    authorised = _authorised()
    ids = [
        v for v in served.projects.vocab_ids() if served.vocab_visible(v, authorised)
    ]
    return {"vocabs": [_vocab_info(served, v) for v in ids]}


@v1.get("/vocabs/<vocab_id>")
def get_vocab(vocab_id: str):
    return _vocab_info(_served(), _visible_vocab(vocab_id))


@v1.get("/vocabs/<vocab_id>/concepts")
def find_concepts(vocab_id: str):
    served = _served()
    _visible_vocab(vocab_id)
    fields = read_fields(request, ("uri", "label", "language", "limit"))
    uri, label = string(fields.get("uri"), "uri"), string(fields.get("label"), "label")
    if (uri is None) == (label is None):
        raise UsageError("Give either uri=... (a lookup) or label=... (a search)")
    limit = integer(fields.get("limit"), "limit", 1, 1000) or 20
    vocab = served.projects.vocab(vocab_id)
    language = _label_language(
        vocab, string(fields.get("language"), "language"), _vocab_language(vocab)
    )
    if uri is not None:
        concept_id = vocab.id_of(uri)
        if concept_id is None:
            raise NotFoundError(f"No concept <{uri}> in vocabulary '{vocab_id}'")
        ids = [concept_id]
    else:
        ids = vocab.search(label, language, limit)
    return {
        "vocab": vocab_id,
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
