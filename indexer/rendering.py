"""Suggestions as plain dicts: the one shape the CLI, REST and `index` print."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCORE_DIGITS = 4


def jsonable(value: Any, full_paths: bool = False) -> Any:
    """`value` with numpy scalars, tuples and paths turned into JSON types; a
    path shows only its name unless `full_paths` (what a server answers must
    not reveal its files; a saved manifest should)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, full_paths) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, full_paths) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value) if full_paths else value.name
    return value


def tsv_line(uri: str, label: str, score: float) -> str:
    """One suggestion as the CLI prints it: `<uri> TAB label TAB score`."""
    return f"<{uri}>\t{label}\t{score:.4f}"


def render_suggestions(
    project, texts: Sequence[str], batch, language: str, explain: bool = False
) -> list[list[dict]]:
    """Per text, its suggestions as {uri, label, notation, score} (plus
    `explanation` when asked), labels in `language`, best first."""
    vocab = project.vocab
    labels, uris, notations = vocab.pref_labels(language), vocab.uris, vocab.notations
    results = []
    for text, row in zip(texts, batch, strict=True):
        why = {}
        if explain and row:
            why = project.backend.explain(text, [s.subject for s in row])
        items = []
        for s in row:
            item = {
                "uri": uris[s.subject],
                "label": labels[s.subject],
                "notation": notations[s.subject] or None,
                "score": round(float(s.score), SCORE_DIGITS),
            }
            if explain:
                item["explanation"] = jsonable(why.get(s.subject))
            items.append(item)
        results.append(items)
    return results
