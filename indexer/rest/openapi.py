"""The OpenAPI 3.1 document of the REST API, generated from the pydantic models
of indexer/rest/schemas.py and the table of operations below; served at
/v1/openapi.json. tests/test_rest.py checks every response against it."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from indexer import __version__
from indexer.rest import schemas as s

PROBLEM = "application/problem+json"
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
    "or (learn) its backend does not learn online or another process is "
    "changing it (then Retry-After says when to try again).",
}


@dataclass
class Doc:
    """What the document says of a view besides its route and docstring."""

    response: type[BaseModel] | None
    errors: tuple[int, ...]
    body: type[BaseModel] | None
    media: tuple[str, ...]
    query: type[BaseModel] | None
    success: int
    key: str
    problems: dict[int, type[BaseModel]]
    produces: str = "application/json"


def documented(
    response: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (401, 500),
    body: type[BaseModel] | None = None,
    media: tuple[str, ...] = ("application/json",),
    query: type[BaseModel] | None = None,
    success: int = 200,
    key: str = "optional",  # optional | required | none
    problems: dict[int, type[BaseModel]] | None = None,
    produces: str = "application/json",
):
    """Marks a view for the document: its models and the statuses it answers
    (`problems`: a status whose problem document has a schema of its own);
    the path and method come from its route, the summary and description
    from its docstring (`{max_batch}` and `{max_content_length}` filled in);
    `produces`: the media type of a success that is not JSON (a string)."""

    def mark(view):
        view.openapi = Doc(
            response, errors, body, media, query, success, key, problems or {}, produces
        )
        return view

    return mark


def openapi_document(app, max_batch: int, max_content_length: int) -> dict:
    """The OpenAPI document of `app`'s documented views, with these limits."""
    views = _documented_views(app)
    schemas = _schemas([view.openapi for _, _, view in views])
    schemas["BatchRequest"]["properties"]["documents"]["maxItems"] = max_batch
    limits = {"max_batch": max_batch, "max_content_length": max_content_length}
    paths: dict[str, dict] = {}
    for rule, method, view in views:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        operation = _operation(view, path, limits)
        paths.setdefault(path, {})[method.lower()] = operation
    responses = {
        str(code): _content(PROBLEM, _ref("Problem"), text)
        for code, text in STATUS_TEXT.items()
    }
    responses["503"]["headers"] = {"Retry-After": dict(RETRY_AFTER)}
    return {
        "openapi": "3.1.0",
        "info": dict(INFO),
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {"apiKey": dict(API_KEY_SCHEME)},
        },
    }


def _documented_views(app) -> list[tuple]:
    """(rule, method, view) of every view that carries an `openapi` description."""
    return [
        (rule, method, app.view_functions[rule.endpoint])
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
        if hasattr(app.view_functions[rule.endpoint], "openapi")
    ]


INFO = {
    "title": "indexer REST API",
    "version": __version__,
    "description": "Automated subject indexing: suggest the concepts of a "
    "SKOS vocabulary for a text. Compatible with Annif's REST API. Errors "
    "are application/problem+json.",
}
RETRY_AFTER = {
    "description": "Sent when another process is changing the project: "
    "seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 1},
}
API_KEY_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "X-API-Key",
    "description": "Opens private projects, learning and reloads; "
    "a wrong key is refused with 401 on every path.",
}


def _schemas(docs: list[Doc]) -> dict:
    models = [(d.body, "validation") for d in docs if d.body]
    models += [(d.response, "serialization") for d in docs if d.response]
    models += [(m, "serialization") for d in docs for m in d.problems.values()]
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


def _operation(view, path: str, limits: dict) -> dict:
    doc: Doc = view.openapi
    summary, _, description = inspect.getdoc(view).partition("\n")
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    if doc.query:
        schema = _without_null_defaults(doc.query.model_json_schema())
        params += [
            {"name": name, "in": "query", "schema": prop}
            for name, prop in schema["properties"].items()
        ]
    schema = _ref(doc.response.__name__) if doc.response else {"type": "object"}
    success = _content("application/json", schema, summary)
    if doc.produces != "application/json":
        success = _content(doc.produces, {"type": "string"}, summary)
    if doc.success == 204:
        success = {"description": summary}
    operation = {
        "operationId": view.__name__,
        "summary": summary,
        "description": " ".join(description.split()).format(**limits),
        "parameters": params,
        "responses": {
            str(doc.success): success,
            **{str(c): {"$ref": f"#/components/responses/{c}"} for c in doc.errors},
            **{
                str(c): _content(
                    PROBLEM, _ref(m.__name__), " ".join(inspect.getdoc(m).split())
                )
                for c, m in doc.problems.items()
            },
        },
        "security": {
            "optional": [{}, {"apiKey": []}],
            "required": [{"apiKey": []}],
            "none": [{}],
        }[doc.key],
    }
    if doc.body:
        content = {m: {"schema": _ref(doc.body.__name__)} for m in doc.media}
        if "text/plain" in content:
            content["text/plain"] = {"schema": {"type": "string"}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(media: str, schema: dict, description: str) -> dict:
    return {"description": description, "content": {media: {"schema": schema}}}
