"""Reading REST requests into the models of indexer/rest/schemas.py: fields
from the query string and from JSON, form, multipart or text/plain bodies,
strictly UTF-8, each field given once, with errors that name the field."""

from __future__ import annotations

import difflib
import json
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin
from urllib.parse import unquote_to_bytes

from flask import Request
from pydantic import BaseModel, RootModel, ValidationError
from werkzeug.exceptions import HTTPException, UnsupportedMediaType

from indexer.errors import InputError, UsageError
from indexer.rest.schemas import Options
from indexer.textfile import decode_text

M = TypeVar("M", bound=BaseModel)
JSON = "application/json"
ANY_BODY = (
    JSON,
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
)


def read_request(request: Request, model: type[M], media=ANY_BODY):
    """The request as a `model`. Options may come in the query string or the
    body; both are checked, and the body wins where both give one."""
    query = _unique(_pairs(request.query_string, "The query string"), "query string")
    if request.method == "GET":
        return validate(model, query)
    body = _body(request, media)
    if issubclass(model, Options):
        options = validate(Options, query)
        if isinstance(body, dict):
            body = {**options.model_dump(exclude_unset=True), **body}
    elif query:
        raise UsageError(f"Unknown query parameter '{next(iter(query))}'")
    return validate(model, body)


def validate(model: type[M], data: Any) -> M:
    """`data` as a `model`, or a UsageError naming the first wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_message(model, exc)) from None


def _message(model: type[BaseModel], exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]
    ).lstrip(".")
    if error["type"] == "extra_forbidden":
        fields = _fields_at(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), fields, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"Unknown field '{where}'.{hint} Fields: {', '.join(fields)}"
    if error["type"] == "missing":
        return f"The field '{where}' is missing"
    if not where:
        shape = "an array" if error["type"] == "list_type" else "an object"
        return f"The body must be {shape}"
    return f"The field '{where}': {error['msg'].removeprefix('Value error, ')}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The fields of the object at `loc` in a `model` (an item of an array,
    a nested object), to list beside an unknown field found there."""
    annotation: Any = model
    for part in (*loc, None):
        annotation = _unwrap(annotation)
        if part is None:
            break
        if isinstance(part, int) and get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field else None
        else:
            return []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """A model's or an array's type, from a RootModel or an Optional."""
    while True:
        if isinstance(annotation, type) and issubclass(annotation, RootModel):
            annotation = annotation.model_fields["root"].annotation
        elif get_origin(annotation) in (Union, UnionType):
            present = [a for a in get_args(annotation) if a is not type(None)]
            if len(present) != 1:
                return annotation
            annotation = present[0]
        else:
            return annotation


def _body(request: Request, media: tuple[str, ...]) -> Any:
    mimetype = request.mimetype
    try:
        data = request.get_data(cache=True, parse_form_data=False)
    except HTTPException:  # too large, or the client went away: werkzeug's own
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the WSGI server's parser raises
        # gunicorn parses a chunked body only as it is read: a bad chunk size
        # or a missing terminator is the caller's malformed request, no bug
        raise UsageError(
            f"The request body could not be read ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from None
    if not mimetype and not data:
        return {}
    if mimetype not in media and not (JSON in media and mimetype.endswith("+json")):
        raise UnsupportedMediaType(
            f"Send {' or '.join(media)} (got '{mimetype or 'none'}')"
        )
    if mimetype == "multipart/form-data":
        return _multipart(request, data)
    if mimetype == "application/x-www-form-urlencoded":
        return _unique(_pairs(data, "The form"), "form")
    if mimetype == "text/plain":
        return {"text": _utf8(data, "The text/plain body")}
    try:
        return json.loads(_utf8(data, "The JSON body"), object_pairs_hook=_object)
    except (ValueError, RecursionError) as exc:  # nested too deep, huge numbers
        raise UsageError(f"The body is not valid JSON: {exc}") from None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return _unique(pairs, "JSON body")


def _multipart(request: Request, raw: bytes) -> dict[str, Any]:
    # werkzeug decodes form fields leniently; a body that is not UTF-8 must not
    # reach a backend as replacement characters
    fields = _unique(request.form.items(multi=True), "form")
    if not _is_utf8(raw) and any("\ufffd" in str(v) for v in fields.values()):
        raise InputError("The form is not UTF-8 text")
    for name, upload in request.files.items(multi=True):
        if name in fields:
            raise UsageError(f"The field '{name}' is given twice in the form")
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
    """The body as text; not UTF-8, or binary (NUL bytes): an InputError."""
    return decode_text(data, what)
