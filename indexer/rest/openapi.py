"""The OpenAPI 3.1 document of the REST API, generated from the pydantic models
of indexer/rest/schemas.py and the table of operations below; served at
/v1/openapi.json. tests/test_rest.py checks every response against it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from indexer import __version__
from indexer.rest import schemas as s

PROBLEM = "application/problem+json"
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
STATUS_TEXT = {
    400: "The request is malformed: a missing or invalid field, a body that is "
    "not UTF-8 or not JSON, a label language the vocabulary lacks, a candidate "
    "language the detector does not know.",
    401: "A wrong X-API-Key, or none where one is needed.",
    403: "The operation is not allowed here.",
    404: "No such project or vocabulary (private projects without the key look "
    "absent too), or no such concept.",
    405: "The method is not allowed here.",
    409: "The project is not trained (or its model no longer fits).",
    413: "The body is larger than the server accepts.",
    415: "The content type is not one this endpoint reads.",
    500: "A bug: please report it with the server log.",
    503: "The project is misconfigured on the server, a dependency is missing, "
    "or (learn) its backend does not learn online.",
}
SUGGEST_ERRORS = (400, 401, 404, 409, 413, 415, 500, 503)


@dataclass
class Op:
    """One operation: its path, models and the statuses it may answer."""

    method: str
    path: str
    id: str
    summary: str
    tag: str
    response: type[BaseModel] | None
    errors: tuple[int, ...] = (401, 500)
    body: tuple[type[BaseModel], tuple[str, ...]] | None = None
    query: type[BaseModel] | None = None
    description: str = ""
    success: int = 200
    key: str = "optional"  # optional | required | none


OPERATIONS = [
    Op("get", "/v1/", "apiInfo", "The API and its version", "service", s.ApiInfo),
    Op("get", "/v1/health", "health", "Whether the server is up", "service", s.Health),
    Op("get", "/v1/openapi.json", "openapi", "This document", "service", None),
    Op(
        "get",
        "/v1/projects",
        "listProjects",
        "The public projects (all with the API key)",
        "projects",
        s.ProjectList,
    ),
    Op(
        "get",
        "/v1/projects/{project_id}",
        "getProject",
        "One project, its parameters and model",
        "projects",
        s.ProjectDetail,
        (401, 404, 500),
    ),
    Op(
        "post",
        "/v1/projects/{project_id}/suggest",
        "suggest",
        "Suggest subjects for one document",
        "projects",
        s.SuggestResponse,
        SUGGEST_ERRORS,
        (s.SuggestRequest, ("application/json", *FORMS, "text/plain")),
        s.Options,
        "The text comes as a form (as Annif's clients send it; in multipart, "
        "`text` may be an uploaded file), as JSON, or as the whole text/plain "
        "body. Options may also come in the query string; the body wins.",
    ),
    Op(
        "post",
        "/v1/projects/{project_id}/suggest-batch",
        "suggestBatch",
        "Suggest subjects for several documents",
        "projects",
        s.BatchResponse,
        SUGGEST_ERRORS,
        (s.BatchRequest, ("application/json",)),
        s.Options,
    ),
    Op(
        "post",
        "/v1/projects/{project_id}/learn",
        "learn",
        "Learn from indexed documents",
        "projects",
        None,
        (400, 401, 403, 404, 409, 413, 415, 500, 503),
        (s.LearnRequest, ("application/json",)),
        None,
        "Needs `allow_learn = true` in the project or the API key. Subjects "
        "not in the vocabulary are ignored (and logged), as Annif does.",
        204,
    ),
    Op(
        "post",
        "/v1/projects/{project_id}/reload",
        "reloadProject",
        "Load the project's saved model again",
        "projects",
        s.Reload,
        (401, 403, 404, 409, 500, 503),
        description="Requests running meanwhile "
        "finish on the previous model; a retrained model is also noticed within "
        "seconds without this.",
        key="required",
    ),
    Op(
        "post",
        "/v1/detect-language",
        "detectLanguage",
        "Which of the candidate languages a text is in",
        "service",
        s.DetectResponse,
        (400, 401, 413, 415, 500),
        (s.DetectRequest, ("application/json",)),
        key="none",
    ),
    Op("get", "/v1/vocabs", "listVocabs", "The vocabularies", "vocabs", s.VocabList),
    Op(
        "get",
        "/v1/vocabs/{vocab_id}",
        "getVocab",
        "One vocabulary",
        "vocabs",
        s.Vocab,
        (401, 404, 500),
    ),
    Op(
        "get",
        "/v1/vocabs/{vocab_id}/concepts",
        "findConcepts",
        "Look up a concept by URI, or search labels",
        "vocabs",
        s.ConceptList,
        (400, 401, 404, 500, 503),
        query=s.ConceptQuery,
        description="Give exactly one of `uri` and `label`. "
        "A label search matches prefLabels and altLabels containing the text, "
        "exact matches first.",
    ),
]


def openapi_document(max_batch: int, max_content_length: int) -> dict:
    """The OpenAPI document of a server with these limits."""
    schemas = _schemas()
    schemas["BatchRequest"]["properties"]["documents"]["maxItems"] = max_batch
    limits = f" At most {max_batch} documents and {max_content_length} bytes."
    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        operation = _operation(op)
        if op.id == "suggestBatch":
            operation["description"] = limits.strip()
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "indexer REST API",
            "version": __version__,
            "description": "Automated subject indexing: suggest the concepts of a "
            "SKOS vocabulary for a text. Compatible with Annif's REST API. Errors "
            "are application/problem+json.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                str(code): _content(PROBLEM, _ref("Problem"), text)
                for code, text in STATUS_TEXT.items()
            },
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "Opens private projects, learning and reloads; "
                    "a wrong key is refused with 401 on every path.",
                }
            },
        },
    }


def _schemas() -> dict:
    models = [(op.body[0], "validation") for op in OPERATIONS if op.body]
    models += [(op.response, "serialization") for op in OPERATIONS if op.response]
    models.append((s.Problem, "serialization"))
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return _without_null_defaults(top["$defs"])


def _without_null_defaults(schema):
    # an option left out takes the project's setting: null is no value to send
    if isinstance(schema, dict):
        return {
            k: _without_null_defaults(v)
            for k, v in schema.items()
            if not (k == "default" and v is None)
        }
    if isinstance(schema, list):
        return [_without_null_defaults(v) for v in schema]
    return schema


def _operation(op: Op) -> dict:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in ("project_id", "vocab_id")
        if "{" + name + "}" in op.path
    ]
    if op.query:
        schema = _without_null_defaults(op.query.model_json_schema())
        params += [
            {"name": name, "in": "query", "schema": prop}
            for name, prop in schema["properties"].items()
        ]
    success = (
        _content("application/json", _ref(op.response.__name__), op.summary)
        if op.response
        else _content("application/json", {"type": "object"}, op.summary)
        if op.success == 200
        else {"description": op.summary}
    )
    operation = {
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": {
            str(op.success): success,
            **{str(c): {"$ref": f"#/components/responses/{c}"} for c in op.errors},
        },
        "security": {
            "optional": [{}, {"apiKey": []}],
            "required": [{"apiKey": []}],
            "none": [{}],
        }[op.key],
    }
    if op.description:
        operation["description"] = op.description
    if op.body:
        model, media = op.body
        content = {m: {"schema": _ref(model.__name__)} for m in media}
        if "text/plain" in content:
            content["text/plain"] = {"schema": {"type": "string"}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(media: str, schema: dict, description: str) -> dict:
    return {"description": description, "content": {media: {"schema": schema}}}
