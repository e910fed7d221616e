"""The detect-language command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from indexer.cli.app import cli
from indexer.errors import UsageError


@cli.command("detect-language")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--languages",
    required=True,
    help="Candidate languages, comma-separated ISO 639-1 codes (e.g. en,fi,sv).",
)
def detect_language(file: str | None, languages: str) -> None:
    """Detect which candidate language FILE (or stdin) is in.

    Output: `language TAB score` per candidate, most likely first, as Annif's
    REST API gives them; `-` when the text has no letters to tell by.
    """
    from indexer.corpus import decode_document
    from indexer.language import detect_languages

    if file is None:
        text = decode_document(sys.stdin.buffer.read(), "The input on stdin")
    elif not Path(file).is_file():
        raise UsageError(f"File '{file}' does not exist")
    else:
        text = decode_document(Path(file).read_bytes(), f"File '{file}'")
    candidates = [c for c in languages.split(",") if c.strip()]
    for language, score in detect_languages(text, candidates):
        click.echo(f"{language or '-'}\t{score:.4f}")
