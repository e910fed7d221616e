"""`import-annif`: an Annif projects file becomes this toolkit's configuration."""

from __future__ import annotations

from pathlib import Path

import click

from indexer.cli.app import cli, warn
from indexer.errors import UsageError


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
    if output and Path(output).exists() and not force:
        raise UsageError(f"'{output}' exists: use --force to overwrite it")
    projects = convert_projects(read_annif_projects(Path(annif_file)))
    text = render(projects, Path(annif_file), vocabs)
    warn(f"project '{p.id}': {note}" for p in projects for note in p.notes)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    converted = sum(p.enabled for p in projects)
    click.echo(
        f"Converted {converted} of {len(projects)} Annif projects"
        + (f" into {output}" if output else ""),
        err=True,
    )


def _vocab_source(value: str) -> tuple[str, str]:
    vocab_id, sep, path = value.partition("=")
    if not sep or not vocab_id.strip() or not path.strip():
        raise UsageError(f"--vocab takes ID=FILE, got '{value}'")
    return vocab_id.strip(), path.strip()
