"""Commands about projects and vocabularies: list, show, load, clear."""

from __future__ import annotations

from pathlib import Path

import click

from indexer.cli.app import Context, cli, pass_context, print_table
from indexer.config import check_language_tag
from indexer.errors import IndexerError, UsageError


@cli.command("list-projects")
@pass_context
def list_projects(ctx: Context) -> None:
    """List the configured projects."""
    rows = []
    for project in ctx.projects:
        config = project.config
        try:
            status = "ready" if project.is_ready else "not trained"
            kind = project.kind
        except IndexerError as exc:
            status, kind = f"error: {exc.message[:40]}", "?"
        rows.append(
            [
                config.id,
                config.name,
                config.backend,
                kind,
                config.language,
                config.vocab,
                status,
            ]
        )
    print_table(rows, ["id", "name", "backend", "kind", "language", "vocab", "status"])


@cli.command("show-project")
@click.argument("project_id")
@pass_context
def show_project(ctx: Context, project_id: str) -> None:
    """Show a project's settings, parameters and model."""
    import dataclasses

    project = ctx.project(project_id)
    backend = project.backend
    manifest = backend.manifest
    click.echo(f"Project ID:   {project.id}")
    click.echo(f"Name:         {project.name}")
    click.echo(f"Language:     {project.language}")
    click.echo(f"Vocabulary:   {project.config.vocab}")
    click.echo(f"Backend:      {project.config.backend} ({project.kind})")
    click.echo(f"Limit:        {project.limit}   Threshold: {project.threshold}")
    click.echo(f"Access:       {project.access}")
    click.echo(
        f"Trained:      {'yes, ' + manifest['trained_at'] if manifest else 'no'}"
    )
    if manifest:
        click.echo(
            f"  documents:  {manifest['documents']}, subjects seen: "
            f"{manifest['subjects_seen']}"
        )
        facts = {
            key: value
            for key, value in manifest.get("info", {}).items()
            if isinstance(value, str | int | float) and key != "seconds"
        }
        if facts:  # what the backend chose or counted (an xmc layout, terms, ...)
            click.echo(
                "  model:      " + ", ".join(f"{k}: {v}" for k, v in facts.items())
            )
        for learned in manifest.get("learned", []):
            click.echo(
                f"  learned:    {learned['documents']} documents at "
                f"{learned['learned_at']} (corpus {learned['corpus_digest']})"
            )
    click.echo("Parameters:")
    for key, value in dataclasses.asdict(backend.params).items():
        click.echo(f"  {key} = {value}")


@cli.command("list-vocabs")
@pass_context
def list_vocabs(ctx: Context) -> None:
    """List vocabularies (loaded or configured)."""
    rows = []
    for vocab_id in ctx.projects.vocab_ids():
        vocab = ctx.projects.vocab(vocab_id, autoload=False)
        if vocab.exists:
            rows.append(
                [
                    vocab_id,
                    str(len(vocab)),
                    ",".join(vocab.languages),
                    vocab.info["loaded_at"],
                ]
            )
        else:
            rows.append([vocab_id, "-", "-", "not loaded"])
    print_table(rows, ["id", "concepts", "languages", "loaded"])


@cli.command("load-vocab")
@click.argument("vocab_id")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--language", help="Label language of a TSV file without a header.")
@click.option(
    "--wait",
    is_flag=True,
    help="If another process is training, clearing or loading it, wait for it.",
)
@pass_context
def load_vocab(
    ctx: Context, vocab_id: str, file: str | None, language: str | None, wait: bool
) -> None:
    """Load a vocabulary from FILE (SKOS: .ttl .rdf .nt ...; or .tsv/.csv).

    Reloading keeps the ids of known concepts, so trained models stay valid.
    """
    source = ctx.projects.config.vocabs.get(vocab_id)
    if file is None:
        if source is None or source.source is None:
            raise UsageError(
                f"Give the vocabulary FILE (no [vocab:{vocab_id}] source is configured)"
            )
        file = source.source
        language = language or source.language
    if language:
        check_language_tag(language, "--language: ")
    vocab = ctx.projects.vocab(vocab_id, autoload=False)
    click.echo(f"Parsing {file} ...", err=True)
    info = vocab.load_file(Path(file), language, wait=wait)
    click.echo(
        f"Loaded vocabulary '{vocab_id}': {info['concepts']} concepts "
        f"({info['added']} new, {info['removed']} no longer in the source and kept as "
        "deprecated), "
        f"languages {', '.join(info['languages'])}, in {info['seconds']} s"
    )


@cli.command()
@click.argument("project_id")
@click.option(
    "--wait",
    is_flag=True,
    help="If another process is training, clearing or loading it, wait for it.",
)
@pass_context
def clear(ctx: Context, project_id: str, wait: bool) -> None:
    """Delete PROJECT's trained model."""
    project = ctx.project(project_id)
    removed = project.clear(wait=wait)
    click.echo(
        f"Cleared '{project.id}'" if removed else f"Project '{project.id}' had no model"
    )
