"""The OpenAPI 3.1 description of the REST API, served at /v1/openapi.json.

tests/test_rest.py validates every response the tests receive against this
document, so it has to stay true to indexer/rest.py.
"""

from __future__ import annotations

from indexer import __version__

PROBLEM = "application/problem+json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _problems(*codes: int) -> dict:
    return {str(code): {"$ref": f"#/components/responses/{code}"} for code in codes}


def _object(properties: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


NULLABLE_STRING = {"type": ["string", "null"]}

OPTION_PROPERTIES = {
    "limit": {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "description": "Most subjects per document (default: the project's limit).",
    },
    "threshold": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": "Lowest score returned (default: the project's threshold).",
    },
    "language": {
        "type": "string",
        "description": "Language of the labels returned (default: the project's).",
    },
    "explain": {
        "type": "boolean",
        "description": "Add why each subject was suggested, where the backend can.",
    },
}

# In forms and query strings every value is a string: "5", "0.3", "true".
FORM_OPTIONS = {
    "limit": {"type": "string", "pattern": r"^\s*\+?\d+\s*$"},
    "threshold": {"type": "string"},
    "language": {"type": "string"},
    "explain": {
        "type": "string",
        "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"],
    },
}

PROJECT_PROPERTIES = {
    "id": {"type": "string"},
    "name": {"type": "string"},
    "language": {"type": "string"},
    "vocab": {"type": "string"},
    "backend": {"type": "string"},
    "kind": {"enum": ["associative", "lexical", "ensemble", None]},
    "access": {"enum": ["public", "hidden", "private"]},
    "status": {
        "enum": ["ready", "not_trained", "error"],
        "description": "ready: can suggest now; error: see `error`.",
    },
    "error": NULLABLE_STRING,
    "limit": {"type": "integer", "minimum": 1},
    "threshold": {"type": "number", "minimum": 0, "maximum": 1},
    "explain": {
        "type": "boolean",
        "description": "Whether the backend explains its suggestions.",
    },
    "trained_at": NULLABLE_STRING,
}

SCHEMAS = {
    "Problem": {
        "type": "object",
        "description": "An error (RFC 9457): a 4xx status is the caller's to fix.",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail"],
    },
    "Health": _object(
        {
            "status": {"const": "ok"},
            "version": {"type": "string"},
            "projects": {"type": "integer", "minimum": 0},
            "models_loaded": {"type": "integer", "minimum": 0},
        }
    ),
    "Project": _object(PROJECT_PROPERTIES),
    "ProjectDetail": _object(
        {
            **PROJECT_PROPERTIES,
            "params": {"type": ["object", "null"]},
            "model": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "trained_at": {"type": "string"},
                            "documents": {"type": "integer"},
                            "subjects_seen": {"type": "integer"},
                            "vocab_size": {"type": "integer"},
                            "corpus_digest": NULLABLE_STRING,
                        },
                        required=["trained_at"],
                    ),
                ]
            },
        }
    ),
    "ProjectList": _object({"projects": {"type": "array", "items": _ref("Project")}}),
    "SuggestRequest": _object(
        {
            "text": {"type": "string", "description": "The document."},
            **OPTION_PROPERTIES,
        },
        required=["text"],
    ),
    "SuggestForm": _object(
        {"text": {"type": "string"}, **FORM_OPTIONS}, required=["text"]
    ),
    "Suggestion": _object(
        {
            "uri": {"type": "string"},
            "label": {"type": "string"},
            "notation": NULLABLE_STRING,
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "explanation": {
                "type": ["object", "null"],
                "description": "Only with explain=true; null when the backend "
                "has nothing to say about this subject.",
            },
        },
        required=["uri", "label", "notation", "score"],
    ),
    "SuggestResponse": _object(
        {
            "project": {"type": "string"},
            "language": {"type": "string"},
            "suggestions": {"type": "array", "items": _ref("Suggestion")},
        }
    ),
    "BatchDocument": _object(
        {
            "text": {"type": "string"},
            "id": {
                "type": ["string", "integer", "null"],
                "description": "Returned with the document's results.",
            },
        },
        required=["text"],
    ),
    "BatchRequest": _object(
        {
            "documents": {
                "type": "array",
                "items": _ref("BatchDocument"),
                "description": "At most the server's batch size (see the "
                "description of this operation).",
            },
            **OPTION_PROPERTIES,
        },
        required=["documents"],
    ),
    "BatchResponse": _object(
        {
            "project": {"type": "string"},
            "language": {"type": "string"},
            "results": {
                "type": "array",
                "items": _object(
                    {
                        "id": {"type": ["string", "integer", "null"]},
                        "suggestions": {
                            "type": "array",
                            "items": _ref("Suggestion"),
                        },
                    }
                ),
            },
        }
    ),
    "Reload": _object(
        {
            "project": {"type": "string"},
            "status": {"enum": ["ready", "not_trained", "error"]},
            "trained_at": NULLABLE_STRING,
        }
    ),
    "Vocab": _object(
        {
            "id": {"type": "string"},
            "loaded": {"type": "boolean"},
            "size": {"type": ["integer", "null"]},
            "languages": {"type": "array", "items": {"type": "string"}},
            "loaded_at": NULLABLE_STRING,
        }
    ),
    "VocabList": _object({"vocabs": {"type": "array", "items": _ref("Vocab")}}),
    "ConceptRef": _object({"uri": {"type": "string"}, "label": {"type": "string"}}),
    "Concept": _object(
        {
            "uri": {"type": "string"},
            "label": {"type": "string"},
            "notation": NULLABLE_STRING,
            "alt_labels": {"type": "array", "items": {"type": "string"}},
            "note": NULLABLE_STRING,
            "deprecated": {"type": "boolean"},
            "broader": {"type": "array", "items": _ref("ConceptRef")},
            "narrower": {"type": "array", "items": _ref("ConceptRef")},
            "related": {"type": "array", "items": _ref("ConceptRef")},
        }
    ),
    "ConceptList": _object(
        {
            "vocab": {"type": "string"},
            "language": {"type": "string"},
            "concepts": {"type": "array", "items": _ref("Concept")},
        }
    ),
}

RESPONSES = {
    code: {
        "description": description,
        "content": {PROBLEM: {"schema": _ref("Problem")}},
    }
    for code, description in {
        "400": "The request is malformed: a missing or invalid field, a body that "
        "is not UTF-8 or not JSON.",
        "401": "A wrong X-API-Key, or none where one is needed.",
        "403": "The operation is disabled on this server.",
        "404": "No such project or vocabulary (private projects without the key "
        "look absent too), or no such concept.",
        "405": "The method is not allowed here.",
        "409": "The project is not trained (or its model no longer fits).",
        "413": "The body is larger than the server accepts.",
        "415": "The content type is not one this endpoint reads.",
        "500": "A bug: please report it with the server log.",
        "503": "A dependency or pretrained model is missing on the server.",
    }.items()
}

PARAMETERS = {
    "ProjectId": {
        "name": "project_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    },
    "VocabId": {
        "name": "vocab_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    },
    **{
        name.capitalize(): {
            "name": name,
            "in": "query",
            "required": False,
            "description": OPTION_PROPERTIES[name]["description"]
            + " In the query string, for any body type; the body wins.",
            "schema": FORM_OPTIONS[name],
        }
        for name in OPTION_PROPERTIES
    },
}


def _param(name: str) -> dict:
    return {"$ref": f"#/components/parameters/{name}"}


OPTION_PARAMETERS = [_param(n) for n in ("Limit", "Threshold", "Language", "Explain")]
SECURED = [{}, {"apiKey": []}]


def openapi_document(max_batch: int, max_content_length: int) -> dict:
    """The OpenAPI document of a server with these limits."""
    suggest = {
        "post": {
            "operationId": "suggest",
            "summary": "Suggest subjects for one document",
            "description": "The text comes as JSON, as a form (urlencoded or "
            "multipart, where `text` may also be an uploaded file), or as the "
            "whole text/plain body with the options in the query string. "
            f"Bodies over {max_content_length} bytes get 413.",
            "tags": ["projects"],
            "security": SECURED,
            "parameters": [_param("ProjectId"), *OPTION_PARAMETERS],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("SuggestRequest")},
                    "application/x-www-form-urlencoded": {
                        "schema": _ref("SuggestForm")
                    },
                    "multipart/form-data": {"schema": _ref("SuggestForm")},
                    "text/plain": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": _json(_ref("SuggestResponse"), "Subjects, best first."),
                **_problems(400, 401, 404, 409, 413, 415, 500, 503),
            },
        }
    }
    batch = {
        "post": {
            "operationId": "suggestBatch",
            "summary": "Suggest subjects for several documents",
            "description": f"At most {max_batch} documents and "
            f"{max_content_length} bytes per request; results come in the "
            "order of the documents.",
            "tags": ["projects"],
            "security": SECURED,
            "parameters": [_param("ProjectId"), *OPTION_PARAMETERS],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("BatchRequest")}},
            },
            "responses": {
                "200": _json(_ref("BatchResponse"), "One result per document."),
                **_problems(400, 401, 404, 409, 413, 415, 500, 503),
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "indexer REST API",
            "version": __version__,
            "description": "Automated subject indexing: suggest the concepts of a "
            "SKOS vocabulary for a text. Errors are application/problem+json.",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "projects", "description": "Projects and suggestions"},
            {"name": "vocabs", "description": "Vocabularies and concepts"},
            {"name": "service", "description": "Health and this document"},
        ],
        "paths": {
            "/v1/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Whether the server is up",
                    "tags": ["service"],
                    "responses": {
                        "200": _json(_ref("Health"), "The server is up."),
                        **_problems(500),
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "tags": ["service"],
                    "responses": {
                        "200": _json({"type": "object"}, "The OpenAPI document.")
                    },
                }
            },
            "/v1/projects": {
                "get": {
                    "operationId": "listProjects",
                    "summary": "The public projects (all of them with the API key)",
                    "tags": ["projects"],
                    "security": SECURED,
                    "responses": {
                        "200": _json(_ref("ProjectList"), "The projects."),
                        **_problems(401, 500),
                    },
                }
            },
            "/v1/projects/{project_id}": {
                "get": {
                    "operationId": "getProject",
                    "summary": "One project, its parameters and model",
                    "tags": ["projects"],
                    "security": SECURED,
                    "parameters": [_param("ProjectId")],
                    "responses": {
                        "200": _json(_ref("ProjectDetail"), "The project."),
                        **_problems(401, 404, 500),
                    },
                }
            },
            "/v1/projects/{project_id}/suggest": suggest,
            "/v1/projects/{project_id}/suggest-batch": batch,
            "/v1/projects/{project_id}/reload": {
                "post": {
                    "operationId": "reloadProject",
                    "summary": "Load the project's saved model again",
                    "description": "Needs the API key. Requests running meanwhile "
                    "finish on the previous model. The server also notices "
                    "a retrained model by itself within seconds.",
                    "tags": ["projects"],
                    "security": [{"apiKey": []}],
                    "parameters": [_param("ProjectId")],
                    "responses": {
                        "200": _json(_ref("Reload"), "The model now served."),
                        **_problems(401, 403, 404, 409, 500, 503),
                    },
                }
            },
            "/v1/vocabs": {
                "get": {
                    "operationId": "listVocabs",
                    "summary": "The vocabularies",
                    "tags": ["vocabs"],
                    "security": SECURED,
                    "responses": {
                        "200": _json(_ref("VocabList"), "The vocabularies."),
                        **_problems(401, 500),
                    },
                }
            },
            "/v1/vocabs/{vocab_id}": {
                "get": {
                    "operationId": "getVocab",
                    "summary": "One vocabulary",
                    "tags": ["vocabs"],
                    "security": SECURED,
                    "parameters": [_param("VocabId")],
                    "responses": {
                        "200": _json(_ref("Vocab"), "The vocabulary."),
                        **_problems(401, 404, 500),
                    },
                }
            },
            "/v1/vocabs/{vocab_id}/concepts": {
                "get": {
                    "operationId": "findConcepts",
                    "summary": "Look up a concept by URI, or search labels",
                    "description": "Give exactly one of `uri` and `label`. A label "
                    "search matches prefLabels and altLabels containing the "
                    "text, exact matches first.",
                    "tags": ["vocabs"],
                    "security": SECURED,
                    "parameters": [
                        _param("VocabId"),
                        {"name": "uri", "in": "query", "schema": {"type": "string"}},
                        {"name": "label", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "language",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "Language of labels searched and shown.",
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "string", "pattern": r"^\s*\+?\d+\s*$"},
                            "description": "Most concepts a search returns "
                            "(1 to 1000, default 20).",
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("ConceptList"), "Matching concepts."),
                        **_problems(400, 401, 404, 500),
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "parameters": PARAMETERS,
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "Opens private projects and the reload "
                    "operation; a wrong key is refused with 401.",
                }
            },
        },
    }
