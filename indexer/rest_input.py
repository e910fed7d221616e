"""Reading REST requests: fields from JSON, forms, plain text and the query string,
checked and converted, with errors that name the field and what it accepts."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Request
from werkzeug.exceptions import UnsupportedMediaType

from indexer.errors import InputError, UsageError

OPTIONS = ("limit", "threshold", "language", "explain")
MAX_LIMIT = 1000
TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}


@dataclass
class Options:
    """How to filter and show suggestions; None means the project's default."""

    limit: int | None = None
    threshold: float | None = None
    language: str | None = None
    explain: bool = False


def read_fields(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Fields of the query string, overridden by those of the body."""
    fields = _unique(_pairs(request.query_string, "The query string"), "query")
    fields.update(_body_fields(request))
    unknown = [name for name in fields if name not in allowed]
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(
            f"Unknown field '{unknown[0]}'.{hint} Fields: {', '.join(allowed)}"
        )
    return fields


def _body_fields(request: Request) -> dict[str, Any]:
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        return _multipart_fields(request)
    data = request.get_data(cache=True)
    if not mimetype and not data:
        return {}
    if mimetype == "application/json" or mimetype.endswith("+json"):
        value = _json(_utf8(data, "The JSON body"))
        if not isinstance(value, dict):
            raise UsageError('The JSON body must be an object, e.g. {"text": ...}')
        return value
    if mimetype == "application/x-www-form-urlencoded":
        return _unique(_pairs(data, "The form"), "form")
    if mimetype == "text/plain":
        return {"text": _utf8(data, "The text/plain body")}
    raise UnsupportedMediaType(
        f"Send application/json, a form, or text/plain (got '{mimetype or 'none'}')"
    )


def _multipart_fields(request: Request) -> dict[str, Any]:
    # werkzeug decodes form fields leniently; a body that is not UTF-8 must not
    # reach a backend as replacement characters
    raw_ok = _is_utf8(request.get_data(cache=True, parse_form_data=False))
    fields = _unique(request.form.items(multi=True), "form")
    if not raw_ok and any("\ufffd" in str(v) for v in fields.values()):
        raise InputError("The form is not UTF-8 text")
    for name, upload in request.files.items(multi=True):
        if name in fields:
            raise UsageError(f"The field '{name}' is given twice")
        fields[name] = _utf8(upload.read(), f"The uploaded file '{upload.filename}'")
    return fields


def _pairs(data: bytes, what: str) -> list[tuple[str, str]]:
    """Name-value pairs of a urlencoded string whose values must be UTF-8."""
    pairs = []
    for part in data.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            pairs.append((_unquote(name, what), _unquote(value, what)))
    return pairs


def _unquote(data: bytes, what: str) -> str:
    return _utf8(unquote_to_bytes(data.replace(b"+", b" ")), what)


def _unique(pairs, where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise UsageError(f"The field '{name}' is given twice in the {where}")
        fields[name] = value
    return fields


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not UTF-8 (invalid byte at position {exc.start}): send "
            "UTF-8 text"
        ) from None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # nested too deep, huge numbers
        raise UsageError(f"The body is not valid JSON: {exc}") from None


# -- single values -----------------------------------------------------------


def text_field(fields: dict[str, Any], name: str = "text") -> str:
    """The document text (required; may be empty)."""
    if name not in fields:
        raise UsageError(f"Give the document text in the field '{name}'")
    value = fields[name]
    if not isinstance(value, str):
        raise UsageError(f"The field '{name}' must be a string")
    _check_unicode(value, name)
    return value


def _check_unicode(value: str, name: str) -> None:
    # JSON's \ud800 escapes can smuggle in lone surrogates, which no UTF-8
    # encoder (nor tokeniser) takes
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"The field '{name}' is not valid Unicode (a lone surrogate at "
            f"position {exc.start})"
        ) from None


def options(fields: dict[str, Any]) -> Options:
    """limit, threshold, language and explain, checked."""
    return Options(
        limit=integer(fields.get("limit"), "limit", 1, MAX_LIMIT),
        threshold=number(fields.get("threshold"), "threshold", 0.0, 1.0),
        language=string(fields.get("language"), "language"),
        explain=boolean(fields.get("explain"), "explain") or False,
    )


def integer(value: Any, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise UsageError(
                f"{name} must be an integer from {low} to {high}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer from {low} to {high}")
    if not low <= value <= high:
        raise UsageError(f"{name} must be from {low} to {high}, got {value}")
    return value


def number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UsageError(f"{name} must be a number from {low} to {high}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number from {low} to {high}")
    if math.isnan(value) or not low <= value <= high:
        raise UsageError(f"{name} must be from {low} to {high}, got {value}")
    return float(value)


def boolean(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise UsageError(f"{name} must be true or false")


def string(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name} must be a non-empty string")
    _check_unicode(value, name)
    return value.strip()


def documents(fields: dict[str, Any], max_batch: int) -> list[tuple[Any, str]]:
    """(id, text) of each document of a batch request."""
    docs = fields.get("documents")
    if not isinstance(docs, list):
        raise UsageError(
            'Give the documents as a list: {"documents": [{"text": ...}, ...]}'
        )
    if len(docs) > max_batch:
        raise UsageError(
            f"At most {max_batch} documents per request, got {len(docs)}: split "
            "the batch"
        )
    out = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise UsageError(f"Document {i} must be an object with a 'text'")
        extra = set(doc) - {"text", "id"}
        if extra:
            raise UsageError(
                f"Document {i} has an unknown field '{sorted(extra)[0]}' (fields: "
                "text, id)"
            )
        doc_id = doc.get("id")
        if doc_id is not None and (
            isinstance(doc_id, bool) or not isinstance(doc_id, (str, int))
        ):
            raise UsageError(f"The id of document {i} must be a string or an integer")
        if isinstance(doc_id, str):
            _check_unicode(doc_id, f"id of document {i}")
        try:
            out.append((doc_id, text_field(doc)))
        except UsageError as exc:
            raise UsageError(f"Document {i}: {exc.message}") from None
    return out
