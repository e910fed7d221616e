"""`import-annif`: an Annif projects file becomes this toolkit's configuration."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import click

from indexer.cli.app import cli, warn
from indexer.errors import ConfigError, IndexerError, UsageError


@cli.command("import-annif")
@click.argument("annif_file", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the configuration here (default: stdout).",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option(
    "--vocab",
    "vocab_sources",
    multiple=True,
    metavar="ID=FILE",
    help="Add a [vocab:ID] section that loads FILE (repeatable).",
)
def import_annif(annif_file, output, force, vocab_sources) -> None:
    """Convert an Annif projects file (projects.cfg, projects.toml or a
    projects.d directory) into our projects.cfg.

    Each setting is written after a comment naming the Annif setting it came
    from; whatever has no counterpart is reported here and kept as a NOTE.
    """
    from indexer.annif_import import convert_projects, read_annif_projects, render

    vocabs = dict(_vocab_source(v) for v in vocab_sources)
    if output:
        refuse_overwriting_input(Path(output), Path(annif_file))
        check_output(Path(output), force)
    projects = convert_projects(read_annif_projects(Path(annif_file)))
    text = render(projects, Path(annif_file), vocabs)
    warn(f"project '{p.id}': {note}" for p in projects for note in p.notes)
    if output:
        write_atomically(Path(output), text)
    else:
        click.echo(text, nl=False)
    converted = sum(p.enabled for p in projects)
    click.echo(
        f"Converted {converted} of {len(projects)} Annif projects"
        + (f" into {output}" if output else ""),
        err=True,
    )


def _vocab_source(value: str) -> tuple[str, str]:
    from indexer.config import check_id

    vocab_id, sep, path = value.partition("=")
    if not sep or not vocab_id.strip() or not path.strip():
        raise UsageError(f"--vocab takes ID=FILE, got '{value}'")
    try:
        check_id(vocab_id.strip(), "Vocabulary", "--vocab: ")
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    if len(path.strip().splitlines()) > 1 or not _is_utf8(path):
        raise UsageError(
            f"--vocab {vocab_id.strip()}=FILE: the name of FILE must be UTF-8 text "
            "on one line (it is written into the configuration)"
        )
    return vocab_id.strip(), path.strip()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogateescape)
        return False
    return True


def check_output(output: Path, force: bool) -> None:
    """Refuse, before anything is read, an OUTPUT that cannot be written."""
    if output.exists() and not force:
        raise UsageError(f"'{output}' exists: use --force to overwrite it")
    directory = output.parent
    if not directory.is_dir():
        raise UsageError(
            f"Cannot write '{output}': the directory '{directory}' does not exist"
        )


def refuse_overwriting_input(output: Path, source: Path) -> None:
    """OUTPUT must not be the Annif file read, nor a file in the projects.d
    read, even with --force: the conversion would replace what it converts."""
    if _same_file(output, source):
        raise UsageError(
            f"'{output}' is the Annif file '{source}' being converted: writing "
            "there would replace it; give another --output"
        )
    if source.is_dir() and _same_file(output.parent, source):
        raise UsageError(
            f"'{output}' is in the Annif directory '{source}' being converted: "
            "the file would be read as Annif projects next time, or replace one; "
            "give an --output outside it"
        )


def _same_file(a: Path, b: Path) -> bool:
    """The same file, through links and relative paths too."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return a.resolve() == b.resolve()


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over
    `path` in one step: a failure leaves `path` as it was, and no partial file."""
    data = text.encode("utf-8")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise IndexerError(
                f"Cannot write '{path}': {exc.strerror or exc}"
            ) from None
        raise
