"""Typed backend parameters: strings from projects.cfg become checked values."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from dataclasses import field
from typing import Any

from indexer.errors import ConfigError


def param(default: Any, help: str = "", *, choices=None, min=None, max=None) -> Any:
    """Declare a backend parameter with its default, help text and constraints."""
    metadata = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclasses.dataclass
class NoParams:
    """A backend without parameters."""


def describe(params_cls: type) -> list[dict]:
    """Name, type, default, help and choices of each parameter (for show-project)."""
    hints = typing.get_type_hints(params_cls)
    out = []
    for f in dataclasses.fields(params_cls):
        default = (
            f.default if f.default is not dataclasses.MISSING else f.default_factory()
        )
        out.append(
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "default": default,
                "help": f.metadata.get("help", ""),
                "choices": f.metadata.get("choices"),
            }
        )
    return out


def parse_params(
    params_cls: type,
    raw: dict[str, Any],
    where: str,
    settings: Sequence[str] = (),
) -> Any:
    """Convert and validate `raw` (strings or values) into a `params_cls` instance.
    `settings` are the other keys valid beside the parameters (a project's core
    settings): a misspelt one is suggested and listed too."""
    hints = typing.get_type_hints(params_cls)
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "(none)"
            close = difflib.get_close_matches(key, [*settings, *fields], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            core = f"settings {', '.join(settings)}; " if settings else ""
            raise ConfigError(
                f"{where}: unknown parameter '{key}'.{hint} Valid keys: {core}"
                f"parameters {valid}"
            )
        values[key] = _convert(value, hints[key], fields[key], where)
    return params_cls(**values)


def _convert(value: Any, annotation: Any, f: dataclasses.Field, where: str) -> Any:
    meta = f.metadata
    origin = typing.get_origin(annotation)
    try:
        if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if value is None or (
                isinstance(value, str) and value.strip().lower() in ("", "none")
            ):
                return None
            annotation = args[0]
            origin = typing.get_origin(annotation)
        if origin is list:
            (item_type,) = typing.get_args(annotation) or (str,)
            items = (
                value
                if isinstance(value, list)
                else [x.strip() for x in str(value).split(",") if x.strip()]
            )
            converted = [_scalar(x, item_type) for x in items]
        else:
            converted = _scalar(value, annotation)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: parameter '{f.name}' must be {_type_name(annotation)}, "
            f"got '{value}'"
        ) from None
    choices = meta.get("choices")
    if choices and any(
        x not in choices for x in (converted if origin is list else [converted])
    ):
        raise ConfigError(
            f"{where}: parameter '{f.name}' is '{value}'; valid choices: "
            + ", ".join(map(str, choices))
        )
    low, high = meta.get("min"), meta.get("max")
    if low is not None and converted < low or high is not None and converted > high:
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else (f">= {low}" if low is not None else f"<= {high}")
        )
        raise ConfigError(
            f"{where}: parameter '{f.name}' must be {bounds}, got {value}"
        )
    return converted


def _scalar(value: Any, annotation: Any) -> Any:
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if annotation is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    if annotation is float:
        return float(value)
    if annotation is str:
        return str(value).strip()
    return annotation(value)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is list:
        return f"a comma-separated list of {_type_name(typing.get_args(annotation)[0])}"
    names = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
    }
    if annotation in names:
        return names[annotation]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _type_name(args[0]) if args else str(annotation)
